"""Blue/green QUIC under `rpctl serve` (docs/decisions/0021), with a real QUIC stack (aioquic).

Two echo servers (tests/support/quic_server.py), each one process with its
own SO_REUSEPORT socket, adopted through a file that says `generations =
"newest"` and `quic_server_ids = "cookie"`: each server reads its socket's
cookie and puts the id it gives (tables/quic.of_cookie) in every connection
id it issues, so it needs nobody to tell it its id.  Long-lived client
connections (tests/support/quic_client.py) to v1 keep working, and move
their source port, while v2 takes every new connection; once they end, v1
is drained.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from rpctl.controller.contract.errors import RpctlError
from rpctl.controller.read import views

from tests.support.launched import wait_until
from tests.support.quic import Clients, certificate, child_env, server_command

pytestmark = pytest.mark.kernel

PORT = 7444
ID_LENGTH = 3       # bytes of server id: the servers' 8-byte connection ids keep a 4-byte nonce
CONNECTIONS = 60
TIMEOUT = 3.0       # an exchange without its echo this long breaks its connection
SETTLE = TIMEOUT + 1.0


class Server:
    """One echo server on PORT, its id taken from its socket's cookie."""

    def __init__(self, cert: str, key: str):
        self.proc = subprocess.Popen(
            server_command(cert, key, "--listen", f"127.0.0.1:{PORT}", "--server-id-from-cookie", str(ID_LENGTH),
                           "--grace", "5"),
            stdout=subprocess.PIPE, text=True, env=child_env())
        ready = self.proc.stdout.readline()
        assert ready.startswith("ready "), ready

    def stop(self) -> dict:
        if self.proc.poll() is None:
            self.proc.terminate()
        out = self.proc.communicate(timeout=15)[0]
        return json.loads(out.split("stats ", 1)[1]) if "stats " in out else {}


def generations() -> dict[int, tuple[str, tuple[str, ...]]]:
    try:
        view = views.read_view("q", with_queues=None)
    except RpctlError:
        return {}
    return {g.number: (str(g.state), g.members) for g in view.generations}


def wait_states(states: dict[int, str], timeout: float = 15.0) -> None:
    wait_until(f"generations {states}",
               lambda: {n: s for n, (s, _) in generations().items()} == states, timeout, interval=0.05)


def server_ids() -> dict[int, str]:
    """Generation -> the QUIC server id of its (one) member."""
    view = views.read_view("q", with_queues=False)
    return {m.generation: m.quic_server_id for m in view.members}


def unbroken(report: dict) -> None:
    assert report["broken"] == report["handshake_failures"] == 0, json.dumps(report)


def test_quic_connections_of_the_old_server_last_while_the_new_one_takes_every_new_one(netns, launch, tmp_path):
    cert, key = certificate(tmp_path)
    servers, made = [], []
    try:
        servers.append(Server(cert, key))
        with open(f"/proc/{servers[0].proc.pid}/comm") as f:
            comm = f.read().strip()
        path = tmp_path / "rpctl.toml"
        path.write_text("\n".join([
            "[[group]]", 'name = "q"', f'listen = "udp:127.0.0.1:{PORT}"', f'adopt = {{ comm = "{comm}" }}',
            'generations = "newest"', "quic = true", f"quic_server_id_length = {ID_LENGTH}",
            'quic_server_ids = "cookie"', "flow_idle_timeout = 1", ""]))
        launch([], [], argv=["serve", "-c", str(path)])
        wait_states({1: "serving"}, timeout=60)  # serve creates the group: a compile, when no program is kept

        old = Clients(f"127.0.0.1:{PORT}", cafile=cert, n=CONNECTIONS, timeout=TIMEOUT)
        made.append(old)
        unbroken(old.ready)
        v1_id = server_ids()[1]
        assert old.ready["servers"] == {v1_id: CONNECTIONS}, old.ready

        servers.append(Server(cert, key))
        wait_states({1: "draining", 2: "serving"})
        v2_id = server_ids()[2]
        assert v2_id != v1_id
        new = Clients(f"127.0.0.1:{PORT}", cafile=cert, n=20, timeout=TIMEOUT)
        made.append(new)
        unbroken(new.ready)
        assert new.ready["servers"] == {v2_id: 20}, new.ready

        # v1's connections keep reaching it by their ids, a new source port too.
        assert old.migrate() == CONNECTIONS
        time.sleep(SETTLE)
        report = old.report()
        unbroken(report)

        # Once they end (bounded now), the next ones go to v2 and v1 is drained.
        old.bound(1.0)
        wait_states({1: "drained", 2: "serving"}, timeout=30)
        report = old.report()
        unbroken(report)
        assert report["servers"][v1_id] == CONNECTIONS and report["servers"].get(v2_id, 0) > 0, report
        unbroken(new.report())
        stats = servers[0].stop()
        assert stats["left_open"] == 0 and stats["unknown"] == 0, stats
        print(f"\nquic blue/green: {report}")
    finally:
        for c in made:
            c.close()
        for s in servers:
            s.stop()
