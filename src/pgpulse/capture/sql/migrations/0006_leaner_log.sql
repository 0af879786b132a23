-- pgpulse capture schema, version 6: a log that costs writers less.
--
-- Measured in CPU instructions of a single-row INSERT transaction into a
-- watched table (callgrind, single-user backend): 185,000 before, ~142,000
-- after (53,000 without capture).
--
-- * No CHECK constraint on pgpulse.changes.op: PostgreSQL prepares a table's
--   CHECK expressions again for every INSERT statement (read from the catalog
--   and planned per statement, not per session), and capture runs one INSERT
--   per captured statement: ~38,000 instructions, a fifth of what capture cost
--   the writer.  Only pgpulse writes the log (the generated capture functions
--   and the wal decoder, each with a fixed op), so it guarded nothing.
-- * No BRIN index on ts: only pruning by age read it, and every captured
--   statement paid for one more index (~6,000 instructions).  Pruning finds
--   the age cut by bisection over the xid index instead
--   (pgpulse/changelog.py, _age_boundary).

do $do$
declare
    con record;
begin
    for con in select conname from pg_constraint
               where conrelid = 'pgpulse.changes'::regclass and contype = 'c'
    loop
        execute format('alter table pgpulse.changes drop constraint %I', con.conname);
    end loop;
end
$do$;

drop index if exists pgpulse.changes_ts_brin;

insert into pgpulse.schema_version (version) values (6);
