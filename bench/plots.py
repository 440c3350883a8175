"""PNG figures beside docs/benchmarks.md, for the tables a picture reads faster
than: the data-path ladder, the end-to-end rounds (how far the machine drifts
between rounds, against how little the selections differ within one), the
control plane against group size.

matplotlib is the `bench` extra of pyproject.toml (scripts/bench.sh and
scripts/test.sh install it); rpctl itself never imports it.  Each function
draws one figure, writes ``docs/bench-NAME.png`` next to the document the run
writes (a scratch copy in quick mode: see common.write_section) and returns
the Markdown line that shows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

from bench import common

# One colour per kind of row, in order of first appearance.
PALETTE = ("#9e9e9e", "#7fa7d6", "#1f4e9c", "#d9534f", "#5cb85c", "#f0ad4e")
REFERENCE_STYLES = ("--", ":", "-.")
MARK_COLOURS = ("#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")  # events across a time series


class Bar(NamedTuple):
    label: str
    median: float
    low: float  # lowest round
    high: float  # highest round
    kind: str  # rows of one kind share a colour and a legend entry


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise RuntimeError("matplotlib is missing: run ./scripts/bench.sh (it installs the `bench` extra)") from e
    matplotlib.use("Agg")  # no display: render straight to PNG
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, name: str, alt: str) -> str:
    path = Path(common.DOC).parent / f"bench-{name}.png"
    # No software or date stamp: a rerun with the same figures gives the same file.
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    print(f"figure: {path}", flush=True)
    return f"![{alt}]({path.name})"


def bars(name: str, title: str, unit: str, rows: Sequence[Bar], references: Mapping[str, float] | None = None) -> str:
    """Horizontal bars, top to bottom in the order given: each a median with
    its range over rounds as a whisker, the value written at its end; a
    dashed vertical line for each reference (a floor, a goal)."""
    plt = _pyplot()
    kinds = list(dict.fromkeys(r.kind for r in rows))
    colour = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(kinds)}
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.4))
    ys = range(len(rows))[::-1]
    for y, r in zip(ys, rows):
        ax.barh(y, r.median, color=colour[r.kind], label=r.kind,
                xerr=[[r.median - r.low], [r.high - r.median]], error_kw={"elinewidth": 1, "capsize": 2})
    top = max(r.high for r in rows)
    for y, r in zip(ys, rows):
        ax.text(r.high + top * 0.01, y, f"{r.median:,.0f}", va="center", fontsize=8)
    for i, (label, x) in enumerate((references or {}).items()):
        ax.axvline(x, color="black", linestyle=REFERENCE_STYLES[i % len(REFERENCE_STYLES)], linewidth=0.9,
                   label=label)
    ax.set_yticks(list(ys), [r.label for r in rows], fontsize=9)
    ax.set_xlabel(unit)
    ax.set_xlim(0, top * 1.12)
    ax.set_title(title, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # one entry per kind, not per bar
    # Below the axes: inside, it would cover the longest bars' figures.
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.5 / len(rows) - 0.08), ncol=min(3, len(unique)), frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return _save(plt, fig, name, title)


def lines(name: str, title: str, unit: str, xs: Sequence[int], series: Mapping[str, Sequence[float]],
          goal: float | None = None, xlabel: str = "members", log2_x: bool = True, from_zero: bool = True) -> str:
    """One line per series against xs (group sizes on a log scale, or rounds
    on a linear one), with an optional dashed goal line.  from_zero=False
    fits the y axis to the values: for drift between rounds, not for sizes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, (label, values) in enumerate(series.items()):
        ax.plot(xs, values, marker="o", color=PALETTE[(i + 1) % len(PALETTE)], label=label)
    if goal is not None:
        ax.axhline(goal, color="black", linestyle="--", linewidth=0.8, label=f"goal {goal:g} {unit}")
    if log2_x:
        ax.set_xscale("log", base=2)
    # Every x labelled, up to about 20; past that every k-th (rounds of a long run).
    step = max(1, round(len(xs) / 20))
    ax.set_xticks(list(xs)[::step], [str(n) for n in xs][::step])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(unit)
    values = [v for vs in series.values() for v in vs] + ([goal] if goal is not None else [])
    if from_zero:
        ax.set_ylim(0, max(values) * 1.1)
    else:
        pad = (max(values) - min(values)) * 0.1 or max(values) * 0.01
        ax.set_ylim(min(values) - pad, max(values) + pad)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    return _save(plt, fig, name, title)


def cdf(name: str, title: str, series: Mapping[str, Sequence[float]]) -> str:
    """Latency CDFs (seconds in, ms on a log axis), the tail stretched: the y
    axis is the fraction of connections on a logit-like scale from 50 % up."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, (label, xs) in enumerate(series.items()):
        xs = sorted(xs)
        if not xs:
            continue
        n = len(xs)
        ax.plot([x * 1000 for x in xs], [(k + 1) / n for k in range(n)], color=PALETTE[(i + 1) % len(PALETTE)],
                label=label, linewidth=1.2)
    ax.set_xscale("log")
    ax.set_yscale("logit")
    ax.set_ylim(0.5, 0.9999)
    ax.set_xlabel("connect-to-reply latency (ms)")
    ax.set_ylabel("fraction of connections")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    return _save(plt, fig, name, title)


class Panel(NamedTuple):
    """One panel of a time series figure: its y label, its lines ({label: (xs, ys)}, x in
    minutes), and lines on a second y axis at the right (another unit), if any."""

    ylabel: str
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]]
    right_label: str = ""
    right: Mapping[str, tuple[Sequence[float], Sequence[float]]] = {}


def timeline(name: str, title: str, panels: Sequence[Panel], marks: Mapping[str, Sequence[float]]) -> str:
    """Panels over one time axis (minutes), stacked; every mark (an event: {kind: [minutes]}) a thin
    vertical line across all panels, one colour per kind of mark."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.6 * len(panels) + 0.6), sharex=True, squeeze=False)
    mark_colour = {k: MARK_COLOURS[i % len(MARK_COLOURS)] for i, k in enumerate(marks)}
    for ax, panel in zip(axes[:, 0], panels):
        for kind, xs in marks.items():
            for j, x in enumerate(xs):
                ax.axvline(x, color=mark_colour[kind], linewidth=0.9, alpha=0.7, label=kind if j == 0 else None)
        for i, (label, (xs, ys)) in enumerate(panel.series.items()):
            ax.plot(xs, ys, color=PALETTE[(i + 1) % len(PALETTE)], linewidth=1.0, label=label)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if panel.right:
            other = ax.twinx()
            for i, (label, (xs, ys)) in enumerate(panel.right.items()):
                other.plot(xs, ys, color=PALETTE[(i + 4) % len(PALETTE)], linewidth=1.0, linestyle="--", label=label)
            other.set_ylabel(panel.right_label)
            more_handles, more_labels = other.get_legend_handles_labels()
            handles, labels = handles + more_handles, labels + more_labels
        ax.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.08 if panel.right else 1.01, 0.5))
    axes[-1, 0].set_xlabel("minutes")
    axes[0, 0].set_title(title, fontsize=10)
    return _save(plt, fig, name, title)
