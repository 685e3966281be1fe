"""Web Push (issue 22): chatd's requests reach a push service the test runs, and decrypt with the
subscription's own key; mute, do-not-disturb, the interval, 410, logout, and a hung service."""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from py_vapid import Vapid02

from chatd.devstack import Stack
from chatd.processes import free_port
from chatd.pushes import _CLAIM, mark_key
from tests.helpers import Api, User, Ws, ack_for, serve_argv, wait_for_ready
from tests.pushserver import PushServer, Subscription, unattended
from tests.test_metrics import scrape, total

INTERVAL_S = 2.0  # CHATD_PUSH_INTERVAL_S of the test stack (conftest.py)


@pytest.fixture
async def pushsvc() -> AsyncIterator[PushServer]:
    server = PushServer()
    await server.start()
    yield server
    await server.close()


async def subscribe(api: Api, user: User, sub: Subscription) -> int:
    response = await api.call("POST", "/v1/push/subscriptions", user.token, sub.json())
    assert response.status_code == 201, response.text
    found: int = response.json()["id"]
    return found


async def sentinel_push(api: Api, owner: User, a: Ws, pushsvc: PushServer, path: str = "/sentinel") -> None:
    """Barrier: `owner` (connected as `a`) writes to a new, offline member of a new group, and
    the push arrives. The test stack has one push sender per worker and one intake, in order,
    so whatever `a`'s worker would have pushed before it has been sent by then."""
    other = await api.user("s")
    await subscribe(api, other, pushsvc.subscription(path))
    cid = await api.group(owner, [other], "sentinel")
    assert (await a.send(cid, "sentinel"))["type"] == "ack"
    await pushsvc.wait(path)


async def connect(base: str, user: User) -> Ws:
    return await Ws.connect(base, user.token)


async def test_push_to_an_offline_member_decrypts_with_her_key(w1: Api, pushsvc: PushServer) -> None:
    alice, bob = await w1.user("alice"), await w1.user("bob")
    cid = await w1.direct(alice, bob)
    sub = pushsvc.subscription("/bob")
    await subscribe(w1, bob, sub)
    a = await connect(w1.base_url, alice)
    assert (await a.send(cid, "the launch code is 1234"))["type"] == "ack"
    [received] = await pushsvc.wait("/bob")
    # Only who wrote and where: the preview is off by default.
    assert sub.decrypt(received) == {
        "type": "message",
        "conversation_id": cid,
        "seq": 1,
        "kind": "direct",
        "sender": alice.name,
    }
    headers = received.headers
    assert headers["content-encoding"] == "aes128gcm"
    assert int(headers["ttl"]) > 0
    assert 0 < len(headers["topic"]) <= 32
    assert re.fullmatch(r"[A-Za-z0-9_-]+", headers["topic"]) and headers["topic"] not in (str(cid), f"c{cid}")
    assert Vapid02.verify(headers["authorization"])
    key = (await w1.call("GET", "/v1/push/key")).json()["public_key"]
    assert f"k={key}" in headers["authorization"]
    assert b"1234" not in received.body  # encrypted, and not there anyway
    await a.close()


async def test_preview_only_when_the_user_chose_it(w1: Api, pushsvc: PushServer) -> None:
    alice, bob = await w1.user("alice"), await w1.user("bob")
    sub = pushsvc.subscription("/bob-preview")
    await subscribe(w1, bob, sub)
    changed = await w1.call("PUT", "/v1/me/notifications", bob.token, {"push_preview": True})
    assert changed.json() == {"dnd": False, "push_preview": True, "muted": []}
    cid = await w1.group(alice, [bob], "plans")
    a = await connect(w1.base_url, alice)
    assert (await a.send(cid, "lunch at noon"))["type"] == "ack"
    [received] = await pushsvc.wait("/bob-preview")
    assert sub.decrypt(received) == {
        "type": "message",
        "conversation_id": cid,
        "seq": 1,
        "kind": "group",
        "sender": alice.name,
        "title": "plans",
        "body": "lunch at noon",
    }
    await a.close()


async def test_no_push_to_the_sender_or_a_member_looking_at_the_app(
    w1: Api, w2: Api, stack: Stack, pushsvc: PushServer
) -> None:
    alice, bob = await w1.user("alice"), await w1.user("bob")
    cid = await w1.direct(alice, bob)
    await subscribe(w1, alice, pushsvc.subscription("/alice"))
    await subscribe(w1, bob, pushsvc.subscription("/bob-online"))
    b = await connect(w2.base_url, bob)  # active
    a = await connect(w1.base_url, alice)
    before = total(scrape(stack, 0), "chatd_push_skipped_total", reason="attended")
    assert (await a.send(cid, "are you there?"))["type"] == "ack"
    await sentinel_push(w1, alice, a, pushsvc)
    assert pushsvc.to("/alice") == [] and pushsvc.to("/bob-online") == []
    assert total(scrape(stack, 0), "chatd_push_skipped_total", reason="attended") >= before + 1
    # Idle on every device past CHATD_PUSH_AWAY_DELAY_S: pushed again.
    await b.send_json({"type": "presence", "status": "idle"})
    await asyncio.sleep(1.5)
    assert (await a.send(cid, "hello?"))["type"] == "ack"
    await pushsvc.wait("/bob-online")
    await a.close()
    await b.close()


async def test_muted_conversations_and_do_not_disturb_push_nothing(
    w1: Api, w2: Api, stack: Stack, pushsvc: PushServer
) -> None:
    alice, bob = await w1.user("alice"), await w1.user("bob")
    muted_cid = await w1.direct(alice, bob)
    other_cid = await w1.group(alice, [bob], "other")
    await subscribe(w1, bob, pushsvc.subscription("/bob-mute"))
    # Muting is synced to the user's other devices at once.
    device = await connect(w2.base_url, bob)
    response = await w1.call("PUT", f"/v1/conversations/{muted_cid}/mute", bob.token, {"muted": True})
    assert response.json() == {"dnd": False, "push_preview": False, "muted": [muted_cid]}
    frame = await device.expect(lambda f: f["type"] == "notify_settings")
    assert frame == {"type": "notify_settings", "dnd": False, "push_preview": False, "muted": [muted_cid]}
    await device.close()
    await unattended(stack.redis_url, bob.id)
    a = await connect(w1.base_url, alice)
    assert (await a.send(muted_cid, "muted one"))["type"] == "ack"
    assert (await a.send(other_cid, "not muted"))["type"] == "ack"
    [received] = await pushsvc.wait("/bob-mute")  # barrier: one sender, in order
    assert pushsvc.to("/bob-mute") == [received]
    # Do not disturb: nothing at all.
    assert (await w1.call("PUT", "/v1/me/notifications", bob.token, {"dnd": True})).status_code == 200
    third = await w1.group(alice, [bob], "third")
    assert (await a.send(third, "during dnd"))["type"] == "ack"
    await sentinel_push(w1, alice, a, pushsvc, "/sentinel-dnd")
    assert len(pushsvc.to("/bob-mute")) == 1
    got = await w1.call("GET", "/v1/me/notifications", bob.token)
    assert got.json() == {"dnd": True, "push_preview": False, "muted": [muted_cid]}
    await a.close()


async def test_messages_considered_together_push_each_its_own_members(w1: Api, pushsvc: PushServer) -> None:
    # Sends written at once reach the push intake together, and one query finds every
    # message's targets: each member is pushed about their own conversation and nothing else,
    # and the muted member of one of them is skipped there only.
    alice = await w1.user("alice")
    members = [await w1.user(f"m{i}") for i in range(8)]
    cids = [await w1.group(alice, [m], f"g{i}") for i, m in enumerate(members)]
    subs = [pushsvc.subscription(f"/together-{i}") for i in range(len(members))]
    for member, sub in zip(members, subs, strict=True):
        await subscribe(w1, member, sub)
    shared = await w1.group(alice, members, "everyone")
    muted = members[0]
    response = await w1.call("PUT", f"/v1/conversations/{shared}/mute", muted.token, {"muted": True})
    assert response.status_code == 200
    a = await connect(w1.base_url, alice)
    for cid in [shared, *cids]:  # pipelined: no ack awaited in between
        await a.send_json({"type": "send", "conversation_id": cid, "client_msg_id": f"t{cid}", "body": "hi"})
    for cid in [shared, *cids]:
        await a.expect(ack_for(f"t{cid}"))
    for i, sub in enumerate(subs):
        wanted = [cids[i]] if i == 0 else [shared, cids[i]]
        received = await pushsvc.wait(f"/together-{i}", count=len(wanted))
        assert sorted(sub.decrypt(r)["conversation_id"] for r in received) == sorted(wanted)
    await sentinel_push(w1, alice, a, pushsvc, "/sentinel-together")
    for i in range(len(members)):  # and nothing more came after the barrier
        assert len(pushsvc.to(f"/together-{i}")) == (1 if i == 0 else 2)
    await a.close()


async def test_a_burst_of_50_gives_one_push_per_interval(w1: Api, stack: Stack, pushsvc: PushServer) -> None:
    alice, bob = await w1.user("alice"), await w1.user("bob")
    cid = await w1.direct(alice, bob)
    sub = pushsvc.subscription("/bob-burst")
    await subscribe(w1, bob, sub)
    a = await connect(w1.base_url, alice)
    started = time.monotonic()
    for i in range(50):
        await a.send_json({"type": "send", "conversation_id": cid, "client_msg_id": f"b{i}", "body": f"m{i}"})
    for i in range(50):
        assert (await a.expect(ack_for(f"b{i}")))["type"] == "ack"
    [first] = await pushsvc.wait("/bob-burst")
    assert sub.decrypt(first)["seq"] == 1
    # After the interval the next message is pushed; nothing of the burst came before it.
    await asyncio.sleep(max(0.0, INTERVAL_S + 0.5 - (time.monotonic() - started)))
    ack = await a.send(cid, "later")
    pushes = await pushsvc.wait("/bob-burst", 2)
    assert [sub.decrypt(p)["seq"] for p in pushes] == [1, ack["seq"]]
    assert pushes[0].headers["topic"] == pushes[1].headers["topic"]  # the collapse key
    # A resend of a stored message (duplicate ack) is never pushed again.
    assert (await a.send(cid, "m0", client_msg_id="b0"))["duplicate"] is True
    await sentinel_push(w1, alice, a, pushsvc, "/sentinel-burst")
    assert len(pushsvc.to("/bob-burst")) == 2
    await a.close()


async def test_claim_is_once_per_message_and_once_per_interval(stack: Stack) -> None:
    """What makes several workers and restarts safe: the claim in Redis (pushes.py)."""
    redis = aioredis.Redis.from_url(stack.redis_url)
    claim = redis.register_script(_CLAIM)
    keys = [mark_key(999_001, 7), mark_key(999_002, 7)]
    await redis.delete(*keys)
    assert await claim(keys=keys, args=[5, 60_000, 60_000]) == [1, 1]
    assert await claim(keys=keys, args=[5, 60_000, 60_000]) == [0, 0]  # the same message again
    assert await claim(keys=keys, args=[4, 60_000, 60_000]) == [0, 0]  # an older one
    assert await claim(keys=keys, args=[6, 60_000, 60_000]) == [2, 2]  # within the interval
    assert await claim(keys=keys, args=[6, 60_000, 60_000]) == [0, 0]
    assert await claim(keys=keys, args=[7, 0, 60_000]) == [1, 1]  # the interval is over
    await redis.aclose()


async def test_gone_subscription_is_removed(w1: Api, pushsvc: PushServer) -> None:
    alice, bob = await w1.user("alice"), await w1.user("bob")
    cid = await w1.direct(alice, bob)
    pushsvc.gone.add("/bob-gone")
    await subscribe(w1, bob, pushsvc.subscription("/bob-gone"))
    await subscribe(w1, bob, pushsvc.subscription("/bob-kept"))
    a = await connect(w1.base_url, alice)
    assert (await a.send(cid, "hi"))["type"] == "ack"
    await pushsvc.wait("/bob-gone")
    await pushsvc.wait("/bob-kept")
    async with asyncio.timeout(10):
        while True:
            listed = (await w1.call("GET", "/v1/push/subscriptions", bob.token)).json()["subscriptions"]
            if [s["endpoint"] for s in listed] == [pushsvc.subscription("/bob-kept").endpoint]:
                break
            await asyncio.sleep(0.05)
    await a.close()


async def test_logout_removes_the_devices_subscriptions(w1: Api, pushsvc: PushServer) -> None:
    bob = await w1.user("bob")
    second = (
        await w1.call("POST", "/v1/login", json={"username": bob.name, "password": "correct horse battery"})
    ).json()["token"]
    await subscribe(w1, bob, pushsvc.subscription("/bob-laptop"))
    await subscribe(w1, User(bob.id, bob.name, second), pushsvc.subscription("/bob-phone"))
    listed = (await w1.call("GET", "/v1/push/subscriptions", second)).json()["subscriptions"]
    assert [(s["endpoint"].rsplit("/", 1)[1], s["this_device"]) for s in listed] == [
        ("bob-laptop", False),
        ("bob-phone", True),
    ]
    assert (await w1.call("POST", "/v1/logout", bob.token)).status_code == 204
    listed = (await w1.call("GET", "/v1/push/subscriptions", second)).json()["subscriptions"]
    assert [s["endpoint"].rsplit("/", 1)[1] for s in listed] == ["bob-phone"]
    gone = await w1.call(
        "DELETE", "/v1/push/subscriptions", second, {"endpoint": pushsvc.subscription("/bob-phone").endpoint}
    )
    assert gone.status_code == 204
    assert (await w1.call("GET", "/v1/push/subscriptions", second)).json()["subscriptions"] == []


async def test_bad_input_gets_documented_codes(w1: Api, pushsvc: PushServer) -> None:
    alice, bob = await w1.user("alice"), await w1.user("bob")
    cid = await w1.direct(alice, bob)
    carol = await w1.user("carol")
    good = pushsvc.subscription("/x").json()

    async def post(body: object, token: str | None = carol.token) -> httpx.Response:
        return await w1.call("POST", "/v1/push/subscriptions", token, body)

    assert (await post(good, None)).json()["error"]["code"] == "unauthorized"
    elsewhere = {**good, "endpoint": "https://push.example.org/x"}
    for body, field in [
        (elsewhere, "endpoint"),  # not on CHATD_PUSH_SERVICES: chatd never posts there
        ({**good, "endpoint": "http://127.0.0.1:1/" + "x" * 3000}, "endpoint"),
        ({**good, "keys": {"p256dh": "AAAA", "auth": good["keys"]["auth"]}}, "keys"),
        ({**good, "keys": {"p256dh": good["keys"]["p256dh"], "auth": "AAAA"}}, "keys"),
        ({**good, "keys": {"p256dh": "!!", "auth": "??"}}, "keys"),
        ({"endpoint": good["endpoint"]}, "keys"),
        ({"keys": good["keys"]}, "endpoint"),
    ]:
        response = await post(body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["field"] == field
    mute = await w1.call("PUT", f"/v1/conversations/{cid}/mute", carol.token, {"muted": True})
    assert (mute.status_code, mute.json()["error"]["code"]) == (403, "not_member")
    mute = await w1.call("PUT", f"/v1/conversations/{cid}/mute", alice.token, {"muted": "yes"})
    assert mute.json()["error"] == {
        "code": "bad_request",
        "message": "muted: expected true or false",
        "field": "muted",
    }
    for body in ({}, {"dnd": 1}, {"push_preview": None}):
        response = await w1.call("PUT", "/v1/me/notifications", alice.token, body)
        assert response.status_code == 400, body
    missing = await w1.call("DELETE", "/v1/push/subscriptions", alice.token, {"endpoint": good["endpoint"]})
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")


# -- a push service that never answers -----------------------------------------------------
@pytest.fixture
def hung_worker(stack: Stack) -> Iterator[tuple[str, str]]:
    """A worker of its own (small queue, two senders, long timeout), with its metrics."""
    port, metrics_port = free_port(), free_port()
    env = {
        **stack.env(),
        "CHATD_PUSH_QUEUE": "8",
        "CHATD_PUSH_CONCURRENCY": "2",
        "CHATD_PUSH_TIMEOUT_S": "60",
        "CHATD_PUSH_INTERVAL_S": "3600",  # one push per conversation in this test: counts are exact
    }
    log = stack.root / "logs" / f"hung-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            serve_argv(port, metrics_port),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_for_ready(proc, url, log)
    yield url, f"http://127.0.0.1:{metrics_port}/metrics"
    proc.kill()
    proc.wait(10)


def metric(url: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    found = 0.0
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for sample in family.samples:
            if sample.name == name and set(labels.items()) <= set(sample.labels.items()):
                found += sample.value
    return found


async def test_a_hung_push_service_delays_no_ack_and_holds_bounded_memory(
    hung_worker: tuple[str, str], pushsvc: PushServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url, metrics_url = hung_worker
    api = Api(url)
    alice, bob = await api.user("alice"), await api.user("bob")
    cid = await api.direct(alice, bob)
    for i in range(20):  # 20 devices: one message makes 20 requests
        pushsvc.hang.add(f"/hang-{i}")
        await subscribe(api, bob, pushsvc.subscription(f"/hang-{i}"))
    a = await connect(url, alice)

    async def acks(n: int, tag: str) -> list[float]:
        took = []
        for i in range(n):
            started = time.perf_counter()
            assert (await a.send(cid, f"{tag}{i}"))["type"] == "ack"
            took.append(time.perf_counter() - started)
        return took

    before = await acks(100, "before")  # the first one makes the 20 requests
    await pushsvc.wait_hanging(2)  # both senders are stuck in a request that never ends
    during = await acks(200, "during")
    # The queue holds CHATD_PUSH_QUEUE requests (2 in flight, 6 waiting); the other 12 were
    # dropped and counted, never buffered.
    assert metric(metrics_url, "chatd_push_held") == 8
    assert metric(metrics_url, "chatd_pushes_total", outcome="dropped") == 12
    assert pushsvc.hanging == 2
    with capsys.disabled():
        for label, took in (("first 100 sends (the push made)", before), ("200 sends, service hung", during)):
            q = statistics.quantiles(took, n=100)
            print(
                f"\nack latency, {label}: p50 {q[49] * 1000:.2f} ms, p99 {q[98] * 1000:.2f} ms,"
                f" max {max(took) * 1000:.2f} ms"
            )
    await a.close()
    await api.http.aclose()


def test_vapid_key_of_the_stack_is_kept(stack: Stack) -> None:
    assert stack.vapid_key_file.stat().st_mode & 0o777 == 0o600
    assert Path(stack.vapid_key_file).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
