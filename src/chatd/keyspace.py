"""Every Redis key name chatd uses, in one place, and the hash tags that make them work on a
Redis Cluster (CHATD_REDIS_CLUSTER).

On a single Redis the names are the historical ones (``chatd:pc:<uid>``, ``chatd:rdirty``...),
so nothing changes for a running deployment. On a cluster, every key that one Lua script or
RENAME touches together must hash to one slot, so each family of keys carries a hash tag:

- ``{u:<uid % 256>}``  presence and the connection cap (presence.py, conncap.py), sharded by
           user: one script applies a change to a user's entries *and* their shard's expiry and
           pending sets, so each shard has its own (the sweeper reads every shard's); a query
           about many users runs one script per shard;
- ``{c:<cid % 256>}``  read and delivery pointers (readstate.py, confirms.py, receipts.py),
           sharded by conversation: a mark moves the user's pointer, the conversation's sorted
           set and a dirty set at once, so the user's hashes (``lr:``/``ld:``/``lm:``) are
           split per conversation shard (one of each per shard the user has state in), and each
           shard has its own dirty and flushing sets (the flusher takes every shard's); a
           sharing change runs one script per shard, in one pipeline;
- ``{r}``  the flush lock and ``rflushed-before``: single keys;
- ``{pu:<cid>}``  Web Push claims (pushes.py): one script claims a conversation's recipients.

Rate-limit counters are single keys and stay untagged (they spread over the whole cluster), and
so do pub/sub channels: sharded pub/sub (cluster_broker.py) places each channel by its own
name, so conversations' fan-out spreads over every primary, and so do the user shards and the
conversation shards; docs/scaling.md.

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


# -- presence and the connection cap: sharded by user ---------------------------------------
USER_SHARDS = 256  # on a cluster: hash tags {u:0} .. {u:255}, spread over every primary


def user_shard(uid: int) -> str:
    """The hash tag of the user's presence shard on a cluster; "" on one Redis (one shard)."""
    return f"{{u:{uid % USER_SHARDS}}}" if _cluster else ""


def user_shards() -> list[str]:
    return [f"{{u:{n}}}" for n in range(USER_SHARDS)] if _cluster else [""]


def presence(kind: str, uid: int) -> str:
    """A user's presence key: ``pc`` connections, ``pidle``, ``pgrace``, ``ps`` state."""
    return f"chatd:{user_shard(uid)}{kind}:{uid}"


def presence_shared(kind: str, shard: str) -> str:
    """A shard's own ``pexp`` (users' expiries), ``ppending`` (unpublished transitions) and
    ``pepoch`` (the connection cap's rebuild epoch): one script touches them with a user's keys."""
    return f"chatd:{shard}{kind}"


def by_user_shard(uids: list[int]) -> list[list[int]]:
    """`uids` grouped by shard (one group on one Redis): a script takes one group's keys."""
    groups: dict[str, list[int]] = {}
    for uid in uids:
        groups.setdefault(user_shard(uid), []).append(uid)
    return list(groups.values())


def worker_marker(token: str) -> str:
    return f"chatd:pmark:{token}"


# -- read and delivery pointers: sharded by conversation ------------------------------------
CONV_SHARDS = 256  # on a cluster: hash tags {c:0} .. {c:255}


def conv_shard(cid: int, on: bool | None = None) -> str:
    """The hash tag of the conversation's pointer shard on a cluster; "" on one Redis."""
    return f"{{c:{cid % CONV_SHARDS}}}" if (_cluster if on is None else on) else ""


def conv_shards(on: bool | None = None) -> list[str]:
    return [f"{{c:{n}}}" for n in range(CONV_SHARDS)] if (_cluster if on is None else on) else [""]


def shard_pointers(shard: str, name: str) -> str:
    """A read-state key or key prefix of one conversation shard (``rr:<cid>``, ``lr:<uid>``,
    ``lm:<uid>``, ``rdirty``...): ``chatd:<name>`` on one Redis, as ever."""
    return f"chatd:{shard}{name}"


def pointers(name: str, on: bool | None = None) -> str:
    """The pointers' single keys (``rflush-lock``, ``rflushed-before``)."""
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


async def script_calls(redis: Any, script: Any, calls: list[tuple[list[Any], list[Any]]]) -> list[Any]:
    """`script` once per (keys, args), each call's keys in one slot, in one round trip."""
    if len(calls) == 1:  # one Redis: one call, as ever
        return [await script(keys=calls[0][0], args=calls[0][1])]
    async with redis.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            await queue_script(pipe, script, keys, args)
        return list(await pipe.execute())
