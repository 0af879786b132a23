-- Test schema for the query layer, modelled on a document-checking app:
-- shipments -> documents -> nodes (self-referencing tree) -> checks,
-- documents <-> labels (many-to-many), two foreign keys documents -> users
-- (author, reviewer), a one-to-one shipment_customs, a quoted-name table,
-- and a flat "samples" table for property-based filter tests.
-- All data is deterministic (generate_series + arithmetic), so hand-written
-- SQL and builder chains see the same rows.

create type doc_status as enum ('draft', 'review', 'final');

create table ports (
    code text primary key,
    name text not null,
    country text not null
);

create table users (
    id int primary key,
    name text not null,
    email text not null unique
);

create table shipments (
    id int primary key,
    reference text not null unique,
    port text references ports (code),
    carrier text,
    eta timestamptz,
    weight_kg numeric(10, 2),
    hazardous boolean not null default false
);

create table shipment_customs (
    shipment_id int primary key references shipments (id) on delete cascade,
    declaration text not null,
    cleared boolean not null default false
);

create table documents (
    id serial primary key,
    shipment_id int references shipments (id) on delete cascade,
    title text not null,
    status doc_status not null default 'draft',
    author_id int not null references users (id),
    reviewer_id int references users (id),
    pages int,
    created_at timestamptz not null default '2024-01-01T00:00:00Z',
    tags text[] not null default '{}',
    meta jsonb not null default '{}'
);

create table nodes (
    id serial primary key,
    document_id int not null references documents (id) on delete cascade,
    parent_id int references nodes (id) on delete cascade,
    kind text not null,
    label text,
    position int not null,
    status text
);

create table checks (
    id serial primary key,
    node_id int not null references nodes (id) on delete cascade,
    rule text not null,
    result text not null,
    severity int,
    checked_at timestamptz
);

create table labels (
    id int primary key,
    name text not null unique,
    color text
);

create table document_labels (
    document_id int not null references documents (id) on delete cascade,
    label_id int not null references labels (id) on delete cascade,
    added_at timestamptz not null default '2024-01-01T00:00:00Z',
    primary key (document_id, label_id)
);

create table "Audit Log" (
    "Entry Id" int primary key,
    "Document" int references documents (id) on delete cascade,
    "Note" text
);

create table samples (
    id int primary key,
    n int,
    amount numeric(8, 2),
    name text collate "C",
    flag boolean,
    at timestamptz,
    tags text[] not null default '{}'
);

insert into ports values
    ('NLRTM', 'Rotterdam', 'NL'),
    ('DEHAM', 'Hamburg', 'DE'),
    ('SGSIN', 'Singapore', 'SG'),
    ('USLAX', 'Los Angeles', 'US');

insert into users values
    (1, 'Ada', 'ada@example.com'),
    (2, 'Brian', 'brian@example.com'),
    (3, 'Chen', 'chen@example.com'),
    (4, 'Dana', 'dana@example.com'),
    (5, 'Emeka', 'emeka@example.com');

insert into shipments
select i,
       'SHP-' || lpad(i::text, 4, '0'),
       case when i % 5 = 0 then null
            else (array['NLRTM', 'DEHAM', 'SGSIN', 'USLAX'])[1 + i % 4] end,
       case when i % 3 = 0 then null else (array['Maersk', 'CMA CGM'])[1 + i % 2] end,
       case when i % 4 = 0 then null
            else '2024-03-01T08:00:00Z'::timestamptz + i * interval '2 days 5 hours' end,
       case when i % 6 = 0 then null else (i * 1234.5)::numeric(10, 2) end,
       i % 3 = 1
from generate_series(1, 10) as i;

insert into shipment_customs values
    (1, 'DECL-1', true), (2, 'DECL-2', false), (3, 'DECL-3', true), (7, 'DECL-7', false);

insert into documents (id, shipment_id, title, status, author_id, reviewer_id, pages,
                       created_at, tags, meta)
select i,
       case when i % 7 = 0 then null else 1 + i % 10 end,
       (array['Bill of lading', 'Invoice', 'Packing list', 'Certificate of origin',
              'Customs declaration'])[1 + i % 5] || ' #' || i,
       (array['draft', 'review', 'final'])[1 + i % 3]::doc_status,
       1 + i % 5,
       case when i % 4 = 0 then null else 1 + (i + 2) % 5 end,
       case when i % 6 = 0 then null else (i * 7) % 40 + 1 end,
       '2024-01-01T00:00:00Z'::timestamptz + i * interval '1 day 3 hours',
       case i % 4 when 0 then '{}'::text[] when 1 then '{urgent}'
                  when 2 then '{urgent,export}' else '{export}' end,
       jsonb_build_object('priority', i % 3, 'lang', (array['en', 'de', 'fr'])[1 + i % 3])
from generate_series(1, 24) as i;
select setval('documents_id_seq', 24);

-- Four nodes per document: a root section and three children pointing at it.
insert into nodes (id, document_id, parent_id, kind, label, position, status)
select i,
       (i - 1) / 4 + 1,
       case when (i - 1) % 4 = 0 then null else i - (i - 1) % 4 end,
       case when (i - 1) % 4 = 0 then 'section' else (array['field', 'table', 'signature'])[(i - 1) % 4] end,
       case when i % 5 = 0 then null else 'node ' || i end,
       (i - 1) % 4,
       case when i % 7 = 0 then null when i % 3 = 0 then 'bad' else 'ok' end
from generate_series(1, 96) as i;
select setval('nodes_id_seq', 96);

insert into checks (id, node_id, rule, result, severity, checked_at)
select i,
       (i - 1) / 2 + 1,
       (array['format', 'signature', 'amount', 'date'])[1 + i % 4],
       (array['pass', 'pass', 'fail', 'warn'])[1 + (i * 7) % 4],
       case when i % 5 = 0 then null else i % 4 end,
       case when i % 9 = 0 then null
            else '2024-02-01T00:00:00Z'::timestamptz + i * interval '90 minutes' end
from generate_series(1, 192) as i;
select setval('checks_id_seq', 192);

insert into labels values
    (1, 'priority', 'red'), (2, 'audit', 'blue'), (3, 'archived', null),
    (4, 'reviewed', 'green'), (5, 'unused', 'grey');

insert into document_labels (document_id, label_id)
select d, l from generate_series(1, 24) as d, generate_series(1, 4) as l
where (d + l) % 3 = 0;

insert into "Audit Log" values
    (1, 1, 'created'), (2, 1, 'reviewed'), (3, 2, 'created'), (4, null, 'system "note"');

insert into samples
select i,
       case when i % 6 = 0 then null else (i * 37) % 21 - 10 end,
       case when i % 7 = 0 then null else ((i * 53) % 400 - 200) / 4.0 end,
       case when i % 5 = 0 then null
            else (array['alpha', 'Beta', 'gamma', 'delta', 'a,b', 'o''neil', 'x%y', 'under_score'])[1 + i % 8] end,
       case when i % 4 = 0 then null else i % 3 = 0 end,
       case when i % 8 = 0 then null
            else '2024-01-01T00:00:00Z'::timestamptz + ((i * 17) % 40) * interval '1 day' end,
       case i % 5 when 0 then '{}'::text[] when 1 then '{a}' when 2 then '{a,b}'
                  when 3 then '{b,c}' else '{c}' end
from generate_series(1, 48) as i;
