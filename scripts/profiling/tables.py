"""The report's markdown tables: the phase profile with its checks and FLOP rate, the variants
(speed-up, share of the GEMM rate, loss differences), data loading and the costliest ops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from scripts.profiling.flops import gemm_flops
from scripts.profiling.measure import DataTimes, Profile, VariantTimes
from scripts.profiling.trainer import Timing, Variant, cpus, median, walls


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def gflops_rate(flops: int, seconds: float) -> float:
    """GFLOP/s."""
    return flops / seconds / 1e9


def profile_table(profiles: list[Profile]) -> str:
    """Regions as rows, methods as columns: 'median ms (share of data + real step)'."""
    names = list(dict.fromkeys(n for p in profiles for n in p.names()))
    rows = []
    for name in names:
        cells = []
        for p in profiles:
            total = p.phase("data loading") + walls(p.full)
            value = p.phase(name)
            cells.append(f"{_ms(value)} ({100 * value / total:.0f} %)" if value else "—")
        rows.append([name, *cells])
    rows += _profile_checks(profiles)
    return _table(["region (ms, median)", *(p.method for p in profiles)], rows)


def _profile_checks(profiles: list[Profile]) -> list[list[object]]:
    """The rows that check the split and give the FLOP rate."""

    def parts(p: Profile) -> float:
        return median([sum(v for k, v in r.items() if k != "data loading") for r in p.phases])

    def rate(p: Profile, clock: Callable[[Sequence[Timing]], float]) -> float:
        return gflops_rate(p.flops, clock(p.full))

    def share(p: Profile, clock: Callable[[Sequence[Timing]], float]) -> str:
        return f"{100 * rate(p, clock) / gflops_rate(gemm_flops(), clock(p.gemm)):.0f} %"

    return [
        ["**sum of the regions (without data)**", *(_ms(parts(p)) for p in profiles)],
        ["re-created step, whole (without data)", *(_ms(median(p.phased_total)) for p in profiles)],
        ["**real step: method.step + backward + AdamW + after_step**",
         *(_ms(walls(p.full)) for p in profiles)],
        ["real step, CPU time", *(_ms(cpus(p.full)) for p in profiles)],
        ["data loading, CPU time", *(_ms(median(p.data_cpu)) for p in profiles)],
        ["GFLOP per step (forward + backward)", *(f"{p.flops / 1e9:.1f}" for p in profiles)],
        ["(torch's counter uncorrected)", *(f"{p.raw_flops / 1e9:.1f}" for p in profiles)],
        ["achieved GFLOP/s (wall)", *(f"{rate(p, walls):.1f}" for p in profiles)],
        ["fp32 GEMM GFLOP/s (wall), same loop",
         *(f"{gflops_rate(gemm_flops(), walls(p.gemm)):.1f}" for p in profiles)],
        ["**% of GEMM rate (wall)**", *(share(p, walls) for p in profiles)],
        ["% of GEMM rate (CPU time)", *(share(p, cpus) for p in profiles)],
    ]  # fmt: skip


def _curve_cells(curves: dict[str, list[float]], name: str, baseline: str) -> list[str]:
    """|loss − baseline loss| at the first step (forward only) and the largest over the curve."""
    if name not in curves:
        return ["slower: not checked"] * 2
    diffs = [abs(a - b) for a, b in zip(curves[name], curves[baseline], strict=True)]
    return [f"{diffs[0]:.1e}", f"{max(diffs):.1e}"]


def curve_note(base: list[float], noise: list[float], start: int, seed: int) -> str:
    """The loss curves' setting, the noise reference's loss differences and the baseline's losses."""
    diffs = _curve_cells({"noise": noise, "base": base}, "noise", "base")
    return (
        f"\nloss curves: {len(base)} steps from iteration {start} (peak LR), seed {seed}; noise "
        f"reference, the baseline with every weight x (1 + 2^-23) (about 1 ulp): loss diff step 1 "
        f"{diffs[0]}, max {diffs[1]}\nbaseline losses: {', '.join(f'{x:.4f}' for x in base)}"
    )


def variant_table(
    times: VariantTimes, flops: int, curves: dict[str, list[float]], variants: dict[str, Variant]
) -> str:
    """Variants as rows: step ms, speed-up over the baseline, FLOP/s vs GEMM, loss differences."""
    baseline = next(iter(times.steps))
    rows = []
    for name, steps in times.steps.items():
        gemm = times.gemm[variants[name].threads]
        shares = [
            f"{100 * (flops / clock(steps)) / (gemm_flops() / clock(gemm)):.0f} %"
            for clock in (walls, cpus)
        ]
        wall = f"{_ms(walls(steps))} ({_ms(min(t.wall for t in steps))})"
        speed = [f"{speed_up(times, name, clock):.2f}" for clock in (walls, cpus)]
        first = " / ".join(f"{s:.1f}" for s in times.first_steps[name])
        rows.append([name, wall, _ms(cpus(steps)), *speed, f"{gflops_rate(flops, walls(steps)):.1f}",
                     *shares, first, *_curve_cells(curves, name, baseline)])  # fmt: skip
    header = ["variant", "wall ms, median (min)", "CPU ms", "speed-up (wall)", "speed-up (CPU)",
              "GFLOP/s (wall)", "% of GEMM (wall)", "% of GEMM (CPU)", "first steps (s)",
              "loss diff, step 1", "max loss diff"]  # fmt: skip
    return _table(header, rows)


def speed_up(
    times: VariantTimes, name: str, clock: Callable[[Sequence[Timing]], float] = walls
) -> float:
    """Baseline median step time over the variant's, by wall or CPU time."""
    return clock(next(iter(times.steps.values()))) / clock(times.steps[name])


def data_table(d: DataTimes, prof: Profile | None) -> str:
    """Iteration time per worker count, and inline data loading's share of the profiled step."""
    rows = [
        [f"{w} worker{'s' if w != 1 else ''} per domain", _ms(walls(v)), _ms(cpus(v)), len(v)]
        for w, v in d.iteration.items()
    ]
    header = ["data loading", "data + step, wall ms", "training process CPU ms", "iterations"]
    text = _table(header, rows)
    text += f"\n\nbatches identical with 0 and 1 workers: {'yes' if d.same_batches else 'NO'}"
    if prof is not None:
        data, step = prof.phase("data loading"), walls(prof.full)
        text += (
            f"\ninline data loading: {_ms(data)} ms wall, {_ms(median(prof.data_cpu))} ms CPU of "
            f"{_ms(data + step)} ms data + step = {100 * data / (data + step):.0f} % (the most a "
            "prefetching worker can save when a core is free for it)"
        )
    return text


def ops_table(ops: list[tuple[str, float, int]]) -> str:
    """The costliest ops with their share of the listed ops' time."""
    total = sum(s for _, s, _ in ops)
    rows = [[name, _ms(s), f"{100 * s / total:.0f} %", n] for name, s, n in ops]
    return _table(["op", "self CPU ms", "share of these", "calls"], rows)
