"""requirements/chatd.lock (what a release installs) matches the daemon's declared dependencies, and
requirements/dev.lock (what bootstrap, the tests and CI install) matches every extra and chatd.lock."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "chatd.lock"


def _pins(lock: Path) -> dict[str, tuple[Version, list[str]]]:
    pins: dict[str, tuple[Version, list[str]]] = {}
    text = lock.read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"^([A-Za-z0-9._-]+)==([^ \\\n]+)", block)
        if head:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
            pins[canonicalize_name(head[1])] = (Version(head[2]), hashes)
    return pins


def test_every_runtime_dependency_is_pinned_with_hashes_inside_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins(LOCK)
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


DEV_LOCK = ROOT / "requirements" / "dev.lock"


def test_the_development_lock_pins_every_extra_inside_its_range_and_equals_the_runtime_lock() -> None:
    """bootstrap, the tests and CI install requirements/dev.lock: it must hold every extra's
    dependency within its range, and every runtime package at exactly the deployed version."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, dev = _pins(LOCK), _pins(DEV_LOCK)
    problems = []
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += [spec for spec in extra if canonicalize_name(Requirement(spec).name) != "chatd"]
    for spec in wanted:
        req = Requirement(spec)
        pin = dev.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req.name}: not in dev.lock")
        elif pin[0] not in req.specifier:
            problems.append(f"{req.name}: dev.lock has {pin[0]}, outside {req.specifier}")
    for name, (version, _) in runtime.items():
        if name in dev and dev[name][0] != version:
            problems.append(f"{name}: chatd.lock has {version}, dev.lock {dev[name][0]}")
        elif name not in dev:
            problems.append(f"{name}: in chatd.lock, not in dev.lock")
    unhashed = [name for name, (_, hashes) in dev.items() if not hashes]
    assert not problems, "run ./scripts/lock: " + "; ".join(problems)
    assert not unhashed, f"pins without hashes: {unhashed}"
