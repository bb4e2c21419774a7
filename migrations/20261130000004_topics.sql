-- Topics (docs/consent.md): a person may be subscribed or unsubscribed per
-- topic (`promotions`, `order-updates`); no row means subscribed. Consent as
-- a whole still comes first: STOP means every topic.
create table topic_subscriptions (
    phone_number        text not null references users (phone_number) on delete cascade,
    topic               text not null constraint topic_subscriptions_topic_valid
                        check (topic ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    subscribed          boolean not null,
    -- What last set it: keyword, button (the person), import or api.
    source              text not null,
    changed_at          timestamptz not null default now(),
    primary key (phone_number, topic)
);

alter table campaigns add column topic text constraint campaigns_topic_valid
    check (topic ~ '^[a-z0-9][a-z0-9_.-]{0,63}$');

-- A consent event about one topic (null: consent as a whole).
alter table consent_events add column topic text;
