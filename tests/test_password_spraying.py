"""Password spraying: logins and registrations are limited per client address, and argon2 runs
in a queue of fixed width, so a spray is cut off early and other users' requests stay fast.
What is asserted is the structure (how many attempts reach argon2, that a full queue answers 503);
the bystander's latency is printed as a figure, not asserted: on a shared 2-core box a timing bound
either misses the defect or fails for load alone.

Client addresses are simulated with X-Forwarded-For straight to a worker (which trusts it from
loopback); each test uses addresses of its own so the shared Redis windows do not mix.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Callable

from tests.conftest import Worker
from tests.helpers import Api

# A real (if smaller than production) argon2 cost, so each attempt costs what a spray costs.
COSTLY = {"CHATD_ARGON2_TIME_COST": "2", "CHATD_ARGON2_MEMORY_KIB": "32768"}


def address() -> str:
    return f"198.51.{random.randrange(256)}.{random.randrange(1, 255)}"


async def latencies(api: Api, token: str, count: int) -> list[float]:
    taken = []
    for _ in range(count):
        started = time.perf_counter()
        response = await api.call("GET", "/v1/conversations", token)
        assert response.status_code == 200
        taken.append(time.perf_counter() - started)
    return taken


async def spray(api: Api, attempts: int, per_second: float, source: Callable[[int], str]) -> list[int]:
    """`attempts` logins at a steady rate, as a spraying client sends them, whatever the answers."""
    started = time.monotonic()

    async def attempt(i: int) -> int:
        await asyncio.sleep(max(0.0, started + i / per_second - time.monotonic()))
        body = {"username": f"victim{i % 80}-{uuid.uuid4().hex[:6]}", "password": "Winter2026!"}
        response = await api.call("POST", "/v1/login", json=body, headers={"x-forwarded-for": source(i)})
        return response.status_code

    return list(await asyncio.gather(*(attempt(i) for i in range(attempts))))


async def measure_during(api: Api, token: str, attack: asyncio.Task[list[int]]) -> list[float]:
    taken: list[float] = []
    while not attack.done() or len(taken) < 10:
        taken += await latencies(api, token, 1)
    return taken


async def test_a_spray_from_one_address_is_cut_off_and_others_stay_fast(
    w1: Api, spawn_worker: Callable[..., Worker]
) -> None:
    worker = spawn_worker(**COSTLY, CHATD_LOGIN_ADDRESS_RATE_LIMIT="10")
    api = Api(worker.url)
    bystander = await w1.user()
    baseline = statistics.median(await latencies(api, bystander.token, 20))
    attacker = address()
    attack = asyncio.create_task(spray(api, 200, 100, lambda i: attacker))
    during = await measure_during(api, bystander.token, attack)
    statuses = attack.result()
    tried = sum(1 for s in statuses if s != 429)
    print(
        f"spray: {tried} of 200 attempts reached argon2; bystander median {baseline * 1000:.1f} ms"
        f" before, {statistics.median(during) * 1000:.1f} ms during (max {max(during) * 1000:.1f} ms)"
    )
    assert set(statuses) <= {401, 429}
    assert tried <= 20, "cut off after the per-address limit (twice it across a window boundary)"
    await api.http.aclose()


async def test_a_spray_from_many_addresses_is_bounded_by_the_hashing_queue(
    w1: Api, spawn_worker: Callable[..., Worker]
) -> None:
    worker = spawn_worker(**COSTLY, CHATD_ARGON2_CONCURRENCY="1", CHATD_ARGON2_QUEUE="4")
    api = Api(worker.url)
    bystander = await w1.user()
    baseline = statistics.median(await latencies(api, bystander.token, 20))
    attack = asyncio.create_task(spray(api, 200, 100, lambda i: address()))
    during = await measure_during(api, bystander.token, attack)
    statuses = attack.result()
    busy = statuses.count(503)
    print(
        f"distributed spray: {busy} of 200 refused as unavailable; bystander median"
        f" {baseline * 1000:.1f} ms before, {statistics.median(during) * 1000:.1f} ms during"
    )
    assert set(statuses) <= {401, 503} and busy > 0, "a full hashing queue answers unavailable"
    # A legitimate login still succeeds once the spray is over.
    credentials = {"username": bystander.name, "password": "correct horse battery"}
    login = await api.call("POST", "/v1/login", json=credentials)
    assert login.status_code == 200
    await api.http.aclose()


async def test_registration_is_limited_per_address(spawn_worker: Callable[..., Worker]) -> None:
    worker = spawn_worker(CHATD_REGISTER_RATE_LIMIT="3")
    api = Api(worker.url)
    here, elsewhere = address(), address()

    async def register(source: str) -> int:
        body = {"username": f"reg-{uuid.uuid4().hex[:10]}", "password": "correct horse battery"}
        response = await api.call("POST", "/v1/register", json=body, headers={"x-forwarded-for": source})
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "rate_limited"
            assert response.json()["error"]["retry_after_ms"] > 0
        return response.status_code

    statuses = [await register(here) for _ in range(5)]
    assert statuses[:3] == [201] * 3 and statuses[3:] == [429, 429], statuses
    assert await register(elsewhere) == 201, "another address is not affected"
    await api.http.aclose()
