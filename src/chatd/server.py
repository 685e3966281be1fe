"""Run one worker: uvicorn on a unix socket or a TCP port, draining before it shuts down.

uvicorn's own shutdown closes WebSockets at once; chatd first finishes in-flight sends (so
their acks go out) and closes each client with 1012, then lets uvicorn stop.

Under systemd (Type=notify) the worker says READY=1 once it listens and Postgres and Redis
answer (what /readyz checks), STOPPING=1 when it starts draining, and feeds the watchdog from
its event loop: a loop that stops turning stops feeding it, and systemd restarts the worker.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType

import uvicorn

from chatd import metrics, wire, wsflow
from chatd.app import create_app
from chatd.config import Settings
from chatd.runtime import Runtime, open_runtime
from chatd.sdnotify import Notifier

log = logging.getLogger("chatd")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: Runtime, notifier: Notifier) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.notifier = notifier
        self._draining: asyncio.Task[None] | None = None
        self._announcing: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self._announcing = asyncio.ensure_future(self._announce_ready())

    async def _announce_ready(self) -> None:
        """READY=1 once the listener is up and the dependencies answer, as /readyz would say."""
        while problems := await self.runtime.readiness():
            if self._draining is not None:
                return
            log.warning("not ready yet", extra={"problems": problems})
            await asyncio.sleep(0.5)
        if self._draining is None:
            self.notifier.ready("serving")
            log.info("ready")

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining is not None or self._loop is None:
            super().handle_exit(sig, frame)  # a second signal: stop now
            return
        log.info("signal received; draining", extra={"signal": signal.Signals(sig).name})
        self._loop.call_soon_threadsafe(self._start_drain, sig, frame)

    def _start_drain(self, sig: int, frame: FrameType | None) -> None:
        self.notifier.stopping("draining")

        async def drain() -> None:
            try:
                await self.runtime.drain()
            finally:
                super(DrainingServer, self).handle_exit(sig, frame)

        self._draining = asyncio.ensure_future(drain())


async def feed_watchdog(notifier: Notifier) -> None:
    """WATCHDOG=1 from the event loop, twice per WatchdogSec (sd_watchdog_enabled(3))."""
    while True:
        notifier.watchdog()
        await asyncio.sleep(notifier.watchdog_s / 2)


def serve(
    settings: Settings, *, uds: str | None, host: str, port: int, metrics_host: str, metrics_port: int
) -> None:
    if not settings.metrics:
        metrics.disable()
    elif metrics_port:
        metrics.serve(metrics_host, metrics_port)

    notifier = Notifier()

    async def run(settings: Settings, notifier: Notifier) -> None:
        runtime = await open_runtime(settings)
        config = uvicorn.Config(
            create_app(settings, runtime),
            uds=uds,
            host=host,
            port=port,
            # uvicorn's websockets-sansio and httptools protocols, answering in chatd's shapes
            # (wire.py), the WebSocket one with reader-paced flow control (wsflow.py)
            ws=wsflow.protocol_class(settings.ws_window_bytes),
            http=wire.HttpProtocol,
            loop="none",
            ws_max_size=settings.max_frame_bytes,
            # The presence heartbeat: a peer that leaves a ping unanswered for a presence TTL,
            # with no pong at all meanwhile, is closed (and shown offline after the grace
            # period); wsflow.py.
            ws_ping_interval=settings.presence_heartbeat_s,
            ws_ping_timeout=settings.presence_ttl_s,
            log_config=None,
            access_log=False,
            proxy_headers=True,
            # Who may set X-Forwarded-For (the client address behind nginx, used by the login
            # limit): on a unix socket only local processes allowed into its directory connect.
            forwarded_allow_ips="*" if uds else settings.forwarded_allow_ips,
            server_header=False,
            timeout_graceful_shutdown=max(1, int(settings.drain_timeout_s)),
        )
        await DrainingServer(config, runtime, notifier).serve()

    async def main() -> None:
        feeder = asyncio.ensure_future(feed_watchdog(notifier)) if notifier.watchdog_s else None
        try:
            await run(settings, notifier)
        finally:
            if feeder is not None:
                feeder.cancel()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency via uvicorn[standard]
        asyncio.run(main())
