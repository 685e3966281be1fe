"""Prometheus metrics on each worker's own /metrics, and logs an operator can use (issue 15)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no type hints
from prometheus_client.parser import text_string_to_metric_families

from chatd.config import ConfigError, Settings
from chatd.devstack import Stack
from tests.conftest import Worker
from tests.helpers import Api, Ws

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(stack: Stack, index: int) -> Samples:
    text = httpx.get(stack.metrics_url(index), timeout=5).text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def summed(stack: Stack) -> tuple[Samples, list[Samples]]:
    per_worker = [scrape(stack, i) for i in range(stack.workers)]
    both: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
    for samples in per_worker:
        for key, value in samples.items():
            both[key] += value
    return dict(both), per_worker


async def wait_for_counts(
    stack: Stack, want: dict[str, float], before: Samples, timeout: float = 15
) -> Samples:
    """Scrape until every series in `want` (name or name|label=value) moved by at least that much.

    A frame reaches the client a moment before the worker records having written it, so the
    last observations may trail the client's view by a few milliseconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        now, _ = summed(stack)
        moved = {}
        for key in want:
            name, _, label = key.partition("|")
            labels = dict([label.split("=")]) if label else {}
            moved[key] = total(now, name, **labels) - total(before, name, **labels)
        if all(moved[k] >= v for k, v in want.items()) or time.monotonic() > deadline:
            assert moved == {k: moved[k] for k in want} and all(moved[k] >= v for k, v in want.items()), moved
            return now
        await asyncio.sleep(0.1)


async def test_sends_deliveries_and_read_marks_move_the_metrics_of_both_workers(
    stack: Stack, w1: Api, w2: Api
) -> None:
    alice, bob, carol = await w1.user(), await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    stranger = await w1.direct(bob, carol)
    before, workers_before = summed(stack)

    a = await Ws.connect(w1.base_url, alice.token)  # the sender on worker 1
    a2 = await Ws.connect(w2.base_url, alice.token)  # and on worker 2
    b = await Ws.connect(w2.base_url, bob.token)  # the reader on worker 2
    acks = [await a.send(cid, f"m{i}") for i in range(3)] + [await a2.send(cid, f"n{i}") for i in range(2)]
    assert [f["type"] for f in acks] == ["ack"] * 5
    resend = await a.send(cid, "m0 again", client_msg_id=acks[0]["client_msg_id"])
    assert resend["duplicate"] is True
    refused = await a.send(stranger, "not mine")
    assert refused["code"] == "not_member"
    await b.wait_seq(cid, 5)
    assert (await b.read(cid, 3))["last_read_seq"] == 3
    assert (await b.read(cid, 5))["last_read_seq"] == 5

    after = await wait_for_counts(
        stack,
        {
            "chatd_sends_total|outcome=acked": 5,
            "chatd_sends_total|outcome=duplicate": 1,
            "chatd_sends_total|outcome=not_member": 1,
            "chatd_error_replies_total|code=not_member": 1,
            "chatd_ack_latency_seconds_count": 6,  # acks, the duplicate's included
            "chatd_commit_batch_size_count": 1,
            "chatd_commit_batch_size_sum": 6,
            # bob's socket gets 5 messages live; alice's other device gets each one too
            "chatd_delivery_latency_seconds_count": 10,
            "chatd_deliveries_total|path=live": 10,
            "chatd_read_marks_total": 2,
            "chatd_ws_opened_total": 3,
        },
        before,
    )
    assert total(after, "chatd_ack_latency_seconds_sum") > total(before, "chatd_ack_latency_seconds_sum")
    assert (
        total(after, "chatd_delivery_latency_seconds_bucket", le="+Inf")
        - total(before, "chatd_delivery_latency_seconds_bucket", le="+Inf")
        >= 10
    )
    # Each worker did its share: the sum is over two real processes.
    workers_after = [scrape(stack, i) for i in range(stack.workers)]
    for i, (old, new) in enumerate(zip(workers_before, workers_after, strict=True)):
        moved = total(new, "chatd_sends_total", outcome="acked") - total(
            old, "chatd_sends_total", outcome="acked"
        )
        assert moved >= {0: 3, 1: 2}[i], (i, moved)
    assert (
        total(workers_after[1], "chatd_read_marks_total") - total(workers_before[1], "chatd_read_marks_total")
        >= 2
    )
    assert total(after, "process_cpu_seconds_total") > 0  # process metrics, per worker

    # Flushed to Postgres within a flush interval (1 s in the tests): the flusher's series move.
    await wait_for_counts(stack, {"chatd_read_pointer_flush_duration_seconds_count": 1}, after)
    for ws in (a, a2, b):
        await ws.close()
    await wait_for_counts(stack, {"chatd_ws_closed_total": 3}, after)


async def test_metrics_carry_no_user_or_conversation_ids(stack: Stack, w1: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    a = await Ws.connect(w1.base_url, alice.token)
    assert (await a.send(cid, "hi"))["type"] == "ack"
    await a.close()
    for index in range(stack.workers):
        for (_, labels), _value in scrape(stack, index).items():
            for key, _label_value in labels:
                assert key not in ("user_id", "user", "conversation_id", "conversation"), key


async def test_worker_logs_are_json_with_structured_websocket_lines_and_no_colour(
    stack: Stack, w1: Api
) -> None:
    alice = await w1.user()
    marker = uuid.uuid4().hex
    a = await Ws.connect(w1.base_url, alice.token)
    await a.close()
    # A request whose line must come after the handshake's: a barrier in the log.
    await w1.http.get(f"/v1/nothing-{marker}")
    log = stack.root / "logs" / "worker-1.log"
    for _ in range(200):  # up to 10 s
        if marker in log.read_text():
            break
        await asyncio.sleep(0.05)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert lines and not any("color_message" in line for line in lines)
    handshakes = [line for line in lines if line["event"] == "ws handshake"]
    assert handshakes, "no structured WebSocket handshake line"
    assert handshakes[-1]["client"].startswith("127.0.0.1") and handshakes[-1]["path"] == "/v1/ws"
    assert handshakes[-1]["outcome"] == "accepted"
    requests = [line for line in lines if line["event"] == "request" and marker in line["path"]]
    assert requests and requests[-1]["client"] == "127.0.0.1" and requests[-1]["status"] == 404


def deployment_metrics() -> set[str]:
    """What the deployment's exporters add: the Postgres exporter's extra queries (query name and
    column) and the backup units' textfile metrics (their `# TYPE` lines)."""
    roles = Path(__file__).resolve().parent.parent / "ansible" / "roles"
    queries = yaml.safe_load(
        (roles / "monitoring/files/etc/prometheus/chatd-postgres-queries.yaml").read_text()
    )
    names = {
        f"{query}_{column}"
        for query, spec in queries.items()
        for metric in spec["metrics"]
        for column, how in metric.items()
        if how["usage"] != "LABEL"
    }
    for script in roles.glob("*/files/usr/local/lib/*/*-metrics"):
        names |= set(re.findall(r"# TYPE (chatd_[a-z_]+) ", script.read_text()))
    return names


def test_alert_rules_and_dashboard_name_only_metrics_chatd_exports(stack: Stack) -> None:
    exported = {
        family.name for family in text_string_to_metric_families(httpx.get(stack.metrics_url(0)).text)
    }
    exported |= deployment_metrics()
    root = Path(__file__).resolve().parent.parent / "monitoring"
    used = set()
    for path in (root / "prometheus" / "chatd-rules.yml", root / "grafana" / "chatd-dashboard.json"):
        used |= set(re.findall(r"\bchatd_[a-z_]+", path.read_text()))
    suffixes = ("_bucket", "_count", "_sum", "_total")
    missing = {
        name
        for name in used
        if name not in exported
        and name.removesuffix(next((s for s in suffixes if name.endswith(s)), "")) not in exported
    }
    assert not missing, missing


async def test_a_worker_with_metrics_off_serves_everything(
    stack: Stack, w1: Api, spawn_worker: Callable[..., Worker]
) -> None:
    """CHATD_METRICS=off swaps every metric for a no-op: every instrumented path still works."""
    worker = spawn_worker(CHATD_METRICS="off")
    off = Api(worker.url)
    alice, bob = await off.user(), await off.user()
    cid = await off.direct(alice, bob)
    a = await Ws.connect(off.base_url, alice.token)
    b = await Ws.connect(off.base_url, bob.token)
    ack = await a.send(cid, "hi")
    assert ack["type"] == "ack"
    assert (await a.send(cid, "again", client_msg_id=ack["client_msg_id"]))["duplicate"] is True
    assert (await a.send(cid + 10**9, "nowhere"))["code"] == "not_member"
    await b.wait_seq(cid, 1)
    assert (await b.read(cid, 1))["last_read_seq"] == 1
    for ws in (a, b):
        await ws.close()
    await off.http.aclose()
    assert "Traceback" not in worker.log.read_text()
    with pytest.raises(ConfigError, match="CHATD_METRICS"):
        Settings.from_env({"CHATD_DATABASE_URL": stack.database_url, "CHATD_METRICS": "maybe"})
