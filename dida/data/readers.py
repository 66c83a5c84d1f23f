"""Reading one dataset file: images, label PNGs (8-bit, 16-bit SYNTHIA), instance maps, and the
label formats that turn stored values into train IDs.

Every reader checks the pixel count from the header before decoding (``MAX_DATASET_PIXELS``) and
raises :class:`DatasetError` naming the file for anything it cannot use: a missing, truncated,
corrupt, oversized or wrong-mode file, or a label value its format does not know.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dida.data.classes import (
    CITYSCAPES_TO_TRAIN,
    IGNORE_INDEX,
    NUM_CLASSES,
    SYNTHIA_TO_TRAIN,
)
from dida.data.imageio import MAX_DATASET_PIXELS, ImageSizeError, open_image


class DatasetError(ValueError):
    """A dataset folder or file is missing, unreadable or holds unexpected values."""


_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError)
"""What PIL raises for truncated or corrupt files (IndexError: some plugins' short tables)."""


@contextmanager
def _opened(path: Path, what: str) -> Iterator[Image.Image]:
    """The undecoded image at ``path`` (size checked); any failure inside becomes a DatasetError
    naming the file and what to do."""
    try:
        with open_image(path, MAX_DATASET_PIXELS) as im:
            yield im
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} file not found") from None
    except ImageSizeError as err:
        raise DatasetError(f"{path}: {what}: {err}") from None
    except _UNREADABLE as err:
        raise DatasetError(
            f"{path}: cannot decode {what} ({type(err).__name__}: {err}); the file is truncated "
            f"or corrupt, copy or convert it again"
        ) from err


def _decode(
    path: Path, modes: tuple[str, ...], what: str, rawmode: str | None = None
) -> np.ndarray:
    """Fully decode a PNG whose PIL mode must be one of ``modes``; errors name the file."""
    with _opened(path, what) as im:
        _check_mode(im, modes, path, what)
        if rawmode is not None:
            im.tile = [(*im.tile[0][:3], rawmode)]
        im.load()
        _check_mode(im, modes, path, what)  # loading changes the mode of some formats (ICNS)
        return np.array(im)


def _check_mode(im: Image.Image, modes: tuple[str, ...], path: Path, what: str) -> None:
    if im.mode not in modes:
        raise DatasetError(
            f"{path}: {what} has PIL mode {im.mode!r}, expected one of {list(modes)}; "
            f"re-export it in the dataset's original format"
        )


def _png_rawmode(path: Path) -> str:
    """The PIL raw mode of a PNG's pixel data, e.g. 'RGB;16B' for 16-bit big-endian RGB."""
    with _opened(path, "label") as im:
        args = im.tile[0][3] if im.tile else ""
    return args[0] if isinstance(args, tuple) else str(args)


def read_size(path: Path, what: str = "image") -> tuple[int, int]:
    """(H, W) of an image file from its header (size-checked, nothing decoded)."""
    with _opened(path, what) as im:
        return im.height, im.width


def read_image(path: Path) -> np.ndarray:
    """An RGB image as uint8 (H, W, 3); an RGBA file loses its alpha channel."""
    image = _decode(path, ("RGB", "RGBA"), "image")
    return np.ascontiguousarray(image[..., :3])


def read_8bit_label(path: Path) -> np.ndarray:
    """The stored values of an 8-bit 'L' or 'P' label PNG (palette indices of 'P'), uint8 (H, W)."""
    return _decode(path, ("L", "P"), "label")


# PIL decodes 16-bit RGB(A) to 8 bits by keeping each big-endian sample's first (high) byte; its
# little-endian unpacker keeps the second byte instead: for this big-endian data, the low byte.
_LOW_BYTE_RAWMODE = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}


def read_first_channel(path: Path) -> np.ndarray:
    """Channel 0 (R as PIL orders it; OpenCV's last) of an 8- or 16-bit RGB(A) PNG, uint16 (H, W).

    PIL cannot return 16-bit RGB samples, so a 16-bit file is decoded twice by PIL's own PNG
    decoder: once for the high bytes and once, with the little-endian raw mode, for the low bytes.
    """
    high = _decode(path, ("RGB", "RGBA"), "label")[..., 0].astype(np.uint16)
    rawmode = _png_rawmode(path)
    if rawmode not in _LOW_BYTE_RAWMODE:
        return high
    low = _decode(path, ("RGB", "RGBA"), "label", _LOW_BYTE_RAWMODE[rawmode])[..., 0]
    return (high << 8) | low


def read_instance(path: Path) -> np.ndarray:
    """A 16-bit Cityscapes instance-ID PNG (``label_id * 1000 + k``) as int32 (H, W)."""
    return _decode(path, ("I;16", "I;16B", "I;16L", "I"), "instance map").astype(np.int32)


@dataclass(frozen=True)
class LabelFormat:
    """How a label file stores classes and how its values become train IDs."""

    name: str
    """Name used in messages, e.g. 'Cityscapes label IDs'."""
    valid: tuple[int, ...]
    """The stored values such a file may contain."""
    to_train: np.ndarray | None
    """Lookup table stored value -> train ID; None when the file already holds train IDs."""
    read: Callable[[Path], np.ndarray]
    """Reads the stored values of one file as an integer (H, W) array."""

    def decode(self, path: Path) -> np.ndarray:
        """The file's train IDs, uint8 (H, W); raises naming the file on any unexpected value."""
        values = self.read(path)
        present = np.flatnonzero(np.bincount(values.ravel()))
        bad = sorted(set(present.tolist()) - set(self.valid))
        if bad:
            raise DatasetError(
                f"{path}: unexpected label values {bad[:10]} for {self.name}; valid values are "
                f"{_ranges(self.valid)}; is this the right dataset kind / label file?"
            )
        return values.astype(np.uint8) if self.to_train is None else self.to_train[values]


def _ranges(values: Sequence[int]) -> str:
    """'0-18, 255' style summary of a sorted integer list."""
    spans, start, prev = [], values[0], values[0]
    for value in [*values[1:], None]:
        if value != prev + 1:
            spans.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = value
        prev = value
    return ", ".join(spans)


TRAIN_ID_FORMAT = LabelFormat(
    "train IDs", (*range(NUM_CLASSES), IGNORE_INDEX), None, read_8bit_label
)
CITYSCAPES_ID_FORMAT = LabelFormat(
    "Cityscapes label IDs", tuple(range(34)), CITYSCAPES_TO_TRAIN, read_8bit_label
)
SYNTHIA_ID_FORMAT = LabelFormat(
    "SYNTHIA label IDs", tuple(range(23)), SYNTHIA_TO_TRAIN, read_first_channel
)
