"""Saved logins: one profile per (server URL, username), so two users on one machine never collide.

The file is `CHATD_CLIENT_CONFIG` or `~/.chatd-client.json`, mode 0600 (it holds bearer tokens).
A profile also keeps the lines typed but not yet acknowledged, so they are resent, with the same
`client_msg_id`, the next time that conversation is opened.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

Profile = dict[str, Any]


class ProfileError(Exception):
    pass


def config_path() -> Path:
    return Path(os.environ.get("CHATD_CLIENT_CONFIG") or Path.home() / ".chatd-client.json")


def _load() -> dict[str, Any]:
    try:
        data = cast(dict[str, Any], json.loads(config_path().read_text()))
    except FileNotFoundError:
        return {"profiles": []}
    except (OSError, ValueError) as exc:
        raise ProfileError(f"cannot read {config_path()}: {exc}") from None
    if "profiles" not in data:  # the first client's format: {url: session}, one user per URL
        data = {"profiles": [{"url": url, **s} for url, s in data.items() if isinstance(s, dict)]}
    return data


def _store(data: dict[str, Any]) -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".chatd-client-")  # created 0600
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Two terminals saving at once must not drop each other's profile."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def find(url: str, username: str | None) -> Profile:
    """The profile for this URL: the named user's, or the only one there is."""
    mine = [p for p in _load()["profiles"] if p.get("url") == url]
    if username:
        name = username.strip().lower()
        for profile in mine:
            if profile.get("username") == name:
                return cast(Profile, profile)
        raise ProfileError(f"{name} is not logged in to {url}")
    if len(mine) == 1:
        return cast(Profile, mine[0])
    if not mine:
        raise ProfileError(f"not logged in to {url}")
    names = ", ".join(sorted(str(p.get("username")) for p in mine))
    raise ProfileError(f"several users are logged in to {url} ({names}): pass --user NAME")


def save(profile: Profile) -> None:
    """Insert or replace the profile with the same URL and username."""
    key = (profile["url"], profile["username"])
    with _locked():
        data = _load()
        data["profiles"] = [p for p in data["profiles"] if (p.get("url"), p.get("username")) != key]
        data["profiles"].append(profile)
        _store(data)


def remove(url: str, username: str) -> None:
    data = _load()
    data["profiles"] = [p for p in data["profiles"] if (p.get("url"), p.get("username")) != (url, username)]
    _store(data)
