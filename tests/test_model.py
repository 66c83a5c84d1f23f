"""SegModel: shapes, official key names, MiT parameter counts, checkpoint loading and its errors."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from dida.model import (
    BACKBONES,
    DAFormerHead,
    ModelConfig,
    SegModel,
    build_backbone,
    check_torch_for_pickle,
    convert_official_state_dict,
    fitted_model,
    infer_config_from_state,
    load_checkpoint_state,
    load_model_file,
    load_official,
    materialised,
    mit_to_timm_key,
)

TINY = ModelConfig(backbone="mit_b0", embed_dim=16, num_classes=5)


def tiny_model(seed: int) -> SegModel:
    torch.manual_seed(seed)
    model = SegModel(TINY)
    # Random BN statistics so that a wrongly loaded buffer changes the predictions.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> SegModel:
    return tiny_model(0)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------- forward pass


@pytest.mark.parametrize("size", [(64, 64), (96, 160), (100, 70), (33, 45)])
def test_output_shapes_and_nonnegative_features(model: SegModel, size: tuple[int, int]) -> None:
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    expected = (-(-size[0] // 4), -(-size[1] // 4))  # ceil(H/4), ceil(W/4)
    assert out.logits.shape == (2, 5, *expected)
    assert out.features.shape == (2, 16, *expected)
    assert out.features.min() >= 0
    assert (out.features == 0).any() and (out.features > 0).any()  # post-ReLU, not all-zero


def test_too_small_input_is_rejected(model: SegModel) -> None:
    with pytest.raises(ValueError, match=">= 32"):
        model(torch.randn(1, 3, 28, 64))


def _reference_head(head: DAFormerHead, levels: list[torch.Tensor]) -> torch.Tensor:
    """The fused feature E written with functional ops, straight from METHOD.md §1.3 (eval mode)."""

    def conv_bn_relu(x, mod, padding=0, dilation=1, groups=1):
        x = F.conv2d(x, mod.conv.weight, None, 1, padding, dilation, groups)
        bn = mod.bn
        x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0, bn.eps)
        return x.clamp_min(0)

    size = levels[0].shape[2:]
    maps = []
    for i, x in enumerate(levels):
        proj = head.embed_layers[str(i)].proj
        y = torch.einsum("bchw,dc->bdhw", x, proj.weight) + proj.bias[:, None, None]
        maps.append(F.interpolate(y, size=size, mode="bilinear", align_corners=False))
    x = torch.cat(maps, 1)
    aspp = head.fuse_layer.aspp_modules
    branches = [conv_bn_relu(x, aspp[0])]
    for branch, d in zip(aspp[1:], (6, 12, 18), strict=True):
        y = conv_bn_relu(x, branch.depthwise_conv, d, d, x.shape[1])
        branches.append(conv_bn_relu(y, branch.pointwise_conv))
    return conv_bn_relu(torch.cat(branches, 1), head.fuse_layer.bottleneck, padding=1)


def test_head_matches_functional_reference(model: SegModel, image: torch.Tensor) -> None:
    with torch.no_grad():
        levels = model.backbone.forward_intermediates(image, intermediates_only=True)
        out = model.decode_head(levels)
        expected = _reference_head(model.decode_head, levels)
        conv_seg = model.decode_head.conv_seg
        logits = F.conv2d(expected, conv_seg.weight, conv_seg.bias)
    torch.testing.assert_close(out.features, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.logits, logits, rtol=1e-4, atol=1e-5)


def test_level_shapes_of_mit_b0(model: SegModel, image: torch.Tensor) -> None:
    with torch.no_grad():
        levels = model.encode(image)
        torch.testing.assert_close(model.decode(levels).logits, model(image).logits)
    assert [tuple(x.shape) for x in levels] == [
        (1, 32, 16, 24),
        (1, 64, 8, 12),
        (1, 160, 4, 6),
        (1, 256, 2, 3),
    ]


# ------------------------------------------------------------------------- official key names


def official_head_keys(d: int, c: int, dims: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """METHOD.md §9.1 head keys and shapes (without the ``decode_head.`` prefix)."""
    bn = {"weight": (d,), "bias": (d,), "running_mean": (d,), "running_var": (d,)}
    bn4 = dict.fromkeys(bn, (4 * d,))
    keys = {"conv_seg.weight": (c, d, 1, 1), "conv_seg.bias": (c,)}
    for i, ci in enumerate(dims):
        keys |= {f"embed_layers.{i}.proj.weight": (d, ci), f"embed_layers.{i}.proj.bias": (d,)}

    def conv_bn(prefix: str, shape: tuple[int, ...], norm: dict) -> dict:
        out = {f"{prefix}.conv.weight": shape, f"{prefix}.bn.num_batches_tracked": ()}
        return out | {f"{prefix}.bn.{k}": v for k, v in norm.items()}

    aspp = "fuse_layer.aspp_modules"
    keys |= conv_bn(f"{aspp}.0", (d, 4 * d, 1, 1), bn)
    for j in (1, 2, 3):
        keys |= conv_bn(f"{aspp}.{j}.depthwise_conv", (4 * d, 1, 3, 3), bn4)
        keys |= conv_bn(f"{aspp}.{j}.pointwise_conv", (d, 4 * d, 1, 1), bn)
    return keys | conv_bn("fuse_layer.bottleneck", (d, 4 * d, 3, 3), bn)


def test_head_keys_equal_official_list() -> None:
    head = DAFormerHead((64, 128, 320, 512), embed_dim=256, num_classes=19)
    ours = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert ours == official_head_keys(256, 19, (64, 128, 320, 512))
    assert len(ours) == 58


def head_param_count(d: int, c: int, dims: tuple[int, ...]) -> int:
    embed = sum(dims) * d + 4 * d
    aspp0 = 4 * d * d + 2 * d
    separable = 3 * (4 * d * 9 + 2 * 4 * d + 4 * d * d + 2 * d)
    bottleneck = 4 * d * d * 9 + 2 * d
    return embed + aspp0 + separable + bottleneck + c * d + c


def mit_param_count(depths, dims, mlp_ratio: int = 4, sr=(8, 4, 2, 1)) -> int:
    """Parameter count of a SegFormer MiT encoder, written from its layer list."""
    total, prev = 0, 3
    for depth, d, r, k in zip(depths, dims, sr, (7, 3, 3, 3), strict=True):
        total += prev * d * k * k + d + 2 * d  # overlapping patch embed conv + LayerNorm
        h = mlp_ratio * d
        block = 2 * d + (d * d + d) + (2 * d * d + 2 * d) + (d * d + d)  # norm1, q, kv, proj
        block += (d * d * r * r + d + 2 * d) if r > 1 else 0  # spatial-reduction conv + norm
        block += 2 * d + (d * h + h) + (9 * h + h) + (h * d + d)  # norm2, fc1, dwconv, fc2
        total += depth * block + 2 * d  # blocks + stage norm
        prev = d
    return total


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_mit_b0_parameter_count_matches_formula(model: SegModel) -> None:
    assert count(model.backbone) == mit_param_count((2, 2, 2, 2), (32, 64, 160, 256))
    assert count(model.backbone) == 3_319_392
    assert count(model.decode_head) == head_param_count(16, 5, (32, 64, 160, 256))


def test_mit_b5_with_daformer_head_matches_reference() -> None:
    full = SegModel(ModelConfig(backbone="mit_b5", embed_dim=256))
    assert count(full.backbone) == mit_param_count((3, 6, 40, 3), (64, 128, 320, 512))
    assert count(full.backbone) == 81_443_008  # METHOD.md §1.3
    assert len(full.backbone.state_dict()) == 1052
    assert count(full.decode_head) == head_param_count(256, 19, (64, 128, 320, 512)) == 3_712_275
    heads = {k: tuple(v.shape) for k, v in full.decode_head.state_dict().items()}
    assert heads == official_head_keys(256, 19, (64, 128, 320, 512))


def test_drop_path_is_linear_over_all_blocks(model: SegModel) -> None:
    rates = [
        getattr(block.drop_path1, "drop_prob", 0.0)
        for stage in model.backbone.stages
        for block in stage.blocks
    ]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.1, 8))


def test_optimizer_name_rules_hit_the_right_parameters(model: SegModel) -> None:
    """DAFormer's groups: "head" in name -> decoder only; "norm" in name -> LayerNorms only."""
    names = dict(model.named_parameters())
    head = {n for n in names if "head" in n}
    assert head == {n for n in names if n.startswith("decode_head.")}
    layer_norms = {
        f"{m_name}.{p}"
        for m_name, m in model.named_modules()
        if isinstance(m, nn.LayerNorm)
        for p in ("weight", "bias")
    }
    assert {n for n in names if "norm" in n} == layer_norms


# ------------------------------------------------------------------------------------- config


def test_config_json_round_trip() -> None:
    cfg = ModelConfig(backbone="mit_b1", embed_dim=64, dilations=(2, 4), backbone_weights="w.pth")
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.dilations == (2, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backbone": "mit_b9"}, "mit_b0"),
        ({"embed_dim": 0}, "embed_dim"),
        ({"dropout": 1.0}, "dropout"),
        ({"dilations": (6, 0)}, "dilations"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_unknown_names_are_reported() -> None:
    with pytest.raises(ValueError, match="unknown ModelConfig keys \\['embed'\\]"):
        ModelConfig.from_dict({"embed": 3})
    with pytest.raises(ValueError, match="mit_b5"):
        build_backbone("resnet50")


def test_backbone_table_uses_mit_mlp_ratio() -> None:
    assert sorted(BACKBONES) == [f"mit_b{i}" for i in range(6)]
    assert all(kw["mlp_ratios"] == (4, 4, 4, 4) for kw in BACKBONES.values())


# -------------------------------------------------------------------------------- checkpoints


def timm_to_mit_key(key: str) -> str:
    """Inverse of METHOD.md §9.2, written independently of dida.model."""
    stage = lambda m: str(int(m[1]) + 1)  # noqa: E731
    key = re.sub(r"^patch_embed\.", "patch_embed1.", key)
    key = re.sub(r"^stages\.(\d+)\.downsample\.", lambda m: f"patch_embed{stage(m)}.", key)
    key = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", lambda m: f"block{stage(m)}.{m[2]}.", key)
    key = re.sub(r"^stages\.(\d+)\.norm\.", lambda m: f"norm{stage(m)}.", key)
    return key.replace(".mlp.dwconv.", ".mlp.dwconv.dwconv.")


def official_state(model: SegModel, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("backbone."):
            k = "backbone." + timm_to_mit_key(k.removeprefix("backbone."))
        out[prefix + k] = v.clone()
    return out


def test_mit_key_mapping_examples() -> None:
    assert mit_to_timm_key("patch_embed1.proj.weight") == "patch_embed.proj.weight"
    assert mit_to_timm_key("patch_embed3.norm.bias") == "stages.2.downsample.norm.bias"
    assert (
        mit_to_timm_key("block4.2.mlp.dwconv.dwconv.weight")
        == "stages.3.blocks.2.mlp.dwconv.weight"
    )
    assert mit_to_timm_key("block1.0.attn.sr.weight") == "stages.0.blocks.0.attn.sr.weight"
    assert mit_to_timm_key("norm2.weight") == "stages.1.norm.weight"
    assert mit_to_timm_key("stages.1.norm.weight") == "stages.1.norm.weight"


def test_official_naming_round_trip(model: SegModel) -> None:
    mapped = convert_official_state_dict(official_state(model))
    assert official_state(model).keys() != mapped.keys()
    assert mapped.keys() == model.state_dict().keys()
    assert "backbone.block3.1.mlp.dwconv.dwconv.weight" in official_state(model)


def test_uda_checkpoint_loads_student_and_teacher(tmp_path, image: torch.Tensor) -> None:
    student, teacher, imnet = tiny_model(1), tiny_model(2), tiny_model(3)
    state = official_state(student, "model.") | official_state(teacher, "ema_model.")
    state |= official_state(imnet, "imnet_model.")
    path = tmp_path / "iter_40000.pth"
    torch.save({"state_dict": state, "meta": {"iter": 40000, "CLASSES": ["road"]}}, path)
    for which, reference in (("model", student), ("ema_model", teacher)):
        loaded = load_official(path, which=which).eval()
        assert loaded.config.backbone == "mit_b0" and loaded.config.embed_dim == 16
        with torch.no_grad():
            got, expected = loaded(image), reference(image)
        assert torch.equal(got.logits, expected.logits)
        assert torch.equal(got.features, expected.features)


def test_plain_safetensors_segmentor_loads(tmp_path, model: SegModel, image) -> None:
    path = tmp_path / "segmentor.safetensors"
    save_file({k: v.contiguous() for k, v in official_state(model).items()}, str(path))
    loaded = load_official(path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(image).logits, model(image).logits)
    with pytest.raises(ValueError, match="single-segmentor file"):
        load_official(path, which="ema_model")


def test_imagenet_backbone_file_initialises_the_encoder(tmp_path, model: SegModel) -> None:
    backbone = {
        timm_to_mit_key(k): v for k, v in model.backbone.state_dict().items()
    }  # SegFormer mit_b0.pth layout: no prefix, plus an ImageNet classifier
    backbone |= {"head.weight": torch.zeros(1000, 256), "head.bias": torch.zeros(1000)}
    path = tmp_path / "mit_b0.pth"
    torch.save(backbone, path)
    fresh = SegModel(ModelConfig(embed_dim=16, num_classes=5, backbone_weights=str(path)))
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(fresh.backbone.state_dict()[k], v), k
    with pytest.raises(ValueError, match="backbone_weights"):
        load_official(path)
    reference = load_model_file(path)  # FD reference: encoder loaded, head random
    assert reference.config.backbone == "mit_b0"
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(reference.backbone.state_dict()[k], v), k


def test_load_model_file_reads_a_full_run_model(tmp_path, model: SegModel, image) -> None:
    path = tmp_path / "model.safetensors"  # what runs.save_state writes: our keys + metadata
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"skeleton": "{}", "metadata": '{"it": 5}'})
    loaded = load_model_file(path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(image).features, model(image).features)


def test_shape_mismatch_lists_keys(tmp_path, model: SegModel) -> None:
    path = tmp_path / "seg.pth"
    torch.save({"state_dict": official_state(model)}, path)
    with pytest.raises(ValueError, match=r"shape \(\d+\).*conv_seg.weight: file \(5, 16, 1, 1\)"):
        load_official(path, config=ModelConfig(embed_dim=16, num_classes=19))


def test_missing_and_unexpected_keys_are_listed(tmp_path, model: SegModel) -> None:
    state = official_state(model)
    state["decode_head.extra.weight"] = state.pop("decode_head.conv_seg.bias")
    path = tmp_path / "seg.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"(?s)missing \(1\).*conv_seg.bias.*unexpected \(1\)"):
        load_official(path)


def test_corrupt_and_unknown_files_give_clear_errors(tmp_path) -> None:
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="cannot read .*corrupt.pth"):
        load_checkpoint_state(corrupt)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint_state(tmp_path / "missing.pth")
    unknown = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.bias": torch.zeros(10)}, unknown)
    with pytest.raises(
        ValueError, match=r"(?s)resnet.pth: no MiT encoder keys.*2 tensors; prefixes conv1"
    ):
        load_official(unknown)
    not_tensors = tmp_path / "meta_only.pth"
    torch.save({"meta": {"iter": 3}, "epoch": 1}, not_tensors)
    with pytest.raises(ValueError, match="not tensors"):
        load_checkpoint_state(not_tensors)


def test_old_torch_is_refused_for_pickles() -> None:
    with pytest.raises(RuntimeError, match="CVE-2025-32434.*CVE-2026-24747"):
        check_torch_for_pickle("2.9.1+cpu")
    check_torch_for_pickle("2.10.0")


def fake_state(depths: tuple[int, ...], dims: tuple[int, ...]) -> dict[str, torch.Tensor]:
    state = {"decode_head.conv_seg.weight": torch.zeros(7, 48, 1, 1)}
    for i, (depth, d) in enumerate(zip(depths, dims, strict=True)):
        state[f"backbone.stages.{i}.norm.weight"] = torch.zeros(d)
        for j in range(depth):
            state[f"backbone.stages.{i}.blocks.{j}.norm1.weight"] = torch.zeros(d)
    return state


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_infer_config_recognises_every_backbone(name: str) -> None:
    kw = BACKBONES[name]
    cfg = infer_config_from_state(fake_state(kw["depths"], kw["embed_dims"]))
    assert (cfg.backbone, cfg.embed_dim, cfg.num_classes) == (name, 48, 7)


def test_init_weights_start_the_whole_segmentor_from_a_file(tmp_path) -> None:

    torch.manual_seed(3)
    cfg = {"backbone": "mit_b0", "embed_dim": 16, "drop_path_rate": 0.0}
    source = SegModel(ModelConfig(**cfg))
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    torch.manual_seed(4)
    started = SegModel(ModelConfig(**cfg, init_weights=path))
    for (k, a), b in zip(started.state_dict().items(), source.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert isinstance(started.config.init_weights, str)
    skipped = SegModel(ModelConfig(**cfg, init_weights=path), load_backbone_weights=False)
    assert not torch.equal(skipped.decode_head.conv_seg.weight, source.decode_head.conv_seg.weight)
    with pytest.raises(ValueError, match=r"init weights .* does not match the model"):
        SegModel(ModelConfig(backbone="mit_b0", embed_dim=32, init_weights=path))


def test_a_fitted_model_equals_a_built_and_loaded_one_and_owns_its_tensors(model, image) -> None:
    """The meta skeleton given the state's values (no random initialisation) predicts bit for
    bit like a model built for real and loaded; half-precision states come back in float32; the
    model's tensors are copies (changing the state changes nothing) and none stays on meta."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    reference = SegModel(TINY, load_backbone_weights=False)
    reference.load_state_dict(state, strict=True)
    fitted = fitted_model(TINY, state, "test").eval()
    with torch.no_grad():
        assert torch.equal(fitted(image)[0], reference.eval()(image)[0])
    assert all(p.dtype == torch.float32 and p.requires_grad for p in fitted.parameters())
    assert not any(t.is_meta for t in [*fitted.parameters(), *fitted.buffers()])
    next(iter(state.values())).zero_()
    assert torch.equal(
        fitted.state_dict()[next(iter(state))], reference.state_dict()[next(iter(state))]
    )


def test_materialising_refuses_a_module_whose_buffer_no_state_holds() -> None:
    """A non-persistent buffer is in no state dict: it would stay on the meta device."""

    class Scaled(nn.Linear):
        def __init__(self) -> None:
            super().__init__(2, 3)
            self.register_buffer("scale", torch.ones(3), persistent=False)

    with torch.device("meta"):
        skeleton = Scaled()
    with pytest.raises(RuntimeError, match="scale"):
        materialised(skeleton, {"weight": torch.ones(3, 2), "bias": torch.zeros(3)})
