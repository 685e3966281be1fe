"""Every Redis key name chatd uses, in one place, and the hash tags that make them work on a
Redis Cluster (CHATD_REDIS_CLUSTER).

On a single Redis the names are the historical ones (``chatd:pc:<uid>``, ``chatd:rdirty``...),
so nothing changes for a running deployment. On a cluster, every key that one Lua script or
RENAME touches together must hash to one slot, so each family of keys carries a hash tag:

- ``{p}``  presence and the connection cap (presence.py, conncap.py): one script applies a
           change to a user's entries *and* the shared expiry and pending sets;
- ``{r}``  read and delivery pointers (readstate.py, confirms.py, receipts.py): a mark moves the
           user's hash, the conversation's sorted set and the dirty set at once, a sharing
           change walks all the user's conversations, the flusher RENAMEs the dirty set;
- ``{pu:<cid>}``  Web Push claims (pushes.py): one script claims a conversation's recipients.

Rate-limit counters are single keys and stay untagged (they spread over the whole cluster), and
so do pub/sub channels: sharded pub/sub (cluster_broker.py) places each channel by its own
name, so conversations' fan-out spreads over every primary. The tagged families each live on
one primary: the cluster scales fan-out, not (yet) this state; docs/scaling.md.

The mode is set once per process, before any key is built (runtime.open_runtime).
"""

from __future__ import annotations

from typing import Any

_cluster = False


def use_cluster(on: bool) -> None:
    global _cluster
    _cluster = on


def cluster() -> bool:
    return _cluster


def _tag(family: str, on: bool | None = None) -> str:
    """The family's hash tag in cluster mode (`on`: that mode rather than this process's)."""
    return f"{{{family}}}" if (_cluster if on is None else on) else ""


# -- presence and the connection cap (family p) ---------------------------------------------
def presence(kind: str, uid: int | str = "", on: bool | None = None) -> str:
    """``pc``/``pidle``/``pgrace``/``ps`` per user; ``pexp``/``ppending``/``pepoch`` shared;
    ``pmark`` per worker (a token)."""
    return f"chatd:{_tag('p', on)}{kind}" + (f":{uid}" if uid != "" else "")


# -- read and delivery pointers (family r) --------------------------------------------------
def pointers(name: str, on: bool | None = None) -> str:
    """A read-state key or key prefix (``rr:``, ``lr:``, ``lm:``, ``rdirty``...)."""
    return f"chatd:{_tag('r', on)}{name}"


# -- Web Push claims ------------------------------------------------------------------------
def push_claim(uid: int, cid: int) -> str:
    """Tagged by conversation on a cluster: one claim script covers one conversation's users."""
    if _cluster:
        return f"chatd:pushed:{{pu:{cid}}}:{uid}"
    return f"chatd:pushed:{uid}:{cid}"


# -- rate limits ----------------------------------------------------------------------------
def rate(prefix: str, key: str | int, window: int) -> str:
    return f"chatd:rl:{prefix}:{key}:{window}"


async def queue_script(pipe: Any, script: Any, keys: list[Any], args: list[Any]) -> None:
    """Queue a registered script on a pipeline. A cluster pipeline cannot load a script it
    does not find (NOSCRIPT fails the batch), so it sends the script's text (EVAL) instead."""
    from redis.asyncio.client import Pipeline

    if isinstance(pipe, Pipeline):
        await script(keys=keys, args=args, client=pipe)
    else:
        pipe.eval(script.script, len(keys), *keys, *args)
