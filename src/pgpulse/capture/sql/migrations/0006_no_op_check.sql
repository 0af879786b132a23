-- pgpulse capture schema, version 6: no CHECK constraint on the log.
--
-- pgpulse.changes.op had a CHECK (op in ('INSERT', ...)).  PostgreSQL prepares
-- a table's CHECK expressions again for every INSERT statement (they are read
-- from the catalog and planned per statement, not per session), and a capture
-- trigger runs one INSERT statement per captured statement: about 38,000 of
-- the 185,000 CPU instructions of a single-row INSERT transaction into a
-- watched table (callgrind, single-user backend), a fifth of what capture cost
-- the writer.  Only pgpulse writes the log (the generated capture functions and
-- the wal decoder, each with a fixed op), so the constraint guarded nothing.

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

insert into pgpulse.schema_version (version) values (6);
