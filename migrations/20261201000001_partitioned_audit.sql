-- The append-only audit tables (docs/lifecycle.md) become partitioned by month,
-- so that a month past its retention is archived and dropped whole, and reads
-- bounded in time touch only the months they need.
--
-- A unique key of a partitioned table must contain its partition key, so what
-- makes a delivery a duplicate (a webhook's dedupe key or idempotency token,
-- an event's idempotency key) moves to a narrow unpartitioned key table,
-- written in the same statement as the row it admits: the key's insert decides,
-- the row follows only when the key was new. Keys are removed with the month
-- their row was archived in.
--
-- Partitions are created (and rows that landed in the default partition moved
-- to theirs) by `lifecycle::partitions::ensure`, which the migrate job, the
-- lifecycle job and the fan-out tick run. The default partition is a safety
-- net: nothing is refused because a month was not created in time.

-- Links to a webhook event or an event become plain ids: the row they point at
-- may be archived. Consent evidence is copied to webhook_events_kept first.
alter table consent_events drop constraint consent_events_webhook_event_id_fkey;
alter table inbound_messages drop constraint inbound_messages_webhook_event_id_fkey;

-- webhook_events -------------------------------------------------------------
alter table webhook_events rename to webhook_events_unpartitioned;
alter index webhook_events_pkey rename to webhook_events_unpartitioned_pkey;
alter table webhook_events_unpartitioned rename constraint webhook_events_dedupe to webhook_events_unpartitioned_dedupe;
alter index webhook_events_idempotency_token_key rename to webhook_events_unpartitioned_token_key;
alter index webhook_events_message_sid_idx rename to webhook_events_unpartitioned_sid_idx;
alter table webhook_events_unpartitioned rename constraint webhook_events_kind_valid to webhook_events_unpartitioned_kind_valid;
alter sequence webhook_events_id_seq rename to webhook_events_unpartitioned_id_seq;

create table webhook_events (
    id                  bigint generated always as identity,
    kind                text not null constraint webhook_events_kind_valid
                        check (kind in ('inbound', 'status', 'reconcile')),
    -- What makes a delivery a duplicate: MessageSid (inbound) or MessageSid:MessageStatus (status).
    dedupe_key          text not null,
    idempotency_token   text,
    message_sid         text,
    request_uri         text not null,
    content_type        text not null,
    raw_body            text not null,
    params              jsonb not null,
    received_at         timestamptz not null default now(),
    parse_error         text,
    constraint webhook_events_pkey primary key (id, received_at)
) partition by range (received_at);
create index webhook_events_message_sid_idx on webhook_events (message_sid);
create table webhook_events_default partition of webhook_events default;

-- The keys that admitted a webhook event: one per (kind, dedupe key), and one
-- per idempotency token.
create table webhook_keys (
    kind                text not null,
    dedupe_key          text not null,
    idempotency_token   text,
    received_at         timestamptz not null default now(),
    constraint webhook_keys_pkey primary key (kind, dedupe_key)
);
create unique index webhook_keys_idempotency_token_key
    on webhook_keys (idempotency_token) where idempotency_token is not null;
-- Keys arrive in time order: a block range index finds a month's keys for almost nothing.
create index webhook_keys_received_idx on webhook_keys using brin (received_at);

insert into webhook_events
    (id, kind, dedupe_key, idempotency_token, message_sid, request_uri, content_type,
     raw_body, params, received_at, parse_error)
overriding system value
select id, kind, dedupe_key, idempotency_token, message_sid, request_uri, content_type,
       raw_body, params, received_at, parse_error
from webhook_events_unpartitioned;
insert into webhook_keys (kind, dedupe_key, idempotency_token, received_at)
select kind, dedupe_key, idempotency_token, received_at from webhook_events_unpartitioned;
select setval(pg_get_serial_sequence('webhook_events', 'id'),
              coalesce((select max(id) from webhook_events_unpartitioned), 0) + 1, false);
drop table webhook_events_unpartitioned;

-- The raw webhooks consent events point at, kept past their month's archive:
-- consent evidence is never dropped while the person exists.
create table webhook_events_kept (like webhook_events including defaults including constraints);
alter table webhook_events_kept add constraint webhook_events_kept_pkey primary key (id);

-- decisions ------------------------------------------------------------------
alter table decisions rename to decisions_unpartitioned;
alter index decisions_pkey rename to decisions_unpartitioned_pkey;
alter index decisions_message_idx rename to decisions_unpartitioned_message_idx;
alter index decisions_campaign_idx rename to decisions_unpartitioned_campaign_idx;
alter index decisions_person_idx rename to decisions_unpartitioned_person_idx;
alter table decisions_unpartitioned rename constraint decisions_message_id_fkey to decisions_unpartitioned_message_id_fkey;
alter table decisions_unpartitioned rename constraint decisions_campaign_id_fkey to decisions_unpartitioned_campaign_id_fkey;
alter sequence decisions_id_seq rename to decisions_unpartitioned_id_seq;

create table decisions (
    id                  bigint generated always as identity,
    message_id          uuid references messages (id),
    campaign_id         uuid references campaigns (id),
    phone_number        text,
    decision            text not null,
    reason              jsonb not null default '{}',
    created_at          timestamptz not null default now(),
    constraint decisions_pkey primary key (id, created_at)
) partition by range (created_at);
create index decisions_message_idx on decisions (message_id, created_at);
create index decisions_campaign_idx on decisions (campaign_id, decision);
create index decisions_person_idx on decisions (phone_number, created_at) where message_id is null;
create table decisions_default partition of decisions default;

insert into decisions (id, message_id, campaign_id, phone_number, decision, reason, created_at)
overriding system value
select id, message_id, campaign_id, phone_number, decision, reason, created_at
from decisions_unpartitioned;
select setval(pg_get_serial_sequence('decisions', 'id'),
              coalesce((select max(id) from decisions_unpartitioned), 0) + 1, false);
drop table decisions_unpartitioned;

-- events ---------------------------------------------------------------------
alter table events rename to events_unpartitioned;
alter index events_pkey rename to events_unpartitioned_pkey;
alter table events_unpartitioned rename constraint events_idempotency_key to events_unpartitioned_idempotency_key;
alter table events_unpartitioned rename constraint events_idempotency_key_valid to events_unpartitioned_idempotency_key_valid;
alter table events_unpartitioned rename constraint events_name_valid to events_unpartitioned_name_valid;
alter table events_unpartitioned rename constraint events_properties_object to events_unpartitioned_properties_object;
alter table events_unpartitioned rename constraint events_source_valid to events_unpartitioned_source_valid;
alter table events_unpartitioned rename constraint events_phone_number_fkey to events_unpartitioned_phone_number_fkey;
alter index events_person_name_time_idx rename to events_unpartitioned_person_name_time_idx;
alter index events_name_received_idx rename to events_unpartitioned_name_received_idx;
alter sequence events_id_seq rename to events_unpartitioned_id_seq;

create table events (
    id                  bigint generated always as identity,
    idempotency_key     text not null
                        constraint events_idempotency_key_valid check (length(idempotency_key) between 1 and 300),
    phone_number        text not null references users (phone_number) on delete cascade,
    name                text not null constraint events_name_valid
                        check (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$'),
    properties          jsonb not null default '{}'
                        constraint events_properties_object check (jsonb_typeof(properties) = 'object'),
    occurred_at         timestamptz not null,
    received_at         timestamptz not null default now(),
    -- How it reached us: api (POST /v1/events), pubsub (the events topic) or inbound (a WhatsApp message).
    source              text not null constraint events_source_valid check (source in ('api', 'pubsub', 'inbound')),
    constraint events_pkey primary key (id, received_at)
) partition by range (received_at);
create index events_person_name_time_idx on events (phone_number, name, occurred_at desc);
create index events_name_received_idx on events (name, received_at);
create table events_default partition of events default;

-- The keys that admitted an event.
create table event_keys (
    idempotency_key     text not null constraint event_keys_pkey primary key,
    received_at         timestamptz not null default now()
);
create index event_keys_received_idx on event_keys using brin (received_at);

insert into events (id, idempotency_key, phone_number, name, properties, occurred_at, received_at, source)
overriding system value
select id, idempotency_key, phone_number, name, properties, occurred_at, received_at, source
from events_unpartitioned;
insert into event_keys (idempotency_key, received_at)
select idempotency_key, received_at from events_unpartitioned;
select setval(pg_get_serial_sequence('events', 'id'),
              coalesce((select max(id) from events_unpartitioned), 0) + 1, false);
drop table events_unpartitioned;

-- Archives -------------------------------------------------------------------
-- One row per month archived: where its object and manifest are, what they
-- hold, and when the partition was dropped.
create table archived_partitions (
    table_name          text not null,
    month               date not null constraint archived_partitions_month_first check (extract(day from month) = 1),
    attempt             uuid not null,
    object              text not null,
    manifest            text not null,
    row_count           bigint not null,
    compressed_bytes    bigint not null,
    sha256              text not null,
    archived_at         timestamptz not null default now(),
    dropped_at          timestamptz,
    constraint archived_partitions_pkey primary key (table_name, month)
);

-- Erasure reaches archived months on restore (docs/lifecycle.md): the numbers
-- erased, with the token that replaced them, kept for as long as an archive
-- that may hold them exists. This is the one place an erased number remains.
create table erasures (
    phone_number        text not null constraint erasures_pkey primary key,
    token               text not null,
    erased_at           timestamptz not null default now()
);
