"""Whole-image and sliding-window inference with a ``SegModel``.

``predict`` runs the model in eval mode without gradients on the model's device, in batches, and
returns logits, probabilities and labels at the input (or a requested) resolution together with the
decoder features E at 1/4 of the input resolution.  Results come back on the images' device.

Memory in slide mode is bounded by one window: windows run one after another (each a forward of
B x 3 x crop), and only the running sums stay resident — (B, C, H, W) logits, (B, D, H/4, W/4)
features and two count maps, float32: for one 2048 x 1024 image, 19 classes and D = 256, about
160 MB + 134 MB, whatever the number of windows.  ``run_image`` applies an
:class:`InferenceSettings` (DAFormer's test resize, then whole or slide) and reports progress.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dida.data.pipeline import normalize
from dida.model import SegModel

SIZE_DIVISOR = 32
"""Whole-image inputs are padded to a multiple of the encoder's total stride."""
Progress = Callable[[int, int], None]
"""Called with (windows done, windows in all) as a slide-mode prediction advances."""


@dataclass
class Prediction:
    """Model outputs for a batch of B images of size H x W."""

    logits: Tensor
    """(B, C, H, W) class scores, bilinearly resized to the input (or ``output_size``)."""
    probs: Tensor
    """(B, C, H, W) softmax of ``logits`` over classes."""
    labels: Tensor
    """(B, H, W) int64 argmax of ``logits`` (train IDs)."""
    features: Tensor
    """(B, D, ceil(H/4), ceil(W/4)) decoder features E of the input (not of ``output_size``)."""


def pad_to_multiple(images: Tensor, divisor: int = SIZE_DIVISOR) -> Tensor:
    """Zero-pad (B, 3, H, W) at the bottom and right to multiples of ``divisor``.

    Zero after ImageNet normalisation is the mean colour, DAFormer's image padding value."""
    h, w = images.shape[-2:]
    pad_h, pad_w = -h % divisor, -w % divisor
    return F.pad(images, (0, pad_w, 0, pad_h), value=0.0)


def _forward_whole(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    """Logits (B, C, H, W) and features (B, D, ceil(H/4), ceil(W/4)) of one padded forward pass."""
    h, w = images.shape[-2:]
    padded = pad_to_multiple(images)
    out = model(padded)
    logits = F.interpolate(out.logits, size=padded.shape[-2:], mode="bilinear")
    features = out.features[..., : math.ceil(h / 4), : math.ceil(w / 4)]
    return logits[..., :h, :w], features


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Window offsets along one axis, mmseg ``slide_inference`` semantics.

    ``max(size - crop + stride - 1, 0) // stride + 1`` windows at ``i * stride``; a window that
    would overrun the image is shifted back to end at the border (so the last window may
    overlap more); an image smaller than ``crop`` gets one window of its own size."""
    count = max(size - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, size) - crop, 0) for i in range(count)]


def _forward_slide(
    model: nn.Module,
    images: Tensor,
    crop: tuple[int, int],
    stride: tuple[int, int],
    progress: Progress | None = None,
) -> tuple[Tensor, Tensor]:
    """Average logits of overlapping windows (each run like a whole image) over every pixel.

    Features are averaged on the 1/4 grid: a window's feature map is placed on rows
    ``floor(y1/4) .. ceil(y2/4)`` (resized if offsets are not multiples of 4, else exact)."""
    b, _, h, w = images.shape
    ch, cw = min(crop[0], h), min(crop[1], w)
    fh, fw = math.ceil(h / 4), math.ceil(w / 4)
    logits_sum = count = feat_sum = feat_count = None
    windows = [
        (y1, x1) for y1 in window_starts(h, ch, stride[0]) for x1 in window_starts(w, cw, stride[1])
    ]
    for done, (y1, x1) in enumerate(windows, 1):
        logits, feats = _forward_whole(model, images[..., y1 : y1 + ch, x1 : x1 + cw])
        if logits_sum is None:
            logits_sum = logits.new_zeros(b, logits.shape[1], h, w)
            count = logits.new_zeros(1, 1, h, w)
            feat_sum = feats.new_zeros(b, feats.shape[1], fh, fw)
            feat_count = feats.new_zeros(1, 1, fh, fw)
        logits_sum[..., y1 : y1 + ch, x1 : x1 + cw] += logits
        count[..., y1 : y1 + ch, x1 : x1 + cw] += 1
        fy1, fy2 = y1 // 4, math.ceil((y1 + ch) / 4)
        fx1, fx2 = x1 // 4, math.ceil((x1 + cw) / 4)
        if feats.shape[-2:] != (fy2 - fy1, fx2 - fx1):
            feats = F.interpolate(feats, size=(fy2 - fy1, fx2 - fx1), mode="bilinear")
        feat_sum[..., fy1:fy2, fx1:fx2] += feats
        feat_count[..., fy1:fy2, fx1:fx2] += 1
        if progress is not None:
            progress(done, len(windows))
    return logits_sum / count, feat_sum / feat_count


def _check_inputs(
    images: Tensor, mode: str, crop: tuple[int, int], stride: tuple[int, int]
) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) normalised RGB, got {tuple(images.shape)}")
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    if min(*crop, *stride) < 1:
        raise ValueError(f"crop {crop} and stride {stride} must be positive")
    if mode == "slide" and (stride[0] > crop[0] or stride[1] > crop[1]):
        raise ValueError(f"stride {stride} larger than crop {crop} would leave pixels unpredicted")


def predict(
    model: SegModel,
    images: Tensor,
    mode: str = "whole",
    crop: tuple[int, int] = (512, 512),
    stride: tuple[int, int] = (341, 341),
    output_size: tuple[int, int] | None = None,
    progress: Progress | None = None,
) -> Prediction:
    """Segment a batch of normalised images (B, 3, H, W).

    ``mode="whole"``: one forward pass on the image zero-padded (bottom/right) to a multiple of
    32; the 1/4 logits are upsampled to the padded size and cropped back to H x W.
    ``mode="slide"``: windows of ``crop`` (h, w) every ``stride`` (h, w), each run as in whole
    mode; overlapping logits are averaged (mmseg ``slide_inference``).  Logits are finally resized
    bilinearly (align_corners=False) to ``output_size`` (h, w) when given.  The model runs in eval
    mode under ``torch.no_grad`` on its own device; its train/eval mode is restored afterwards.
    ``progress`` is called after each slide window (after the single pass in whole mode).
    """
    _check_inputs(images, mode, crop, stride)
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = images.to(device=param.device, dtype=param.dtype)
            if mode == "whole":
                logits, features = _forward_whole(model, x)
                if progress is not None:
                    progress(1, 1)
            else:
                logits, features = _forward_slide(model, x, crop, stride, progress)
            if output_size is not None and tuple(output_size) != tuple(logits.shape[-2:]):
                logits = F.interpolate(logits, size=tuple(output_size), mode="bilinear")
    finally:
        model.train(was_training)
    logits = logits.to(images.device, torch.float32)
    features = features.to(images.device, torch.float32)
    return Prediction(logits, logits.softmax(dim=1), logits.argmax(dim=1), features)


def predict_image(model: SegModel, image: np.ndarray, **kwargs) -> Prediction:
    """``predict`` on one uint8 (H, W, 3) RGB image, normalised with ImageNet mean/std
    (``dida.data.pipeline.normalize``); returns a batch of one (B = 1)."""
    return predict(model, normalize(image).unsqueeze(0), **kwargs)


TEST_SCALE = (1024, 512)
"""DAFormer's Cityscapes test ``img_scale`` (w, h): larger images are resized to fit it, keeping
their aspect ratio, and the logits resized back (METHOD.md §1.1)."""


@dataclass(frozen=True)
class InferenceSettings:
    """How one image is run: mmseg ``test_cfg`` (``mode``, ``crop``, ``stride``) after resizing
    it to fit ``scale`` (w, h) when it is larger (None: never resized)."""

    mode: str = "whole"
    crop: tuple[int, int] = (512, 512)
    stride: tuple[int, int] = (341, 341)
    scale: tuple[int, int] | None = TEST_SCALE

    @classmethod
    def from_test_cfg(cls, test_cfg: dict) -> InferenceSettings:
        """Settings from an mmseg config's ``test_cfg`` (``dida.checkpoints.parse_test_cfg``)."""
        crop = tuple(test_cfg.get("crop_size") or cls.crop)
        stride = tuple(test_cfg.get("stride") or cls.stride)
        mode = test_cfg.get("mode", "whole")
        return cls(mode if mode in ("whole", "slide") else "whole", crop, stride)

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) the image is run at: fitted inside ``scale`` when larger, else unchanged."""
        if self.scale is None or (width <= self.scale[0] and height <= self.scale[1]):
            return height, width
        ratio = min(self.scale[0] / width, self.scale[1] / height)
        return max(round(height * ratio), 1), max(round(width * ratio), 1)


def run_image(
    model: SegModel,
    image: np.ndarray,
    settings: InferenceSettings | None = None,
    progress: Progress | None = None,
) -> Prediction:
    """``predict_image`` under ``settings``: the uint8 (H, W, 3) image is resized to its working
    size (bilinear), run whole or by windows, and its logits resized back to H x W; features are
    resized to (ceil(H/4), ceil(W/4)) so they line up with the image as in whole mode."""
    settings = settings or InferenceSettings()
    h, w = image.shape[:2]
    x = normalize(image).unsqueeze(0)
    size = settings.working_size(h, w)
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    out = predict(model, x, settings.mode, settings.crop, settings.stride, (h, w), progress)
    grid = (math.ceil(h / 4), math.ceil(w / 4))
    if tuple(out.features.shape[-2:]) != grid:
        out.features = F.interpolate(out.features, size=grid, mode="bilinear")
    return out
