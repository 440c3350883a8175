"""controller/store/options.py: a group's creation options, their defaults and their checks."""

from __future__ import annotations

import pytest
from rpctl.controller.contract import abi
from rpctl.controller.contract.errors import InvalidInput, StateError
from rpctl.controller.contract.refs import Param
from rpctl.controller.store.options import DATAGRAM, HASH, GroupOptions


def test_udp_groups_get_flow_affinity_by_default():
    assert GroupOptions().resolved(abi.RP_PROTO_UDP) == GroupOptions(True, 65536, 30.0, False, 0, HASH)
    assert GroupOptions(None, 1024, 2.5).resolved(abi.RP_PROTO_UDP) == GroupOptions(True, 1024, 2.5, False, 0, HASH)
    assert GroupOptions(False).resolved(abi.RP_PROTO_UDP) == GroupOptions(False, 0, 0.0, False, 0, HASH)


def test_tcp_groups_have_no_flow_table_and_refuse_its_options():
    assert GroupOptions().resolved(abi.RP_PROTO_TCP) == GroupOptions(False, 0, 0.0, False, 0, HASH)
    assert GroupOptions(False).resolved(abi.RP_PROTO_TCP) == GroupOptions(False, 0, 0.0, False, 0, HASH)
    assert GroupOptions(balance=HASH).resolved(abi.RP_PROTO_TCP) == GroupOptions(False, 0, 0.0, False, 0, HASH)
    for given in (GroupOptions(True), GroupOptions(None, 1024), GroupOptions(None, None, 5.0),
                  GroupOptions(quic=True), GroupOptions(quic=True, quic_server_id_length=2),
                  GroupOptions(balance=DATAGRAM)):
        with pytest.raises(InvalidInput, match="for UDP groups"):
            given.resolved(abi.RP_PROTO_TCP)


def test_quic_routing_is_off_by_default_and_its_ids_one_byte():
    assert GroupOptions(quic=True).resolved(abi.RP_PROTO_UDP) == GroupOptions(True, 65536, 30.0, True, 1, HASH)
    assert GroupOptions(False, quic=True, quic_server_id_length=4).resolved(abi.RP_PROTO_UDP) == GroupOptions(
        False, 0, 0.0, True, 4, HASH)


def test_datagram_balance_goes_without_flow_affinity():
    plain = GroupOptions(False, 0, 0.0, False, 0, DATAGRAM)
    assert GroupOptions(balance=DATAGRAM).resolved(abi.RP_PROTO_UDP) == plain
    assert GroupOptions(False, balance=DATAGRAM).resolved(abi.RP_PROTO_UDP) == plain


@pytest.mark.parametrize("given, words", [
    (GroupOptions(balance="random"), "balance 'random': use hash or datagram"),
    (GroupOptions(True, balance=DATAGRAM), "flow affinity keeps a flow on its member: choose one"),
    (GroupOptions(None, 1024, balance=DATAGRAM), "keeps no flows"),
    (GroupOptions(None, None, 5.0, balance=DATAGRAM), "keeps no flows"),
    (GroupOptions(False, quic=True, balance=DATAGRAM), "not with QUIC routing"),
])
def test_datagram_balance_refuses_what_keeps_a_flow_together(given, words):
    with pytest.raises(InvalidInput, match=words) as e:
        given.check()
    assert Param("balance") in e.value.args
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("given, words", [
    (GroupOptions(quic_server_id_length=2), "goes with QUIC routing"),
    (GroupOptions(quic=True, quic_server_id_length=5), "use 1..4 bytes"),
    (GroupOptions(quic=True, quic_server_id_length=0), "use 1..4 bytes"),
])
def test_quic_server_id_lengths_are_checked(given, words):
    with pytest.raises(InvalidInput, match=words):
        given.check()


@pytest.mark.parametrize("given, param", [
    (GroupOptions(None, 100), "flow_table_size"),
    (GroupOptions(None, 1 << 25), "flow_table_size"),
    (GroupOptions(None, True), "flow_table_size"),
    (GroupOptions(None, None, 0.0), "flow_idle_timeout"),
    (GroupOptions(None, None, 1e6), "flow_idle_timeout"),
])
def test_out_of_range_options_are_refused_naming_their_parameter(given, param):
    with pytest.raises(InvalidInput) as e:
        given.check()
    assert Param(param) in e.value.args


def test_the_ctl_element_keeps_them():
    ctl = abi.RpCtl()
    GroupOptions(True, 2048, 12.5, True, 2).write_ctl(ctl, hz=250)
    assert ctl.flags & abi.RP_CTL_FLOWS and (ctl.flow_table_size, ctl.flow_idle_ms) == (2048, 12500)
    assert ctl.flow_idle_ticks == 3125  # 12.5 s of 4 ms jiffies
    assert ctl.flags & abi.RP_CTL_QUIC and ctl.quic_sid_len == 2
    assert not ctl.flags & abi.RP_CTL_DATAGRAM
    assert GroupOptions.of_ctl(ctl) == GroupOptions(True, 2048, 12.5, True, 2, HASH)
    assert GroupOptions.of_ctl(abi.RpCtl()) == GroupOptions(False, 0, 0.0, False, 0, HASH)
    spread = abi.RpCtl()
    GroupOptions(False, 0, 0.0, False, 0, DATAGRAM).write_ctl(spread, hz=250)
    assert spread.flags == abi.RP_CTL_DATAGRAM
    assert GroupOptions.of_ctl(spread) == GroupOptions(False, 0, 0.0, False, 0, DATAGRAM)


def test_options_given_for_an_existing_group_must_be_its_own():
    own = GroupOptions(True, 65536, 30.0)
    GroupOptions().check_against("dns", own)
    GroupOptions(True, 65536, 30).check_against("dns", own)
    for given, param in ((GroupOptions(False), "flow_affinity"), (GroupOptions(None, 1024), "flow_table_size"),
                         (GroupOptions(None, None, 5.0), "flow_idle_timeout")):
        with pytest.raises(StateError) as e:
            given.check_against("dns", own)
        assert Param(param) in e.value.args and "was made with flow affinity" in str(e.value)
    with pytest.raises(StateError, match="no flow affinity"):
        GroupOptions(None, 65536).check_against("dns", GroupOptions(False, 0, 0.0))
    quic_group = GroupOptions(True, 65536, 30.0, True, 2)
    GroupOptions(quic=True).check_against("h3", quic_group)
    with pytest.raises(StateError, match="QUIC routing by 2-byte server ids") as e:
        GroupOptions(quic=True, quic_server_id_length=1).check_against("h3", quic_group)
    assert Param("quic_server_id_length") in e.value.args
    with pytest.raises(StateError) as e:
        GroupOptions(quic=True).check_against("dns", own)
    assert Param("quic") in e.value.args


def test_a_groups_balance_is_its_own():
    hashed, spread = GroupOptions(False, 0, 0.0, False, 0, HASH), GroupOptions(False, 0, 0.0, False, 0, DATAGRAM)
    GroupOptions(balance=HASH).check_against("dns", hashed)
    GroupOptions(balance=DATAGRAM).check_against("syslog", spread)
    GroupOptions(False).check_against("syslog", spread)
    with pytest.raises(StateError, match="was made with no flow affinity; ") as e:
        GroupOptions(balance=DATAGRAM).check_against("dns", hashed)
    assert Param("balance") in e.value.args
    with pytest.raises(StateError, match="was made with datagram balance") as e:
        GroupOptions(balance=HASH).check_against("syslog", spread)
    assert Param("balance") in e.value.args
