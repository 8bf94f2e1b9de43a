"""A local single-node Apache Kafka broker (KRaft, combined broker+controller) on 127.0.0.1.

Used by ``fleet kafka up|down|status``, ``make run`` and the test suite. No Docker: the jars
come from Maven Central through ``mvn`` (cached once per version under
``Settings.kafka_cache_dir``) and the broker runs with ``java``.

Layout::

    <kafka_cache_dir>/<version>/pom.xml       copied from core/kafka/pom.xml
    <kafka_cache_dir>/<version>/libs/*.jar    the class path
    <kafka_cache_dir>/<version>/.complete     written last: the jars are complete

    <state_dir>/server.properties             written on every ``up``
    <state_dir>/log4j2.properties             copied from core/kafka/log4j2.properties
    <state_dir>/data/                         log.dirs (meta.properties once formatted)
    <state_dir>/kafka.pid                     pid of the running broker
    <state_dir>/server.log                    broker log (log4j2)
    <state_dir>/kafka.out                     JVM stdout/stderr (crashes, OOM, bad flags)

When ``KAFKA_BOOTSTRAP_SERVERS`` is set an external cluster is used and nothing starts here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from core.config import Settings

if sys.platform != "win32":
    import fcntl

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
T = TypeVar("T")

MIN_JAVA_MAJOR = 17
INSTALL_HINT = "sudo apt-get install openjdk-17-jre-headless maven"
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(?:-[A-Za-z0-9.]+)?$")
_MAVEN_TIMEOUT_S = 900.0
_FORMAT_TIMEOUT_S = 120.0

# Brokers started by this process, so their exit status can be reaped (no zombies that look
# alive to ``os.kill(pid, 0)``).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class KafkaSetupError(Exception):
    """The local broker cannot be set up, started or reached. The message is for users."""


class ExternalKafkaConfigured(KafkaSetupError):
    """``up`` was asked to start a local broker while an external cluster is configured."""


# --------------------------------------------------------------------------- prerequisites


def _java_executable() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("java")


def _java_major_version(java: str) -> int | None:
    """Major version of a ``java`` executable (8 for 1.8.x), or None if it can't be told."""
    try:
        out = subprocess.run(
            [java, "-version"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def check_prerequisites(*, need_maven: bool = True) -> None:
    """Raise :class:`KafkaSetupError` naming every missing tool and how to install it.

    ``need_maven=False`` when the jars are already cached (Maven is only used to fetch them).
    """
    problems: list[str] = []
    java = _java_executable()
    if java is None:
        problems.append(
            f"java (a Java {MIN_JAVA_MAJOR}+ runtime) was not found on PATH (nor in $JAVA_HOME)"
        )
    else:
        major = _java_major_version(java)
        if major is None:
            problems.append(f"could not read the version of {java} (`{java} -version` failed)")
        elif major < MIN_JAVA_MAJOR:
            problems.append(f"{java} is Java {major}; Kafka 4 needs Java {MIN_JAVA_MAJOR} or newer")
    if need_maven and shutil.which("mvn") is None:
        problems.append(
            "mvn (Apache Maven) was not found on PATH; it fetches the Kafka jars from "
            "Maven Central on first use"
        )
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise KafkaSetupError(
            "The local Kafka broker cannot run:\n"
            f"{lines}\n"
            f"Install them (Debian/Ubuntu): {INSTALL_HINT}\n"
            "Or set KAFKA_BOOTSTRAP_SERVERS to use an existing Kafka cluster instead."
        )


# ---------------------------------------------------------------------- Kafka API helpers


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    """aiokafka logs every refused connection at ERROR; while polling that is expected."""
    logger = logging.getLogger("aiokafka")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


async def _describe_cluster(bootstrap: str, timeout_s: float) -> dict[str, Any]:
    timeout_ms = max(1000, int(timeout_s * 1000))
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="fleet-localkafka-probe",
        request_timeout_ms=timeout_ms,
    )
    try:
        await admin.start()
        meta = await admin.describe_cluster()
    finally:
        await admin.close()
    if not meta.get("brokers"):
        raise KafkaSetupError(f"{bootstrap} answered metadata with no brokers")
    return meta


class _BrokerExited(Exception):
    """The broker process died while we waited for it."""


async def _wait_answering(
    bootstrap: str, timeout_s: float, alive: Callable[[], bool] | None = None
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last_error = "no attempt made"
    with _quiet_aiokafka():
        while True:
            if alive is not None and not alive():
                raise _BrokerExited()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise KafkaSetupError(
                    f"Kafka at {bootstrap} did not answer within {timeout_s:.0f} s "
                    f"(last error: {last_error})"
                )
            attempt = min(remaining, 5.0)
            try:
                await asyncio.wait_for(_describe_cluster(bootstrap, attempt), timeout=attempt)
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                name, text = type(exc).__name__, str(exc)
                last_error = text if text.startswith(name) else f"{name}: {text}".rstrip(": ")
            await asyncio.sleep(min(0.3, max(0.0, deadline - loop.time())))


async def wait_until_answering(bootstrap: str, timeout_s: float) -> None:
    """Return once ``bootstrap`` answers a Kafka metadata request listing at least one broker.

    Raises :class:`KafkaSetupError` after ``timeout_s`` seconds.
    """
    await _wait_answering(bootstrap, timeout_s)


async def ensure_topics(
    bootstrap: str,
    topics: dict[str, int],
    *,
    replication_factor: int | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Create the missing topics (name -> partitions) and wait until they have leaders.

    Existing topics are left alone (a topic with fewer partitions than asked is logged, not
    altered), so this is safe to call at every start-up. ``replication_factor`` defaults to
    the number of brokers capped at 3 (1 for the local broker).
    """
    if not topics:
        return
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="fleet-ensure-topics",
        request_timeout_ms=max(1000, int(timeout_s * 1000)),
    )
    await admin.start()
    try:
        existing = {t["topic"]: t for t in await admin.describe_topics()}
        missing = {name: n for name, n in topics.items() if name not in existing}
        for name, wanted in topics.items():
            if name in existing and len(existing[name]["partitions"]) < wanted:
                log.warning(
                    "topic %s has %d partitions, fewer than the %d configured; not altering it",
                    name,
                    len(existing[name]["partitions"]),
                    wanted,
                )
        if missing:
            await _create_topics(admin, missing, replication_factor, timeout_s)
        await _wait_for_leaders(admin, list(topics), timeout_s)
    finally:
        await admin.close()


async def _create_topics(
    admin: AIOKafkaAdminClient,
    topics: dict[str, int],
    replication_factor: int | None,
    timeout_s: float,
) -> None:
    if replication_factor is None:
        brokers = (await admin.describe_cluster())["brokers"]
        replication_factor = max(1, min(3, len(brokers)))
    response = await admin.create_topics(
        [NewTopic(name, partitions, replication_factor) for name, partitions in topics.items()],
        timeout_ms=int(timeout_s * 1000),
    )
    failures: list[str] = []
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 and entry[2] else ""
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        failures.append(f"{name}: {for_code(code).__name__} {message}".rstrip())
    if failures:
        raise KafkaSetupError("Could not create Kafka topics: " + "; ".join(failures))
    log.info("created topics %s", ", ".join(f"{n} ({p} partitions)" for n, p in topics.items()))


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        pending = [
            t["topic"]
            for t in described
            if t["error_code"] != 0
            or not t["partitions"]
            or any(p["leader"] < 0 for p in t["partitions"])
        ]
        if not pending:
            return
        if loop.time() >= deadline:
            raise KafkaSetupError(
                f"Kafka topics have no leader after {timeout_s:.0f} s: {', '.join(pending)}"
            )
        await asyncio.sleep(0.2)


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="localkafka") as pool:
        return pool.submit(asyncio.run, coro).result()


# -------------------------------------------------------------------- process utilities


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so two ``up`` calls (or downloads) don't race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        if sys.platform != "win32":
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if sys.platform != "win32":
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None  # poll() also reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        # A zombie (exited, not yet reaped by its parent) is not running.
        if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _wait_dead(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tail(path: Path, lines: int = 30, start: int = 0) -> str:
    """The last ``lines`` lines of ``path`` written after byte offset ``start``."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            if start > size:  # rolled over since
                start = 0
            handle.seek(max(start, size - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def free_ports(count: int) -> list[int]:
    """Loopback ports the kernel says are free right now (held open together, so distinct):
    for brokers and servers started by tests and benchmarks."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID, URL-safe base64 without padding (22 chars)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # Kafka avoids ids that look like CLI flags
            return cluster_id


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child
    """Linux: SIGTERM the broker when the thread that started it dies (tests only)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _package_file(name: str) -> str:
    return (resources.files("core") / "kafka" / name).read_text(encoding="utf-8")


# ------------------------------------------------------------------------ LocalKafka


@dataclass
class LocalKafka:
    """One local broker: jars in the shared cache, everything else in ``state_dir``.

    ``state_dir`` defaults to ``settings.data_dir / "kafka"``. ``stop_with_parent`` (Linux,
    when started from the main thread) makes the broker exit with the process that started
    it, so a killed test run leaves no JVM behind; leave it off for ``fleet kafka up``, whose
    broker outlives the command.
    """

    settings: Settings
    state_dir: Path = None  # type: ignore[assignment]
    stop_with_parent: bool = False
    # Log sizes when this object last started the broker: error messages show only what
    # that start wrote.
    _log_offsets: dict[Path, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.state_dir is None:
            self.state_dir = self.settings.data_dir / "kafka"
        self.state_dir = Path(self.state_dir).expanduser().absolute()

    # ---- paths and names

    @property
    def version(self) -> str:
        return self.settings.kafka_version

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.settings.kafka_local_port}"

    @property
    def cache_dir(self) -> Path:
        return Path(self.settings.kafka_cache_dir).expanduser().absolute() / self.version

    @property
    def libs_dir(self) -> Path:
        return self.cache_dir / "libs"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "server.log"

    @property
    def out_file(self) -> Path:
        return self.state_dir / "kafka.out"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "kafka.pid"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def properties_file(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.state_dir / "log4j2.properties"

    # ---- jars

    def _jars_cached(self) -> bool:
        marker = self.cache_dir / ".complete"
        if not marker.is_file() or not self.libs_dir.is_dir():
            return False
        names = [n for n in marker.read_text().split() if n]
        return bool(names) and all((self.libs_dir / n).is_file() for n in names)

    def ensure_jars(self, progress: Progress | None = None) -> Path:
        """Fetch the broker's jars with Maven once per version; return the ``libs`` dir."""
        if self._jars_cached():
            return self.libs_dir
        if not _VERSION_RE.match(self.version):
            raise KafkaSetupError(f"Not a Kafka version: {self.version!r} (FLEET_KAFKA_VERSION)")
        say = progress or (lambda _msg: None)
        with _file_lock(self.cache_dir / ".lock"):
            if self._jars_cached():  # another process fetched them while we waited
                return self.libs_dir
            check_prerequisites(need_maven=True)
            say(f"Fetching Apache Kafka {self.version} jars from Maven Central (first run only)")
            self._run_maven()
        return self.libs_dir

    def _run_maven(self) -> None:
        cache = self.cache_dir
        marker = cache / ".complete"
        partial = cache / "libs.partial"
        marker.unlink(missing_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(self.libs_dir, ignore_errors=True)
        (cache / "pom.xml").write_text(
            _package_file("pom.xml").replace("@KAFKA_VERSION@", self.version), encoding="utf-8"
        )
        mvn = shutil.which("mvn") or "mvn"
        cmd = [
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            "-f",
            str(cache / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
            "-DincludeScope=runtime",
        ]
        try:
            result = subprocess.run(
                cmd,
                cwd=cache,
                capture_output=True,
                text=True,
                timeout=_MAVEN_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise KafkaSetupError(
                f"Maven did not finish fetching Kafka {self.version} within "
                f"{_MAVEN_TIMEOUT_S:.0f} s; is Maven Central reachable?"
            ) from exc
        except OSError as exc:
            raise KafkaSetupError(f"Could not run Maven ({mvn}): {exc}") from exc
        jars = sorted(p.name for p in partial.glob("*.jar")) if partial.is_dir() else []
        if result.returncode != 0 or not any(j.startswith("kafka_2.13-") for j in jars):
            output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
            raise KafkaSetupError(
                f"Maven could not fetch org.apache.kafka:kafka_2.13:{self.version} "
                f"(exit code {result.returncode}). Is Maven Central reachable, and does that "
                f"version exist?\nCommand: {' '.join(cmd)}\n{output}"
            )
        partial.rename(self.libs_dir)
        marker.write_text("\n".join(jars) + "\n", encoding="utf-8")

    # ---- config and storage

    def _server_properties(self) -> str:
        s = self.settings
        port, cport = s.kafka_local_port, s.kafka_local_controller_port
        lines = [
            "# Written by core/localkafka.py on every `up`; edits are overwritten.",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{cport}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.data_dir.as_posix()}",
            f"num.partitions={s.topic_partitions}",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            # Telemetry messages may be up to FLEET_INGEST_MAX_DECOMPRESSED_BYTES (8 MiB).
            "message.max.bytes=16777216",
            "replica.fetch.max.bytes=16777216",
            "auto.create.topics.enable=true",
            # After a crash (kill -9) the restarted broker cannot register until the old
            # incarnation's session expires (default 9 s); shorter for a single local node.
            "broker.heartbeat.interval.ms=1000",
            "broker.session.timeout.ms=4000",
        ]
        return "\n".join(lines) + "\n"

    def _write_config(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(self._server_properties(), encoding="utf-8")
        self.log4j_file.write_text(_package_file("log4j2.properties"), encoding="utf-8")

    def _jvm_command(self, libs: Path, java: str, heap: str, main: list[str]) -> list[str]:
        return [
            java,
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            f"-Dkafka.logs.dir={self.state_dir}",
            "-cp",
            f"{libs}{os.sep}*",
            *main,
        ]

    def _format_storage(self, libs: Path, java: str) -> None:
        if (self.data_dir / "meta.properties").is_file():
            return
        cmd = self._jvm_command(
            libs,
            java,
            "256m",
            [
                "kafka.tools.StorageTool",
                "format",
                "-t",
                _new_cluster_id(),
                "-c",
                str(self.properties_file),
            ],
        )
        try:
            result = subprocess.run(
                cmd,
                cwd=self.state_dir,
                capture_output=True,
                text=True,
                timeout=_FORMAT_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise KafkaSetupError(f"Could not format Kafka storage: {exc}") from exc
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
            raise KafkaSetupError(
                f"Formatting Kafka storage in {self.data_dir} failed "
                f"(exit code {result.returncode}):\n{output}"
            )

    # ---- process

    def _looks_like_our_broker(self, pid: int) -> bool:
        if not Path("/proc/self").exists():
            return True  # no /proc (macOS): trust the pid file
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"kafka.Kafka" in args and str(self.properties_file).encode() in args

    def _running_pid(self) -> int | None:
        """The pid of this state dir's broker if it is running; removes a stale pid file."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if _pid_alive(pid) and self._looks_like_our_broker(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def _log_excerpt(self) -> str:
        parts = []
        for path in (self.out_file, self.log_file):
            text = _tail(path, 25, self._log_offsets.get(path, 0)).strip()
            if text:
                parts.append(f"--- last lines of {path} ---\n{text}")
        return "\n".join(parts) if parts else f"(no broker output in {self.state_dir})"

    def _check_ports_free(self) -> None:
        s = self.settings
        for name, port in (
            ("FLEET_KAFKA_LOCAL_PORT", s.kafka_local_port),
            ("FLEET_KAFKA_LOCAL_CONTROLLER_PORT", s.kafka_local_controller_port),
        ):
            if _port_in_use(port):
                raise KafkaSetupError(
                    f"Port {port} on 127.0.0.1 is already in use by another process, so the "
                    f"local Kafka broker ({self.state_dir}) cannot listen there. Stop that "
                    f"process, pick another port with {name}, or set KAFKA_BOOTSTRAP_SERVERS "
                    "to use a broker that is already running."
                )

    def _spawn(self, libs: Path, java: str) -> int:
        cmd = self._jvm_command(
            libs, java, self.settings.kafka_heap, ["kafka.Kafka", str(self.properties_file)]
        )
        self._log_offsets = {p: _file_size(p) for p in (self.out_file, self.log_file)}
        with open(self.out_file, "ab") as out:
            out.write(
                f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode()
            )
            out.flush()
            proc = subprocess.Popen(
                cmd,
                cwd=self.state_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                preexec_fn=_set_parent_death_signal if self._tie_to_parent() else None,
            )
        _CHILDREN[proc.pid] = proc
        self.pid_file.write_text(f"{proc.pid}\n", encoding="utf-8")
        return proc.pid

    def _tie_to_parent(self) -> bool:
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits, so only the main
        # thread (whose end is the end of the process) may use it.
        return (
            self.stop_with_parent
            and sys.platform.startswith("linux")
            and threading.current_thread() is threading.main_thread()
        )

    def _exit_code(self, pid: int) -> str:
        child = _CHILDREN.get(pid)
        if child is None or child.returncode is None:
            return ""
        return f" with exit code {child.returncode}"

    # ---- public API

    def up(self, timeout_s: float = 60.0, progress: Progress | None = None) -> str:
        """Start the broker unless it already runs; return its bootstrap address.

        Raises :class:`ExternalKafkaConfigured` when ``KAFKA_BOOTSTRAP_SERVERS`` is set and
        :class:`KafkaSetupError` when the broker cannot be started or does not answer.
        """
        if not self.settings.kafka_is_local:
            raise ExternalKafkaConfigured(
                "An external Kafka cluster is configured (KAFKA_BOOTSTRAP_SERVERS="
                f"{self.settings.kafka_bootstrap_servers}); not starting a local broker. "
                "Unset it to use the local one."
            )
        say = progress or (lambda _msg: None)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.state_dir / ".lock"):
            self._log_offsets = {}
            pid = self._running_pid()
            if pid is not None:
                say(f"Kafka already running (pid {pid}); checking that it answers")
                self._wait(pid, timeout_s, started=False)
                return self.bootstrap

            check_prerequisites(need_maven=not self._jars_cached())
            java = _java_executable() or "java"
            libs = self.ensure_jars(progress)
            self._check_ports_free()
            self._write_config()
            if not (self.data_dir / "meta.properties").is_file():
                say(f"Formatting Kafka storage in {self.data_dir}")
                self._format_storage(libs, java)
            say(f"Starting Kafka {self.version} on {self.bootstrap}")
            pid = self._spawn(libs, java)
            say(f"Waiting for Kafka (pid {pid}) to answer on {self.bootstrap}")
            self._wait(pid, timeout_s, started=True)
            return self.bootstrap

    def _wait(self, pid: int, timeout_s: float, *, started: bool) -> None:
        try:
            _run_sync(_wait_answering(self.bootstrap, timeout_s, lambda: _pid_alive(pid)))
        except _BrokerExited:
            self.pid_file.unlink(missing_ok=True)
            raise KafkaSetupError(
                f"The Kafka broker (pid {pid}) exited{self._exit_code(pid)} before answering "
                f"on {self.bootstrap}.\n{self._log_excerpt()}"
            ) from None
        except KafkaSetupError as exc:
            if started:  # don't leave a half-started broker behind
                self._stop_pid(pid, 10.0)
            raise KafkaSetupError(
                f"{exc}.\nKafka (pid {pid}, state dir {self.state_dir}) "
                f"{'was stopped' if started else 'is running but not answering'}.\n"
                f"{self._log_excerpt()}"
            ) from None

    def _stop_pid(self, pid: int, timeout_s: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_dead(pid, timeout_s):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_dead(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)

    def down(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s``); True if one ran."""
        if not self.state_dir.is_dir():
            return False
        with _file_lock(self.state_dir / ".lock"):
            pid = self._running_pid()
            if pid is None:
                return False
            self._stop_pid(pid, timeout_s)
            return True

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would (tests use it); no-op if none runs."""
        if not self.state_dir.is_dir():
            return
        with _file_lock(self.state_dir / ".lock"):
            pid = self._running_pid()
            if pid is None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_dead(pid, 10.0)
            self.pid_file.unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        pid = self._running_pid()
        answering = False
        if pid is not None:
            try:
                _run_sync(_wait_answering(self.bootstrap, 3.0))
                answering = True
            except KafkaSetupError:
                answering = False
        return {
            "running": pid is not None,
            "pid": pid,
            "bootstrap": self.bootstrap,
            "answering": answering,
            "version": self.version,
            "state_dir": str(self.state_dir),
            "log": str(self.log_file),
        }
