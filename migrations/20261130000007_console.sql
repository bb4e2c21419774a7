-- The operator console (functions/api/src/console): sign-in sessions, and the
-- indexes its pages read by.

-- One row per signed-in browser. The cookie holds a random token; only its
-- SHA-256 is stored, so a database read does not hand out sessions. A session
-- is valid while it has not expired and the API key that opened it (by its
-- configured SHA-256) is still in API_KEYS: removing a key ends its sessions.
create table console_sessions (
    token_hash          bytea primary key,
    key_hash            text not null,
    -- The synchronizer token every form and fetch of this session carries.
    csrf_token          text not null,
    created_at          timestamptz not null default now(),
    expires_at          timestamptz not null
);
create index console_sessions_expires_idx on console_sessions (expires_at);

-- The overview's last 24 hours and top error codes read messages by when they
-- were sent, delivered, read and failed; the partial indexes stay small (only
-- rows that reached the step) and let each count touch only the last day.
create index messages_sent_at_idx on messages (sent_at) where sent_at is not null;
create index messages_delivered_at_idx on messages (delivered_at) where delivered_at is not null;
create index messages_read_at_idx on messages (read_at) where read_at is not null;
create index messages_failed_at_idx on messages (failed_at, error_code) where failed_at is not null;

-- The campaign page's export by outcome (error code, or a status).
create index messages_campaign_error_idx on messages (campaign_id, error_code) where error_code is not null;

-- Today's opt-outs.
create index consent_events_created_idx on consent_events (created_at) where to_consent = 'opted_out';


-- A person's page: decisions made about them without a message (a trigger
-- that did not fire for them, a test send).
create index decisions_person_idx on decisions (phone_number, created_at) where message_id is null;

-- The console finds the import its upload started by object name.
create index imports_object_idx on imports (object, started_at);
