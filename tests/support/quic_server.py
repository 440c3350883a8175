"""A QUIC echo server (aioquic) whose connection ids carry its QUIC-LB server id.

    python -m tests.support.quic_server --cert C --key K [--listen HOST:PORT]

Its UDP socket is fd 3 when started by `rpctl run` (socket activation), or
else one it binds with SO_REUSEPORT on --listen.  Every connection id it
issues is rpctl.controller.tables.quic.make_cid(<$RPCTL_QUIC_SERVER_ID>): the
first one, when aioquic makes a connection, and every later one, when it
replenishes them (a QuicConnection subclass; aioquic itself draws them from
os.urandom).  Each stream is echoed back after this server's id and pid, so
that a client can tell which server answered.

On start it prints the line the demo worker prints, ``ready pid=<pid>
fd=<fd> port=<port>``.  SIGTERM: it takes no new connection and exits once
every connection it has is closed (the clients' connections have bounded
lifetimes), or after --grace seconds.  On exit it prints ``stats {json}``:
connections taken, and datagrams for connection ids it does not know (a
packet a balancer sent to the wrong server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from functools import partial

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamDataReceived
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from rpctl.cli.demo.worker import activated_socket
from rpctl.controller.kernel.sockets import cookie_of, parse_hostport, reuseport_socket
from rpctl.controller.tables import quic

ALPN = "rpctl-echo"
CID_LENGTH = 8
SMALLEST_INITIAL = 1200  # RFC 9000, 14.1: a client's Initial datagram is at least this long


class LbConnection(QuicConnection):
    """A server connection whose every connection id carries the server id."""

    def __init__(self, *, server_id: bytes, **kw):
        self._server_id = server_id
        super().__init__(**kw)
        # The id aioquic drew for sequence number 0 has been used for nothing yet.
        first = self._host_cids[0]
        first.cid = self._new_cid()
        self.host_cid = self._local_initial_source_connection_id = first.cid

    def _new_cid(self) -> bytes:
        return quic.make_cid(self._server_id, self._configuration.connection_id_length)

    def _replenish_connection_ids(self) -> None:
        known = len(self._host_cids)
        super()._replenish_connection_ids()
        for issued in self._host_cids[known:]:
            issued.cid = self._new_cid()


class Echo(QuicConnectionProtocol):
    """Each stream: read to its end, send back `<server id> <pid> <data>`."""

    def __init__(self, *args, tag: bytes, **kw):
        super().__init__(*args, **kw)
        self._tag = tag
        self._streams: dict[int, bytes] = {}

    def quic_event_received(self, event) -> None:
        if not isinstance(event, StreamDataReceived):
            return
        data = self._streams.pop(event.stream_id, b"") + event.data
        if not event.end_stream:
            self._streams[event.stream_id] = data
            return
        self._quic.send_stream_data(event.stream_id, self._tag + data, end_stream=True)
        self.transmit()


class Server(asyncio.DatagramProtocol):
    """The server side of aioquic's asyncio server, with LbConnection:
    datagrams to connections by destination connection id; a new
    connection from a client's Initial while accepting."""

    def __init__(self, configuration: QuicConfiguration, server_id: bytes):
        self.configuration = configuration
        self.server_id = server_id
        self.tag = f"{server_id.hex()} {os.getpid()} ".encode()
        self.protocols: dict[bytes, Echo] = {}
        self.accepting = True
        self.connections = 0
        self.unknown = 0  # datagrams for a connection id this server never issued
        self.transport = None
        self.idle = asyncio.Event()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=self.configuration.connection_id_length)
        except ValueError:
            return
        protocol = self.protocols.get(header.destination_cid)
        if protocol is None and header.packet_type == QuicPacketType.INITIAL and len(data) >= SMALLEST_INITIAL:
            if not self.accepting:
                return
            protocol = self._accept(header.destination_cid)
        if protocol is None:
            self.unknown += 1
            return
        protocol.datagram_received(data, addr)

    def _accept(self, client_cid: bytes) -> Echo:
        connection = LbConnection(configuration=self.configuration, server_id=self.server_id,
                                  original_destination_connection_id=client_cid)
        protocol = Echo(connection, tag=self.tag)
        protocol.connection_made(self.transport)
        protocol._connection_id_issued_handler = partial(self._issued, protocol=protocol)
        protocol._connection_id_retired_handler = partial(self._retired, protocol=protocol)
        protocol._connection_terminated_handler = partial(self._terminated, protocol=protocol)
        self.protocols[client_cid] = self.protocols[connection.host_cid] = protocol
        self.connections += 1
        self.idle.clear()
        return protocol

    def _issued(self, cid: bytes, protocol: Echo) -> None:
        self.protocols[cid] = protocol

    def _retired(self, cid: bytes, protocol: Echo) -> None:
        self.protocols.pop(cid, None)

    def _terminated(self, protocol: Echo) -> None:
        for cid in [c for c, p in self.protocols.items() if p is protocol]:
            del self.protocols[cid]
        if not self.protocols:
            self.idle.set()


def server_id_from_env(length: int = quic.DEFAULT_SERVER_ID_LENGTH) -> bytes:
    """$RPCTL_QUIC_SERVER_ID (hex) as bytes; a server outside a QUIC group
    (no variable) makes ids with server id 0 of `length` bytes."""
    text = os.environ.get(quic.SERVER_ID_VAR)
    return bytes.fromhex(text) if text else bytes(length)


async def serve(args: argparse.Namespace) -> dict:
    sock = activated_socket()
    if sock is None:
        host, port = parse_hostport(args.listen)
        sock = reuseport_socket("udp", host, port)
    configuration = QuicConfiguration(is_client=False, alpn_protocols=[ALPN], connection_id_length=CID_LENGTH,
                                      idle_timeout=args.idle_timeout)
    configuration.load_cert_chain(args.cert, args.key)
    loop = asyncio.get_running_loop()
    if args.server_id_from_cookie:
        # An adopted server in a group with quic_server_ids = "cookie": its id is its socket's.
        length = args.server_id_from_cookie
        server_id = quic.of_cookie(cookie_of(sock), length).to_bytes(length, "big")
    else:
        server_id = server_id_from_env()
    server = Server(configuration, server_id)
    transport, _ = await loop.create_datagram_endpoint(lambda: server, sock=sock)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    sys.stdout.write(f"ready pid={os.getpid()} fd={sock.fileno()} port={sock.getsockname()[1]}\n")
    sys.stdout.flush()
    await stop.wait()
    server.accepting = False
    if server.protocols:
        server.idle.clear()
        try:
            await asyncio.wait_for(server.idle.wait(), args.grace)
        except asyncio.TimeoutError:
            pass
    left = len({id(p) for p in server.protocols.values()})
    transport.close()
    return {"server_id": server.server_id.hex(), "connections": server.connections, "unknown": server.unknown,
            "left_open": left}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="quic_server", description=__doc__.splitlines()[0])
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--listen", default="127.0.0.1:4433", help="without socket activation")
    p.add_argument("--grace", type=float, default=30.0, help="after SIGTERM, wait this long for connections to end")
    p.add_argument("--idle-timeout", type=float, default=20.0)
    p.add_argument("--server-id-from-cookie", type=int, metavar="LENGTH", default=0,
                   help="the server id is the low LENGTH bytes of its socket's SO_COOKIE")
    args = p.parse_args(argv)
    stats = asyncio.run(serve(args))
    sys.stdout.write(f"stats {json.dumps(stats)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
