"""Prometheus metrics (docs/operations.md lists each one and what it means).

Each worker process serves its own registry on its own loopback or private TCP port
(``chatd serve --metrics-port``), and Prometheus scrapes every worker as a target: a stopped
worker is then ``up == 0``, and no multiprocess files or shared directory are needed.

Call sites read these as ``metrics.NAME`` at call time: ``disable()`` (``CHATD_METRICS=off``)
swaps every one for a no-op, so turned off they cost an attribute lookup and an empty call.
Labels are bounded sets (outcomes, error codes, close codes), never a user or conversation id.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

from chatd import __version__, logs
from chatd.errors import ChatdError, Code

log = logging.getLogger("chatd")
replies_log = logging.getLogger("chatd.replies")
LIMIT_CODES = frozenset({Code.RATE_LIMITED, Code.TOO_MANY_CONNECTIONS})
ENABLED = True

# Seconds: around the promises (an ack or a delivery within 1 s, users notice at 3 s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
# WebSocket close codes chatd uses or a client commonly sends; any other is "other".
KNOWN_CLOSE_CODES = frozenset({1000, 1001, 1005, 1006, 1008, 1009, 1011, 1012, 4001, 4002, 4008, 4009})

INFO = Info("chatd_build", "The chatd version this worker runs")

# -- sends and acks ------------------------------------------------------------------------
SENDS = Counter(
    "chatd_sends_total", "Message sends by outcome (acked, duplicate, or the error code)", ["outcome"]
)
SENDS_ACKED = SENDS.labels("acked")
SENDS_DUPLICATE = SENDS.labels("duplicate")
ACK_LATENCY = Histogram(
    "chatd_ack_latency_seconds",
    "From a send frame received to its ack written to the sender's socket",
    buckets=LATENCY_BUCKETS,
)
COMMIT_BATCH = Histogram(
    "chatd_commit_batch_size",
    "Messages stored per group-commit statement",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)

# -- delivery ------------------------------------------------------------------------------
DELIVERY_LATENCY = Histogram(
    "chatd_delivery_latency_seconds",
    "From a message's commit (its created_at) to the frame written to a member's socket (live only)",
    buckets=LATENCY_BUCKETS,
)
DELIVERIES = Counter("chatd_deliveries_total", "Message events handed to member connections", ["path"])
DELIVERED_LIVE = DELIVERIES.labels("live")
DELIVERED_CATCH_UP = DELIVERIES.labels("catch_up")
GAP_FILLS = Counter("chatd_gap_fills_total", "Reads from Postgres for events a publish did not bring")
RESYNCS = Counter(
    "chatd_resyncs_total", "Re-reads of every followed conversation (subscriber back, or asked)"
)
PUBLISH_FAILURES = Counter("chatd_publish_failures_total", "Publish pipelines Redis did not take (retried)")
PUBLISH_DROPPED = Counter(
    "chatd_publish_dropped_total", "Queued publishes dropped past the outbox limit (subscribers resync)"
)
EPHEMERAL_DROPPED = Counter(
    "chatd_ephemeral_dropped_total",
    "Ephemeral state messages (presence, typing, read counts) dropped: Redis failed or the queue was full",
)
OUTBOX_PENDING = Gauge("chatd_publish_pending", "Publishes waiting in this worker's outbox")

# -- WebSockets ----------------------------------------------------------------------------
WS_OPEN = Gauge("chatd_ws_connections", "Authenticated WebSocket connections open on this worker")
WS_OPENED = Counter("chatd_ws_opened_total", "Authenticated WebSocket connections opened")
WS_CLOSED = Counter("chatd_ws_closed_total", "WebSocket connections closed, by close code", ["code"])
SLOW_CONSUMERS = Counter("chatd_ws_slow_consumer_closes_total", "Connections closed (4008) for a full queue")
QUEUED_FRAMES = Gauge("chatd_ws_queued_frames", "Frames waiting to be written, over all connections")

# -- read marks ----------------------------------------------------------------------------
READ_MARKS = Counter("chatd_read_marks_total", "Read marks received")
POINTERS_PENDING = Gauge(
    "chatd_read_pointers_pending", "Read pointers in Redis not yet in Postgres (cluster)"
)
POINTERS_AGE = Gauge(
    "chatd_read_pointers_oldest_age_seconds",
    "Upper bound on how long the oldest pending read pointer has waited (cluster; 0 when none)",
)
FLUSH_DURATION = Histogram(
    "chatd_read_pointer_flush_duration_seconds",
    "Flushes of read pointers to Postgres by this worker",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
FLUSH_FAILURES = Counter("chatd_read_pointer_flush_failures_total", "Read-pointer flushes that failed")
POINTERS_FLUSHED = Counter("chatd_read_pointers_flushed_total", "Read pointers written to Postgres")

# -- presence ------------------------------------------------------------------------------
USERS_CONNECTED = Gauge(
    "chatd_presence_users_connected", "Users with a live connection anywhere, online or away (cluster)"
)
PRESENCE_TRANSITIONS = Counter(
    "chatd_presence_transitions_total", "Presence changes this worker applied, by new state", ["state"]
)
SWEEPER_REMOVALS = Counter(
    "chatd_presence_sweeper_removals_total", "Users whose entries had all expired, handled by the sweeper"
)

# -- accounts ------------------------------------------------------------------------------
ADMIN_ACTIONS = Counter(
    "chatd_admin_actions_total",
    "Admin actions done through the API (create_invite, deactivate, ...); each is logged too",
    ["action"],
)

# -- pools, errors, the loop ---------------------------------------------------------------
POOL_CONNECTIONS = Gauge("chatd_pool_connections", "Pool connections by pool and state", ["pool", "state"])
POOL_WAIT = Histogram(
    "chatd_pool_acquire_seconds",
    "Time waited for a pool connection",
    ["pool"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0),
)
REDIS_WAIT = POOL_WAIT.labels("redis")
# Reads a replica may take (history, catch-up, unread counts; storage/replica.py), with
# CHATD_DATABASE_REPLICA_URL set: who answered, and why the primary did when it did.
REPLICA_READS = Counter(
    "chatd_replica_reads_total", "Reads the replica may take, by the server that answered", ["server"]
)
REPLICA_FALLBACKS = Counter(
    "chatd_replica_fallbacks_total",
    "Of those, answered by the primary, by reason (behind: a seq not replayed yet; lag: past"
    " CHATD_DATABASE_REPLICA_MAX_LAG_S; error: the replica failed)",
    ["reason"],
)
ERROR_REPLIES = Counter("chatd_error_replies_total", "Error replies sent to clients, by error code", ["code"])
ERRORS = Counter("chatd_errors_total", "Failures of background work and unexpected errors, by kind", ["kind"])
LOOP_LAG = Gauge("chatd_event_loop_lag_seconds", "Largest event-loop lag seen in the last sampling period")

# Web Push (pushes.py)
PUSHES = Counter("chatd_pushes_total", "Web Push requests, by outcome", ["outcome"])
PUSH_SKIPPED = Counter("chatd_push_skipped_total", "Pushes not made for a recipient, by reason", ["reason"])
PUSH_RETRIES = Counter("chatd_push_retries_total", "Web Push requests retried after a failure")
PUSH_HELD = Gauge("chatd_push_held", "Web Push requests queued, in flight or waiting to be retried")

# The attachments' download cache (filecache.py)
FILE_CACHE = Counter(
    "chatd_file_cache_total", "Download cache files written on a miss or removed, by event", ["event"]
)

_ALL = [
    name for name, value in list(globals().items()) if isinstance(value, Counter | Gauge | Histogram | Info)
]


class _Noop:
    """Stands in for every metric when metrics are off."""

    def labels(self, *args: Any, **kwargs: Any) -> _Noop:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: Any) -> None:
        pass

    def observe(self, value: float) -> None:
        pass

    def info(self, value: dict[str, str]) -> None:
        pass


def disable() -> None:
    global ENABLED
    ENABLED = False
    noop = _Noop()
    for name in _ALL:
        globals()[name] = noop


def replica_read(server: str, reason: str) -> None:
    """One read the replica may take: `server` answered it; `reason` why not the replica."""
    REPLICA_READS.labels(server).inc()
    if reason:
        REPLICA_FALLBACKS.labels(reason).inc()


def error_reply(exc: ChatdError) -> None:
    """Count an error a client is about to get; log limit refusals (throttled, with the reason).

    `unavailable` and `internal` are logged where the cause (the exception) is known.
    """
    ERROR_REPLIES.labels(exc.code.value).inc()
    if exc.code in LIMIT_CODES:
        logs.throttled(
            replies_log, exc.code.value, "limit reached", logging.INFO, code=exc.code.value, reason=str(exc)
        )


def close_code(code: int | None) -> str:
    return str(code) if code in KNOWN_CLOSE_CODES else "other"


def commit_time(event: dict[str, Any]) -> float:
    """A message event's created_at as a Unix time (cached on the event: one parse per worker)."""
    stamp = event.get("_committed")
    if stamp is None:
        created = event.get("created_at")
        if isinstance(created, str):
            stamp = datetime.fromisoformat(created).timestamp()
        elif isinstance(created, datetime):
            stamp = created.timestamp()
        else:
            stamp = 0.0
        event["_committed"] = stamp
    return float(stamp)


def serve(host: str, port: int) -> int:
    """Serve this process's metrics on http://host:port/metrics (a daemon thread); the port."""
    INFO.info({"version": __version__})
    server, _ = start_http_server(port, addr=host)
    bound = int(server.server_address[1])
    log.info("metrics listening", extra={"address": f"{host}:{bound}"})
    return bound
