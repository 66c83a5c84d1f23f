"""predict / predict_image: padding, sliding windows, resizing, labels and model-mode handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dida.data.pipeline import IMAGENET_MEAN, IMAGENET_STD
from dida.inference import predict, predict_image, window_starts
from dida.model import ModelConfig, SegModel, SegOutput


@pytest.fixture(scope="module")
def model() -> SegModel:
    torch.manual_seed(0)
    return SegModel(ModelConfig(backbone="mit_b0", embed_dim=16, num_classes=5))


def images(b: int, h: int, w: int, seed: int = 1) -> Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_whole_mode_on_odd_sizes(model: SegModel) -> None:
    x = images(2, 37, 53)
    pred = predict(model, x)
    assert pred.logits.shape == (2, 5, 37, 53)
    assert pred.probs.shape == (2, 5, 37, 53)
    assert pred.labels.shape == (2, 37, 53) and pred.labels.dtype == torch.int64
    assert pred.features.shape == (2, 16, 10, 14)
    assert torch.equal(pred.labels, pred.logits.argmax(1))
    torch.testing.assert_close(pred.probs.sum(1), torch.ones(2, 37, 53))
    assert pred.features.min() >= 0


def test_whole_mode_equals_model_on_zero_padded_image(model: SegModel) -> None:
    x = images(1, 37, 53)
    padded = torch.zeros(1, 3, 64, 64)
    padded[..., :37, :53] = x
    model.eval()
    with torch.no_grad():
        out = model(padded)
    expected = F.interpolate(out.logits, size=(64, 64), mode="bilinear")[..., :37, :53]
    pred = predict(model, x)
    torch.testing.assert_close(pred.logits, expected)
    torch.testing.assert_close(pred.features, out.features[..., :10, :14])


def test_images_in_a_batch_are_independent(model: SegModel) -> None:
    x = images(3, 64, 96)
    batch = predict(model, x)
    single = predict(model, x[1:2])
    torch.testing.assert_close(batch.logits[1:2], single.logits, rtol=1e-4, atol=1e-5)


def test_slide_equals_whole_when_one_window_covers_the_image(model: SegModel) -> None:
    x = images(2, 45, 70)
    whole = predict(model, x)
    slide = predict(model, x, mode="slide", crop=(64, 96), stride=(32, 32))
    torch.testing.assert_close(slide.logits, whole.logits)
    torch.testing.assert_close(slide.features, whole.features)


def test_window_starts_follow_mmseg() -> None:
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]  # the last window is pushed back inside
    assert window_starts(64, 32, 16) == [0, 16, 32]
    assert window_starts(3, 3, 2) == [0]


class TopLeftModel(nn.Module):
    """Stub: logits and features are constant maps holding the window's top-left pixel value."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> SegOutput:
        b, _, h, w = x.shape
        value = (x[:, :1, :1, :1] * self.scale).expand(b, 2, h // 4, w // 4)
        return SegOutput(value, value[:, :1])


def test_slide_averages_overlapping_windows() -> None:
    x = torch.arange(40 * 64, dtype=torch.float32).reshape(1, 1, 40, 64).expand(1, 3, 40, 64)
    pred = predict(TopLeftModel(), x, mode="slide", crop=(32, 32), stride=(16, 16))
    total, hits = torch.zeros(40, 64), torch.zeros(40, 64)
    for y1 in (0, 8):  # rows: 2 windows, the second pushed back to end at row 40
        for x1 in (0, 16, 32):
            total[y1 : y1 + 32, x1 : x1 + 32] += x[0, 0, y1, x1]
            hits[y1 : y1 + 32, x1 : x1 + 32] += 1
    torch.testing.assert_close(pred.logits[0, 0], total / hits)
    torch.testing.assert_close(pred.features[0, 0], (total / hits)[::4, ::4])


def test_output_size_resizes_logits_only(model: SegModel) -> None:
    pred = predict(model, images(1, 64, 96), output_size=(128, 192))
    assert pred.logits.shape == (1, 5, 128, 192) and pred.labels.shape == (1, 128, 192)
    assert pred.features.shape == (1, 16, 16, 24)
    small = predict(model, images(1, 64, 96))
    expected = F.interpolate(small.logits, size=(128, 192), mode="bilinear")
    torch.testing.assert_close(pred.logits, expected)


def test_eval_mode_no_grad_and_mode_restored(model: SegModel) -> None:
    model.train()
    x = images(1, 64, 64)
    first, second = predict(model, x), predict(model, x)
    assert model.training
    assert torch.equal(first.logits, second.logits)  # dropout and drop-path are off
    assert not first.logits.requires_grad


def test_predict_image_normalises_uint8(model: SegModel) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    manual = (torch.from_numpy(rgb).float() - torch.tensor(IMAGENET_MEAN)) / torch.tensor(
        IMAGENET_STD
    )
    pred = predict_image(model, rgb)
    assert pred.logits.shape == (1, 5, 40, 50)
    torch.testing.assert_close(pred.logits, predict(model, manual.permute(2, 0, 1)[None]).logits)
    with pytest.raises(ValueError, match="uint8"):
        predict_image(model, rgb.astype(np.float32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "tiles"}, "mode"),
        ({"mode": "slide", "crop": (32, 32), "stride": (48, 16)}, "stride"),
    ],
)
def test_bad_arguments_are_rejected(model: SegModel, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        predict(model, images(1, 64, 64), **kwargs)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        predict(model, torch.zeros(3, 64, 64))
