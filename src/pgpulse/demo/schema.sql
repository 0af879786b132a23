-- pgpulse demo schema: shipments and the documents that travel with them.
create table if not exists shipments (
    id serial primary key,
    reference text not null unique,
    origin text not null,
    destination text not null,
    status text not null default 'booked'
        check (status in ('booked', 'in_transit', 'arrived', 'delivered')),
    updated_at timestamptz not null default now()
);

create table if not exists documents (
    id serial primary key,
    shipment_id int not null references shipments (id) on delete cascade,
    kind text not null,
    title text not null,
    status text not null default 'draft'
        check (status in ('draft', 'review', 'approved', 'rejected')),
    updated_at timestamptz not null default now()
);
create index if not exists documents_shipment_id_idx on documents (shipment_id);

-- One row per message to one demo user: the page shows each user only their own
-- (policy filter recipient=eq.{claims.sub}; see pgpulse/demo/auth.py).
create table if not exists notifications (
    id serial primary key,
    recipient text not null,
    message text not null,
    created_at timestamptz not null default now()
);
create index if not exists notifications_recipient_idx on notifications (recipient);

insert into shipments (reference, origin, destination, status)
select v.* from (values
    ('SHP-1001', 'Rotterdam', 'Singapore', 'in_transit'),
    ('SHP-1002', 'Hamburg', 'New York', 'booked'),
    ('SHP-1003', 'Shanghai', 'Los Angeles', 'in_transit'),
    ('SHP-1004', 'Santos', 'Antwerp', 'arrived')
) as v(reference, origin, destination, status)
where not exists (select 1 from shipments);

insert into documents (shipment_id, kind, title, status)
select s.id, d.kind, d.kind || ' ' || s.reference, d.status
from shipments s
cross join (values
    ('Bill of lading', 'approved'),
    ('Commercial invoice', 'review'),
    ('Packing list', 'draft')
) as d(kind, status)
where not exists (select 1 from documents);

insert into notifications (recipient, message)
select v.* from (values
    ('ann', 'Welcome, Ann: you follow SHP-1001 and SHP-1003'),
    ('bob', 'Welcome, Bob: you follow SHP-1002 and SHP-1004')
) as v(recipient, message)
where not exists (select 1 from notifications);
