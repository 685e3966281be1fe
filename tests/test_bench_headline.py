"""The benchmark's headline rule (bench/headline.py, issue 23): the highest offered rate within the
bound with every lower step passing, the same for chatd and every peer; ratios against a peer that
never failed are bounds, not results. Pure functions over recorded steps: no timing is measured."""

from __future__ import annotations

from typing import Any

from bench import headline, targets


def durable_step(rate: float, p99: float, acked: float = 1.0) -> dict[str, Any]:
    sent = int(rate * 8)
    return {
        "offered_rate": rate,
        "sent": sent,
        "acked": int(sent * acked),
        "ack_rate": rate * acked,
        "ack_ms": {"p99": p99},
    }


def fan_step(level: float, group: int, p99: float, workers_s: float = 0.01) -> dict[str, Any]:
    msgs = level / (group - 1)
    sent = int(msgs * 6)
    return {
        "offered_rate": msgs,
        "offered_deliveries_per_s": level,
        "sent": sent,
        "delivered": sent * (group - 1),
        "deliveries_per_s": level,
        "deliver_ms": {"p99": p99},
        "cpu_s_per_1000_deliveries": {"worker-1": workers_s / 2, "worker-2": workers_s / 2, "nginx": 1.0},
    }


def test_durable_headline_stops_at_the_first_failing_step() -> None:
    # 600/s fails (p99 151 ms), 1,000/s passes again: the headline is 400/s, not 1,000/s
    steps = [durable_step(r, p) for r, p in ((200, 5), (400, 9), (600, 151), (800, 20), (1000, 30))]
    assert headline.durable_max(steps) == {"rate": 400, "top": False, "p99": 9}


def test_durable_acks_falling_behind_fail_a_step_whatever_its_p99() -> None:
    steps = [durable_step(200, 5), durable_step(400, 5, acked=0.9)]
    assert headline.durable_max(steps)["rate"] == 200


def test_a_ramp_that_never_failed_is_marked_as_kept_up_at_the_top() -> None:
    steps = [durable_step(r, 5) for r in (200, 400)]
    assert headline.durable_max(steps) == {"rate": 400, "top": True, "p99": 5}
    assert headline.durable_max([durable_step(200, 80)]) == {"rate": 0, "top": False, "p99": None}


def test_fanout_headline_is_at_p99_100ms_and_saturation_is_apart() -> None:
    steps = [fan_step(lv, 100, p) for lv, p in ((1000, 10), (2000, 120), (4000, 40), (8000, 900))]
    head = headline.fanout_max(steps, 100)
    assert (head["rate"], head["top"]) == (1000, False)
    assert headline.saturation(steps, 100)["deliveries_per_s"] == 8000


def _results(*runs: dict[str, Any]) -> dict[str, Any]:
    return {"scenarios": runs[0], "repeats": list(runs[1:])}


def _durable_run(chatd: list[tuple[float, float]], peer: list[tuple[float, float]]) -> dict[str, Any]:
    return {
        "durable": {"steps": [durable_step(r, p) for r, p in chatd]},
        "node-durable": {"durable": {"steps": [durable_step(r, p) for r, p in peer]}},
    }


def test_targets_are_judged_on_the_median_of_the_runs() -> None:
    runs = [
        _durable_run([(200, 5), (400, 5), (600, 80)], [(200, 5), (400, 80)]),
        _durable_run([(200, 5), (400, 80)], [(200, 5), (400, 80)]),
        _durable_run([(200, 5), (400, 5), (600, 5), (800, 80)], [(200, 5), (400, 80)]),
    ]
    med = headline.medians(_results(*runs))
    assert med["durable"]["median"] == 400
    assert (med["durable"]["min"], med["durable"]["max"]) == (200, 600)
    row = targets.targets(_results(*runs))[0]
    assert (row["ratio"], row["met"]) == (2.0, True)
    assert "median of 3 runs" in row["target"]
    assert "200-600, 3 runs" in row["measured"]


def test_a_peer_that_kept_up_at_its_top_step_makes_the_ratio_an_upper_bound() -> None:
    # the peer never failed: chatd at 1.5x of it may still be below it, so "met" is not claimed
    run = _durable_run([(200, 5), (400, 5), (600, 80)], [(200, 5), (267, 5)])
    row = targets.targets(_results(run))[0]
    assert row["ratio"] == 1.5
    assert row["met"] is None
    assert "peer kept up at the top step: ratio is an upper bound" in row["measured"]


def test_worker_cpu_per_delivery_is_compared_at_a_level_every_server_kept_pace_at() -> None:
    def fan(levels: list[tuple[float, float]], cpu: float) -> dict[str, Any]:
        return {"by_group_size": {"100": {"steps": [fan_step(lv, 100, p, cpu) for lv, p in levels]}}}

    run = {
        "fanout": fan([(1000, 10), (2000, 50), (4000, 3000)], 0.02),
        "node-durable": {"fanout": fan([(1000, 10), (2000, 10), (4000, 10)], 0.008)},
        "sio-node": fan([(1000, 10), (2000, 10), (4000, 10)], 0.005),
    }
    got = targets.equal_rate_cpu(run)
    assert got == {"rate": 2000, "fanout": 20.0, "node-durable": 8.0, "sio-node": 5.0}


def test_a_figure_near_the_load_generator_ceiling_is_the_generators_limit() -> None:
    def fig(median: float, top: bool = False) -> dict[str, Any]:
        return {"median": median, "top": top}

    med = {
        "fanout/10": fig(6000),
        "loadgen-ceiling-chatd/10": fig(60000),
        "node-durable/10": fig(0),
        "fanout/100": fig(6000),
        "loadgen-ceiling-chatd/100": fig(0),
        "sio-node/10": fig(25000),
        "loadgen-ceiling-sio/10": fig(30000),
        "sio-node/100": fig(35000),
        "loadgen-ceiling-sio/100": fig(35000, top=True),
        "sio-python/10": fig(9000, top=True),
        "sio-python/100": fig(2000),
    }
    got = {(b["server"], b["group"]): b["verdict"] for b in headline.generator_bound(med)}
    assert got == {
        ("fanout", "10"): "the server's own limit",
        ("fanout", "100"): "no ceiling (the relay failed its first step): not judged",
        ("node-durable", "10"): "the server's own limit",
        ("sio-node", "10"): "the load generators' limit, not the server's",
        ("sio-node", "100"): "ceiling not found (the relay kept up at its top step): not judged",
        ("sio-python", "10"): "the server kept up at its top step: its limit was not reached",
        # under 80 % of a ceiling that is only a lower bound: certainly the server's own limit
        ("sio-python", "100"): "the server's own limit",
    }


def test_a_peer_at_the_load_generator_ceiling_makes_the_ratio_an_upper_bound() -> None:
    def fan(levels: list[tuple[float, float]]) -> dict[str, Any]:
        return {"by_group_size": {"10": {"steps": [fan_step(lv, 10, p) for lv, p in levels]}}}

    run = {
        "fanout": fan([(1000, 10), (2000, 10), (4000, 900)]),
        "sio-node": fan([(1000, 10), (2000, 10), (4000, 10), (8000, 900)]),
        "loadgen-ceiling": {"sio": fan([(1000, 10), (2000, 10), (4000, 10), (8000, 900)])},
    }
    rows = {r["target"]: r for r in targets.targets(_results(run))}
    row = next(r for t, r in rows.items() if "groups of 10" in t and "Socket.IO" in t)
    # 2,000 vs 4,000 is 0.5x, under 0.75x, but the peer's 4,000 is the generators' limit, not Node's
    assert row["ratio"] == 0.5
    assert row["met"] is False
    assert "peer at the load generators' ceiling: ratio is an upper bound" in row["measured"]
