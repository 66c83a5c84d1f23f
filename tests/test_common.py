"""Golden values and invariants for the pure maths of the adaptation methods (dida/methods/common.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dida.methods import common as C

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- EMA


def test_ema_alpha_schedule() -> None:
    assert C.ema_alpha(0) == 0.0
    assert C.ema_alpha(1) == 0.5
    assert C.ema_alpha(9) == pytest.approx(0.9)
    assert C.ema_alpha(10_000) == 0.999
    assert C.ema_alpha(10_000, alpha_max=0.99) == 0.99


def _pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    teacher = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    teacher[1].running_mean.fill_(7.0)
    student[1].running_mean.fill_(-3.0)
    return teacher, student


def test_ema_alpha_zero_copies_student_and_leaves_buffers() -> None:
    teacher, student = _pair()
    C.ema_update_(teacher, student, 0.0)
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        assert torch.equal(t, s)
    assert torch.equal(teacher[1].running_mean, torch.full((3,), 7.0))


def test_ema_alpha_one_keeps_teacher() -> None:
    teacher, student = _pair()
    before = [p.clone() for p in teacher.parameters()]
    C.ema_update_(teacher, student, 1.0)
    for t, b in zip(teacher.parameters(), before, strict=True):
        assert torch.equal(t, b)


def test_ema_intermediate_value_and_no_grad() -> None:
    teacher, student = _pair()
    t0, s0 = teacher[0].weight.clone(), student[0].weight.clone()
    C.ema_update_(teacher, student, 0.25)
    torch.testing.assert_close(teacher[0].weight, 0.25 * t0 + 0.75 * s0)
    assert teacher[0].weight.grad_fn is None


def test_ema_mismatched_networks_raise() -> None:
    with pytest.raises(ValueError, match="deep copy"):
        C.ema_update_(nn.Linear(2, 3), nn.Linear(3, 3), 0.5)


# ----------------------------------------------------------------------------- CE, pseudo-labels


def test_seg_ce_counts_ignored_pixels_in_denominator() -> None:
    logits = torch.tensor(
        [[[[0.0, 0.0], [0.0, 2.0]], [[math.log(3.0), 0.0], [0.0, 0.0]]]]
    )  # (1,2,2,2)
    labels = torch.tensor([[[1, 0], [255, 0]]])
    ce = [-math.log(0.75), -math.log(0.5), -math.log(math.exp(2) / (math.exp(2) + 1))]
    assert C.seg_ce(logits, labels).item() == pytest.approx(sum(ce) / 4, rel=1e-6)
    weight = torch.tensor([[[2.0, 0.0], [5.0, 1.0]]])
    expected = (2 * ce[0] + 0 * ce[1] + 1 * ce[2]) / 4
    assert C.seg_ce(logits, labels, weight).item() == pytest.approx(expected, rel=1e-6)


def test_seg_ce_upsamples_logits_to_label_size() -> None:
    logits = torch.tensor([0.0, math.log(3.0)]).reshape(1, 2, 1, 1)
    labels = torch.ones(1, 4, 4, dtype=torch.long)
    assert C.seg_ce(logits, labels).item() == pytest.approx(-math.log(0.75), rel=1e-6)


def test_pseudo_label_batch_scalar_weight_and_rows() -> None:
    probs = torch.full((2, 2, 4, 4), 0.5)
    probs[0, 1, :2] = 0.99  # 8 of 32 pixels confident, class 1
    probs[0, 0, :2] = 0.01
    out = C.pseudo_label(probs, threshold=0.968, ignore_top=1, ignore_bottom=1)
    assert out.labels[0, 0, 0] == 1 and out.labels[1, 0, 0] == 0
    expected = torch.tensor([0.0, 0.25, 0.25, 0.0]).reshape(1, 4, 1).expand(2, 4, 4)
    torch.testing.assert_close(out.weight, expected)


def test_pseudo_label_rows_must_fit() -> None:
    with pytest.raises(ValueError, match="scale_ignore_rows"):
        C.pseudo_label(torch.rand(1, 2, 4, 4), ignore_top=15, ignore_bottom=120)


def test_scale_ignore_rows() -> None:
    assert C.scale_ignore_rows(15, 120, 512) == (15, 120)
    assert C.scale_ignore_rows(15, 120, 128) == (4, 30)
    assert C.scale_ignore_rows(15, 120, 256) == (8, 60)


# ----------------------------------------------------------------------------- ClassMix, augment


def test_class_mix_picks_ceil_half_of_batch_classes() -> None:
    labels = torch.tensor([0, 1, 2, 255, 5]).repeat_interleave(4).reshape(1, 4, 5).repeat(2, 1, 1)
    mask = C.class_mix_masks(labels, gen(3))
    assert mask.shape == (2, 1, 4, 5) and mask.dtype == torch.float32
    for b in range(2):
        picked = torch.unique(labels[b][mask[b, 0].bool()])
        assert len(picked) == 3  # ceil(5 / 2)
        for c in picked:  # whole class regions, never parts
            assert bool(mask[b, 0][labels[b] == c].all())
    assert torch.equal(mask, C.class_mix_masks(labels, gen(3)))


def test_class_mix_classes_come_from_the_whole_batch() -> None:
    labels = torch.zeros(2, 2, 2, dtype=torch.long)
    labels[1] = torch.tensor([[1, 2], [3, 3]])  # image 0 only has class 0; batch has 4 classes
    empty = [C.class_mix_masks(labels, gen(s))[0].sum().item() == 0 for s in range(40)]
    assert any(empty) and not all(empty)  # class 0 is picked with probability 1/2


def test_mix_images_labels_weights() -> None:
    mask = torch.tensor([[[[1.0, 0.0]]]])  # (1,1,1,2)
    a_img, b_img = torch.ones(1, 3, 1, 2), torch.zeros(1, 3, 1, 2)
    assert torch.equal(C.mix(mask, a_img, b_img)[0, :, 0], torch.tensor([[1.0, 0.0]] * 3))
    labels = C.mix(mask, torch.tensor([[[4, 4]]]), torch.tensor([[[7, 7]]]))
    assert labels.dtype == torch.long and labels.tolist() == [[[4, 7]]]
    weight = C.mix(mask, torch.ones(1, 1, 2), torch.tensor([[[0.3, 0.3]]]))
    assert torch.equal(weight, torch.tensor([[[1.0, 0.3]]]))


def test_blur_kernel_size_matches_daformer() -> None:
    assert [C.blur_kernel_size(s) for s in (512, 1024, 256, 4)] == [51, 103, 25, 1]


def test_strong_augment_shape_and_determinism() -> None:
    images = torch.randn(2, 3, 12, 12, generator=gen(1))
    a = C.strong_augment(images, MEAN, STD, gen(7))
    b = C.strong_augment(images, MEAN, STD, gen(7))
    assert a.shape == images.shape and torch.equal(a, b)
    outputs = [C.strong_augment(images, MEAN, STD, gen(s)) for s in range(6)]
    assert any(not torch.allclose(o, images) for o in outputs)


def test_strong_augment_off_is_identity_and_zero_strength_round_trips() -> None:
    images = torch.randn(2, 3, 8, 8, generator=gen(2))
    off = C.strong_augment(images, MEAN, STD, gen(0), jitter_p=1.0, blur_p=1.0)
    assert torch.equal(off, images) and off is not images
    rgb = torch.rand(2, 3, 8, 8, generator=gen(3)) * 0.8 + 0.1
    norm = (rgb * 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    same = C.strong_augment(norm, MEAN, STD, gen(0), jitter_p=-1.0, jitter_s=0.0, blur_p=1.0)
    torch.testing.assert_close(same, norm, atol=1e-4, rtol=1e-4)


def test_strong_augment_blur_keeps_constant_images() -> None:
    images = torch.full((1, 3, 30, 30), 0.7)
    out = C.strong_augment(images, MEAN, STD, gen(0), jitter_p=1.0, blur_p=-1.0)
    torch.testing.assert_close(out, images)


def test_block_mask_golden_patches_and_determinism() -> None:
    mask = C.block_mask((2, 10, 12), patch=4, ratio=0.5, generator=gen(5))
    keep = torch.rand((2, 1, 3, 3), generator=gen(5)) > 0.5  # one draw per 4x4 block
    expected = keep.float().repeat_interleave(4, 2).repeat_interleave(4, 3)[:, :, :10, :12]
    assert mask.shape == (2, 1, 10, 12) and torch.equal(mask, expected)
    blocks = mask[:, :, :8, :12].reshape(2, 1, 2, 4, 3, 4)
    assert (blocks == blocks[:, :, :, :1, :, :1]).all()  # constant on every patch
    assert torch.equal(mask, C.block_mask((2, 10, 12), 4, 0.5, gen(5)))
    assert not torch.equal(mask, C.block_mask((2, 10, 12), 4, 0.5, gen(6)))


def test_block_mask_ratio_and_limits() -> None:
    mask = C.block_mask((4, 512, 512), patch=4, ratio=0.7, generator=gen(7))  # 65,536 blocks
    assert abs(1.0 - float(mask.mean()) - 0.7) < 0.01
    assert bool((C.block_mask((1, 8, 8), 2, 0.0, gen(0)) == 1).all())
    assert bool((C.block_mask((1, 8, 8), 2, 1.0, gen(0)) == 0).all())
    with pytest.raises(ValueError, match="patch >= 1"):
        C.block_mask((1, 8, 8), 0, 0.7, gen(0))


# ----------------------------------------------------------------------------- FD


def test_downscale_label_ratio_golden() -> None:
    labels = torch.tensor(
        [[1, 1, 2, 2], [1, 1, 2, 0], [3, 3, 255, 255], [4, 4, 255, 5]], dtype=torch.long
    )[None]
    out = C.downscale_label_ratio(labels, 2, min_ratio=0.75)
    assert out.tolist() == [[[1, 2], [255, 255]]]
    assert C.downscale_label_ratio(labels, 2, min_ratio=0.5).tolist() == [[[1, 2], [3, 255]]]


def test_feature_distance_golden_and_empty_mask() -> None:
    f_ref = torch.zeros(1, 2, 2, 2)
    f_student = torch.zeros(1, 2, 2, 2, requires_grad=True)
    with torch.no_grad():
        f_student[0, :, 0, 0] = torch.tensor([3.0, 4.0])  # distance 5
        f_student[0, :, 1, 1] = torch.tensor([1.0, 0.0])  # distance 1 (not a thing class)
    labels = torch.tensor([[13, 13, 0, 0], [13, 13, 11, 11], [0, 0, 2, 2], [0, 0, 2, 2]])[None]
    loss = C.feature_distance_loss(f_student, f_ref, labels, classes=(11, 13))
    assert loss.item() == pytest.approx(5.0 / 1)  # only the top-left cell is a dominant thing
    empty = C.feature_distance_loss(f_student, f_ref, torch.full((1, 4, 4), 2), classes=(11, 13))
    empty.backward()
    assert empty.item() == 0.0 and f_student.grad is not None
    assert torch.isfinite(f_student.grad).all() and f_student.grad.abs().sum() == 0


def test_feature_distance_zero_difference_has_finite_grad() -> None:
    f = torch.ones(1, 3, 2, 2, requires_grad=True)
    loss = C.feature_distance_loss(f, f.detach().clone(), torch.full((1, 4, 4), 13), classes=(13,))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(f.grad).all()


# ----------------------------------------------------------------------------- DIDA instance level


def test_instance_scores_dot_and_cosine() -> None:
    features = torch.tensor([[3.0, 0.0], [4.0, 1.0]]).reshape(1, 2, 1, 2)  # pixels (3,4), (0,1)
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert C.instance_scores(features, bank)[0, :, 0].tolist() == [[3.0, 0.0], [8.0, 2.0]]
    cos = C.instance_scores(features, bank, normalize=True)
    torch.testing.assert_close(cos[0, :, 0], torch.tensor([[0.6, 0.0], [0.8, 1.0]]))


def test_instance_scores_centred_on_the_bank_mean() -> None:
    feature = torch.tensor([3.0, 1.0]).reshape(1, 2, 1, 1)
    bank = torch.tensor([[2.0, 0.0], [0.0, 2.0]])  # mean (1, 1): centred slots (1, -1), (-1, 1)
    plain = C.instance_scores(feature, bank, normalize=True)[0, :, 0, 0]
    torch.testing.assert_close(plain, torch.tensor([3.0, 1.0]) / math.sqrt(10.0))
    centred = C.instance_scores(feature, bank, normalize=True, centre=True)[0, :, 0, 0]
    torch.testing.assert_close(centred, torch.tensor([1.0, -1.0]) / math.sqrt(2.0))
    dot = C.instance_scores(feature, bank, centre=True)[0, :, 0, 0]  # (2, 0) . (±1, ∓1)
    assert dot.tolist() == [2.0, -2.0]


def test_temperature_softmax_golden_and_limits() -> None:
    scores = torch.tensor([0.0, math.log(2.0)]).reshape(1, 2, 1, 1)
    torch.testing.assert_close(
        C.temperature_softmax(scores, 1.0).flatten(), torch.tensor([1 / 3, 2 / 3])
    )
    torch.testing.assert_close(
        C.temperature_softmax(scores, 0.5).flatten(), torch.tensor([0.2, 0.8])
    )
    s = torch.randn(2, 5, 3, 3, generator=gen(4))
    hard = C.temperature_softmax(s, 0.0)
    assert torch.equal(hard, nn.functional.one_hot(s.argmax(1), 5).permute(0, 3, 1, 2).float())
    torch.testing.assert_close(C.temperature_softmax(s, 1e-4), hard, atol=1e-6, rtol=0)
    torch.testing.assert_close(C.temperature_softmax(s, 0.1).sum(1), torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="tp"):
        C.temperature_softmax(s, -0.1)


def test_sum_normalize() -> None:
    s = torch.tensor([1.0, 3.0]).reshape(1, 2, 1, 1)
    assert C.sum_normalize(s).flatten().tolist() == [0.25, 0.75]
    torch.testing.assert_close(C.sum_normalize(s, eps=4.0).flatten(), torch.tensor([0.125, 0.375]))


def test_scatter_and_gather_match_loops() -> None:
    q = torch.rand(2, 6, 3, 2, generator=gen(5))
    slot_labels = torch.tensor([2, 0, 2, 3, 0, 2])
    a = C.scatter_to_classes(q, slot_labels, num_classes=4)
    ref = torch.zeros(2, 4, 3, 2)
    for k, c in enumerate(slot_labels.tolist()):
        ref[:, c] += q[:, k]
    torch.testing.assert_close(a, ref)
    p = torch.rand(2, 4, 3, 2, generator=gen(6))
    g = C.gather_from_classes(p, slot_labels)
    assert torch.equal(g, torch.stack([p[:, c] for c in slot_labels.tolist()], dim=1))
    with pytest.raises(ValueError, match="slot_labels"):
        C.scatter_to_classes(q, slot_labels, num_classes=3)


def test_calibrate_paper_and_released() -> None:
    q = torch.tensor([0.5, 0.25, 0.25]).reshape(1, 3, 1, 1)
    g = torch.tensor([0.2, 0.4, 0.4]).reshape(1, 3, 1, 1)
    torch.testing.assert_close(C.calibrate(q, g).flatten(), torch.tensor([0.1, 0.1, 0.1]) / 0.3)
    q_rand, g_rand = (
        torch.rand(2, 5, 2, 2, generator=gen(7)),
        torch.rand(2, 5, 2, 2, generator=gen(8)),
    )
    torch.testing.assert_close(C.calibrate(q_rand, g_rand).sum(1), torch.ones(2, 2, 2))
    released = C.calibrate_released(
        torch.tensor([1.0, 1.0]).reshape(1, 2, 1, 1), torch.tensor([2.0, -1.0]).reshape(1, 2, 1, 1)
    )
    assert released.flatten().tolist() == [2.0, -1.0]  # negative, above 1: as the released code


def test_regenerate_pseudo_probs_modes() -> None:
    p, a = torch.tensor([0.6, 0.4]), torch.tensor([0.2, 0.8])
    torch.testing.assert_close(
        C.regenerate_pseudo_probs(p, a, 0.75, "paper"), torch.tensor([0.5, 0.5])
    )
    torch.testing.assert_close(
        C.regenerate_pseudo_probs(p, a, 0.75, "released"), torch.tensor([0.65, 0.6])
    )
    with pytest.raises(ValueError, match="mode"):
        C.regenerate_pseudo_probs(p, a, 0.5, "other")


def test_instance_loss_golden() -> None:
    target = torch.tensor([0.5, 0.5]).reshape(1, 2, 1, 1).repeat(1, 1, 1, 2)
    probs = torch.tensor([0.25, 0.75]).reshape(1, 2, 1, 1).repeat(1, 1, 1, 2)
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert C.instance_loss(target, probs.log()).item() == pytest.approx(expected, rel=1e-6)
    released = C.instance_loss(target, probs, student_is_log=False)
    assert released.item() == pytest.approx(expected, rel=1e-6)
    weight = torch.tensor([[[1.0, 0.0]]])
    assert C.instance_loss(target, probs.log(), weight).item() == pytest.approx(
        expected / 2, rel=1e-6
    )
    by_weight = C.instance_loss(target, probs.log(), weight, reduction="weight")
    assert by_weight.item() == pytest.approx(expected, rel=1e-6)


def test_weighted_instance_loss_by_hand_on_a_4x4_grid() -> None:
    # target one-hot on slot 0, student q_0 = 1/2 everywhere: CE = log 2 at each of 16 cells;
    # L_T's weight: confidence 0.6, row 0 ignored; target-origin cells: columns 0-1 (6 cells left)
    target = torch.zeros(1, 2, 4, 4)
    target[:, 0] = 1.0
    log_q = torch.full((1, 2, 4, 4), math.log(0.5))
    weight = torch.full((1, 4, 4), 0.6)
    weight[:, 0] = 0.0
    weight[..., 2:] = 0.0
    loss = C.instance_loss(target, log_q, weight, reduction="all")
    assert loss.item() == pytest.approx(6 * 0.6 * math.log(2.0) / 16, rel=1e-6)
    by_weight = C.instance_loss(target, log_q, weight, reduction="weight")
    assert by_weight.item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_instance_loss_gradient_reaches_student_only() -> None:
    target = torch.rand(1, 3, 2, 2, requires_grad=True)
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    C.instance_loss(target, logits.log_softmax(1)).backward()
    assert target.grad is None and logits.grad is not None


def test_slot_targets_mixing_and_origin_mask() -> None:
    slot_labels = torch.tensor([1, 0, 1])
    labels = torch.tensor([[[1, 0, 255]]])
    q, valid = C.slot_targets_from_labels(labels, slot_labels)
    assert q[0, :, 0].T.tolist() == [[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    assert valid.tolist() == [[[True, True, False]]]
    mask = torch.tensor([[[[1.0, 0.0, 1.0]]]])
    teacher = torch.full((1, 3, 1, 3), 1 / 3)
    mixed = C.mix_instance_targets(teacher, q, mask)
    assert torch.equal(mixed[..., 0], q[..., 0]) and torch.equal(mixed[..., 1], teacher[..., 1])
    assert C.target_origin_mask(mask).tolist() == [[[0.0, 1.0, 0.0]]]


# ----------------------------------------------------------------------------- ProDA-style


def test_prototype_distances_match_loop() -> None:
    features = torch.randn(2, 4, 3, 2, generator=gen(9))
    protos = torch.randn(5, 4, generator=gen(10))
    d = C.prototype_distances(features, protos)
    ref = torch.stack([(features - p.view(1, 4, 1, 1)).norm(dim=1) for p in protos], dim=1)
    torch.testing.assert_close(d, ref, atol=1e-5, rtol=1e-5)


def test_prototype_weights_tau_multiplies() -> None:
    d = torch.tensor([1.0, 2.0]).reshape(1, 2, 1, 1)
    e = math.e
    torch.testing.assert_close(
        C.prototype_weights(d).flatten(), torch.tensor([e / (e + 1), 1 / (e + 1)])
    )
    w2 = C.prototype_weights(d, tau=2.0).flatten()
    torch.testing.assert_close(w2, torch.tensor([1 / (1 + e**-2), e**-2 / (1 + e**-2)]))


def test_rectified_pseudo_label() -> None:
    w = torch.tensor([0.9, 0.1]).reshape(1, 2, 1, 1)
    p = torch.tensor([0.3, 0.7]).reshape(1, 2, 1, 1)
    out = C.rectified_pseudo_label(w, p)
    assert out.labels.tolist() == [[[0]]]
    torch.testing.assert_close(out.probs.flatten(), torch.tensor([0.27, 0.07]) / 0.34)


def test_symmetric_ce_golden() -> None:
    logits = torch.tensor([0.0, math.log(3.0)]).reshape(1, 2, 1, 1).repeat(1, 1, 1, 2)
    labels = torch.tensor([[[1, 255]]])
    ce, rce = -math.log(0.75), -math.log(1e-4) * 0.25
    loss = C.symmetric_ce(logits, labels)
    assert loss.item() == pytest.approx(0.1 * ce + 1.0 * rce, rel=1e-5)
    assert C.symmetric_ce(logits, labels, alpha=1.0, beta=0.0).item() == pytest.approx(ce, rel=1e-6)
    half = C.symmetric_ce(logits, labels, weight=torch.tensor([[[0.5, 0.5]]]))
    assert half.item() == pytest.approx(0.5 * loss.item(), rel=1e-6)
    assert C.symmetric_ce(logits, labels, weight=torch.zeros(1, 1, 2)).item() == 0.0


def test_proto_kl_golden_and_empty() -> None:
    t = torch.tensor([0.5, 0.5]).reshape(1, 2, 1, 1)
    s = torch.tensor([0.25, 0.75]).reshape(1, 2, 1, 1).log()
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert C.proto_kl(t, s).item() == pytest.approx(expected, rel=1e-6)
    assert C.proto_kl(t, s, torch.zeros(1, 1, 1, dtype=torch.bool)).item() == 0.0
    one_hot = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)  # 0·log 0 = 0
    assert C.proto_kl(one_hot, s).item() == pytest.approx(-math.log(0.25), rel=1e-6)


def test_update_prototypes_running_mean_then_ema() -> None:
    features = torch.zeros(1, 2, 4, 4)
    features[0, 0] = 2.0
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, 0, :3] = 1  # 3 pixels of class 1: below min_pixels
    protos, counts = torch.zeros(2, 2), torch.zeros(2, dtype=torch.long)
    protos, counts = C.update_prototypes(protos, features, labels, counts, min_pixels=10)
    assert protos.tolist() == [[2.0, 0.0], [0.0, 0.0]] and counts.tolist() == [1, 0]
    features[0, 0] = 4.0
    protos, counts = C.update_prototypes(protos, features, labels, counts, min_pixels=10)
    assert protos[0].tolist() == [3.0, 0.0] and counts.tolist() == [2, 0]  # running mean
    ema, n = C.update_prototypes(protos, features, labels, torch.tensor([100, 0]), momentum=0.1)
    torch.testing.assert_close(ema[0], torch.tensor([0.9 * 3.0 + 0.1 * 4.0, 0.0]))
    assert n.tolist() == [101, 0]
    _, capped = C.update_prototypes(protos, features, labels, torch.tensor([3000, 0]))
    assert capped.tolist() == [3000, 0]


def test_update_prototypes_applies_images_in_order() -> None:
    features = torch.stack([torch.full((1, 4, 4), 1.0), torch.full((1, 4, 4), 4.0)])  # (2,1,4,4)
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    protos, counts = C.update_prototypes(torch.zeros(1, 1), features, labels, torch.tensor([0]))
    assert protos.item() == pytest.approx(2.5) and counts.tolist() == [2]
