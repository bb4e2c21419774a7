-- Send at most once and account for every message (docs/sending.md).

-- Each claim of a message by a sender is numbered; the claim's number is its
-- token, so a sender whose claim was taken over (its lease ran out) cannot end
-- the newer claim.
alter table messages add column claims integer not null default 0;
-- When reconciliation looks at the message: the end of the claim's lease
-- (set at claim time), a short grace after a send whose outcome is unknown (a
-- timeout, a 5xx without a code), or after a 2xx whose body named no SID.
-- Cleared once the message is settled.
alter table messages add column reconcile_at timestamptz;
-- The sender could not tell whether Twilio took the message.
alter table messages add column outcome_unknown boolean not null default false;
-- Sends reconciliation allowed after Twilio was found not to hold the message.
alter table messages add column resends smallint not null default 0;
-- The frequency cap counted this claim (under the person's lock).
alter table messages add column cap_reserved boolean not null default false;
-- When reconciliation last fetched the message from Twilio by SID.
alter table messages add column reconciled_at timestamptz;

-- Attempts now count only requests that reached for Twilio: a claim no longer adds one.
comment on column messages.attempts is 'Twilio send requests made for this message';

create index messages_reconcile_idx on messages (reconcile_at) where reconcile_at is not null;
-- Sent messages whose final status has not been heard (or whose SID is unknown).
create index messages_unsettled_idx on messages (sent_at) where status = 'sent' and reconciled_at is null;

-- Consecutive account-level refusals (credentials, suspension, daily limits);
-- at the configured count the campaign pauses.
alter table campaigns add column account_holds integer not null default 0;

-- What reconciliation learned from Twilio's Messages API is kept raw like a webhook.
alter table webhook_events drop constraint webhook_events_kind_valid;
alter table webhook_events add constraint webhook_events_kind_valid
    check (kind in ('inbound', 'status', 'reconcile'));
