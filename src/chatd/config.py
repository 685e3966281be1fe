"""Settings from ``CHATD_*`` environment variables; see docs/configuration in the README."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit


class ConfigError(Exception):
    """A bad or missing setting; the message is one line naming the variable."""


def _bounded(name: str, raw: str, kind: type[int] | type[float], low: float, high: float) -> Any:
    try:
        value = kind(raw)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name}: expected {expected}, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: must be between {low} and {high}, got {value}")
    return value


def _int(name: str, raw: str, low: int, high: int) -> int:
    value: int = _bounded(name, raw, int, low, high)
    return value


def _float(name: str, raw: str, low: float, high: float) -> float:
    value: float = _bounded(name, raw, float, low, high)
    return value


def _url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in schemes or not (parts.hostname or parts.path):
        raise ConfigError(f"{name}: expected a {' or '.join(schemes)} URL, got {raw!r}")
    return raw


def redis_urls(value: str) -> list[str]:
    """CHATD_REDIS_URL's node URLs: one, or (a Redis Cluster's seed nodes) a comma-separated list."""
    return [item.strip() for item in value.split(",")]


def _redis_url(name: str, raw: str) -> str:
    """A redis://, rediss:// or unix:// URL; or several redis(s):// node URLs, comma-separated,
    the same but for their host:port (scheme, user, password, database and options)."""
    urls = redis_urls(raw)
    if len(urls) == 1:
        return _url(name, raw, ("redis", "rediss", "unix"))
    first = urlsplit(urls[0])
    for n, url in enumerate(urls, 1):
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ConfigError(
                f"{name}: node {n} of the list: expected a redis:// or rediss:// URL with a host"
            )
        try:
            parts.port  # noqa: B018  (raises on a bad one)
        except ValueError:
            raise ConfigError(f"{name}: node {n} of the list: bad port") from None
        same = ("scheme", "username", "password", "path", "query")
        differs = [part for part in same if getattr(parts, part) != getattr(first, part)]
        if differs:  # named, not shown: it may be the password
            raise ConfigError(
                f"{name}: node {n} of the list differs from node 1 in its {' and '.join(differs)};"
                " every node URL must be the same but for its host:port"
            )
    return ",".join(urls)


def database_hosts(url: str) -> list[tuple[str, int]]:
    """The hosts of a URL with a host list (``postgresql://u@h1:5432,h2:5432/db``), in order,
    with their ports (default 5432); [] for a URL with one host or a unix socket."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    if "," not in netloc:
        return []
    hosts = []
    for item in netloc.split(","):
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = item.partition(":")
        if not host or not (port.isdigit() or not port) or not 0 < int(port or 5432) < 65536:
            raise ValueError(f"bad host {item!r} in the host list")
        hosts.append((host, int(port or 5432)))
    return hosts


def _database_url(name: str, raw: str) -> str:
    """A postgresql URL; several hosts (a primary and its standbys) are tried in turn."""
    url = _url(name, raw, ("postgresql", "postgres"))
    try:
        database_hosts(url)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return url


def _replica_url(name: str, raw: str) -> str:
    """Empty (no replica), or a postgresql URL like CHATD_DATABASE_URL's."""
    return _database_url(name, raw) if raw else ""


def _cache_dir(name: str, raw: str) -> str:
    if raw and not raw.startswith("/"):
        raise ConfigError(f"{name}: expected an absolute path or nothing, got {raw!r}")
    return raw.rstrip("/") or ("/" if raw else "")


def _switch(name: str, raw: str) -> bool:
    value = raw.lower()
    if value not in ("on", "off"):
        raise ConfigError(f"{name}: expected on or off, got {raw!r}")
    return value == "on"


def _origins(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated web origins (scheme://host[:port]); empty = none besides the same origin."""
    found = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
            raise ConfigError(f"{name}: expected origins like https://chat.example.org, got {item!r}")
        found.append(item.lower())
    return tuple(found)


def _ts_config(name: str, raw: str) -> str:
    """A PostgreSQL text search configuration's name (english, simple, german, ...)."""
    value = raw.lower()
    if not re.match(r"^[a-z][a-z0-9_]{0,62}$", value):
        raise ConfigError(f"{name}: expected a text search configuration name such as english or simple")
    return value


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.lower()
    if value not in choices:
        raise ConfigError(f"{name}: expected {', '.join(choices[:-1])} or {choices[-1]}, got {raw!r}")
    return value


def _push_services(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated ``scheme://host`` patterns; a host may start with ``*.``."""
    found = []
    for item in (part.strip().lower() for part in raw.split(",")):
        if not item:
            continue
        scheme, _, host = item.partition("://")
        bare = host.removeprefix("*.")
        if scheme not in ("http", "https") or not bare or any(c in bare for c in "/:@?#*"):
            raise ConfigError(f"{name}: expected patterns like https://*.example.org, got {item!r}")
        found.append(item)
    return tuple(found)


def _key_file(name: str, raw: str) -> str:
    """A PEM file holding an EC P-256 private key (the VAPID key); empty: none."""
    if not raw:
        return raw
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(Path(raw).read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {raw}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise ConfigError(f"{name}: {raw} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(f"{name}: {raw} is not an EC P-256 key")
    return raw


def _log_level(name: str, raw: str) -> str:
    level = raw.lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{name}: expected debug, info, warning or error, got {raw!r}")
    return level


# systemd credentials (LoadCredential=NAME:...; read from $CREDENTIALS_DIRECTORY/NAME): the
# password each URL setting gets when its URL carries none. Local runs put it in the URL instead.
CREDENTIALS = {
    "database_url": "database-password",
    "database_replica_url": "database-password",  # the same role on the replica
    "redis_url": "redis-password",
}
# The VAPID key (Web Push) as a credential: its file is used as CHATD_PUSH_VAPID_KEY_FILE.
VAPID_CREDENTIAL = "vapid-private-key"
DEFAULT_PUSH_SERVICES = (
    "https://fcm.googleapis.com,https://*.push.services.mozilla.com,"
    "https://*.notify.windows.com,https://web.push.apple.com"
)


def _credential(env: Mapping[str, str], name: str) -> str | None:
    directory = env.get("CREDENTIALS_DIRECTORY", "")
    if not directory:
        return None
    try:
        secret = (Path(directory) / name).read_text().removesuffix("\n")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"credential {name}: cannot read it: {exc.strerror}") from None
    if not secret:
        raise ConfigError(f"credential {name}: the file is empty")
    return secret


def _with_password(name: str, url: str, credential: str, secret: str) -> str:
    """The URL with the credential as its password (percent-encoded: any character works)."""
    parts = urlsplit(url)
    if parts.password is not None:
        raise ConfigError(f"{name}: has a password and credential {credential} is set too; keep one")
    if not parts.hostname:  # unix:///path/redis.sock?db=0: redis-py takes it as a parameter
        query = "&".join(filter(None, [parts.query, f"password={quote(secret, safe='')}"]))
        return f"{url.partition('?')[0]}?{query}"  # urlunsplit would drop the empty host's //
    user, _, host = parts.netloc.rpartition("@")  # the user as written (already percent-encoded)
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(secret, safe='')}@{host}"))


_Parser = Callable[[str, str], Any]


def _setting(default: str | None, parse: _Parser) -> Any:
    """A setting: its default as the variable would spell it (None: required) and its parser."""
    return field(metadata={"default": default, "parse": parse})


@dataclass(frozen=True, slots=True)
class Settings:
    """One line per setting: its name (CHATD_ + upper case), type, default and parser."""

    database_url: str = _setting(None, _database_url)
    # With CHATD_REDIS_CLUSTER=on: one or more (comma-separated) nodes of the cluster, tried in turn
    redis_url: str = _setting("redis://127.0.0.1:6379/0", _redis_url)
    # CHATD_REDIS_URL then names nodes of a Redis Cluster (the others are discovered); off: one Redis
    redis_cluster: bool = _setting("off", _switch)
    log_level: str = _setting("info", _log_level)
    metrics: bool = _setting("on", _switch)
    forwarded_allow_ips: str = _setting("127.0.0.1,::1", lambda n, v: v)
    allowed_origins: tuple[str, ...] = _setting("", _origins)
    # Who may register (docs/protocol.md "POST /v1/register"): the safe default needs an invite.
    registration: str = _setting("invite", lambda n, v: _choice(n, v, ("invite", "open", "closed")))
    # Reads that may go to a streaming replica (storage/replica.py); empty: all to the primary.
    database_replica_url: str = _setting("", _replica_url)
    database_replica_max_lag_s: float = _setting("5", lambda n, v: _float(n, v, 0, 3600))
    db_pool_min: int = _setting("2", lambda n, v: _int(n, v, 1, 200))
    db_pool_max: int = _setting("20", lambda n, v: _int(n, v, 1, 500))
    redis_pool_max: int = _setting("100", lambda n, v: _int(n, v, 2, 10_000))
    redis_send_timeout_s: float = _setting("0.5", lambda n, v: _float(n, v, 0.05, 10))
    max_frame_bytes: int = _setting("65536", lambda n, v: _int(n, v, 1024, 16 * 1024 * 1024))
    max_http_body_bytes: int = _setting("65536", lambda n, v: _int(n, v, 1024, 16 * 1024 * 1024))
    max_message_chars: int = _setting("4000", lambda n, v: _int(n, v, 1, 1_000_000))
    # one uploaded file (attachments.py); nginx's client_max_body_size for uploads must match
    max_upload_bytes: int = _setting("26214400", lambda n, v: _int(n, v, 1024, 2**40))
    # files uploaded and never sent are deleted after this
    upload_unsent_ttl_s: float = _setting("86400", lambda n, v: _float(n, v, 1, 365 * 86400))
    # the per-host download cache nginx serves attachments from (filecache.py); "" = none
    files_cache_dir: str = _setting("", _cache_dir)
    files_cache_max_age_s: float = _setting("604800", lambda n, v: _float(n, v, 1, 365 * 86400))
    files_cache_sweep_s: float = _setting("300", lambda n, v: _float(n, v, 0.1, 86400))
    edit_window_s: int = _setting("86400", lambda n, v: _int(n, v, 0, 100 * 365 * 86400))
    max_group_members: int = _setting("100000", lambda n, v: _int(n, v, 2, 1_000_000))
    user_lookup_rate_limit: int = _setting("30", lambda n, v: _int(n, v, 1, 1_000_000))
    group_rate_limit: int = _setting("30", lambda n, v: _int(n, v, 1, 1_000_000))
    rate_limit_messages: int = _setting("50", lambda n, v: _int(n, v, 1, 1_000_000))
    rate_limit_window_s: int = _setting("10", lambda n, v: _int(n, v, 1, 3600))
    login_rate_limit: int = _setting("10", lambda n, v: _int(n, v, 1, 1_000_000))
    login_address_rate_limit: int = _setting("30", lambda n, v: _int(n, v, 1, 1_000_000))
    register_rate_limit: int = _setting("20", lambda n, v: _int(n, v, 1, 1_000_000))
    auth_timeout_s: float = _setting("10", lambda n, v: _float(n, v, 0.1, 300))
    send_queue_frames: int = _setting("2000", lambda n, v: _int(n, v, 10, 1_000_000))
    # bytes written to a socket that its client has not confirmed reading (wsflow.py)
    ws_window_bytes: int = _setting("262144", lambda n, v: _int(n, v, 16_384, 64 * 1024 * 1024))
    # unacked sends per connection; at most the group-commit batch (messaging.COMMIT_BATCH_MAX)
    send_window: int = _setting("128", lambda n, v: _int(n, v, 1, 256))
    max_connections_per_user: int = _setting("20", lambda n, v: _int(n, v, 1, 100_000))
    gap_fill_delay_s: float = _setting("0.2", lambda n, v: _float(n, v, 0.001, 10))
    drain_timeout_s: float = _setting("10", lambda n, v: _float(n, v, 0, 300))
    receipt_flush_interval_s: float = _setting("10", lambda n, v: _float(n, v, 0.05, 3600))
    receipt_push_interval_ms: int = _setting("1000", lambda n, v: _int(n, v, 10, 60_000))
    readers_list_max: int = _setting("100", lambda n, v: _int(n, v, 2, 100_000))
    search_language: str = _setting("english", _ts_config)
    presence_ttl_s: float = _setting("30", lambda n, v: _float(n, v, 0.5, 3600))
    presence_heartbeat_s: float = _setting("10", lambda n, v: _float(n, v, 0.1, 600))
    presence_sweep_s: float = _setting("2", lambda n, v: _float(n, v, 0.05, 600))
    presence_grace_s: float = _setting("5", lambda n, v: _float(n, v, 0, 600))
    presence_snapshot_max: int = _setting("1000", lambda n, v: _int(n, v, 0, 1_000_000))
    presence_max_group_size: int = _setting("100", lambda n, v: _int(n, v, 2, 1_000_000))
    presence_frame_rate_limit: int = _setting("10", lambda n, v: _int(n, v, 1, 100_000))
    typing_frame_rate_limit: int = _setting("10", lambda n, v: _int(n, v, 1, 100_000))
    argon2_time_cost: int = _setting("3", lambda n, v: _int(n, v, 1, 20))
    argon2_memory_kib: int = _setting("65536", lambda n, v: _int(n, v, 8, 4 * 1024 * 1024))
    argon2_concurrency: int = _setting("1", lambda n, v: _int(n, v, 1, 64))
    argon2_queue: int = _setting("16", lambda n, v: _int(n, v, 0, 100_000))
    # Web Push (pushes.py); no key file and no credential: no pushes
    push_vapid_key_file: str = _setting("", _key_file)
    push_subject: str = _setting("mailto:chatd@localhost", lambda n, v: v)
    push_services: tuple[str, ...] = _setting(DEFAULT_PUSH_SERVICES, _push_services)
    push_interval_s: float = _setting("30", lambda n, v: _float(n, v, 0, 86_400))
    push_away_delay_s: float = _setting("60", lambda n, v: _float(n, v, 0, 86_400))
    push_queue: int = _setting("1000", lambda n, v: _int(n, v, 1, 1_000_000))
    push_concurrency: int = _setting("8", lambda n, v: _int(n, v, 1, 1000))
    push_timeout_s: float = _setting("10", lambda n, v: _float(n, v, 0.1, 120))
    push_ttl_s: int = _setting("86400", lambda n, v: _int(n, v, 0, 2_419_200))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for item in fields(cls):
            name = f"CHATD_{item.name.upper()}"
            default, parse = item.metadata["default"], item.metadata["parse"]
            raw = env.get(name, "").strip() or default
            if raw is None:
                raise ConfigError(f"{name}: required but not set")
            values[item.name] = parse(name, raw)
            credential = CREDENTIALS.get(item.name)
            secret = _credential(env, credential) if credential else None
            if credential and secret is not None and values[item.name]:
                urls = redis_urls(values[item.name]) if item.name == "redis_url" else [values[item.name]]
                values[item.name] = ",".join(_with_password(name, url, credential, secret) for url in urls)
        directory = env.get("CREDENTIALS_DIRECTORY", "")
        if directory and _credential(env, VAPID_CREDENTIAL) is not None:
            path = str(Path(directory) / VAPID_CREDENTIAL)
            values["push_vapid_key_file"] = _key_file(f"credential {VAPID_CREDENTIAL}", path)
        if not values["push_subject"].startswith(("mailto:", "https://")):
            raise ConfigError("CHATD_PUSH_SUBJECT: expected a mailto: or https: URL")
        if values["presence_heartbeat_s"] >= values["presence_ttl_s"]:
            raise ConfigError("CHATD_PRESENCE_HEARTBEAT_S: must be shorter than CHATD_PRESENCE_TTL_S")
        if values["db_pool_min"] > values["db_pool_max"]:
            raise ConfigError("CHATD_DB_POOL_MIN: must not exceed CHATD_DB_POOL_MAX")
        redis = redis_urls(values["redis_url"])
        if values["redis_cluster"] and not redis[0].startswith(("redis://", "rediss://")):
            raise ConfigError("CHATD_REDIS_URL: with CHATD_REDIS_CLUSTER=on, redis:// or rediss:// URLs")
        if len(redis) > 1 and not values["redis_cluster"]:
            raise ConfigError(
                "CHATD_REDIS_URL: a list of nodes is for a Redis Cluster (CHATD_REDIS_CLUSTER=on); one URL"
            )
        return cls(**values)


def documented_defaults() -> dict[str, str | None]:
    """Every variable with its default (None: required), for ``chatd check-config``."""
    return {f"CHATD_{item.name.upper()}": item.metadata["default"] for item in fields(Settings)}


# A bad or missing setting: sysexits' EX_CONFIG, which the unit lists in RestartPreventExitStatus=
# (restarting cannot fix it; docs/operations.md "Readiness and restarts").
EXIT_CONFIG = 78


def settings_or_exit() -> Settings:
    """The settings from the environment, or one line on stderr and exit EX_CONFIG (commands)."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
