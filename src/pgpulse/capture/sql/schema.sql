-- pgpulse capture schema, current version (2). Upgrades: migrations/.
--
-- Statement-level triggers with transition tables append every changed row of a
-- watched table to pgpulse.changes, then send ONE tiny wake-up (pg_notify with an
-- empty payload, deduplicated per transaction) so rows of any size work.  Readers
-- take new rows by snapshot visibility (see pgpulse/changelog.py), never by id
-- alone, because ids are taken before commit.

create schema if not exists pgpulse;

create table pgpulse.schema_version (
    version integer not null,
    applied_at timestamptz not null default now()
);

create table pgpulse.changes (
    id bigint generated always as identity primary key,
    xid xid8 not null default pg_current_xact_id(),
    tbl text not null,
    op text not null check (op in ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')),
    pk jsonb not null,
    "row" jsonb,
    old jsonb,
    ts timestamptz not null default clock_timestamp()
);
create index changes_xid_idx on pgpulse.changes (xid);
create index changes_ts_idx on pgpulse.changes (ts);

-- One row: the newest transaction id whose changes were pruned from the log.  A
-- resume cursor older than that gets an explicit reset instead of a silent gap.
create table pgpulse.state (
    singleton boolean primary key default true check (singleton),
    pruned_xid xid8 not null default '0'::xid8,
    pruned_at timestamptz
);
insert into pgpulse.state default values;

-- Listeners register here; writers skip pg_notify while no listener wants a
-- wake-up (busy listeners poll).  See migrations/0002_adaptive_wakeups.sql.
create table pgpulse.listeners (
    pid integer primary key,
    wants_notify boolean not null default true,
    registered_at timestamptz not null default now()
);

create table pgpulse.watched (
    tbl regclass primary key,
    name text not null,
    publish text not null default 'rows' check (publish in ('rows', 'keys')),
    columns text[],
    exclude text[],
    watched_at timestamptz not null default now()
);

-- The generic trigger function.  Arguments (prepared by pgpulse.watch):
--   0 table name  1 pk json of n  2 row json of n  3 pk json of o  4 row json of o
--   5 update join condition  6 "n is missing" test  7 "o is missing" test
create function pgpulse.capture() returns trigger
language plpgsql security definer set search_path = pg_catalog, pgpulse as $fn$
declare
    n_rows bigint;
begin
    if tg_op = 'INSERT' then
        execute format(
            'insert into pgpulse.changes (tbl, op, pk, "row") '
            'select $1, ''INSERT'', %s, %s from pgpulse_new n',
            tg_argv[1], tg_argv[2]) using tg_argv[0];
    elsif tg_op = 'DELETE' then
        execute format(
            'insert into pgpulse.changes (tbl, op, pk, old) '
            'select $1, ''DELETE'', %s, %s from pgpulse_old o',
            tg_argv[3], tg_argv[4]) using tg_argv[0];
    elsif tg_op = 'UPDATE' then
        -- Rows are paired by primary key; an update that changes the key shows up
        -- as a DELETE of the old key and an INSERT of the new one.
        execute format(
            'insert into pgpulse.changes (tbl, op, pk, "row", old) '
            'select $1, case when %6$s then ''DELETE'' when %7$s then ''INSERT'' '
            'else ''UPDATE'' end, case when %6$s then %3$s else %1$s end, '
            'case when %6$s then null else %2$s end, '
            'case when %7$s then null else %4$s end '
            'from pgpulse_new n full join pgpulse_old o on (%5$s)',
            tg_argv[1], tg_argv[2], tg_argv[3], tg_argv[4], tg_argv[5],
            tg_argv[6], tg_argv[7]) using tg_argv[0];
    else
        insert into pgpulse.changes (tbl, op, pk) values (tg_argv[0], 'TRUNCATE', '{}');
    end if;
    get diagnostics n_rows = row_count;
    if n_rows > 0 and (
        current_setting('transaction_isolation') <> 'read committed'
        or exists (select 1 from pgpulse.listeners where wants_notify)
    ) then
        perform pg_notify('pgpulse', '');
    end if;
    return null;
end
$fn$;

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

create function pgpulse.watch(
    target regclass,
    publish text default 'rows',
    columns text[] default null,
    exclude text[] default null
) returns void
language plpgsql as $fn$
declare
    qname text;
    pk_cols text[];
    all_cols text[];
    bad text[];
    trig text;
    args text;
    pk_n text;
    pk_o text;
    row_n text;
    row_o text;
    join_cond text;
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

    pk_n := pgpulse._columns_json('n', pk_cols);
    pk_o := pgpulse._columns_json('o', pk_cols);
    if publish = 'keys' then
        row_n := 'null::jsonb';
        row_o := 'null::jsonb';
    elsif columns is not null then
        row_n := pgpulse._columns_json('n', columns);
        row_o := pgpulse._columns_json('o', columns);
    elsif exclude is not null and cardinality(exclude) > 0 then
        row_n := format('(to_jsonb(n) - %L::text[])', exclude);
        row_o := format('(to_jsonb(o) - %L::text[])', exclude);
    else
        row_n := 'to_jsonb(n)';
        row_o := 'to_jsonb(o)';
    end if;
    select string_agg(format('n.%I = o.%I', p, p), ' and ') into join_cond
    from unnest(pk_cols) p;

    args := format('%L, %L, %L, %L, %L, %L, %L, %L', qname, pk_n, row_n, pk_o, row_o,
                   join_cond, format('n.%I is null', pk_cols[1]),
                   format('o.%I is null', pk_cols[1]));

    perform pgpulse.unwatch(target);
    execute format('create trigger pgpulse_capture_insert after insert on %s '
                   'referencing new table as pgpulse_new for each statement '
                   'execute function pgpulse.capture(%s)', target, args);
    execute format('create trigger pgpulse_capture_update after update on %s '
                   'referencing old table as pgpulse_old new table as pgpulse_new '
                   'for each statement execute function pgpulse.capture(%s)',
                   target, args);
    execute format('create trigger pgpulse_capture_delete after delete on %s '
                   'referencing old table as pgpulse_old for each statement '
                   'execute function pgpulse.capture(%s)', target, args);
    execute format('create trigger pgpulse_capture_truncate after truncate on %s '
                   'for each statement execute function pgpulse.capture(%s)',
                   target, args);
    insert into pgpulse.watched (tbl, name, publish, columns, exclude)
    values (target, qname, publish, columns, exclude);
end
$fn$;

create function pgpulse.unwatch(target regclass) returns boolean
language plpgsql as $fn$
declare
    trig text;
    found_any boolean := false;
begin
    for trig in
        select tgname from pg_trigger
        where tgrelid = target and tgname like 'pgpulse\_capture\_%' and not tgisinternal
    loop
        execute format('drop trigger %I on %s', trig, target);
        found_any := true;
    end loop;
    delete from pgpulse.watched where tbl = target;
    return found_any;
end
$fn$;

insert into pgpulse.schema_version (version) values (2);
