-- pgpulse capture schema, version 4: cheaper captured writes.
--
-- * Writers read the wake-up flag from a sequence (pgpulse.wakeups: how many
--   listeners want wake-ups) instead of querying pgpulse.listeners: one function
--   call instead of one more query per captured statement.  Sequence values are
--   not transactional, so writers at REPEATABLE READ or SERIALIZABLE see the
--   current flag too and no longer always notify.  Listeners maintain it with
--   pgpulse.set_wakeups() and pgpulse.leave_wakeups().  Upgrade every gateway together: an older gateway
--   does not update the sequence (it would wait for its keepalive read).
-- * pgpulse.changes loses its primary-key index on id: nothing looks changes up
--   by id (reads go by xid, pruning by xid and ts), and every captured row paid
--   for one more index insert.

alter table pgpulse.changes drop constraint changes_pkey;

create sequence pgpulse.wakeups minvalue 0;
select setval('pgpulse.wakeups',
              (select count(*) from pgpulse.listeners where wants_notify), true);

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

create or replace function pgpulse.watch(
    target regclass,
    publish text default 'rows',
    columns text[] default null,
    exclude text[] default null
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

    if publish = 'keys' then
        -- Only keys are published: log them; the rows stay in the table.
        pk_n := pgpulse._columns_json('n', pk_cols);
        pk_o := pgpulse._columns_json('o', pk_cols);
        row_n := 'null::jsonb';
        row_o := 'null::jsonb';
    else
        -- Rows carry the key columns; readers extract the key (watched.pk).
        pk_n := 'null::jsonb';
        pk_o := 'null::jsonb';
        if columns is not null then
            row_n := pgpulse._columns_json('n', columns);
            row_o := pgpulse._columns_json('o', columns);
        elsif exclude is not null and cardinality(exclude) > 0 then
            row_n := format('(to_jsonb(n) - %L::text[])', exclude);
            row_o := format('(to_jsonb(o) - %L::text[])', exclude);
        else
            row_n := 'to_jsonb(n)';
            row_o := 'to_jsonb(o)';
        end if;
    end if;
    select string_agg(format('n.%I = o.%I', p, p), ' and ') into join_cond
    from unnest(pk_cols) p;
    n_missing := format('n.%I is null', pk_cols[1]);
    o_missing := format('o.%I is null', pk_cols[1]);

    perform pgpulse.unwatch(target);
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

-- Regenerate every watched table's capture function.
do $do$
declare
    w record;
begin
    for w in select * from pgpulse.watched loop
        perform pgpulse.watch(w.tbl, w.publish, w.columns, w.exclude);
    end loop;
end
$do$;

insert into pgpulse.schema_version (version) values (4);
