-- Triggered campaigns (docs/events.md): a campaign with a `trigger` sends
-- when a matching event arrives, instead of once to a segment. The trigger is
-- stored as the API validated it (shared::domain::Trigger):
--   {"event": name, "filter": segment-over-properties | null, "delay_seconds": n,
--    "per_person": "once" | "once_per_period" | "every_event",
--    "period_seconds": n | null, "cancel_event": name | null}
alter table campaigns
    add column trigger jsonb
        constraint campaigns_trigger_object check (trigger is null or jsonb_typeof(trigger) = 'object'),
    add column kind text generated always as
        (case when trigger is null then 'batch' else 'triggered' end) stored,
    -- A triggered campaign's audience segment is optional; a batch campaign needs one.
    alter column segment_id drop not null,
    add constraint campaigns_batch_has_segment check (trigger is not null or segment_id is not null);

-- Events look up the running campaigns their name starts or cancels.
create index campaigns_trigger_event_idx on campaigns ((trigger ->> 'event')) where trigger is not null;
create index campaigns_cancel_event_idx on campaigns ((trigger ->> 'cancel_event')) where trigger is not null;

-- A triggered message names the event that started it. A batch campaign has
-- one message per person; a triggered one at most one per event (how many
-- per person is the trigger's `per_person` rule, enforced under a lock).
alter table messages add column trigger_event_id bigint;
alter table messages drop constraint messages_campaign_phone_key;
create unique index messages_campaign_phone_key on messages (campaign_id, phone_number)
    where trigger_event_id is null;
create unique index messages_campaign_trigger_event_key on messages (campaign_id, trigger_event_id)
    where trigger_event_id is not null;
-- The per-person rule reads a person's earlier messages of the campaign.
create index messages_triggered_person_idx on messages (campaign_id, phone_number, created_at)
    where trigger_event_id is not null;
