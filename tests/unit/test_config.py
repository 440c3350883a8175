"""controller/ops/config.py: rpctl.toml read and checked whole; every refusal is one line naming FILE:LINE, group, key."""

from __future__ import annotations

import socket

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from rpctl.controller.contract.errors import ExitStatus, InvalidInput, NotFound, RpctlError
from rpctl.controller.kernel.sockets import EndpointKey
from rpctl.controller.ops import config
from rpctl.controller.ops.config import AdoptRule, PinSpec, RunSpec
from rpctl.controller.store.options import GroupOptions

from tests.support import hostile
from tests.support.cli import assert_one_error_line, invoke

GOOD = """\
# rpctl's groups
[[group]]
name = "web"
listen = "tcp:127.0.0.1:8080"
adopt = { comm = "nginx", uid = 0 }
names = "{comm}-{i}"
weight = 2
weights = { "nginx-1" = 3 }
drain = ["nginx-2"]
pin = "cpu"
adaptive = true
adaptive_queue = 16
adaptive_interval_ms = 40

[[group]]
name = "api"
listen = "tcp:[::1]:9090"
run = { command = ["/srv/api", "--listen-fd", "3"], count = 4 }

[[group]]
name = "dns"
listen = "udp:127.0.0.1:53"
pin = "rss:eth0"

[group.adopt]
exe = "/usr/sbin/unbound"
cgroup = "/system.slice/unbound.service"
"""


def test_a_udp_group_is_adaptive_with_a_threshold_in_bytes():
    udp = '[[group]]\nname = "dns"\nlisten = "udp:127.0.0.1:53"\nadopt = { comm = "x" }\nadaptive = true\n'
    (dns,) = config.loads(udp, "f.toml").groups
    assert (dns.adaptive, dns.adaptive_queue_bytes) == (True, 64 * 1024)
    (dns,) = config.loads(udp + "adaptive_queue_bytes = 32768\n", "f.toml").groups
    assert (dns.adaptive, dns.adaptive_queue_bytes) == (True, 32768)


def test_every_key_is_read():
    cfg = config.loads(GOOD, "rpctl.toml")
    web, api, dns = cfg.groups
    assert web == config.GroupSpec(
        name="web", listen=EndpointKey("tcp", socket.AF_INET, "127.0.0.1", 8080), adopt=AdoptRule(comm="nginx", uid=0),
        names="{comm}-{i}", weights={"nginx-1": 3}, default_weight=2, drain=("nginx-2",), pin=PinSpec("cpu"),
        adaptive=True, adaptive_queue=16, adaptive_interval_ms=40, line=2,
    )
    assert api.listen == EndpointKey("tcp", socket.AF_INET6, "::1", 9090)
    assert api.run == RunSpec(("/srv/api", "--listen-fd", "3"), 4) and api.adopt is None
    assert api.names == "worker-{i}" and api.pin == PinSpec() and api.line == 15
    assert dns.pin == PinSpec("rss", "eth0") and dns.listen.proto == "udp"
    assert (api.adaptive, api.adaptive_queue, api.adaptive_interval_ms) == (False, 8, 25)
    assert dns.adopt == AdoptRule(exe="/usr/sbin/unbound", cgroup="/system.slice/unbound.service")
    assert cfg.group("dns") is dns
    with pytest.raises(NotFound):
        cfg.group("nope")


def test_creation_options_are_read_into_the_groups_options():
    dns = config.loads(_udp('flow_table_size = 1024\nflow_idle_timeout = 2.5\nquic = true\n'
                            'quic_server_id_length = 2\n'), "f.toml").group("dns")
    assert dns.options == GroupOptions(flow_table_size=1024, flow_idle_timeout=2.5, quic=True, quic_server_id_length=2)
    off = config.loads(_udp('flow_affinity = false\n'), "f.toml").group("dns")
    assert off.options == GroupOptions(flow_affinity=False)
    assert off.options.resolved(socket.IPPROTO_UDP) == GroupOptions(False, 0, 0.0, False, 0, "hash")
    spread = config.loads(_udp('balance = "datagram"\n'), "f.toml").group("dns")
    assert spread.options == GroupOptions(balance="datagram")
    assert spread.options.resolved(socket.IPPROTO_UDP) == GroupOptions(False, 0, 0.0, False, 0, "datagram")
    # Not given: the defaults at creation, the group's own after.
    assert config.loads(GOOD, "f.toml").group("dns").options == GroupOptions()


def test_an_empty_file_has_no_groups():
    assert config.loads("", "f.toml").groups == ()


def _group(body: str) -> str:
    return '[[group]]\nname = "web"\nlisten = "tcp:127.0.0.1:8080"\n' + body


def _udp(body: str) -> str:
    return '[[group]]\nname = "dns"\nlisten = "udp:127.0.0.1:53"\nadopt = { comm = "unbound" }\n' + body


@pytest.mark.parametrize(
    "text, line",
    [
        # unknown keys: in a group, inside adopt / run, and outside every group
        (_group('adopt = { comm = "nginx" }\naffinity = true\n'),
         ("f.toml:5: group 'web': key 'affinity': unknown key (known: name, listen, adopt, run, names, weight, "
         "weights, drain, pin, adaptive, adaptive_queue, adaptive_queue_bytes, adaptive_interval_ms, generations, "
         "generation_by, quic_server_ids, flow_affinity, "
         "flow_table_size, flow_idle_timeout, quic, quic_server_id_length, balance)")),
        (_group('adopt = { comm = "nginx", pid = 3 }\n'),
         "f.toml:4: group 'web': key 'adopt.pid': unknown key 'pid' (use comm, exe, uid, cgroup)"),
        (_group('run = { command = ["x"], count = 1, restart = "always" }\n'),
         ("f.toml:4: group 'web': key 'run.restart': unknown key 'restart' (use command, count, backoff_initial, "
         "backoff_max)")),
        ('quic = true\n' + _group('adopt = { comm = "nginx" }\n'),
         "f.toml:1: key 'quic': unknown key (the file holds [[group]] tables)"),
        # wrong types
        (_group('adopt = { comm = "nginx" }\nweight = "2"\n'),
         "f.toml:5: group 'web': key 'weight': weight of every member: '2' is not a whole number"),
        (_group('adopt = "nginx"\n'),
         "f.toml:4: group 'web': key 'adopt': a string where a table { comm, exe, uid, cgroup } belongs"),
        (_group('adopt = { comm = "nginx" }\ndrain = "nginx-2"\n'),
         """f.toml:5: group 'web': key 'drain': a string where an array of member names ["nginx-2"] belongs"""),
        (_group('\n\n[group.adopt]\ncomm = 7\n'),
         "f.toml:7: group 'web': key 'adopt.comm': an integer where a string belongs"),
        (_group('run = { command = "/srv/api", count = 2 }\n'),
         "f.toml:4: group 'web': key 'run.command': command must be a non-empty array of strings"),
        # out of range
        (_group('adopt = { comm = "nginx" }\n[group.weights]\n"a" = 1\n"b" = 10001\n'),
         "f.toml:7: group 'web': key 'weights.b': weight of b: 10001 is out of range 0..10000"),
        (_group('run = { command = ["x"], count = 0 }\n'),
         "f.toml:4: group 'web': key 'run.count': count 0 is out of range 1..256"),
        (_group('adopt = { comm = "nginx" }\nadaptive = "yes"\n'),
         "f.toml:5: group 'web': key 'adaptive': a string where true or false belongs"),
        (_group('adopt = { comm = "nginx" }\nadaptive_queue = 1\n'),
         "f.toml:5: group 'web': key 'adaptive_queue': 1 is out of range 2..65535"),
        (_group('adopt = { comm = "nginx" }\nadaptive_interval_ms = 2.5\n'),
         "f.toml:5: group 'web': key 'adaptive_interval_ms': a number where a whole number of milliseconds belongs"),
        (_group('adopt = { comm = "nginx" }\nadaptive_interval_ms = 500\n'),
         "f.toml:5: group 'web': key 'adaptive_interval_ms': 500 is out of range 5..125"),
        # one threshold per protocol, in its queue's unit
        ('[[group]]\nname = "dns"\nlisten = "udp:127.0.0.1:53"\nadopt = { comm = "x" }\nadaptive_queue = 8\n',
         ("f.toml:5: group 'dns': key 'adaptive_queue': for TCP groups only (udp:127.0.0.1:53 is UDP: its "
         "threshold is 'adaptive_queue_bytes', in bytes)")),
        (_group('adopt = { comm = "nginx" }\nadaptive_queue_bytes = 65536\n'),
         ("f.toml:5: group 'web': key 'adaptive_queue_bytes': for UDP groups only (tcp:127.0.0.1:8080 is TCP: "
         "its threshold is 'adaptive_queue', in connections)")),
        ('[[group]]\nname = "dns"\nlisten = "udp:127.0.0.1:53"\nadopt = { comm = "x" }\nadaptive_queue_bytes = 1024\n',
         "f.toml:5: group 'dns': key 'adaptive_queue_bytes': 1024 is out of range 4096..1073741824"),
        ('[[group]]\nname = "dns"\nlisten = "udp:127.0.0.1:53"\nadopt = { comm = "x" }\nadaptive_queue_bytes = "64k"\n',
         "f.toml:5: group 'dns': key 'adaptive_queue_bytes': a string where a whole number of bytes belongs"),
        # bad pins, names, adopt rules
        (_group('adopt = { comm = "nginx" }\npin = "rss"\n'),
         """f.toml:5: group 'web': key 'pin': 'rss': use "cpu", "rss:DEVICE" (e.g. "rss:eth0") or "weighted\""""),
        (_group('adopt = { comm = "nginx" }\npin = "rss:eth0\\n"\n'),
         """f.toml:5: group 'web': key 'pin': 'rss:eth0\\n': use "cpu", "rss:DEVICE" (e.g. "rss:eth0") or "weighted\""""),
        (_group('adopt = { comm = "nginx" }\nnames = "{comm}-{port}"\n'),
         ("f.toml:5: group 'web': key 'names': name format '{comm}-{port}': unknown field {port} "
         "(use {comm}, {pid}, {fd}, {i})")),
        (_group('run = { command = ["x"], count = 2 }\nnames = "{comm}-{i}"\n'),
         ("f.toml:5: group 'web': key 'names': name format '{comm}-{i}': unknown field {comm} (use {i}) "
         "(a run group's members are named before they start)")),
        (_group('adopt = {}\n'),
         ("f.toml:4: group 'web': key 'adopt': give at least one of comm, exe, uid, cgroup (an empty rule would "
         "admit every process)")),
        (_group('adopt = { comm = "a-very-long-process-name" }\n'),
         ("f.toml:4: group 'web': key 'adopt.comm': comm 'a-very-long-process-name': the kernel keeps 1..15 bytes "
         "of a process name")),
        (_group('adopt = { uid = "no-such-user-here" }\n'),
         "f.toml:4: group 'web': key 'adopt.uid': no user 'no-such-user-here' on this machine"),
        (_group('adopt = { exe = "nginx" }\n'),
         "f.toml:4: group 'web': key 'adopt.exe': exe 'nginx' is not an absolute path"),
        # listen that does not parse
        ('[[group]]\nname = "web"\nlisten = "127.0.0.1:8080"\nadopt = { comm = "nginx" }\n',
         ("f.toml:3: group 'web': key 'listen': '127.0.0.1:8080': write PROTO:ADDRESS:PORT with tcp or udp "
         "(tcp:127.0.0.1:8080, udp:[::1]:53)")),
        ('[[group]]\nname = "web"\nlisten = "tcp:::1:8080"\nadopt = { comm = "nginx" }\n',
         "f.toml:3: group 'web': key 'listen': 'tcp:::1:8080': put an IPv6 address in brackets: [::1]:8080"),
        ('[[group]]\nname = "web"\nlisten = "tcp:localhost:8080"\nadopt = { comm = "nginx" }\n',
         ("f.toml:3: group 'web': key 'listen': 'tcp:localhost:8080': use HOST:PORT or [V6ADDR]:PORT with a "
         "literal address")),
        # missing keys, adopt and run together
        ('[[group]]\nname = "web"\nadopt = { comm = "nginx" }\n', "f.toml:1: group 'web': key 'listen': missing"),
        (_group(''), ("f.toml:1: group 'web': key 'adopt' or 'run': give exactly one: adopt (whose listeners are "
                     "members) or run (members rpctl launches)")),
        (_group('adopt = { comm = "x" }\nrun = { command = ["x"], count = 1 }\n'),
         ("f.toml:1: group 'web': key 'adopt' or 'run': give exactly one: adopt (whose listeners are members) or "
         "run (members rpctl launches)")),
        # duplicates
        (_group('adopt = { comm = "a" }\n') + '\n' + _group('adopt = { comm = "b" }\n').replace("8080", "8081"),
         "f.toml:7: group 'web': key 'name': a second group of this name (the first is at line 1)"),
        (_group('adopt = { comm = "a" }\n') + _group('adopt = { comm = "b" }\n').replace('"web"', '"api"'),
         "f.toml:7: group 'api': key 'listen': tcp:127.0.0.1:8080 is group 'web''s already (line 1)"),
        ('[[group]]\nname = "no/slash"\n',
         ("f.toml:2: group 'no/slash': key 'name': group name 'no/slash': use 1-63 letters, digits, '_' or '-', "
         "starting with a letter or digit")),
        # creation options: UDP only, checked by GroupOptions.check()
        (_group('adopt = { comm = "nginx" }\nquic = true\n'),
         ("f.toml:5: group 'web': key 'quic': for UDP groups only (tcp:127.0.0.1:8080 is TCP: the kernel places a "
          "connection once)")),
        (_group('adopt = { comm = "nginx" }\nflow_affinity = false\n'),
         ("f.toml:5: group 'web': key 'flow_affinity': for UDP groups only (tcp:127.0.0.1:8080 is TCP: the kernel "
          "places a connection once)")),
        (_udp('flow_table_size = 100\n'),
         ("f.toml:5: group 'dns': key 'flow_table_size': flow table size 100: use a power of two of flows in "
          "256..4194304")),
        (_udp('\nflow_table_size = 1.5\n'),
         "f.toml:6: group 'dns': key 'flow_table_size': a number where a number of flows belongs"),
        (_udp('flow_idle_timeout = 0\n'),
         "f.toml:5: group 'dns': key 'flow_idle_timeout': flow idle timeout 0: use seconds in 0.1..86400"),
        (_udp('flow_idle_timeout = "30s"\n'),
         "f.toml:5: group 'dns': key 'flow_idle_timeout': a string where seconds belongs"),
        (_udp('flow_affinity = "no"\n'),
         "f.toml:5: group 'dns': key 'flow_affinity': a string where true or false belongs"),
        (_udp('flow_affinity = false\nflow_idle_timeout = 5\n'),
         ("f.toml:6: group 'dns': key 'flow_idle_timeout': a group with flow_affinity = false has no flow table "
          "(leave the key out)")),
        (_udp('quic = 1\n'), "f.toml:5: group 'dns': key 'quic': an integer where true or false belongs"),
        (_udp('quic = true\nquic_server_id_length = 9\n'),
         "f.toml:6: group 'dns': key 'quic_server_id_length': QUIC server id length 9: use 1..4 bytes"),
        (_udp('quic_server_id_length = 2\n'),
         ("f.toml:5: group 'dns': key 'quic_server_id_length': a QUIC server id length goes with QUIC routing "
          "(add quic = true)")),
        (_group('adopt = { comm = "nginx" }\nbalance = "datagram"\n'),
         ("f.toml:5: group 'web': key 'balance': for UDP groups only (tcp:127.0.0.1:8080 is TCP: the kernel "
          "places a connection once)")),
        (_udp('balance = "random"\n'),
         "f.toml:5: group 'dns': key 'balance': balance 'random': use hash or datagram"),
        (_udp('balance = 1\n'),
         "f.toml:5: group 'dns': key 'balance': an integer where \"hash\" or \"datagram\" belongs"),
        (_udp('flow_affinity = true\nbalance = "datagram"\n'),
         ("f.toml:6: group 'dns': key 'balance': datagram balance places every datagram anew, flow affinity keeps "
          "a flow on its member: choose one")),
        (_udp('balance = "datagram"\nflow_table_size = 1024\n'),
         ("f.toml:5: group 'dns': key 'balance': datagram balance keeps no flows: a flow table's size and idle "
          "timeout do not apply")),
        (_udp('quic = true\nbalance = "datagram"\n'),
         ("f.toml:6: group 'dns': key 'balance': datagram balance would spread a QUIC connection's first packets "
          "(before it has a server id) over the members: not with QUIC routing")),
        (_udp('quic_server_ids = "cookie"\n'),
         "f.toml:5: group 'dns': key 'quic_server_ids': for adopted groups with quic = true only"),
        (_udp('quic = true\nquic_server_ids = "mine"\n'),
         "f.toml:6: group 'dns': key 'quic_server_ids': 'mine': use \"assigned\" or \"cookie\""),
        (_group('adopt = { comm = "nginx" }\ngenerations = "oldest"\n'),
         "f.toml:5: group 'web': key 'generations': 'oldest': use \"newest\" or { canary = PERCENT }"),
        (_group('adopt = { comm = "nginx" }\ngenerations = { canary = 100 }\n'),
         "f.toml:5: group 'web': key 'generations.canary': 100 is not a percent between 0 and 100 (both left out)"),
        (_group('adopt = { comm = "nginx" }\ngeneration_by = "unit"\n'),
         "f.toml:5: group 'web': key 'generation_by': 'unit': use \"process\" or \"cgroup\""),
        (_group('run = { command = ["x"], count = 2 }\ngenerations = "newest"\n'),
         ("f.toml:5: group 'web': key 'generations': for adopted groups only (a run group's members are "
          "restarted one by one: rpctl restart, rpctl rollout)")),
        # syntax errors: their own line
        (_group('adopt = { comm = "nginx" }\n\nweights = { "a" = 1\n'), None),
    ],
)
def test_each_refusal_is_one_line_with_file_line_group_and_key(text, line):
    with pytest.raises(InvalidInput) as e:
        config.loads(text, "f.toml")
    msg = str(e.value)
    assert "\n" not in msg and e.value.exit_status == ExitStatus.INVALID
    if line is not None:
        assert msg == line
    else:
        assert msg.startswith("f.toml:6: not valid TOML: "), msg


def test_a_syntax_error_names_its_own_line():
    with pytest.raises(InvalidInput, match=r"^f.toml:6: not valid TOML: "):
        config.loads(_group('adopt = { comm = "nginx" }\n\nweights = { "a" = 1\n'), "f.toml")


def test_load_reads_the_file_and_names_it(tmp_path):
    path = tmp_path / "rpctl.toml"
    path.write_text(GOOD)
    assert [g.name for g in config.load(str(path)).groups] == ["web", "api", "dns"]
    with pytest.raises(NotFound, match=r"config file .*/missing.toml: no such file"):
        config.load(str(tmp_path / "missing.toml"))
    path.write_bytes(b'[[group]]\nname = "\xff"\n')
    with pytest.raises(InvalidInput, match=r"rpctl.toml:2: not valid TOML: the file is not UTF-8"):
        config.load(str(path))


def test_the_default_path():
    assert config.DEFAULT_PATH == "/etc/rpctl/rpctl.toml"


def test_adopt_rules_match_every_field_given():
    rule = AdoptRule(comm="nginx", uid=33, cgroup="/system.slice/nginx.service")
    assert rule.matches("nginx", "/usr/sbin/nginx", 33, "/system.slice/nginx.service")
    assert rule.matches("nginx", None, 33, "/system.slice/nginx.service/worker")
    assert not rule.matches("nginx", None, 33, "/system.slice/nginx.service2")
    assert not rule.matches("nginx", None, 0, "/system.slice/nginx.service")
    assert rule.mismatch("python3", None, 33, "/") == "comm 'python3' is not 'nginx'"
    assert rule.mismatch("nginx", None, 33, "/") == "cgroup '/' is not '/system.slice/nginx.service'"
    assert AdoptRule(exe="/usr/sbin/nginx").mismatch("nginx", None, 0, None) == "exe None is not '/usr/sbin/nginx'"


def test_generations_read_from_the_file():
    from rpctl.controller.tables.server_generations import NEWEST, Rollout

    spec = config.loads(_group('adopt = { comm = "nginx" }\ngenerations = { canary = 2.5 }\n'
                               'generation_by = "cgroup"\n')).groups[0]
    assert (spec.rollout, spec.generation_by) == (Rollout(2.5), "cgroup")
    assert config.loads(_group('adopt = { comm = "nginx" }\ngenerations = "newest"\n')).groups[0].rollout == NEWEST
    assert config.loads(_group('adopt = { comm = "nginx" }\n')).groups[0].rollout is None


# Hostile files: generated documents, and valid files with one thing changed ----------------------

# Every key of a [[group]] table, valid together (UDP options, QUIC, a canary rollout).
RICH = {"group": [
    {"name": "web", "listen": "tcp:127.0.0.1:8080", "adopt": {"comm": "nginx", "uid": 0, "cgroup": "/a"},
     "names": "{comm}-{i}", "weight": 2, "weights": {"nginx-1": 3}, "drain": ["nginx-2"], "pin": "cpu",
     "adaptive": True, "adaptive_queue": 16, "adaptive_interval_ms": 40, "generations": {"canary": 5},
     "generation_by": "process"},
    {"name": "api", "listen": "tcp:[::1]:9090",
     "run": {"command": ["/srv/api", "3"], "count": 4, "backoff_initial": 0.5, "backoff_max": 8}},
    {"name": "quic", "listen": "udp:127.0.0.1:443", "adopt": {"exe": "/usr/sbin/q"}, "quic": True,
     "quic_server_id_length": 2, "quic_server_ids": "cookie", "flow_affinity": True, "flow_table_size": 1024,
     "flow_idle_timeout": 2.5, "adaptive_queue_bytes": 32768, "pin": "rss:eth0", "generations": "newest"},
]}


def _refused_in_one_line(load, source) -> None:
    """Loading `source` gives a Config or refuses with an rpctl error of one line."""
    try:
        load(source)
    except RpctlError as e:
        assert "\n" not in str(e) and str(e).startswith("f.toml:") or isinstance(e, NotFound), str(e)


def test_the_rich_document_is_valid():
    assert [g.name for g in config.loads(hostile.toml_groups(RICH), "f.toml").groups] == ["web", "api", "quic"]


@given(st.dictionaries(st.sampled_from(["group"]) | hostile.text,
                       st.lists(st.dictionaries(st.sampled_from(list(config.GROUP_KEYS)) | hostile.text,
                                                hostile.values, max_size=8), max_size=3) | hostile.values,
                       max_size=3))
def test_a_generated_document_is_read_or_refused_in_one_line(doc):
    _refused_in_one_line(lambda text: config.loads(text, "f.toml"), hostile.toml_groups(doc))


@given(hostile.changed_document(RICH, list(config.GROUP_KEYS)))
@example({"group": [{**RICH["group"][1], "listen": "tcp:\n[::1]:9090"}]})  # found by the fuzz profile
@example({"group": [{**RICH["group"][0], "weights": {"a\nb": -1}}]})  # a member name with a newline
def test_a_valid_file_with_one_key_type_or_value_changed_is_read_or_refused_in_one_line(doc):
    _refused_in_one_line(lambda text: config.loads(text, "f.toml"), hostile.toml_groups(doc))


@given(hostile.mutated(hostile.toml_groups(RICH).encode()) | hostile.mutated(GOOD.encode()))
def test_a_valid_file_with_one_byte_changed_is_read_or_refused_in_one_line(raw):
    _refused_in_one_line(lambda b: config.loadb(b, "f.toml"), raw)


@hostile.with_fixtures
@given(raw=hostile.mutated(hostile.toml_groups(RICH).encode()))
def test_apply_refuses_a_damaged_file_in_one_line_and_its_exit_code(raw, cli_without_system, tmp_path_factory):
    try:
        config.loadb(raw, "f.toml")
    except RpctlError as e:
        want = e.exit_status
    else:
        assume(False)  # a change that leaves the file valid (a comment, a name): apply would go on
    path = tmp_path_factory.mktemp("conf") / "rpctl.toml"
    path.write_bytes(raw)
    status, out, err = invoke(["apply", "-c", path, "--dry-run"])
    assert status == want == ExitStatus.INVALID and out == ""
    assert_one_error_line(err)
