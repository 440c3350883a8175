"""Holds controller/contract/abi.py (the ctypes mirror) to bpf/rpctl.h (the C the program is built from).

A C program generated from abi.STRUCTS' _fields_ and from the header's own RP_* names is
compiled with gcc: the compiler, not a hand-written table, says what every size, offset and
constant is.  No privileges needed.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from types import SimpleNamespace

import pytest
from rpctl.controller.contract import abi

from tests.support.bpf_source import BPF_DIR, HEADER, PROGRAM, fd_macros_in_program, strip_comments

# RP_* names of rpctl.h that abi.py need not define, each with the reason.  Empty today.
HEADER_ONLY: dict[str, str] = {}

# Map name -> C struct its value holds.
MAP_STRUCTS = {
    "ctl": "rp_ctl",
    "gens": "rp_gen",
    "members": "rp_member",
    "member_stats": "rp_member_stats",
    "group_stats": "rp_group_stats",
    "flows": "rp_flow_set",
}

# Maps the program never names: only user space reads them.
USER_SPACE_ONLY_MAPS = {"members"}


def header_constant_names() -> list[str]:
    """Every object-like #define RP_* and every RP_* enumerator of the header, in order."""
    text = strip_comments(HEADER.read_text())
    names = re.findall(r"^[ \t]*#[ \t]*define[ \t]+(RP_\w+)(?![\w(])", text, flags=re.MULTILINE)
    for body in re.findall(r"\benum\s+\w*\s*\{(.*?)\}", text, flags=re.DOTALL):
        names += re.findall(r"(?:^|,)\s*(RP_\w+)\s*(?==|,|$)", body.strip())
    assert len(names) == len(set(names)), f"an RP_* name is defined twice in {HEADER}: {names}"
    return names


def header_structs() -> dict[str, list[str]]:
    """C struct name -> its field names in order, as the header declares them."""
    text = strip_comments(HEADER.read_text())
    out = {}
    for name, body in re.findall(r"\bstruct\s+(\w+)\s*\{(.*?)\}\s*;", text, flags=re.DOTALL):
        fields = []
        for decl in body.split(";"):
            decl = decl.strip()
            if decl:
                m = re.search(r"(\w+)\s*(?:\[[^\]]*\]\s*)*$", decl)
                assert m, f"cannot read a field name in struct {name}: {decl!r}"
                fields.append(m.group(1))
        out[name] = fields
    return out


def _c_source(constants: list[str]) -> str:
    lines = [
        "#include <stddef.h>",
        "#include <stdio.h>",
        "#include <linux/types.h>",
        '#include "rpctl.h"',
        "",
        "int main(void)",
        "{",
    ]
    for cname, cls in abi.STRUCTS.items():
        lines.append(f'\tprintf("size {cname} %zu\\n", sizeof(struct {cname}));')
        for field, *_ in cls._fields_:
            lines.append(f'\tprintf("offset {cname}.{field} %zu\\n", offsetof(struct {cname}, {field}));')
            lines.append(
                f'\tprintf("fieldsize {cname}.{field} %zu\\n", sizeof(((struct {cname} *)0)->{field}));'
            )
    for name in constants:
        lines.append(f'\tprintf("const {name} %llu\\n", (unsigned long long)({name}));')
    lines += ["\treturn 0;", "}", ""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def c_facts(tmp_path_factory) -> SimpleNamespace:
    """What gcc says: struct sizes, field offsets and sizes, and constant values."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is not installed: the ABI test compiles bpf/rpctl.h (apt-get install gcc)")
    constants = header_constant_names()
    work = tmp_path_factory.mktemp("abi")
    src, exe = work / "abi_check.c", work / "abi_check"
    src.write_text(_c_source(constants))
    proc = subprocess.run(
        [gcc, "-std=gnu11", "-Wall", "-Werror", f"-I{BPF_DIR}", "-o", str(exe), str(src)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            "gcc could not compile the ABI check (a field of controller/contract/abi.py missing from "
            f"bpf/rpctl.h?):\n{proc.stderr}\n--- generated source ---\n{src.read_text()}"
        )
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30, check=True).stdout
    facts = SimpleNamespace(sizes={}, offsets={}, field_sizes={}, constants={})
    table = {
        "size": facts.sizes,
        "offset": facts.offsets,
        "fieldsize": facts.field_sizes,
        "const": facts.constants,
    }
    for line in out.splitlines():
        kind, key, value = line.split()
        table[kind][key] = int(value)
    assert set(facts.constants) == set(constants)
    return facts


# Structs ------------------------------------------------------------------------


def test_every_header_struct_is_mirrored_field_for_field():
    structs = header_structs()
    assert set(structs) == set(abi.STRUCTS), "abi.STRUCTS and the structs of rpctl.h differ"
    for cname, cls in abi.STRUCTS.items():
        fields = [f[0] for f in cls._fields_]
        assert fields == structs[cname], f"struct {cname}: fields differ or are misordered"


@pytest.mark.parametrize("cname", sorted(abi.STRUCTS))
def test_struct_size_matches_c(c_facts, cname):
    assert ctypes.sizeof(abi.STRUCTS[cname]) == c_facts.sizes[cname], f"sizeof(struct {cname})"


@pytest.mark.parametrize("cname", sorted(abi.STRUCTS))
def test_field_offsets_and_sizes_match_c(c_facts, cname):
    cls = abi.STRUCTS[cname]
    for field, *_ in cls._fields_:
        desc = getattr(cls, field)
        key = f"{cname}.{field}"
        assert desc.offset == c_facts.offsets[key], f"offsetof(struct {cname}, {field})"
        assert desc.size == c_facts.field_sizes[key], f"sizeof(struct {cname}.{field})"


def test_c_facts_cover_every_mirrored_field(c_facts):
    # Guards the generator itself: a field left out of the C program is a field not checked.
    expected = {f"{c}.{f[0]}" for c, cls in abi.STRUCTS.items() for f in cls._fields_}
    assert set(c_facts.offsets) == expected
    assert set(c_facts.field_sizes) == expected


# Constants --------------------------------------------------------------------


def test_header_constants_are_found():
    # The parser must see both kinds of names, or the checks below check nothing.
    names = header_constant_names()
    assert {"RP_ABI_VERSION", "RP_SLOTS", "RP_NO_MEMBER"} <= set(names)  # #defines
    assert {"RP_MEMBER_USED", "RP_POLICY_DRAINING", "RP_PROTO_UDP", "RP_MODE_WEIGHTED"} <= set(names)  # enums
    assert "RPCTL_H" not in names


def test_abi_defines_every_header_constant():
    missing = [n for n in header_constant_names() if n not in HEADER_ONLY and not hasattr(abi, n)]
    assert not missing, f"controller/contract/abi.py lacks {missing}: mirror them, or list them in HEADER_ONLY (why)"


def test_header_only_exceptions_are_current():
    names = set(header_constant_names())
    stale = [n for n in HEADER_ONLY if n not in names or hasattr(abi, n)]
    assert not stale, f"HEADER_ONLY lists {stale}, which rpctl.h no longer has or abi.py now defines"


def test_constant_values_match_c(c_facts):
    checked = 0
    for name, value in c_facts.constants.items():
        if hasattr(abi, name):
            assert getattr(abi, name) == value, f"{name}: abi.py says {getattr(abi, name)}, C says {value}"
            checked += 1
    assert checked == len(c_facts.constants) - len(HEADER_ONLY)


def test_abi_has_no_constant_the_header_lacks():
    names = set(header_constant_names())
    extra = sorted(n for n in vars(abi) if n.startswith("RP_") and n not in names)
    assert not extra, f"controller/contract/abi.py defines {extra}, which bpf/rpctl.h does not"


# Maps -------------------------------------------------------------------------


def test_map_value_sizes_match_c_structs(c_facts):
    for map_name, cname in MAP_STRUCTS.items():
        spec = abi.MAP_SPECS[map_name]
        assert spec.value_size == c_facts.sizes[cname], f"map {map_name} holds struct {cname}"


def test_map_shapes_follow_header_limits(c_facts):
    const = c_facts.constants
    specs = abi.MAP_SPECS
    assert len(specs) == len(abi.GROUP_MAPS), "two maps share a name"
    assert all(s.key_size == 4 for s in abi.GROUP_MAPS), "every map is an array indexed by a __u32"
    assert specs["gens"].max_entries == const["RP_GENERATIONS"]
    for name in ("socks", "members", "member_stats"):
        assert specs[name].max_entries == const["RP_MAX_MEMBERS"], name
    for name in ("ctl", "group_stats"):
        assert specs[name].max_entries == 1, name


def test_program_names_only_existing_maps():
    used = fd_macros_in_program()
    assert used, f"no RP_FD_* macro found in {PROGRAM}"
    shared = {abi.HANDOFF_SPEC.name, abi.PROGS_SPEC.name, abi.SIZED_FLOWS}
    unknown = sorted(m for m in used if m.lower() not in abi.MAP_SPECS and m.lower() not in shared)
    assert not unknown, f"the program uses RP_FD_{unknown} with no map of that name in abi.GROUP_MAPS"


def test_the_programs_read_every_map_they_are_given():
    # A group's program: its maps and the shared program's handoff and program
    # array; the shared program: an array of maps for each of SHARED_MAPS (and
    # one of flow tables of other sizes), and the handoff.
    used = {m.lower() for m in fd_macros_in_program()}
    assert used == set(abi.SHARED_MAPS) | {abi.SIZED_FLOWS, abi.HANDOFF_SPEC.name, abi.PROGS_SPEC.name}


def test_every_map_but_members_is_used_by_the_program():
    used = {m.lower() for m in fd_macros_in_program()}
    unused = set(abi.MAP_SPECS) - used
    assert unused == USER_SPACE_ONLY_MAPS
    assert set(abi.MAP_SPECS) - set(abi.SHARED_MAPS) == USER_SPACE_ONLY_MAPS


def test_map_names_are_valid_macro_suffixes():
    # The loader turns a map name into -DRP_FD_<NAME>: it must map back to the same name.
    for spec in abi.GROUP_MAPS:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", spec.name), spec.name
