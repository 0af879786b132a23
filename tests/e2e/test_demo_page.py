"""The live demo page (`pgpulse demo`, GET /) in Chromium, written to with SQL."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from playwright.async_api import Locator, Page, expect

from tests.e2e.support import DemoGateway, deadline

pytestmark = pytest.mark.e2e


def badge(page: Page) -> Locator:
    return page.locator("#connection-state")


def document_row(page: Page, pk: int) -> Locator:
    return page.locator(f'[data-table="documents"][data-pk="{pk}"]')


def shipment_item(page: Page, pk: int) -> Locator:
    return page.locator(f'[data-table="shipments"][data-pk="{pk}"]')


async def open_demo(page: Page, gateway: DemoGateway, query: str = "") -> None:
    await page.goto(gateway.url + "/" + query)
    await expect(badge(page)).to_have_attribute("data-state", "live")
    await expect(page.locator("body")).to_have_attribute(
        "data-documents-loaded", "true"
    )


async def new_shipment(db: asyncpg.Connection, reference: str) -> int:
    shipment_id: int = await db.fetchval(
        "insert into shipments (reference, origin, destination)"
        " values ($1, 'Valencia', 'Durban') returning id",
        reference,
    )
    return shipment_id


async def new_document(db: asyncpg.Connection, shipment_id: int, title: str) -> int:
    document_id: int = await db.fetchval(
        "insert into documents (shipment_id, kind, title)"
        " values ($1, 'Certificate of origin', $2) returning id",
        shipment_id,
        title,
    )
    return document_id


@deadline(60)
async def test_demo_page_opens_and_shows_live_state(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    await open_demo(page, gateway)
    await expect(badge(page)).to_contain_text("Live")
    await expect(page).to_have_title("pgpulse · live demo")
    # The seeded rows are on the page, each with its table and primary key.
    documents = await db.fetch("select id from documents order by id")
    shipments = await db.fetch("select id from shipments order by id")
    assert documents and shipments
    await expect(page.locator('tr[data-table="documents"]')).to_have_count(
        len(documents)
    )
    await expect(page.locator('[data-table="shipments"]')).to_have_count(len(shipments))
    for record in documents:
        await expect(document_row(page, record["id"])).to_be_visible()
    await expect(page.locator("#count-documents")).to_have_text(str(len(documents)))


@deadline(60)
async def test_row_inserted_with_sql_appears_on_page(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    await open_demo(page, gateway)
    shipment = await new_shipment(db, "E2E-INSERT")
    doc = await new_document(db, shipment, "Phytosanitary certificate")
    row = document_row(page, doc)
    await expect(row).to_be_visible()
    await expect(row).to_contain_text("Phytosanitary certificate")
    await expect(row).to_contain_text("E2E-INSERT")
    await expect(shipment_item(page, shipment)).to_contain_text("E2E-INSERT")
    await expect(page.locator("#event-log li").first).to_contain_text("INSERT")
    await expect(page.locator("#count-events")).not_to_have_text("0")


@deadline(60)
async def test_row_update_changes_it_and_delete_removes_it(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    await open_demo(page, gateway)
    doc: int = await db.fetchval("select min(id) from documents")
    row = document_row(page, doc)
    await expect(row).to_be_visible()
    await db.execute(
        "update documents set title = 'Amended invoice', status = 'rejected'"
        " where id = $1",
        doc,
    )
    await expect(row).to_contain_text("Amended invoice")
    await expect(row).to_contain_text("rejected")
    await db.execute("delete from documents where id = $1", doc)
    await expect(row).to_have_count(0)
    count: int = await db.fetchval("select count(*) from documents")
    await expect(page.locator('tr[data-table="documents"]')).to_have_count(count)


@deadline(60)
async def test_shipment_filter_shows_only_that_shipments_documents(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    await open_demo(page, gateway)
    chosen = await new_shipment(db, "E2E-CHOSEN")
    other = await new_shipment(db, "E2E-OTHER")
    first = await new_document(db, chosen, "Chosen: packing list")
    await expect(document_row(page, first)).to_be_visible()

    await page.select_option("#filter-shipment", str(chosen))
    await expect(page.locator("body")).to_have_attribute(
        "data-documents-loaded", "true"
    )
    await expect(page.locator('tr[data-table="documents"]')).to_have_count(1)
    await expect(document_row(page, first)).to_be_visible()

    hidden = await new_document(db, other, "Other: must never show")
    second = await new_document(db, chosen, "Chosen: bill of lading")
    await expect(document_row(page, second)).to_be_visible()
    await expect(document_row(page, hidden)).to_have_count(0)
    await expect(page.get_by_text("Other: must never show")).to_have_count(0)
    await expect(page.locator('tr[data-table="documents"]')).to_have_count(2)

    # A document moved to another shipment leaves the filtered table.
    await db.execute(
        "update documents set shipment_id = $1 where id = $2", other, first
    )
    await expect(document_row(page, first)).to_have_count(0)

    # "All shipments" shows everything again.
    await page.select_option("#filter-shipment", "")
    count: int = await db.fetchval("select count(*) from documents")
    await expect(page.locator('tr[data-table="documents"]')).to_have_count(count)
    await expect(document_row(page, hidden)).to_be_visible()


@deadline(60)
async def test_status_filter_combines_with_shipment_filter(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    shipment = await new_shipment(db, "E2E-STATUS")
    draft = await new_document(db, shipment, "Draft one")
    await open_demo(page, gateway, f"?shipment={shipment}&status=review")
    await expect(page.locator('tr[data-table="documents"]')).to_have_count(0)
    await db.execute("update documents set status = 'review' where id = $1", draft)
    await expect(document_row(page, draft)).to_be_visible()
    await expect(page.locator("#filter-code")).to_contain_text(
        f"shipment_id=eq.{shipment};status=eq.review"
    )


@deadline(90)
async def test_page_reconnects_after_server_restart_and_shows_rows_changed_while_down(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    await open_demo(page, gateway)
    doc: int = await db.fetchval("select min(id) from documents")
    gone: int = await db.fetchval("select max(id) from documents")
    await expect(document_row(page, gone)).to_be_visible()

    gateway.kill()
    await expect(badge(page)).to_have_attribute("data-state", "reconnecting")
    await expect(badge(page)).to_contain_text("Reconnecting")

    shipment = await new_shipment(db, "E2E-OFFLINE")
    added = await new_document(db, shipment, "Written while the server was down")
    await db.execute(
        "update documents set title = 'Changed while down' where id = $1", doc
    )
    await db.execute("delete from documents where id = $1", gone)

    await gateway.start()
    await expect(badge(page)).to_have_attribute("data-state", "live", timeout=20_000)
    await expect(document_row(page, added)).to_contain_text(
        "Written while the server was down"
    )
    await expect(document_row(page, doc)).to_contain_text("Changed while down")
    await expect(document_row(page, gone)).to_have_count(0)
    await expect(shipment_item(page, shipment)).to_be_visible()

    # And it is live again.
    after = await new_document(db, shipment, "After the restart")
    await expect(document_row(page, after)).to_be_visible()


@deadline(60)
async def test_bad_subscription_shows_error_state_with_server_message(
    page: Page, gateway: DemoGateway
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(gateway.url + "/v1/events", params={"sub": "nope"})
    message = response.json()["error"]
    await open_demo(page, gateway)
    await page.evaluate("() => { window.bad = window.pulse.subscribe('nope'); }")
    await expect(badge(page)).to_have_attribute("data-state", "error")
    await expect(badge(page)).to_contain_text("Error")
    await expect(page.locator("#connection-detail")).to_have_text(message)
    # Dropping the bad subscription brings the page back to live.
    await page.evaluate("() => window.bad.unsubscribe()")
    await expect(badge(page)).to_have_attribute("data-state", "live")


def notification(page: Page, pk: int) -> Locator:
    return page.locator(f'[data-table="notifications"][data-pk="{pk}"]')


async def notify(db: asyncpg.Connection, recipient: str, message: str) -> int:
    pk: int = await db.fetchval(
        "insert into notifications (recipient, message) values ($1, $2) returning id",
        recipient,
        message,
    )
    return pk


@deadline(90)
async def test_two_users_each_see_only_their_own_notifications(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    """A user-specific channel: the page signed in as Ann shows Ann's rows,
    live, and none of Bob's; switching to Bob shows his and none of Ann's."""
    await open_demo(page, gateway)
    loaded = page.locator("body")
    await expect(loaded).to_have_attribute("data-user", "ann")
    await expect(loaded).to_have_attribute("data-notifications-loaded", "true")
    await expect(page.locator("#inbox-state")).to_have_attribute("data-state", "live")
    seeded = {
        r["recipient"]: r["id"]
        for r in await db.fetch("select id, recipient from notifications")
    }
    await expect(notification(page, seeded["ann"])).to_be_visible()
    await expect(notification(page, seeded["bob"])).to_have_count(0)

    for_ann = await notify(db, "ann", "for Ann only")
    for_bob = await notify(db, "bob", "for Bob only")
    await expect(notification(page, for_ann)).to_contain_text("for Ann only")
    # Bob's row was committed after Ann's: had it been delivered, it would be here.
    await expect(page.locator("#notifications-list")).not_to_contain_text("Bob")
    assert await notification(page, for_bob).count() == 0

    await page.click("#user-bob")
    await expect(loaded).to_have_attribute("data-user", "bob")
    await expect(loaded).to_have_attribute("data-notifications-loaded", "true")
    await expect(notification(page, for_bob)).to_contain_text("for Bob only")
    await expect(notification(page, seeded["bob"])).to_be_visible()
    await expect(notification(page, for_ann)).to_have_count(0)
    again_ann = await notify(db, "ann", "Ann again")
    again_bob = await notify(db, "bob", "Bob again")
    await expect(notification(page, again_bob)).to_be_visible()
    assert await notification(page, again_ann).count() == 0
    await expect(page.locator("#notifications-list")).not_to_contain_text("Ann")
    # The rest of the page (anonymous, as role visitor) is unaffected.
    await expect(badge(page)).to_have_attribute("data-state", "live")


@deadline(60)
async def test_notifications_are_refused_without_a_user_token(
    gateway: DemoGateway,
) -> None:
    """The demo's policies: visitors read shipments and documents, never the
    notifications table, on the stream or over REST; a user's token reads
    only their own rows even when asking for someone else's."""
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        stream = await client.get("/v1/events", params={"sub": "notifications"})
        assert stream.status_code == 403
        assert "notifications" in stream.json()["error"]
        rest = await client.get("/v1/rest/notifications")
        assert rest.status_code in (401, 403)
        bad_user = await client.get("/demo/token", params={"user": "mallory"})
        assert bad_user.status_code == 400
        assert "ann" in bad_user.json()["error"]
        token = (await client.get("/demo/token", params={"user": "ann"})).json()[
            "token"
        ]
        rows = await client.get(
            "/v1/rest/notifications",
            params={"recipient": "eq.bob"},
            headers={"authorization": f"Bearer {token}"},
        )
        assert rows.status_code == 200
        assert rows.json() == []
        own = await client.get(
            "/v1/rest/notifications", headers={"authorization": f"Bearer {token}"}
        )
        assert own.json() and {r["recipient"] for r in own.json()} == {"ann"}
