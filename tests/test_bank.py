"""DIDA instance bank: allocation, filling, momentum updates (paper / released), DDP reduction,
k-means and boundary selection, snapshots and their safetensors history."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import save_file

from dida import bank as B
from dida.data.classes import RARE_CLASS_SEQUENCE, SYNTHIA_16


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def const_features(values: list[list[float]], h: int = 2, w: int = 2) -> torch.Tensor:
    """(B, D, h, w) with every pixel of image b equal to values[b]."""
    return torch.tensor(values).reshape(len(values), -1, 1, 1).expand(-1, -1, h, w).clone()


def two_class_bank(per_class: int = 3, dim: int = 2) -> B.InstanceBank:
    """A bank over classes (0, 1) only (allocation order: rarer class 1 first)."""
    return B.InstanceBank.allocate(2 * per_class, dim, classes=(0, 1))


# ----------------------------------------------------------------------------- pure helpers


def test_allocation_class_balance_k300() -> None:
    labels = B.allocate_slot_labels(300)
    counts = torch.bincount(labels, minlength=19)
    assert counts.sum() == 300 and set(counts.tolist()) == {15, 16}
    assert [counts[c].item() for c in RARE_CLASS_SEQUENCE] == [16] * 15 + [15] * 4
    assert labels[:16].tolist() == [18] * 16  # grouped in rare-class order


def test_allocation_subset_and_errors() -> None:
    counts = torch.bincount(B.allocate_slot_labels(300, SYNTHIA_16), minlength=19)
    assert counts[[9, 14, 16]].tolist() == [0, 0, 0]
    assert sorted(set(counts[list(SYNTHIA_16)].tolist())) == [18, 19]  # 300 = 16*18 + 12
    with pytest.raises(ValueError, match="num_slots >= 19"):
        B.allocate_slot_labels(10)
    with pytest.raises(ValueError, match="distinct"):
        B.allocate_slot_labels(40, (0, 0, 1))


def test_class_means_match_loop_and_skip_ignore() -> None:
    features = torch.randn(2, 3, 4, 4, generator=gen(1))
    labels = torch.randint(0, 3, (2, 4, 4), generator=gen(2))
    labels[0, 0] = 255
    means, counts = B.class_means(features, labels, 4)
    for b in range(2):
        for c in range(4):
            sel = labels[b] == c
            assert counts[b, c] == sel.sum()
            ref = features[b][:, sel].mean(1) if sel.any() else torch.zeros(3)
            torch.testing.assert_close(means[b, c], ref)


def test_class_means_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match="holds 19"):
        B.class_means(torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2), 19), 19)
    with pytest.raises(ValueError, match="resize the labels"):
        B.class_means(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, dtype=torch.long), 19)


def test_boundary_mask_golden() -> None:
    labels = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])[None]
    expected = [[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 0]]
    assert B.boundary_mask(labels).int().tolist() == [expected]


def test_first_and_oldest_per_class() -> None:
    labels = torch.tensor([0, 1, 0, 1, 0])
    mask = torch.tensor([False, True, True, True, True])
    assert B.first_per_class(mask, labels, 2).tolist() == [1, 2]
    ages = torch.tensor([5, 3, -1, 3, 2])
    slots, ranks = B.oldest_per_class(ages, labels, torch.tensor([True, True]), stride=2)
    assert slots.tolist() == [2, 4, 1, 3] and ranks.tolist() == [0, 1, 0, 1]
    slots, _ = B.oldest_per_class(ages, labels, torch.tensor([False, True]), stride=1)
    assert slots.tolist() == [1]


def test_grouped_kmeans_golden_and_groups_respected() -> None:
    points = torch.tensor([[0.0], [0.2], [10.0], [10.2], [0.1]])
    groups = torch.tensor([0, 0, 0, 0, 1])
    centres = torch.tensor([[[1.0], [9.0]], [[50.0], [0.0]]])  # group 1's 2nd centre unused
    valid = torch.tensor([[True, True], [True, False]])
    out, counts = B.grouped_kmeans(points, groups, centres, valid, iters=3)
    torch.testing.assert_close(out[0], torch.tensor([[0.1], [10.1]]))
    torch.testing.assert_close(out[1, 0], torch.tensor([0.1]))  # far centre, own group only
    assert counts.tolist() == [[2.0, 2.0], [1.0, 0.0]]


# ----------------------------------------------------------------------------- fill


def test_fill_order_sources_and_full() -> None:
    bank = two_class_bank(per_class=2)
    assert bank.labels.tolist() == [1, 1, 0, 0]
    features = const_features([[1.0, 0.0], [2.0, 0.0]])
    labels = torch.tensor([[[0, 0], [1, 1]], [[1, 1], [1, 1]]])
    written = bank.fill(features, labels, it=7, source_ids=torch.tensor([10, 11]))
    assert sorted(written.tolist()) == [0, 1, 2]
    assert bank.features[:, 0].tolist() == [1.0, 2.0, 1.0, 0.0]
    assert bank.source_ids.tolist() == [10, 11, 10, -1]
    assert bank.ages.tolist() == [7, 7, 7, -1] and not bank.is_full()
    bank.fill(
        const_features([[5.0, 5.0]]), torch.zeros(1, 2, 2, dtype=torch.long), 8, torch.tensor([12])
    )
    assert bank.is_full() and bank.features[3].tolist() == [5.0, 5.0]
    bank.fill(
        const_features([[9.0, 9.0]]), torch.zeros(1, 2, 2, dtype=torch.long), 9, torch.tensor([13])
    )
    assert bank.features[3].tolist() == [5.0, 5.0]  # a full class is never overwritten by fill


def test_fill_min_pixels_and_boxes() -> None:
    bank = B.InstanceBank.allocate(2, 1, classes=(0, 1))
    labels = torch.tensor([[[0, 0], [0, 1]]])
    bank.fill(
        const_features([[3.0]]),
        labels,
        0,
        torch.tensor([4]),
        torch.tensor([[1, 2, 3, 4]]),
        min_pixels=2,
    )
    assert bank.filled.tolist() == [False, True]  # class 1 (slot 0) has one pixel only
    assert bank.boxes.tolist() == [[-1, -1, -1, -1], [1, 2, 3, 4]]


def test_fill_with_gather_equals_the_concatenated_batch() -> None:
    features = torch.randn(2, 3, 2, 2, generator=gen(3))
    labels = torch.randint(0, 2, (2, 2, 2), generator=gen(4))
    ids = torch.tensor([0, 1])
    gathered, single = two_class_bank(4, 3), two_class_bank(4, 3)
    gathered.fill(features, labels, 0, ids, gather=lambda t: torch.cat([t, t]))  # 2 equal ranks
    single.fill(
        torch.cat([features, features]), torch.cat([labels, labels]), 0, torch.cat([ids, ids])
    )
    assert torch.equal(gathered.features, single.features)
    assert torch.equal(gathered.source_ids, single.source_ids)


# ----------------------------------------------------------------------------- update


def full_bank() -> B.InstanceBank:
    """Classes (0, 1), 3 slots each, slot k holds (k, k)."""
    slot_labels = torch.tensor([1, 1, 1, 0, 0, 0])
    return B.InstanceBank.from_features(torch.arange(6.0)[:, None].repeat(1, 2), slot_labels, it=0)


def test_paper_update_momentum_stride_and_cycle() -> None:
    bank = full_bank()
    features = const_features([[10.0, 20.0]])
    labels = torch.zeros(1, 2, 2, dtype=torch.long)  # class 0 only
    cfg = B.BankUpdateConfig(mode="paper", momentum=0.9, stride=2)
    changed = bank.update(features, labels, it=50, cfg=cfg)
    assert changed.tolist() == [3, 4]
    expected = [[0.9 * k + 0.1 * 10.0, 0.9 * k + 0.1 * 20.0] for k in (3, 4)]
    torch.testing.assert_close(bank.features[3:5], torch.tensor(expected))
    assert bank.features[5].tolist() == [5.0, 5.0] and bank.features[:3, 0].tolist() == [0, 1, 2]
    assert bank.ages.tolist() == [0, 0, 0, 50, 50, 0]
    assert bank.update(features, labels, it=100, cfg=cfg).tolist() == [5, 3]  # oldest first, cyclic


def test_default_momentum_is_daformer_dida_0999() -> None:
    bank = full_bank()
    bank.update(
        const_features([[1000.0, 0.0]]),
        torch.zeros(1, 2, 2, dtype=torch.long),
        1,
        B.BankUpdateConfig(stride=1),
    )
    torch.testing.assert_close(bank.features[3], torch.tensor([0.999 * 3 + 1.0, 0.999 * 3]))


def test_released_update_image0_only_and_absent_classes_pulled_to_zero() -> None:
    bank = full_bank()
    features = const_features([[10.0, 10.0], [99.0, 99.0]])
    labels = torch.stack([torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.long)])
    changed = bank.update(features, labels, 3, B.BankUpdateConfig(mode="released", momentum=0.9))
    assert changed.tolist() == list(range(6))
    col = bank.features[:, 0]
    torch.testing.assert_close(col[:3], 0.9 * torch.arange(3.0))  # class 1 absent in image 0
    torch.testing.assert_close(col[3:], 0.9 * torch.arange(3.0, 6.0) + 1.0)  # every class-0 slot
    assert bank.ages.tolist() == [3] * 6


def test_paper_update_leaves_absent_classes_untouched() -> None:
    bank = full_bank()
    features = const_features([[10.0, 10.0], [99.0, 99.0]])
    labels = torch.stack([torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long)])
    bank.update(features, labels, 3, B.BankUpdateConfig(mode="paper", momentum=0.9, stride=3))
    assert bank.features[:3, 0].tolist() == [0.0, 1.0, 2.0]
    mean = (10.0 + 99.0) / 2  # both images count in paper mode
    torch.testing.assert_close(bank.features[3:, 0], 0.9 * torch.arange(3.0, 6.0) + 0.1 * mean)


def test_paper_update_writes_unfilled_slots_directly() -> None:
    bank = two_class_bank(per_class=2)
    bank.update(
        const_features([[4.0, 4.0]]),
        torch.ones(1, 2, 2, dtype=torch.long),
        0,
        B.BankUpdateConfig(stride=1),
    )
    assert bank.features[0].tolist() == [4.0, 4.0] and bank.filled.tolist() == [
        True,
        False,
        False,
        False,
    ]


class Recorder:
    """A reducer that records what it is given and returns it unchanged (a 1-rank "all_reduce")."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def __call__(self, packed: torch.Tensor) -> torch.Tensor:
        self.seen.append(packed.clone())
        return packed


@pytest.mark.parametrize("boundary", [False, True])
def test_update_with_reducer_equals_the_concatenated_batch(boundary: bool) -> None:
    """Rank 0 reduces with rank 1's recorded statistics == one process seeing both batches."""
    feats = [torch.randn(2, 3, 4, 4, generator=gen(5 + r)) for r in range(2)]
    labs = [torch.randint(0, 2, (2, 4, 4), generator=gen(7 + r)) for r in range(2)]
    cfg = B.BankUpdateConfig(stride=2, momentum=0.5, boundary=boundary)
    rank1 = Recorder()
    two_class_bank(3, 3).update(feats[1], labs[1], 1, cfg, reducer=rank1)
    calls = iter(rank1.seen)
    rank0 = two_class_bank(3, 3)
    rank0.update(feats[0], labs[0], 1, cfg, reducer=lambda t: t + next(calls))
    single = two_class_bank(3, 3)
    single.update(torch.cat(feats), torch.cat(labs), 1, cfg)
    torch.testing.assert_close(rank0.features, single.features)
    assert torch.equal(rank0.ages, single.ages)


@pytest.mark.parametrize("mode", ["paper", "released"])
def test_update_identical_ranks_reduce_to_the_same_bank(mode: str) -> None:
    features = torch.randn(2, 3, 4, 4, generator=gen(9))
    labels = torch.randint(0, 2, (2, 4, 4), generator=gen(10))
    cfg = B.BankUpdateConfig(mode=mode, stride=2, momentum=0.5, boundary=True, kmeans_iters=3)
    reduced, single = full_bank_3d(), full_bank_3d()
    reduced.update(features, labels, 1, cfg, reducer=lambda t: 2 * t)  # two ranks, same data
    single.update(features, labels, 1, cfg)
    torch.testing.assert_close(reduced.features, single.features)


def full_bank_3d() -> B.InstanceBank:
    features = torch.randn(6, 3, generator=gen(11)).abs()
    return B.InstanceBank.from_features(features, torch.tensor([1, 1, 1, 0, 0, 0]))


def test_reduce_class_stats_one_collective_and_default_identity() -> None:
    sums, counts = torch.ones(2, 3), torch.tensor([1.0, 2.0])
    calls = Recorder()
    s, c = B.reduce_class_stats(sums, counts, calls)
    assert len(calls.seen) == 1 and calls.seen[0].shape == (2, 4)
    assert torch.equal(s, sums) and torch.equal(c, counts)
    s2, c2 = B.reduce_class_stats(sums, counts, lambda t: 3 * t)
    assert torch.equal(s2, 3 * sums) and torch.equal(c2, 3 * counts)
    assert torch.equal(B.distributed_sum_(sums.clone()), sums)  # no process group: identity
    assert torch.equal(B.distributed_cat(sums), sums)


def test_kmeans_update_keeps_intra_class_diversity() -> None:
    slot_labels = torch.tensor([0, 0])
    bank = B.InstanceBank.from_features(torch.tensor([[0.0], [10.0]]), slot_labels)
    features = torch.tensor([[1.0, 1.0, 11.0, 11.0]]).reshape(1, 1, 2, 2)
    labels = torch.zeros(1, 2, 2, dtype=torch.long)
    plain = B.InstanceBank.from_features(bank.features.clone(), slot_labels)
    plain.update(features, labels, 1, B.BankUpdateConfig(momentum=0.5, stride=2))
    assert plain.features.flatten().tolist() == [3.0, 8.0]  # both toward the class mean 6
    bank.update(features, labels, 1, B.BankUpdateConfig(momentum=0.5, stride=2, kmeans_iters=2))
    assert bank.features.flatten().tolist() == [0.5, 10.5]  # each toward its own centre


def test_boundary_selection_blends_boundary_mean() -> None:
    bank = B.InstanceBank.from_features(torch.zeros(2, 1), torch.tensor([0, 1]))
    labels = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])[None]
    features = torch.zeros(1, 1, 4, 4)
    features[0, 0, 0, 0] = 12.0  # an interior class-0 pixel (not on the boundary)
    bank.update(features, labels, 1, B.BankUpdateConfig(momentum=0.0, stride=1, boundary=True))
    class0_mean, class0_boundary_mean = 12.0 / 12, 0.0
    assert bank.features[0].item() == pytest.approx((class0_mean + class0_boundary_mean) / 2)


@pytest.mark.parametrize("mode", ["paper", "released"])
def test_bank_stays_out_of_the_autograd_graph(mode: str) -> None:
    bank = two_class_bank(2, 3)
    features = torch.randn(1, 3, 2, 2, requires_grad=True)
    labels = torch.tensor([[[0, 1], [1, 1]]])
    bank.fill(features, labels, 0, torch.tensor([0]))
    bank.update(
        features * 2, labels, 1, B.BankUpdateConfig(mode=mode, kmeans_iters=1, boundary=True)
    )
    assert not bank.features.requires_grad and bank.features.grad_fn is None


def test_update_config_validation() -> None:
    with pytest.raises(ValueError, match="'paper' or 'released'"):
        B.BankUpdateConfig(mode="ema")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        B.BankUpdateConfig(momentum=1.5)
    with pytest.raises(ValueError, match="stride >= 1"):
        B.BankUpdateConfig(stride=0)


# ----------------------------------------------------------------------------- snapshots, history


def test_snapshot_fp16_changed_mask_resets() -> None:
    bank = full_bank()
    bank.update(
        const_features([[1.0, 1.0]]),
        torch.zeros(1, 2, 2, dtype=torch.long),
        5,
        B.BankUpdateConfig(stride=1),
    )
    snap = bank.snapshot(5)
    assert snap.features.dtype == torch.float16 and snap.iteration == 5
    assert snap.changed.tolist() == [False, False, False, True, False, False]
    assert not bank.snapshot(6).changed.any()


def _snap(it: int, boxes: bool = False) -> B.BankSnapshot:
    bank = B.InstanceBank.allocate(19, 4)
    bank.features = torch.randn(19, 4, generator=gen(it))
    bank.ages[:] = it
    bank.changed[it % 19] = True
    snap = bank.snapshot(it)
    return snap if boxes else dataclasses.replace(snap, boxes=None)  # an old history's snapshot


def test_history_thins_evenly_keeping_first_and_last() -> None:
    history = B.BankHistory(max_snapshots=3)
    for it in (0, 10, 20, 30):
        history.append(_snap(it))
    assert history.iterations == [0, 20, 30]
    history.append(_snap(40))
    assert history.iterations == [0, 20, 40]
    with pytest.raises(ValueError, match="drop_after"):
        history.append(_snap(40))
    history.drop_after(25)
    assert history.iterations == [0, 20]


def test_history_regular_recording_stays_even() -> None:
    history = B.BankHistory(max_snapshots=5)
    for it in range(0, 170, 10):
        history.append(_snap(it))
    gaps = [b - a for a, b in zip(history.iterations, history.iterations[1:], strict=False)]
    assert history.iterations[0] == 0 and history.iterations[-1] == 160 and len(history) == 5
    assert max(gaps) <= 2 * min(gaps)


def test_a_thinned_copy_follows_the_append_rule_and_leaves_the_history_whole() -> None:
    """Thinning 17 regular snapshots to 5 keeps the ones a 5-snapshot history recording them would
    keep (first and last included), shares their tensors, and leaves the original untouched."""
    history, small = B.BankHistory(max_snapshots=100), B.BankHistory(max_snapshots=5)
    for it in range(0, 170, 10):
        history.append(_snap(it))
        small.append(history[-1])
    thinned = history.thinned(5)
    assert thinned.iterations == small.iterations and thinned.iterations[::4] == [0, 160]
    assert thinned[1].features is history[history.iterations.index(thinned.iterations[1])].features
    assert len(history) == 17 and thinned.max_snapshots == 5


@pytest.mark.parametrize("boxes", [False, True])
def test_history_safetensors_round_trip_exact(tmp_path, boxes: bool) -> None:
    history = B.BankHistory(max_snapshots=4)
    for it in (0, 50, 100):
        history.append(_snap(it, boxes))
    path = tmp_path / "bank_history.safetensors"
    history.save(path)
    loaded = B.BankHistory.load(path)
    assert loaded.max_snapshots == 4 and loaded.iterations == [0, 50, 100]
    for a, b in zip(history.snapshots, loaded.snapshots, strict=True):
        for key in ("features", "labels", "ages", "source_ids", "changed"):
            x, y = getattr(a, key), getattr(b, key)
            assert x.dtype == y.dtype and torch.equal(x, y), key
        assert (a.boxes is None) == (b.boxes is None) and (
            a.boxes is None or torch.equal(a.boxes, b.boxes)
        )


def test_history_empty_round_trip_and_foreign_file(tmp_path) -> None:
    B.BankHistory(7).save(tmp_path / "empty.safetensors")
    assert len(B.BankHistory.load(tmp_path / "empty.safetensors")) == 0
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="other.safetensors is not a bank history"):
        B.BankHistory.load(tmp_path / "other.safetensors")


def test_state_dict_round_trip() -> None:
    bank = B.InstanceBank.allocate(20, 3)
    bank.fill(
        torch.randn(1, 3, 4, 4, generator=gen(12)),
        torch.randint(0, 19, (1, 4, 4), generator=gen(13)),
        2,
        torch.tensor([9]),
        torch.tensor([[0, 0, 4, 4]]),
    )
    state = bank.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    restored = B.InstanceBank.allocate(19, 3)
    restored.load_state_dict(state)
    for key, value in bank.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key]), key
    with pytest.raises(KeyError, match="lacks"):
        restored.load_state_dict({"features": state["features"]})


def test_interior_labels_drop_boundaries_but_keep_thin_classes() -> None:
    labels = torch.zeros(1, 6, 6, dtype=torch.long)
    labels[0, :, 3:] = 2  # two 6x3 halves: each keeps an interior column
    labels[0, 0, 0] = 255
    labels[0, 4, :] = 5  # a one-pixel-high class: no interior pixel, keeps its whole row
    out = B.interior_labels(labels, num_classes=19)
    assert (out[0, 4] == 5).all()
    assert out[0, 0, 0] == 255 and out[0, 0, 1] == 255  # next to an ignored pixel
    assert out[0, 2, 1] == 0 and out[0, 2, 4] == 2  # interior pixels keep their class
    assert out[0, 2, 2] == 255 and out[0, 2, 3] == 255  # the 0 | 2 boundary
    assert out[0, 3, 1] == 255  # next to the thin class
    kept = out != 255
    assert torch.equal(out[kept], labels[kept])


# ----------------------------------------------------------------------------- label resolution


def ramp(left: float, right: float) -> torch.Tensor:
    """A (1, 1, 2, 2) feature map whose left column is ``left`` and right column ``right``."""
    return torch.tensor([[left, right], [left, right]]).reshape(1, 1, 2, 2)


def halves(left: int, right: int) -> torch.Tensor:
    """(1, 8, 8) labels: ``left`` in columns 0-3, ``right`` in columns 4-7."""
    labels = torch.full((1, 8, 8), right)
    labels[..., :4] = left
    return labels


def test_bilinear_matrix_matches_interpolate() -> None:
    x = torch.randn(3, 5, generator=gen(20))
    up = torch.nn.functional.interpolate(x[None, None], size=(7, 11), mode="bilinear")[0, 0]
    torch.testing.assert_close(B.bilinear_matrix(7, 3) @ x @ B.bilinear_matrix(11, 5).T, up)


def test_region_means_golden_at_label_resolution() -> None:
    # columns of a 2 -> 8 bilinear upsampling (align_corners=False) take the right value with
    # weights 0, 0, 1/8, 3/8, 5/8, 7/8, 1, 1: the left half averages 1/8, the right half 7/8
    means, counts = B.region_means(ramp(0.0, 1.0), halves(0, 1), 2)
    torch.testing.assert_close(means[0, :, 0], torch.tensor([0.125, 0.875]))
    assert counts.tolist() == [[32.0, 32.0]]
    small = halves(0, 1)[:, ::4, ::4]  # nearest-downsampled labels on the 2x2 grid
    assert B.region_means(ramp(0.0, 1.0), small, 2)[0][0, :, 0].tolist() == [0.0, 1.0]


def test_region_sums_equal_sums_of_upsampled_features() -> None:
    features = torch.randn(2, 3, 4, 5, generator=gen(21))
    labels = torch.randint(0, 4, (2, 16, 20), generator=gen(22))
    labels[0, :3] = 255
    up = torch.nn.functional.interpolate(features, size=(16, 20), mode="bilinear")
    expected = B.class_sums(up, labels, 4)
    for got, ref in zip(B.region_sums(features, labels, 4), expected, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="resize the labels"):
        B.region_sums(features, labels[:, :2, :2], 4)


def toy_cache() -> tuple[torch.Tensor, torch.Tensor]:
    """Region means (3, C=2, D=1) and counts of three 8x8 images with known 2x2 features:
    image 0: road | sidewalk on a 0 -> 1 ramp; image 1: all road, features 5; image 2:
    sidewalk | ignore on a 2 -> 4 ramp."""
    features = torch.cat([ramp(0.0, 1.0), torch.full((1, 1, 2, 2), 5.0), ramp(2.0, 4.0)])
    labels = torch.cat([halves(0, 1), halves(0, 0), halves(1, 255)])
    return B.region_means(features, labels, 2)


def test_balanced_slot_means_golden_from_a_toy_dataset() -> None:
    means, counts = toy_cache()
    slot_labels = B.allocate_slot_labels(6, classes=(0, 1))  # sidewalk (rarer) first
    assert slot_labels.tolist() == [1, 1, 1, 0, 0, 0]
    slots = B.balanced_slot_means(means, counts, slot_labels)
    # sidewalk: images 0, 2, then image 0 again (cycled); road: images 0, 1, 0
    assert slots.image.tolist() == [0, 2, 0, 0, 1, 0] and bool(slots.filled.all())
    expected = [0.875, 2.25, 0.875, 0.125, 5.0, 0.125]
    torch.testing.assert_close(slots.features[:, 0], torch.tensor(expected))


def test_balanced_slot_means_leave_unseen_classes_empty_and_load_into_the_bank() -> None:
    means, counts = toy_cache()
    bank = B.InstanceBank.allocate(6, 1, classes=(0, 1))
    bank.labels = torch.tensor([1, 1, 0, 0, 0, 0])  # pretend class 1 = "unseen": only road seen
    slots = B.balanced_slot_means(means, counts * torch.tensor([1.0, 0.0]), bank.labels)
    assert slots.filled.tolist() == [False, False, True, True, True, True]
    written = bank.load_slots(slots.features, slots.filled, slots.image + 100, it=7)
    assert written.tolist() == [2, 3, 4, 5] and bank.filled.tolist() == slots.filled.tolist()
    assert bank.ages.tolist() == [-1, -1, 7, 7, 7, 7]
    assert bank.source_ids.tolist() == [-1, -1, 100, 101, 100, 101]
    assert bank.features[:, 0].tolist() == [0.0, 0.0, 0.125, 5.0, 0.125, 5.0]
    with pytest.raises(ValueError, match="precomputed bank must be"):
        bank.load_slots(slots.features[:3], slots.filled[:3], slots.image[:3], it=7)


def test_released_update_at_label_resolution_moves_toward_upsampled_means() -> None:
    bank = B.InstanceBank.from_features(torch.ones(2, 1), torch.tensor([0, 1]))
    cfg = B.BankUpdateConfig(mode="released", momentum=0.5)
    bank.update(ramp(0.0, 1.0), halves(0, 1), it=3, cfg=cfg)
    torch.testing.assert_close(bank.features[:, 0], torch.tensor([0.5625, 0.9375]))
    with pytest.raises(ValueError, match="feature size"):
        bank.update(ramp(0.0, 1.0), halves(0, 1), 3, B.BankUpdateConfig(kmeans_iters=1))


def test_bank_from_snapshot_restores_written_slots() -> None:
    bank = two_class_bank()
    bank.fill(
        const_features([[1.0, 2.0]]), torch.zeros(1, 2, 2, dtype=torch.long), 4, torch.tensor([9])
    )
    restored = B.InstanceBank.from_snapshot(bank.snapshot(4))
    assert torch.equal(restored.filled, bank.filled) and torch.equal(restored.labels, bank.labels)
    assert torch.equal(restored.features, bank.features) and restored.source_ids.tolist() == (
        bank.source_ids.tolist()
    )


def test_released_update_leaves_never_written_slots_empty() -> None:
    bank = B.InstanceBank.allocate(3, 1, classes=(0,))
    bank.load_slots(torch.ones(3, 1), torch.tensor([True, True, False]), torch.zeros(3), it=0)
    features, labels = torch.full((1, 1, 2, 2), 3.0), torch.zeros(1, 2, 2, dtype=torch.long)
    cfg = B.BankUpdateConfig(mode="released", momentum=0.5)
    assert bank.update(features, labels, 5, cfg).tolist() == [0, 1]
    assert bank.features[:, 0].tolist() == [2.0, 2.0, 0.0] and bank.ages.tolist() == [5, 5, -1]
