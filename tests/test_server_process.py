"""A server's life: healthy or a classified failure with its last log line, and never left running."""
from __future__ import annotations

import os
import socket
import sys
import textwrap

import pytest

from backends.contract import RunFailure
from backends.contract.server import ServerProcess, port_in_use

HEALTHY = textwrap.dedent("""
    import sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *a): pass
    time.sleep(float(sys.argv[2]))
    HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_a_server_starts_answers_and_is_stopped_with_its_port(tmp_path):
    with ServerProcess([sys.executable, "-c", HEALTHY, "{port}", "0.2"], tmp_path / "server.log",
                       start_timeout_s=20) as server:
        assert port_in_use(server.port) and server.facts["start_s"] >= 0.2
        pid, port = server.proc.pid, server.port
    assert not _alive(pid) and not port_in_use(port)


def test_a_server_that_exits_at_start_is_a_crash_with_its_last_line(tmp_path):
    cmd = [sys.executable, "-c", "import sys; print('loading'); print('CUDA out of memory (fake)'); sys.exit(3)"]
    with pytest.raises(RunFailure, match=r"exited at start \(code 3\): CUDA out of memory \(fake\)"):
        with ServerProcess(cmd, tmp_path / "server.log", start_timeout_s=20):
            pass


def test_a_port_already_bound_is_a_crash_not_a_hang(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(RunFailure) as err:
            with ServerProcess([sys.executable, "-c", HEALTHY, "{port}", "0"], tmp_path / "server.log",
                               start_timeout_s=5, port=taken.getsockname()[1]):
                pass
        # Someone else's listener there never answers our health check: the server's own failure to bind is
        # what ends the wait, with the line that says so.
        assert err.value.status == "crash" and "Address already in use" in err.value.reason
    finally:
        taken.close()


def test_a_server_never_healthy_times_out_and_is_killed(tmp_path):
    cmd = [sys.executable, "-c", "import time; print('starting', flush=True); time.sleep(60)"]
    server = ServerProcess(cmd, tmp_path / "server.log", start_timeout_s=1.5)
    with pytest.raises(RunFailure, match="not healthy within 1.5 s: starting"):
        server.__enter__()
    assert not _alive(server.proc.pid)


def test_an_interrupt_inside_stops_the_server(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with ServerProcess([sys.executable, "-c", HEALTHY, "{port}", "0"], tmp_path / "s.log",
                           start_timeout_s=20) as server:
            pid = server.proc.pid
            raise KeyboardInterrupt
    assert not _alive(pid)
