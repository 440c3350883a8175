"""controller/kernel/maps.py without the bpf syscall: the bpf calls of controller/kernel/bpfsys.py
are replaced by a fake that records them and answers with bytes the test chose.  What is held
here: the specs a map is made from and checked against (a mismatch refused, with what it is and
what was expected), and how keys and values are packed and unpacked, per-CPU strides included.
That the kernel answers as the fake does (a real map fd) is the kernel tests' part."""

from __future__ import annotations

import array
import ctypes
import errno
import os
import re

import pytest
from rpctl.controller.contract import abi
from rpctl.controller.contract.errors import StateError
from rpctl.controller.kernel import bpfsys
from rpctl.controller.kernel.maps import Map, array_flags

SPEC = {spec.name: spec for spec in abi.GROUP_MAPS}


class U32(ctypes.Structure):
    _fields_ = [("v", ctypes.c_uint32)]  # 4 bytes: a per-CPU copy takes 8


class Three(ctypes.Structure):
    _fields_ = [("a", ctypes.c_uint32), ("b", ctypes.c_uint32), ("c", ctypes.c_uint32)]  # 12: takes 16


def put_bytes(buf, offset: int, data: bytes) -> None:
    ctypes.memmove(ctypes.addressof(buf) + offset, data, len(data))


class FakeBpf:
    """bpfsys' map calls, recorded; lookups answered from `elements` (key -> value bytes)."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple] = []
        self.elements: dict[int, bytes] = {}
        self.batch_got: int | None = None  # how many elements a batch read says it read (None: all)
        self.info = bpfsys.MapInfo()
        self.opened: list[int] = []
        for name in ("map_create", "map_lookup", "map_update", "map_delete", "map_lookup_batch",
                     "map_update_batch", "obj_get", "obj_pin", "map_info"):
            monkeypatch.setattr(bpfsys, name, getattr(self, name))

    def map_create(self, map_type, key_size, value_size, max_entries, name, flags=0):
        self.calls.append(("create", map_type, key_size, value_size, max_entries, name, flags))
        return 99

    def map_lookup(self, fd, key, value, what="map lookup"):
        self.calls.append(("lookup", fd, type(key), key.value, what))
        if key.value not in self.elements:
            return False
        put_bytes(value, 0, self.elements[key.value])
        return True

    def map_update(self, fd, key, value, flags=bpfsys.BPF_ANY, what="map update"):
        self.calls.append(("update", fd, type(key), key.value, bytes(value), flags, what))

    def map_delete(self, fd, key, what="map delete"):
        self.calls.append(("delete", fd, type(key), key.value, what))
        return self.elements.pop(key.value, None) is not None

    def map_lookup_batch(self, fd, keys, values, count, what="map batch lookup", start=0):
        self.calls.append(("lookup_batch", fd, count, what))
        got = count if self.batch_got is None else self.batch_got
        size = ctypes.sizeof(values) // count
        for i in range(got):
            keys[i] = i
            put_bytes(values, i * size, self.elements.get(i, b"").ljust(size, b"\0"))
        return got

    def map_update_batch(self, fd, keys, values, count, what="map batch update"):
        self.calls.append(("update_batch", fd, list(keys), list(values), count, what))

    def obj_get(self, path):
        fd = os.open(os.devnull, os.O_RDONLY)  # a real fd, so that closing it can be seen
        self.opened.append(fd)
        return fd

    def obj_pin(self, fd, path):
        self.calls.append(("pin", fd, path))

    def map_info(self, fd):
        return self.info


@pytest.fixture
def bpf(monkeypatch) -> FakeBpf:
    return FakeBpf(monkeypatch)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as e:
        assert e.errno == errno.EBADF
        return False
    return True


def info_of(spec: abi.MapSpec, entries: int | None = None, **changed) -> bpfsys.MapInfo:
    fields = {"type": spec.map_type, "key_size": spec.key_size, "value_size": spec.value_size,
              "max_entries": spec.max_entries if entries is None else entries}
    return bpfsys.MapInfo(**{**fields, **changed})


# Specs: what a map is made as, and what an opened one must be -------------------------------------


def test_only_plain_arrays_are_made_mappable():
    assert array_flags(abi.MAP_TYPE_ARRAY) == bpfsys.BPF_F_MMAPABLE
    for map_type in (abi.MAP_TYPE_PERCPU_ARRAY, abi.MAP_TYPE_LRU_HASH, abi.MAP_TYPE_REUSEPORT_SOCKARRAY):
        assert array_flags(map_type) == 0


@pytest.mark.parametrize("spec", [s for s in abi.GROUP_MAPS if s.max_entries != abi.SIZED_AT_CREATION],
                         ids=lambda s: s.name)
def test_a_map_is_made_as_its_spec_says(bpf, spec):
    m = Map.create(spec, max_entries=12345)  # a fixed size wins over the one given
    assert (m.fd, m.spec) == (99, spec)
    flags = bpfsys.BPF_F_MMAPABLE if spec.map_type == abi.MAP_TYPE_ARRAY else 0
    assert bpf.calls == [("create", spec.map_type, spec.key_size, spec.value_size, spec.max_entries,
                          "rp_" + spec.name, flags)]


def test_a_map_sized_at_creation_needs_its_size(bpf):
    flows = SPEC["flows"]
    assert flows.max_entries == abi.SIZED_AT_CREATION
    with pytest.raises(ValueError, match="map flows: its size is set at creation and none was given"):
        Map.create(flows)
    with pytest.raises(ValueError, match="none was given"):
        Map.create(flows, max_entries=0)
    assert bpf.calls == []
    Map.create(flows, max_entries=2048)
    Map.create(flows, max_entries=abi.FLOW_SETS_DEFAULT)
    # INNER_MAP: the shared program's array of flow tables of other sizes holds
    # tables of any size; tables of the default size go without it, so that the
    # verifier inlines their lookups.
    assert bpf.calls == [
        ("create", flows.map_type, 4, ctypes.sizeof(abi.RpFlowSet), 2048, "rp_flows",
         bpfsys.BPF_F_MMAPABLE | bpfsys.BPF_F_INNER_MAP),
        ("create", flows.map_type, 4, ctypes.sizeof(abi.RpFlowSet), abi.FLOW_SETS_DEFAULT, "rp_flows",
         bpfsys.BPF_F_MMAPABLE),
    ]


@pytest.mark.parametrize("spec", abi.GROUP_MAPS, ids=lambda s: s.name)
def test_a_pinned_map_of_its_spec_opens(bpf, spec):
    bpf.info = info_of(spec, entries=4096 if spec.max_entries == abi.SIZED_AT_CREATION else None)
    m = Map.open_pinned(f"/sys/fs/bpf/rpctl/netns1/web/{spec.name}", spec)
    assert (m.fd, m.spec) == (bpf.opened[0], spec) and is_open(m.fd)
    m.close()
    assert m.fd == -1 and not is_open(bpf.opened[0])
    m.close()  # twice: nothing more to close


@pytest.mark.parametrize(
    "changed, got",
    [
        ({"key_size": 8}, "(2, 8, 64, 1)"),
        ({"value_size": 56}, "(2, 4, 56, 1)"),
        ({"type": abi.MAP_TYPE_PERCPU_ARRAY}, "(6, 4, 64, 1)"),
        ({"max_entries": 2}, "(2, 4, 64, 2)"),
    ],
)
def test_a_pinned_map_of_another_shape_is_refused_and_closed(bpf, changed, got):
    ctl = SPEC["ctl"]
    bpf.info = info_of(ctl, **changed)
    path = "/sys/fs/bpf/rpctl/netns1/web/ctl"
    with pytest.raises(StateError) as refused:
        Map.open_pinned(path, ctl)
    assert str(refused.value) == (
        f"open {path}: map is (type, key, value, entries) {got}, this rpctl expects (2, 4, 64, 1); "
        "it was made by another rpctl version: unload its group with force=True (its program is detached) "
        "to make it anew"
    )
    assert not is_open(bpf.opened[0])


def test_a_map_sized_at_creation_opens_at_any_size_but_not_of_another_shape(bpf):
    flows = SPEC["flows"]
    for entries in (1, 512, 1 << 20):
        bpf.info = info_of(flows, entries=entries)
        Map.open_pinned("flows", flows).close()
    bpf.info = info_of(flows, entries=512, value_size=64)
    with pytest.raises(StateError, match=re.escape("map is (type, key, value, entries) (2, 4, 64, 512), "
                                                   "this rpctl expects (2, 4, 128, 512)")):
        Map.open_pinned("flows", flows)
    assert [is_open(fd) for fd in bpf.opened] == [False] * 4


def test_a_failed_info_read_closes_the_fd(bpf, monkeypatch):
    def fail(fd):
        raise bpfsys.BpfError(errno.EINVAL, "read map info: Invalid argument")

    monkeypatch.setattr(bpfsys, "map_info", fail)
    with pytest.raises(bpfsys.BpfError):
        Map.open_pinned("ctl", SPEC["ctl"])
    assert not is_open(bpf.opened[0])


def test_pin_pins_the_maps_fd(bpf):
    Map(7, SPEC["ctl"]).pin("/sys/fs/bpf/rpctl/netns1/_tmp-web-1/ctl")
    assert bpf.calls == [("pin", 7, "/sys/fs/bpf/rpctl/netns1/_tmp-web-1/ctl")]


# Single elements ----------------------------------------------------------------------------------


def test_get_unpacks_an_element_and_none_when_there_is_none(bpf):
    members = Map(7, SPEC["members"])
    member = abi.RpMember(name=b"worker-1", cookie=0x1122334455667788, pid=4242, fd=5, incarnation=3)
    bpf.elements[2] = bytes(member)
    got = members.get(2, abi.RpMember)
    assert isinstance(got, abi.RpMember)
    assert (got.name, got.cookie, got.pid, got.fd, got.incarnation) == (b"worker-1", 0x1122334455667788, 4242, 5, 3)
    assert members.get(3, abi.RpMember) is None
    assert bpf.calls == [("lookup", 7, ctypes.c_uint32, 2, "read members[2]"),
                         ("lookup", 7, ctypes.c_uint32, 3, "read members[3]")]


def test_put_packs_the_value_under_a_u32_key(bpf):
    ctl_map = Map(8, SPEC["ctl"])
    ctl = abi.RpCtl(gen=5, proto=abi.RP_PROTO_TCP, port=8080)
    ctl_map.put(0, ctl)
    ctl_map.put(0, ctypes.c_uint64(1 << 40), flags=bpfsys.BPF_EXIST)
    assert bpf.calls == [
        ("update", 8, ctypes.c_uint32, 0, bytes(ctl), bpfsys.BPF_ANY, "write ctl[0]"),
        ("update", 8, ctypes.c_uint32, 0, (1 << 40).to_bytes(8, "little"), bpfsys.BPF_EXIST, "write ctl[0]"),
    ]


def test_delete_says_whether_there_was_an_element(bpf):
    socks = Map(9, SPEC["socks"])
    bpf.elements[4] = bytes(8)
    assert socks.delete(4) is True
    assert socks.delete(4) is False
    assert bpf.calls[0] == ("delete", 9, ctypes.c_uint32, 4, "delete socks[4]")


# Whole arrays -------------------------------------------------------------------------------------


def test_read_structs_unpacks_every_element_in_one_call(bpf):
    members = Map(3, SPEC["members"])
    for i in range(4):
        bpf.elements[i] = bytes(abi.RpMember(name=f"w{i}".encode(), pid=100 + i))
    got = members.read_structs(abi.RpMember, 4)
    assert [(m.name, m.pid) for m in got] == [(b"w0", 100), (b"w1", 101), (b"w2", 102), (b"w3", 103)]
    assert bpf.calls == [("lookup_batch", 3, 4, "read members")]


def test_read_structs_and_read_bytes_refuse_a_short_read(bpf):
    members = Map(3, SPEC["members"])
    bpf.batch_got = 3
    with pytest.raises(StateError, match="read members: got 3 of 4 elements"):
        members.read_structs(abi.RpMember, 4)
    with pytest.raises(StateError, match="read members: got 3 of 4 elements"):
        members.read_bytes(abi.RpMember, 4)


def test_read_bytes_is_the_elements_end_to_end(bpf):
    flows = Map(4, SPEC["flows"])
    sets = [abi.RpFlowSet() for _ in range(3)]
    for i, s in enumerate(sets):
        s.way[0].tag, s.way[0].member = 0xABC0 + i, i
        bpf.elements[i] = bytes(s)
    raw = flows.read_bytes(abi.RpFlowSet, 3)
    assert len(raw) == 3 * ctypes.sizeof(abi.RpFlowSet)
    assert raw == b"".join(bytes(s) for s in sets)


def test_write_u32s_writes_a_run_from_its_start_key(bpf):
    Map(5, SPEC["gens"]).write_u32s(10, array.array("I", [7, 8, 9]))
    assert bpf.calls == [("update_batch", 5, [10, 11, 12], [7, 8, 9], 3, "write gens")]


# Per-CPU values -----------------------------------------------------------------------------------


def per_cpu(values: list[ctypes.Structure], stride: int) -> bytes:
    """Per-CPU copies as the kernel lays them out: each rounded up to 8 bytes."""
    return b"".join(bytes(v).ljust(stride, b"\0") for v in values)


@pytest.mark.parametrize("value_type, stride", [(U32, 8), (Three, 16), (abi.RpMemberStats, 64)])
def test_read_percpu_unpacks_one_copy_a_cpu_at_its_stride(bpf, value_type, stride):
    ncpus = bpfsys.possible_cpus()
    copies = [value_type(*(range(cpu + 1, cpu + 1 + len(value_type._fields_)))) for cpu in range(ncpus)]
    bpf.elements[1] = per_cpu(copies, stride)
    got = Map(6, SPEC["member_stats"]).read_percpu(1, value_type)
    assert [bytes(v) for v in got] == [bytes(c) for c in copies]
    assert Map(6, SPEC["member_stats"]).read_percpu(2, value_type) == []  # no element


def test_read_percpu_all_unpacks_every_element_of_every_cpu(bpf):
    ncpus = bpfsys.possible_cpus()
    want = [[Three(i, cpu, i * 100 + cpu) for cpu in range(ncpus)] for i in range(3)]
    flat = per_cpu([v for copies in want for v in copies], 16)
    element = 16 * ncpus
    for i in range(3):
        bpf.elements[i] = flat[i * element:(i + 1) * element]
    got = Map(6, SPEC["member_stats"]).read_percpu_all(Three, 3)
    assert [[(v.a, v.b, v.c) for v in copies] for copies in got] == \
        [[(v.a, v.b, v.c) for v in copies] for copies in want]
    some = Map(6, SPEC["member_stats"]).read_percpu_all(Three, 3, indexes={2})
    assert some[0] == some[1] == []
    assert [(v.a, v.b, v.c) for v in some[2]] == [(v.a, v.b, v.c) for v in want[2]]
    bpf.batch_got = 2
    with pytest.raises(StateError, match="read member_stats: got 2 of 3 elements"):
        Map(6, SPEC["member_stats"]).read_percpu_all(Three, 3)
