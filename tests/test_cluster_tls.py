"""chatd on a Redis Cluster that speaks TLS only, named by a list of seed nodes
(CHATD_REDIS_CLUSTER=on, CHATD_REDIS_URL=rediss://...,rediss://...; docs/operations.md "Running
on a Redis Cluster").

The test's own 3+3 cluster (devcluster.py with TLS: no plain port, a CA and a certificate for
127.0.0.1 made in the test's directory). Workers get a URL list whose first node is down: they
start from the next one, and a message reaches members on the sending worker and on another one
live, which goes through every primary's SSUBSCRIBE connection (cluster_broker.py): over TLS,
verified against the CA, or not at all.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from chatd.devcluster import HOST, Cluster, free_ports, make_certificates, start_cluster
from chatd.processes import free_port
from tests.conftest import Worker
from tests.helpers import Api, Ws

PASSWORD = "tls-test"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("cluster-tls")
    found = start_cluster(directory / "redis", free_ports(6), PASSWORD, make_certificates(directory / "tls"))
    try:
        yield found
    finally:
        found.stop()


async def test_a_message_is_delivered_live_over_tls_with_a_dead_first_seed(
    cluster: Cluster, spawn_worker: Callable[..., Worker]
) -> None:
    seeds = [cluster.url(free_port()), cluster.url(cluster.ports[1])]  # nothing listens on the first
    env = {"CHATD_REDIS_URL": ",".join(seeds), "CHATD_REDIS_CLUSTER": "on"}
    a, b = Api(spawn_worker(**env).url), Api(spawn_worker(**env).url)
    owner, m1, m2 = await a.user(), await a.user(), await a.user()
    cid = await a.group(owner, [m1, m2])
    sending = await Ws.connect(a.base_url, owner.token)
    members = [
        await Ws.connect(a.base_url, m1.token),  # on the sending worker
        await Ws.connect(b.base_url, m2.token),  # on the other one
        await Ws.connect(b.base_url, owner.token),  # the sender's other device
    ]
    for n in range(1, 4):
        reply = await sending.send(cid, f"over tls {n}")
        assert reply["type"] == "ack", reply
        for ws in members:
            frames = await ws.wait_seq(cid, reply["seq"], timeout=5)
            assert frames[-1]["body"] == f"over tls {n}"
    for api in (a, b):
        assert (await api.call("GET", "/readyz")).status_code == 200
        await api.http.aclose()
    for ws in [sending, *members]:
        await ws.close()


async def test_the_nodes_take_tls_only_and_a_certificate_from_their_ca(cluster: Cluster) -> None:
    port = cluster.ports[0]
    assert cluster.tls is not None
    trusted = aioredis.Redis(
        host=HOST, port=port, password=PASSWORD, ssl=True, ssl_ca_certs=str(cluster.tls.ca)
    )
    assert await trusted.ping()
    await trusted.aclose()
    plain = aioredis.Redis(host=HOST, port=port, password=PASSWORD, socket_timeout=2)
    with pytest.raises(redis.exceptions.ConnectionError):
        await plain.ping()
    await plain.aclose()
    system_cas = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    untrusted = aioredis.Redis(host=HOST, port=port, password=PASSWORD, ssl=True, ssl_ca_certs=system_cas)
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
        await untrusted.ping()
    await untrusted.aclose()
