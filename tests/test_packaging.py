"""The daemon's wheel needs only what the daemon imports; the terminal client and the local
stack are extras (`client`, `devstack`), and say so when they are missing."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# (httpx is the daemon's too since Web Push: pushes.py posts to the push services with it.)
NOT_RUNTIME = {"jinja2", "prompt_toolkit", "prompt-toolkit"}


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match, requirement
    return match.group(0).lower().replace("_", "-")


def test_wheel_requires_only_what_the_daemon_imports() -> None:
    requires = metadata.requires("chatd") or []
    runtime = [r for r in requires if "extra ==" not in r]
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    # The installed metadata is what a wheel built from pyproject.toml carries (else: bootstrap).
    assert sorted(map(_name, runtime)) == sorted(map(_name, declared)), "re-run ./scripts/bootstrap"
    assert not {_name(r) for r in runtime} & {n.replace("_", "-") for n in NOT_RUNTIME}, runtime


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_the_daemon_imports_no_client_or_local_stack_library() -> None:
    found = _python(
        "import sys, chatd.server, chatd.app\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(NOT_RUNTIME)!r})))"
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["client", "--url", "http://127.0.0.1:1", "--user", "a", "chat", "b"], "client"),
        (["dev", "status", "--dir", "/nonexistent"], "devstack"),
    ],
)
def test_client_and_dev_without_their_extra_say_how_to_install_it(argv: list[str], extra: str) -> None:
    # As if the extra were not installed: importing any of its libraries fails.
    run = _python(
        "import sys\n"
        f"for name in {sorted(NOT_RUNTIME)!r}: sys.modules[name] = None\n"
        "from chatd.cli import main\n"
        f"main({argv!r})"
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert f"pip install 'chatd[{extra}]'" in line, line
