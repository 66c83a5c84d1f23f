"""dida.visualize: palettes, label/error/diff maps and probability maps give exact colours."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from dida.data.classes import CLASSES, NUM_CLASSES, PALETTE
from dida.visualize import (
    CONFIDENCE_BELOW_COLOR,
    CVD_CATEGORIES,
    CVD_THINGS,
    DIFF_LEGEND,
    ISOLATE_COLOR,
    PALETTES,
    add_outline,
    apply_colormap,
    boundaries,
    colorize,
    confidence_map,
    diff_counts,
    diff_map,
    entropy_map,
    error_map,
    hex_to_rgb,
    legend_entries,
    normalized_entropy,
    overlay,
    visible_mask,
)

ROAD, SIDEWALK, BUILDING, CAR = (128, 64, 128), (244, 35, 232), (70, 70, 70), (0, 0, 142)
BLACK = (0, 0, 0)


def rgb(*colors: tuple[int, int, int]) -> np.ndarray:
    return np.array(colors, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# Palettes


@pytest.mark.parametrize("name", sorted(PALETTES))
def test_palette_has_19_distinct_colours(name: str) -> None:
    palette = PALETTES[name]
    assert palette.shape == (NUM_CLASSES, 3) and palette.dtype == np.uint8
    assert len({tuple(c) for c in palette.tolist()}) == NUM_CLASSES
    assert BLACK not in {tuple(c) for c in palette.tolist()}, "black is reserved for ignore"


def test_cityscapes_palette_is_the_papers() -> None:
    np.testing.assert_array_equal(PALETTES["cityscapes"], PALETTE)


def test_cvd_palette_keeps_one_okabe_ito_hue_per_category() -> None:
    covered = sorted([*(c for _, _, ids, _ in CVD_CATEGORIES for c in ids), *CVD_THINGS])
    assert covered == list(range(NUM_CLASSES))
    for name, base, ids, _ in CVD_CATEGORIES:
        base_hue = colorsys.rgb_to_hsv(*(v / 255 for v in hex_to_rgb(base)))[0]
        for c in ids:
            hue = colorsys.rgb_to_hsv(*(PALETTES["cvd"][c] / 255))[0]
            distance = min(abs(hue - base_hue), 1 - abs(hue - base_hue))
            assert distance < 0.02, f"{CLASSES[c]} drifted from the {name} hue"


# Machado, Oliveira & Fernandes (2009) simulation matrices at severity 1.0 (linear RGB).
CVD_SIMULATIONS = {
    "normal": np.eye(3),
    "deuteranopia": np.array(
        [
            [0.367322, 0.860646, -0.227968],
            [0.280085, 0.672501, 0.047413],
            [-0.01182, 0.04294, 0.968881],
        ]
    ),
    "protanopia": np.array(
        [
            [0.152286, 1.052583, -0.204868],
            [0.114503, 0.786281, 0.099216],
            [-0.003882, -0.048116, 1.051998],
        ]
    ),
}


def _lab(colors: np.ndarray) -> np.ndarray:
    """sRGB (N, 3) in 0..255 -> CIE L*a*b* (D65)."""
    c = colors / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = (
        linear
        @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    )
    f = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(f > 0.008856, np.cbrt(f), 7.787 * f + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def _simulate(colors: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    c = colors / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    seen = np.clip(linear @ matrix.T, 0, 1)
    return 255 * np.where(seen <= 0.0031308, 12.92 * seen, 1.055 * seen ** (1 / 2.4) - 0.055)


def _min_delta_e(colors: np.ndarray) -> float:
    lab = _lab(colors)
    distance = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    return float(distance[~np.eye(len(colors), dtype=bool)].min())


@pytest.mark.parametrize("vision", sorted(CVD_SIMULATIONS))
def test_cvd_palette_stays_distinguishable_under_colour_blindness(vision: str) -> None:
    cvd = _simulate(PALETTES["cvd"].astype(float), CVD_SIMULATIONS[vision])
    assert _min_delta_e(cvd) > 9.0
    if vision == "protanopia":  # the reason for the option: Cityscapes' fence and pole merge
        assert _min_delta_e(_simulate(PALETTE.astype(float), CVD_SIMULATIONS[vision])) < 4.0


def test_legend_entries() -> None:
    assert legend_entries()[0] == ("road", "#804080")
    assert legend_entries("cityscapes", ["car", 1]) == [("car", "#00008e"), ("sidewalk", "#f423e8")]
    assert len(legend_entries("cvd")) == NUM_CLASSES
    with pytest.raises(ValueError, match="unknown palette 'rainbow'"):
        legend_entries("rainbow")


# ---------------------------------------------------------------------------------------------
# Label maps

LABEL = np.array([[0, 255], [13, 1]], dtype=np.uint8)


def test_colorize_golden() -> None:
    np.testing.assert_array_equal(colorize(LABEL), rgb((ROAD, BLACK), (CAR, SIDEWALK)))


def test_colorize_accepts_int64_tensors() -> None:
    out = colorize(torch.from_numpy(LABEL.astype(np.int64)))
    np.testing.assert_array_equal(out, colorize(LABEL))


def test_colorize_hidden_and_isolate() -> None:
    hidden = colorize(LABEL, hidden=("car", 0))
    np.testing.assert_array_equal(hidden, rgb((BLACK, BLACK), (BLACK, SIDEWALK)))
    isolated = colorize(LABEL, isolate="car")
    np.testing.assert_array_equal(isolated, rgb((ISOLATE_COLOR, BLACK), (CAR, ISOLATE_COLOR)))


def test_colorize_cvd_uses_the_cvd_table() -> None:
    cvd = PALETTES["cvd"]
    np.testing.assert_array_equal(colorize(LABEL, "cvd"), rgb((cvd[0], BLACK), (cvd[13], cvd[1])))


def test_colorize_rejects_values_that_are_not_train_ids() -> None:
    with pytest.raises(ValueError, match="holds 19"):
        colorize(np.array([[0, 19]], dtype=np.uint8))
    with pytest.raises(ValueError, match="integer map"):
        colorize(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="unknown class"):
        colorize(LABEL, hidden=("cars",))


def test_overlay_golden_and_limits() -> None:
    image = rgb(((10, 20, 30), (200, 200, 200)))
    colors = rgb(((110, 220, 0), (0, 0, 0)))
    np.testing.assert_array_equal(overlay(image, colors, 0.3), rgb(((40, 80, 21), (140, 140, 140))))
    np.testing.assert_array_equal(overlay(image, colors, 0.0), image)
    np.testing.assert_array_equal(overlay(image, colors, 1.0), colors)
    with pytest.raises(ValueError, match="opacity"):
        overlay(image, colors, 1.5)


def test_overlay_where_keeps_the_image_elsewhere() -> None:
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    out = overlay(image, colorize(LABEL), 1.0, where=visible_mask(LABEL, hidden=[13]))
    np.testing.assert_array_equal(out, rgb((ROAD, (100,) * 3), ((100,) * 3, SIDEWALK)))


def test_overlay_rejects_mismatched_sizes() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        overlay(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 3, 3), np.uint8), 0.5)


def test_boundaries_and_outline() -> None:
    label = np.array([[0, 0, 1], [0, 0, 1], [2, 2, 2]], dtype=np.uint8)
    expected = np.array([[0, 0, 1], [0, 0, 1], [1, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(boundaries(label), expected)
    image = np.zeros((3, 3, 3), dtype=np.uint8)
    out = add_outline(image, label, color=(1, 2, 3))
    np.testing.assert_array_equal(out[expected], np.tile([1, 2, 3], (5, 1)))
    assert not out[~expected].any() and not image.any()


# ---------------------------------------------------------------------------------------------
# Error and difference maps


def test_error_map_golden() -> None:
    pred = np.array([[0, 1], [2, 3]])
    gt = np.array([[0, 2], [255, 3]])
    expected = rgb(((0x44,) * 3, (0xD5, 0x5E, 0x00)), ((0x99,) * 3, (0x44,) * 3))
    np.testing.assert_array_equal(error_map(pred, gt), expected)


def test_diff_map_golden_and_counts() -> None:
    gt = np.array([[1, 1, 1, 1, 255]])
    pred_a = np.array([[1, 0, 0, 1, 1]])  # right, wrong, wrong, right, (ignore)
    pred_b = np.array([[1, 0, 1, 0, 0]])  # right, wrong, right, wrong, (ignore)
    colors = {name: hex_to_rgb(code) for name, code in DIFF_LEGEND}
    expected = rgb(
        (
            colors["both right"],
            colors["both wrong"],
            (0x00, 0x72, 0xB2),
            (0xE6, 0x9F, 0x00),
            BLACK,
        )
    )
    np.testing.assert_array_equal(diff_map(pred_a, pred_b, gt), expected)
    assert diff_counts(pred_a, pred_b, gt) == {
        "ignore": 1,
        "both right": 1,
        "both wrong": 1,
        "fixed (a wrong, b right)": 1,
        "broke (a right, b wrong)": 1,
    }
    assert colors["both right"][0] > colors["both wrong"][0]


def test_diff_map_rejects_mismatched_sizes() -> None:
    with pytest.raises(ValueError, match="pred_b"):
        diff_map(np.zeros((2, 2), int), np.zeros((2, 3), int), np.zeros((2, 2), int))


# ---------------------------------------------------------------------------------------------
# Probability maps

# matplotlib's viridis / cividis at 0, 0.5 (index 128) and 1.
VIRIDIS = {0: (68, 1, 84), 128: (33, 145, 140), 255: (253, 231, 37)}
CIVIDIS = {0: (0, 34, 78), 128: (125, 124, 120), 255: (254, 232, 56)}


def test_apply_colormap_golden() -> None:
    out = apply_colormap(np.array([[0.0, 0.5, 1.0, 7.0]]), "viridis")
    np.testing.assert_array_equal(out, rgb((VIRIDIS[0], VIRIDIS[128], VIRIDIS[255], VIRIDIS[255])))
    scaled = apply_colormap(np.array([[2.0, 4.0]]), "cividis", vmin=2.0, vmax=4.0)
    np.testing.assert_array_equal(scaled, rgb((CIVIDIS[0], CIVIDIS[255])))


def test_confidence_map_golden_with_threshold() -> None:
    probs = np.array([[[1.0, 0.5]], [[0.0, 0.5]]], dtype=np.float32)  # (C=2, H=1, W=2)
    np.testing.assert_array_equal(confidence_map(probs), rgb((VIRIDIS[255], VIRIDIS[128])))
    below = confidence_map(torch.from_numpy(probs), threshold=0.6)
    np.testing.assert_array_equal(below, rgb((VIRIDIS[255], CONFIDENCE_BELOW_COLOR)))


def test_entropy_map_golden() -> None:
    probs = np.array([[[1.0, 0.5]], [[0.0, 0.5]]], dtype=np.float32)
    np.testing.assert_allclose(normalized_entropy(probs), [[0.0, 1.0]], atol=1e-6)
    np.testing.assert_array_equal(entropy_map(probs), rgb((CIVIDIS[0], CIVIDIS[255])))


def test_probability_maps_reject_a_batch() -> None:
    with pytest.raises(ValueError, match=r"Prediction.probs\[i\]"):
        confidence_map(np.zeros((1, 19, 4, 4), dtype=np.float32))
