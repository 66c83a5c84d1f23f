"""Training crops and evaluation images as tensors (DAFormer's pipeline, docs METHOD.md §1.1).

Training: resize keeping the aspect ratio -> random crop (re-drawn while one class covers more than
``cat_max_ratio`` of it) -> horizontal flip -> ImageNet normalisation -> pad to the crop size.
With Rare Class Sampling the image is the sampler's pick and the crop is re-drawn until it shows
enough of the picked class.  Resizing uses PIL: bilinear for images, nearest for labels.

Determinism: a training item is a pure function of its :class:`Draw` (image index and seed), so a
stream of draws gives the same batches whatever the number of loader workers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from dida.data.classes import IGNORE_INDEX
from dida.data.datasets import SegDataset
from dida.data.sampling import RareClassSampler

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std as (3, 1, 1) float32 tensors on ``x``'s device."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=x.device).view(3, 1, 1)
    return mean, std


def normalize(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB to ImageNet-normalised float32.

    A (H, W, 3) array gives (3, H, W); a (B, 3, H, W) or (3, H, W) tensor keeps its layout.
    """
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3:
        image = torch.from_numpy(np.require(image, requirements="CW")).permute(2, 0, 1)  # (3, H, W)
    valid = isinstance(image, torch.Tensor) and image.dtype == torch.uint8
    if not valid or image.ndim not in (3, 4) or image.shape[-3] != 3:
        kind = getattr(image, "dtype", type(image))
        raise ValueError(
            f"normalize expects uint8 RGB as a (H, W, 3) array or a (B, 3, H, W) / (3, H, W) "
            f"tensor, got {kind} of shape {tuple(getattr(image, 'shape', ()))}"
        )
    mean, std = _stats(image)
    return (image.float() - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`: float (..., 3, H, W) -> uint8 (..., 3, H, W), rounded."""
    mean, std = _stats(x)
    return (x.float() * std + mean).round().clamp(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class CropConfig:
    """How a raw item becomes a training crop (DAFormer defaults for GTA5)."""

    resize: tuple[int, int] | None = (1280, 720)
    """Fit the image inside (long edge, short edge) keeping its aspect ratio (mmcv ``img_scale``
    with ``keep_ratio``); GTA5 (1280, 720), SYNTHIA (1280, 760), Cityscapes (1024, 512)."""
    ratio: float | None = None
    """Alternatively scale both sides by this factor; at most one of resize / ratio is set."""
    crop: tuple[int, int] = (512, 512)
    """Crop (height, width); smaller images are padded to it."""
    cat_max_ratio: float = 0.75
    """Re-draw a crop while one class covers at least this fraction of its labelled pixels;
    1.0 disables (target images)."""
    cat_max_tries: int = 10
    """Re-draws for ``cat_max_ratio`` before keeping the last crop."""
    flip_p: float = 0.5
    """Probability of a horizontal flip."""
    pad_image: float = 0.0
    """Image padding, in normalised units (DAFormer pads after normalising: 0 = the mean colour)."""
    pad_label: int = IGNORE_INDEX
    """Label padding value."""

    def __post_init__(self) -> None:
        if self.resize is not None and self.ratio is not None:
            raise ValueError("CropConfig: set resize or ratio, not both (set one to None)")
        if self.ratio is not None and not self.ratio > 0:
            raise ValueError(f"CropConfig.ratio must be > 0, got {self.ratio}")
        if self.resize is not None and min(self.resize) < 1:
            raise ValueError(f"CropConfig.resize must be positive (long, short), got {self.resize}")
        if len(self.crop) != 2 or min(self.crop) < 1:
            raise ValueError(f"CropConfig.crop must be a positive (height, width), got {self.crop}")
        if not 0 < self.cat_max_ratio <= 1:
            raise ValueError(
                f"CropConfig.cat_max_ratio must be in (0, 1], got {self.cat_max_ratio}"
            )
        if self.cat_max_tries < 0:
            raise ValueError(f"CropConfig.cat_max_tries must be >= 0, got {self.cat_max_tries}")
        if not 0 <= self.flip_p <= 1:
            raise ValueError(f"CropConfig.flip_p must be in [0, 1], got {self.flip_p}")

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) after resizing an image of (height, width)."""
        if self.resize is None and self.ratio is None:
            return height, width
        factor = self.ratio or min(
            max(self.resize) / max(height, width), min(self.resize) / min(height, width)
        )
        return int(height * factor + 0.5), int(width * factor + 0.5)


DEFAULT_CROPS: dict[str, CropConfig] = {
    "gta5": CropConfig(resize=(1280, 720)),
    "synthia": CropConfig(resize=(1280, 760)),
    "cityscapes": CropConfig(resize=(1024, 512), cat_max_ratio=1.0),
}


def resize_arrays(arrays: dict, size: tuple[int, int]) -> dict:
    """Resize ``image`` (bilinear) and ``label`` / ``instance`` (nearest) to (h, w) with PIL."""
    height, width = size
    out = dict(arrays)
    if arrays["image"].shape[:2] == (height, width):
        return out
    out["image"] = np.array(
        Image.fromarray(arrays["image"]).resize((width, height), Image.BILINEAR)
    )
    for key in ("label", "instance"):
        if key in arrays:
            resized = Image.fromarray(arrays[key]).resize((width, height), Image.NEAREST)
            out[key] = np.array(resized, dtype=arrays[key].dtype)
    return out


def crop_accepted(label: np.ndarray, cat_max_ratio: float) -> bool:
    """DAFormer's test: >1 labelled class and none covering ``cat_max_ratio`` or more of them."""
    counts = np.bincount(label.ravel(), minlength=256)[:IGNORE_INDEX]
    counts = counts[counts > 0]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def random_box(
    rng: np.random.Generator, size: tuple[int, int], crop: tuple[int, int]
) -> tuple[int, int]:
    """Top-left (y, x) of a uniformly random crop (the whole axis when the image is smaller)."""
    return int(rng.integers(max(size[0] - crop[0], 0) + 1)), int(
        rng.integers(max(size[1] - crop[1], 0) + 1)
    )


def cut(array: np.ndarray, box: tuple[int, int], crop: tuple[int, int]) -> np.ndarray:
    """The crop of ``array`` at top-left ``box``."""
    return array[box[0] : box[0] + crop[0], box[1] : box[1] + crop[1]]


def choose_box(rng: np.random.Generator, arrays: dict, config: CropConfig) -> tuple[int, int]:
    """A crop box, re-drawn up to ``cat_max_tries`` times while :func:`crop_accepted` fails."""
    size = arrays["image"].shape[:2]
    box = random_box(rng, size, config.crop)
    if "label" not in arrays or config.cat_max_ratio >= 1:
        return box
    for _ in range(config.cat_max_tries):
        if crop_accepted(cut(arrays["label"], box, config.crop), config.cat_max_ratio):
            break
        box = random_box(rng, size, config.crop)
    return box


class CropWindow(NamedTuple):
    """Where a training crop lies in the resized image: top-left (y, x) and a horizontal flip."""

    top: int
    left: int
    flip: bool


def draw_window(rng: np.random.Generator, arrays: dict, config: CropConfig) -> CropWindow:
    """A crop box (``choose_box``) then the flip draw, in that order."""
    top, left = choose_box(rng, arrays, config)
    return CropWindow(top, left, bool(rng.random() < config.flip_p))


def apply_window(arrays: dict, window: CropWindow, crop: tuple[int, int]) -> dict:
    """Cut then maybe flip every array of ``arrays`` consistently."""
    out = {}
    for key, value in arrays.items():
        part = cut(value, (window.top, window.left), crop)
        out[key] = np.ascontiguousarray(part[:, ::-1] if window.flip else part)
    return out


def random_crop(arrays: dict, rng: np.random.Generator, config: CropConfig) -> dict:
    """Crop then maybe flip every array of ``arrays`` consistently."""
    return apply_window(arrays, draw_window(rng, arrays, config), config.crop)


def crop_frame(
    window: CropWindow, resized: tuple[int, int], original: tuple[int, int], crop: tuple[int, int]
) -> torch.Tensor:
    """(4,) float32 (ax, bx, ay, by): a crop pixel edge (x, y) lies at (ax·x + bx, ay·y + by) in
    the raw image (``original`` (H, W), before the resize to ``resized``); ax < 0 when flipped."""
    sy, sx = original[0] / resized[0], original[1] / resized[1]
    width = min(crop[1], resized[1] - window.left)  # unpadded crop width
    ax, bx = (-sx, sx * (window.left + width)) if window.flip else (sx, sx * window.left)
    return torch.tensor([ax, bx, sy, sy * window.top], dtype=torch.float32)


def boxes_in_image(boxes: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """Boxes (B, ..., 4) (x0, y0, x1, y1) in crop pixels → int64 boxes in each raw image's pixels
    through its ``crop_frame`` (B, 4) (rounded outwards); boxes with a negative entry stay -1."""
    frame = frame.to(boxes.device, torch.float64).view(-1, *[1] * (boxes.dim() - 2), 4)
    xs = boxes[..., 0::2].double() * frame[..., :1] + frame[..., 1:2]  # (B, ..., 2)
    ys = boxes[..., 1::2].double() * frame[..., 2:3] + frame[..., 3:4]
    out = torch.stack(
        [xs.amin(-1).floor(), ys.amin(-1).floor(), xs.amax(-1).ceil(), ys.amax(-1).ceil()], -1
    ).long()
    return torch.where((boxes < 0).any(-1, keepdim=True), -1, out)


def to_tensors(arrays: dict, config: CropConfig) -> dict[str, torch.Tensor]:
    """Normalise and pad a crop to ``config.crop``: image float32 (3, h, w), label int64 (h, w)."""
    height, width = arrays["image"].shape[:2]
    pad = (0, config.crop[1] - width, 0, config.crop[0] - height)  # right, bottom
    out = {"image": F.pad(normalize(arrays["image"]), pad, value=config.pad_image)}
    if "label" in arrays:
        label = torch.from_numpy(arrays["label"].astype(np.int64))
        out["label"] = F.pad(label, pad, value=config.pad_label)
    if "instance" in arrays:
        out["instance"] = F.pad(torch.from_numpy(arrays["instance"].astype(np.int64)), pad, value=0)
    return out


class Draw(NamedTuple):
    """One training draw: which image and the seed of its random crop / flip / RCS choices."""

    index: int
    """Raw dataset index (replaced by the sampler's pick when Rare Class Sampling is on)."""
    seed: tuple[int, ...]
    """Seeds ``np.random.default_rng`` for this draw."""


class TrainCrops(Dataset):
    """Training crops of a raw dataset; ``crops[key]`` is ``{"image", "label"?, "instance"?, "index",
    "crop_frame"}`` (``index``: the raw dataset item the crop came from; ``crop_frame``: where the
    crop's pixels lie in that item (see :func:`crop_frame`); both for the bank's provenance).

    ``key`` is a :class:`Draw` or an int ``i`` (= ``Draw(i, (i,))``, the same crop every time).
    With a :class:`RareClassSampler` the image is drawn by RCS and the crop re-drawn up to
    ``max_recrops`` times until it holds more than ``crop_min_pixels`` pixels of the drawn class.
    """

    def __init__(
        self,
        dataset: SegDataset,
        config: CropConfig | None = None,
        sampler: RareClassSampler | None = None,
    ) -> None:
        self.dataset = dataset
        self.config = config or CropConfig()
        self.sampler = sampler
        if not dataset.has_labels and (self.config.cat_max_ratio < 1 or sampler is not None):
            raise ValueError(
                f"{dataset!r} has no labels: use CropConfig(cat_max_ratio=1.0) and no "
                f"RareClassSampler for unlabelled images"
            )

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | Draw) -> dict[str, torch.Tensor]:
        draw = key if isinstance(key, Draw) else Draw(int(key), (int(key),))
        rng = np.random.default_rng(draw.seed)
        rare_class, index = self.sampler.sample(rng) if self.sampler else (None, draw.index)
        item = self.dataset[index]
        arrays = {k: v for k, v in item.items() if k != "name"}
        original = arrays["image"].shape[:2]
        arrays = resize_arrays(arrays, self.config.target_size(*original))
        window = draw_window(rng, arrays, self.config)
        crop = apply_window(arrays, window, self.config.crop)
        if rare_class is not None:
            crop, window = self._recrop(arrays, crop, window, rare_class, rng)
        frame = crop_frame(window, arrays["image"].shape[:2], original, self.config.crop)
        return {**to_tensors(crop, self.config), "index": torch.tensor(index), "crop_frame": frame}

    def _recrop(
        self,
        arrays: dict,
        crop: dict,
        window: CropWindow,
        rare_class: int,
        rng: np.random.Generator,
    ) -> tuple[dict, CropWindow]:
        """RCS: re-crop until the crop holds more than ``crop_min_pixels`` of ``rare_class``."""
        for _ in range(self.sampler.config.max_recrops):
            if (crop["label"] == rare_class).sum() > self.sampler.crop_min_pixels:
                break
            window = draw_window(rng, arrays, self.config)
            crop = apply_window(arrays, window, self.config.crop)
        return crop, window


class EvalImages(Dataset):
    """Evaluation items: ``image`` float32 (3, h, w) resized to fit ``resize`` (None: as is),
    ``label`` int64 (H, W) at the original size (predictions are resized back to it), ``size``
    int64 (2,) the original (H, W), and ``name``."""

    def __init__(self, dataset: SegDataset, resize: tuple[int, int] | None = (1024, 512)) -> None:
        self.dataset = dataset
        self.config = CropConfig(resize=resize)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        height, width = item["image"].shape[:2]
        size = self.config.target_size(height, width)
        image = resize_arrays({"image": item["image"]}, size)["image"]
        out = {
            "image": normalize(image),
            "size": torch.tensor([height, width]),
            "name": item["name"],
        }
        for key in ("label", "instance"):
            if key in item:
                out[key] = torch.from_numpy(item[key].astype(np.int64))
        return out


def draw_stream(
    num_items: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0
) -> Iterator[Draw]:
    """Endless draws of one DDP rank, from draw number ``start`` on.

    Epoch ``e`` shuffles all indices with ``(seed, e)`` (the same permutation on every rank, padded
    by wrapping to a multiple of ``world_size``) and rank ``r`` takes every ``world_size``-th index
    from position ``r``, so ranks see different images.  Draw ``n`` of rank ``r`` has seed
    ``(seed, r, n)``, so crops and RCS picks differ between ranks too.  Every draw is a function of
    its number, so the stream from ``start`` is the uninterrupted stream's tail (a resumed run).
    """
    if num_items < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"need num_items >= 1 and 0 <= rank < world_size, got {num_items}, {rank}, {world_size}"
        )
    per_rank = math.ceil(num_items / world_size)
    first_epoch, skip = divmod(start, per_rank)
    for epoch in itertools.count(first_epoch):
        order = np.random.default_rng((seed, epoch)).permutation(num_items)
        order = np.resize(order, per_rank * world_size)[rank::world_size]
        for position in range(skip if epoch == first_epoch else 0, per_rank):
            yield Draw(int(order[position]), (seed, rank, epoch * per_rank + position))


class _DrawSampler(Sampler):
    """An endless sampler yielding :func:`draw_stream`."""

    def __init__(self, num_items: int, seed: int, rank: int, world_size: int, start: int) -> None:
        self.args = (num_items, seed, rank, world_size, start)

    def __iter__(self) -> Iterator[Draw]:
        return draw_stream(*self.args)


def infinite_batches(
    dataset: TrainCrops,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 0,
    start_batch: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless collated batches of ``dataset`` for one DDP rank (see :func:`draw_stream`), from
    batch number ``start_batch`` on (the uninterrupted stream's tail).

    The batches are a pure function of (dataset, batch_size, seed, rank, world_size): the same
    with 0 or N ``workers``, and different between ranks. The loader's iterator is made here, not
    at the first batch: making it draws from torch's global generator, which a resumed run sets
    after this call (``dida.rng``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=_DrawSampler(len(dataset), seed, rank, world_size, start_batch * batch_size),
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    return iter(loader)
