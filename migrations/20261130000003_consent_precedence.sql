-- The person owns their opt-out (docs/consent.md): a change an import or the
-- API asked for and the precedence rules refused is kept as evidence too.
alter table consent_events add column refused boolean not null default false;
alter table consent_events drop constraint consent_events_source_valid;
alter table consent_events add constraint consent_events_source_valid
    check (source in ('keyword', 'button', 'import', 'api', 'twilio'));

-- Opt-ins an import asked for and the precedence rules kept out.
alter table imports add column consent_kept bigint not null default 0;

-- Raw first: a signed webhook is stored before anything in it is parsed; a
-- field that does not parse is kept, flagged with the reason.
alter table webhook_events add column parse_error text;
