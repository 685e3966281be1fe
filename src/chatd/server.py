"""Run one worker: uvicorn on a unix socket or a TCP port, draining before it shuts down.

uvicorn's own shutdown closes WebSockets at once; chatd first finishes in-flight sends (so
their acks go out) and closes each client with 1012, then lets uvicorn stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType

import uvicorn

from chatd import metrics
from chatd.app import create_app
from chatd.config import Settings
from chatd.runtime import Runtime, open_runtime

log = logging.getLogger("chatd")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime
        self._draining: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining is not None or self._loop is None:
            super().handle_exit(sig, frame)  # a second signal: stop now
            return
        log.info("signal received; draining", extra={"signal": signal.Signals(sig).name})
        self._loop.call_soon_threadsafe(self._start_drain, sig, frame)

    def _start_drain(self, sig: int, frame: FrameType | None) -> None:
        async def drain() -> None:
            try:
                await self.runtime.drain()
            finally:
                super(DrainingServer, self).handle_exit(sig, frame)

        self._draining = asyncio.ensure_future(drain())


def serve(
    settings: Settings, *, uds: str | None, host: str, port: int, metrics_host: str, metrics_port: int
) -> None:
    if not settings.metrics:
        metrics.disable()
    elif metrics_port:
        metrics.serve(metrics_host, metrics_port)

    async def main() -> None:
        runtime = await open_runtime(settings)
        config = uvicorn.Config(
            create_app(settings, runtime),
            uds=uds,
            host=host,
            port=port,
            ws="websockets-sansio",
            http="httptools",
            loop="none",
            ws_max_size=settings.max_frame_bytes,
            # The presence heartbeat: a peer that leaves a ping unanswered for a presence TTL is
            # closed (and shown offline after the grace period).
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
        await DrainingServer(config, runtime).serve()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency via uvicorn[standard]
        asyncio.run(main())
