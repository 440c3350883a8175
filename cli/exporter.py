"""The Prometheus exporter of `rpctl metrics` and `rpctl serve --metrics`.

Both commands import this module to build their parser: prometheus_client and
the metric families (cli/metrics_families.py) are imported when a scrape or the
server needs them, so that `--help` and a bad command line do not pay for them.

The endpoint may face more than Prometheus (a port of a host's address), so its
server trusts no client: it answers GET and HEAD only (405 to the rest), reads a
request's head within HEAD_TIMEOUT in all and HEAD_LIMIT bytes (431 past it; a
body is never read), drops a client that does not take its answer within
SEND_TIMEOUT, and serves each connection on a thread of its own, at most
MAX_CONNECTIONS at once: a slow or silent client never holds up another's scrape.
"""

from __future__ import annotations

import errno
import io
import socket
import threading
import time
from typing import Callable, Optional

from rpctl.controller.contract.errors import InvalidInput, PermissionDenied, RpctlError
from rpctl.controller.kernel.sockets import family_of, hostport_text

HEAD_TIMEOUT = 5.0        # seconds for a request's line and headers, in all: a byte a second does not extend it
HEAD_LIMIT = 16 * 1024    # bytes of request line and headers (a scrape sends a few hundred)
SEND_TIMEOUT = 10.0       # seconds one send of the answer may wait for a client that does not read
MAX_CONNECTIONS = 128     # served at once, well within the fds a scrape and `serve` need; one more is closed at once
METHODS = ("GET", "HEAD")


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


def start_exporter(host: str, port: int, collector: GroupCollector, head_timeout: float = HEAD_TIMEOUT):
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
        return _serve_in_a_thread(host, port, make_wsgi_app(registry), head_timeout)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise PermissionDenied(f"metrics: listen on {where}: {e.strerror} (ports below 1024 need root)") from None
        raise InvalidInput(f"metrics: listen on {where}: {e.strerror}") from None


class HeadTooLarge(Exception):
    """A request's line and headers went past their limit."""


def read_head(sock: socket.socket, timeout: float, limit: int) -> bytes:
    """A request's line and headers, to the blank line that ends them, read from `sock` within
    `timeout` seconds in all (each wait is for what is left of it, so a client that sends a byte
    a second runs out of it as one that says nothing does) and `limit` bytes.  TimeoutError when
    time runs out, HeadTooLarge past the limit; what came when the client closed before the end."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        if len(data) > limit:
            raise HeadTooLarge
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request head not sent in time")
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    return data


def without_body_for_head(app):
    """The WSGI app `app`, but HEAD gets the status and headers of GET (Content-Length included)
    and no body."""

    def app_or_head(environ, start_response):
        if environ["REQUEST_METHOD"] != "HEAD":
            return app(environ, start_response)
        answered = []
        # Asked as GET: prometheus_client from 0.20 answers HEAD itself with a 405.
        as_get = {**environ, "REQUEST_METHOD": "GET"}
        body = b"".join(app(as_get, lambda status, headers, exc_info=None: answered.append((status, headers))))
        status, headers = answered[0]
        if not any(name.lower() == "content-length" for name, _ in headers):
            headers = [*headers, ("Content-Length", str(len(body)))]
        start_response(status, headers)
        return []

    return app_or_head


def _serve_in_a_thread(host: str, port: int, app, head_timeout: float = HEAD_TIMEOUT):
    """A threading WSGI server on the literal address `host` that trusts no client (this
    module's docstring), its requests not logged; (server, thread)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        address_family = family_of(host)
        daemon_threads = True  # a scrape in progress does not hold the exit
        slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

        def verify_request(self, request, client_address) -> bool:
            return self.slots.acquire(blocking=False)  # refused: socketserver closes it

        def process_request_thread(self, request, client_address) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                self.slots.release()

        def handle_error(self, request, client_address) -> None:
            pass  # a client that went away or timed out: nothing the exporter did wrong

    class GuardedHandler(WSGIRequestHandler):
        def handle(self) -> None:
            try:
                head = read_head(self.connection, head_timeout, HEAD_LIMIT)
            except HeadTooLarge:
                self.connection.settimeout(SEND_TIMEOUT)
                self.wfile.write(b"HTTP/1.0 431 Request Header Fields Too Large\r\n"
                                 b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                return
            except OSError:  # timed out, or reset: the client is dropped
                return
            if not head:
                return  # closed without a word
            self.connection.settimeout(SEND_TIMEOUT)
            self.rfile = io.BytesIO(head)  # the body, if any, is never read
            self.raw_requestline = self.rfile.readline(HEAD_LIMIT + 1)
            if not self.parse_request():  # a malformed head: parse_request sent its 400
                return
            if self.command not in METHODS:
                self.send_response(405)
                self.send_header("Allow", ", ".join(METHODS))
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                return
            handler = ServerHandler(self.rfile, self.wfile, self.get_stderr(), self.get_environ(),
                                    multithread=True)
            handler.request_handler = self
            handler.run(self.server.get_app())

        def log_message(self, format, *args):
            pass

    server = make_server(host, port, without_body_for_head(app), Server, handler_class=GuardedHandler)
    thread = threading.Thread(target=server.serve_forever, name="rpctl-metrics", daemon=True)
    thread.start()
    return server, thread
