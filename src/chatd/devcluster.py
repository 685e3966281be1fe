"""A local Redis Cluster on loopback for tests and the benchmark: 3 primaries and 3 replicas.

    cluster = start_cluster(directory, free_ports(6))   # the first 3 start as primaries
    cluster.seed_url                             # CHATD_REDIS_URL (with CHATD_REDIS_CLUSTER=on)
    cluster.url(port)                            # one node's URL (a list of them: several seeds)
    cluster.primary_for(channel)                 # the port serving a key or channel now
    cluster.kill(port)                           # kill -9 a node (its replica takes over)
    cluster.failover(replica_port)               # a graceful handover (CLUSTER FAILOVER)
    cluster.stop()

Nodes time out after NODE_TIMEOUT_MS, so a dead primary's replica is promoted within about
two seconds.

With ``tls=make_certificates(directory)`` every node speaks TLS only (``port 0``, the port given
is its ``tls-port``; the cluster bus and replication over TLS too) with a certificate for
127.0.0.1 from a CA of its own, and the URLs are ``rediss://...?ssl_ca_certs=CA``: the
production shape of docs/operations.md "Running on a Redis Cluster".
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis.cluster import RedisCluster
from redis.crc import key_slot

from chatd.processes import StackError, alive, free_port, need, run, wait_tcp

NODE_TIMEOUT_MS = 1000
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Tls:
    """A CA, and a certificate and key for 127.0.0.1 it signed (every node uses the same)."""

    ca: Path
    cert: Path
    key: Path


@dataclass
class Cluster:
    directory: Path
    ports: list[int]
    password: str
    nodes: dict[int, int] = field(default_factory=dict)  # port -> pid
    tls: Tls | None = None

    @property
    def seed_url(self) -> str:
        live = [port for port, pid in self.nodes.items() if alive(pid)] or self.ports
        return self.url(live[0])

    def url(self, port: int) -> str:
        """A client's URL for the node on `port` (verifying its certificate, with TLS)."""
        if self.tls is None:
            return f"redis://:{self.password}@{HOST}:{port}/0"
        return f"rediss://:{self.password}@{HOST}:{port}/0?ssl_ca_certs={self.tls.ca}"

    def client(self) -> RedisCluster:
        """A (synchronous) cluster client, for tests and tools."""
        return RedisCluster.from_url(self.seed_url)

    # -- processes -----------------------------------------------------------------------
    def start_node(self, port: int) -> None:
        node_dir = self.directory / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        conf = node_dir / "redis.conf"
        listen = f"port {port}\n"
        if self.tls is not None:  # TLS only: the port given is the TLS port, no plain one
            listen = (
                f"port 0\ntls-port {port}\ntls-cert-file {self.tls.cert}\n"
                f"tls-key-file {self.tls.key}\ntls-ca-cert-file {self.tls.ca}\n"
                "tls-auth-clients no\ntls-cluster yes\ntls-replication yes\n"
            )
        conf.write_text(
            f"bind {HOST}\n{listen}dir {node_dir}\nrequirepass {self.password}\n"
            f'masterauth {self.password}\nsave ""\nappendonly no\nprotected-mode yes\n'
            f"cluster-enabled yes\ncluster-config-file nodes.conf\n"
            f"cluster-node-timeout {NODE_TIMEOUT_MS}\ncluster-replica-validity-factor 0\n"
        )
        conf.chmod(0o600)
        with (node_dir / "redis.log").open("ab") as log:
            proc = subprocess.Popen(
                [need("redis-server", "redis-server"), str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.nodes[port] = proc.pid
        wait_tcp(port)

    def kill(self, port: int) -> None:
        """kill -9 the node on `port` (it stays down: start_node brings it back)."""
        pid = self.nodes.pop(port)
        os.kill(pid, signal.SIGKILL)
        _wait_dead(pid)

    def stop(self) -> None:
        for port in list(self.nodes):
            pid = self.nodes.pop(port)
            if alive(pid):
                os.kill(pid, signal.SIGTERM)
                _wait_dead(pid)

    # -- topology ------------------------------------------------------------------------
    def cli(self, port: int, *args: str) -> str:
        return run(
            [
                need("redis-cli", "redis-server"),
                "--no-auth-warning",
                "-a",
                self.password,
                "-p",
                str(port),
                *(["--tls", "--cacert", str(self.tls.ca)] if self.tls else []),
                *args,
            ],
            f"redis-cli {' '.join(args)}",
        )

    def primary_for(self, name: str) -> int:
        """The port of the primary that owns `name`'s slot now (asked of a live node)."""
        slot = key_slot(name.encode())
        port = next(p for p in self.nodes)
        for line in self.cli(port, "cluster", "nodes").splitlines():
            parts = line.split()
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            for ranges in parts[8:]:
                low, _, high = ranges.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return int(parts[1].split(":")[1].split("@")[0])
        raise LookupError(f"no primary owns slot {slot}")

    def wait_moved(self, name: str, old: int, timeout: float = 30) -> int:
        """Until a primary other than `old` owns `name`'s slot; its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(LookupError, StackError):
                port = self.primary_for(name)
                if port != old:
                    return port
            time.sleep(0.02)
        raise TimeoutError(f"{name} still on {old} after {timeout} s")

    def replica_of(self, primary: int) -> int:
        node_id = self.cli(primary, "cluster", "myid").strip()
        for line in self.cli(primary, "cluster", "nodes").splitlines():
            parts = line.split()
            if parts[3] == node_id and "fail" not in parts[2]:
                return int(parts[1].split(":")[1].split("@")[0])
        raise LookupError(f"no replica of {primary}")

    def failover(self, replica: int) -> None:
        """A graceful handover: the replica on `replica` takes its primary's slots."""
        self.cli(replica, "cluster", "failover")

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every live node says the cluster is ok and agrees on one primary per slot range."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(StackError):
                if all("cluster_state:ok" in self.cli(p, "cluster", "info") for p in self.nodes):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis cluster not ok after {timeout} s; see {self.directory}")
            time.sleep(0.1)


def free_ports(count: int) -> list[int]:
    """Free ports a cluster node can use: its bus listens on the port + 10000 (so <= 55535)."""
    found: list[int] = []
    while len(found) < count:
        port = free_port()
        if port <= 55535 and port not in found and _free(port + 10000):
            found.append(port)
    return found


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def make_certificates(directory: Path) -> Tls:
    """A CA (EC P-256, two days) and a node certificate for IP 127.0.0.1 it signed, in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    tls = Tls(directory / "ca.crt", directory / "node.crt", directory / "node.key")
    openssl = need("openssl", "openssl")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_key, request, extensions = directory / "ca.key", directory / "node.csr", directory / "node.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    subject = ["-subj", "/CN=chatd test CA", "-days", "2"]
    run([openssl, "req", "-x509", *ec, *subject, "-keyout", str(ca_key), "-out", str(tls.ca)], "openssl ca")
    node = ["-subj", "/CN=127.0.0.1", "-keyout", str(tls.key), "-out", str(request)]
    run([openssl, "req", *ec, *node], "openssl node request")
    sign = ["-CA", str(tls.ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2"]
    sign += ["-extfile", str(extensions), "-in", str(request), "-out", str(tls.cert)]
    run([openssl, "x509", "-req", *sign], "openssl sign")
    for key in (ca_key, tls.key):
        key.chmod(0o600)
    return tls


def start_cluster(directory: Path, ports: list[int], password: str, tls: Tls | None = None) -> Cluster:
    """Start len(ports) nodes (a multiple of 2: half primaries, a replica each) and join them;
    with `tls` (make_certificates), TLS-only nodes."""
    cluster = Cluster(directory, ports, password, tls=tls)
    try:
        for port in ports:
            cluster.start_node(port)
        nodes = [f"{HOST}:{port}" for port in ports]
        cluster.cli(ports[0], "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes")
        cluster.wait_ok()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_dead(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
