"""The Prometheus exporter of `rpctl metrics` and `rpctl serve --metrics`.

Both commands import this module to build their parser: prometheus_client and
the metric families (cli/metrics_families.py) are imported when a scrape or the
server needs them, so that `--help` and a bad command line do not pay for them.
"""

from __future__ import annotations

import errno
import threading
from typing import Callable, Optional

from rpctl.controller.contract.errors import InvalidInput, PermissionDenied, RpctlError
from rpctl.controller.kernel.sockets import family_of, hostport_text


class GroupCollector:
    """A prometheus_client collector that reads the pinned state at scrape time.

    A scrape that cannot read the state (the group was unloaded, the state
    is damaged) answers rpctl_up 0 instead of an HTTP error, so Prometheus
    tells "rpctl says the group is gone" from "the exporter is down".  The
    reason goes to `log` once, not once per scrape.
    """

    def __init__(self, group: Optional[str], log: Callable[[str], None]):
        self.group = group
        self.log = log
        self._lock = threading.Lock()  # scrapes run in threads of their own
        self._last_error: Optional[str] = None

    def read(self):
        """The views of this scrape; raises what reading raises."""
        from rpctl.controller.read.views import read_views

        return read_views(group=self.group, with_queues=True)

    def collect(self):
        from .metrics_families import families
        from .wording import error_text

        try:
            views, error = self.read(), None
        except (RpctlError, OSError) as e:
            views, error = [], error_text(e) if isinstance(e, RpctlError) else str(e)
        with self._lock:
            if error != self._last_error:
                self.log(f"cannot read the pinned state: {error}" if error else "reading the pinned state again")
            self._last_error = error
        return families(views, up=error is None)


def start_exporter(host: str, port: int, collector: GroupCollector):
    """An HTTP server of prometheus_client's WSGI app on (host, port) with the collector and the process
    metrics, served by a thread; returns (server, thread).  A refused address is one line and an exit code.

    prometheus_client's own start_http_server returns the server only from 0.20 on; Debian 12 has 0.16,
    so the server is made here, from what 0.16 has: make_wsgi_app."""
    from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app

    registry = CollectorRegistry()
    registry.register(collector)
    ProcessCollector(registry=registry)
    where = hostport_text(host, port)
    try:
        return _serve_in_a_thread(host, port, make_wsgi_app(registry))
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise PermissionDenied(f"metrics: listen on {where}: {e.strerror} (ports below 1024 need root)") from None
        raise InvalidInput(f"metrics: listen on {where}: {e.strerror}") from None


def _serve_in_a_thread(host: str, port: int, app):
    """A threading WSGI server on the literal address `host`, its requests not logged; (server, thread)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        address_family = family_of(host)
        daemon_threads = True  # a scrape in progress does not hold the exit

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format, *args):
            pass

    server = make_server(host, port, app, Server, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="rpctl-metrics", daemon=True)
    thread.start()
    return server, thread
