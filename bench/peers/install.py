"""Install the peers at run time into bench/.peers/ (pip venvs, npm trees); cached between runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

PEERS = Path(__file__).resolve().parent.parent / ".peers"

PY_RELAY = ["python-socketio>=5.11,<6", "redis>=5,<9"]


def same_as_chatd(*names: str) -> list[str]:
    """Requirements pinning `names` to the versions chatd runs on (from this environment)."""
    from importlib.metadata import version

    return [f"{name}=={version(name.split('[')[0])}" for name in names]


NODE_RELAY = ["socket.io@^4.8", "@socket.io/redis-adapter@^8.3", "redis@^4.7"]
# the like-for-like durable peer (issue 23): exact versions, so two runs measure the same code
NODE_DURABLE = ["ws@8.23.1", "pg@8.23.1", "ioredis@6.1.0"]


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 900) -> None:
    out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}...: {(out.stderr or out.stdout).strip()[-600:]}")


def venv(name: str, requirements: list[str]) -> Path:
    """A venv under .peers/<name> with `requirements`; returns its python."""
    root = PEERS / name
    python = root / "bin" / "python"
    stamp = root / "bench-requirements.json"
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == requirements:
        return python
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", str(root)])
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements])
    stamp.write_text(json.dumps(requirements))
    return python


def versions(python: Path, names: list[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    out = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True, check=True)
    found: dict[str, str] = json.loads(out.stdout)
    return found


def npm_tree(name: str, packages: list[str]) -> Path:
    """`npm install` of `packages` into .peers/<name>; returns the directory (holds node_modules)."""
    root = PEERS / name
    stamp = root / "bench-packages.json"
    if stamp.exists() and json.loads(stamp.read_text()) == packages:
        return root
    if not shutil.which("npm") or not shutil.which("node"):
        raise RuntimeError("node/npm not installed")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "package.json").write_text('{"name": "chatd-bench-peer", "private": true}\n')
    _run(["npm", "install", "--no-audit", "--no-fund", "--silent", *packages], cwd=root)
    stamp.write_text(json.dumps(packages))
    return root


def npm_versions(
    root: Path, packages: tuple[str, ...] = ("socket.io", "@socket.io/redis-adapter", "redis")
) -> dict[str, str]:
    out: dict[str, str] = {}
    for pkg in packages:
        meta = root / "node_modules" / pkg / "package.json"
        if meta.exists():
            out[pkg] = json.loads(meta.read_text())["version"]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    out["node"] = node.stdout.strip()
    return out
