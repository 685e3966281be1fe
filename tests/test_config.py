"""Settings are declared once (config.Settings); the README's table must say the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatd.config import ConfigError, Settings, documented_defaults, redis_urls

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_table() -> dict[str, str | None]:
    text = README.read_text()
    table = text[text.index("## Configuration") :].split("\n\n")[2]
    found: dict[str, str | None] = {}
    known = documented_defaults()
    for row in table.splitlines()[2:]:
        names_cell, defaults_cell = row.split(" | ")[:2]
        names = re.findall(r"`([A-Z0-9_]+)`", names_cell)
        defaults = [d.strip() for d in defaults_cell.strip("| ").split(" / ")]
        full = [names[0]]
        for suffix in names[1:]:  # `CHATD_DB_POOL_MIN` / `_MAX`
            stem = names[0]
            while stem + suffix not in known and "_" in stem:
                stem = stem.rsplit("_", 1)[0]
            full.append(stem + suffix)
        assert len(full) == len(defaults), row
        for name, default in zip(full, defaults, strict=True):
            value = {"(required)": None, "(empty)": ""}.get(default, default.strip("`"))
            found[name] = value
    return found


def test_readme_configuration_table_lists_every_setting_with_its_default() -> None:
    assert _readme_table() == documented_defaults()


def test_defaults_parse_into_settings() -> None:
    settings = Settings.from_env({"CHATD_DATABASE_URL": "postgresql://chatd@localhost/chatd"})
    assert settings.send_queue_frames == 2000 and settings.metrics is True


CLUSTER = {"CHATD_DATABASE_URL": "postgresql://chatd@localhost/chatd", "CHATD_REDIS_CLUSTER": "on"}
TLS = "?ssl_ca_certs=/etc/ssl/chatd/ca.crt&ssl_cert_reqs=required&ssl_check_hostname=true"


def test_redis_cluster_takes_one_node_url_or_a_list_with_or_without_tls() -> None:
    node = Settings.from_env({**CLUSTER, "CHATD_REDIS_URL": "redis://:secret@10.0.0.5:7000/0"})
    assert node.redis_cluster is True and redis_urls(node.redis_url) == ["redis://:secret@10.0.0.5:7000/0"]
    one = Settings.from_env({**CLUSTER, "CHATD_REDIS_URL": f"rediss://:s@10.0.0.5:7000/0{TLS}"})
    assert one.redis_url == f"rediss://:s@10.0.0.5:7000/0{TLS}"
    listed = f"rediss://:s@10.0.0.5:7000/0{TLS}, rediss://:s@10.0.0.6:7000/0{TLS}"
    nodes = redis_urls(Settings.from_env({**CLUSTER, "CHATD_REDIS_URL": listed}).redis_url)
    assert nodes == [f"rediss://:s@10.0.0.5:7000/0{TLS}", f"rediss://:s@10.0.0.6:7000/0{TLS}"]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("redis://10.0.0.5:7000/0,rediss://10.0.0.6:7000/0", "differs from node 1 in its scheme"),
        ("redis://:a@10.0.0.5:7000/0,redis://:b@10.0.0.6:7000/0", "differs from node 1 in its password;"),
        (f"rediss://h1:7000/0{TLS},rediss://h2:7000/0", "differs from node 1 in its query"),
        ("redis://h1:7000/0,redis://h2:7000/1", "in its path"),
        ("redis://h1:7000/0,unix:///run/redis.sock", "node 2 of the list: expected a redis://"),
        ("redis://h1:7000/0,", "node 2 of the list: expected a redis:// or"),
        ("redis://h1:7000/0,redis://h2:99999/0", "node 2 of the list: bad port"),
        ("unix:///run/redis/redis.sock", "with CHATD_REDIS_CLUSTER=on, redis:// or rediss:// URLs"),
    ],
)
def test_redis_cluster_urls_are_checked(value: str, error: str) -> None:
    with pytest.raises(ConfigError, match=f"^CHATD_REDIS_URL: .*{re.escape(error)}") as raised:
        Settings.from_env({**CLUSTER, "CHATD_REDIS_URL": value})
    assert ":a@" not in str(raised.value) and ":b@" not in str(raised.value)  # never the password


def test_a_list_of_redis_nodes_needs_the_cluster_on() -> None:
    env = {**CLUSTER, "CHATD_REDIS_CLUSTER": "off", "CHATD_REDIS_URL": "redis://h1:7000/0,redis://h2:7000/0"}
    with pytest.raises(ConfigError, match=r"^CHATD_REDIS_URL: a list of nodes is for a Redis Cluster"):
        Settings.from_env(env)


def test_the_redis_credential_goes_into_every_node_url(tmp_path: Path) -> None:
    (tmp_path / "redis-password").write_text("r:p@\n")
    env = {**CLUSTER, "CREDENTIALS_DIRECTORY": str(tmp_path)}
    listed = f"rediss://10.0.0.5:7000/0{TLS},rediss://10.0.0.6:7000/0{TLS}"
    nodes = redis_urls(Settings.from_env({**env, "CHATD_REDIS_URL": listed}).redis_url)
    assert nodes == [f"rediss://:r%3Ap%40@10.0.0.{n}:7000/0{TLS}" for n in (5, 6)]
    with pytest.raises(ConfigError, match=r"^CHATD_REDIS_URL: has a password and credential redis-password"):
        Settings.from_env({**env, "CHATD_REDIS_URL": "redis://:x@h1:7000/0,redis://:x@h2:7000/0"})
