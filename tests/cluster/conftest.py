"""Three real Cassandra nodes on 127.0.0.1, 127.0.0.2 and 127.0.0.3, for the cluster tests.

The whole package runs only when INBOXLENS_TEST_CLUSTER=1 (``make test-cluster``): three
JVMs take ~3 GB of memory and about a minute to form a ring, too much for every test run.
Otherwise every test here is skipped at collection, saying so.

``three_nodes`` (module scope) starts the nodes (tests/support/cassandra_node.py) in
temporary directories, each binding its own loopback address, all on one native port and
one storage port found free on all three addresses (not 9042/7000: another node may run
there); 127.0.0.1 is the seed. It returns once every node sees every node up and NORMAL
(``ring_up``), and stops the nodes it started, by their pid files, at teardown.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.cassandra_node import CassandraNode, NodeError

ENABLED = os.environ.get("INBOXLENS_TEST_CLUSTER") == "1"
SKIP_REASON = ("the 3-node Cassandra cluster tests need INBOXLENS_TEST_CLUSTER=1 "
               "(make test-cluster; ~3 GB RAM, a few minutes)")
ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
HERE = Path(__file__).parent.resolve()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)


def _free_on_all(port: int, addresses: Sequence[str]) -> bool:
    for address in addresses:
        with socket.socket() as s:
            try:
                s.bind((address, port))
            except OSError:
                return False
    return True


def free_ports(addresses: Sequence[str] = ADDRESSES) -> tuple[int, int]:
    """A native port and a storage port (and storage + 1, Cassandra's ssl port) free on every address."""
    rng = random.Random()
    for _ in range(200):
        native, storage = rng.randrange(20000, 40000), rng.randrange(40000, 60000)
        if all(_free_on_all(p, addresses) for p in (native, storage, storage + 1)):
            return native, storage
    raise NodeError("no port free on all of " + ", ".join(addresses))


def ring_up(addresses: Sequence[str], port: int, timeout: float = 5.0) -> bool:
    """Every node, asked itself, sees all of ``addresses`` NORMAL in gossip and alive, one schema.

    Alive: a read at consistency ALL of system_distributed (replication factor 3 on
    every node) coordinated by that node answers, which its failure detector allows only
    when every replica is up. Together that is ``nodetool status`` showing UN everywhere.
    One schema: system.local and system.peers name one schema version on every node (a
    node killed with SIGKILL can come back without the last schema changes: the test nodes
    run with cassandra.unsafesystem, so schema tables are not flushed; it pulls them from
    its peers, and until then answers "keyspace ... does not exist").
    """
    from cassandra import ConsistencyLevel, ProtocolVersion
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy
    from cassandra.query import SimpleStatement, dict_factory

    for address in addresses:
        profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([address]),
                                   request_timeout=timeout, row_factory=dict_factory)
        cluster = Cluster([address], port=port, connect_timeout=timeout, control_connection_timeout=timeout,
                          execution_profiles={EXEC_PROFILE_DEFAULT: profile}, protocol_version=ProtocolVersion.V5)
        try:
            session = cluster.connect()
            gossip = {}
            for row in session.execute("SELECT * FROM system_views.gossip_info"):
                status = row.get("status_with_port") or row.get("status") or ""
                gossip[str(row["address"])] = status
            if sorted(a for a, s in gossip.items() if s.startswith("NORMAL")) != sorted(addresses):
                return False
            versions = {r["schema_version"] for r in session.execute("SELECT schema_version FROM system.local")}
            versions |= {r["schema_version"] for r in session.execute("SELECT schema_version FROM system.peers")}
            if len(versions) != 1:
                return False
            session.execute(SimpleStatement("SELECT * FROM system_distributed.repair_history LIMIT 1",
                                            consistency_level=ConsistencyLevel.ALL))
        except Exception:
            return False
        finally:
            cluster.shutdown()
    return True


def wait_ring_up(addresses: Sequence[str], port: int, timeout: float = 180.0) -> float:
    """Seconds until ``ring_up``; NodeError at the deadline."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if ring_up(addresses, port):
            return time.monotonic() - started
        time.sleep(1.0)
    raise NodeError(f"the ring of {', '.join(addresses)} was not up after {timeout:.0f} s")


class DurableNode(CassandraNode):
    """A test node without cassandra.unsafesystem: its schema survives SIGKILL.

    With it (tests/support/cassandra_node.py sets it for speed) schema tables are not
    flushed; a node killed a minute after a keyspace was created came back agreeing on the
    schema version yet without the keyspace's tables ("keyspace ... does not exist",
    UnknownTableException in its log) for more than two minutes.
    """

    def _command(self, java: str, lib: Path) -> list[str]:
        return [a for a in super()._command(java, lib) if not a.startswith("-Dcassandra.unsafesystem=")]


@dataclass
class Cluster3:
    nodes: list[CassandraNode]
    port: int
    root: Path
    start_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(n.contact_point for n in self.nodes)

    def stop_all(self) -> None:
        for node in self.nodes:
            try:
                node.stop()
            except NodeError:
                pass


@pytest.fixture(scope="module")
def three_nodes() -> Iterator[Cluster3]:
    if not ENABLED:
        pytest.skip(SKIP_REASON)
    native, storage = free_ports()
    root = Path(tempfile.mkdtemp(prefix="inboxlens-cluster-"))
    nodes = [DurableNode(root / f"node{i + 1}", address, native, seeds=[ADDRESSES[0]], storage_port=storage,
                           cluster_name="inboxlens-cluster-test") for i, address in enumerate(ADDRESSES)]
    cluster = Cluster3(nodes, native, root)
    started = time.monotonic()
    try:
        for node in nodes:  # one at a time: each joins the ring the one before formed
            node.directory.mkdir(parents=True)
            node.start()
            node.wait_ready(240.0)
        wait_ring_up(ADDRESSES, native)
        cluster.start_seconds = time.monotonic() - started
        yield cluster
    finally:
        cluster.stop_all()
        left = [n.directory for n in nodes if n.pid() is not None]
        if not left:
            shutil.rmtree(root, ignore_errors=True)
        assert not left, f"Cassandra nodes still running from {left}"
