"""The picture of imports has one direction (issue 13), read from the source with `ast`.

Top to bottom: entry points (server, cli, app) -> transports (ws, http_api) -> the sessions
layer -> runtime (the services' container, imported by transports as a type) -> services ->
the hub (fanout, topics) -> storage, the hub reaching Redis only through the broker seam
(broker.py, issue 25). Every import counts, including those under `TYPE_CHECKING` and inside
functions: a cycle of type-only imports is still a cycle in the design.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

TRANSPORTS = {
    "chatd.ws",
    "chatd.http_api",
    "chatd.http_request",
    "chatd.http_accounts",
    "chatd.http_files",
    "chatd.http_notify",
    "chatd.wire",
}
ABOVE_TRANSPORTS = {"chatd.app", "chatd.server", "chatd.cli", "chatd.admin_cli", "chatd.__main__"}
HUB = {"chatd.fanout", "chatd.topics", "chatd.notices"}
# The seam under the hub: the interface, and the brokers behind it (Redis pub/sub with its two
# publish queues, a Redis Cluster's sharded pub/sub over the same queues, and the in-memory one
# for tests). The hub sees only the interface.
BROKER_SEAM = "chatd.broker"
BROKERS = {
    "chatd.redis_broker",
    "chatd.cluster_broker",
    "chatd.publishing",
    "chatd.subscribing",
    "chatd.outbox",
    "chatd.ephemeral",
    "chatd.memory_broker",
}
# Who picks the broker: the runtime wires a Redis one (by CHATD_REDIS_CLUSTER); the in-memory
# one is for tests only.
BROKER_WIRING = {
    "chatd.redis_broker": {"chatd.runtime"},
    "chatd.cluster_broker": {"chatd.runtime"},
    "chatd.memory_broker": set(),
}
# What a broker may use: the plain helpers (no hub, no service, no storage).
BROKER_MAY_IMPORT = {"chatd.metrics", "chatd.logs", "chatd.tasks"}
# The modules that may import redis: the Redis brokers (fan-out), the runtime that makes the
# clients, the key names' home (keyspace), the modules that keep their own Redis scripts or pool
# metrics, or tell a Redis error apart (storage.is_unavailable, `chatd serve`).
# Never the hub, the sessions or the transports.
REDIS_USERS = {
    "chatd.redis_broker",
    "chatd.cluster_broker",
    "chatd.publishing",
    "chatd.keyspace",
    "chatd.outbox",
    "chatd.ephemeral",
    "chatd.runtime",
    "chatd.presence",
    "chatd.conncap",
    "chatd.readstate",
    "chatd.ratelimit",
    "chatd.pushes",
    "chatd.sampler",
    "chatd.storage",
    "chatd.cli",
}
SERVICES = {
    "chatd.accounts",
    "chatd.admin",
    "chatd.messaging",
    "chatd.conversations",
    "chatd.attachments",
    "chatd.filecache",
    "chatd.amends",
    "chatd.receipts",
    "chatd.confirms",
    "chatd.presence",
    "chatd.readstate",
    "chatd.readstate_lua",
    "chatd.presence_lua",
    "chatd.conncap",
    "chatd.ratelimit",
    "chatd.notify",
    "chatd.pushes",
    "chatd.webpush",
    "chatd.search",
}
# The local-run tools and the terminal client ship inside the package, their dependencies in
# extras (`devstack`, `client`); they are not layers of the daemon and not checked.
TOOLS = (
    "chatd.client",
    "chatd.devstack",
    "chatd.devcluster",
    "chatd.devnginx",
    "chatd.devpostgres",
    "chatd.processes",
)
# What storage may use from outside itself.
STORAGE_MAY_IMPORT = {"chatd.errors", "chatd.config"}
# SQL outside storage/: none (the migration runner's SQL is in storage/schema.py). The local-run
# tools above (devstack creates the local roles with psql) are not the daemon.
SQL_ALLOWED: set[str] = set()
SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX|FUNCTION)"
    r"|ALTER\s+TABLE|DROP\s+TABLE|FOR\s+UPDATE|ON\s+CONFLICT)\b",
    re.DOTALL,
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, ast.Module]:
    found = {}
    for path in sorted((root / "chatd").rglob("*.py")):
        name = module_name(path, root)
        if not any(name == tool or name.startswith(tool + ".") for tool in TOOLS):
            found[name] = ast.parse(path.read_text(), str(path))
    return found


def imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The chatd modules `name` imports (a `from pkg import mod` names the module)."""
    found: set[str] = set()
    package = name if any(m.startswith(name + ".") for m in known) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return {m for m in found if m in known and m != name}


def imports_package(tree: ast.Module, package: str) -> bool:
    """Whether `tree` imports `package` or a module of it (absolute imports only)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        if any(name == package or name.startswith(package + ".") for name in names):
            return True
    return False


def graph(root: Path) -> dict[str, set[str]]:
    trees = modules(root)
    known = set(trees)
    return {name: imports(name, tree, known) for name, tree in trees.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def violations(root: Path) -> Iterator[str]:
    edges = graph(root)
    for component in cycles(edges):
        yield f"import cycle: {' <-> '.join(component)}"
    for name, targets in sorted(edges.items()):
        storage = name == "chatd.storage" or name.startswith("chatd.storage.")
        for target in sorted(targets):
            target_storage = target == "chatd.storage" or target.startswith("chatd.storage.")
            if storage and not target_storage and target not in STORAGE_MAY_IMPORT:
                yield f"storage imports {target}: {name}"
            if name in HUB and (target in SERVICES or target.startswith("chatd.sessions")):
                yield f"the hub imports a service: {name} -> {target}"
            upper = TRANSPORTS | ABOVE_TRANSPORTS | {"chatd.runtime"}
            if name in HUB and target in upper:
                yield f"the hub imports upward: {name} -> {target}"
            if (
                name in SERVICES or name.startswith("chatd.sessions")
            ) and target in TRANSPORTS | ABOVE_TRANSPORTS:
                yield f"a service imports a transport: {name} -> {target}"
            if name in TRANSPORTS and target_storage:
                yield f"a transport imports storage: {name} -> {target}"
            if name in BROKERS | {BROKER_SEAM} and target not in BROKERS | {BROKER_SEAM} | BROKER_MAY_IMPORT:
                yield f"a broker imports above or beside it: {name} -> {target}"
            if target in BROKERS and name not in BROKERS and name not in BROKER_WIRING.get(target, ()):
                yield f"a broker is used past the seam: {name} -> {target}"


def redis_imports(root: Path) -> Iterator[str]:
    """Redis stays below the broker seam, but for the modules listed in REDIS_USERS."""
    for name, tree in modules(root).items():
        if name not in REDIS_USERS and imports_package(tree, "redis"):
            yield f"{name} imports redis"


def transport_storage_names(root: Path) -> Iterator[str]:
    """Transports may take `is_unavailable` from chatd.storage (until it moves to errors), and
    nothing else."""
    for name, tree in modules(root).items():
        if name not in TRANSPORTS:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chatd.storage"):
                for alias in node.names:
                    if alias.name != "is_unavailable":
                        yield f"{name} imports {node.module}.{alias.name}"


def stores_reached_from_above(root: Path) -> Iterator[str]:
    """Transports and sessions reach storage only through services: no `.stores` anywhere."""
    for name, tree in modules(root).items():
        if name not in TRANSPORTS and not name.startswith("chatd.sessions"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "stores":
                yield f"{name}:{node.lineno} uses .stores"


def sql_outside_storage(root: Path) -> Iterator[str]:
    for name, tree in modules(root).items():
        if name.startswith("chatd.storage") or name in SQL_ALLOWED:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                yield f"{name}:{node.lineno}: {node.value[:60]!r}"


def test_imports_point_one_way() -> None:
    found = [v for v in violations(SRC) if "a transport imports storage" not in v]
    found += list(transport_storage_names(SRC))
    found += list(stores_reached_from_above(SRC))
    assert found == []


def test_redis_only_below_the_broker_seam() -> None:
    assert list(redis_imports(SRC)) == []
    assert not REDIS_USERS & (HUB | {BROKER_SEAM, "chatd.memory_broker"} | TRANSPORTS)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import redis.asyncio as aioredis", True),
        ("import redis", True),
        ("from redis.exceptions import RedisError", True),
        ("def f():\n    from redis import asyncio", True),
        ("import redisx\nfrom .redis import x\nfrom chatd import redis_broker", False),
    ],
)
def test_redis_import_finder(source: str, expected: bool) -> None:
    assert imports_package(ast.parse(source), "redis") is expected


def test_no_sql_outside_storage() -> None:
    assert list(sql_outside_storage(SRC)) == []


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_cycle_finder(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_sql_pattern() -> None:
    assert SQL.search("SELECT id FROM messages WHERE x = $1")
    assert SQL.search("INSERT INTO t (a) VALUES ($1)")
    assert not SQL.search("select the conversation you want")  # prose is not SQL
