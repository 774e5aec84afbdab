"""A real server an engine starts for the `serve` workload: its own process group on
a free loopback port, its log kept, its health waited for with a time limit, and always stopped.

`ServerProcess(cmd, log_path)` is a context manager: entering starts the command (with `{port}` in it
replaced by the port it got) and waits until `GET <health_path>` answers 200; leaving stops the whole
process group (SIGTERM, then SIGKILL after a grace period). A server that exits before it is healthy, or
is not healthy in time, is a RunFailure classified from its log's tail (with the line of it that says
most), and nothing is left running.
"""
from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from backends.contract.errors import RunFailure

# Shorter than the launcher's grace before it kills a stopped worker, so the worker can stop its server first.
GRACE_S = 5.0


def _die_with_parent() -> None:
    """A server outlives no worker, even one killed outright (SIGKILL leaves no time to stop it)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _failure(prefix: str, status: str, log_path: Path) -> RunFailure:
    """The server's failure, classified by its own log's tail (out of memory, a missing module), with the
    line that says most: the last error-like line, else the last line."""
    try:
        tail = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()][-60:]
    except OSError:
        tail = []
    text = "\n".join(tail).lower()
    if "out of memory" in text or "outofmemory" in text:
        status = "oom"
    elif "modulenotfounderror" in text or "no module named" in text:
        status = "missing_dependency"
    errors = [ln for ln in tail if "error" in ln.lower() or "exception" in ln.lower()]
    line = (errors or tail or [""])[-1][:300]
    return RunFailure(status, f"{prefix}: {line}" if line else prefix)


@dataclass
class ServerProcess:
    cmd: list[str]
    log_path: Path
    health_path: str = "/health"
    start_timeout_s: float = 300.0
    host: str = "127.0.0.1"
    env: dict[str, str] | None = None
    port: int | None = None
    proc: subprocess.Popen | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    model: str = ""  # the name requests give as `model`
    # Fields a request to this server adds (e.g. vLLM's ignore_eos / min_tokens), given the request.
    request_extra: Callable[[Any], dict] | None = None
    # What the server's log says it ran (kernels, memory), read once it has stopped, into facts["from_log"].
    log_facts: Callable[[str], dict] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "ServerProcess":
        self.port = self.port or free_port(self.host)
        cmd = [c.replace("{port}", str(self.port)) for c in self.cmd]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        t0 = time.perf_counter()
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env={**os.environ, **(self.env or {})},
                                         preexec_fn=_die_with_parent)
        finally:
            log.close()
        try:
            self._wait_healthy(t0)
        except BaseException:
            self.stop()
            raise
        self.facts["start_s"] = round(time.perf_counter() - t0, 3)
        return self

    def _wait_healthy(self, t0: float) -> None:
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise _failure(f"the server exited at start (code {rc})", "crash", self.log_path)
            if self._healthy():
                return
            if time.perf_counter() - t0 > self.start_timeout_s:
                raise _failure(f"the server was not healthy within {self.start_timeout_s:g} s", "timeout",
                               self.log_path)
            time.sleep(0.5)

    def _healthy(self) -> bool:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
        try:
            conn.request("GET", self.health_path)
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop the server's whole process group; idempotent."""
        if self.proc is None or self.proc.poll() is not None and not _group_alive(self.proc.pid):
            return
        for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            if not _group_alive(self.proc.pid):
                break

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.log_facts is not None:
            try:
                self.facts["from_log"] = self.log_facts(self.log_path.read_text(errors="replace"))
            except Exception as err:  # noqa: BLE001 — evidence is best effort; the census proves the run
                self.facts["from_log"] = {"error": f"{type(err).__name__}: {err}"[:300]}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
