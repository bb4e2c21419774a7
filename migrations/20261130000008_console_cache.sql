-- Figures the console shows that take a scan of many rows (a big campaign's
-- funnel, the last 24 hours, a segment's size): computed at most once per
-- freshness period by whichever instance needs them, kept here so every api
-- instance reads the same value, and recomputed in the background while the
-- page shows the stored one with its age. Nothing else reads it; losing it
-- only costs one slow page view.
create table console_cache (
    key                 text primary key,
    value               jsonb not null,
    computed_at         timestamptz not null default now()
);
