"""Comparing two rows of a benchmark table: each metric's difference against the seed spread, as a
sentence (the reports' lines) or as data (their differences plot).

Rows trained with the same seeds start from the same model and draw the same data order, so a
seed's difference between two rows is paired: where both rows have per-run scores for at least two
common seeds, the sentence also gives the mean ± std of the per-seed differences (a low seed that
is low for every method then no longer widens the spread the difference is judged by)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METRICS = ("mIoU", "overlap_mIoU", "rare_mIoU")

PerSeed = dict[str, dict[int, dict[str, float | None]]]
"""Row → seed → metric → value (points) of each scored run."""


def compare(
    rows: dict, a: str = "daformer", b: str = "dida", per_seed: PerSeed | None = None
) -> str:
    """A sentence comparing two rows' metrics against the seed spread (and, with ``per_seed``,
    against the spread of their paired per-seed differences)."""
    if a not in rows or b not in rows:
        return f"({a} or {b} not finished: no comparison)"
    parts = []
    for metric in METRICS:
        (ma, sa, na), (mb, sb, nb) = rows[a][metric], rows[b][metric]
        diff = mb - ma
        pair = paired(per_seed or {}, a, b, metric)
        more = f"; {_paired_text(pair)}" if pair else ""
        parts.append(
            f"{metric}: {b} − {a} = {diff:+.1f} ({_verdict(diff, (sa, na), (sb, nb))}{more})"
        )
    return "; ".join(parts)


@dataclass(frozen=True)
class Paired:
    """Row ``b`` − row ``a`` seed by seed over their common seeds: mean and std (points)."""

    seeds: tuple[int, ...]
    mean: float
    std: float


def paired(per_seed: PerSeed, a: str, b: str, metric: str) -> Paired | None:
    """The paired difference b − a over the seeds both rows scored ``metric`` on; None for fewer
    than two such seeds."""
    runs_a, runs_b = per_seed.get(a, {}), per_seed.get(b, {})
    seeds = [s for s in sorted(set(runs_a) & set(runs_b)) if _both(runs_a[s], runs_b[s], metric)]
    if len(seeds) < 2:
        return None
    d = np.array([runs_b[s][metric] - runs_a[s][metric] for s in seeds], dtype=np.float64)
    return Paired(tuple(seeds), float(d.mean()), float(d.std(ddof=1)))


def _both(run_a: dict, run_b: dict, metric: str) -> bool:
    return run_a.get(metric) is not None and run_b.get(metric) is not None


def _paired_text(p: Paired) -> str:
    side = "within" if abs(p.mean) <= p.std else "larger than"
    seeds = ", ".join(map(str, p.seeds))
    return f"paired over seeds {seeds}: {p.mean:+.1f} ± {p.std:.1f}, {side} its spread"


@dataclass(frozen=True)
class Difference:
    """Row ``b`` − row ``a`` in one metric (points), with the spread ``compare`` judges it by: the
    largest std of the two rows among those with several seeds (None when both have one seed)."""

    a: str
    b: str
    metric: str
    diff: float
    spread: float | None
    paired: Paired | None = None
    """The paired per-seed difference (:func:`paired`), None without two common scored seeds."""


def differences(
    rows: dict, pairs: Sequence[tuple[str, str]], per_seed: PerSeed | None = None
) -> list[Difference]:
    """Every metric's difference for the pairs whose two rows are both in ``rows`` (with their
    paired differences where ``per_seed`` has two or more common seeds)."""
    found = []
    for a, b in pairs:
        if a not in rows or b not in rows:
            continue
        for metric in METRICS:
            (ma, sa, na), (mb, sb, nb) = rows[a][metric], rows[b][metric]
            spreads = [std for std, seeds in ((sa, na), (sb, nb)) if seeds >= 2]
            spread, pair = max(spreads) if spreads else None, paired(per_seed or {}, a, b, metric)
            found.append(Difference(a, b, metric, mb - ma, spread, pair))
    return found


def _verdict(diff: float, *rows: tuple[float, int]) -> str:
    """``diff`` against the largest std of the rows with several seeds ((std, seeds) each)."""
    spreads = [std for std, seeds in rows if seeds >= 2]
    if not spreads:
        return "one seed: no spread to judge it against"
    spread = max(spreads)
    side = "within" if abs(diff) <= spread else "larger than"
    other = "" if len(spreads) == len(rows) else "; the other row has one seed"
    return f"{side} the seed spread, largest std {spread:.1f}{other}"
