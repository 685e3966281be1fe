"""requirements/chatd.lock (what a release installs) matches the daemon's declared dependencies."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "chatd.lock"


def _pins() -> dict[str, tuple[Version, list[str]]]:
    pins: dict[str, tuple[Version, list[str]]] = {}
    text = LOCK.read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"^([A-Za-z0-9._-]+)==([^ \\\n]+)", block)
        if head:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
            pins[canonicalize_name(head[1])] = (Version(head[2]), hashes)
    return pins


def test_every_runtime_dependency_is_pinned_with_hashes_inside_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins()
    assert pins, "no pins in requirements/chatd.lock"
    problems = []
    for spec in project["dependencies"]:
        req = Requirement(spec)
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req.name}: not in the lock")
        elif pin[0] not in req.specifier:
            problems.append(f"{req.name}: locked {pin[0]} outside {req.specifier}")
    unhashed = [name for name, (_, hashes) in pins.items() if not hashes]
    assert not problems, "run ./scripts/lock: " + "; ".join(problems)
    assert not unhashed, f"pins without hashes: {unhashed}"
