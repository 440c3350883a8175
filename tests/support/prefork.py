"""A prefork server whose children share each SO_REUSEPORT listener, for the shared-listener tests.

The parent opens LISTENERS listeners on one port (SO_REUSEPORT), then forks
CHILDREN children per listener: each child holds every listener (as forked
children do) but adds only its own to its epoll and accepts on it.  The
parent holds them all and serves none.  SIGHUP is a graceful restart: new
children start on the same sockets, and once they poll, the old ones are
told (SIGTERM) to stop polling, finish the connection they serve and exit;
the sockets never close, so nothing queued is lost.  SIGTERM to the parent
stops everything.

Each reply's body is "l<i>\\n<pid>\\n": the listener (the load generator
counts replies by its first line) and the child that accepted.  After each
start and restart the parent writes its state as JSON to --state
(atomically): {parent, generation, cookies: [cookie of listener i],
children: [[pids of listener i]], restarted: CLOCK_MONOTONIC when the old
children were told to stop (null at the first start)}.

    python -m tests.support.prefork --port 7320 --state /tmp/state.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.traffic import read_request_head

LISTENERS = 2
CHILDREN = 2  # per listener
COMM = "prefork-srv"  # the process name (comm) of parent and children, for an adopt rule
SO_COOKIE = 57
OVERLAP = 0.3  # seconds new and old children both poll during a restart


def _set_comm(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def _listener(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1024)
    s.setblocking(False)
    return s


def _answer(conn: socket.socket, index: int) -> None:
    conn.setblocking(True)
    if b"\r\n\r\n" not in read_request_head(conn, 3.0):
        return  # closed before its request was whole
    body = f"l{index}\n{os.getpid()}\n".encode()
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))


def _child(listeners: list[socket.socket], index: int) -> None:
    """Serve listener `index` until SIGTERM: stop polling, finish the connection at hand, exit."""
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    sel = selectors.EpollSelector()
    sel.register(listeners[index], selectors.EVENT_READ)
    while not stopping:
        for _ in sel.select(timeout=0.1):
            try:
                conn, _ = listeners[index].accept()
            except (BlockingIOError, InterruptedError):
                continue  # a sibling took it
            with conn:
                try:
                    _answer(conn, index)
                except OSError:
                    pass
    sel.close()


def _fork_children(listeners: list[socket.socket]) -> list[list[int]]:
    out = []
    for index in range(len(listeners)):
        pids = []
        for _ in range(CHILDREN):
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    _child(listeners, index)
                except BaseException:
                    code = 1
                os._exit(code)
            pids.append(pid)
        out.append(pids)
    return out


def _write_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def serve(port: int, state_path: Path) -> None:
    _set_comm(COMM)
    listeners = [_listener(port) for _ in range(LISTENERS)]
    cookies = [int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), sys.byteorder) for s in listeners]
    asked: list[str] = []
    signal.signal(signal.SIGHUP, lambda *_: asked.append("restart"))
    signal.signal(signal.SIGTERM, lambda *_: asked.append("stop"))
    children = _fork_children(listeners)
    generation = 1
    state = {"parent": os.getpid(), "generation": generation, "cookies": cookies, "children": children,
             "restarted": None}
    _write_state(state_path, state)
    while True:
        while not asked:
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                pass
            time.sleep(0.05)
        what = asked.pop(0)
        old = [pid for pids in children for pid in pids]
        if what == "stop":
            for pid in old:
                os.kill(pid, signal.SIGTERM)
            for pid in old:
                os.waitpid(pid, 0)
            return
        children = _fork_children(listeners)
        time.sleep(OVERLAP)  # the new children poll before the old ones stop
        restarted = time.monotonic()
        for pid in old:
            os.kill(pid, signal.SIGTERM)
        generation += 1
        state = {**state, "generation": generation, "children": children, "restarted": restarted}
        _write_state(state_path, state)


class Prefork:
    """The server as a subprocess of the test (in the test's namespace)."""

    def __init__(self, tmp: Path, port: int):
        self.state_path = tmp / "prefork-state.json"
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.prefork", "--port", str(port),
                                      "--state", str(self.state_path)], stdin=subprocess.DEVNULL)

    def state(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def wait_generation(self, generation: int, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.state()
            if s is not None and s["generation"] >= generation:
                return s
            if self.proc.poll() is not None:
                raise AssertionError(f"the prefork server exited with status {self.proc.returncode}")
            time.sleep(0.02)
        raise AssertionError(f"the prefork server reached no generation {generation} in {timeout:g}s")

    def restart(self) -> dict:
        """A graceful restart; returns the state after it (new children, the old ones told to stop)."""
        generation = self.wait_generation(1)["generation"]
        self.proc.send_signal(signal.SIGHUP)
        return self.wait_generation(generation + 1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state", type=Path, required=True)
    args = p.parse_args()
    serve(args.port, args.state)


if __name__ == "__main__":
    main()
