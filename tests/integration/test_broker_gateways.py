"""``pgpulse serve --broker``: gateways on NATS JetStream, not on the database.

Real processes throughout: two relays (one standby), three gateways behind
one NATS server, SSE clients spread over them while writers run.  The active
relay and a gateway are killed with SIGKILL mid-run; the dead gateway's
clients resume on another with their Last-Event-ID.  Every client must end
with every committed change exactly once, each row's changes in commit order.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import nats

from pgpulse import capture
from pgpulse.broker.messages import (
    END,
    MSG_ID,
    PREV,
    body,
    stream_name,
    subject,
    subjects,
)
from pgpulse.log.change import Change
from pgpulse.log.cursor import Snapshot
from tests.gateway import GatewayProcess, SSEStream
from tests.integration.test_broker_relay import (
    RelayProcess,
    _active,
    _writers,
)
from tests.nats_server import NatsCluster

#: The acceptance run is 8 writers for 60 s (PGPULSE_BROKER_ACCEPTANCE=1);
#: the suite runs the same shape shorter.
ACCEPTANCE = os.environ.get("PGPULSE_BROKER_ACCEPTANCE") == "1"
RUN_SECONDS = 60.0 if ACCEPTANCE else 8.0
WRITERS = 8 if ACCEPTANCE else 4


class Client:
    """An SSE client that moves to another gateway when its own dies."""

    def __init__(self, name: str, subs: list[str]) -> None:
        self.name = name
        self.subs = subs
        self.events: list[Any] = []
        self.resumes = 0
        self.why: list[str] = []
        """Why each stream ended."""
        self.last_id: str | None = None
        self.ready = asyncio.Event()
        """Set once subscribed: changes committed after it all reach it."""

    async def follow(self, gateways: list[GatewayProcess], first: int) -> None:
        index = first
        while True:
            gateway = gateways[index % len(gateways)]
            try:
                async with SSEStream(gateway.url, self.subs, self.last_id) as stream:
                    while True:
                        event = await stream.next_event(timeout=3600)
                        if event.event == "change":
                            self.events.append({**event.data, "id": event.id})
                            self.last_id = event.id
                        elif event.event == "ready":
                            if self.last_id is None:
                                self.last_id = event.data["cursor"]
                            self.ready.set()
                        else:  # why the gateway ends the stream, if it does
                            self.why.append(f"{event.event}: {event.data}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the gateway died: resume on the next one
                self.resumes += 1
                self.why.append(f"{type(exc).__name__}: {exc}")
                index += 1
                await asyncio.sleep(0.2)


async def _schema(conn: Any) -> None:
    await conn.execute("create table jobs (id int primary key, n int)")
    await capture.watch(conn, "jobs")


async def _logged(conn: Any) -> list[dict[str, Any]]:
    """The log: each change's id, op and row key."""
    rows = await conn.fetch(
        "select id, op, (coalesce(row, old)->>'id')::int as pk "
        "from pgpulse.changes order by id"
    )
    return [dict(r) for r in rows]


def _check(client: Client, logged: list[Any], keep: Any = None) -> None:
    if ACCEPTANCE:
        print(f"{client.name}: {len(client.events)} changes, resumed: {client.why}")
    ids = [event["id"] for event in client.events]
    expected = [r for r in logged if keep is None or keep(r)]
    assert len(ids) == len(set(ids)), f"{client.name} got a change twice"
    assert len(ids) == len(expected), (
        f"{client.name} got {len(ids)} changes, the log holds {len(expected)}"
    )
    # Each row's changes in commit order: event ids of one row only grow in
    # log-id order (the id is the event id's last part).
    last: dict[int, int] = {}
    for event in client.events:
        key, log_id = event["pk"]["id"], int(event["id"].rsplit("~", 1)[1])
        assert last.get(key, 0) < log_id, f"{client.name}: row {key} out of order"
        last[key] = log_id
    assert {int(e["id"].rsplit("~", 1)[1]) for e in client.events} == {
        r["id"] for r in expected
    }, f"{client.name} is missing changes"


async def _all_ready(clients: list[Client]) -> None:
    async with asyncio.timeout(30):
        await asyncio.gather(*(c.ready.wait() for c in clients))


async def _settle(clients: list[Client], expected: dict[str, int]) -> None:
    deadline = asyncio.get_running_loop().time() + 60 + 2 * RUN_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        if all(len(c.events) >= expected[c.name] for c in clients):
            return
        await asyncio.sleep(0.25)


async def test_a_gateway_and_the_relay_killed_behind_the_broker_lose_nothing(
    conn, database, nats_server, tmp_path
):
    await _schema(conn)
    relays = [
        RelayProcess(database, nats_server.url, f"relay-{n}", str(tmp_path))
        for n in (1, 2)
    ]
    gateways = [
        GatewayProcess(database, args=["--broker", nats_server.url]).start()
        for _ in range(3)
    ]
    clients = [Client(f"client-{n}", ["jobs"]) for n in range(6)]
    clients.append(Client("filtered", ["jobs:id=lt.20"]))
    tasks = [
        asyncio.create_task(c.follow(gateways, n % 3)) for n, c in enumerate(clients)
    ]
    try:
        first = await _active(conn)
        await _all_ready(clients)
        writing = asyncio.create_task(_writers(database, RUN_SECONDS, workers=WRITERS))
        await asyncio.sleep(RUN_SECONDS * 0.3)
        gateways[0].kill()
        next(r for r in relays if r.name == first).kill()
        await _active(conn, other_than=first)
        await writing
        logged = await _logged(conn)
        expected = {c.name: len(logged) for c in clients}
        expected["filtered"] = sum(1 for r in logged if r["pk"] < 20)
        await _settle(clients, expected)
        for client in clients:
            keep = (lambda r: r["pk"] < 20) if client.name == "filtered" else None
            _check(client, logged, keep)
        assert len(logged) > 300
        # The dead gateway's clients moved on and resumed by Last-Event-ID.
        assert all(c.resumes >= 1 for c in clients[0:7:3])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for gateway in gateways:
            gateway.kill()
        for relay in relays:
            relay.kill()


async def test_behind_the_broker_the_database_sees_no_listener_per_gateway(
    conn, database, nats_server, tmp_path
):
    """Counted: one reader of the log (the relay's listener) however many
    gateways; the gateways hold nothing but their small pools."""
    await _schema(conn)
    relay = RelayProcess(database, nats_server.url, "relay-1", str(tmp_path))
    gateways = [
        GatewayProcess(database, args=["--broker", nats_server.url]).start()
        for _ in range(3)
    ]
    try:
        await _active(conn)
        async with SSEStream(gateways[2].url, ["jobs"]) as stream:
            await stream.next_event()  # ready
            await conn.execute("insert into jobs values (1, 1)")
            (event,) = await stream.changes(1)
            assert event.data["row"] == {"id": 1, "n": 1}
        listeners = await conn.fetchval("select count(*) from pgpulse.listeners")
        assert listeners == 1, "only the relay's listener follows the log"
        names = [
            r["application_name"]
            for r in await conn.fetch(
                "select application_name from pg_stat_activity "
                "where datname = current_database() and pid <> pg_backend_pid()"
            )
        ]
        assert not [n for n in names if n.endswith("-listener") and "relay" not in n]
        gateway_connections = [n for n in names if n == "pgpulse"]
        assert len(gateway_connections) <= 3 * 2  # pool_size 2 each, at most
    finally:
        for gateway in gateways:
            gateway.kill()
        relay.kill()


async def test_gateways_ride_out_a_nats_restart(conn, database, nats_server, tmp_path):
    await _schema(conn)
    relay = RelayProcess(database, nats_server.url, "relay-1", str(tmp_path))
    gateway = GatewayProcess(database, args=["--broker", nats_server.url]).start()
    client = Client("client", ["jobs"])
    task = asyncio.create_task(client.follow([gateway], 0))
    try:
        await _active(conn)
        await _all_ready([client])
        writing = asyncio.create_task(_writers(database, 6.0))
        await asyncio.sleep(1.5)
        nats_server.stop()
        await asyncio.sleep(1.5)
        nats_server.start()
        await writing
        logged = await _logged(conn)
        await _settle([client], {"client": len(logged)})
        _check(client, logged)
        assert client.resumes == 0, "the gateway kept its clients through it"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        gateway.kill()
        relay.kill()


async def test_a_three_node_jetstream_cluster_losing_the_stream_leader_loses_nothing(
    conn, database, tmp_path
):
    """Stream replicas = 3 on three routed nats-server processes; the node
    leading the stream is killed (SIGKILL) while writers run."""
    await _schema(conn)
    cluster = NatsCluster().start()
    brokers = [arg for url in cluster.urls for arg in ("--broker", url)]
    relay = RelayProcess(
        database,
        cluster.urls[0],
        "relay-1",
        str(tmp_path),
        [*brokers, "--replicas", "3"],
    )
    gateways = [GatewayProcess(database, args=brokers).start() for _ in range(2)]
    clients = [Client(f"client-{n}", ["jobs"]) for n in range(4)]
    tasks = [
        asyncio.create_task(c.follow(gateways, n % 2)) for n, c in enumerate(clients)
    ]
    try:
        await _active(conn)
        await _all_ready(clients)
        writing = asyncio.create_task(_writers(database, RUN_SECONDS, workers=WRITERS))
        await asyncio.sleep(RUN_SECONDS * 0.3)
        leader = await _stream_leader(cluster.urls, conn)
        node = next(n for n in cluster.nodes if n.name == leader)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()
        await writing
        logged = await _logged(conn)
        await _settle(clients, {c.name: len(logged) for c in clients})
        for client in clients:
            _check(client, logged)
        assert len(logged) > 300
        # The gateways rode out the node's loss: no client had to reconnect.
        assert all(c.resumes == 0 for c in clients), [c.why for c in clients]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for gateway in gateways:
            gateway.kill()
        relay.kill()
        cluster.remove()


async def _stream_leader(urls: list[str], conn: Any) -> str:
    nc = await nats.connect(servers=urls)
    try:
        database_name = await conn.fetchval("select current_database()")
        info = await nc.jetstream().stream_info(stream_name(database_name))
        assert info.config.num_replicas == 3
        assert info.cluster is not None and info.cluster.leader
        return str(info.cluster.leader)
    finally:
        await nc.close()


async def test_a_read_published_half_way_then_read_again_reaches_clients_whole(
    conn, database, nats_server
):
    """What a relay that fails mid-read leaves in the stream, published by
    hand: the first part of a read (no end marker; change 3 was in it too, but
    its publish failed), then the same read again from the same position to
    a later snapshot, with the end marker.  Every change reaches the client
    once; change 3 is not taken as seen because the first snapshot covers it."""
    await _schema(conn)
    gateway = GatewayProcess(database, args=["--broker", nats_server.url]).start()
    now = Snapshot.parse(await conn.fetchval("select pg_current_snapshot()::text"))
    base = now.xmax + 100  # transactions after anything the gateway has seen
    prev = f"{base}:{base}:"
    first, again = f"{base}:{base + 3}:", f"{base}:{base + 4}:"
    database_name = await conn.fetchval("select current_database()")
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            name=stream_name(database_name), subjects=[subjects(database_name)]
        )
        async with SSEStream(gateway.url, ["jobs"]) as stream:
            await stream.next_event()  # ready
            reads = [
                (first, 1, base, False),
                (first, 2, base + 1, False),
                (again, 3, base + 2, False),
                (again, 4, base + 3, True),
            ]
            for snap, log_id, xid, end in reads:
                change = Change(
                    id=log_id, xid=xid, table="public.jobs", name="jobs",
                    op="INSERT", pk=f'{{"id": {log_id}}}',
                    row=f'{{"id": {log_id}, "n": 1}}', old=None,
                    ts='"2026-12-04T00:00:00Z"',
                    event_id=f"{prev}~{snap}~{log_id}",
                )  # fmt: skip
                headers = {MSG_ID: str(log_id), PREV: prev}
                if end:
                    headers[END] = "1"
                await js.publish(
                    subject(database_name, "public.jobs"), body(change), headers=headers
                )
            events = await stream.changes(4)
        assert [e.data["row"]["id"] for e in events] == [1, 2, 3, 4]
        assert events[-1].id == f"{prev}~{again}~4"
    finally:
        await nc.close()
        gateway.kill()


async def test_a_gateway_left_behind_by_the_streams_retention_starts_over(
    conn, database, nats_server, tmp_path
):
    """The stream keeps 2 s of changes; the gateway is frozen (SIGSTOP) for
    5 s while writers run, so the stream drops changes it never read.  Its
    clients' streams end with the reason and they resume from the log: every
    change still arrives exactly once, in order."""
    await _schema(conn)
    relay = RelayProcess(
        database,
        nats_server.url,
        "relay-1",
        str(tmp_path),
        ["--broker", nats_server.url, "--max-age", "2s"],
    )
    gateway = GatewayProcess(database, args=["--broker", nats_server.url]).start()
    client = Client("client", ["jobs"])
    task = asyncio.create_task(client.follow([gateway], 0))
    try:
        await _active(conn)
        await _all_ready([client])
        writing = asyncio.create_task(_writers(database, 9.0))
        await asyncio.sleep(2.0)
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGSTOP)
        await asyncio.sleep(5.0)
        gateway.proc.send_signal(signal.SIGCONT)
        await writing
        logged = await _logged(conn)
        await _settle([client], {"client": len(logged)})
        _check(client, logged)
        assert client.resumes >= 1
        assert "no longer holds sequence" in gateway.log()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if gateway.proc is not None and gateway.proc.poll() is None:
            gateway.proc.send_signal(signal.SIGCONT)
        gateway.kill()
        relay.kill()
