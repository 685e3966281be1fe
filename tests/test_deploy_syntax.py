"""The playbooks parse against the example inventory (the full deployment runs in molecule)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = sorted((ROOT / "ansible" / "playbooks").glob("*.yml"))


def test_there_are_playbooks() -> None:
    assert {p.name for p in PLAYBOOKS} >= {"site.yml", "upgrade.yml", "backup.yml"}


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p.name)
def test_playbook_syntax(playbook: Path) -> None:
    binary = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert binary, "ansible-playbook missing: install the deploy extra (./scripts/bootstrap does)"
    result = subprocess.run(
        [binary, "-i", str(ROOT / "inventory.example"), "--syntax-check", str(playbook)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
