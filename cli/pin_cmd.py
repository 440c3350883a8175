"""`rpctl pin cpu|rss|off`: serve each connection by the member of its CPU or RSS queue."""

from __future__ import annotations

import json
from typing import Any, Optional

from rpctl.controller.contract.errors import ExitStatus, InvalidInput, UsageError

from .common import Environment, add_command, group_option, json_option, parse_assignments

DESCRIPTION = """\
cpu   the program selects the member pinned to the CPU it runs on: the CPU
      whose receive path handles the connection's packets.  --map NAME=CPU,...
      says which; without it each member's process affinity does
      (sched_getaffinity), and rpctl refuses when that is ambiguous: a member
      allowed on every CPU, or two members allowed on one CPU.
rss   the program recomputes the NIC's RSS hash of each packet (Toeplitz,
      with the device's key), looks its receive queue up in the device's
      indirection table, and selects the member of the CPU that queue's
      interrupt fires on.  rpctl refuses a device without RSS, or whose hash
      it cannot recompute.  --explain prints queue -> IRQ -> CPU -> member
      and changes nothing.
off   back to weighted selection.

A CPU or queue whose member is draining, has weight 0 or is gone is served
by the weighted table and counted (pin_fallbacks); one with no member too
(pin_unassigned).  The mode flips atomically with the weights, and stays
through drains and weight changes; members registered later are pinned by
running `rpctl pin` again.  `rpctl status` shows the mode and each member's
CPUs or queues."""


def parse_map(items: Optional[list[str]]) -> Optional[dict[str, int]]:
    """--map values ("a=0,b=1", repeatable) -> {member: CPU}; None when not given."""
    if not items:
        return None

    entries = [e.strip() for item in items for e in item.split(",") if e.strip()]
    if not entries:
        raise InvalidInput("--map: give NAME=CPU,...")
    cpus = parse_assignments(entries, what="CPU")
    for name, cpu in cpus.items():
        if cpu < 0:
            raise InvalidInput(f"CPU of {name}: {cpu} is not a CPU number")
    return cpus


def _check_options(args) -> None:
    if args.mode == "rss" and not args.dev:
        raise UsageError("pin rss: --dev IFACE is required (see rpctl pin --help)")
    if args.mode != "rss" and (args.dev or args.explain):
        raise UsageError(f"pin {args.mode}: --dev and --explain go with `pin rss` (see rpctl pin --help)")
    if args.mode == "off" and args.map:
        raise UsageError("pin off: --map goes with `pin cpu` and `pin rss` (see rpctl pin --help)")
    if args.json and not args.explain:
        raise UsageError("pin: --json goes with --explain (see rpctl pin --help)")


def _assignment_lines(result) -> list[str]:
    from rpctl.controller.tables.pin_table import format_cpus

    what = "CPU" if result.mode == "cpu" else "queue"
    by_member: dict[str, list[int]] = {}
    for key, name in result.assignment.items():
        by_member.setdefault(name, []).append(key)
    lines = [f"  {what} {format_cpus(keys)} -> {name}" for name, keys in sorted(by_member.items())]
    if result.unassigned:
        lines.append(f"  {what} {format_cpus(result.unassigned)}: no member; the weighted table serves them")
    return lines


def explain_json(exp) -> dict[str, Any]:
    info = exp.info
    return {
        "device": info.dev,
        "group": exp.group,
        "rx_queues": info.rx_queues,
        "indirection_size": len(info.indir),
        "hash_function": info.hfunc or None,
        "key_size": len(info.key),
        "hashed_fields": {flow: bits for flow, bits in info.fields.items()},
        "rps_queues": list(info.rps_queues),
        "chain": [
            {"queue": r.queue, "table_share": round(r.table_share, 6), "irq": r.irq, "irq_name": r.irq_name or None,
             "irq_cpus": r.irq_cpus or None, "cpu": r.cpu, "member": r.member}
            for r in exp.rows
        ],
        "problems": list(exp.problems),
        "notes": list(exp.notes),
    }


def explain_text(exp) -> list[str]:
    from .rss_text import describe
    from .text import pct

    lines = describe(exp.info)
    lines.append("the kernel's reuseport hash is not the NIC's: in rss mode the program recomputes the NIC's "
                 "Toeplitz hash from each packet with this key")
    lines.append(f"{'queue':>5}  {'table':>6}  {'IRQ':>5}  {'may fire on':<12} {'CPU':>4}  member")
    for r in exp.rows:
        irq = f"{r.irq}" if r.irq is not None else "?"
        cpu = f"{r.cpu}" if r.cpu is not None else "?"
        lines.append(f"{r.queue:>5}  {pct(r.table_share) if exp.info.indir else '-':>6}  {irq:>5}  "
                     f"{r.irq_cpus or '-':<12} {cpu:>4}  {r.member or '-'}"
                     + (f"   ({r.irq_name})" if r.irq_name else ""))
    if not exp.rows:
        lines.append("  (no receive queue known)")
    lines += [f"note: {n}" for n in exp.notes]
    lines += [f"problem: {p}" for p in exp.problems]
    return lines


def cmd_pin(env: Environment, args) -> ExitStatus:
    from rpctl.controller.kernel import rss
    from rpctl.controller.ops import pin

    _check_options(args)
    mapping = parse_map(args.map)
    if args.mode == "off":
        name, was = pin.pin_off(group=args.group)
        if was == "weighted":
            env.err(f"rpctl: group {name} is not pinned: nothing to do")
        else:
            env.out(f"group {name}: {was} mode off, back to weighted selection")
        return ExitStatus.OK
    if args.mode == "cpu":
        result = pin.pin_cpu(mapping, group=args.group)
        env.out(f"group {result.group}: pinned by CPU")
        for line in _assignment_lines(result):
            env.out(line)
        return ExitStatus.OK
    info = rss.read_device(args.dev)
    if args.explain:
        exp = pin.explain_rss(info, mapping, group=args.group)
        if args.json:
            env.out(json.dumps(explain_json(exp), indent=2))
        else:
            for line in explain_text(exp):
                env.out(line)
        if exp.problems:
            raise InvalidInput(f"pin rss --dev {info.dev}: {exp.problems[0]}")
        return ExitStatus.OK
    result = pin.pin_rss(info, mapping, group=args.group)
    env.out(f"group {result.group}: pinned by the RSS queues of {result.dev}")
    for line in _assignment_lines(result):
        env.out(line)
    return ExitStatus.OK


def add_commands(sub) -> None:
    p = add_command(
        sub,
        "pin",
        cmd_pin,
        [
            "rpctl pin cpu                            # from each member process's CPU affinity",
            "rpctl pin cpu --map worker-1=0,worker-2=1",
            "rpctl pin rss --dev eth0 --explain       # queue -> IRQ -> CPU -> member; changes nothing",
            "rpctl pin rss --dev eth0 -g web",
            "rpctl pin off",
        ],
        description=DESCRIPTION,
    )
    p.add_argument("mode", choices=("cpu", "rss", "off"), help="what to pin by, or off")
    p.add_argument("--map", action="append", metavar="NAME=CPU,...",
                   help="which member serves which CPU (default: the members' CPU affinity)")
    p.add_argument("--dev", metavar="IFACE", help="rss: the network device whose queues to pin")
    p.add_argument("--explain", action="store_true", help="rss: print queue -> IRQ -> CPU -> member, change nothing")
    json_option(p, help="with --explain: print JSON")
    group_option(p)
