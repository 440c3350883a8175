"""Cost against the number of groups (issue 23): making and unmaking groups, serve, the command line.

Each figure in a fresh network namespace, at 1, 16, 64 and 256 groups of 2
listeners held by one process, the way an operator makes them (a groups'
file, `rpctl apply`, `rpctl serve` as their own processes):

- groups (bench._scale_groups): `rpctl apply` of N groups and `apply
  --prune` of an empty file, wall time and the kernel CPU of the apply
  process (its rusage), with the shared program loaded ("warm": another
  namespace's group keeps it) and, at 256, not loaded ("cold": the first
  group verifies it); and, at 1 and 16, each group with a program of its
  own (RPCTL_OWN_PROGRAM=1), as before the shared program;
- serve (bench._scale_serve): its CPU at idle, and what it spends per
  interval, at each size; a new listener's admission (median and p90 of
  listen() to membership) at 1 and 256 groups; 16 adaptive groups;
- the command line (bench._scale_cli): each command's wall time over its
  interpreter's bare start (`python -c pass`, same interpreter and site),
  paired, median of 9, with one group of 4 members and with 256 groups.

    ./scripts/bench.sh scale
"""

from __future__ import annotations

from bench import plots
from bench._scale_cli import COMMANDS, GOAL_MS, STATUS_256_MS, groups_in_fresh_netns, measure_cli
from bench._scale_groups import measure as measure_groups
from bench._scale_serve import adaptive_cpu, admission_latency, serve_idle
from bench.common import machine, table, write_section

SECTION = "scale"
SIZES, QUICK_SIZES = (1, 16, 64, 256), (1, 2)
SERVE_S, QUICK_SERVE_S = 20.0, 2.0
TRIALS, QUICK_TRIALS = 20, 2
ROUNDS, QUICK_ROUNDS = 9, 1


def _groups_part(sizes) -> tuple[str, dict[int, float]]:
    rows = measure_groups(sizes, own_sizes=tuple(n for n in sizes if n <= 16))
    cells = [[r["start"], r["groups"], f"{r['up']['wall']:.2f} s", f"{r['up']['sys']:.2f} s",
              f"{1000 * r['up']['sys'] / r['groups']:.1f} ms", f"{r['down']['wall']:.2f} s",
              f"{r['down']['sys']:.2f} s"] for r in rows]
    text = table(["start", "groups", "apply: wall", "kernel CPU", "kernel CPU a group", "apply --prune: wall",
                  "kernel CPU"], cells)
    warm = {r["groups"]: r["up"]["wall"] for r in rows if r["start"] == "warm"}
    return text, warm


def _serve_part(sizes, admit_sizes, seconds: float, trials: int) -> tuple[str, dict[int, float]]:
    idle = [serve_idle(n, 2, seconds) for n in sizes]
    admitted = [admission_latency(n, trials) for n in admit_sizes]
    adaptive = adaptive_cpu(min(16, sizes[-1]), 2, seconds)
    text = table(["groups", "members", "serve CPU (% of a core)", "CPU per interval", "RSS"],
                 [[f["groups"], f["members"], f"{f['cpu_percent']:.2f} %", f"{f['ms_per_interval']:.3f} ms",
                   f"{f['rss_mb']:.0f} MB"] for f in idle])
    text += "\n\n" + table(["groups", "admission: median", "p90", "max", "new listeners"],
                           [[f["groups"], f"{f['median_ms']:.0f} ms", f"{f['p90_ms']:.0f} ms",
                             f"{f['max_ms']:.0f} ms", f["trials"]] for f in admitted])
    text += (f"\n\n{adaptive['groups']} adaptive groups (sampled every 25 ms), idle: serve "
             f"{adaptive['cpu_percent']:.2f} % of a core, RSS {adaptive['rss_mb']:.0f} MB.")
    return text, {f["groups"]: f["cpu_percent"] for f in idle}


def _cli_part(sizes, rounds: int) -> tuple[str, float]:
    with groups_in_fresh_netns(1, 4):
        small = measure_cli(COMMANDS, rounds)
    with groups_in_fresh_netns(sizes[-1], 2) as names:
        large = measure_cli(["status --json", "status", f"weights --group {names[0]}"], rounds)
    cells = [[f"`{r['command']}`", groups, f"{r['bare_ms']:.1f}", f"{r['command_ms']:.1f}", f"{r['over_ms']:+.1f}",
              f"{r['over_cpu_ms']:+.1f}"]
             for groups, rows in (("1 (4 members)", small), (f"{sizes[-1]}", large)) for r in rows]
    text = table(["command", "groups", "python -c pass (ms)", "command (ms)", "over the bare start (ms)",
                  "over it in CPU time (ms)"], cells)
    return text, large[0]["command_ms"]


def run(quick: bool) -> None:
    sizes = QUICK_SIZES if quick else SIZES
    groups_text, apply_s = _groups_part(sizes)
    # Quick: serve at the larger size only, admission once (a serve per figure costs seconds to start).
    serve_text, serve_cpu = _serve_part(sizes[-1:] if quick else sizes, sizes[-1:] if quick else (1, sizes[-1]),
                                        QUICK_SERVE_S if quick else SERVE_S, QUICK_TRIALS if quick else TRIALS)
    cli_text, status_ms = _cli_part(sizes, QUICK_ROUNDS if quick else ROUNDS)
    xs = list(apply_s)
    figure = plots.lines("scale", "Cost against groups: rpctl apply (s) and serve at idle (% of a core)", "",
                         xs, {"rpctl apply of N groups (s)": [apply_s[n] for n in xs],
                              "rpctl serve, idle (% of one core)": [serve_cpu.get(n, 0.0) for n in xs]},
                         xlabel="groups")
    body = f"""### Cost against the number of groups (issue 23)

```sh
./scripts/bench.sh scale
```

{machine()}.  Groups of 2 SO_REUSEPORT listeners held by one process, made
the way an operator makes them: a groups' file adopting them, `rpctl apply`,
`rpctl serve`, each as its own process, in a fresh network namespace.

**Making and unmaking groups.**  A group's own program holds the short cut
alone and hands the rest to one program shared by every group of the boot
(docs/decisions/0017): the verifier walks the shared program once, and each
group's program in under a millisecond.  "warm": the shared program already
loaded (another namespace's group keeps it); "cold": nothing pinned yet, the
first group loads it; "own program": every group verifies the whole program,
as before.  Kernel CPU is the apply process's system time: the verifier's
walk, map creation, and the /proc and sock_diag reads of adoption.
Goals: at most 20 ms of kernel CPU a group once the program is verified;
256 groups up in at most 5 s, and down as fast.

{groups_text}

**rpctl serve** (bench._scale_serve): CPU from /proc/PID/stat over
{QUICK_SERVE_S if quick else SERVE_S:.0f} s after a warm-up, nothing
changing; admission: ms from a new listener's listen() to its being a live
member.  Goals: idle at most 1 % of a core at 256 groups and 512 members; a
new listener admitted in a median of 250 ms or less at 256 groups as at 1; 16
adaptive groups at most 5 %.

{serve_text}

**The command line** (bench._scale_cli): wall time over the bare start of
the same interpreter (`python -c pass`, same site), paired and alternating,
median of {QUICK_ROUNDS if quick else ROUNDS}; CPU time beside it.  Goals: at most {GOAL_MS} ms over the
bare start; `status --json` of 256 groups at most {STATUS_256_MS} ms in all
(measured: {status_ms:.0f} ms).

{cli_text}

{figure}
"""
    write_section(SECTION, body)
