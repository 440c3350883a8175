"""controller/ops/notify.py against a real AF_UNIX datagram socket, named and abstract."""

from __future__ import annotations

import os
import socket

from rpctl.controller.ops import notify


def _receiver(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(2)
    return s


def test_ready_reaches_a_named_socket(tmp_path):
    path = str(tmp_path / "notify")
    with _receiver(path) as r:
        assert notify.notify(notify.READY, {"NOTIFY_SOCKET": path})
        assert r.recv(4096) == b"READY=1"


def test_at_means_the_abstract_namespace():
    name = f"rpctl-test-notify-{os.getpid()}"
    with _receiver("\0" + name) as r:
        assert notify.notify(notify.STOPPING, {"NOTIFY_SOCKET": "@" + name})
        assert r.recv(4096) == b"STOPPING=1"


def test_reloading_carries_a_monotonic_timestamp(tmp_path):
    path = str(tmp_path / "notify")
    with _receiver(path) as r:
        assert notify.notify(notify.reloading(), {"NOTIFY_SOCKET": path})
        lines = r.recv(4096).decode().splitlines()
    assert lines[0] == "RELOADING=1"
    key, _, usec = lines[1].partition("=")
    assert key == "MONOTONIC_USEC" and int(usec) > 0


def test_nothing_is_sent_without_a_manager(tmp_path):
    assert not notify.notify(notify.READY, {})
    assert notify.socket_address({"NOTIFY_SOCKET": "vsock:2:1234"}) is None


def test_a_gone_manager_is_logged_not_raised(tmp_path, caplog):
    missing = str(tmp_path / "gone")
    assert not notify.notify(notify.READY, {"NOTIFY_SOCKET": missing})
    assert "could not tell the service manager READY=1" in caplog.text
