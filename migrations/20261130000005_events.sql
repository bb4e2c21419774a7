-- Events (docs/events.md): what people did, as other systems (or our inbound
-- webhook) report it. Idempotent on the key the reporter gives (HTTP), the
-- Pub/Sub message id (push) or the MessageSid (inbound). An event is the
-- person's data: erasing the person deletes their events.
create table events (
    id                  bigint generated always as identity primary key,
    idempotency_key     text not null constraint events_idempotency_key unique
                        constraint events_idempotency_key_valid check (length(idempotency_key) between 1 and 300),
    phone_number        text not null references users (phone_number) on delete cascade,
    name                text not null constraint events_name_valid
                        check (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$'),
    properties          jsonb not null default '{}'
                        constraint events_properties_object check (jsonb_typeof(properties) = 'object'),
    occurred_at         timestamptz not null,
    received_at         timestamptz not null default now(),
    -- How it reached us: api (POST /v1/events), pubsub (the events topic) or inbound (a WhatsApp message).
    source              text not null constraint events_source_valid check (source in ('api', 'pubsub', 'inbound'))
);
-- "Did this person do X (recently)?": event segments and triggers read by person, name and time.
create index events_person_name_time_idx on events (phone_number, name, occurred_at desc);
-- Triggers read what arrived since they last looked.
create index events_name_received_idx on events (name, received_at);
