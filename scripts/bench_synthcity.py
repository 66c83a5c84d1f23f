"""SynthCity generation speed and class statistics (the long tail of both domains).

Generates a preset from scratch into a temporary folder: first the target val split alone, then the
rest; prints images/s and seconds, then the class-pixel table read back from the label files on disk
(% of labelled pixels and % of images containing the class, source vs target).

    python -m scripts.bench_synthcity                         # default preset, 2 workers
    python -m scripts.bench_synthcity --preset quick --keep data/synthcity-quick
    python -m scripts.bench_synthcity --figure docs/figures/synthcity_samples.png --figure-only
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dida.data.classes import CITYSCAPES_TO_TRAIN, CLASSES, NUM_CLASSES, PALETTE
from dida.data.synthcity import generate, preset_config, render_image, synthcity_roots


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the worker processes)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_generate(cfg, root: Path, splits: list[str], workers: int) -> tuple[int, float, float]:
    """(images written, wall seconds, CPU seconds) for generating ``splits``."""
    start, cpu = time.perf_counter(), _cpu_seconds()
    generate(cfg, root, splits, workers)
    return sum(cfg.count(s) for s in splits), time.perf_counter() - start, _cpu_seconds() - cpu


def class_table(label_files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(% of labelled pixels, % of images) per train class over label-ID PNGs."""
    pixels, images = np.zeros(NUM_CLASSES), np.zeros(NUM_CLASSES)
    for path in label_files:
        with Image.open(path) as im:
            train_ids = CITYSCAPES_TO_TRAIN[np.asarray(im)]
        counts = np.bincount(train_ids.ravel(), minlength=256)[:NUM_CLASSES]
        pixels, images = pixels + counts, images + (counts > 0)
    return 100 * pixels / pixels.sum(), 100 * images / max(len(label_files), 1)


def print_histograms(root: Path) -> None:
    source, target = synthcity_roots(root)
    src = class_table(sorted((source / "labels").glob("*.png")))
    tgt = class_table(sorted((target / "gtFine").rglob("*_gtFine_labelIds.png")))
    print("\n| class | source % pixels | source % images | target % pixels | target % images |")
    print("|---|---:|---:|---:|---:|")
    for c in np.argsort(-src[0]):
        print(
            f"| {CLASSES[c]} | {src[0][c]:.3f} | {src[1][c]:.1f} | {tgt[0][c]:.3f} | {tgt[1][c]:.1f} |"
        )


def colourise(label: np.ndarray) -> np.ndarray:
    """(H, W) train IDs -> (H, W, 3) Cityscapes colours (black for 255)."""
    out = np.zeros((*label.shape, 3), dtype=np.uint8)
    keep = label < NUM_CLASSES
    out[keep] = PALETTE[label[keep]]
    return out


def sample_figure(path: Path, index: int, panel: tuple[int, int] = (160, 320)) -> None:
    """Rows: source, target at shift 0, 0.5, 1 (default preset, image ``index``); image | label."""
    rows = [("source", "source", 0.6), ("target, shift 0", "val", 0.0)]
    rows += [("target, shift 0.5", "val", 0.5), ("target, shift 1", "val", 1.0)]
    h, w = panel
    sheet = Image.new("RGB", (2 * w, len(rows) * h), "white")
    for r, (title, split, shift) in enumerate(rows):
        frame = render_image(replace(preset_config("default"), shift=shift), split, index)
        for c, array in enumerate((frame.image, colourise(frame.label))):
            tile = Image.fromarray(array).resize(
                (w, h), Image.Resampling.BILINEAR if c == 0 else Image.Resampling.NEAREST
            )
            sheet.paste(tile, (c * w, r * h))
        ImageDraw.Draw(sheet).text(
            (4, r * h + 3), title, fill="white", stroke_width=2, stroke_fill="black"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    print(f"figure: {path} ({path.stat().st_size // 1024} KB)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--keep", type=Path, default=None, help="generate here and keep the tree")
    p.add_argument("--figure", type=Path, default=None, help="also write the sample grid here")
    p.add_argument("--figure-index", type=int, default=3)
    p.add_argument("--figure-only", action="store_true")
    args = p.parse_args()
    if args.figure:
        sample_figure(args.figure, args.figure_index)
    if args.figure_only:
        return
    cfg = preset_config(args.preset)
    root = args.keep or Path(tempfile.mkdtemp(prefix="synthcity-bench-")) / args.preset
    load = os.getloadavg()
    try:
        n_val, t_val, c_val = timed_generate(cfg, root, ["val"], args.workers)
        n_rest, t_rest, c_rest = timed_generate(cfg, root, ["source", "train"], args.workers)
        total, seconds, cpu = n_val + n_rest, t_val + t_rest, c_val + c_rest
        print(
            f"SynthCity {args.preset} ({cfg.height}x{cfg.width}, shift {cfg.shift}), {args.workers} workers"
        )
        print(f"load average before: {load[0]:.2f} (other processes share the cores)")
        print(f"val split:  {n_val} images in {t_val:.1f} s ({n_val / t_val:.1f} images/s)")
        print(f"all splits: {total} images in {seconds:.1f} s ({total / seconds:.1f} images/s)")
        print(
            f"CPU time:   {1000 * cpu / total:.1f} ms per image -> {args.workers} free cores: "
            f"{args.workers * total / cpu:.0f} images/s, {cpu / args.workers:.0f} s for all splits"
        )
        print_histograms(root)
    finally:
        if args.keep is None:
            shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
