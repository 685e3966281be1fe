"""One connection streaming sends: time from the first send to the last ack (issue 13).

Starts its own local stack (bench settings: no rate limit in the way), makes two users and a
direct conversation, then one WebSocket writes `--sends` send frames as fast as it can while a
reader collects the acks. Prints one JSON line per run and the median. Not a test: a figure.

    .venv/bin/python -m bench.pipeline --sends 1000 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import websockets

from bench import chatstack
from bench.population import Api


async def stream(url: str, token: str, cid: int, sends: int, tag: str) -> dict[str, float]:
    async with websockets.connect(url, max_size=16 * 2**20) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        async for raw in ws:
            if json.loads(raw)["type"] == "synced":
                break
        acks: list[int] = []
        done = asyncio.get_running_loop().create_future()

        async def read() -> None:
            async for raw in ws:
                frame = json.loads(raw)
                if frame["type"] == "error":
                    done.set_exception(RuntimeError(f"error frame: {frame}"))
                    return
                if frame["type"] == "ack":
                    acks.append(frame["seq"])
                    if len(acks) == sends:
                        done.set_result(time.perf_counter())
                        return

        reader = asyncio.create_task(read())
        started = time.perf_counter()
        for i in range(sends):
            body = {"type": "send", "conversation_id": cid, "client_msg_id": f"{tag}-{i}", "body": f"m{i}"}
            await ws.send(json.dumps(body))
        written = time.perf_counter()
        last_ack = await asyncio.wait_for(done, 300)
        await reader
        if acks != sorted(acks) or len(set(acks)) != sends:
            raise RuntimeError("acks out of order or repeated")
        return {"sends": sends, "written_s": written - started, "last_ack_s": last_ack - started}


async def measure(base_url: str, sends: int, runs: int) -> list[dict[str, float]]:
    async with Api(base_url) as api:
        alice, bob = await api.users(2)
        cid = await api.direct(alice, bob)
    url = base_url.replace("http", "ws", 1) + "/v1/ws"
    results = []
    for run in range(runs):
        result = await stream(url, alice.token, cid, sends, f"r{run}")
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--url", help="an already running stack (else one is started)")
    args = parser.parse_args()
    if args.url:
        results = asyncio.run(measure(args.url, args.sends, args.runs))
    else:
        with tempfile.TemporaryDirectory(prefix="chatd-pipeline-") as root:
            stack = chatstack.start(Path(root), workers=1)
            try:
                results = asyncio.run(measure(stack.url, args.sends, args.runs))
            finally:
                stack.down()
    median = statistics.median(r["last_ack_s"] for r in results)
    print(json.dumps({"median_last_ack_s": round(median, 4), "sends": args.sends, "runs": len(results)}))


if __name__ == "__main__":
    main()
