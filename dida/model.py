"""Segmentation network: timm MiT (``pvt_v2``) encoder + DAFormer context-aware fusion head.

``SegModel(x)`` returns ``SegOutput(logits (B, C, H/4, W/4), features (B, D, H/4, W/4))`` where
``features`` is the post-ReLU fused decoder feature E (DIDA's embedding space, non-negative).
Sizes that are not multiples of 4 give ``ceil(H/4) x ceil(W/4)`` maps.

Module names follow mmseg/DAFormer, so an official ``decode_head.*`` state dict loads strictly;
official MiT backbone names are mapped onto timm's ``pvt_v2`` names (METHOD.md §9).  Nothing is
ever downloaded: backbones are built with ``pretrained=False`` and weights come from local files.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dida.checkpoints import (  # noqa: F401  (re-exported: dida.model's public checkpoint API)
    MIN_TORCH_FOR_PICKLE,
    CheckpointError,
    check_torch_for_pickle,
    describe_state,
    load_checkpoint_state,
    nonfinite_message,
    nonfinite_tensors,
)
from dida.data.classes import NUM_CLASSES


def _mit(timm_name: str, depths: tuple[int, ...], dims: tuple[int, ...]) -> dict:
    """timm kwargs of one SegFormer MiT encoder (MLP ratio 4 in every stage, unlike pvt_v2_b0..b4)."""
    return {
        "model_name": timm_name,
        "depths": depths,
        "embed_dims": dims,
        "num_heads": (1, 2, 5, 8),
        "sr_ratios": (8, 4, 2, 1),
        "mlp_ratios": (4, 4, 4, 4),
        "qkv_bias": True,
    }


BACKBONES: dict[str, dict] = {
    "mit_b0": _mit("pvt_v2_b0", (2, 2, 2, 2), (32, 64, 160, 256)),
    "mit_b1": _mit("pvt_v2_b1", (2, 2, 2, 2), (64, 128, 320, 512)),
    "mit_b2": _mit("pvt_v2_b2", (3, 4, 6, 3), (64, 128, 320, 512)),
    "mit_b3": _mit("pvt_v2_b3", (3, 4, 18, 3), (64, 128, 320, 512)),
    "mit_b4": _mit("pvt_v2_b4", (3, 8, 27, 3), (64, 128, 320, 512)),
    "mit_b5": _mit("pvt_v2_b5", (3, 6, 40, 3), (64, 128, 320, 512)),
}
"""MiT encoder name -> ``timm.create_model`` kwargs (``pretrained=False, num_classes=0`` added)."""

MIN_INPUT_SIZE = 32
"""Smallest input side: stage 1 (stride 4) must be at least as large as its spatial reduction (8)."""


@dataclass
class ModelConfig:
    """Network settings; ``to_dict()`` is stored with a run so ``from_dict()`` rebuilds the model."""

    backbone: str = "mit_b0"
    """Encoder, a key of ``BACKBONES``. DAFormer/DIDA use mit_b5 (81 M params); mit_b0 suits a CPU."""
    embed_dim: int = 64
    """Decoder width D (DAFormer: 256). 64 keeps a CPU step (b0, batch 2, 256x256) near 0.2 s."""
    num_classes: int = NUM_CLASSES
    """Output classes C (19 Cityscapes train IDs)."""
    drop_path_rate: float = 0.1
    """Stochastic depth of the encoder, linear over all blocks (MiT default 0.1)."""
    dropout: float = 0.1
    """Dropout2d probability before the classifier (DAFormer 0.1)."""
    dilations: tuple[int, ...] = (6, 12, 18)
    """Dilations of the depthwise-separable fusion branches (a 1x1 branch is always added)."""
    backbone_weights: str | None = None
    """Local encoder weights (SegFormer ImageNet ``mit_bN.pth``, safetensors, or a segmentor file)."""
    init_weights: str | None = None
    """Whole-segmentor weights (encoder + head) to start from: a run's ``model.safetensors``, a
    shipped checkpoint or an official DAFormer/DIDA file (its student). ProDA-style starts from the
    source-only run this way (ProDA's warm-up stage). Applied after ``backbone_weights``."""

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"unknown backbone {self.backbone!r}; choose one of {sorted(BACKBONES)}"
            )
        if self.embed_dim < 1 or self.num_classes < 1:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) and num_classes ({self.num_classes}) must be >= 1"
            )
        if not (0 <= self.drop_path_rate < 1 and 0 <= self.dropout < 1):
            raise ValueError(
                f"drop_path_rate ({self.drop_path_rate}) and dropout ({self.dropout}) "
                "must lie in [0, 1)"
            )
        self.dilations = tuple(self.dilations)
        if not self.dilations or any(int(d) != d or d < 1 for d in self.dilations):
            raise ValueError(f"dilations must be positive integers, got {self.dilations}")
        if self.backbone_weights is not None:
            self.backbone_weights = str(self.backbone_weights)
        if self.init_weights is not None:
            self.init_weights = str(self.init_weights)

    def to_dict(self) -> dict:
        """JSON-ready dict of every field."""
        return {**asdict(self), "dilations": list(self.dilations)}

    @classmethod
    def from_dict(cls, data: Mapping) -> ModelConfig:
        """Inverse of ``to_dict``; unknown keys are an error (they would be silently dropped)."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(
                f"unknown ModelConfig keys {sorted(unknown)}; valid: {[f.name for f in fields(cls)]}"
            )
        return cls(**data)


class SegOutput(NamedTuple):
    """Decoder outputs at 1/4 of the input resolution."""

    logits: Tensor
    """(B, C, H/4, W/4) class scores."""
    features: Tensor
    """(B, D, H/4, W/4) post-ReLU fused feature E (before dropout), non-negative."""


class ConvModule(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU, named like mmcv's ``ConvModule`` (``conv``, ``bn``)."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, dilation: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        padding = dilation * (kernel_size // 2)
        self.conv = nn.Conv2d(
            in_ch,
            out_ch,
            kernel_size,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_ch)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))


class DepthwiseSeparableConvModule(nn.Module):
    """Dilated depthwise 3x3 ConvModule followed by a pointwise 1x1 ConvModule (mmcv names)."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int) -> None:
        super().__init__()
        self.depthwise_conv = ConvModule(in_ch, in_ch, 3, dilation=dilation, groups=in_ch)
        self.pointwise_conv = ConvModule(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class ContextAwareFusion(nn.Module):
    """DAFormer's fusion: ASPP without image pooling, separable dilated branches, 3x3 bottleneck."""

    def __init__(self, in_ch: int, out_ch: int, dilations: Sequence[int]) -> None:
        super().__init__()
        branches = [DepthwiseSeparableConvModule(in_ch, out_ch, d) for d in dilations]
        self.aspp_modules = nn.ModuleList([ConvModule(in_ch, out_ch, 1), *branches])
        self.bottleneck = ConvModule(len(self.aspp_modules) * out_ch, out_ch, 3)

    def forward(self, x: Tensor) -> Tensor:
        branches = torch.cat([branch(x) for branch in self.aspp_modules], dim=1)  # (B, nD, h, w)
        return self.bottleneck(branches)  # (B, D, h, w)


class TokenEmbed(nn.Module):
    """Token-wise Linear C_i -> D on a feature map (mmseg ``MLP``; no norm, no activation)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_ch, out_ch)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        tokens = self.proj(x.flatten(2).transpose(1, 2))  # (B, h*w, D)
        return tokens.transpose(1, 2).reshape(b, -1, h, w)  # (B, D, h, w)


class DAFormerHead(nn.Module):
    """DAFormer decoder: embed each level, resize to level 1, fuse with context, classify."""

    def __init__(
        self,
        in_channels: Sequence[int],
        embed_dim: int = 256,
        num_classes: int = NUM_CLASSES,
        dilations: Sequence[int] = (6, 12, 18),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed_layers = nn.ModuleDict(
            {str(i): TokenEmbed(c, embed_dim) for i, c in enumerate(in_channels)}
        )
        self.fuse_layer = ContextAwareFusion(len(in_channels) * embed_dim, embed_dim, dilations)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(embed_dim, num_classes, 1)
        self.apply(_init_head_weights)
        nn.init.normal_(self.conv_seg.weight, std=0.01)

    def forward(self, levels: Sequence[Tensor]) -> SegOutput:
        size = levels[0].shape[2:]
        maps = [
            F.interpolate(self.embed_layers[str(i)](x), size=size, mode="bilinear")
            for i, x in enumerate(levels)
        ]  # each (B, D, H/4, W/4)
        fused = self.fuse_layer(torch.cat(maps, dim=1))  # E: (B, D, H/4, W/4), post-ReLU
        return SegOutput(self.conv_seg(self.dropout(fused)), fused)


def _init_head_weights(module: nn.Module) -> None:
    """mmcv initialisation: Kaiming (fan_out, ReLU) convs, unit BN; Linear keeps torch's default."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def build_backbone(name: str, drop_path_rate: float = 0.1) -> nn.Module:
    """Randomly initialised timm ``pvt_v2`` with MiT settings; never downloads weights."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return timm.create_model(
        **BACKBONES[name], pretrained=False, num_classes=0, drop_path_rate=drop_path_rate
    )


class SegModel(nn.Module):
    """MiT encoder (``.backbone``) + DAFormer head (``.decode_head``)."""

    def __init__(self, config: ModelConfig | None = None, load_backbone_weights: bool = True):
        """Build from ``config``; ``load_backbone_weights=False`` skips ``config.backbone_weights``
        and ``config.init_weights`` (use it when a full checkpoint is loaded right after, or the
        files are no longer around)."""
        super().__init__()
        self.config = config or ModelConfig()
        cfg = self.config
        self.backbone = build_backbone(cfg.backbone, cfg.drop_path_rate)
        self.decode_head = DAFormerHead(
            BACKBONES[cfg.backbone]["embed_dims"],
            cfg.embed_dim,
            cfg.num_classes,
            cfg.dilations,
            cfg.dropout,
        )
        if load_backbone_weights and cfg.backbone_weights:
            load_backbone_file(self.backbone, cfg.backbone_weights)
        if load_backbone_weights and cfg.init_weights:
            load_segmentor_file(self, cfg.init_weights)

    def forward(self, x: Tensor) -> SegOutput:
        return self.decode(self.encode(x))

    def encode(self, x: Tensor) -> list[Tensor]:
        """Encoder levels F1..F4: (B, C_i, H/2^(i+1), W/2^(i+1)) for i = 1..4 (strides 4..32)."""
        if min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(
                f"input {tuple(x.shape)} is too small: height and width must be >= "
                f"{MIN_INPUT_SIZE}; pad it (dida.inference.predict does)"
            )
        return self.backbone.forward_intermediates(x, intermediates_only=True)

    def decode(self, levels: Sequence[Tensor]) -> SegOutput:
        """Decoder on encoder levels (as from ``encode``); ``forward = decode(encode(x))``."""
        return self.decode_head(levels)


# ---------------------------------------------------------------------------------------------
# Checkpoints: official DAFormer / DIDA / SegFormer files -> this model (METHOD.md §9)

SEGMENTOR_PREFIXES = ("model", "ema_model")
"""Segmentors of a UDA checkpoint: ``model.*`` = student, ``ema_model.*`` = mean teacher."""

_MIT_TO_TIMM: tuple[tuple[str, str], ...] = (
    (r"^patch_embed1\.", "patch_embed."),
    (r"^patch_embed([234])\.", "stages.{0}.downsample."),
    (r"^block(\d+)\.(\d+)\.", "stages.{0}.blocks.{1}."),
    (r"^norm(\d+)\.", "stages.{0}.norm."),
    (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
)
"""(MiT pattern, timm template); the first captured group (a 1-based stage) is made 0-based."""


def mit_to_timm_key(key: str) -> str:
    """Rename one MiT backbone key (prefix removed) to timm ``pvt_v2``; timm keys pass unchanged."""
    for pattern, template in _MIT_TO_TIMM:
        match = re.search(pattern, key)
        if match:
            groups = [str(int(g) - 1) if i == 0 else g for i, g in enumerate(match.groups())]
            key = key[: match.start()] + template.format(*groups) + key[match.end() :]
    return key


def _select_segmentor(state: Mapping[str, Tensor], which: str) -> dict[str, Tensor]:
    if which not in SEGMENTOR_PREFIXES:
        raise ValueError(f"which must be one of {SEGMENTOR_PREFIXES}, got {which!r}")
    if any(k.startswith(tuple(p + "." for p in SEGMENTOR_PREFIXES)) for k in state):
        picked = {k[len(which) + 1 :]: v for k, v in state.items() if k.startswith(which + ".")}
        if not picked:
            raise CheckpointError(f"no {which}.* keys in this checkpoint ({describe_state(state)})")
        return picked
    if which != "model":
        raise CheckpointError(
            f"no {which}.* keys: this is a single-segmentor file ({describe_state(state)}); "
            "use which='model'"
        )
    return dict(state)


def convert_official_state_dict(
    state: Mapping[str, Tensor], which: str = "model"
) -> dict[str, Tensor]:
    """Official keys -> this model's keys (``backbone.*`` in timm naming, ``decode_head.*``).

    Accepts a UDA checkpoint (``model.*`` student / ``ema_model.*`` teacher, ``imnet_model.*``
    ignored), a plain segmentor (``backbone.*``, ``decode_head.*``), or an ImageNet backbone-only
    file (MiT keys without prefix; its ``head.*`` classifier is dropped).  Idempotent on our keys.
    """
    state = _select_segmentor(state, which)
    if not any(k.startswith(("backbone.", "decode_head.")) for k in state):
        state = {"backbone." + k: v for k, v in state.items() if not k.startswith("head.")}
    return {
        "backbone." + mit_to_timm_key(k.removeprefix("backbone."))
        if k.startswith("backbone.")
        else k: v
        for k, v in state.items()
    }


def _stage_depths(state: Mapping[str, Tensor]) -> tuple[int, ...]:
    blocks = Counter(
        int(m[1])
        for k in state
        if (m := re.match(r"backbone\.stages\.(\d+)\.blocks\.(\d+)\.norm1\.weight$", k))
    )
    return tuple(blocks[i] for i in range(len(blocks)))


def infer_backbone(state: Mapping[str, Tensor]) -> str:
    """Name of the MiT encoder whose stage depths and widths a converted state dict has."""
    depths = _stage_depths(state)
    if not depths:
        raise CheckpointError(
            "no MiT encoder keys found (expected backbone.block1.0.norm1.weight or its timm name "
            "backbone.stages.0.blocks.0.norm1.weight); is this a DAFormer/DIDA/SegFormer file?"
        )
    norms = [state.get(f"backbone.stages.{i}.norm.weight") for i in range(len(depths))]
    dims = tuple(n.shape[0] for n in norms if n is not None and n.ndim == 1)
    for name, kw in BACKBONES.items():
        if (kw["depths"], kw["embed_dims"]) == (depths, dims):
            return name
    raise CheckpointError(
        f"no MiT encoder has stage depths {depths} and widths {dims}; known: "
        + ", ".join(f"{n} {kw['depths']} {kw['embed_dims']}" for n, kw in BACKBONES.items())
    )


HEAD_WIDTH_KEY = "decode_head.embed_layers.0.proj.weight"
"""The head's first layer, (D, C_1): its output width is the decoder width D."""


def infer_config_from_state(state: Mapping[str, Tensor]) -> ModelConfig:
    """Guess backbone, embed_dim and num_classes of a converted state dict: D from the head's
    first layer (``HEAD_WIDTH_KEY``), C from the classifier ``conv_seg``, so a classifier of the
    wrong shape is reported as one mismatch, not as every other head layer.  Dilations cannot be
    seen in weights: DAFormer's (6, 12, 18) are assumed; dropouts keep their defaults."""
    name = infer_backbone(state)
    conv_seg = state.get("decode_head.conv_seg.weight")
    if conv_seg is None:
        raise CheckpointError(
            "no decode_head.conv_seg.weight: this looks like a backbone-only (ImageNet) file; "
            "use it as ModelConfig(backbone_weights=...) instead"
        )
    if conv_seg.ndim != 4:
        raise CheckpointError(
            f"decode_head.conv_seg.weight has shape {tuple(conv_seg.shape)}, expected a 1x1 "
            "convolution (classes, D, 1, 1); the file is damaged or not a DAFormer-style segmentor"
        )
    first = state.get(HEAD_WIDTH_KEY)
    width = first.shape[0] if first is not None and first.ndim == 2 else conv_seg.shape[1]
    return ModelConfig(backbone=name, embed_dim=width, num_classes=conv_seg.shape[0])


def state_mismatches(expected: Mapping[str, Tensor], got: Mapping[str, Tensor]) -> str:
    """Human-readable missing / unexpected / shape-mismatched keys ('' when they match)."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [
        f"{k}: file {tuple(got[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in got and got[k].shape != expected[k].shape
    ]
    dtypes = [
        f"{k}: file {got[k].dtype} vs model {expected[k].dtype}"
        for k in expected
        if k in got and _kind(got[k]) != _kind(expected[k])
    ]
    report = [
        f"{title} ({len(items)}): {items[:8]}{' ...' if len(items) > 8 else ''}"
        for title, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape", shapes),
            ("dtype", dtypes),
        )
        if items
    ]
    return "\n".join(report)


def _kind(tensor: Tensor) -> str:
    """'float', 'complex', 'bool' or 'int': dtypes of one kind convert without losing meaning."""
    if tensor.is_floating_point() or tensor.is_complex():
        return "complex" if tensor.is_complex() else "float"
    return "bool" if tensor.dtype == torch.bool else "int"


def load_state_strict(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a :class:`CheckpointError` that lists every kind of
    mismatch (missing, unexpected, shape, dtype kind)."""
    problems = state_mismatches(module.state_dict(), state)
    if problems:
        raise CheckpointError(f"{source} does not match the model:\n{problems}")
    module.load_state_dict(state, strict=True)


def load_backbone_file(backbone: nn.Module, path: str | Path) -> None:
    """Load encoder weights from an ImageNet ``mit_bN.pth``, a segmentor or a UDA checkpoint."""
    state = convert_official_state_dict(load_checkpoint_state(path))
    encoder = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    if not encoder:
        raise CheckpointError(f"{path} holds no backbone weights ({describe_state(state)})")
    load_state_strict(backbone, encoder, f"backbone weights {path} ({describe_state(encoder)})")


def load_segmentor_file(model: nn.Module, path: str | Path) -> None:
    """Load a whole segmentor (encoder + head; a UDA checkpoint's student) into ``model``,
    strictly: every key and shape must match ``model``'s configuration."""
    raw = load_checkpoint_state(path)
    state = convert_official_state_dict(raw)
    load_state_strict(model, state, f"init weights {path} ({describe_state(raw)})")


def _load_file(
    path: str | Path,
    which: str,
    config: ModelConfig | None,
    backbone_only_ok: bool,
    allow_nonfinite: bool = False,
) -> SegModel:
    raw = load_checkpoint_state(path, allow_nonfinite)
    source = f"{path} ({which}; file: {describe_state(raw)})"
    try:
        state = convert_official_state_dict(raw, which)
        backbone_only = backbone_only_ok and not any(k.startswith("decode_head.") for k in state)
        if config is None and backbone_only:
            config = ModelConfig(backbone=infer_backbone(state))
        config = config or infer_config_from_state(state)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}\nfile: {describe_state(raw)}") from err
    if backbone_only:
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    return fitted_model(config, state, source, backbone_only)


def fitted_model(
    config: ModelConfig, state: Mapping[str, Tensor], source: str, backbone_only: bool = False
) -> SegModel:
    """A ``config`` model (or only its encoder) loaded strictly with ``state``.  The fit is
    checked on the meta device first, so a file that does not fit allocates and initialises
    nothing; raises :class:`CheckpointError` naming ``source`` and listing every mismatch.  A
    whole model is that skeleton given ``state``'s values (no random initialisation that the
    state would overwrite: about a third of loading a model and predicting an image on CPU)."""
    try:
        with torch.device("meta"):
            skeleton = SegModel(config, load_backbone_weights=False)
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise CheckpointError(f"{source}: cannot build the model of {config} ({err})") from err
    problems = state_mismatches(
        (skeleton.backbone if backbone_only else skeleton).state_dict(), state
    )
    if problems:
        raise CheckpointError(f"{source} does not match the model:\n{problems}")
    if not backbone_only:
        return materialised(skeleton, state)
    model = SegModel(config, load_backbone_weights=False)
    model.backbone.load_state_dict(state, strict=True)
    return model


def materialised(skeleton: nn.Module, state: Mapping[str, Tensor]) -> nn.Module:
    """A meta-device module given copies of ``state``'s tensors (in the module's dtypes, on the
    state's device) as its parameters and buffers; strict.  Equal to building the module for real
    and loading ``state``, without the random initialisation."""
    own = skeleton.state_dict()
    copies = {
        k: v.detach().to(own[k].dtype, memory_format=torch.contiguous_format, copy=True)
        for k, v in state.items()
    }
    skeleton.load_state_dict(copies, strict=True, assign=True)
    left = [n for n, t in (*skeleton.named_parameters(), *skeleton.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"not in the state, left on the meta device: {left}")
    return skeleton


def load_official(
    path: str | Path,
    which: str = "model",
    config: ModelConfig | None = None,
    allow_nonfinite: bool = False,
) -> SegModel:
    """Build a ``SegModel`` from an official DAFormer/DIDA (or our own) checkpoint and load it
    strictly.  ``which``: ``"model"`` (student, what the papers report) or ``"ema_model"``
    (teacher); ``config`` defaults to ``infer_config_from_state``.  Raises
    :class:`CheckpointError` naming the file (non-finite weights are refused unless
    ``allow_nonfinite``)."""
    return _load_file(path, which, config, False, allow_nonfinite)


def load_model_file(
    path: str | Path,
    which: str = "model",
    config: ModelConfig | None = None,
    allow_nonfinite: bool = False,
) -> SegModel:
    """Like ``load_official``, but a backbone-only (ImageNet ``mit_bN.pth``) file is accepted too:
    its encoder is loaded strictly and the head stays randomly initialised.  Meant for frozen
    reference networks whose encoder features are all that is read (DAFormer's FD)."""
    return _load_file(path, which, config, True, allow_nonfinite)
