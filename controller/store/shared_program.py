"""The steering program every group of this boot shares, and the slots through which it reaches each group's maps.

The verifier walks the whole steering program for 0.2 to 0.4 s of kernel
CPU; once per group, a host of a few hundred ports waited minutes.  So a
group's own program holds only the short cut (the common cases: a
weighted or CPU-pinned group's member, a known or new flow; maps as
constants, verified in about a millisecond) and hands everything else to
one program loaded once per boot and build (its folder named by
loader.shared_digest): it writes its slot into the per-CPU "handoff" and
tail-calls it through "progs" (bpf/handoff.h, docs/decisions/0017).  Element `slot` of an array of maps for each name of
abi.SHARED_MAPS holds the group's map of that name.

Writing an element of an array of maps from user space waits for an RCU
grace period (so that no program still sees the map it replaces), about
15 to 25 ms here: seven per group would cost more than the verifier did.
So slots come with their maps, made in batches (one batch write per array,
seven waits for up to MAX_BATCH slots); a group takes a free slot, whose
maps are clean (new, or cleared when freed); only a flow table of another
size than the slot's is swapped in (one wait).  A flow table of the default
size goes into its own array, "of_flows" (no BPF_F_INNER_MAP: the verifier
inlines its lookups), made for the first group of a slot that has one and
kept for the next; a table of another size (the slot's one-set table of a
group without flow affinity, from its batch) in "of_sized_flows".

Folder <bpffs>/rpctl/shared-<digest>/: prog, progs (the program array a
group's program jumps through: prog at 0), handoff, of_<name> for each of
abi.SHARED_MAPS and abi.SIZED_FLOWS, owners (the program id of each slot's group, 0 when
free).  Made whole in a temporary folder and renamed into place; removed
when its last group goes.  Every change holds the lock of <bpffs>/rpctl,
taken after any namespace's or group's lock.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import logging
import os
import re
import shutil
from typing import Iterator, Optional

from ..contract import abi
from ..contract.errors import RpctlError
from ..kernel import bpfsys
from ..kernel.bpffs import private_folder
from ..kernel.maps import Map
from ..kernel.sockets import process_exists
from .state import FolderMade, folder_lock

log = logging.getLogger("rpctl.shared")

PREFIX = "shared-"
PROG_PIN = "prog"
PROGS_PIN = abi.PROGS_SPEC.name
# The maps the shared program is compiled against: an array of maps for each
# group map it reads (flow tables: two), and the handoff.
NAMES = abi.SHARED_MAPS + (abi.SIZED_FLOWS, abi.HANDOFF_SPEC.name)
# The arrays of maps, by the name the program knows each by, and the size of
# the map each holds (None: the map spec's own).
OUTER = {**{name: None for name in abi.SHARED_MAPS}, "flows": abi.FLOW_SETS_DEFAULT, abi.SIZED_FLOWS: 1}


def batch_array(name: str) -> str:
    """The array of maps a slot's map `name` is made into with its batch."""
    return abi.SIZED_FLOWS if name == "flows" else name
FIRST_BATCH = 8   # slots made with the first group, doubling to MAX_BATCH
MAX_BATCH = 64

_TEMP_RE = re.compile(r"^_(?:tmp|del)-shared-[0-9a-f]+-(\d+)$")


def outer_spec(name: str) -> abi.MapSpec:
    """The array of the groups' maps `name`, indexed by slot."""
    return abi.MapSpec(f"of_{name}", abi.MAP_TYPE_ARRAY_OF_MAPS, 4, 4, abi.SHARED_SLOTS)


def base_dir(root: str) -> str:
    return os.path.join(root, "rpctl")


@contextlib.contextmanager
def shared_lock(root: str) -> Iterator[None]:
    """The lock every change of a shared program and its slots holds."""
    private_folder(base_dir(root))
    with folder_lock(base_dir(root)):
        yield


def _group_programs_pinned(root: str) -> set[int]:
    """The program id of every group's pinned program, in every namespace's folder."""
    ids: set[int] = set()
    base = base_dir(root)
    for ns in os.listdir(base):
        if ns.startswith(PREFIX) or not os.path.isdir(os.path.join(base, ns)):
            continue
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for group in os.listdir(os.path.join(base, ns)):
                try:
                    fd = bpfsys.obj_get(os.path.join(base, ns, group, PROG_PIN))
                except OSError:
                    continue
                try:
                    ids.add(bpfsys.prog_info(fd).id)
                finally:
                    os.close(fd)
    return ids


class SharedProgram:
    """One shared program's pinned folder, opened: its maps by pin name."""

    def __init__(self, folder: str, maps: dict[str, Map]):
        self.folder = folder
        self.maps = maps

    # Opening ---------------------------------------------------------------

    @classmethod
    def opened(cls, root: str, digest: str, migrate: bool) -> "SharedProgram":
        """The shared program of build `digest`, made and loaded first when this
        boot has none.  The caller holds shared_lock(root)."""
        folder = os.path.join(base_dir(root), PREFIX + digest)
        if not os.path.isdir(folder):
            _sweep_temp(root)
            _create(folder, migrate)
        return cls(folder, _open_maps(folder))

    def close(self) -> None:
        for m in self.maps.values():
            m.close()

    def __enter__(self) -> "SharedProgram":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Slots ------------------------------------------------------------------

    def owners(self) -> array.array:
        """The program id of each slot's group, 0 for a free slot: one read."""
        return array.array("I", self.maps["owners"].read_bytes(ctypes.c_uint32, abi.SHARED_SLOTS))

    def made(self) -> int:
        """Slots whose maps exist: always the first ones (binary search on of_socks)."""
        lo, hi = 0, abi.SHARED_SLOTS
        while lo < hi:
            mid = (lo + hi) // 2
            if self.maps["of_socks"].get(mid, ctypes.c_uint32) is not None:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def take(self, flow_sets: int) -> tuple[int, dict[str, Map]]:
        """A free slot and its maps (the caller closes them), with a flow
        table of `flow_sets` sets: of the default size, the slot's own from an
        earlier group or a new one; of another, its batch's table, or a new
        one in its place.  A free slot's maps are clean: new, or cleared when
        freed.  Not yet claimed: the caller claims it under the same lock, or
        leaves it free."""
        made = self.made()
        free = [i for i, owner in enumerate(self.owners()[:made]) if not owner]
        if not free and made:
            # Slots of groups whose folders went without an unload (a namespace's
            # state removed by hand): theirs again.
            self.sweep(root_of(self.folder))
            free = [i for i, owner in enumerate(self.owners()[:made]) if not owner]
        if not free:
            if made >= abi.SHARED_SLOTS:
                raise RpctlError(f"no room for another group: {abi.SHARED_SLOTS} groups on this host already")
            self._make_slots(made, min(max(FIRST_BATCH, made), MAX_BATCH, abi.SHARED_SLOTS - made))
            free = [made]
        slot = free[0]
        maps = self._slot_maps(slot)
        try:
            table = None
            if flow_sets == abi.FLOW_SETS_DEFAULT:
                table = self._held(slot, "flows") or self._put_new(slot, "flows", flow_sets)
            elif bpfsys.map_info(maps["flows"].fd).max_entries != flow_sets:
                table = self._put_new(slot, abi.SIZED_FLOWS, flow_sets)
            if table is not None:
                maps["flows"].close()
                maps["flows"] = table
        except BaseException:
            for m in maps.values():
                m.close()
            raise
        return slot, maps

    def claim(self, slot: int, prog_id: int) -> None:
        """Record `slot` as the group's whose program is `prog_id`."""
        self.maps["owners"].put(slot, ctypes.c_uint32(prog_id))

    def release(self, slot: int, prog_id: int) -> bool:
        """Free `slot` if the group whose program is `prog_id` holds it, its maps cleared; whether it did."""
        owner = self.maps["owners"].get(slot, ctypes.c_uint32)
        if owner is None or owner.value != prog_id:
            return False
        self._free(slot)
        return True

    def sweep(self, root: str) -> int:
        """Free the slots whose group's program is pinned in no group folder; how many."""
        pinned = _group_programs_pinned(root)
        freed = 0
        for slot, owner in enumerate(self.owners()):
            if owner and owner not in pinned:
                self._free(slot)
                freed += 1
        if freed:
            log.info("freed %d slots of groups whose state was removed without an unload", freed)
        return freed

    def _free(self, slot: int) -> None:
        """Clear the slot's maps (its sockets out of the socket array, its
        tables and counters zero), then mark it free: a free slot is clean.
        Killed in between, the slot stays taken until a sweep frees it."""
        maps = list(self._slot_maps(slot).values())
        default_table = self._held(slot, "flows")
        if default_table is not None:
            maps.append(default_table)
        try:
            for m in maps:
                m.clear(bpfsys.map_info(m.fd).max_entries)
        finally:
            for m in maps:
                m.close()
        self.maps["owners"].put(slot, ctypes.c_uint32(0))

    def handoff_maps(self) -> dict[str, Map]:
        """The maps a group's program names besides its own: where it hands a
        selection over, and the program array it jumps through."""
        return {"handoff": self.maps["handoff"], PROGS_PIN: self.maps[PROGS_PIN]}

    # Maps of slots ------------------------------------------------------------

    def _make_slots(self, start: int, count: int) -> None:
        keys = (ctypes.c_uint32 * count)(*range(start, start + count))
        for name in abi.SHARED_MAPS:
            made = [Map.create(abi.MAP_SPECS[name], max_entries=1) for _ in range(count)]
            outer = f"of_{batch_array(name)}"
            try:
                fds = (ctypes.c_uint32 * count)(*(m.fd for m in made))
                bpfsys.map_update_batch(self.maps[outer].fd, keys, fds, count, f"add {count} slots to {outer}")
            finally:
                for m in made:
                    m.close()
        log.debug("made slots %d-%d of %s", start, start + count - 1, self.folder)

    def _slot_maps(self, slot: int) -> dict[str, Map]:
        """The slot's maps of its batch, by group map name ("flows": its
        table of another size than the default)."""
        maps: dict[str, Map] = {}
        try:
            for name in abi.SHARED_MAPS:
                m = self._held(slot, batch_array(name))
                if m is None:
                    raise RpctlError(f"{self.folder}: slot {slot} has no map {name}")
                maps[name] = m
        except BaseException:
            for m in maps.values():
                m.close()
            raise
        return maps

    def _held(self, slot: int, array: str) -> Optional[Map]:
        """The map the slot has in the array of maps `array` (a name of OUTER); None when it has none."""
        map_id = self.maps[f"of_{array}"].get(slot, ctypes.c_uint32)
        return None if map_id is None else Map.open_id(map_id.value, abi.MAP_SPECS[_inner(array)])

    def _put_new(self, slot: int, array: str, entries: int) -> Map:
        """A new map of `entries` elements in the array `array` at the slot,
        in place of any there (the caller holds the lock: one wait)."""
        m = Map.create(abi.MAP_SPECS[_inner(array)], max_entries=entries)
        try:
            self.maps[f"of_{array}"].put(slot, ctypes.c_uint32(m.fd))
        except BaseException:
            m.close()
            raise
        return m


def _inner(array: str) -> str:
    """The group map an array of maps named `array` (a name of OUTER) holds."""
    return "flows" if array == abi.SIZED_FLOWS else array


def root_of(folder: str) -> str:
    """The bpffs root of a shared program's folder."""
    return os.path.dirname(os.path.dirname(folder))


def _create(folder: str, migrate: bool) -> None:
    """Make, load and pin a shared program under a temporary name, then rename it into place."""
    from ..kernel import loader

    tmp = os.path.join(os.path.dirname(folder), f"_tmp-{os.path.basename(folder)}-{os.getpid()}")
    with FolderMade(tmp, folder, PROG_PIN) as made:
        for name, entries in OUTER.items():
            template = Map.create(abi.MAP_SPECS[_inner(name)], max_entries=entries or 1)
            spec = outer_spec(name)
            try:
                fd = bpfsys.map_create(spec.map_type, 4, 4, spec.max_entries, "rp_" + spec.name[:12],
                                       inner_map_fd=template.fd)
            finally:
                template.close()
            made.maps[name] = Map(fd, spec)
        made.maps["handoff"] = Map.create(abi.HANDOFF_SPEC)
        made.prog_fd = loader.load_shared(made.maps, migrate)
        made.maps[PROGS_PIN] = Map.create(abi.PROGS_SPEC)
        made.maps[PROGS_PIN].put(0, ctypes.c_uint32(made.prog_fd))
        made.maps["owners"] = Map.create(abi.OWNERS_SPEC)
        made.done()


def _open_maps(folder: str) -> dict[str, Map]:
    specs = [outer_spec(n) for n in OUTER] + [abi.HANDOFF_SPEC, abi.OWNERS_SPEC, abi.PROGS_SPEC]
    maps: dict[str, Map] = {}
    try:
        for spec in specs:
            maps[spec.name] = Map.open_pinned(os.path.join(folder, spec.name), spec)
    except BaseException:
        for m in maps.values():
            m.close()
        raise
    return maps


def folders(root: str) -> list[str]:
    """The shared programs' folders of this boot (usually one: one per rpctl build)."""
    base = base_dir(root)
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(base, n) for n in names if n.startswith(PREFIX))


def each_opened(root: str) -> Iterator[SharedProgram]:
    """Every shared program of this boot, opened in turn (the caller holds
    shared_lock).  A folder this rpctl cannot read (made by a version whose
    maps differ) is left as it is: that version's unload frees its slots."""
    for folder in folders(root):
        try:
            maps = _open_maps(folder)
        except (OSError, RpctlError) as e:
            log.info("%s left as it is: %s", folder, e)
            continue
        with SharedProgram(folder, maps) as sp:
            yield sp


def release(root: str, slot: int, prog_id: int) -> None:
    """Free the slot of a group whose folder is gone, in whichever shared
    program it is; remove that program's folder when no group is left on it."""
    with shared_lock(root):
        for sp in each_opened(root):
            if sp.release(slot, prog_id):
                remove_if_unused(sp)
                return


def sweep(root: str) -> None:
    """Free the slots of groups removed without an unload (a dead namespace's
    state), and remove the shared programs no group uses."""
    with shared_lock(root):
        for sp in each_opened(root):
            sp.sweep(root)
            remove_if_unused(sp)


def taken(root: str) -> list[tuple[str, int, int]]:
    """(folder, slot, its group's program id) of every taken slot of every shared program."""
    with shared_lock(root):
        return [(sp.folder, slot, owner) for sp in each_opened(root)
                for slot, owner in enumerate(sp.owners()) if owner]


def remove_if_unused(sp: SharedProgram) -> bool:
    """Unpin a shared program no group uses: its maps and program go when
    the last program that reaches them is detached."""
    if any(sp.owners()):
        return False
    doomed = os.path.join(os.path.dirname(sp.folder), f"_del-{os.path.basename(sp.folder)}-{os.getpid()}")
    os.rename(sp.folder, doomed)
    shutil.rmtree(doomed)
    return True


def _sweep_temp(root: str) -> None:
    """Remove shared folders left half made or half removed by a writer that died."""
    base = base_dir(root)
    for name in os.listdir(base):
        m = _TEMP_RE.match(name)
        if m and not process_exists(int(m.group(1))):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def program_of(group_dir: str) -> Optional[int]:
    """The program id pinned in a group's folder; None when it has none."""
    try:
        fd = bpfsys.obj_get(os.path.join(group_dir, PROG_PIN))
    except OSError:
        return None
    try:
        return bpfsys.prog_info(fd).id
    finally:
        os.close(fd)
