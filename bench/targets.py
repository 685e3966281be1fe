"""Issue 6's targets, judged from one run's results (ratios measured in the same run)."""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b <= 0:
        return None
    return round(a / b, 2)


def _row(target: str, measured: str, ratio: float | None, met: bool | None) -> Row:
    return {"target": target, "measured": measured, "ratio": ratio, "met": met}


def _at_rate(steps: list[dict[str, Any]], rate: float) -> dict[str, Any] | None:
    return next((s for s in steps if s["offered_rate"] == rate), None)


def targets(results: dict[str, Any]) -> list[Row]:
    s = results.get("scenarios", {})
    rows: list[Row] = []
    chatd_rate = _get(s, "durable", "max_rate_p99_ack_le_50ms")
    ceiling = _get(s, "db-ceiling", "inserts_per_s")
    r = _ratio(chatd_rate, ceiling)
    rows.append(
        _row(
            "durable sends/s at p99 ack <= 50 ms >= 1.0x DB ceiling (a)",
            f"{chatd_rate} vs {ceiling} inserts/s",
            r,
            None if r is None else r >= 1.0,
        )
    )
    g100 = _get(s, "fanout", "by_group_size", "100", "max_deliveries_per_s")
    for peer, need, label in (
        ("sio-python", 1.0, "python-socketio (b)"),
        ("sio-node", 0.5, "Node Socket.IO (c)"),
    ):
        other = _get(s, peer, "by_group_size", "100", "max_deliveries_per_s")
        steps = _get(s, peer, "by_group_size", "100", "steps") or []
        # The peer kept up at the ramp's last level: its ceiling is higher, the ratio an upper bound.
        unsaturated = bool(steps) and other == steps[-1].get("deliveries_per_s")
        r = _ratio(g100, other)
        rows.append(
            _row(
                f"deliveries/s in groups of 100 >= {need}x {label}",
                f"{g100} vs {'>= ' if unsaturated else ''}{other}"
                + (" (the peer kept up at the ramp's top level)" if unsaturated else ""),
                r,
                None if r is None else r >= need,
            )
        )
    half = _get(s, "fanout", "by_group_size", "10", "half_max_rate")
    p99 = _get(half, "deliver_ms", "p99")
    rows.append(
        _row(
            "p99 send->deliver < 100 ms at half of chatd's max rate, groups of 10",
            f"p99 {p99} ms at {round(_get(half, 'offered_rate'), 1)} msg/s" if half else "not measured",
            None,
            None if p99 is None else p99 < 100,
        )
    )
    syn_rate = _get(s, "synapse", "max_sustained_rate")
    syn_p99 = _get(s, "synapse", "p99_ack_ms_at_max")
    r = _ratio(chatd_rate, syn_rate)
    chatd_step = _at_rate(_get(s, "durable", "steps") or [], chatd_rate) if chatd_rate else None
    chatd_p99 = _get(chatd_step, "ack_ms", "p99")
    lower = chatd_p99 is not None and syn_p99 is not None and chatd_p99 < syn_p99
    rows.append(
        _row(
            ">= 10x Synapse's durable sends/s (d) at a lower p99",
            f"{chatd_rate}/s (p99 {chatd_p99} ms) vs {syn_rate}/s (p99 {syn_p99} ms)",
            r,
            None if r is None else (r >= 10 and lower),
        )
    )
    held = _get(s, "idle", "held")
    kb = _get(s, "idle", "worker_rss_per_connection_kb")
    rows.append(
        _row(
            ">= 15,000 idle connections at <= 30 KB worker RSS each",
            f"{held} held, {kb} KB each" if held is not None else "not measured",
            None,
            None if held is None or kb is None else (held >= 15000 and kb <= 30),
        )
    )
    storm = s.get("storm", {})
    if "clients" in storm:
        ok = (
            storm["reconnected"] >= 5000
            and storm["all_caught_up_s"] is not None
            and storm["all_caught_up_s"] <= 30
            and storm["missing"] == 0
            and storm["duplicates"] == 0
        )
        measured = (
            f"{storm['reconnected']}/{storm['dropped']} caught up in {storm['all_caught_up_s']} s,"
            f" missing {storm['missing']}, duplicates {storm['duplicates']}"
        )
    else:
        ok, measured = None, "not measured"
    rows.append(
        _row(
            "reconnect storm: 5,000 clients caught up within 30 s, nothing missed",
            measured,
            None,
            ok if "clients" in storm else None,
        )
    )
    return rows
