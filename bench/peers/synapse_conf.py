"""A minimal Synapse homeserver config for the benchmark: loopback HTTP, the bench's PostgreSQL,
open registration, rate limits out of the way, presence off."""

from __future__ import annotations

import secrets
from pathlib import Path

BIG = {"per_second": 1000000, "burst_count": 1000000}


def _limit(indent: str) -> str:
    return f"\n{indent}per_second: {BIG['per_second']}\n{indent}burst_count: {BIG['burst_count']}"


def write(root: Path, port: int, pg_port: int, pg_password: str) -> Path:
    (root / "media").mkdir(parents=True, exist_ok=True)
    (root / "log.yaml").write_text(
        "version: 1\n"
        "formatters: {precise: {format: '%(asctime)s %(name)s %(levelname)s %(message)s'}}\n"
        "handlers: {file: {class: logging.FileHandler, formatter: precise,"
        f" filename: {root}/homeserver.log}}}}\n"
        "root: {level: WARNING, handlers: [file]}\n"
        "disable_existing_loggers: false\n"
    )
    limits = "\n".join(
        f"{name}:{_limit('  ')}" for name in ("rc_message", "rc_registration", "rc_room_creation")
    )
    nested = {
        "rc_login": ("address", "account", "failed_attempts"),
        "rc_joins": ("local", "remote"),
        "rc_invites": ("per_room", "per_user", "per_issuer"),
    }
    for name, subs in nested.items():
        limits += f"\n{name}:" + "".join(f"\n  {sub}:{_limit('    ')}" for sub in subs)
    conf = root / "homeserver.yaml"
    conf.write_text(
        f"""server_name: "bench.localhost"
pid_file: {root}/homeserver.pid
public_baseurl: http://127.0.0.1:{port}/
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: psycopg2
  args:
    user: chatd
    password: "{pg_password}"
    dbname: synapse
    host: 127.0.0.1
    port: {pg_port}
    cp_min: 5
    cp_max: 20
log_config: {root}/log.yaml
media_store_path: {root}/media
signing_key_path: {root}/signing.key
registration_shared_secret: "{secrets.token_hex(16)}"
macaroon_secret_key: "{secrets.token_hex(16)}"
form_secret: "{secrets.token_hex(16)}"
enable_registration: true
enable_registration_without_verification: true
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
bcrypt_rounds: 4
url_preview_enabled: false
presence:
  enabled: false
{limits}
"""
    )
    return conf
