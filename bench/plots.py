"""PNG plots for docs/benchmarks.md (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.headline import fanout_max, get


def latency_vs_rate(results: dict[str, Any], out: Path) -> bool:
    s = results["scenarios"]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    drawn = False
    for name, style in (("durable", "-"), ("synapse", "--")):
        steps = [st for st in s.get(name, {}).get("steps", []) if st["ack_ms"]["p50"] is not None]
        if not steps:
            continue
        rates = [st["offered_rate"] for st in steps]
        label = "chatd" if name == "durable" else "Synapse"
        for q, marker, color in (("p50", "o", "C0"), ("p99", "s", "C1"), ("p999", "^", "C2")):
            acks = [st["ack_ms"][q] for st in steps]
            ax.plot(rates, acks, style, marker=marker, color=color, label=f"{label} ack {q}")
        delivers = [st["deliver_ms"]["p99"] for st in steps]
        ax.plot(rates, delivers, style, marker="x", color="C3", label=f"{label} deliver p99")
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.axhline(50, color="grey", linewidth=0.8, linestyle=":")
    ax.axhline(100, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered sends/s (1:1 conversations, open loop)")
    ax.set_ylabel("latency from scheduled send, ms")
    ax.set_title("Durable sends: latency percentiles against offered rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True


def deliveries_vs_group(results: dict[str, Any], out: Path) -> bool:
    s = results["scenarios"]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    drawn = False
    for path, label in (
        (("fanout",), "chatd"),
        (("node-durable", "fanout"), "Node.js like-for-like peer"),
        (("sio-python",), "python-socketio relay"),
        (("sio-node",), "Node Socket.IO relay"),
    ):
        by = get(s, *path, "by_group_size") or {}
        if not by:
            continue
        sizes = sorted(int(g) for g in by)
        heads = [fanout_max(by[str(g)]["steps"], g)["rate"] for g in sizes]
        ax.plot(sizes, heads, marker="o", label=label)
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xscale("log")
    ax.set_xlabel("group size (members)")
    ax.set_ylabel("deliveries/s at p99 <= 100 ms (every lower step passing)")
    ax.set_title("Fan-out: deliveries/s against group size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True


def fanout_latency(results: dict[str, Any], out: Path) -> bool:
    by = results["scenarios"].get("fanout", {}).get("by_group_size", {})
    if not by:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for g in sorted(by, key=int):
        steps = [st for st in by[g]["steps"] if st["deliver_ms"]["p99"] is not None]
        ax.plot(
            [st["deliveries_per_s"] for st in steps],
            [st["deliver_ms"]["p99"] for st in steps],
            marker="o",
            label=f"G={g} deliver p99",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("deliveries/s achieved")
    ax.set_ylabel("p99 send->deliver, ms")
    ax.set_title("chatd fan-out: p99 delivery latency against load")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True
