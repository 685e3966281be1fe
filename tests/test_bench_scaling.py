"""docs/scaling.md's model (bench/scaling.py, issue 25): costs per unit from the headline steps,
cores per component at multiples of today's load, and the topology each multiple needs. Pure
functions over recorded steps: nothing is timed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench import scaling


def step(rate: float, p99: float, cpu: dict[str, float], group: int = 2) -> dict[str, Any]:
    sent = int(rate * 8)
    return {
        "offered_rate": rate,
        "offered_deliveries_per_s": rate * (group - 1),
        "sent": sent,
        "acked": sent,
        "ack_rate": rate,
        "delivered": sent * (group - 1),
        "deliveries_per_s": rate * (group - 1),
        "ack_ms": {"p99": p99},
        "deliver_ms": {"p99": p99},
        "cpu_s": cpu,
        "redis_calls_per_send": 4.0,
    }


CPU = {"worker-1": 4.0, "worker-2": 4.0, "nginx": 2.0, "postgres": 3.0, "redis": 1.0, "loadgen-1": 9.0}


def results() -> dict[str, Any]:
    # durable: 500/s passes, 1,000/s fails (p99 80 ms); groups of 10: 100 msg/s passes, 200 fails
    durable = [step(500, 20, CPU), step(1000, 80, {"worker-1": 99.0})]
    groups = [step(100, 40, CPU, 10), step(200, 400, {"worker-1": 99.0}, 10)]
    return {
        "name": "t",
        "started": "now",
        "machine": {"cpus": 2},
        "scenarios": {
            "durable": {"steps": durable},
            "fanout": {"by_group_size": {"10": {"steps": groups}}},
            "idle": {"held": 1000, "worker_rss_per_connection_kb": 20.0, "nginx_rss_per_connection_kb": 10.0},
        },
    }


def test_costs_come_from_the_headline_step_and_leave_the_load_generators_out() -> None:
    model = scaling.measure(results())
    # 4,000 sends in the 500/s step: 8 worker-seconds are 2 ms per send, 3 postgres-seconds 0.75 ms
    assert model["durable"]["rate"] == 500
    assert model["durable"]["per_send"] == {"workers": 2.0, "nginx": 0.5, "postgres": 0.75, "redis": 0.25}
    g10 = model["groups"]["10"]
    assert g10["msgs"] == 100
    assert g10["per_msg"]["workers"] == pytest.approx(10.0)  # 800 messages
    assert g10["per_delivery"]["workers"] == pytest.approx(10.0 / 9)  # 7,200 deliveries
    assert g10["redis_calls"] == 4.0


def test_the_plan_counts_cores_at_half_capacity_and_names_the_topology() -> None:
    rows = scaling.plan(scaling.measure(results()))
    assert [r["scale"] for r in rows] == [1, 10, 100, 1000]
    ten = rows[1]
    # 1,000 msg/s x 10 worker-ms = 10 cores at full use, 20 at half
    assert ten["cores"]["workers"] == pytest.approx(20.0)
    assert ten["app_hosts"] == 4  # (20 + 4 nginx cores) / 8
    assert ten["redis_shards"] == 3  # 1,000 msg/s x 1.25 ms = 1.25 cores, 2.5 at half: a shard per core
    big = rows[3]
    assert big["pg_primaries"] > 1
    assert "Citus" in scaling.topology(big)
    assert "one Postgres primary" in scaling.topology(ten)
    assert scaling.topology(rows[0]).startswith("one box")


def test_write_replaces_only_the_measured_block(tmp_path: Path) -> None:
    doc = tmp_path / "scaling.md"
    doc.write_text(f"prose before\n{scaling.BEGIN}\nold figures\n{scaling.END}\nprose after\n")
    scaling.write(results(), doc)
    text = doc.read_text()
    assert text.startswith("prose before\n") and text.endswith("prose after\n")
    assert "old figures" not in text and "| 10x | 1,000 |" in text
    doc.write_text("no block\n")
    with pytest.raises(SystemExit):
        scaling.write(results(), doc)
