"""A real nginx serving one SO_REUSEPORT port, for the adoption tests and the
end-to-end benchmark: `listen ... reuseport` and N workers open N listeners
in the master, which forks; master and workers all hold all N (same fd
numbers), and each worker adds only its own listener to its epoll.  Every
reply body is "$pid\\n": the pid of the worker that accepted the connection.
Plain module (no pytest) so that bench/ uses the same code as the tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from rpctl.controller.kernel import discover

NGINX = "/usr/sbin/nginx"

NGINX_CONF = """\
worker_processes {workers};
{affinity}
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{ return 200 "$pid\\n"; }}
    }}
}}
"""


def group_config(port: int, comm: str = "nginx") -> str:
    """A groups' file (rpctl.toml) of one group "web" on 127.0.0.1:port that adopts the listeners of `comm`."""
    return (
        "[[group]]\n"
        'name = "web"\n'
        f'listen = "tcp:127.0.0.1:{port}"\n'
        f'adopt = {{ comm = "{comm}" }}\n'
    )


def _children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.add(int(entry))
    return out


class Nginx:
    def __init__(self, tmp: Path, port: int, workers: int, cpu_affinity: bool = False):
        self.tmp = tmp
        self.port = port
        self.workers = workers
        # `worker_cpu_affinity auto`: worker i runs on CPU i only (what `pin cpu` reads).
        self.cpu_affinity = cpu_affinity
        self.conf = tmp / "nginx.conf"
        self._write_conf()
        with open(tmp / "stderr.log", "wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [NGINX, "-p", str(tmp), "-c", str(self.conf), "-e", str(tmp / "error.log")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.worker_pids: set[int] = set()

    def _write_conf(self) -> None:
        affinity = "worker_cpu_affinity auto;" if self.cpu_affinity else ""
        self.conf.write_text(NGINX_CONF.format(workers=self.workers, affinity=affinity, tmp=self.tmp, port=self.port))

    def reload(self, workers: int, timeout: float = 10.0) -> None:
        """`nginx -s reload` to `workers` workers: new worker processes, the
        listeners kept (one more opened, or one closed, when the count changes);
        returns when every old worker is gone and every listener has a new one."""
        self.wait_reloaded(self.start_reload(workers), timeout)

    def start_reload(self, workers: int) -> set[int]:
        """Send the reload and return at once, with the old workers' pids (for wait_reloaded)."""
        old = _children(self.master)
        self.workers = workers
        self._write_conf()
        self.proc.send_signal(signal.SIGHUP)
        return old

    def wait_reloaded(self, old: set[int], timeout: float = 10.0) -> None:
        """Until every old worker is gone and every listener has a new one."""
        deadline = time.monotonic() + timeout
        while _children(self.master) & old:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nginx reload: old workers {sorted(_children(self.master) & old)} still there; "
                                   f"{self.errors()}")
            time.sleep(0.05)
        self.wait_ready(max(0.1, deadline - time.monotonic()))

    @property
    def master(self) -> int:
        return self.proc.pid

    def workers_now(self) -> list[int]:
        """The master's worker processes at this moment (worker_pids is as of the last wait_ready)."""
        return sorted(_children(self.master))

    def wait_ready(self, timeout: float = 5.0) -> None:
        """Until every listener has a worker that epolls it."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited {self.proc.returncode}: {self.errors()}")
            eps = discover.discover(port=self.port, proto="tcp", probe_reuseport=False)
            self.worker_pids = _children(self.master)
            # Its own listeners (those its master holds): another nginx may listen beside it.
            own = [lst for lst in eps[0].listeners if any(h.pid == self.master for h in lst.holders)] if eps else []
            if (
                len(own) == self.workers
                and len(self.worker_pids) == self.workers
                and all(lst.server and lst.server.pid in self.worker_pids for lst in own)
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nginx not ready after {timeout}s: {eps}; {self.errors()}")
            time.sleep(0.05)

    def errors(self) -> str:
        try:
            return (self.tmp / "error.log").read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        pids = _children(self.master) | self.worker_pids
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, then the master exits
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in pids:  # a worker must never outlive the test (or its network namespace)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
