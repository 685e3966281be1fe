"""The playbooks parse against the example inventory (the full deployment runs in molecule)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no type hints

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = sorted((ROOT / "ansible" / "playbooks").glob("*.yml"))


def test_there_are_playbooks() -> None:
    assert {p.name for p in PLAYBOOKS} >= {
        "site.yml",
        "upgrade.yml",
        "rollback.yml",
        "backup.yml",
        "restore.yml",
        "failover.yml",
        "replication.yml",
    }


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


def test_restore_with_a_missing_file_stops_before_any_worker_does(tmp_path: Path) -> None:
    """restore.yml checks the backup file on the controller before it stops the workers: a
    mistyped path must not leave the service down (the example inventory's hosts are never
    reached)."""
    binary = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert binary, "ansible-playbook missing: install the deploy extra (./scripts/bootstrap does)"
    playbook = ROOT / "ansible" / "playbooks" / "restore.yml"
    missing = tmp_path / "chatd-20260101T000000Z.dump"
    result = subprocess.run(
        [
            binary,
            "-i",
            str(ROOT / "inventory.example"),
            str(playbook),
            "-e",
            f"backup_restore_file={missing}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode != 0
    assert "no such non-empty file on the controller" in result.stdout, result.stdout
    assert "Stop every chatd worker" not in result.stdout, "workers were going to be stopped first"


# -- booleans from INI inventories ------------------------------------------------------------
# `common_firewall_enabled=false` under [all:vars] is the *string* "false": truthy in a `when:`
# or a template `{% if %}` unless the role reads it through `| bool`.

ROLES = ROOT / "ansible" / "roles"


def _bool_options() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for spec in sorted(ROLES.glob("*/meta/argument_specs.yml")):
        options = yaml.safe_load(spec.read_text())["argument_specs"]["main"]["options"]
        names = [name for name, option in options.items() if option.get("type") == "bool"]
        if names:
            found[spec.parent.parent.name] = names
    return found


def test_every_boolean_a_role_reads_goes_through_the_bool_filter() -> None:
    sources = [*ROLES.rglob("*.yml"), *ROLES.rglob("*.j2"), ROOT / "nginx" / "chatd.conf.j2"]
    unfiltered: set[str] = set()
    for names in _bool_options().values():
        for name in names:
            for path in sources:
                if "meta" in path.parts or path.parts[-2] == "defaults":
                    continue
                for line_no, line in enumerate(path.read_text().splitlines(), 1):
                    if line.lstrip().startswith("#"):
                        continue
                    for use in re.finditer(rf"\b{name}\b(?!\s*[:=])", line):
                        if not re.match(r"\s*\|\s*bool\b", line[use.end() :]):
                            unfiltered.add(f"{path.relative_to(ROOT)}:{line_no}: {line.strip()}")
    assert not unfiltered, "booleans read without | bool:\n" + "\n".join(sorted(unfiltered))


def _ansible_playbook() -> str:
    binary = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert binary, "ansible-playbook missing: install the deploy extra (./scripts/bootstrap does)"
    return binary


def _run_role_tasks(
    tmp_path: Path, role: str, tasks_from: str, ini_vars: str, prefix: list[str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, object]]]:
    """Run one task file of a role on this machine in --check mode, with an INI inventory."""
    (tmp_path / "inventory").write_text(
        f"[chatd_db]\nlocalhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
        "[chatd_app]\nlocalhost\n[chatd_web]\nlocalhost\n"
        f"[all:vars]\n{ini_vars}\n"
    )
    (tmp_path / "play.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        f"    - ansible.builtin.include_role:\n        name: {role}\n        tasks_from: {tasks_from}\n"
    )
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(ROLES),
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_CALLBACK_FORMAT_PRETTY": "false",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "false",
    }
    result = subprocess.run(
        [*(prefix or []), _ansible_playbook(), "-v", "-i", "inventory", "--check", "play.yml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    tasks: dict[str, dict[str, object]] = {}
    for block in result.stdout.split("\nTASK [")[1:]:
        name = block.split("]", 1)[0].split(" : ", 1)[-1]
        outcome = re.search(r"^(\w+): \[localhost\](?:: FAILED!)? => (\{.*\})$", block, re.MULTILINE)
        if outcome:  # include_role itself prints no result
            tasks[name] = {**json.loads(outcome[2]), "outcome": outcome[1]}
    assert tasks, result.stdout + result.stderr
    return result, tasks


def test_ini_false_turns_the_firewall_off(tmp_path: Path) -> None:
    result, tasks = _run_role_tasks(tmp_path, "common", "firewall", "common_firewall_enabled=false")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert tasks["Configure the firewall"].get("skip_reason") == "Conditional result was False"
    assert tasks["Enable the firewall"].get("skip_reason") == "Conditional result was False"


def test_ini_false_means_no_self_signed_certificate(tmp_path: Path) -> None:
    result, tasks = _run_role_tasks(tmp_path, "nginx", "tls", "nginx_tls_self_signed=false")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    generate = tasks["Generate a self-signed certificate"]
    assert generate.get("skip_reason") == "Conditional result was False", generate


def test_firewall_without_cap_net_admin_stops_with_one_clear_message(tmp_path: Path) -> None:
    """An LXC/OpenVZ VPS: root without CAP_NET_ADMIN cannot load nftables rules."""
    setpriv = shutil.which("setpriv")
    assert setpriv and shutil.which("nft"), "setpriv (util-linux) and nft (nftables) are needed"
    no_net_admin = [setpriv, "--inh-caps=-net_admin", "--bounding-set=-net_admin", "--"]
    result, tasks = _run_role_tasks(
        tmp_path, "common", "firewall", "common_firewall_enabled=true", prefix=no_net_admin
    )
    assert result.returncode != 0
    failed = [name for name, host in tasks.items() if host["outcome"] == "fatal"]
    assert failed == ["Stop if this host cannot run a firewall"], failed
    message = str(tasks[failed[0]]["msg"])
    assert "CAP_NET_ADMIN" in message and "common_firewall_enabled=false" in message


# -- limits that must agree between code and docs ----------------------------------------------


def test_worker_unit_raises_the_open_file_limit() -> None:
    """The bench holds 9,000 idle sockets per worker; systemd's default soft limit is 1,024."""
    unit = (ROOT / "systemd" / "chatd@.service").read_text()
    limits = re.findall(r"^LimitNOFILE=(\d+)$", unit, re.MULTILINE)
    assert limits and int(limits[0]) >= 9000 + 20 + 100 + 100  # sockets, DB and Redis pools, slack
    assert f"LimitNOFILE={limits[0]}" in (ROOT / "docs" / "operations.md").read_text()


def test_documented_proxy_body_limit_is_the_role_default() -> None:
    defaults = yaml.safe_load((ROLES / "nginx" / "defaults" / "main.yml").read_text())
    size = defaults["nginx_client_max_body_size"]
    overview = (ROOT / "docs" / "protocol.md").read_text().split("## 2.")[0]
    documented = re.findall(r"Ansible\s+deployment's\s+default\s+is\s+`([^`]+)`", overview)
    assert documented == [size]
