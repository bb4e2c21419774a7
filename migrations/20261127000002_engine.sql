-- The campaign engine: per-campaign dispatch pacing and the indexes the
-- fan-out and the sender read by.

alter table campaigns
    add column dispatch_window_start timestamptz,
    add column dispatched_in_window integer not null default 0;

-- Stale dispatches (a task lost between commit and publish) are found by age.
create index messages_queued_idx on messages (queued_at) where status = 'queued';
-- The frequency cap counts a user's recent sends.
create index messages_phone_sent_idx on messages (phone_number, sent_at) where sent_at is not null;
