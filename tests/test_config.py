"""Settings are declared once (config.Settings); the README's table must say the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatd.config import ConfigError, Settings, documented_defaults

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


def test_redis_cluster_takes_one_plain_node_url() -> None:
    env = {"CHATD_DATABASE_URL": "postgresql://chatd@localhost/chatd", "CHATD_REDIS_CLUSTER": "on"}
    node = Settings.from_env({**env, "CHATD_REDIS_URL": "redis://:secret@10.0.0.5:7000/0"})
    assert node.redis_cluster is True
    with pytest.raises(ConfigError, match="CHATD_REDIS_URL"):
        Settings.from_env({**env, "CHATD_REDIS_URL": "rediss://10.0.0.5:7000/0"})
