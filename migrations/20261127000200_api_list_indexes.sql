-- Keyset pagination of the API's message lists (newest first), overall and per campaign.
create index messages_created_idx on messages (created_at, id);
create index messages_campaign_created_idx on messages (campaign_id, created_at, id);
