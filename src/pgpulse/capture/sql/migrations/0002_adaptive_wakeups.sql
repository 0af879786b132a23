-- pgpulse capture schema, version 2: adaptive wake-ups.
--
-- NOTIFY takes a database-wide lock from pre-commit until the end of the
-- transaction (through the commit record's flush), so notifying writers commit
-- one at a time.  Each listener registers here; while it is busy it polls the
-- log and asks for no wake-ups (wants_notify = false), and writers skip
-- pg_notify when no listener wants one.  READ COMMITTED writers read the flag
-- fresh in the trigger; writers at stricter isolation levels read it from an
-- older snapshot, so they always notify.

create table pgpulse.listeners (
    pid integer primary key,
    wants_notify boolean not null default true,
    registered_at timestamptz not null default now()
);

create or replace function pgpulse.capture() returns trigger
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

insert into pgpulse.schema_version (version) values (2);
