"""The benchmark reports' plots (PNG, matplotlib's Agg backend): method bars, sweeps, shifts and
the differences of compared rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dida.bench.compare import METRICS, Difference
from dida.bench.curves import MAX_EXTRAPOLATION, TREND_FROM_IT, CurvePoint, Trend
from dida.bench.jobs import ABLATION_DEFAULTS


def _axes(n: int, title: str, width: float = 4.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, 3.4), squeeze=False)
    fig.suptitle(title)
    return fig, axes[0]


def plot_sweeps(data: dict[str, list], path: Path) -> None:
    """mIoU (all / overlap / rare) against tp, lambda and K, DIDA's default point included."""
    default = data.get("default", [])
    sweeps = [s for s in ("tp", "lambda", "K") if s in data]
    if not sweeps:
        return
    fig, axes = _axes(len(sweeps), "DIDA ablations on SynthCity (seed 0)")
    reference = data.get("reference", [])
    for ax, sweep in zip(axes, sweeps, strict=True):
        points = sorted(data[sweep] + [(ABLATION_DEFAULTS[sweep], *p[1:]) for p in default])
        x = [p[0] for p in points]
        for i, name in ((1, "mIoU"), (2, "overlap mIoU"), (3, "rare mIoU")):
            ax.plot(x, [100 * (p[i] or np.nan) for p in points], marker="o", label=name)
        if reference:
            ax.axhline(100 * reference[0][1], color="gray", ls="--", label="DAFormer-style mIoU")
        ax.set_xscale("log" if sweep != "K" else "linear")
        ax.set_xlabel(sweep)
        ax.set_ylabel("%")
    axes[0].legend(fontsize=7)
    _save(fig, path)


def plot_shift(data: dict[str, dict[float, float]], path: Path) -> None:
    """mIoU of every method against the domain shift."""
    if not data:
        return
    fig, axes = _axes(1, "mIoU against SynthCity's domain shift")
    for method, by_shift in data.items():
        axes[0].plot(list(by_shift), [100 * v for v in by_shift.values()], marker="o", label=method)
    axes[0].set_xlabel("shift")
    axes[0].set_ylabel("target mIoU (%)")
    axes[0].legend(fontsize=7)
    _save(fig, path)


def plot_main(rows: dict, labels: dict[str, str], path: Path, title: str) -> None:
    """Bars of mIoU, overlap mIoU and rare mIoU per method (error bars = seed std)."""
    if not rows:
        return
    fig, axes = _axes(1, title, width=max(4.2, 0.9 * len(rows)))
    keys, width = list(rows), 0.27
    for i, metric in enumerate(("mIoU", "overlap_mIoU", "rare_mIoU")):
        means = [rows[k][metric][0] for k in keys]
        stds = [rows[k][metric][1] for k in keys]
        axes[0].bar(np.arange(len(keys)) + (i - 1) * width, means, width, yerr=stds, label=metric)
    axes[0].set_xticks(
        np.arange(len(keys)), [labels[k] for k in keys], rotation=25, ha="right", fontsize=7
    )
    axes[0].set_ylabel("%")
    axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)


def plot_differences(diffs: list[Difference], path: Path, title: str) -> None:
    """Each compared pair's difference (b − a) in mIoU, overlap and rare mIoU, with ± the seed
    spread it is judged against (hollow marker, no bar: one seed each, no spread) and, where the
    rows share two or more scored seeds, the paired difference ± its std (x marker)."""
    pairs = list(dict.fromkeys((d.a, d.b) for d in diffs))
    if not pairs:
        return
    fig, axes = _axes(1, title, width=7.5)
    fig.set_figheight(1.2 + 0.42 * len(pairs))
    ax, offsets = axes[0], dict(zip(METRICS, (-0.3, 0.0, 0.3), strict=True))
    for i, metric in enumerate(METRICS):
        color = f"C{i}"
        for d in (d for d in diffs if d.metric == metric):
            y = pairs.index((d.a, d.b)) + offsets[metric]
            face = color if d.spread is not None else "none"
            ax.errorbar(d.diff, y, xerr=d.spread, fmt="o", color=color, mfc=face, ms=4, capsize=2)
            if d.paired is not None:
                p = d.paired
                ax.errorbar(p.mean, y + 0.12, xerr=p.std, fmt="x", color=color, ms=4, lw=0.8)
        ax.plot([], [], "o", color=color, label=metric)
    if any(d.paired is not None for d in diffs):
        ax.plot([], [], "x", color="gray", label="paired over common seeds")
    ax.axvline(0, color="gray", lw=0.8)
    ax.set_yticks(range(len(pairs)), [f"{b} − {a}" for a, b in pairs], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("difference (points); bar: ± the largest seed std of the pair (x: ± paired std)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)


def plot_gap_trends(
    curves: dict[str, list[CurvePoint]],
    trends: dict[str, Trend],
    levels: dict[str, float],
    path: Path,
) -> None:
    """Each run's mIoU against iterations (log2 axis) with its fitted trend (dashed) followed to
    where it crosses the target, or to ``MAX_EXTRAPOLATION`` times its schedule; ``levels``
    (label → mIoU in %) are drawn across: source-only, oracle and the target."""
    if not curves:
        return
    fig, axes = _axes(1, "Adaptation rows: mIoU against iterations, trend extrapolated", width=7.5)
    ax = axes[0]
    for i, (name, points) in enumerate(curves.items()):
        its, miou = [p.it for p in points], [100 * p.miou for p in points]
        ax.plot(its, miou, "o-", color=f"C{i}", ms=3, label=name)
        if (trend := trends.get(name)) is not None:
            end = min(trend.reach_it or np.inf, its[-1] * MAX_EXTRAPOLATION)
            x = np.geomspace(TREND_FROM_IT, max(end, its[-1]), 64)
            ax.plot(x, 100 * trend.at(x), "--", color=f"C{i}", lw=1)
    for (label, value), style in zip(levels.items(), (":", "-.", "--"), strict=False):
        ax.axhline(value, color="gray", ls=style, lw=1, label=label)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")
    ax.set_xlabel("iterations (dashed: least-squares trend from 1,000 its on)")
    ax.set_ylabel("target mIoU (%)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
