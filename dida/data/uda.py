"""Source + target data of one adaptation run: which folders, which crops, which batches.

``source`` is ``synthcity`` (its GTA5-layout half), ``gta5`` or ``synthia``; ``target`` is ``synthcity``
(its Cityscapes-layout half) or ``cityscapes``. SynthCity is generated on first use when its folder is
missing. Every iteration draws ``batch_size`` source crops (rare class sampling optional) and
``batch_size`` target crops; evaluation uses the labelled target ``val`` split.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dida.data.datasets import SegDataset, build_dataset, class_pixel_totals, load_class_stats
from dida.data.pipeline import DEFAULT_CROPS, CropConfig, EvalImages, TrainCrops, infinite_batches
from dida.data.sampling import GTA5_MIN_PIXELS_FRACTION, RareClassSampler, RCSConfig

SOURCE_KINDS = ("synthcity", "gta5", "synthia")
TARGET_KINDS = ("synthcity", "cityscapes")
ALL_SPLITS = ("source", "train", "val")


@dataclass
class DataConfig:
    """Where the domains live and how training crops are drawn."""

    source: str = "synthcity"
    """Source layout: synthcity, gta5 or synthia."""
    source_root: str = "data/synthcity"
    """Source folder (for synthcity: the SynthCity root holding source/ and target/)."""
    target: str = "synthcity"
    """Target layout: synthcity or cityscapes."""
    target_root: str = "data/synthcity"
    """Target folder (Cityscapes root with leftImg8bit/ and gtFine/, or the SynthCity root)."""
    synthcity_preset: str = "default"
    """SynthCity preset generated when a synthcity folder is missing."""
    synthcity_shift: float | None = None
    """SynthCity domain gap in [0, 1] of a generated target (None: the preset's, 0.6). The target
    root must then be a folder of its own (the shift sweep uses ``data/synthcity-shift<s>``)."""
    crop: tuple[int, int] = (256, 256)
    """Training crop (height, width)."""
    source_resize: tuple[int, int] | None = None
    """Fit source images into (long, short) before cropping; None keeps SynthCity as is and uses
    DAFormer's sizes for GTA5 (1280, 720) and SYNTHIA (1280, 760)."""
    target_resize: tuple[int, int] | None = None
    """Fit target images into (long, short); None keeps SynthCity, Cityscapes → (1024, 512)."""
    batch_size: int = 2
    """Images per domain per iteration (per process under DDP)."""
    rcs: bool = True
    """Rare class sampling of source images (DAFormer)."""
    rcs_temperature: float = 0.01
    """RCS temperature T."""
    rcs_min_pixels_fraction: float = GTA5_MIN_PIXELS_FRACTION
    """A source file is eligible for class c when c covers more than this fraction of it
    (DAFormer's 3000 pixels at GTA5 size)."""
    cat_max_ratio: float = 0.75
    """Source crops are re-drawn while one class covers this fraction of them."""
    val_images: int | None = None
    """Evaluate on the first N target val images (None: all)."""
    workers: int = 0
    """Data-loading worker processes (0: load in the training process)."""

    def __post_init__(self) -> None:
        self.crop = tuple(self.crop)
        for name in ("source_resize", "target_resize"):
            if getattr(self, name) is not None:
                setattr(self, name, tuple(getattr(self, name)))
        if self.source not in SOURCE_KINDS:
            raise ValueError(f"unknown source {self.source!r}; use one of {SOURCE_KINDS}")
        if self.target not in TARGET_KINDS:
            raise ValueError(f"unknown target {self.target!r}; use one of {TARGET_KINDS}")
        if len(self.crop) != 2 or min(self.crop) < 32 or any(c % 32 for c in self.crop):
            raise ValueError(f"crop must be (h, w), multiples of 32 and >= 32 (got {self.crop})")
        if self.batch_size < 1 or self.workers < 0:
            raise ValueError("batch_size must be >= 1 and workers >= 0")
        if self.val_images is not None and self.val_images < 1:
            raise ValueError("val_images must be >= 1 or None (all)")


@dataclass
class UDAData:
    """The datasets of one run and a batch stream over them."""

    cfg: DataConfig
    source: TrainCrops
    target: TrainCrops
    target_val: EvalImages
    source_class_pixels: tuple[int, ...]
    seed: int = 0
    rank: int = 0
    world_size: int = 1

    def batches(self, start_it: int = 0) -> Iterator[dict[str, dict[str, torch.Tensor]]]:
        """Endless ``{"source": batch, "target": batch}`` from iteration ``start_it`` on: a resumed
        run gets the batches the uninterrupted run trains on from there."""
        args = (self.cfg.batch_size, self.seed, self.rank, self.world_size, self.cfg.workers)
        source = infinite_batches(self.source, *args, start_batch=start_it)
        target = infinite_batches(
            self.target, *args[:1], self.seed + 1, *args[2:], start_batch=start_it
        )
        return ({"source": s, "target": t} for s, t in zip(source, target, strict=False))


def domain_roots(cfg: DataConfig) -> tuple[Path, Path]:
    """(source root, target root), generating SynthCity when a synthcity folder is missing."""
    from dida.data.synthcity import ensure_synthcity, synthcity_roots

    source, target = Path(cfg.source_root), Path(cfg.target_root)
    preset, shift = cfg.synthcity_preset, cfg.synthcity_shift
    if cfg.source == "synthcity" and cfg.target == "synthcity" and source == target:
        root = ensure_synthcity(source, preset, ALL_SPLITS, shift=shift)
        return synthcity_roots(root)
    if cfg.source == "synthcity":  # the source split does not depend on the shift
        source = synthcity_roots(ensure_synthcity(source, preset, ("source",)))[0]
    if cfg.target == "synthcity":
        target = synthcity_roots(ensure_synthcity(target, preset, ("train", "val"), shift=shift))[1]
    return source, target


def _resize(kind: str, resize: tuple[int, int] | None) -> tuple[int, int] | None:
    """The configured size, else DAFormer's for a real dataset kind (SynthCity keeps its size)."""
    if resize is None and kind in DEFAULT_CROPS:
        return DEFAULT_CROPS[kind].resize
    return resize


def _layout(kind: str, domain: str) -> str:
    if kind != "synthcity":
        return kind
    return "gta5" if domain == "source" else "cityscapes"


def rcs_sampler(
    dataset: SegDataset, stats: list[dict], cfg: DataConfig
) -> RareClassSampler | None:
    """RCS over a labelled dataset's class statistics (None when RCS is off)."""
    if not cfg.rcs:
        return None
    h, w = dataset.image_size(0)
    config = RCSConfig(
        temperature=cfg.rcs_temperature, min_pixels_fraction=cfg.rcs_min_pixels_fraction
    )
    return RareClassSampler(stats, dataset.label_files, config, label_area=h * w)


def _target_crops(
    cfg: DataConfig, target: SegDataset, resize: tuple[int, int] | None, labelled: bool
) -> TrainCrops:
    if not labelled:
        return TrainCrops(target, CropConfig(resize=resize, crop=cfg.crop, cat_max_ratio=1.0))
    stats = load_class_stats(target, cache_dir=Path(".cache") / "class_stats")
    crops = CropConfig(resize=resize, crop=cfg.crop, cat_max_ratio=cfg.cat_max_ratio)
    return TrainCrops(target, crops, rcs_sampler(target, stats, cfg))


def _val_images(cfg: DataConfig, target_root: Path) -> EvalImages:
    val = build_dataset(_layout(cfg.target, "target"), target_root, "val")
    return EvalImages(val, resize=_resize(cfg.target, cfg.target_resize))


def target_val_images(cfg: DataConfig) -> EvalImages:
    """The target validation split as the training loop evaluates it (generated when missing)."""
    return _val_images(cfg, domain_roots(cfg)[1])


def build_uda_data(
    cfg: DataConfig, seed: int = 0, rank: int = 0, world_size: int = 1, target_labels: bool = False
) -> UDAData:
    """Open both domains (checking their folders) and set up crops, RCS and the val split.

    ``target_labels`` (the oracle): the target train split must be labelled and its crops are drawn
    like source crops (RCS over the target's class statistics, crop re-draws), so the upper bound
    uses the same recipe as the methods it bounds."""
    source_root, target_root = domain_roots(cfg)
    source = build_dataset(_layout(cfg.source, "source"), source_root, "train")
    layout = _layout(cfg.target, "target")
    target = build_dataset(layout, target_root, "train", require_labels=target_labels)
    stats = load_class_stats(source, cache_dir=Path(".cache") / "class_stats")
    labelled = CropConfig(
        resize=_resize(cfg.source, cfg.source_resize),
        crop=cfg.crop,
        cat_max_ratio=cfg.cat_max_ratio,
    )
    target_resize = _resize(cfg.target, cfg.target_resize)
    return UDAData(
        cfg=cfg,
        source=TrainCrops(source, labelled, rcs_sampler(source, stats, cfg)),
        target=_target_crops(cfg, target, target_resize, target_labels),
        target_val=_val_images(cfg, target_root),
        source_class_pixels=tuple(int(x) for x in np.asarray(class_pixel_totals(stats))),
        seed=seed,
        rank=rank,
        world_size=world_size,
    )
