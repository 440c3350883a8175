"""Long-lived QUIC client connections (aioquic) in one process, for the kernel tests.

    python -m tests.support.quic_client --connect HOST:PORT --cafile CERT -n 100
        [--interval S] [--timeout S] [--lifetime S]

Each of the n connections has a UDP socket of its own (its own source port)
and exchanges one echo stream every --interval seconds (jittered) with the
server of tests/support/quic_server.py.  An exchange without its echo
within --timeout seconds, or a connection the peer or the idle timer ended,
breaks the connection: it is counted once, and a new connection takes its
place.  With --lifetime, a connection closes cleanly after a random 50 to
100 % of it and a new one opens (bounded connections, so that a draining
server's connections end).

Commands on stdin, one a line; each answer is one JSON line on stdout:
  (at start)  {"ready": true, ...counters}  once the first n handshakes ended
  report      the counters
  migrate     every open connection moves to a new UDP socket (a new
              source port) and to a new connection id of its server
  lifetime S  --lifetime from now on, open connections included
  timeout S   --timeout from now on
  stop        every connection closes cleanly; the counters; exit
Counters: established, completed (closed at the end of their lifetime),
broken, handshake_failures, exchanges, migrated, open, servers (the server
ids that answered, with the connections each took), reasons (of breaks, each
with t=: seconds since `started`, the client's start on the monotonic clock,
the clock of time.monotonic() in any process).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import socket
import sys

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from rpctl.controller.kernel.sockets import family_of, parse_hostport

from tests.support.quic_server import ALPN

SERVER_NAME = "localhost"
CLOSING_PERIOD = 1.0
PORT_REST = 10.0      # s: longer than any flow_idle_timeout the tests give a QUIC group


class Broken(Exception):
    pass


class Connection:
    """One client connection: its protocol, its current socket and its server."""

    def __init__(self, clients: "Clients"):
        self.clients = clients
        self.protocol: QuicConnectionProtocol | None = None
        self.transport = None
        self.server = ""
        self.end: float | None = None  # loop time its lifetime ends; None: never

    def _socket(self) -> socket.socket:
        """A socket on a source port none of our connections let go of in the last PORT_REST
        seconds: a group with flow affinity keeps a 4-tuple's flow on its member until it
        idles out, and a new connection from a closed one's port would follow it there."""
        c = self.clients
        while True:
            sock = socket.socket(c.family, socket.SOCK_DGRAM)
            sock.bind((c.host, 0))
            port = sock.getsockname()[1]
            if c.loop.time() - c.ports.get(port, -PORT_REST) >= PORT_REST:
                return sock
            sock.close()

    def _let_go(self, transport) -> None:
        """Close a socket of ours; its port rests PORT_REST seconds (see _socket)."""
        name = transport.get_extra_info("sockname")
        if name is not None:
            self.clients.ports[name[1]] = self.clients.loop.time()
        transport.close()

    async def open(self) -> None:
        c = self.clients
        config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], server_name=SERVER_NAME,
                                   idle_timeout=c.args.timeout * 5)
        config.load_verify_locations(c.args.cafile)
        self.protocol = QuicConnectionProtocol(QuicConnection(configuration=config))
        self.transport, _ = await c.loop.create_datagram_endpoint(lambda: self.protocol, sock=self._socket())
        self.protocol.connect(c.addr)
        await asyncio.wait_for(self.protocol.wait_connected(), c.args.timeout)

    async def exchange(self, seq: int) -> None:
        payload = f"ping {id(self)} {seq}".encode()
        try:
            reader, writer = await self.protocol.create_stream()
            writer.write(payload)
            writer.write_eof()
            reply = await asyncio.wait_for(reader.read(), self.clients.args.timeout)
        except asyncio.TimeoutError:
            raise Broken("no echo in time") from None
        except ConnectionError:
            raise Broken("connection ended") from None
        server, _pid, echoed = (reply.split(b" ", 2) + [b"", b""])[:3]
        if echoed != payload:
            raise Broken("connection ended" if not reply else "wrong echo")
        if self.server and server.decode() != self.server:
            raise Broken("answered by another server")
        self.server = server.decode()

    async def migrate(self) -> None:
        """A new source port (NAT rebinding, or a client moving networks), and
        a fresh connection id from the server's, as RFC 9000 9.5 asks."""
        old = self.transport
        self.transport, _ = await self.clients.loop.create_datagram_endpoint(lambda: self.protocol,
                                                                             sock=self._socket())
        self._let_go(old)
        self.protocol.change_connection_id()

    async def close(self) -> None:
        """Close cleanly: CONNECTION_CLOSE goes out at once.  The closing period
        after it ends on a local timer (3 PTO, RFC 9000 10.2) that RTT samples
        from a loaded machine stretch to seconds; it only answers a peer that
        missed the close, which loopback does not lose, so it is cut short."""
        self.protocol.close()
        try:
            await asyncio.wait_for(self.protocol.wait_closed(), CLOSING_PERIOD)
        except asyncio.TimeoutError:
            pass
        finally:
            self._let_go(self.transport)

    def abort(self) -> None:
        # aioquic's loss-detection timer outlives the transport and, firing on it, logs a
        # traceback each time: enough of them fill the stderr pipe and stop the client.
        timer = getattr(self.protocol, "_timer", None)
        if timer is not None:
            timer.cancel()
        if self.transport is not None:
            self._let_go(self.transport)


class Clients:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.host, port = "127.0.0.1", 0
        remote_host, port = parse_hostport(args.connect)
        self.family = family_of(remote_host)
        self.host = "::1" if self.family == socket.AF_INET6 else "127.0.0.1"
        self.addr = (remote_host, port)
        self.loop = asyncio.get_running_loop()
        self.open: set[Connection] = set()
        self.ports: dict[int, float] = {}  # source port -> when a connection of ours let it go
        self.stopping = False
        self.counts = collections.Counter()
        self.servers = collections.Counter()
        self.reasons = collections.Counter()
        self.first_round = asyncio.Event()
        self.first_left = args.n
        self.started = self.loop.time()

    def report(self, **extra) -> dict:
        return {**extra, **{k: self.counts[k] for k in (
            "established", "completed", "broken", "handshake_failures", "exchanges", "migrated")},
            "open": len(self.open), "servers": dict(self.servers), "reasons": dict(self.reasons),
            "started": self.started}

    def _first_done(self) -> None:
        self.first_left -= 1
        if self.first_left == 0:
            self.first_round.set()

    async def run_one(self) -> None:
        first = True
        while not self.stopping:
            conn = Connection(self)
            try:
                await conn.open()
            except (asyncio.TimeoutError, ConnectionError):
                conn.abort()
                self.counts["handshake_failures"] += 1
                if first:
                    first = False
                    self._first_done()
                continue
            self.counts["established"] += 1
            self.open.add(conn)
            self.bound(conn)
            try:
                await conn.exchange(0)
                self.servers[conn.server] += 1
                if first:
                    first = False
                    self._first_done()
                seq = 1
                while not self.stopping and (conn.end is None or self.loop.time() < conn.end):
                    await asyncio.sleep(self.args.interval * random.uniform(0.5, 1.5))
                    if self.stopping:
                        break
                    await conn.exchange(seq)
                    self.counts["exchanges"] += 1
                    seq += 1
            except Broken as e:
                self.open.discard(conn)
                conn.abort()
                self.counts["broken"] += 1
                self.reasons[f"{e} (server {conn.server or '?'}, t={self.loop.time() - self.started:.1f}s)"] += 1
                if first:
                    first = False
                    self._first_done()
                continue
            self.open.discard(conn)
            await conn.close()
            self.counts["completed"] += 1

    def bound(self, conn: Connection) -> None:
        """A lifetime of 50 to 100 % of --lifetime from now, or none."""
        life = self.args.lifetime
        conn.end = self.loop.time() + life * random.uniform(0.5, 1.0) if life else None

    async def migrate(self) -> int:
        moved = list(self.open)
        await asyncio.gather(*(c.migrate() for c in moved))
        self.counts["migrated"] += len(moved)
        return len(moved)


async def main_async(args: argparse.Namespace) -> None:
    clients = Clients(args)
    tasks = []
    for _ in range(args.n):
        tasks.append(asyncio.ensure_future(clients.run_one()))
        await asyncio.sleep(0.005)  # no burst of n handshakes at once
    await clients.first_round.wait()
    out = sys.stdout
    out.write(json.dumps(clients.report(ready=True)) + "\n")
    out.flush()
    reader = asyncio.StreamReader()
    await clients.loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "migrate":
            answer = {"migrated": await clients.migrate()}
        elif line.startswith("timeout "):
            clients.args.timeout = float(line.split()[1])
            answer = {"timeout": clients.args.timeout}
        elif line.startswith("lifetime "):
            clients.args.lifetime = float(line.split()[1])
            for conn in clients.open:
                clients.bound(conn)
            answer = {"lifetime": clients.args.lifetime}
        elif line == "report":
            answer = clients.report()
        elif line in ("stop", ""):
            clients.stopping = True
            await asyncio.gather(*tasks)
            out.write(json.dumps(clients.report(stopped=True)) + "\n")
            out.flush()
            return
        else:
            answer = {"error": f"unknown command {line!r}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="quic_client", description=__doc__.splitlines()[0])
    p.add_argument("--connect", required=True, metavar="HOST:PORT")
    p.add_argument("--cafile", required=True)
    p.add_argument("-n", type=int, default=100)
    p.add_argument("--interval", type=float, default=0.5, help="seconds between exchanges (jittered)")
    p.add_argument("--timeout", type=float, default=4.0, help="seconds an echo or a handshake may take")
    p.add_argument("--lifetime", type=float, default=0.0, help="close and reopen connections after ~S s (0: never)")
    asyncio.run(main_async(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
