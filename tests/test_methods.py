"""Every method's step: finite named losses, gradients reach the student only; DIDA's instance level."""

from __future__ import annotations

import copy

import pytest
import torch

from dida.methods.base import MethodContext
from dida.methods.registry import METHODS, build_method, method_config
from dida.model import ModelConfig, SegModel

CROP = (64, 64)


def _batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)

    def domain() -> dict:
        label = torch.randint(0, 19, (2, 8, 8), generator=g).repeat_interleave(8, 1)
        label = label.repeat_interleave(8, 2)  # 8x8 blocks of one class
        label[:, :4] = 255
        return {"image": torch.randn(2, 3, *CROP, generator=g), "label": label}

    return {"source": domain(), "target": domain()}


def _method(name: str, **options):
    torch.manual_seed(0)
    model = SegModel(ModelConfig(backbone="mit_b0", embed_dim=32, drop_path_rate=0.0))
    ctx = MethodContext(crop=CROP, max_iters=10, source_class_pixels=tuple([100] * 19))
    options = {"bank_size": 38, **options} if name.startswith("dida") else options
    return build_method(name, model, ctx, options)


CASES = [(name, {}) for name in METHODS] + [
    ("dida", {"mode": "released", "bank_init_images": 2}),
    ("dida", {"mode": "released", "bank_init": "online", "slot_resolution": "feature"}),
    ("dida", {"mode": "released", "bank_init_images": 2, "ins_weight": "confidence"}),
    ("dida", {"ins_weight": "confidence", "centre": True, "pseudo_upsample": "logits"}),
    ("dida", {"bank_init": "precomputed", "bank_init_images": 2, "slot_resolution": "label"}),
    ("dida", {"mode": "released", "bank_init_images": 2, "gather_from": "teacher"}),
    ("dida", {"gather_from": "student"}),
    ("dida", {"slot_pixels": "interior"}),
    ("proda", {"source_init_iters": 1}),
    ("proda", {"source_init_iters": 1, "soft_labels": "teacher", "confidence_weight": True}),
]


@pytest.mark.parametrize(("name", "options"), CASES, ids=lambda v: str(v) if v else "")
def test_step_returns_finite_losses_and_only_the_student_learns(name: str, options: dict) -> None:
    method = _method(name, **options)
    method.step(_batch(0), 0)  # DIDA: the first step fills the bank
    method.after_step(0)
    losses = method.step(_batch(1), 1)
    assert losses and all(k.startswith("loss_") for k in losses)
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    student = method.model
    assert all(p.grad is not None for p in student.decode_head.parameters() if p.requires_grad)
    for net in ("teacher", "reference"):
        other = getattr(method, net, None)
        if other is not None:
            assert all(p.grad is None and not p.requires_grad for p in other.parameters())
    if name.startswith("dida"):
        assert not method.bank.features.requires_grad and method.bank.filled.any()


def test_dida_instance_loss_is_active_once_the_bank_has_slots() -> None:
    method = _method("dida")
    method.step(_batch(0), 0)
    assert method.bank.filled.sum() > 0
    losses = method.step(_batch(1), 1)
    assert losses["loss_ins"] > 0


def test_dida_modes_resolve_their_documented_defaults() -> None:
    paper, released = method_config("dida"), method_config("dida", {"mode": "released"})
    assert (paper.ins_lambda, paper.scatter_alpha, paper.normalize, paper.alignment) == (
        1.0, 0.5, True, "target",
    )  # fmt: skip
    assert (released.ins_lambda, released.scatter_alpha, released.normalize, released.alignment) == (
        0.5, 1.0, False, "none",
    )  # fmt: skip
    with pytest.raises(ValueError, match="mode"):
        method_config("dida", {"mode": "paperish"})
    assert (paper.bank_init, paper.slot_resolution, released.bank_init, released.slot_resolution) == (
        "online", "feature", "precomputed", "label",
    )  # fmt: skip
    assert (paper.gather_from, released.gather_from) == ("teacher", "student")
    # options added later default to what configs saved before them meant
    assert (paper.ins_weight, paper.centre, paper.pseudo_upsample) == ("uniform", False, "probs")
    assert method_config("dida", {"mode": "released", "bank_init": "online"}).bank_init == "online"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "released", "centre": True}, "centre needs"),
        ({"kmeans_iters": 2, "slot_resolution": "label"}, "kmeans_iters needs"),
        ({"ins_weight": "teacher"}, "ins_weight must be one of"),
        ({"bank_init": "cache"}, "bank_init must be one of"),
        ({"bank_init_images": 0}, "bank_init_images"),
    ],
)
def test_dida_rejects_options_that_cannot_work(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        method_config("dida", options)


def test_mic_config_defaults_and_validation() -> None:
    mic, both = method_config("mic"), method_config("dida_mic")
    assert (mic.mask_ratio, mic.mask_patch, mic.mic_lambda, mic.alpha) == (0.7, 16, 1.0, 0.999)
    assert both.mic_lambda == 1.0 and both.mode == "paper" and both.ins_lambda == 1.0
    with pytest.raises(ValueError, match="mask_ratio"):
        method_config("mic", {"mask_ratio": 1.0})
    with pytest.raises(ValueError, match="mask_patch"):
        method_config("dida_mic", {"mask_patch": 0})


def test_unknown_method_and_option_name_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid methods"):
        method_config("fancy")
    with pytest.raises(ValueError, match="valid options"):
        method_config("daformer", {"tp": 0.1})


def test_teacher_follows_the_student_by_ema() -> None:
    method = _method("daformer")
    before = [p.clone() for p in method.teacher.parameters()]
    with torch.no_grad():
        for p in method.model.parameters():
            p.add_(1.0)
    method.after_step(0)  # alpha(1) = min(1 - 1/2, 0.999) = 0.5
    after = list(method.teacher.parameters())
    assert all(torch.allclose(a, b + 0.5, atol=1e-6) for a, b in zip(after, before, strict=True))


def test_dida_records_a_snapshot_when_the_bank_changes() -> None:
    method = _method("dida", update_interval=3)
    method.step(_batch(0), 0)
    assert method.records(0)["bank"].iteration == 0
    for it in (1, 2):
        method.step(_batch(it), it)
    assert method.bank.is_full()
    assert method.records(2) == {}  # full, and 2 is not a multiple of update_interval
    before = method.bank.features.clone()
    method.step(_batch(3), 3)
    snapshot = method.records(3)["bank"]
    assert snapshot.iteration == 3 and snapshot.changed.any()
    assert not torch.equal(before, method.bank.features)


def test_dida_bank_waits_for_bank_start() -> None:
    method = _method("dida", bank_start=2)
    losses = method.step(_batch(0), 0)
    assert not method.bank.filled.any() and float(losses["loss_ins"].detach()) == 0.0
    method.step(_batch(1), 1)
    assert not method.bank.filled.any()
    method.step(_batch(2), 2)
    assert method.bank.filled.any() and method.records(2)["bank"].iteration == 2
    with pytest.raises(ValueError, match="bank_start"):
        method_config("dida", {"bank_start": -1})


def test_trained_domains_of_every_method() -> None:
    from dida.methods.registry import trained_domains

    assert trained_domains("source_only") == ("source",) and trained_domains("oracle") == (
        "target",
    )
    assert {trained_domains(m) for m in ("proda", "daformer", "dida")} == {("source", "target")}


def test_proda_target_losses_start_after_the_source_phase_with_a_frozen_warmup_model() -> None:
    method = _method("proda", source_init_iters=2)
    for it in (0, 1):
        assert set(method.step(_batch(it), it)) == {"loss_source"}
        method.after_step(it)
    assert method.warmup is not None and not any(
        p.requires_grad for p in method.warmup.parameters()
    )
    frozen = [p.clone() for p in method.warmup.parameters()]
    losses = method.step(_batch(2), 2)
    assert set(losses) == {"loss_source", "loss_sce", "loss_kl"}
    sum(losses.values()).backward()
    with torch.no_grad():
        for p in method.model.parameters():
            p.add_(1.0)
    method.after_step(2)
    assert all(torch.equal(a, b) for a, b in zip(method.warmup.parameters(), frozen, strict=True))
    state = method.state_dict()
    resumed = _method("proda", source_init_iters=2)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(resumed.warmup.parameters(), frozen, strict=True))
    with pytest.raises(ValueError, match="soft_labels"):
        method_config("proda", {"soft_labels": "oracle"})


def test_proda_confidence_weight_zeroes_the_ignored_rows() -> None:
    method = _method("proda", source_init_iters=0, confidence_weight=True)
    out = method.teacher_outputs(_batch(0)["target"]["image"])
    weight = out["weight"]
    assert weight.shape == (2, *CROP) and out["pseudo_label"].shape == (2, *CROP)
    top, bottom = 2, 15  # 15 and 120 rows of a 512 crop, scaled to 64
    assert (weight[:, :top] == 0).all() and (weight[:, -bottom:] == 0).all()
    middle = weight[:, top:-bottom]
    assert ((middle >= 0) & (middle <= 1)).all() and middle.unique().numel() == 1
    plain = _method("proda", soft_labels="teacher")
    assert plain.teacher_outputs(_batch(0)["target"]["image"])["weight"] is None
    with pytest.raises(RuntimeError, match="warm-up model exists after source_init_iters=100"):
        _method("proda").teacher_outputs(_batch(0)["target"]["image"])


# ----------------------------------------------------------------------------- new DIDA modes


def _indexed(seed: int, first: int) -> dict:
    batch = _batch(seed)
    batch["source"]["index"] = torch.tensor([first, first + 1])
    return batch


def test_precomputed_bank_is_the_starting_models_balanced_means_and_survives_a_checkpoint() -> None:
    from dida.bank import balanced_slot_means, region_means

    options = {"mode": "released", "bank_init_images": 4, "update_interval": 3}
    method = _method("dida", **options)
    method.step(_indexed(0, 10), 0)
    assert not method.bank.filled.any() and method.records(0) == {}
    assert len(method.cache["ids"]) == 2 and method.starting_model is not None
    state = method.state_dict()
    resumed = _method("dida", **options)
    resumed.load_state_dict(state)
    model = copy.deepcopy(method.starting_model)
    for m in (method, resumed):
        m.step(_indexed(1, 12), 1)
    assert method.starting_model is None and method.cache is None
    batches = [_indexed(0, 10)["source"], _indexed(1, 12)["source"]]
    with torch.no_grad():
        stats = [region_means(model(b["image"]).features, b["label"], 19) for b in batches]
    means, counts = (torch.cat(parts) for parts in zip(*stats, strict=True))
    expected = balanced_slot_means(means, counts, method.bank.labels)
    torch.testing.assert_close(method.bank.features, expected.features)
    assert torch.equal(method.bank.filled, expected.filled)
    ids = torch.where(expected.filled, expected.image + 10, -1)
    assert torch.equal(method.bank.source_ids, ids)
    assert torch.equal(resumed.bank.features, method.bank.features)
    first = method.records(1)["bank"]
    assert first.iteration == 1 and torch.equal(first.changed, expected.filled)
    method.step(_batch(2), 2)
    assert method.records(2) == {}
    method.step(_batch(3), 3)  # 3 % update_interval == 0: the released momentum update
    assert torch.equal(method.records(3)["bank"].changed, expected.filled)


def test_confidence_weight_is_the_target_loss_weight_times_the_alignment() -> None:
    from dida.methods.daformer import MixedView

    method = _method("dida", ins_weight="confidence")
    weight = torch.full((1, 16, 16), 0.6)
    weight[:, :4] = 0.0  # ignored rows
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 8:] = 1.0  # right half pasted from the source (weight 1 there)
    weight[..., 8:] = 1.0
    mixed = MixedView(torch.zeros(1, 3, 16, 16), torch.zeros(1, 16, 16), weight, mask)
    align = 1.0 - mask[:, 0, ::4, ::4]
    got = method.pixel_weight(mixed, align, (4, 4))
    expected = torch.tensor([[0.0] * 4] + [[0.6, 0.6, 0.0, 0.0]] * 3)[None]
    torch.testing.assert_close(got, expected)
    assert torch.equal(method.pixel_weight(mixed, None, (4, 4)), weight[:, ::4, ::4])
    assert _method("dida").pixel_weight(mixed, align, (4, 4)) is align


def test_mic_adds_a_weighted_masked_loss_on_dida_pseudo_labels(monkeypatch) -> None:
    import dida.methods.dida as dida_module

    once, twice = (_method("mic", mic_lambda=lam).step(_batch(0), 0) for lam in (1.0, 2.0))
    assert set(once) == {"loss_source", "loss_target", "loss_mask"}
    torch.testing.assert_close(twice["loss_mask"], 2 * once["loss_mask"])
    seen, original = [], dida_module.masked_consistency_loss

    def spy(method, image, labels, weight):
        seen.append(labels)
        return original(method, image, labels, weight)

    monkeypatch.setattr(dida_module, "masked_consistency_loss", spy)
    method = _method("dida_mic")
    method.step(_batch(0), 0)
    losses = method.step(_batch(1), 1)
    assert set(losses) == {"loss_source", "loss_target", "loss_ins", "loss_mask"}
    teacher = method.teacher_view(_batch(1)["target"]["image"])
    regenerated = method.regenerated_pseudo_labels(teacher, method.instance_view(teacher))
    assert torch.equal(seen[-1], regenerated.labels)
    assert not torch.equal(regenerated.labels, method.pseudo_labels(teacher).labels)
    assert "loss_mask" not in _method("dida").step(_batch(0), 0)


def test_gathering_with_teacher_probabilities_or_student_logits() -> None:
    from dida.methods.common import calibrate, gather_from_classes

    method = _method("dida", mode="released", bank_init_images=2, gather_from="teacher")
    method.step(_batch(0), 0)
    teacher = method.teacher_view(_batch(1)["target"]["image"])
    view = method.instance_view(teacher)
    slot_labels = method.active_slots()[1]
    p = gather_from_classes(teacher.logits.softmax(1), slot_labels)
    torch.testing.assert_close(view.calibrated, calibrate(view.scores, p))
    logits = torch.randn(2, 19, *view.q.shape[-2:], generator=torch.Generator().manual_seed(3))
    assert method.instance_target(view, logits) is view.calibrated
    method.cfg.gather_from = "student"
    z = gather_from_classes(logits, slot_labels)
    expected = view.scores * z / (view.scores * z).sum(1, keepdim=True)
    torch.testing.assert_close(method.instance_target(view, logits), expected)
