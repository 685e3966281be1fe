"""Scenario 2: "saved" means committed. While the test holds the conversation's row lock in
Postgres, a sent message stays pending; it turns saved only once the row is committed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from tests.browser.conftest import PersonFactory, shot
from tests.helpers import Api


async def test_pending_until_commit(
    people: PersonFactory, nginx: Api, db: asyncpg.Connection, artifacts: Path
) -> None:
    alice = await people("alice")
    bob = await people("bob")
    assert alice.user and bob.user
    cid = await nginx.direct(alice.user, bob.user)
    page = await alice.open_app()
    await alice.open_conversation(page, cid)

    row = page.locator("#messages li.mine", has_text="held by a lock")
    async with db.transaction():
        await db.execute("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", cid)
        await alice.send(page, "held by a lock")
        await row.wait_for()
        # Barrier: the send is inside Postgres, waiting for our lock; it cannot have committed.
        for _ in range(200):
            blocked = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
            )
            if blocked:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the send never reached the locked row")
        assert await row.get_attribute("data-state") == "pending"
        assert await row.locator(".status").inner_text() == "Sending…"
        await shot(page, artifacts, "2-pending-under-lock")
    # Our transaction ends (nothing written); the send's own transaction commits, then acks.
    await page.locator("#messages li.mine[data-state='saved']", has_text="held by a lock").wait_for()
    stored = await db.fetchval(
        "SELECT count(*) FROM messages WHERE conversation_id = $1 AND body = 'held by a lock'", cid
    )
    assert stored == 1
    await shot(page, artifacts, "2-saved-after-commit")
