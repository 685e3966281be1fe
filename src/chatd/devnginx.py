"""nginx for the local stack: the production site (nginx/chatd.conf.j2) rendered with the
stack's values, inside a minimal nginx.conf of the stack's own."""

from __future__ import annotations

import os
from pathlib import Path

import jinja2


def _bool(value: object) -> bool:
    """Ansible's `bool` filter, which the site template uses for values from INI inventories."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("yes", "on", "1", "true", "y")


def nginx_template() -> jinja2.Template:
    here = Path(__file__).resolve().parent
    for directory in (here / "nginx", here.parent.parent / "nginx"):
        if (directory / "chatd.conf.j2").exists():
            env = jinja2.Environment(loader=jinja2.FileSystemLoader(directory), autoescape=False)  # noqa: S701
            env.filters["bool"] = _bool
            return env.get_template("chatd.conf.j2")
    raise FileNotFoundError("nginx/chatd.conf.j2 not found")


def web_root() -> Path | None:
    """The web app's files (web/app in a checkout), served by nginx at `/`."""
    found = Path(__file__).resolve().parent.parent.parent / "web" / "app"
    return found if (found / "index.html").exists() else None


def write_config(root: Path, site_vars: dict[str, object], worker_connections: int) -> list[str]:
    """Write the site and nginx.conf under `root`/nginx; return nginx's arguments for them."""
    nginx = root / "nginx"
    (nginx / "chatd.conf").write_text(nginx_template().render(**site_vars))
    tmp = nginx / "tmp"
    user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
    (nginx / "nginx.conf").write_text(
        f"{user}worker_processes 2;\npid {nginx / 'nginx.pid'};\n"
        f"error_log {root / 'logs' / 'nginx-error.log'} warn;\n"
        f"worker_rlimit_nofile 20000;\nevents {{ worker_connections {worker_connections}; }}\n"
        "http {\n"
        f"  client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n"
        f"  fastcgi_temp_path {tmp}/fastcgi;\n  uwsgi_temp_path {tmp}/uwsgi;\n"
        f"  scgi_temp_path {tmp}/scgi;\n  include {nginx / 'chatd.conf'};\n}}\n"
    )
    return ["-p", str(nginx), "-c", str(nginx / "nginx.conf"), "-e", str(root / "logs" / "nginx-error.log")]
