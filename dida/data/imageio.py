"""Opening image files with the pixel count checked from the header, before any pixel is decoded.

PIL's own guard (``Image.MAX_IMAGE_PIXELS``) is process-wide and only raises at twice its value;
nothing here changes it. :func:`open_image` reads the header, compares width x height with the
caller's limit and only then hands back the (still undecoded) image.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

MAX_DATASET_PIXELS = 32_000_000
"""Pixel limit of a dataset image or label (16x a 2048x1024 Cityscapes frame)."""


class ImageSizeError(ValueError):
    """An image file's header declares more pixels than the caller allows."""


def too_large_message(name: str, size: tuple[int, int], max_pixels: int) -> str:
    w, h = size
    return (
        f"{name} is {w}x{h} = {w * h / 1e6:.1f} MP, above the {max_pixels / 1e6:g} MP limit; "
        "resize it (e.g. to 2048 pixels wide) and try again"
    )


def open_image(path: str | Path, max_pixels: int) -> Image.Image:
    """``Image.open(path)`` with ``width * height <= max_pixels`` checked from the header.

    Raises :class:`ImageSizeError` naming the file and the limit; ``FileNotFoundError`` and PIL's
    ``OSError`` / ``SyntaxError`` / ``ValueError`` for unreadable files pass through for the
    caller to word. The caller closes the image (use it as a context manager).
    """
    path = Path(path)
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as err:
        raise ImageSizeError(
            f"{path.name} declares far more than the {max_pixels / 1e6:g} MP limit (more than "
            "PIL's decompression-bomb maximum); resize it and try again"
        ) from err
    if im.size[0] * im.size[1] > max_pixels:
        im.close()
        raise ImageSizeError(too_large_message(path.name, im.size, max_pixels))
    return im
