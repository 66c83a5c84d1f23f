"""The colour-blind palette keeps the look-alike classes apart under simulated colour blindness.

Simulation: Machado, Oliveira & Fernandes (2009) matrices at severity 1.0, applied in linear sRGB;
distance: CIE 1976 ΔE*ab in L*a*b* (D65). The eight classes users inspect side by side (person,
rider, car, truck, bus, train, motorcycle, bicycle) must stay at least ``LOOK_ALIKE_MIN_DE`` apart
with normal vision and under deuteranopia, protanopia and tritanopia; the old palette's six vehicle
blues did not (they merged to ΔE ≈ 10 in lightness steps of one hue).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dida.data.classes import CLASSES
from dida.visualize import PALETTES

MACHADO = {
    "normal": np.eye(3),
    "deuteranopia": np.array(
        [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
         [-0.01182, 0.04294, 0.968881]]
    ),
    "protanopia": np.array(
        [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
         [-0.003882, -0.048116, 1.051998]]
    ),
    "tritanopia": np.array(
        [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
         [0.004733, 0.691367, 0.3039]]
    ),
}  # fmt: skip
LOOK_ALIKE = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
LOOK_ALIKE_MIN_DE = 30.0
"""ΔE*ab 30: colours this far apart are told apart at a glance (a just-noticeable difference is
about 2.3; the old palette's vehicle blues were about 10 apart)."""
ALL_MIN_DE = 9.0


def linear(srgb: np.ndarray) -> np.ndarray:
    c = srgb / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def lab(srgb: np.ndarray) -> np.ndarray:
    """sRGB (N, 3) in 0..255 -> CIE L*a*b* (D65)."""
    rgb_to_xyz = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
    )
    f = linear(srgb) @ rgb_to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(f > 0.008856, np.cbrt(f), 7.787 * f + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def simulate(srgb: np.ndarray, vision: str) -> np.ndarray:
    """What a viewer with ``vision`` sees, back in sRGB 0..255."""
    seen = np.clip(linear(srgb) @ MACHADO[vision].T, 0, 1)
    return 255 * np.where(seen <= 0.0031308, 12.92 * seen, 1.055 * seen ** (1 / 2.4) - 0.055)


def closest_pair(palette: np.ndarray, names: tuple[str, ...], vision: str) -> tuple[float, str]:
    """(smallest ΔE*ab, "a / b") among the named classes as seen with ``vision``."""
    seen = lab(simulate(palette[[CLASSES.index(n) for n in names]].astype(float), vision))
    pairs = itertools.combinations(range(len(names)), 2)
    return min((float(np.linalg.norm(seen[i] - seen[j])), f"{names[i]} / {names[j]}")
               for i, j in pairs)  # fmt: skip


@pytest.mark.parametrize("vision", sorted(MACHADO))
def test_look_alike_classes_stay_apart(vision: str) -> None:
    distance, pair = closest_pair(PALETTES["cvd"], LOOK_ALIKE, vision)
    assert distance > LOOK_ALIKE_MIN_DE, f"{pair} only ΔE {distance:.1f} apart ({vision})"


@pytest.mark.parametrize("vision", sorted(MACHADO))
def test_every_class_stays_distinguishable(vision: str) -> None:
    distance, pair = closest_pair(PALETTES["cvd"], CLASSES, vision)
    assert distance > ALL_MIN_DE, f"{pair} only ΔE {distance:.1f} apart ({vision})"


def test_the_cityscapes_palette_fails_what_the_cvd_palette_passes() -> None:
    vehicles = ("car", "truck", "bus", "train", "motorcycle")
    distance, _ = closest_pair(PALETTES["cityscapes"], vehicles, "deuteranopia")
    assert distance < LOOK_ALIKE_MIN_DE
    assert closest_pair(PALETTES["cvd"], vehicles, "deuteranopia")[0] > LOOK_ALIKE_MIN_DE
