"""Rare Class Sampling: golden probabilities, limits, and deterministic (class, file) draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dida.data.datasets import DatasetError
from dida.data.sampling import (
    GTA5_MIN_PIXELS_FRACTION,
    RareClassSampler,
    RCSConfig,
    rcs_probabilities,
)


@pytest.mark.parametrize(
    ("temperature", "expected"),
    [
        (1.0, [0.22367161072618177, 0.0, 0.3687721422560149, 0.40755624701780324]),
        (0.1, [0.0018088352291382895, 0.0, 0.26845495065244657, 0.7297362141184152]),
        (0.01, [8.756113235770624e-27, 0.0, 4.5397868702434395e-05, 0.9999546021312976]),
    ],
)
def test_rcs_probabilities_golden(temperature: float, expected: list[float]) -> None:
    # f = (0.7, -, 0.2, 0.1): P = softmax((0.3, 0.8, 0.9) / T) over the three present classes
    probs = rcs_probabilities(np.array([700, 0, 200, 100]), temperature)
    np.testing.assert_allclose(probs, expected, rtol=1e-12, atol=0)


def test_rcs_probabilities_match_daformer_formula() -> None:
    counts = np.random.default_rng(0).integers(0, 10**6, 19)
    counts[[3, 9]] = 0
    present = sorted(np.flatnonzero(counts), key=lambda c: counts[c])
    freq = torch.tensor([float(counts[c]) for c in present], dtype=torch.float64)
    daformer = torch.softmax((1 - freq / freq.sum()) / 0.01, dim=-1).numpy()
    probs = rcs_probabilities(counts, 0.01)
    np.testing.assert_allclose(probs[present], daformer, rtol=1e-10)
    assert probs[3] == probs[9] == 0.0


def test_rcs_probability_limits() -> None:
    counts = np.array([700, 0, 200, 100])
    np.testing.assert_allclose(rcs_probabilities(counts, 1e6), [1 / 3, 0, 1 / 3, 1 / 3], atol=1e-6)
    np.testing.assert_allclose(rcs_probabilities(counts, 1e-4), [0, 0, 0, 1], atol=1e-12)


@pytest.mark.parametrize(
    ("counts", "temperature", "message"),
    [
        ([1, -2, 3], 0.01, "non-negative"),
        ([0, 0, 0], 0.01, "with pixels"),
        ([1, 2], 0.0, "temperature must be > 0"),
    ],
)
def test_rcs_probabilities_reject_bad_input(counts, temperature, message) -> None:
    with pytest.raises(ValueError, match=message):
        rcs_probabilities(np.array(counts), temperature)


def test_rcs_config_validation_and_min_pixels() -> None:
    with pytest.raises(ValueError, match="temperature must be > 0"):
        RCSConfig(temperature=0)
    with pytest.raises(ValueError, match="min_crop_ratio must be in"):
        RCSConfig(min_crop_ratio=1.5)
    assert RCSConfig().file_min_pixels() == 3000
    assert RCSConfig(min_pixels_fraction=0.01).file_min_pixels(label_area=64 * 48) == 31
    assert (
        RCSConfig(min_pixels_fraction=GTA5_MIN_PIXELS_FRACTION).file_min_pixels(1914 * 1052) == 3000
    )
    with pytest.raises(ValueError, match="pass the label area"):
        RCSConfig(min_pixels_fraction=0.01).file_min_pixels()


STATS = [
    {"0": 5000, "1": 100, "file": "labels/a.png"},
    {"0": 4000, "2": 3500, "file": "labels/b.png"},
    {"1": 3001, "2": 2999, "file": "labels/c.png"},
]
LABEL_FILES = ["/data/gta/labels/c.png", "/data/gta/labels/a.png", "/data/gta/labels/b.png"]


def test_sampler_eligible_files_match_by_basename_with_strict_threshold() -> None:
    sampler = RareClassSampler(STATS, LABEL_FILES, RCSConfig())
    assert sampler.files == {0: [1, 2], 1: [0], 2: [2]}
    assert sampler.crop_min_pixels == 1500 and sampler.dropped == ()
    expected = rcs_probabilities(np.array([9000, 3101, 6499]))
    np.testing.assert_allclose(sampler.probs, expected)
    assert list(sampler.classes) == [0, 1, 2]
    assert set(sampler.class_probabilities()) == {"road", "sidewalk", "building"}


def test_sampler_draws_are_deterministic_and_follow_probabilities() -> None:
    sampler = RareClassSampler(STATS, LABEL_FILES, RCSConfig(temperature=0.1))
    first = [sampler.sample(np.random.default_rng(7)) for _ in range(3)]
    assert len(set(first)) == 1
    draws = [sampler.sample(rng) for rng in [np.random.default_rng(11)] for _ in range(20000)]
    again = [sampler.sample(rng) for rng in [np.random.default_rng(11)] for _ in range(20000)]
    assert draws == again
    assert all(index in sampler.files[c] for c, index in draws)
    classes = np.array([c for c, _ in draws])
    empirical = np.bincount(classes, minlength=3) / len(draws)
    np.testing.assert_allclose(empirical, sampler.probs, atol=0.015)
    road_files = np.bincount([i for c, i in draws if c == 0], minlength=3)
    assert road_files[0] == 0 and abs(road_files[1] - road_files[2]) < 0.1 * road_files.sum()


def test_sampler_drops_classes_without_eligible_files() -> None:
    sampler = RareClassSampler(STATS, LABEL_FILES, RCSConfig(min_pixels=4500))
    assert sampler.dropped == (1, 2) and list(sampler.classes) == [0]
    np.testing.assert_allclose(sampler.probs, [1.0])
    with pytest.raises(DatasetError, match="lower RCSConfig.min_pixels"):
        RareClassSampler(STATS, LABEL_FILES, RCSConfig(min_pixels=6000))


def test_sampler_rejects_stats_of_other_files() -> None:
    with pytest.raises(DatasetError, match="labels/c.png which is not in the dataset"):
        RareClassSampler(STATS, LABEL_FILES[1:], RCSConfig())
