-- decisions is the append-only audit log, partitioned by month and archived
-- like webhook_events and events, which hold no foreign keys either. Its rows
-- are written by the statement that makes the decision about the message or
-- campaign they name (the ids come from that statement's own rows), and
-- neither messages nor campaigns are ever deleted.
--
-- The two checks cost more than the row they guard: each inserted decision ran
-- two lookups that lock the parent row (FOR KEY SHARE), which on a dispatch of
-- 1,000,000 messages meant a million row locks on messages, each written to
-- the WAL, and a million on the one campaign row. Measured on 200,000 decisions
-- inserted in one statement: 4.7-5.6 s with the checks, 1.1-2.5 s without.
alter table decisions drop constraint decisions_message_id_fkey;
alter table decisions drop constraint decisions_campaign_id_fkey;
