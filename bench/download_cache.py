"""Downloads with and without the attachments' download cache (issue 21): the CPU a worker and
PostgreSQL spend, and the time, for the same file downloaded many times through nginx.

    python -m bench.download_cache [--size-mib 5] [--downloads 100]

Each run starts its own stack (one worker, on loopback), uploads one file of random bytes and
downloads it as its uploader, one download at a time; without the cache
(CHATD_FILES_CACHE_DIR empty: every download's bytes come from PostgreSQL through the worker)
and with it (the first download fills it, nginx serves the rest). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx

from bench.chatstack import BENCH_ENV
from bench.procstat import cpu_seconds, loadavg
from bench.stats import percentile
from chatd.devstack import Stack


def run(cache: bool, size: int, downloads: int) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="chatd-bench-dl-"))
    root.chmod(0o755)
    env = {**BENCH_ENV, **({} if cache else {"CHATD_FILES_CACHE_DIR": ""})}
    stack = Stack(root=root / "stack", workers=1, tcp_workers=True, extra_env=env)
    try:
        stack.up()
        data = os.urandom(size)
        with httpx.Client(base_url=stack.url, timeout=60) as http:
            creds = {"username": f"dl{os.getpid()}", "password": "a long enough password"}
            assert http.post("/v1/register", json=creds).status_code == 201
            token = http.post("/v1/login", json=creds).json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            file = http.post("/v1/files", params={"name": "x.bin"}, content=data, headers=auth).json()["file"]
            worker = stack.pids["worker-1"]
            postgres = int((stack.root / "pg" / "postmaster.pid").read_text().split()[0])
            cpu_worker, cpu_pg = cpu_seconds(worker), cpu_seconds(postgres)
            times: list[float] = []
            for _ in range(downloads):
                started = time.perf_counter()
                got = http.get(f"/v1/files/{file['id']}", headers=auth)
                times.append((time.perf_counter() - started) * 1000)
                assert got.status_code == 200
                assert got.content == data
            return {
                "cache": cache,
                "worker_cpu_s": round(cpu_seconds(worker) - cpu_worker, 2),
                "postgres_cpu_s": round(cpu_seconds(postgres) - cpu_pg, 2),
                "download_ms_p50": round(percentile(sorted(times), 50) or 0, 1),
                "download_ms_p95": round(percentile(sorted(times), 95) or 0, 1),
            }
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=float, default=5)
    parser.add_argument("--downloads", type=int, default=100)
    args = parser.parse_args()
    size = int(args.size_mib * 1024 * 1024)
    before = loadavg()
    runs = [run(cache, size, args.downloads) for cache in (False, True)]
    print(
        json.dumps(
            {"size": size, "downloads": args.downloads, "loadavg_before": before, "runs": runs}, indent=1
        )
    )


if __name__ == "__main__":
    main()
