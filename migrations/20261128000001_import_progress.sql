-- What the ingest function records beyond the foundation's `imports` columns:
-- the detected format, the object's size and how far reading got (progress),
-- rows that changed nothing, and how many times the import was started
-- (a crashed or interrupted run is re-run from the start).
alter table imports
    add column format       text,
    add column size_bytes   bigint,
    add column bytes_read   bigint not null default 0,
    add column unchanged    bigint not null default 0,
    add column attempts     integer not null default 0;

-- Merges jsonb objects in input order, later keys winning: the per-attribute
-- "later values win" rule for a phone number that appears several times in a
-- file, as one aggregate over `||` (jsonb_concat is strict, so nulls are skipped).
create aggregate jsonb_merge_agg(jsonb) (
    sfunc = jsonb_concat,
    stype = jsonb,
    initcond = '{}'
);
