"""`rpctl pin`: options, refusals before anything is touched, output.  In-process, no
privileges: the controller calls a command makes are replaced by fakes that record them."""

from __future__ import annotations

import json

import pytest
from rpctl.cli import pin_cmd
from rpctl.controller.contract.errors import ExitStatus
from rpctl.controller.kernel import rss
from rpctl.controller.ops import pin

from tests.support.cli import assert_one_error_line, invoke


@pytest.fixture(autouse=True)
def no_system(refuse_system, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    for name in ("pin_cpu", "pin_rss", "pin_off", "explain_rss"):
        monkeypatch.setattr(pin, name, refuse_system)
    monkeypatch.setattr(rss, "read_device", refuse_system)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["pin"], "the following arguments are required: mode"),
        (["pin", "numa"], "invalid choice: 'numa'"),
        (["pin", "rss"], "pin rss: --dev IFACE is required"),
        (["pin", "cpu", "--dev", "eth0"], "--dev and --explain go with `pin rss`"),
        (["pin", "off", "--explain"], "--dev and --explain go with `pin rss`"),
        (["pin", "off", "--map", "a=0"], "--map goes with `pin cpu` and `pin rss`"),
        (["pin", "cpu", "--json"], "--json goes with --explain"),
    ],
)
def test_bad_command_lines_exit_2(argv, says):
    status, out, err = invoke(argv)
    assert status == ExitStatus.USAGE and out == ""
    assert says in assert_one_error_line(err)


@pytest.mark.parametrize(
    "value, says",
    [
        ("a=x", "CPU of a: 'x' is not a whole number"),
        ("a", "CPUs: 'a' is not NAME=CPU"),
        ("a=0,a=1", "CPUs: a is given twice"),
        ("a=-1", "CPU of a: -1 is not a CPU number"),
        (",", "--map: give NAME=CPU"),
    ],
)
def test_bad_maps_exit_4_before_any_group_is_touched(value, says):
    status, out, err = invoke(["pin", "cpu", "--map", value])
    assert status == ExitStatus.INVALID and out == ""
    assert says in assert_one_error_line(err)


def test_parse_map_joins_commas_and_repeats():
    assert pin_cmd.parse_map(["w1=0, w2=1", "w3=2"]) == {"w1": 0, "w2": 1, "w3": 2}
    assert pin_cmd.parse_map(None) is None


def test_pin_cpu_prints_the_assignment(monkeypatch):
    calls = []

    def pin_cpu(mapping, group=None):
        calls.append((mapping, group))
        return pin.PinResult("web", "cpu", {0: "w1", 1: "w2", 2: "w1"}, unassigned=[3])

    monkeypatch.setattr(pin, "pin_cpu", pin_cpu)
    status, out, err = invoke(["pin", "cpu", "--map", "w1=0,w2=1", "-g", "web"])
    assert status == 0 and err == ""
    assert calls == [({"w1": 0, "w2": 1}, "web")]
    assert out.splitlines() == ["group web: pinned by CPU", "  CPU 0,2 -> w1", "  CPU 1 -> w2",
                                "  CPU 3: no member; the weighted table serves them"]


def test_pin_off_says_when_there_was_nothing_to_do(monkeypatch):
    monkeypatch.setattr(pin, "pin_off", lambda group=None: ("web", "weighted"))
    status, out, err = invoke(["pin", "off"])
    assert status == 0 and out == "" and "not pinned" in assert_one_error_line(err)
    monkeypatch.setattr(pin, "pin_off", lambda group=None: ("web", "cpu"))
    status, out, _ = invoke(["pin", "off"])
    assert status == 0 and "cpu mode off, back to weighted selection" in out


def explanation(problems=()) -> pin.Explanation:
    info = rss.RssInfo("eth0", rx_queues=2, queues_from="GRXRINGS", indir=[0, 0, 0, 1], key=bytes(40),
                       hfunc="toeplitz", fields={"tcp4": rss.RXH_ADDRS | rss.RXH_PORTS})
    rows = [
        pin.ChainRow(0, 0.75, 45, "eth0-TxRx-0", "0", 0, "w1"),
        pin.ChainRow(1, 0.25, None, "", "", None, None),
    ]
    return pin.Explanation(info, "web", rows, list(problems))


def test_explain_prints_the_chain(monkeypatch):
    monkeypatch.setattr(rss, "read_device", lambda dev: explanation().info)
    monkeypatch.setattr(pin, "explain_rss", lambda info, mapping, group=None: explanation())
    status, out, err = invoke(["pin", "rss", "--dev", "eth0", "--explain"])
    assert status == 0 and err == ""
    assert "device eth0: 2 receive queues (ETHTOOL_GRXRINGS)" in out
    assert "tcp4 hashed over IP src + IP dst + L4 src port + L4 dst port" in out
    assert "not the NIC's" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert rows[0][:6] == ["0", "75.0%", "45", "0", "0", "w1"]
    assert rows[1][:6] == ["1", "25.0%", "?", "-", "?", "-"]


def test_explain_with_a_problem_prints_then_exits_4(monkeypatch):
    monkeypatch.setattr(rss, "read_device", lambda dev: explanation().info)
    monkeypatch.setattr(pin, "explain_rss",
                        lambda info, mapping, group=None: explanation(["the NIC hashes with xor"]))
    status, out, err = invoke(["pin", "rss", "--dev", "eth0", "--explain", "--json"])
    doc = json.loads(out)
    assert status == ExitStatus.INVALID and "xor" in assert_one_error_line(err)
    assert set(doc) == {"device", "group", "rx_queues", "indirection_size", "hash_function", "key_size",
                        "hashed_fields", "rps_queues", "chain", "problems", "notes"}
    assert doc["chain"][0] == {"queue": 0, "table_share": 0.75, "irq": 45, "irq_name": "eth0-TxRx-0",
                               "irq_cpus": "0", "cpu": 0, "member": "w1"}
    assert doc["problems"] == ["the NIC hashes with xor"]
