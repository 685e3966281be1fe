"""Scenario 5's load-generator operations: read marks and presence churn, on a fixed schedule.

The parent plans every action's time (open loop: a late action is measured from its scheduled
time, see staterec.py) and hands each process its share; each process also gets the whole
presence schedule, so its observers can time the events of users churning in other processes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from bench.loadgen.conn import ChatdConn
from bench.loadgen.recorder import now
from bench.loadgen.staterec import STATUSES

if TYPE_CHECKING:
    from bench.loadgen.agent import Agent


async def _until(t: float) -> None:
    delay = t - now()
    if delay > 0:
        await asyncio.sleep(delay)


async def marks(agent: Agent, cmd: dict[str, Any]) -> dict[str, Any]:
    """cmd["marks"]: [scheduled time, local connection index, conversation, seq, readers needed],
    in time order; wait until cmd["until"] for the last replies and receipts."""
    state = agent.state
    state.open()
    for i, (sched, local, cid, seq, need) in enumerate(cmd["marks"]):
        await _until(sched)
        conn = agent.conns[int(local)]
        assert isinstance(conn, ChatdConn)
        key = f"m{agent.index}.{cmd['step']}.{i}"
        state.mark_sent(key, sched, int(cid), int(seq), int(need))
        try:
            await conn.read(int(cid), int(seq), key)
        except Exception as exc:
            state.error(key, f"read: {type(exc).__name__}: {exc}")
    await _until(cmd["until"])
    return state.close()


async def churn(agent: Agent, cmd: dict[str, Any]) -> dict[str, Any]:
    """cmd["churners"]: [token, connect at, idle at, close at] for this process's churning users;
    cmd["expect"]: {user id: [connect at, idle at, close at]} for every churning user."""
    wanted = {int(uid): dict(zip(STATUSES, times, strict=True)) for uid, times in cmd["expect"].items()}
    step = agent.state.open(wanted)
    url = cmd.get("url") or agent.url

    async def cycle(n: int, token: str, t_on: float, t_idle: float, t_off: float) -> None:
        conn = ChatdConn(agent.rec, "churn", token)
        await _until(t_on)
        try:
            await conn.open(url, agent.src_ip(n), agent.deflate, None)
        except Exception as exc:
            step.connect_failed += 1
            step.error(f"connect: {type(exc).__name__}: {exc}")
            return
        step.connected += 1
        if conn.synced_at is not None:
            step.connect_ms.append((conn.synced_at - t_on) * 1000)
        try:
            await _until(t_idle)
            await conn.presence("idle")
            await _until(t_off)
        except Exception as exc:
            step.error(f"idle: {type(exc).__name__}: {exc}")
        finally:
            await conn.close()

    base = len(agent.conns)
    await asyncio.gather(*(cycle(base + n, *c) for n, c in enumerate(cmd["churners"])))
    await _until(cmd["until"])
    return agent.state.close()
