-- pgpulse capture schema, current version (7). Upgrades: migrations/.
--
-- Statement-level triggers with transition tables append every changed row of a
-- watched table to pgpulse.changes, then send ONE tiny wake-up (pg_notify with an
-- empty payload, deduplicated per transaction) so rows of any size work.  Readers
-- take new rows by snapshot visibility (see pgpulse/changelog.py), never by id
-- alone, because ids are taken before commit.
--
-- Tables watched with source 'wal' have no trigger: they join the publication
-- pgpulse_capture, and a gateway decodes their changes from the WAL through the
-- replication slot pgpulse.slot_name() into the same log (pgpulse/decoder.py).
-- pgpulse creates the publication, then the slot, when a table is first watched
-- that way (pgpulse/capture/wal.py): not here, because a publication on a
-- database without wal_level = logical only earns a warning.

create schema if not exists pgpulse;

create table pgpulse.schema_version (
    version integer not null,
    applied_at timestamptz not null default now()
);

-- One index, on xid: reads and pruning go by it (an index on id or ts would
-- cost every captured statement one more index; pruning by age bisects the
-- xid index).  No CHECK constraint either: PostgreSQL prepares CHECK
-- expressions again for every INSERT statement, a fifth of what capture cost
-- a single-row writer (migrations/0006).
create table pgpulse.changes (
    id bigint generated always as identity,
    xid xid8 not null,
    tbl text not null,
    op text not null,
    pk jsonb,
    "row" jsonb,
    old jsonb,
    ts timestamptz not null
);
create index changes_xid_idx on pgpulse.changes (xid);

-- One row: the newest transaction id whose changes were pruned from the log.  A
-- resume cursor older than that gets an explicit reset instead of a silent gap.
create table pgpulse.state (
    singleton boolean primary key default true check (singleton),
    pruned_xid xid8 not null default '0'::xid8,
    pruned_at timestamptz,
    -- End of the last WAL transaction decoded into the log (source 'wal'):
    -- a decoder that restarts skips what it already logged.
    decoded_lsn pg_lsn not null default '0/0'
);
insert into pgpulse.state default values;

-- Listeners register here; writers skip pg_notify while no listener wants a
-- wake-up (busy listeners poll).  See migrations/0002_adaptive_wakeups.sql.
create table pgpulse.listeners (
    pid integer primary key,
    wants_notify boolean not null default true,
    registered_at timestamptz not null default now()
);

-- What writers read: how many listeners want wake-ups.  A sequence because its
-- value is not transactional: one cheap function call per captured statement,
-- and writers at any isolation level see the current value.
create sequence pgpulse.wakeups minvalue 0;
select setval('pgpulse.wakeups', 0, true);

-- A listener joins, or says whether it wants wake-ups; also forgets listeners
-- whose backend is gone.  Serialized so the count is never computed from a
-- half-seen state.
create function pgpulse.set_wakeups(want boolean) returns void
language plpgsql as $fn$
begin
    lock table pgpulse.listeners in share row exclusive mode;
    delete from pgpulse.listeners
    where pid <> pg_backend_pid() and pid not in (select pid from pg_stat_activity);
    insert into pgpulse.listeners (pid, wants_notify)
    values (pg_backend_pid(), want)
    on conflict (pid) do update set wants_notify = excluded.wants_notify;
    perform setval('pgpulse.wakeups',
                   (select count(*) from pgpulse.listeners where wants_notify), true);
end
$fn$;

-- A listener that stops leaves, so writers stop notifying when none is left.
create function pgpulse.leave_wakeups() returns void
language plpgsql as $fn$
begin
    lock table pgpulse.listeners in share row exclusive mode;
    delete from pgpulse.listeners where pid = pg_backend_pid();
    perform setval('pgpulse.wakeups',
                   (select count(*) from pgpulse.listeners where wants_notify), true);
end
$fn$;

create table pgpulse.watched (
    tbl regclass primary key,
    name text not null,
    publish text not null default 'rows' check (publish in ('rows', 'keys')),
    columns text[],
    exclude text[],
    watched_at timestamptz not null default now(),
    pk text[],
    source text not null default 'trigger' check (source in ('trigger', 'wal')),
    -- source 'wal': the table's replica identity before watch set it to full
    -- (restored by unwatch); null when there is nothing to restore.
    replica_identity text
);

-- JSON of the given columns of alias a, built without to_jsonb's column list so
-- columns added later are NOT captured unless asked for (safe default for
-- column allow-lists).  jsonb_build_object takes at most 100 arguments: chunk.
create function pgpulse._columns_json(a text, cols text[]) returns text
language sql immutable as $fn$
    select coalesce(string_agg(chunk, ' || '), '''{}''::jsonb')
    from (
        select 'jsonb_build_object(' || string_agg(format('%L, %s.%I', c, a, c), ', ')
               || ')' as chunk
        from unnest(cols) with ordinality as u(c, i)
        group by (i - 1) / 50
    ) chunks
$fn$;

-- The name of the capture function of a table (one per watched table).
create function pgpulse._function_name(target regclass) returns text
language sql stable as $fn$
    select left('capture_' || nsp.nspname || '_' || cls.relname, 50) || '_' || cls.oid
    from pg_class cls join pg_namespace nsp on nsp.oid = cls.relnamespace
    where cls.oid = target
$fn$;

-- The replication slot of this database's wal capture source (slot names are
-- cluster-wide: one per database).
create function pgpulse.slot_name() returns text
language sql stable as $fn$
    select 'pgpulse_' || oid from pg_database where datname = current_database()
$fn$;

-- The name of the decode function of a table watched through the WAL.
create function pgpulse._decode_name(target regclass) returns text
language sql stable as $fn$
    select 'decode' || substr(pgpulse._function_name(target), 8)
$fn$;

create function pgpulse.watch(
    target regclass,
    publish text default 'rows',
    columns text[] default null,
    exclude text[] default null,
    source text default 'trigger'
) returns void
language plpgsql as $fn$
declare
    qname text;
    fname text;
    pk_cols text[];
    all_cols text[];
    bad text[];
    pk_n text;
    pk_o text;
    row_n text;
    row_o text;
    join_cond text;
    n_missing text;
    o_missing text;
    identity text;
begin
    select format('%s.%s', nsp.nspname, cls.relname) into qname
    from pg_class cls join pg_namespace nsp on nsp.oid = cls.relnamespace
    where cls.oid = target;

    select array_agg(a.attname::text order by a.attnum) into all_cols
    from pg_attribute a
    where a.attrelid = target and a.attnum > 0 and not a.attisdropped;

    select array_agg(a.attname::text order by array_position(con.conkey, a.attnum))
    into pk_cols
    from pg_constraint con
    join pg_attribute a on a.attrelid = con.conrelid and a.attnum = any(con.conkey)
    where con.conrelid = target and con.contype = 'p';

    if pk_cols is null then
        raise exception 'table % has no primary key', qname
            using errcode = '55000',
                  hint = 'pgpulse identifies changed rows by primary key; add one.';
    end if;
    if publish not in ('rows', 'keys') then
        raise exception 'publish must be ''rows'' or ''keys'', got %', publish
            using errcode = '22023';
    end if;
    if source not in ('trigger', 'wal') then
        raise exception 'source must be ''trigger'' or ''wal'', got %', source
            using errcode = '22023';
    end if;
    if source = 'wal' then
        if current_setting('wal_level') <> 'logical' then
            raise exception 'the wal capture source needs wal_level = logical (it is %)',
                current_setting('wal_level')
                using errcode = '55000',
                      hint = 'Set wal_level = logical and restart PostgreSQL, '
                             'or watch with source ''trigger''.';
        end if;
        if not exists (select from pg_publication where pubname = 'pgpulse_capture')
           or not exists (select from pg_replication_slots
                          where slot_name = pgpulse.slot_name()) then
            raise exception 'the wal capture source is not set up in this database'
                using errcode = '55000',
                      hint = 'Watch through pgpulse (`pgpulse watch --source wal`, '
                             'or pgpulse.watch(..., source="wal") in Python): it '
                             'creates the publication and the replication slot first.';
        end if;
    end if;
    select array_agg(c) into bad
    from unnest(coalesce(columns, '{}') || coalesce(exclude, '{}')) c
    where c <> all(all_cols);
    if bad is not null then
        raise exception 'column(s) % do not exist in table %', bad, qname
            using errcode = '42703';
    end if;
    if columns is not null and exists (select 1 from unnest(pk_cols) p where p <> all(columns)) then
        columns := pk_cols || array(select c from unnest(columns) c where c <> all(pk_cols));
    end if;
    if exists (select 1 from unnest(pk_cols) p where p = any(coalesce(exclude, '{}'))) then
        raise exception 'primary key columns of % cannot be excluded', qname
            using errcode = '22023';
    end if;

    if publish = 'keys' then
        -- Only keys are published: log them; the rows stay in the table.
        pk_n := pgpulse._columns_json('n', pk_cols);
        pk_o := pgpulse._columns_json('o', pk_cols);
        row_n := 'null::jsonb';
        row_o := 'null::jsonb';
    else
        -- Rows carry the key columns; readers extract the key (watched.pk).
        -- n.* / o.*: a whole-row reference even when a column is named n or o.
        pk_n := 'null::jsonb';
        pk_o := 'null::jsonb';
        if columns is not null then
            row_n := pgpulse._columns_json('n', columns);
            row_o := pgpulse._columns_json('o', columns);
        elsif exclude is not null and cardinality(exclude) > 0 then
            row_n := format('(to_jsonb(n.*) - %L::text[])', exclude);
            row_o := format('(to_jsonb(o.*) - %L::text[])', exclude);
        else
            row_n := 'to_jsonb(n.*)';
            row_o := 'to_jsonb(o.*)';
        end if;
    end if;
    select string_agg(format('n.%I = o.%I', p, p), ' and ') into join_cond
    from unnest(pk_cols) p;
    n_missing := format('n.%I is null', pk_cols[1]);
    o_missing := format('o.%I is null', pk_cols[1]);

    perform pgpulse.unwatch(target);

    if source = 'wal' then
        -- Changes come from the WAL (pgpulse/decoder.py): the table joins the
        -- publication, and its decode function turns decoded rows (column text
        -- values as JSON objects) into log rows with the same expressions as
        -- the trigger would use, so both sources publish identical JSON.  Commit
        -- times come as the WAL has them: microseconds since 2000-01-01 UTC.
        execute format($gen$
create or replace function pgpulse.%1$I(ops text[], news json[], olds json[], tss bigint[])
returns table (op text, pk jsonb, "row" jsonb, old jsonb, ts timestamptz)
language sql stable set search_path = pg_catalog, pgpulse as $body$
-- Generated by pgpulse.watch(%2$L, source => 'wal'); re-run watch to change it.
select u.op,
       case when u.op = 'TRUNCATE' then '{}'::jsonb
            when u.op = 'DELETE' then %5$s else %3$s end,
       case when u.op in ('INSERT', 'UPDATE') then %4$s end,
       case when u.op in ('UPDATE', 'DELETE') and u.oj is not null then %6$s end,
       '2000-01-01 00:00:00+00'::timestamptz + u.us * interval '1 microsecond'
from unnest(ops, news, olds, tss) with ordinality as u(op, nj, oj, us, i)
left join lateral json_populate_record(null::%2$s, u.nj) n on true
left join lateral json_populate_record(null::%2$s, u.oj) o on true
order by u.i
$body$
$gen$, pgpulse._decode_name(target), qname, pk_n, row_n, pk_o, row_o);

        execute format('alter publication pgpulse_capture add table %s', target);
        -- Full old rows in the WAL: UPDATE and DELETE events carry the old row,
        -- as with triggers.  The previous setting is restored by unwatch.
        select case c.relreplident
                   when 'd' then 'default' when 'n' then 'nothing'
                   when 'i' then (select format('using index %I', i.relname)
                                  from pg_index x join pg_class i on i.oid = x.indexrelid
                                  where x.indrelid = target and x.indisreplident)
               end
        into identity
        from pg_class c where c.oid = target;
        if publish = 'rows' and identity is not null then
            execute format('alter table %s replica identity full', target);
        else
            identity := null;
        end if;
        insert into pgpulse.watched (tbl, name, publish, columns, exclude, pk, source,
                                     replica_identity)
        values (target, qname, publish, columns, exclude, pk_cols, 'wal', identity);
        return;
    end if;

    fname := pgpulse._function_name(target);
    execute format($gen$
create function pgpulse.%1$I() returns trigger
language plpgsql security definer set search_path = pg_catalog, pgpulse as $body$
-- Generated by pgpulse.watch(%2$L); re-run watch to change it.
declare
    v_xid xid8 := pg_current_xact_id();
    v_ts timestamptz := clock_timestamp();
    n_rows bigint;
begin
    if tg_op = 'INSERT' then
        insert into pgpulse.changes (xid, ts, tbl, op, pk, "row")
        select v_xid, v_ts, %2$L, 'INSERT', %3$s, %4$s from pgpulse_new n;
    elsif tg_op = 'DELETE' then
        insert into pgpulse.changes (xid, ts, tbl, op, pk, old)
        select v_xid, v_ts, %2$L, 'DELETE', %5$s, %6$s from pgpulse_old o;
    elsif tg_op = 'UPDATE' then
        -- Rows pair up by primary key; a key change is a DELETE and an INSERT.
        insert into pgpulse.changes (xid, ts, tbl, op, pk, "row", old)
        select v_xid, v_ts, %2$L,
               case when %8$s then 'DELETE' when %9$s then 'INSERT' else 'UPDATE' end,
               case when %8$s then %5$s else %3$s end,
               case when %8$s then null else %4$s end,
               case when %9$s then null else %6$s end
        from pgpulse_new n full join pgpulse_old o on (%7$s);
    else
        insert into pgpulse.changes (xid, ts, tbl, op, pk)
        values (v_xid, v_ts, %2$L, 'TRUNCATE', '{}');
    end if;
    get diagnostics n_rows = row_count;
    -- Wake listeners only when one wants it (busy listeners poll).
    if n_rows > 0 and pg_sequence_last_value('pgpulse.wakeups') > 0 then
        perform pg_notify('pgpulse', '');
    end if;
    return null;
end
$body$
$gen$, fname, qname, pk_n, row_n, pk_o, row_o, join_cond, n_missing, o_missing);

    execute format('create trigger pgpulse_capture_insert after insert on %s '
                   'referencing new table as pgpulse_new for each statement '
                   'execute function pgpulse.%I()', target, fname);
    execute format('create trigger pgpulse_capture_update after update on %s '
                   'referencing old table as pgpulse_old new table as pgpulse_new '
                   'for each statement execute function pgpulse.%I()', target, fname);
    execute format('create trigger pgpulse_capture_delete after delete on %s '
                   'referencing old table as pgpulse_old for each statement '
                   'execute function pgpulse.%I()', target, fname);
    execute format('create trigger pgpulse_capture_truncate after truncate on %s '
                   'for each statement execute function pgpulse.%I()', target, fname);
    insert into pgpulse.watched (tbl, name, publish, columns, exclude, pk)
    values (target, qname, publish, columns, exclude, pk_cols);
end
$fn$;

create function pgpulse.unwatch(target regclass) returns boolean
language plpgsql as $fn$
declare
    trig record;
    found_any boolean := false;
    w record;
begin
    for trig in
        select t.tgname, t.tgfoid::regprocedure as func from pg_trigger t
        where t.tgrelid = target and t.tgname like 'pgpulse\_capture\_%'
          and not t.tgisinternal
    loop
        execute format('drop trigger %I on %s', trig.tgname, target);
        found_any := true;
    end loop;
    execute format('drop function if exists pgpulse.%I()',
                   pgpulse._function_name(target));
    select * into w from pgpulse.watched where tbl = target;
    if found and w.source = 'wal' then
        found_any := true;
        if exists (select from pg_publication_rel pr
                   join pg_publication p on p.oid = pr.prpubid
                   where p.pubname = 'pgpulse_capture' and pr.prrelid = target) then
            execute format('alter publication pgpulse_capture drop table %s', target);
        end if;
        if w.replica_identity is not null then
            execute format('alter table %s replica identity %s', target,
                           w.replica_identity);
        end if;
    end if;
    -- The decode function stays: changes committed before this unwatch may
    -- still be on their way from the WAL.  watch() replaces it.
    delete from pgpulse.watched where tbl = target;
    return found_any;
end
$fn$;

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

-- Row-level security of streamed rows, for every (role, claims) group of a
-- batch in one call (pgpulse/routing/row_security.py).  For each group: set
-- its role and claims (the PostgREST convention), run its statement over the
-- batch's rows (rebuilt once, by the caller), return the rows it may see.  A
-- group whose policies raise gets one row with the error instead, and the
-- others go on (the group's subtransaction is rolled back, and with it its
-- role).  SECURITY INVOKER: it can switch only to roles its caller's session
-- may switch to.
create function pgpulse.row_security_verdicts(
    rows anyarray, roles text[], claims text[], statements text[],
    statement_of integer[], params jsonb[]
) returns table (viewer integer, ord integer, verdicts boolean[], error text)
language plpgsql as $fn$
declare
    saved_role text := current_setting('role');
    saved_claims text := current_setting('request.jwt.claims', true);
    k integer;
begin
    for k in 1 .. coalesce(array_length(roles, 1), 0) loop
        begin
            perform set_config('role', roles[k], true),
                    set_config('request.jwt.claims', claims[k], true);
            return query execute statements[statement_of[k]]
                using rows, params[k], k;
        exception when others then
            return query select k, null::integer, null::boolean[], sqlerrm;
        end;
    end loop;
    perform set_config('role', saved_role, true),
            set_config('request.jwt.claims', coalesce(saved_claims, ''), true);
end
$fn$;

insert into pgpulse.schema_version (version) values (8);
