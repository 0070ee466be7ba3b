"""A real Apache Cassandra node for tests, run from the jars Maven Central serves.

``ensure_jars()`` fetches ``org.apache.cassandra:cassandra-all:<version>`` and its runtime
dependencies with Maven (``dependency:copy-dependencies`` on a generated pom) into
``~/.cache/inboxlens/cassandra/<version>/lib`` when that is missing (INBOXLENS_CASSANDRA_CACHE
moves the root; INBOXLENS_CASSANDRA_VERSION picks another version). Needs ``mvn`` and Java 11
or 17 (JAVA_HOME, else ``java`` on PATH, else /usr/lib/jvm).

``CassandraNode(directory, address, port, seeds)`` writes a cassandra.yaml and logback.xml
(templates in tests/support/cassandra/) into ``directory``, runs
``org.apache.cassandra.service.CassandraDaemon`` with the JVM options Cassandra ships for
Java 17 and a small heap, data and logs (``logs/system.log``) under ``directory``.
``wait_ready(timeout)`` returns once ``SELECT release_version FROM system.local`` answers
on the native port; ``stop()`` sends SIGTERM, then SIGKILL after a bound. A node started
in-process dies with its parent (PR_SET_PDEATHSIG) and is stopped at exit. Each node of a
cluster binds its own loopback address (127.0.0.1, .2, .3) with the same ports; JMX is off.

CLI, for .ci/run and the docs (``start`` leaves the node running in the background, pid in
``D/cassandra.pid``, and prints its contact point ``address:port`` once it is ready)::

    python -m tests.support.cassandra_node fetch
    python -m tests.support.cassandra_node start --dir D [--address 127.0.0.1] [--port 9042] [--seeds A,B]
    python -m tests.support.cassandra_node status --dir D
    python -m tests.support.cassandra_node stop --dir D
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import fcntl
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

VERSION = os.environ.get("INBOXLENS_CASSANDRA_VERSION", "5.0.9")
CACHE = Path(os.environ.get("INBOXLENS_CASSANDRA_CACHE", Path.home() / ".cache" / "inboxlens" / "cassandra"))
TEMPLATES = Path(__file__).with_name("cassandra")
MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"
HEAP = "512m"
FETCH_TIMEOUT = 1800.0
STOP_TIMEOUT = 30.0
SUPPORTED_JAVA = (11, 17)

# conf/jvm17-server.options and conf/jvm-server.options of Cassandra 5.0, less what only
# costs a test node time or memory (AlwaysPreTouch, a 16m G1 region size), plus
# ExitOnOutOfMemoryError (Cassandra's startup check asks for it).
JVM_OPTIONS = (
    "-ea", "-XX:+ExitOnOutOfMemoryError", "-da:net.openhft...", "-Xss256k", "-XX:+UseThreadPriorities", "-XX:+UseTLAB",
    "-XX:+ResizeTLAB", "-XX:+PerfDisableSharedMem", "-Djava.net.preferIPv4Stack=true",
    "-XX:+UseG1GC", "-XX:+ParallelRefProcEnabled", "-XX:MaxTenuringThreshold=1",
    "-XX:G1RSetUpdatingPauseTimePercent=5", "-XX:MaxGCPauseMillis=300",
    "-XX:InitiatingHeapOccupancyPercent=70", "-Djdk.attach.allowAttachSelf=true",
    *(f"--add-exports={m}=ALL-UNNAMED" for m in (
        "java.base/jdk.internal.misc", "java.management.rmi/com.sun.jmx.remote.internal.rmi",
        "java.rmi/sun.rmi.registry", "java.rmi/sun.rmi.server", "java.sql/java.sql",
        "java.base/java.lang.ref", "jdk.unsupported/sun.misc", "jdk.compiler/com.sun.tools.javac.file",
        "jdk.attach/sun.tools.attach")),
    *(f"--add-opens={m}=ALL-UNNAMED" for m in (
        "java.base/java.lang.module", "java.base/jdk.internal.loader", "java.base/jdk.internal.ref",
        "java.base/jdk.internal.reflect", "java.base/jdk.internal.math", "java.base/jdk.internal.module",
        "java.base/jdk.internal.util.jar", "jdk.management/com.sun.management.internal",
        "java.base/sun.nio.ch", "java.base/java.io", "java.base/java.lang.reflect",
        "jdk.compiler/com.sun.tools.javac", "java.base/java.lang", "java.base/java.util")),
    "-Dio.netty.tryReflectionSetAccessible=true", "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
)

# Startup shortcuts for a throw-away node (see Cassandra's CassandraRelevantProperties).
TEST_PROPERTIES = {
    "cassandra-foreground": "yes",
    "cassandra.skip_wait_for_gossip_to_settle": "0",
    "cassandra.ring_delay_ms": "1000",
    "cassandra.unsafesystem": "true",
    "cassandra.superuser_setup_delay_ms": "0",
    "cassandra.available_processors": str(min(os.cpu_count() or 2, 2)),
}

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.inboxlens</groupId><artifactId>cassandra-node</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies><dependency><groupId>org.apache.cassandra</groupId>
    <artifactId>cassandra-all</artifactId><version>{version}</version></dependency></dependencies>
  <build><plugins><plugin><groupId>org.apache.maven.plugins</groupId>
    <artifactId>maven-dependency-plugin</artifactId><version>3.6.1</version></plugin></plugins></build>
</project>
"""


class NodeError(Exception):
    """The node could not be fetched, started or reached; the message says why."""


def ensure_jars(version: str = VERSION) -> Path:
    """The lib directory holding cassandra-all and its runtime dependencies, fetched if missing."""
    root = CACHE / version
    lib, done = root / "lib", root / "lib.complete"
    if done.exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise NodeError("Maven (mvn) is needed to fetch Cassandra from Maven Central: apt-get install maven")
    find_java()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching the same version
        if not done.exists():
            _fetch(mvn, root, version)
    return lib


def _fetch(mvn: str, root: Path, version: str) -> None:
    partial = root / "lib.partial"
    shutil.rmtree(partial, ignore_errors=True)
    (root / "pom.xml").write_text(POM.format(version=version))
    cmd = [mvn, "-B", "-q", "-f", str(root / "pom.xml"), "dependency:copy-dependencies",
           f"-DoutputDirectory={partial}", "-DincludeScope=runtime"]
    try:
        result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=FETCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise NodeError(f"{' '.join(cmd)} took more than {FETCH_TIMEOUT:.0f} s") from None
    if result.returncode != 0:
        raise NodeError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    shutil.rmtree(root / "lib", ignore_errors=True)
    partial.rename(root / "lib")
    (root / "lib.complete").write_text(f"cassandra-all {version}\n")


def java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], check=False, capture_output=True, text=True, timeout=60).stderr
    m = re.search(r'version "(?:1\.)?(\d+)', out)
    return int(m.group(1)) if m else 0


def find_java() -> str:
    """A Java that Cassandra 5.0 runs on (11 or 17): JAVA_HOME's, PATH's, or one in /usr/lib/jvm."""
    home = os.environ.get("JAVA_HOME")
    candidates = [f"{home}/bin/java"] if home else []
    candidates += [shutil.which("java") or ""] + sorted(str(p) for p in Path("/usr/lib/jvm").glob("*/bin/java"))
    for java in dict.fromkeys(c for c in candidates if c and os.access(c, os.X_OK)):
        if java_major(java) in SUPPORTED_JAVA:
            return java
    raise NodeError(f"Cassandra needs Java {' or '.join(map(str, SUPPORTED_JAVA))}: "
                    "apt-get install openjdk-17-jre-headless, or set JAVA_HOME")


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


class CassandraNode:
    """One Cassandra process whose configuration, data, logs and pid file live in ``directory``."""

    def __init__(self, directory: Path | str, address: str = "127.0.0.1", port: int = 9042,
                 seeds: Sequence[str] = (), storage_port: int = 7000, cluster_name: str = "inboxlens-test",
                 version: str = VERSION) -> None:
        self.directory, self.address, self.port = Path(directory).resolve(), address, port
        self.seeds, self.storage_port = tuple(seeds) or (address,), storage_port
        self.cluster_name, self.version = cluster_name, version
        self.pid_file = self.directory / "cassandra.pid"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def contact_point(self) -> str:
        return f"{self.address}:{self.port}"

    def start(self, background: bool = False) -> None:
        """Starts the JVM; in the background it outlives us, else it dies with this process."""
        if self.pid() is not None:
            raise NodeError(f"a node already runs from {self.directory} (pid {self.pid()})")
        lib, java = ensure_jars(self.version), find_java()
        self._configure()
        die = None if background else _die_with_parent  # the child only calls prctl, resolved before fork
        with open(self.directory / "logs" / "stdout.log", "ab") as log:
            self._proc = subprocess.Popen(self._command(java, lib), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          cwd=self.directory, start_new_session=True, preexec_fn=die)  # noqa: PLW1509
        self.pid_file.write_text(f"{self._proc.pid}\n")
        if not background:
            atexit.register(self.stop)

    def _configure(self) -> None:
        for sub in ("data", "logs", "triggers"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        values = {"cluster_name": self.cluster_name, "address": self.address, "dir": str(self.directory),
                  "seeds": ",".join(f"{s}:{self.storage_port}" for s in self.seeds),
                  "storage_port": self.storage_port, "ssl_storage_port": self.storage_port + 1,
                  "native_port": self.port}
        template = string.Template((TEMPLATES / "cassandra.yaml.in").read_text())
        (self.directory / "cassandra.yaml").write_text(template.substitute(values))
        shutil.copyfile(TEMPLATES / "logback.xml", self.directory / "logback.xml")

    def _command(self, java: str, lib: Path) -> list[str]:
        properties = {**TEST_PROPERTIES, "cassandra.config": (self.directory / "cassandra.yaml").as_uri(),
                      "cassandra.storagedir": str(self.directory / "data"),
                      "cassandra.logdir": str(self.directory / "logs"),
                      "cassandra.triggers_dir": str(self.directory / "triggers"),
                      "logback.configurationFile": str(self.directory / "logback.xml")}
        jamm = sorted(lib.glob("jamm-*.jar"))  # Cassandra's launcher loads jamm as an agent too
        return [java, *JVM_OPTIONS, f"-Xms{HEAP}", f"-Xmx{HEAP}", "-XX:MaxDirectMemorySize=256m",
                *(f"-javaagent:{j}" for j in jamm[-1:]), *(f"-D{k}={v}" for k, v in properties.items()),
                "-cp", f"{lib}/*", MAIN_CLASS]

    def pid(self) -> int | None:
        """The pid of this directory's running node, or None."""
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        try:
            pid = int(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if MAIN_CLASS.encode() in cmdline and str(self.directory).encode() in cmdline else None

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Returns once the native port answers a query; raises NodeError at the deadline or if the node died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise NodeError(f"Cassandra at {self.directory} exited before it was ready:\n{self.log_tail()}")
            left = deadline - time.monotonic()
            if _port_open(self.address, self.port) and self._query_ok(min(10.0, max(1.0, left))):
                return
            time.sleep(0.5)
        raise NodeError(f"Cassandra at {self.contact_point} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def _query_ok(self, timeout: float) -> bool:
        from cassandra import DriverException
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
        from cassandra.connection import ConnectionException
        from cassandra.policies import WhiteListRoundRobinPolicy
        profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([self.address]),
                                   request_timeout=timeout)
        cluster = Cluster([self.address], port=self.port, connect_timeout=timeout,
                          control_connection_timeout=timeout, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
        try:
            row = cluster.connect().execute("SELECT release_version FROM system.local").one()
            return row is not None
        except (NoHostAvailable, DriverException, ConnectionException, OSError):
            return False  # not ready yet
        finally:
            cluster.shutdown()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL if it still runs after ``timeout`` seconds; waits until it is gone."""
        pid = self.pid()
        if pid is not None:
            _signal(pid, signal.SIGTERM)
            if not self._wait_gone(pid, timeout):
                _signal(pid, signal.SIGKILL)
                if not self._wait_gone(pid, 10.0):
                    raise NodeError(f"Cassandra pid {pid} survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None if self._proc is not None else not _alive(pid):
                return True
            time.sleep(0.1)
        return False

    def rss_bytes(self) -> int | None:
        pid = self.pid()
        if pid is None:
            return None
        m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
        return int(m.group(1)) * 1024 if m else None

    def log_tail(self, lines: int = 30) -> str:
        texts = []
        for name in ("system.log", "stdout.log"):
            path = self.directory / "logs" / name
            if path.exists():
                texts.append(f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(texts)


def _port_open(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=1.0).close()
        return True
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.cassandra_node", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("fetch", "start", "stop", "status"))
    parser.add_argument("--dir", type=Path, default=Path("cassandra-node"))
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9042)
    parser.add_argument("--seeds", default="", help="comma-separated seed addresses (default: --address)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    args = parser.parse_args(argv)
    node = CassandraNode(args.dir, args.address, args.port, [s for s in args.seeds.split(",") if s])
    try:
        if args.command == "fetch":
            print(ensure_jars())
        elif args.command == "start":
            node.start(background=True)
            try:
                node.wait_ready(args.timeout)
            except NodeError:
                node.stop()
                raise
            print(node.contact_point)
        elif args.command == "stop":
            node.stop()
        else:
            pid = node.pid()
            print(f"running pid {pid} at {node.contact_point}" if pid else "stopped")
            return 0 if pid else 3
    except NodeError as e:
        print(f"cassandra_node: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
