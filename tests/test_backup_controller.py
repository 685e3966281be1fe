"""The controller's side of backup.yml and restore.yml, run on this machine with Ansible (the
hosts' side runs in molecule): where a relative backup path is looked for, and who may read a
fetched backup. Nothing here connects to a host: the inventory's hosts refuse on loopback."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DUMP = "chatd-20260101T000000Z.dump"


def ansible_playbook() -> str:
    binary = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert binary, "ansible-playbook missing: install the deploy extra (./scripts/bootstrap does)"
    return binary


def env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(ROOT / "ansible" / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_HOST_KEY_CHECKING": "false",
    }


def test_restore_finds_a_relative_backup_path_where_the_operator_runs_it(tmp_path: Path) -> None:
    """The documented command, run from the checkout where backup.yml put the file:
    `restore.yml -e backup_restore_file=backups/<file>.dump` passes the file check and goes on
    to stop the workers (here: a host that refuses, so the run ends there)."""
    checkout = tmp_path / "checkout"
    (checkout / "backups").mkdir(parents=True)
    (checkout / "backups" / DUMP).write_bytes(b"PGDMP and more")
    (checkout / "inventory").write_text(
        "[chatd_db]\ndata ansible_host=127.0.0.1 ansible_port=1\n"
        "[chatd_app]\napp ansible_host=127.0.0.1 ansible_port=1\n[chatd_web]\napp\n"
    )
    playbook = ROOT / "ansible" / "playbooks" / "restore.yml"
    result = subprocess.run(
        [ansible_playbook(), "-i", "inventory", str(playbook), "-e", f"backup_restore_file=backups/{DUMP}"],
        capture_output=True,
        text=True,
        cwd=checkout,
        env=env(),
        timeout=180,
    )
    assert "no such non-empty file on the controller" not in result.stdout, result.stdout
    assert "PLAY [Stop every chatd worker]" in result.stdout, result.stdout
    # ... and a mistyped one still stops before any worker does.
    result = subprocess.run(
        [
            ansible_playbook(),
            "-i",
            "inventory",
            str(playbook),
            "-e",
            "backup_restore_file=backup/nothing.dump",
        ],
        capture_output=True,
        text=True,
        cwd=checkout,
        env=env(),
        timeout=180,
    )
    assert "no such non-empty file on the controller" in result.stdout, result.stdout
    assert "PLAY [Stop every chatd worker]" not in result.stdout, result.stdout


def test_a_fetched_backup_is_readable_by_the_controllers_user_alone(tmp_path: Path) -> None:
    """backup.yml's copy on the controller: 0600 in a 0700 directory, also when the directory
    existed before with wider permissions (the host's side is this machine here)."""
    on_host = tmp_path / "host" / DUMP
    on_host.parent.mkdir()
    on_host.write_bytes(b"PGDMP every message and password hash")
    fetched = tmp_path / "controller" / "backups"
    fetched.mkdir(parents=True, mode=0o755)
    os.chmod(fetched, 0o755)  # noqa: S103  a directory made before, with the permissions of the report
    (tmp_path / "inventory").write_text(
        f"data ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    (tmp_path / "play.yml").write_text(
        "- hosts: data\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.include_role:\n        name: backup\n        tasks_from: fetch\n"
    )
    result = subprocess.run(
        [ansible_playbook(), "-i", "inventory", "play.yml",
         "-e", f"backup_newest={on_host}", "-e", f"backup_fetch_dir={fetched}"],
        capture_output=True, text=True, cwd=tmp_path, env=env(), timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    copy = fetched / DUMP
    assert copy.read_bytes() == on_host.read_bytes()
    assert stat.S_IMODE(fetched.stat().st_mode) == 0o700, oct(fetched.stat().st_mode)
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600, oct(copy.stat().st_mode)
