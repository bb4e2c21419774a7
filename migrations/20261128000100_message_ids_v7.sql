-- Message ids become time-ordered (UUIDv7): a campaign's recipients are
-- inserted a million at a time, and random ids scatter those inserts over
-- every page of the primary key and of the (created_at, id) list indexes.
create or replace function uuid_generate_v7() returns uuid
language sql volatile as $$
    select encode(
        set_bit(
            set_bit(
                overlay(uuid_send(gen_random_uuid())
                        placing substring(int8send((extract(epoch from clock_timestamp()) * 1000)::bigint) from 3)
                        from 1 for 6),
                52, 1),
            53, 1),
        'hex')::uuid
$$;

alter table messages alter column id set default uuid_generate_v7();
