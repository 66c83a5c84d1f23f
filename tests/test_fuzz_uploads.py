"""Property-based fuzzing of uploads (random bytes, every PIL format and mode, tiny and huge
sizes, alpha) and the PNG decompression bombs refused by uploads and dataset readers alike.

Each case ends in a uint8 RGB image within the upload limits or an :class:`UploadError` naming
the file; settings, helpers and file generators are ``test_fuzz``'s.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image
from test_fuzz import ANY_FILE, READERS, TRUNCATED_QOI, crafted_png, fuzz, pil_files, settle

from dida.data.datasets import DatasetError
from dida.studio import UploadError, load_upload

EXAMPLES = {"uploads": 300}
"""Generated cases per test of this file."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_uploads")


# --- uploads ---------------------------------------------------------------------------------


@fuzz(EXAMPLES["uploads"])
@given(
    data=st.one_of(ANY_FILE, pil_files(1300).map(lambda f: f[0])),
    name=st.sampled_from(["upload.png", "photo.jpg", "x"]),
)
@example(data=crafted_png(40_000, 400, 8, 2), name="wide.png")
@example(data=TRUNCATED_QOI, name="upload.png")
def test_uploads_become_rgb_or_say_why(folder: Path, data: bytes, name: str) -> None:
    path = folder / name
    path.write_bytes(data)
    result = settle(lambda: load_upload(path), UploadError, name)
    if isinstance(result, UploadError):
        return
    image, notes = result
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert min(image.shape[:2]) >= 32 and max(image.shape[:2]) <= 1024
    assert all(isinstance(n, str) and name in n for n in notes)


# --- decompression bombs ---------------------------------------------------------------------


@pytest.mark.parametrize("mega_pixels", [400, 100, 40])
def test_png_bombs_are_refused_from_the_header(folder: Path, mega_pixels: int) -> None:
    """A few-KB PNG declaring 20000x20000 (and 100 or 40 MP) is refused before any decode."""
    side = int((mega_pixels * 1e6) ** 0.5)
    bomb = folder / f"bomb{mega_pixels}.png"
    bomb.write_bytes(crafted_png(side, side, 8, 2, 0, bytes(3 * side + 1) * 50))
    assert bomb.stat().st_size < 5_000
    limit_before = Image.MAX_IMAGE_PIXELS
    for reader in READERS:
        start = time.perf_counter()
        with pytest.raises(DatasetError, match=rf"{bomb.name}.*32 MP limit"):
            reader(bomb)
        assert time.perf_counter() - start < 0.5
    start = time.perf_counter()
    with pytest.raises(UploadError, match=rf"{bomb.name}.*16 MP limit"):
        load_upload(bomb)
    assert time.perf_counter() - start < 0.5
    assert limit_before == Image.MAX_IMAGE_PIXELS
