"""Processes under test: start pinned, wait until they answer, read their memory and CPU from /proc."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
PAGE_KB: Final = os.sysconf("SC_PAGE_SIZE") // 1024
STOP_TIMEOUT_S: Final = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_kb(pid: int) -> int:
    """Resident set size of one process in KiB (0 if it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def raise_group_priority(pid: int | str = "self") -> None:
    """Give `pid`'s scheduler autogroup the niceness this process runs at (BENCH_NICE).

    With autogroups (Linux's default), a process's nice value only ranks it inside its own
    session; between sessions, the group's niceness counts. Needs root to lower it; a no-op
    when niceness is 0 or the kernel has no autogroups.
    """
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    if niceness == 0:
        return
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(niceness))


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


@dataclass
class ServerProcess:
    """A proxy under test, started through `taskset` so its whole tree stays on one core."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    argv: list[str] = field(default_factory=list)

    def tree(self) -> list[int]:
        return descendants(self.process.pid)

    def rss_mb(self) -> float:
        return sum(rss_kb(pid) for pid in self.tree()) / 1024

    def rss_breakdown_mb(self) -> dict[str, float]:
        """RSS of the serving worker and of the rest of the tree (supervisor, admin plane)."""
        worker = self.worker_pid()
        rest = sum(rss_kb(pid) for pid in self.tree() if pid != worker)
        return {"worker": round(rss_kb(worker) / 1024, 1), "others": round(rest / 1024, 1)}

    def worker_pid(self) -> int:
        """The process that serves requests: the largest one in the tree (it holds the app)."""
        return max(self.tree(), key=rss_kb)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.tree())

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start_pinned(
    name: str, argv: list[str], *, cpu: int, env: dict[str, str], cwd: Path, log: Path
) -> ServerProcess:
    """Start `argv` pinned to `cpu` in its own process group, output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["taskset", "-c", str(cpu), *argv],
            cwd=cwd,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    raise_group_priority(process.pid)
    return ServerProcess(name=name, process=process, log=log, argv=argv)


@dataclass
class Answer:
    """A single request's outcome, used for readiness and correctness checks."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def post_once(
    port: int, path: str, body: bytes, headers: dict[str, str], timeout: float = 10.0
) -> Answer:
    """POST `body` to 127.0.0.1:`port``path` and read the whole answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST", path, body=body, headers={"Content-Type": "application/json", **headers}
        )
        resp = conn.getresponse()
        return Answer(resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


def wait_ready(
    server: ServerProcess | None,
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout_s: float,
) -> Answer:
    """Poll with a real request until something answers; raise if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    while time.monotonic() < deadline:
        if server is not None and not server.alive():
            raise RuntimeError(
                f"exited with code {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            return post_once(port, path, body, headers, timeout=5.0)
        except (OSError, http.client.HTTPException) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    tail = server.log_tail() if server is not None else ""
    raise RuntimeError(f"not ready after {timeout_s:.0f}s ({last_error})\n{tail}")


class RssSampler:
    """Sample a server's tree RSS in a background thread; remember the peak."""

    def __init__(self, server: ServerProcess, interval_s: float = 0.1) -> None:
        self.server = server
        self.interval_s = interval_s
        self.peak_mb = server.rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, self.server.rss_mb())

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
        self.peak_mb = max(self.peak_mb, self.server.rss_mb())


BENCH_LOCK: Final = Path(__file__).resolve().parent / ".work" / "bench.lock"
"""The lock `bench/run.sh` takes: one benchmark at a time on this machine."""


@contextlib.contextmanager
def bench_lock(who: str) -> Iterator[None]:
    """Hold `BENCH_LOCK` while a benchmark runs (waiting, and saying so, when another holds it)."""
    import fcntl

    BENCH_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with BENCH_LOCK.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[{who}] another benchmark holds bench/.work/bench.lock; waiting", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
