"""dida.explain: golden instance distributions, agreement with the full-map maths, the cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dida.bank import BankSnapshot
from dida.explain import (
    ImageFeatureCache,
    ImageFeatures,
    distribution_over_tps,
    explain_features,
    explain_pixel,
    feature_cell,
    instance_distribution,
)
from dida.inference import predict_image
from dida.methods.common import (
    calibrate,
    gather_from_classes,
    instance_scores,
    regenerate_pseudo_probs,
    scatter_to_classes,
    temperature_softmax,
)
from dida.model import ModelConfig, SegModel

BANK3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # (K=3, D=2)
FEATURE = torch.tensor([1.0, 0.0])


def snapshot(features: torch.Tensor, labels: list[int]) -> BankSnapshot:
    k = len(labels)
    return BankSnapshot(
        iteration=0,
        features=features.half(),
        labels=torch.tensor(labels),
        ages=torch.zeros(k, dtype=torch.long),
        source_ids=torch.arange(k) + 100,
        changed=torch.zeros(k, dtype=torch.bool),
    )


# ---------------------------------------------------------------------------------------------
# Instance distribution on a 3-slot bank


def test_instance_distribution_golden_dot_product() -> None:
    # s = (1, 0, 1); tp = 0.5 -> exp(2), exp(0), exp(2) normalised
    z = 2 * math.exp(2) + 1
    q = instance_distribution(FEATURE, BANK3, tp=0.5, normalize=False)
    torch.testing.assert_close(q, torch.tensor([math.exp(2) / z, 1 / z, math.exp(2) / z]))


def test_instance_distribution_golden_cosine() -> None:
    # cosine s = (1, 0, 1/sqrt 2); tp = 1
    e = [math.exp(1.0), 1.0, math.exp(1 / math.sqrt(2))]
    q = instance_distribution(FEATURE, BANK3, tp=1.0, normalize=True)
    torch.testing.assert_close(q, torch.tensor(e) / sum(e))


def test_tp_zero_is_the_argmax_one_hot() -> None:
    q = instance_distribution(torch.tensor([0.2, 1.0]), BANK3, tp=0.0, normalize=True)
    torch.testing.assert_close(q, torch.tensor([0.0, 1.0, 0.0]))
    ties = instance_distribution(FEATURE, BANK3, tp=0.0, normalize=False)  # s = (1, 0, 1)
    torch.testing.assert_close(ties, torch.tensor([1.0, 0.0, 0.0]))


def test_distribution_over_tps_shares_one_scale() -> None:
    sweep = distribution_over_tps(FEATURE, snapshot(BANK3, [0, 1, 1]), (0.0, 0.1, 1.0))
    assert sweep.q.shape == (3, 3) and sweep.tps == (0.0, 0.1, 1.0)
    for row, tp in zip(sweep.q, sweep.tps, strict=True):
        torch.testing.assert_close(row, instance_distribution(FEATURE, BANK3, tp))
    assert sweep.y_max == pytest.approx(1.0)  # the one-hot row
    assert sweep.entropy[0] == 0.0 and sweep.entropy[2] > sweep.entropy[1] > 0.0
    assert sweep.entropy[2] < math.log(3)


def test_explain_features_golden_on_a_3_slot_bank() -> None:
    # one pixel, C = 2 classes; slots 0 -> class 0, slots 1, 2 -> class 1
    logits = torch.log(torch.tensor([0.25, 0.75]))[:, None, None]  # p = (0.25, 0.75)
    outputs = ImageFeatures(logits, FEATURE[:, None, None])
    ex = explain_features(outputs, snapshot(BANK3, [0, 1, 1]), 0, 0, tp=0.5, alpha=0.5)
    e2 = math.exp(2)
    q = torch.tensor([e2, 1.0, math.exp(2 / math.sqrt(2))])  # cosine s = (1, 0, 0.707) / 0.5
    q = q / q.sum()
    torch.testing.assert_close(ex.q, q, rtol=1e-3, atol=1e-4)  # float16 bank
    torch.testing.assert_close(ex.gathered, torch.tensor([0.25, 0.75, 0.75]))
    qg = q * torch.tensor([0.25, 0.75, 0.75])
    torch.testing.assert_close(ex.calibrated, qg / qg.sum(), rtol=1e-3, atol=1e-4)
    a = torch.tensor([qg[0], qg[1] + qg[2]]) / qg.sum()
    torch.testing.assert_close(ex.scattered, a, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(
        ex.regenerated_probs, 0.5 * torch.tensor([0.25, 0.75]) + 0.5 * a, rtol=1e-3, atol=1e-4
    )
    assert ex.pseudo_label_semantic == 1 and ex.pseudo_label_regenerated == 1
    assert ex.entropy == pytest.approx(float(-(q * q.log()).sum()), rel=1e-3)
    assert ex.nearest.indices.tolist()[:2] == [0, 2]
    assert ex.nearest.labels.tolist() == [0, 1, 1] and ex.nearest.source_ids.tolist() == [
        100,
        102,
        101,
    ]


def test_scattering_can_flip_the_pseudo_label() -> None:
    # p favours class 1 slightly, but the feature sits on the class-0 slot: a pulls toward 0
    logits = torch.log(torch.tensor([0.45, 0.55]))[:, None, None]
    outputs = ImageFeatures(logits, FEATURE[:, None, None])
    ex = explain_features(outputs, snapshot(BANK3, [0, 1, 1]), 0, 0, tp=0.0, alpha=0.5)
    assert ex.pseudo_label_semantic == 1 and ex.pseudo_label_regenerated == 0
    torch.testing.assert_close(ex.scattered, torch.tensor([1.0, 0.0]))


def test_feature_cell_and_pixel_range() -> None:
    assert feature_cell(0, 0, (64, 96), (16, 24)) == (0, 0)
    assert feature_cell(95, 63, (64, 96), (16, 24)) == (15, 23)
    assert feature_cell(9, 7, (64, 96), (16, 24)) == (1, 2)
    with pytest.raises(ValueError, match=r"outside the 96x64 \(W x H\) image"):
        feature_cell(96, 0, (64, 96), (16, 24))
    with pytest.raises(ValueError, match="integers"):
        feature_cell(1.5, 0, (64, 96), (16, 24))


def test_bank_of_another_width_is_rejected() -> None:
    outputs = ImageFeatures(torch.zeros(2, 1, 1), torch.ones(5, 1, 1))
    with pytest.raises(ValueError, match="width D = 5"):
        explain_features(outputs, snapshot(BANK3, [0, 1, 1]), 0, 0, tp=0.1)


# ---------------------------------------------------------------------------------------------
# A real (tiny, random) model


@pytest.fixture(scope="module")
def model() -> SegModel:
    torch.manual_seed(0)
    return SegModel(ModelConfig(embed_dim=16), load_backbone_weights=False).eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def bank() -> BankSnapshot:
    generator = torch.Generator().manual_seed(1)
    return snapshot(torch.rand(7, 16, generator=generator), [0, 0, 1, 2, 2, 5, 18])


@pytest.mark.parametrize(("tp", "normalize"), [(0.1, True), (0.0, True), (2.0, False)])
def test_explain_pixel_agrees_with_the_full_map_maths(model, image, bank, tp, normalize) -> None:
    x, y, alpha = 37, 50, 0.3
    pred = predict_image(model, image)
    rows = torch.arange(64) * pred.features.shape[-2] // 64
    cols = torch.arange(96) * pred.features.shape[-1] // 96
    features = pred.features[:, :, rows][:, :, :, cols]  # (1, D, H, W) nearest cell per pixel
    q = temperature_softmax(instance_scores(features, bank.features.float(), normalize), tp)
    g = gather_from_classes(pred.probs, bank.labels)
    calibrated = calibrate(q, g)
    a = scatter_to_classes(calibrated, bank.labels)
    regenerated = regenerate_pseudo_probs(pred.probs, a, alpha)

    ex = explain_pixel(model, image, bank, x, y, tp, alpha=alpha, normalize=normalize)
    close = {"rtol": 1e-4, "atol": 1e-6}
    torch.testing.assert_close(ex.teacher_probs, pred.probs[0, :, y, x], **close)
    torch.testing.assert_close(ex.q, q[0, :, y, x], **close)
    torch.testing.assert_close(ex.gathered, g[0, :, y, x], **close)
    torch.testing.assert_close(ex.calibrated, calibrated[0, :, y, x], **close)
    torch.testing.assert_close(ex.scattered, a[0, :, y, x], **close)
    torch.testing.assert_close(ex.regenerated_probs, regenerated[0, :, y, x], **close)
    assert ex.pseudo_label_semantic == int(pred.labels[0, y, x])
    assert ex.pseudo_label_regenerated == int(regenerated[0, :, y, x].argmax())
    assert ex.slot_labels.tolist() == bank.labels.tolist()
    torch.testing.assert_close(ex.feature, pred.features[0, :, ex.cell[0], ex.cell[1]])
    sweep = distribution_over_tps(ex.feature, bank, (tp,), normalize)
    torch.testing.assert_close(sweep.q[0], ex.q)
    assert float(ex.regenerated_probs.sum()) == pytest.approx(1.0, abs=1e-5)


def test_explain_pixel_out_of_range_names_the_image_size(model, image, bank) -> None:
    cache = ImageFeatureCache()
    with pytest.raises(ValueError, match=r"pixel \(x=10, y=64\) lies outside the 96x64"):
        explain_pixel(model, image, bank, 10, 64, 0.1, cache=cache)
    assert cache.misses == 0, "the range check comes before any forward pass"


def test_cache_serves_other_pixels_and_tps_without_a_forward(model, image, bank) -> None:
    cache = ImageFeatureCache(capacity=1)
    first = explain_pixel(model, image, bank, 3, 4, 0.1, cache=cache)
    again = explain_pixel(model, image, bank, 3, 4, 0.5, cache=cache)
    other = explain_pixel(model, image, bank, 90, 60, 0.1, cache=cache)
    assert (cache.misses, cache.hits, len(cache)) == (1, 2, 1)
    uncached = explain_pixel(model, image, bank, 90, 60, 0.1)
    torch.testing.assert_close(other.q, uncached.q)
    assert not torch.equal(first.q, again.q)  # tp changed the distribution
    explain_pixel(model, image[::-1].copy(), bank, 3, 4, 0.1, cache=cache)  # evicts the first
    explain_pixel(model, image, bank, 3, 4, 0.1, cache=cache)
    assert (cache.misses, len(cache)) == (3, 1)


def test_cache_keys_by_model(image) -> None:
    cache = ImageFeatureCache()
    models = [SegModel(ModelConfig(embed_dim=8), load_backbone_weights=False) for _ in range(2)]
    outputs = [cache.get(m, image, model_key="run") for m in models]
    assert cache.misses == 2, "a different model under the same key is not served stale outputs"
    assert not torch.equal(outputs[0].logits, outputs[1].logits)
