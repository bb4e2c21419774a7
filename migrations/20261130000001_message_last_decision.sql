-- The latest decision about each message, kept on its row by the statement that
-- writes the decision, so "what became of each recipient" is one pass over a
-- campaign's messages instead of a search through its decisions.
alter table messages add column last_decision text;

update messages m set last_decision = d.decision
from (select distinct on (message_id) message_id, decision
      from decisions where message_id is not null
      order by message_id, id desc) d
where d.message_id = m.id;

create index messages_campaign_last_decision_idx on messages (campaign_id, last_decision);
