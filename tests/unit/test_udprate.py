"""The UDP rate benchmark's load (bench/udprate.py, bench/udprate.c): the C
source builds with the system's gcc warning-free, its two modes refuse bad
arguments in one line, and a sender and a sink on loopback count into the
slots the benchmark reads.  No privileges: plain sockets, no group."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from bench import udprate


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    return udprate.build(tmp_path_factory.mktemp("udprate"))


def test_the_load_builds_with_every_warning_an_error(exe):
    assert exe.is_file()


def test_build_says_what_gcc_said(tmp_path, monkeypatch):
    broken = tmp_path / "broken.c"
    broken.write_text("int main(void) { return undeclared; }\n")
    monkeypatch.setattr(udprate, "SOURCE", broken)
    with pytest.raises(RuntimeError, match=r"(?s)gcc could not build broken.c: .*undeclared"):
        udprate.build(tmp_path)


def test_build_without_gcc_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(udprate.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="gcc is missing.*apt-get install gcc"):
        udprate.build(tmp_path)


@pytest.mark.parametrize("argv, status, words", [
    ([], 2, "usage: udprate sink"),
    (["sink", "x", "c", "0", "-1"], 1, "FD: not a number: x"),
    (["sink", "0", "/nonexistent/counters", "0", "-1"], 1, "/nonexistent/counters: No such file"),
    (["send", "localhost", "9", "1", "1", "c", "0", "-1"], 1, "not an IPv4 address: localhost"),
])
def test_bad_arguments_are_one_line_and_a_status(exe, argv, status, words):
    out = subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=10)
    assert out.returncode == status
    assert words in out.stderr
    assert len(out.stderr.strip().splitlines()) == (2 if status == 2 else 1)


def test_a_slot_beyond_the_counters_file_is_refused(exe, tmp_path):
    counters = udprate.Counters(tmp_path / "counters", 1)
    try:
        out = subprocess.run([str(exe), "sink", "0", str(counters.path), "1", "-1"], capture_output=True, text=True,
                             timeout=10)
    finally:
        counters.close()
    assert out.returncode == 1
    assert "no slot 1 in 64 bytes" in out.stderr


def test_sender_and_sink_count_into_their_slots(exe, tmp_path):
    counters = udprate.Counters(tmp_path / "counters", 2)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    procs = []
    try:
        procs.append(subprocess.Popen([str(exe), "sink", str(sock.fileno()), str(counters.path), "0", "-1"],
                                      pass_fds=[sock.fileno()]))
        procs.append(subprocess.Popen([str(exe), "send", "127.0.0.1", str(sock.getsockname()[1]), "4", "1",
                                       str(counters.path), "1", "-1"]))
        deadline = time.monotonic() + 10
        while counters.slot(0)[0] < 10_000 and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs)
            time.sleep(0.05)
        sink = counters.slot(0)
        # The sender counts a batch once its sendmmsg returned: the sink may have read it first.
        while counters.slot(1)[0] < sink[0] and time.monotonic() < deadline + 2:
            time.sleep(0.01)
        sender = counters.slot(1)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        sock.close()
        counters.close()
    datagrams, calls, errors, ready = sink
    assert ready == 1 and sender[3] == 1
    assert 10_000 <= datagrams <= sender[0]
    assert 1 <= calls <= datagrams
    assert errors == 0
