-- pgpulse capture schema, version 7: consumer groups.
--
-- Consumer groups: server-side readers of the log with durable positions.
--
-- A group's work is split into a fixed number of partitions by row key, so all
-- changes of one row go to one worker, in order.  Each partition keeps its own
-- position (a cursor into the log, as clients' event ids) and a lease: the
-- worker holding it renews it while alive; a lease that runs out moves the
-- partition, and its unacknowledged changes, to another worker.  Positions are
-- advanced by compare-and-set on the old value, so a worker whose lease moved
-- cannot acknowledge (in transaction mode its writes roll back with it).
-- Pruning keeps every change a group has not acknowledged (pgpulse/log/prune.py)
-- until the group lags more than its max_lag; then the group is reset.
create table pgpulse.consumer_groups (
    name text primary key,
    tables text[] not null,
    filter text not null default '',
    partitions integer not null check (partitions between 1 and 1024),
    max_lag interval,
    created_at timestamptz not null default now(),
    -- Partitions taken over from a worker whose lease ran out (their
    -- unacknowledged changes were delivered again).
    takeovers bigint not null default 0,
    resets integer not null default 0,
    reset_reason text,
    reset_at timestamptz
);

create table pgpulse.consumer_partitions (
    group_name text not null references pgpulse.consumer_groups (name)
        on delete cascade,
    partition integer not null,
    position text not null,
    -- Changes with xid >= hold_xid may not be acknowledged yet: prune keeps them.
    hold_xid xid8 not null,
    worker text,
    lease_until timestamptz,
    acked_at timestamptz,
    -- Changes acknowledged (counted per partition: no hot row for all workers).
    delivered bigint not null default 0,
    -- Changes a worker handed out again because their batch was not
    -- acknowledged (counted when the partition next moves).
    redelivered bigint not null default 0,
    primary key (group_name, partition)
);

create table pgpulse.consumer_workers (
    group_name text not null references pgpulse.consumer_groups (name)
        on delete cascade,
    worker text not null,
    seen_at timestamptz not null default now(),
    primary key (group_name, worker)
);

-- Changes a sink gave up on after its attempts (or a handler rejected), kept
-- until retried (`pgpulse consumers retry GROUP`) or dropped.
create table pgpulse.dead_letters (
    id bigint generated always as identity primary key,
    group_name text not null references pgpulse.consumer_groups (name)
        on delete cascade,
    change_id bigint not null,
    event_id text not null,
    tbl text not null,
    op text not null,
    pk jsonb,
    "row" jsonb,
    old jsonb,
    ts timestamptz,
    error text not null,
    attempts integer not null,
    failed_at timestamptz not null default now(),
    retry_requested boolean not null default false,
    claimed_by text,
    claimed_until timestamptz
);
create index dead_letters_group_idx on pgpulse.dead_letters (group_name, id);

insert into pgpulse.schema_version (version) values (7);
