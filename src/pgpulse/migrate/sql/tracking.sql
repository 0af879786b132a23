-- The table `pgpulse migrate` records your application's migrations in.
-- Only this table is created here: the pgpulse schema may also hold the capture
-- schema, which is installed and versioned separately (pgpulse.schema_version).
create schema if not exists pgpulse;

create table if not exists pgpulse.migrations (
    version      bigint primary key,
    name         text not null,
    checksum     text not null,
    applied_at   timestamptz not null default now(),
    duration_ms  double precision not null,
    applied_by   text not null default current_user,
    client_host  text,
    application  text default current_setting('application_name')
);

comment on table pgpulse.migrations is
    'Application migrations applied by `pgpulse migrate` (one row per file; '
    'checksum = sha256 of the file bytes). Not the capture schema version.';
