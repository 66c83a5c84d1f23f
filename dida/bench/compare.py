"""Comparing two rows of a benchmark table: each metric's difference against the seed spread, as a
sentence (the reports' lines) or as data (their differences plot)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

METRICS = ("mIoU", "overlap_mIoU", "rare_mIoU")


def compare(rows: dict, a: str = "daformer", b: str = "dida") -> str:
    """A sentence comparing two rows' mIoU against the seed spread."""
    if a not in rows or b not in rows:
        return f"({a} or {b} not finished: no comparison)"
    parts = []
    for metric in METRICS:
        (ma, sa, na), (mb, sb, nb) = rows[a][metric], rows[b][metric]
        diff = mb - ma
        parts.append(f"{metric}: {b} − {a} = {diff:+.1f} ({_verdict(diff, (sa, na), (sb, nb))})")
    return "; ".join(parts)


@dataclass(frozen=True)
class Difference:
    """Row ``b`` − row ``a`` in one metric (points), with the spread ``compare`` judges it by: the
    largest std of the two rows among those with several seeds (None when both have one seed)."""

    a: str
    b: str
    metric: str
    diff: float
    spread: float | None


def differences(rows: dict, pairs: Sequence[tuple[str, str]]) -> list[Difference]:
    """Every metric's difference for the pairs whose two rows are both in ``rows``."""
    found = []
    for a, b in pairs:
        if a not in rows or b not in rows:
            continue
        for metric in METRICS:
            (ma, sa, na), (mb, sb, nb) = rows[a][metric], rows[b][metric]
            spreads = [std for std, seeds in ((sa, na), (sb, nb)) if seeds >= 2]
            found.append(Difference(a, b, metric, mb - ma, max(spreads) if spreads else None))
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
