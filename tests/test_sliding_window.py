"""Sliding-window inference (mmseg ``slide`` mode) against golden values built by hand, DAFormer's
test resize, and the progress it reports; memory is bounded by one window (see dida/inference.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dida.inference import InferenceSettings, predict, run_image, window_starts
from dida.model import SegOutput


class PixelModel(nn.Module):
    """Logits at 1/4 = a fixed 1x1 map of the 4x4-average input: a window's output depends only on
    the pixels under it, so every window agrees with a whole-image forward where 4x4 cells align."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 5, 1)
        torch.manual_seed(0)
        nn.init.normal_(self.proj.weight)

    def forward(self, x: torch.Tensor) -> SegOutput:
        pooled = F.avg_pool2d(x, 4)
        return SegOutput(self.proj(pooled), pooled)


class WindowMeanModel(nn.Module):
    """Every logit of a window = the mean of that window's input (one value per window), so where
    windows overlap the slide result must be the average of their means."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> SegOutput:
        b, _, h, w = x.shape
        mean = x.mean(dim=(1, 2, 3)).view(b, 1, 1, 1)
        return SegOutput(mean.expand(b, 2, h // 4, w // 4).clone(), x[:, :1, ::4, ::4])


def test_window_starts_cover_the_axis_like_mmseg():
    assert window_starts(128, 32, 32) == [0, 32, 64, 96]
    assert window_starts(64, 32, 21) == [0, 21, 32]  # last window shifted back to the border
    assert window_starts(20, 32, 21) == [0]


def test_non_overlapping_windows_equal_a_direct_forward():
    model, x = PixelModel(), torch.randn(1, 3, 64, 128)
    whole = predict(model, x, "whole")
    slide = predict(model, x, "slide", crop=(32, 32), stride=(32, 32))
    # Inside each 32x32 window bilinear upsampling sees the same 1/4 values as the whole image;
    # only the 2 rows / columns next to a window border differ (a window clamps at its own edge).
    for y in (0, 32):
        for x0 in (0, 32, 64, 96):
            cell = (..., slice(y + 2, y + 30), slice(x0 + 2, x0 + 30))
            torch.testing.assert_close(slide.logits[cell], whole.logits[cell])
    torch.testing.assert_close(slide.features, whole.features)


def test_overlapping_windows_are_averaged():
    model = WindowMeanModel()
    x = torch.arange(64 * 128, dtype=torch.float32).view(1, 1, 64, 128).expand(1, 3, 64, 128)
    slide = predict(model, x.contiguous(), "slide", crop=(32, 32), stride=(21, 21))
    ys, xs = window_starts(64, 32, 21), window_starts(128, 32, 21)
    expected = np.zeros((64, 128))
    count = np.zeros((64, 128))
    plane = x[0, 0].numpy()
    for y in ys:
        for x0 in xs:
            expected[y : y + 32, x0 : x0 + 32] += plane[y : y + 32, x0 : x0 + 32].mean()
            count[y : y + 32, x0 : x0 + 32] += 1
    assert count.max() == 4 and count.min() == 1  # overlaps of 2 and 4 windows exist
    np.testing.assert_allclose(slide.logits[0, 0].numpy(), expected / count, rtol=1e-6)


def test_progress_counts_windows_and_settings_come_from_test_cfg():
    seen = []
    settings = InferenceSettings.from_test_cfg(
        {"mode": "slide", "crop_size": (32, 32), "stride": (21, 21)}
    )
    image = np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8)
    out = run_image(PixelModel(), image, settings, lambda done, total: seen.append((done, total)))
    assert seen == [(i, 18) for i in range(1, 19)]  # 3 rows x 6 columns of windows
    assert out.logits.shape == (1, 5, 64, 128) and out.features.shape == (1, 3, 16, 32)


@pytest.mark.parametrize("h, w, working", [(1024, 2048, (512, 1024)), (64, 128, (64, 128))])
def test_large_images_are_resized_to_daformer_test_scale(h, w, working):
    settings = InferenceSettings()
    assert settings.working_size(h, w) == working
    assert InferenceSettings(scale=None).working_size(h, w) == (h, w)


def test_resize_mode_returns_full_resolution_logits():
    image = np.random.default_rng(1).integers(0, 255, (96, 160, 3), dtype=np.uint8)
    out = run_image(PixelModel(), image, InferenceSettings(scale=(80, 48)))
    assert out.logits.shape == (1, 5, 96, 160) and out.labels.shape == (1, 96, 160)
    assert out.features.shape == (1, 3, 24, 40)
