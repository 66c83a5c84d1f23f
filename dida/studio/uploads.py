"""Uploaded images: validated, converted to uint8 RGB, downscaled, and keyed by their pixels."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from dida.data.imageio import ImageSizeError, open_image

MAX_UPLOAD_PIXELS = 16_000_000
"""Uploads above this many pixels are refused (decompression bombs, memory)."""
MAX_UPLOAD_SIDE = 1024
"""Uploads are downscaled so their longer side is at most this (inference time)."""
MIN_UPLOAD_SIDE = 32
"""The encoder needs at least 32 x 32 pixels."""


class UploadError(ValueError):
    """An uploaded file cannot be used as an image; the message says why and what to do."""


def load_upload(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read an uploaded file as uint8 RGB (H, W, 3) → (image, notes on the conversions made).

    Grayscale and palette images are converted to RGB, RGBA loses its alpha over black, images whose
    longer side exceeds ``MAX_UPLOAD_SIDE`` are downscaled. Raises :class:`UploadError` for a file that
    is not an image, is larger than ``MAX_UPLOAD_PIXELS`` or smaller than 32 x 32.
    """
    path = Path(path)
    try:
        with open_image(path, MAX_UPLOAD_PIXELS) as im:
            image, notes = _to_rgb(im, path.name)
    except ImageSizeError as err:
        raise UploadError(str(err)) from None
    except (OSError, SyntaxError, ValueError, IndexError) as err:  # IndexError: truncated QOI
        if isinstance(err, UploadError):
            raise
        raise UploadError(
            f"{path.name} is not a readable image ({type(err).__name__}: {err}); upload a PNG or JPEG"
        ) from err
    return image, notes


def _to_rgb(im: Image.Image, name: str) -> tuple[np.ndarray, list[str]]:
    w, h = im.size
    if min(w, h) < MIN_UPLOAD_SIDE:
        raise UploadError(f"{name} is {w}x{h}; the model needs at least 32x32 pixels")
    notes = []
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        notes.append(f"{name}: alpha channel dropped (transparent pixels shown over black)")
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    elif im.mode not in ("RGB",):
        notes.append(f"{name}: {im.mode} image converted to RGB")
    im = im.convert("RGB")
    if max(w, h) > MAX_UPLOAD_SIDE:
        scale = MAX_UPLOAD_SIDE / max(w, h)
        size = (max(MIN_UPLOAD_SIDE, round(w * scale)), max(MIN_UPLOAD_SIDE, round(h * scale)))
        im = im.resize(size, Image.Resampling.BILINEAR)
        notes.append(f"{name}: downscaled from {w}x{h} to {size[0]}x{size[1]}")
    return np.asarray(im, dtype=np.uint8).copy(), notes


def upload_key(image: np.ndarray) -> str:
    """``"upload:<hash>"`` of an image's pixels (the same picture gets the same key)."""
    digest = hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()[:12]
    return f"upload:{digest}"
