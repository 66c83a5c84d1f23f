"""scripts.profile_step on the tiny preset (64x64 crops): the re-created step is the method's own,
its regions are positive and add up to the step, the FLOP counter counts backward and the teacher,
and a --quick run prints every section. No timing thresholds: speed lives in docs/BENCHMARKS.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dida.config import TrainConfig
from scripts.profile_step import main
from scripts.profiling.flops import flop_counter, step_flops
from scripts.profiling.measure import profile_method
from scripts.profiling.phased import Phases, phased_step
from scripts.profiling.trainer import build_data, build_trainer, full_step, load_config, num_threads

METHODS = ("source_only", "daformer", "dida")
COMMON = {"data loading", "encoder forward", "decoder forward", "loss", "backward", "optimizer"}
TEACHER = {"teacher forward", "pseudo-labels + mix", "EMA update"}
REGIONS = {
    "source_only": COMMON | {"augment"},
    "daformer": COMMON | TEACHER,
    "dida": COMMON | TEACHER | {"bank + instance level"},
}


def _cfg(root: Path, method: str) -> TrainConfig:
    return load_config("tiny", method, str(root))


def _batch(cfg: TrainConfig) -> tuple[dict, tuple[int, ...]]:
    data = build_data(cfg)
    stream = data.batches()
    batch = next(stream)
    stream.close()
    return batch, data.source_class_pixels


@pytest.mark.parametrize("method", METHODS)
def test_recreated_step_is_the_method_step(method: str, synthcity_tiny: Path) -> None:
    cfg = _cfg(synthcity_tiny, method)
    batch, pixels = _batch(cfg)
    recreated, real = build_trainer(cfg, pixels), build_trainer(cfg, pixels)
    for it in range(2):
        torch.manual_seed(it)  # the tiny preset keeps dropout: the same draws for both
        ours = phased_step(recreated, batch, it, Phases())
        torch.manual_seed(it)
        theirs = full_step(real, batch, it)
        assert ours.keys() == theirs.keys()
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6)
    for a, b in zip(recreated.model.parameters(), real.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_regions_are_positive_and_add_up_to_the_step(method: str, synthcity_tiny: Path) -> None:
    prof = profile_method(_cfg(synthcity_tiny, method), repeats=2, warmup=0)
    assert set(prof.names()) == REGIONS[method]
    assert len(prof.phases) == len(prof.full) == len(prof.phased_total) == 2
    for regions, total in zip(prof.phases, prof.phased_total, strict=True):
        assert all(seconds > 0 for seconds in regions.values())
        parts = sum(v for k, v in regions.items() if k != "data loading")
        assert parts <= total and total - parts <= 0.1 * total + 0.05
    assert all(t.wall > 0 for t in prof.full + prof.gemm) and prof.flops > 0


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The script's default; two threads stall on the busy shared machine (docs/BENCHMARKS.md)."""
    with num_threads(1):
        yield


@pytest.mark.parametrize("groups", [1, 16])
def test_conv_flops_forward_and_backward_match_a_hand_count(groups: int) -> None:
    conv = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=groups, bias=False)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    with flop_counter() as counter:
        conv(x).sum().backward()
    forward = 2 * (2 * 8 * 8) * 16 * (16 // groups) * 9  # 2 FLOPs per multiply-add
    assert counter.get_total_flops() == 3 * forward  # input and weight gradient: a forward each


def test_cpu_attention_is_counted() -> None:
    q, k, v = (torch.randn(2, 1, 64, 32, requires_grad=True) for _ in range(3))
    with flop_counter() as counter:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    forward = 2 * 2 * (2 * 64 * 64 * 32)  # scores and weighted sum, 2 FLOPs per multiply-add
    assert counter.get_total_flops() == forward * 7 // 2  # backward 2.5x, as torch counts it


def test_step_flops_count_backward_and_the_teacher(synthcity_tiny: Path) -> None:
    flops = {}
    for method in ("source_only", "daformer"):
        cfg = _cfg(synthcity_tiny, method)
        batch, pixels = _batch(cfg)
        flops[method] = step_flops(build_trainer(cfg, pixels), batch, 0)
    cfg = _cfg(synthcity_tiny, "source_only")
    model = build_trainer(cfg, pixels).model
    with torch.no_grad(), flop_counter() as forward:
        model(batch["source"]["image"])
    # backward costs about twice the forward; DAFormer adds a second student pass and the teacher
    assert 2.5 < flops["source_only"] / forward.get_total_flops() < 3.5
    assert 2.0 < flops["daformer"] / flops["source_only"] < 3.0


@pytest.mark.slow
def test_quick_run_prints_every_section(synthcity_tiny: Path, capsys) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # main works with --threads (1) and leaves the setting as it was
    main(["--quick", "--preset", "tiny", "--data", str(synthcity_tiny), "--repeats", "1"])
    out = capsys.readouterr().out
    assert torch.get_num_threads() == 2
    torch.set_num_threads(threads)
    for text in ("load average at the start", "Phase profile", "% of GEMM rate (CPU time)",
                 "Top torch ops", "Variants of the source_only step", "max loss diff",
                 "batches identical with 0 and 1 workers: yes", "load average at the end"):  # fmt: skip
        assert text in out
