"""SynthCity: a procedural two-domain street-scene benchmark in the GTA5 and Cityscapes formats.

The source domain is rendered in a clean "game" style, the target in a "camera" style. One dial,
``shift`` in [0, 1], blends every difference (0 = the target drawn exactly like the source); the gap
is made of three separately switchable parts: appearance, camera and geometry. The shift-1 end of
every part lives in one place, ``TARGET_STYLE``, for calibration.

    python -m dida.data.synthcity --out data/synthcity --preset default

writes ``source/{images,labels}/00001.png`` (GTA5 layout: palette PNGs of Cityscapes label IDs),
``target/{leftImg8bit,gtFine}/{train,val}/CITY/...`` (Cityscapes layout) and ``synthcity.json``.
Image i of a split is seeded from (seed, domain, split, i): output does not depend on the worker
count. This module holds the styles, configs, files, manifest and command line; ``synthcity_scene``
samples *what* is in a street, ``synthcity_render`` draws it, and ``synthcity_lock`` keeps a second
generator out of a folder being written. See docs/SYNTHCITY.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
from PIL import Image

from dida.data import synthcity_render as R
from dida.data.classes import (
    CITYSCAPES_LABEL_IDS,
    CLASSES,
    NUM_CLASSES,
    PALETTE,
    train_to_label_ids,
)
from dida.data.synthcity_lock import DEFAULT_WAIT, generator_lock
from dida.data.synthcity_render import Appearance, Geometry, Optics, Style
from dida.data.synthcity_scene import (  # noqa: F401  (nearer, painter_order: re-exported)
    nearer,
    painter_order,
    render_scene,
)

GENERATOR_VERSION = 1
MANIFEST = "synthcity.json"
SPLITS = ("source", "train", "val")
CITIES = {"train": ("pixelburg", "voxelheim", "rasterdam", "texelstadt"),
          "val": ("meshingen", "shaderton")}  # fmt: skip
FRAME = 19  # Cityscapes frame names end in _000019
_SEED_WORDS = {"source": (0, 0), "train": (1, 1), "val": (1, 2)}  # (domain, split)

# -------------------------------------------------------------------------------------------------
# The domain styles: SOURCE_STYLE is the "game" look, TARGET_STYLE the target at shift = 1.
# Calibrate the benchmark here: every target value is blended from the source by shift x part.
# -------------------------------------------------------------------------------------------------
SOURCE_STYLE = Style()
# fmt: off
TARGET_STYLE = Style(
    appearance=Appearance(
        # road swalk build wall fence pole light sign veg terr sky pers ridr car truck bus train moto bike
        hue=(15, -20, 15, -15, 20, 10, 0, -10, 22, -25, 12, 0, 0, 0, 0, -15, 15, 0, 0),
        saturation=(1.3, .7, .6, .7, .6, .8, .8, .75, .7, .65, .45, .7, .7, .65, .7, .7, .7, .7, .7),
        value=(1.1, .9, .85, .9, .85, .9, 1, .85, .8, .85, 1.05, .85, .85, .85, .85, .85, .85, .85, .85),
        texture=1.7, grain=0.1, brightness=0.82, white_balance=(0.94, 1.0, 1.08), contrast=0.85,
        shadow=0.55,
    ),
    optics=Optics(noise=0.035, blur=1.0, vignette=0.35, jpeg=0.6, haze=0.25),
    geometry=Geometry(
        horizon=0.40, camera_height=1.4, focal=0.76, object_scale=1.08, vehicle_aspect=0.93,
        urban=0.6, suburban=0.35, rural=0.05, road_width=0.9, sidewalk=1.7, building_height=1.0,
        building_gap=0.15, intersection=0.6, wall=0.12, fence=0.25, tree=1.8, pole=1.5,
        traffic_light=0.3, traffic_sign=0.5, parked=0.8, traffic=2.0, truck=0.05, bus=0.08,
        train=0.08, person=7.0, rider=1.4, motorcycle=0.3, bicycle=1.5, clutter=2.0,
    ),
)
# fmt: on


@dataclass(frozen=True)
class SynthCityConfig:
    """What to generate. The defaults are the ``default`` preset."""

    n_source: int = 2500
    """Number of labelled source images (GTA5 layout)."""
    n_target_train: int = 1000
    """Number of target training images (their labels are only read by the oracle)."""
    n_target_val: int = 250
    """Number of target validation images."""
    height: int = 256
    """Image height in pixels (multiple of 32)."""
    width: int = 512
    """Image width in pixels (multiple of 32)."""
    seed: int = 0
    """Base seed; image i of a split is seeded from (seed, domain, split, i)."""
    shift: float = 1.0
    """Size of the domain gap in [0, 1]: 0 renders the target exactly like the source."""
    appearance: bool = True
    """Apply the appearance part of the gap (class colours, textures, lighting, shadows)."""
    camera: bool = True
    """Apply the camera part of the gap (noise, blur, vignetting, JPEG, haze)."""
    geometry: bool = True
    """Apply the geometry part of the gap (camera pose, object shapes, class frequencies)."""

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.shift) <= 1.0:
            raise ValueError(f"shift={self.shift} is outside [0, 1]; choose a value in [0, 1]")
        for name in ("height", "width"):
            size = getattr(self, name)
            if not isinstance(size, int) or size < 32 or size % 32:
                raise ValueError(f"{name}={size!r} must be a multiple of 32 (e.g. 256 x 512)")
        for name in ("n_source", "n_target_train", "n_target_val", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} must be a non-negative integer")

    def count(self, split: str) -> int:
        """Number of images in ``split`` (source, train or val)."""
        counts = {"source": self.n_source, "train": self.n_target_train, "val": self.n_target_val}
        return counts[check_split(split)]

    def style(self, split: str) -> Style:
        """The rendering style of ``split``: the source style, or the target style at this shift."""
        if check_split(split) == "source":
            return SOURCE_STYLE
        weights = [self.shift * on for on in (self.appearance, self.camera, self.geometry)]
        return R.blend(SOURCE_STYLE, TARGET_STYLE, *weights)


PRESETS: dict[str, SynthCityConfig] = {
    "tiny": SynthCityConfig(n_source=8, n_target_train=4, n_target_val=4, height=64, width=128),
    "quick": SynthCityConfig(400, 200, 100, height=128, width=256),
    "default": SynthCityConfig(),
}


def check_split(split: str) -> str:
    """``split`` if it is one of SPLITS, else a ValueError naming the valid ones."""
    if split not in SPLITS:
        raise ValueError(f"unknown SynthCity split {split!r}: use one of {list(SPLITS)}")
    return split


def preset_config(preset: str, **overrides: object) -> SynthCityConfig:
    """The config of a named preset with some fields replaced (None values are ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown SynthCity preset {preset!r}: use one of {list(PRESETS)}")
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


def render_image(cfg: SynthCityConfig, split: str, index: int) -> R.Rendered:
    """Image ``index`` of ``split`` (source, train or val), exactly as the generator writes it."""
    domain, code = _SEED_WORDS[check_split(split)]
    seed = np.random.SeedSequence([cfg.seed, domain, code, index])
    return render_scene(cfg.style(split), cfg.height, cfg.width, seed)


# -------------------------------------------------------------------------------------------------
# Files
# -------------------------------------------------------------------------------------------------
def _gta_palette() -> list[int]:
    """768 palette entries: the Cityscapes colour of each label ID (black elsewhere)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[list(CITYSCAPES_LABEL_IDS)] = PALETTE
    return palette.reshape(-1).tolist()


GTA_PALETTE = _gta_palette()


def synthcity_roots(root: str | Path) -> tuple[Path, Path]:
    """(source root in the GTA5 layout, target root in the Cityscapes layout) of a SynthCity tree."""
    return Path(root) / "source", Path(root) / "target"


def target_name(split: str, index: int, count: int) -> tuple[str, str]:
    """(city, Cityscapes frame stem) of target image ``index`` of ``count`` in ``split``."""
    cities = CITIES[split]
    c = index * len(cities) // max(count, 1)
    first = -(-c * count // len(cities))  # first index of city c
    return cities[c], f"{cities[c]}_{index - first:06d}_{FRAME:06d}"


def image_paths(root: Path, split: str, index: int, count: int) -> dict[str, Path]:
    """The files of one image: image and label (and instance for the target splits)."""
    source, target = synthcity_roots(root)
    if split == "source":
        name = f"{index + 1:05d}.png"
        return {"image": source / "images" / name, "label": source / "labels" / name}
    city, stem = target_name(split, index, count)
    gt = target / "gtFine" / split / city / f"{stem}_gtFine"
    return {
        "image": target / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        "label": gt.with_name(f"{gt.name}_labelIds.png"),
        "instance": gt.with_name(f"{gt.name}_instanceIds.png"),
    }


def save_frame(frame: R.Rendered, paths: dict[str, Path]) -> None:
    """Write one frame in the GTA5 (source) or Cityscapes (target) format; each file appears
    whole (written aside, then renamed) and the label last, so a reader of a split still being
    written (``dida.data.pending``) never sees half a file."""
    for folder in {path.parent for path in paths.values()}:
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
    _save_png(Image.fromarray(frame.image), paths["image"])
    label = Image.fromarray(train_to_label_ids(frame.label))
    if "instance" in paths:
        instance = Image.fromarray(frame.instance.astype(np.uint16))  # 16-bit PNG, as Cityscapes
        _save_png(instance, paths["instance"])
    else:
        label.putpalette(GTA_PALETTE)  # 'P' mode: indices are label IDs, as GTA5
    _save_png(label, paths["label"])


def _save_png(image: Image.Image, path: Path) -> None:
    part = path.with_name(f".{path.name}.part")
    image.save(part, format="PNG", compress_level=1)
    os.replace(part, path)


def write_range(config: dict, split: str, root: str, start: int, stop: int) -> np.ndarray:
    """Render and save images start..stop-1; returns (2, 19) class pixel and image counts."""
    cfg, counts = SynthCityConfig(**config), np.zeros((2, NUM_CLASSES), dtype=np.int64)
    for index in range(start, stop):
        frame = render_image(cfg, split, index)
        save_frame(frame, image_paths(Path(root), split, index, cfg.count(split)))
        pixels = np.bincount(frame.label.ravel(), minlength=256)[:NUM_CLASSES]
        counts += np.stack([pixels, pixels > 0])
    return counts


CHUNK = 8
"""Most images one worker job renders (≈ 0.5 s of CPU for SynthCity's default size)."""


def write_split(
    cfg: SynthCityConfig, root: Path, split: str, workers: int = 1, nice: int = 0
) -> np.ndarray:
    """Generate every image of ``split`` under ``root``; (2, 19) class pixel and image counts.
    Jobs of at most ``CHUNK`` images, handed out one at a time, so the workers finish together
    (with jobs of 32, one worker could still render for ≈ 2 s while the other core idled).
    ``nice``: the worker processes' niceness increment (the app's first launch generates behind
    the pages it serves)."""
    n = cfg.count(split)
    chunk = max(1, min(CHUNK, -(-n // max(4 * workers, 1))))
    jobs = [(asdict(cfg), split, str(root), a, min(a + chunk, n)) for a in range(0, n, chunk)]
    total = np.zeros((2, NUM_CLASSES), dtype=np.int64)
    if workers <= 1 or len(jobs) <= 1:
        return sum((write_range(*job) for job in jobs), total)
    with multiprocessing.get_context("spawn").Pool(workers, os.nice, (nice,)) as pool:
        return sum(pool.starmap(write_range, jobs, chunksize=1), total)


# -------------------------------------------------------------------------------------------------
# Manifest and the first-launch entry point
# -------------------------------------------------------------------------------------------------
def read_manifest(root: str | Path) -> dict | None:
    """The manifest of a SynthCity tree, or None when there is none."""
    path = Path(root) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def new_manifest(cfg: SynthCityConfig) -> dict:
    """A manifest without splits: generator version, full config, seed, counts, classes, cities."""
    return {
        "generator": "synthcity",
        "version": GENERATOR_VERSION,
        "config": asdict(cfg),
        "seed": cfg.seed,
        "counts": {split: cfg.count(split) for split in SPLITS},
        "classes": list(CLASSES),
        "cities": {split: list(names) for split, names in CITIES.items()},
        "splits": {},
    }


def _regenerate_hint(root: Path, cfg: SynthCityConfig) -> str:
    flags = f"--seed {cfg.seed} --shift {cfg.shift} --height {cfg.height} --width {cfg.width}"
    return f"delete {root} (or choose another folder) and run: python -m dida.data.synthcity --out {root} {flags}"


def check_tree(root: Path, cfg: SynthCityConfig) -> dict:
    """The manifest to continue from; raises when ``root`` holds something else."""
    manifest = read_manifest(root)
    if manifest is None:
        if any((root / d).exists() for d in ("source", "target")):
            raise ValueError(
                f"{root} has source/ or target/ but no {MANIFEST}; {_regenerate_hint(root, cfg)}"
            )
        return new_manifest(cfg)
    theirs = manifest.get("config", {})
    diff = {k: (theirs.get(k), v) for k, v in asdict(cfg).items() if theirs.get(k) != v}
    if diff or manifest.get("version") != GENERATOR_VERSION:
        raise ValueError(
            f"{root} holds a SynthCity tree of generator version {manifest.get('version')} (this is "
            f"{GENERATOR_VERSION}) with a different config {{field: (on disk, requested)}} {diff}; "
            + _regenerate_hint(root, cfg)
        )
    return manifest


def split_complete(root: Path, manifest: dict, cfg: SynthCityConfig, split: str) -> bool:
    """Whether the manifest lists ``split`` and all its images are on disk."""
    if manifest["splits"].get(split, {}).get("images") != cfg.count(split):
        return False
    source, target = synthcity_roots(root)
    folder = source / "images" if split == "source" else target / "leftImg8bit" / split
    return sum(1 for _ in folder.rglob("*.png")) == cfg.count(split)


def write_manifest(root: Path, manifest: dict) -> None:
    """Replace the manifest atomically (a reader sees the old or the new one, never half)."""
    tmp = root / f"{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(root / MANIFEST)


def record_split(root: Path, split: str, entry: dict) -> None:
    """Add one split's entry to the manifest on disk: read, modify, write (under the lock)."""
    manifest = read_manifest(root)
    manifest["splits"][split] = entry
    write_manifest(root, manifest)


def generate_split(
    cfg: SynthCityConfig, root: Path, split: str, workers: int, nice: int = 0
) -> None:
    """Write every image of ``split``, then record it in the manifest."""
    start = time.perf_counter()
    counts = write_split(cfg, root, split, workers, nice)
    entry = {
        "images": cfg.count(split),
        "seconds": round(time.perf_counter() - start, 2),
        "class_pixels": counts[0].tolist(),
        "class_images": counts[1].tolist(),
    }
    record_split(root, split, entry)


def finished(root: Path, cfg: SynthCityConfig, splits: Sequence[str]) -> bool:
    """Whether ``root`` already holds every split of ``splits`` (read without the lock, so a
    finished tree in a read-only folder serves as is); raises on a tree of another config."""
    if read_manifest(root) is None:
        return False
    manifest = check_tree(root, cfg)
    return all(split_complete(root, manifest, cfg, split) for split in splits)


def generate(
    cfg: SynthCityConfig,
    root: str | Path,
    splits: Sequence[str] = SPLITS,
    workers: int = 1,
    wait: float = DEFAULT_WAIT,
    nice: int = 0,
) -> Path:
    """Write the missing ``splits`` of ``cfg`` under ``root`` (complete ones are re-used).

    One generator writes a folder at a time (``synthcity_lock``): another one on the same folder
    waits up to ``wait`` seconds, then finds the splits it wanted done, or writes what is missing.
    """
    root, splits = Path(root), [check_split(s) for s in splits]
    if finished(root, cfg, splits):
        return root
    with generator_lock(root, wait):
        write_manifest(root, check_tree(root, cfg))  # first: a killed run leaves a known tree
        for split in splits:
            if not split_complete(root, read_manifest(root), cfg, split):
                generate_split(cfg, root, split, workers, nice)
    return root


def default_workers() -> int:
    """Worker processes when none are given: at most 2 (the machine is shared)."""
    return max(1, min(2, os.cpu_count() or 1))


def ensure_synthcity(
    root: str | Path,
    preset: str = "default",
    splits: Sequence[str] = ("val",),
    seed: int = 0,
    shift: float | None = None,
    wait: float = DEFAULT_WAIT,
    nice: int = 0,
) -> Path:
    """Make sure ``root`` holds ``splits`` of a SynthCity preset, generating only what is missing
    (``nice``: the worker processes' niceness increment).

    Raises ValueError, saying how to regenerate, when ``root`` holds a tree of another config, and
    ``GeneratorBusyError`` when another generator keeps ``root`` longer than ``wait`` seconds.
    """
    cfg = preset_config(preset, seed=seed, shift=shift)
    small = sum(cfg.count(split) for split in splits) < 64  # a worker pool costs more than it saves
    return generate(cfg, root, splits, 1 if small else default_workers(), wait, nice)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dida.data.synthcity", description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--preset", default="default", choices=list(PRESETS))
    p.add_argument("--seed", type=int, default=None, help="base seed (preset: 0)")
    p.add_argument("--shift", type=float, default=None, help="domain gap in [0, 1] (preset: 1.0)")
    for part in ("appearance", "camera", "geometry"):
        p.add_argument(
            f"--no-{part}",
            dest=part,
            action="store_false",
            default=None,
            help=f"switch off the {part} part of the gap",
        )
    p.add_argument("--n-source", type=int, default=None, help="source images")
    p.add_argument("--n-target", dest="n_target_train", type=int, default=None, help="target train")
    p.add_argument("--n-val", dest="n_target_val", type=int, default=None, help="target val images")
    p.add_argument("--height", type=int, default=None, help="image height (multiple of 32)")
    p.add_argument("--width", type=int, default=None, help="image width (multiple of 32)")
    p.add_argument("--workers", type=int, default=default_workers(), help="processes")
    p.add_argument("--splits", default=",".join(SPLITS), help="subset of source,train,val")
    p.add_argument(
        "--wait", type=float, default=DEFAULT_WAIT,
        help="seconds to wait for another generator writing --out before giving up",
    )  # fmt: skip
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the requested splits; 2 (after saying why) when the folder or config is refused."""
    args = parse_args(argv)
    names = {f.name for f in fields(SynthCityConfig)}
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    start = time.perf_counter()
    try:
        cfg = preset_config(args.preset, **{k: v for k, v in vars(args).items() if k in names})
        generate(cfg, args.out, splits, args.workers, args.wait)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seconds, total = time.perf_counter() - start, sum(cfg.count(s) for s in splits)
    print(
        f"SynthCity {args.preset} -> {args.out}: {total} images of {', '.join(splits)} ready "
        f"after {seconds:.1f} s (written now, or earlier by this or another generator)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
