-- The whole data model of DESIGN §2. Statuses and states are text with check
-- constraints (not enums) so later work can widen them without a type rewrite.

create or replace function set_updated_at() returns trigger
language plpgsql as $$
begin
    new.updated_at := now();
    return new;
end;
$$;

create table users (
    phone_number        text primary key
                        constraint users_phone_number_e164 check (phone_number ~ '^\+[1-9][0-9]{6,14}$'),
    attributes          jsonb not null default '{}'
                        constraint users_attributes_object check (jsonb_typeof(attributes) = 'object'),
    consent             text not null default 'unknown'
                        constraint users_consent_valid check (consent in ('unknown', 'opted_in', 'opted_out')),
    consent_changed_at  timestamptz,
    consent_source      text,
    wa_id               text,
    profile_name        text,
    last_inbound_at     timestamptz,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now()
);
create trigger users_updated_at before update on users
    for each row execute function set_updated_at();
create index users_consent_idx on users (consent);
create index users_attributes_idx on users using gin (attributes jsonb_path_ops);

create table webhook_events (
    id                  bigint generated always as identity primary key,
    kind                text not null constraint webhook_events_kind_valid check (kind in ('inbound', 'status')),
    -- What makes a delivery a duplicate: MessageSid (inbound) or MessageSid:MessageStatus (status).
    dedupe_key          text not null,
    idempotency_token   text,
    message_sid         text,
    request_uri         text not null,
    content_type        text not null,
    raw_body            text not null,
    params              jsonb not null,
    received_at         timestamptz not null default now(),
    constraint webhook_events_dedupe unique (kind, dedupe_key)
);
create unique index webhook_events_idempotency_token_key
    on webhook_events (idempotency_token) where idempotency_token is not null;
create index webhook_events_message_sid_idx on webhook_events (message_sid);

create table consent_events (
    id                  bigint generated always as identity primary key,
    phone_number        text not null,
    from_consent        text not null,
    to_consent          text not null,
    source              text not null constraint consent_events_source_valid
                        check (source in ('keyword', 'import', 'api', 'twilio')),
    webhook_event_id    bigint references webhook_events (id),
    import_id           uuid,
    detail              text,
    created_at          timestamptz not null default now()
);
create index consent_events_phone_idx on consent_events (phone_number, created_at);

create table inbound_messages (
    id                  bigint generated always as identity primary key,
    webhook_event_id    bigint not null references webhook_events (id),
    message_sid         text not null constraint inbound_messages_sid_key unique,
    from_number         text not null,
    to_number           text not null,
    wa_id               text,
    profile_name        text,
    body                text not null default '',
    num_media           integer not null default 0,
    media               jsonb not null default '[]',
    button_payload      text,
    button_text         text,
    received_at         timestamptz not null default now()
);
create index inbound_messages_from_idx on inbound_messages (from_number, received_at);

create table segments (
    id                  uuid primary key default gen_random_uuid(),
    name                text not null constraint segments_name_key unique,
    description         text,
    definition          jsonb not null,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now()
);
create trigger segments_updated_at before update on segments
    for each row execute function set_updated_at();

create table templates (
    id                  uuid primary key default gen_random_uuid(),
    name                text not null constraint templates_name_key unique,
    body                text,
    content_sid         text,
    content_variables   jsonb,
    locale              text not null default 'en',
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    constraint templates_has_content check (body is not null or content_sid is not null)
);
create trigger templates_updated_at before update on templates
    for each row execute function set_updated_at();

create table campaigns (
    id                  uuid primary key default gen_random_uuid(),
    name                text not null,
    segment_id          uuid not null references segments (id),
    template_id         uuid not null references templates (id),
    state               text not null default 'draft' constraint campaigns_state_valid
                        check (state in ('draft', 'scheduled', 'running', 'paused', 'completed', 'cancelled')),
    starts_at           timestamptz,
    rate_per_second     integer not null default 10 constraint campaigns_rate_positive check (rate_per_second > 0),
    quiet_hours_start   time,
    quiet_hours_end     time,
    default_timezone    text not null default 'UTC',
    frequency_cap       integer constraint campaigns_frequency_cap_positive check (frequency_cap > 0),
    max_attempts        integer not null default 5 constraint campaigns_max_attempts_positive check (max_attempts > 0),
    materialized_at     timestamptz,
    started_at          timestamptz,
    completed_at        timestamptz,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    constraint campaigns_quiet_hours_pair check ((quiet_hours_start is null) = (quiet_hours_end is null))
);
create trigger campaigns_updated_at before update on campaigns
    for each row execute function set_updated_at();
create index campaigns_due_idx on campaigns (state, starts_at);

create table messages (
    id                  uuid primary key default gen_random_uuid(),
    campaign_id         uuid not null references campaigns (id),
    phone_number        text not null,
    status              text not null default 'pending' constraint messages_status_valid check (status in (
                            'pending', 'skipped', 'queued', 'sending', 'accepted', 'scheduled', 'sent',
                            'delivered', 'read', 'partially_delivered', 'undelivered', 'failed', 'canceled')),
    -- MessageStatus::rank() of status, kept beside it so a callback advances the row
    -- with one indexed comparison (see shared::domain::status).
    status_rank         smallint not null default 0,
    body                text,
    content_sid         text,
    content_variables   jsonb,
    twilio_sid          text constraint messages_twilio_sid_key unique,
    error_code          integer,
    error_message       text,
    attempts            integer not null default 0,
    next_attempt_at     timestamptz not null default now(),
    queued_at           timestamptz,
    sending_at          timestamptz,
    sent_at             timestamptz,
    delivered_at        timestamptz,
    read_at             timestamptz,
    failed_at           timestamptz,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    constraint messages_campaign_phone_key unique (campaign_id, phone_number)
);
create index messages_due_idx on messages (campaign_id, next_attempt_at) where status = 'pending';
create index messages_phone_idx on messages (phone_number, created_at);
create index messages_status_idx on messages (campaign_id, status);

create table decisions (
    id                  bigint generated always as identity primary key,
    message_id          uuid references messages (id),
    campaign_id         uuid references campaigns (id),
    phone_number        text,
    decision            text not null,
    reason              jsonb not null default '{}',
    created_at          timestamptz not null default now()
);
create index decisions_message_idx on decisions (message_id, created_at);
create index decisions_campaign_idx on decisions (campaign_id, decision);

create table imports (
    id                  uuid primary key default gen_random_uuid(),
    bucket              text not null,
    object              text not null,
    generation          bigint not null,
    state               text not null default 'running' constraint imports_state_valid
                        check (state in ('running', 'completed', 'failed')),
    failure_reason      text,
    rows_read           bigint not null default 0,
    inserted            bigint not null default 0,
    updated             bigint not null default 0,
    duplicates          bigint not null default 0,
    rejected            bigint not null default 0,
    started_at          timestamptz not null default now(),
    finished_at         timestamptz,
    updated_at          timestamptz not null default now(),
    constraint imports_object_generation_key unique (bucket, object, generation)
);
create trigger imports_updated_at before update on imports
    for each row execute function set_updated_at();

create table import_rejects (
    id                  bigint generated always as identity primary key,
    import_id           uuid not null references imports (id) on delete cascade,
    line_number         bigint not null,
    raw_line            text not null,
    reason              text not null
);
create index import_rejects_import_idx on import_rejects (import_id, line_number);
