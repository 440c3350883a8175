"""cli/discover_cmd.py: `rpctl discover`'s JSON and table, on hand-made endpoints, in-process."""

from __future__ import annotations

import json

from rpctl.controller.kernel import discover
from rpctl.controller.kernel.discover import Endpoint, Holder

from tests.support.cli import invoke
from tests.support.endpoints import endpoint, listener


def _fake_endpoints() -> list[Endpoint]:
    served = listener(7, (10, 5), (11, 5), server=11, polled=(11,))
    served.holders = [Holder(10, 5, "nginx"), Holder(11, 5, "nginx")]
    served.server = served.holders[1]
    unserved = listener(8, (10, 6), (12, 6))
    return [endpoint(served, unserved, port=7080)]


def test_discover_json_keys_are_stable(cli_without_system, monkeypatch):
    seen = {}

    def fake(port=None, proto=None):
        seen.update(port=port, proto=proto)
        return _fake_endpoints()

    monkeypatch.setattr(discover, "discover", fake)
    code, out, err = invoke(["discover", "--port", 7080, "--json"])
    assert (code, err) == (0, "")
    assert seen == {"port": 7080, "proto": None}
    doc = json.loads(out)
    (ep,) = doc["endpoints"]
    assert list(ep) == ["endpoint", "protocol", "family", "address", "port", "reuseport", "listeners"]
    assert (ep["endpoint"], ep["family"], ep["reuseport"]) == ("tcp:127.0.0.1:7080", "ipv4", True)
    served, unserved = ep["listeners"]
    assert list(served) == ["cookie", "inode", "queue", "backlog", "server", "servers", "epolled_by", "holders"]
    assert served["server"] == {"pid": 11, "fd": 5, "comm": "nginx"}
    assert served["epolled_by"] == [11]
    assert served["holders"] == [{"pid": 10, "fd": 5, "comm": "nginx"}, {"pid": 11, "fd": 5, "comm": "nginx"}]
    assert unserved["server"] is None and unserved["epolled_by"] == []


def test_discover_table(cli_without_system, monkeypatch):
    monkeypatch.setattr(discover, "discover", lambda port=None, proto=None: _fake_endpoints())
    code, out, err = invoke(["discover"])
    assert code == 0, err
    assert "tcp:127.0.0.1:7080  reuseport yes  2 sockets" in out
    assert "11 nginx" in out and "10, 11 (fd 5)" in out and "? none is seen serving it" in out
    monkeypatch.setattr(discover, "discover", lambda port=None, proto=None: [])
    assert (
        invoke(["discover", "--port", 9])[1]
        == "no listening TCP or bound UDP socket on port 9 in this network namespace\n"
    )
