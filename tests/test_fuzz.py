"""Property-based fuzzing of the file readers, label decoding and dataset folders, and the helpers
and file generators the other fuzz files (``test_fuzz_*.py``) share.

Every generated case must end in a result of the documented type and values, or in the project's
own error (here :class:`DatasetError`) naming the file — never another exception
type, and never a hang (:func:`within` interrupts a case that runs too long). The shared settings
(:data:`FUZZ`) are reproducible (``derandomize``); each file's ``EXAMPLES`` says how many cases
its tests generate (over 1,000 per run in all).
"""

from __future__ import annotations

import io
import os
import signal
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_datasets import CS_TRAIN, SYNTHIA_TRAIN, _write_png16

from dida.data import datasets as ds
from dida.data.datasets import DatasetError, build_dataset, compute_class_stats, validate

SCALE = float(os.environ.get("DIDA_FUZZ_SCALE", "1"))
"""Multiplies every test's case count (e.g. ``DIDA_FUZZ_SCALE=20`` for a deep run); above 1 the
cases are drawn at random instead of derandomized."""

FUZZ = settings(
    deadline=None,
    derandomize=SCALE <= 1,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Reproducible settings of every fuzz test; each sets its case count with :func:`fuzz`."""

EXAMPLES = {"files": 300, "round_trip": 150, "labels": 200, "datasets": 150}
"""Generated cases per test of this file."""


def fuzz(examples: int) -> settings:
    """:data:`FUZZ` with ``examples`` cases (times :data:`SCALE`)."""
    return settings(FUZZ, max_examples=max(1, round(examples * SCALE)))


class Hang(BaseException):
    """A case ran past its time limit (a BaseException, so no ``except Exception`` hides it)."""


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in the body when it runs longer than ``seconds`` (main thread only)."""

    def interrupt(*_: Any) -> None:
        raise Hang(f"no result within {seconds} s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def settle(call: Callable[[], Any], errors: type | tuple[type, ...], *names: str) -> Any:
    """``call()``'s result, or the raised ``errors`` instance after checking that its message
    names each of ``names``; any other exception propagates (and fails the case)."""
    try:
        with within(20):
            result = call()
    except errors as err:
        assert all(name in str(err) for name in names), (str(err), names)
        event(f"refused: {type(err).__name__}")
        return err
    event(f"accepted: {type(result).__name__}")
    return result


# --- generated files -------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def crafted_png(
    width: int, height: int, depth: int = 8, color: int = 0, interlace: int = 0, rows: bytes = b""
) -> bytes:
    """A PNG whose header declares anything (sizes up to 2^32 - 1, any depth / colour type)."""
    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, interlace)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
    return PNG_SIGNATURE + body + chunk(b"IEND", b"")


def _pil_formats() -> list[tuple[str, str]]:
    """Every (format, mode) pair this PIL can write and read back (150 with Pillow 12)."""
    pairs = []
    formats = ["PNG", "TIFF", "BMP", "GIF", "JPEG", "WEBP", "PPM", "TGA", "ICO", "PCX", "SGI"]
    formats += ["IM", "QOI", "JPEG2000", "DDS", "XBM", "MSP", "SPIDER", "BLP", "ICNS"]
    for fmt in formats:
        for mode in ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK"):
            pairs += [(fmt, mode)] if _writable(fmt, mode) else []
        for mode in ("YCbCr", "LAB", "HSV", "I", "I;16", "I;16L", "I;16B", "F"):
            pairs += [(fmt, mode)] if _writable(fmt, mode) else []
    return pairs


def _writable(fmt: str, mode: str) -> bool:
    try:
        encode(Image.new(mode, (33, 33)), fmt)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    Image.open(io.BytesIO(out.getvalue())).load()
    return out.getvalue()


PIL_FORMATS = _pil_formats()


@st.composite
def pil_files(draw: st.DrawFn, max_side: int = 80) -> tuple[bytes, str, str]:
    """(file bytes, format, mode) of a random image in any format PIL writes, in any mode."""
    fmt, mode = draw(st.sampled_from(PIL_FORMATS))
    width, height = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    pixels = len(Image.new(mode, (width, height)).tobytes())
    seed = draw(st.integers(0, 2**32 - 1))
    data = np.random.default_rng(seed).integers(0, 256, pixels, dtype=np.uint8).tobytes()
    try:
        return encode(Image.frombytes(mode, (width, height), data), fmt), fmt, mode
    except (OSError, ValueError):  # e.g. ICO, ICNS and DDS refuse some sizes: a plain PNG instead
        return encode(Image.frombytes(mode, (width, height), data), "TIFF"), "TIFF", mode


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    """A valid file of any format cut at a random byte."""
    data = draw(pil_files())[0]
    return data[: draw(st.integers(0, len(data) - 1))]


@st.composite
def crafted(draw: st.DrawFn) -> bytes:
    """PNGs with lying headers: huge or zero sizes, any depth / colour type, short pixel data."""
    side = st.one_of(st.integers(0, 70), st.integers(0, 2**32 - 1), st.just(20_000))
    depth = st.one_of(st.sampled_from([1, 2, 4, 8, 16]), st.integers(0, 255))
    color = st.one_of(st.sampled_from([0, 2, 3, 4, 6]), st.integers(0, 255))
    rows = st.one_of(st.binary(max_size=300), st.integers(0, 20_000).map(bytes))
    return crafted_png(
        draw(side), draw(side), draw(depth), draw(color), draw(st.integers(0, 2)), draw(rows)
    )


TRUNCATED_QOI = b"qoif\x00\x00\x00 \x00\x00\x00 \x03"
"""A QOI header with no pixel data: PIL's decoder raises IndexError while loading it."""

ANY_FILE = st.one_of(
    st.just(b""),
    st.binary(max_size=600),
    st.binary(max_size=600).map(lambda b: PNG_SIGNATURE + b),
    truncated(),
    crafted(),
    pil_files().map(lambda f: f[0]),
)
"""Random bytes, zero-size files, truncated and header-crafted PNGs, and valid files of every
format and mode."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_the_generators_cover_every_format_and_mode() -> None:
    modes = {mode for _, mode in PIL_FORMATS}
    assert len(PIL_FORMATS) >= 100 and len({fmt for fmt, _ in PIL_FORMATS}) >= 15
    assert {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I", "I;16", "F"} <= modes


# --- the file readers --------------------------------------------------------------------------

READERS = {
    ds.read_image: (np.uint8, 3),
    ds.read_8bit_label: (np.uint8, 2),
    ds.read_first_channel: (np.uint16, 2),
    ds.read_instance: (np.int32, 2),
}


@fuzz(EXAMPLES["files"])
@given(data=ANY_FILE)
@example(data=crafted_png(20_000, 20_000, 8, 2, 0, bytes(20_000)))
@example(data=b"")
@example(data=TRUNCATED_QOI)
@example(data=encode(Image.new("L", (128, 128)), "ICNS"))  # RGBA when opened, L when loaded
def test_readers_return_arrays_or_name_the_file(folder: Path, data: bytes) -> None:
    path = folder / "file.png"
    path.write_bytes(data)
    for reader, (dtype, ndim) in READERS.items():
        result = settle(lambda r=reader: r(path), DatasetError, str(path))
        assert isinstance(result, DatasetError) or (result.dtype, result.ndim) == (dtype, ndim)


@st.composite
def valid_files(draw: st.DrawFn) -> tuple[Callable[[Path], np.ndarray], np.ndarray, bytes]:
    """(reader, the array it must return, PNG bytes) for every mode and depth a reader accepts."""
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    kind = draw(st.sampled_from(["RGB", "RGBA", "L", "P", "RGB16", "RGBA16", "I;16"]))
    values = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind in ("RGB16", "RGBA16"):
        array = values.integers(0, 65536, (h, w, 3 + (kind == "RGBA16")), dtype=np.uint16)
        return ds.read_first_channel, array[..., 0], png16(array)
    if kind == "I;16":
        array = values.integers(0, 65536, (h, w), dtype=np.uint16)
        return ds.read_instance, array.astype(np.int32), encode(Image.fromarray(array), "PNG")
    channels = {"RGB": (3,), "RGBA": (4,)}.get(kind, ())
    array = values.integers(0, 256, (h, w, *channels), dtype=np.uint8)
    image = Image.fromarray(array, "L" if kind == "P" else kind)
    if kind == "P":  # a full 256-colour palette, so the writer keeps 8 bits per index
        image = Image.frombytes("P", (w, h), array.tobytes())
        image.putpalette(values.integers(0, 256, 768, dtype=np.uint8).tobytes())
    reader = ds.read_image if channels else ds.read_8bit_label
    return reader, array[..., :3] if channels else array, encode(image, "PNG")


def png16(array: np.ndarray) -> bytes:
    """A 16-bit RGB(A) PNG of a uint16 (H, W, 3 or 4) array (filter 0; test_datasets has another
    encoder using all five filters)."""
    h, w, channels = array.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)
    return crafted_png(w, h, 16, {3: 2, 4: 6}[channels], 0, rows)


@fuzz(EXAMPLES["round_trip"])
@given(case=valid_files())
def test_valid_files_read_back_exactly(folder: Path, case: tuple) -> None:
    reader, expected, data = case
    path = folder / "valid.png"
    path.write_bytes(data)
    np.testing.assert_array_equal(reader(path), expected)


# --- label decoding --------------------------------------------------------------------------

LABEL_FORMATS = {
    "train": (ds.TRAIN_ID_FORMAT, {i: i for i in [*range(19), 255]}, np.uint8),
    "cityscapes": (ds.CITYSCAPES_ID_FORMAT, {i: CS_TRAIN.get(i, 255) for i in range(34)}, np.uint8),
    "synthia": (ds.SYNTHIA_ID_FORMAT, {i: SYNTHIA_TRAIN.get(i, 255) for i in range(23)}, np.uint16),
}


@st.composite
def label_arrays(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    """(format name, stored values) mostly valid, with unknown IDs mixed in."""
    name = draw(st.sampled_from(sorted(LABEL_FORMATS)))
    _, table, dtype = LABEL_FORMATS[name]
    value = st.one_of(st.sampled_from(sorted(table)), st.integers(0, np.iinfo(dtype).max))
    shape = st.tuples(st.integers(1, 12), st.integers(1, 12))
    return name, draw(hnp.arrays(dtype, shape, elements=value))


@fuzz(EXAMPLES["labels"])
@given(case=label_arrays())
@example(case=("synthia", np.array([[65535, 3]], np.uint16)))
@example(case=("cityscapes", np.array([[34, 7]], np.uint8)))
def test_label_ids_map_to_train_ids_or_name_unknown_ids(folder: Path, case: tuple) -> None:
    name, values = case
    label_format, table, _ = LABEL_FORMATS[name]
    path = folder / f"label_{name}.png"
    if name == "synthia":  # 16-bit RGB, class in channel 0, noise in the others
        noise = np.random.default_rng(0).integers(0, 65536, (*values.shape, 2), dtype=np.uint16)
        _write_png16(path, np.dstack([values, noise]))
    else:
        Image.fromarray(values, "L").save(path)
    unknown = sorted(set(np.unique(values).tolist()) - set(table))
    result = settle(lambda: label_format.decode(path), DatasetError, str(path))
    if unknown:
        assert isinstance(result, DatasetError) and f"[{unknown[0]}" in str(result)
    else:
        expected = np.vectorize(table.get, otypes=[np.uint8])(values)
        np.testing.assert_array_equal(result, expected)


# --- dataset folders -------------------------------------------------------------------------

LAYOUTS = {
    "gta5": ("images/{}.png", ["labels/{}_labelTrainIds.png", "labels/{}.png"]),
    "synthia": ("RGB/{}.png", ["GT/LABELS/{}_labelTrainIds.png", "GT/LABELS/{}.png"]),
    "cityscapes": (
        "leftImg8bit/train/c/{}_leftImg8bit.png",
        ["gtFine/train/c/{}_gtFine_labelTrainIds.png", "gtFine/train/c/{}_gtFine_labelIds.png"],
    ),
}


@st.composite
def image_or_junk(draw: st.DrawFn, mode: str, size: tuple[int, int]) -> bytes:
    """A valid ``mode`` PNG of ``size`` (values 0-40, so labels are mostly valid), another size,
    or any file."""
    kind = draw(st.sampled_from(["valid", "valid", "valid", "resized", "junk"]))
    if kind == "junk":
        return draw(ANY_FILE)
    w, h = size if kind == "valid" else (size[0] + 1, size[1])
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 41, (h, w, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels).convert(mode), "PNG")


@st.composite
def dataset_trees(draw: st.DrawFn) -> tuple[str, dict[str, bytes]]:
    """(kind, {relative path: bytes}) of a small dataset tree with any mix of label variants,
    missing files, wrong sizes and junk."""
    kind = draw(st.sampled_from(sorted(LAYOUTS)))
    image, labels = LAYOUTS[kind]
    size = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    files = {}
    for i in range(draw(st.integers(0, 3))):
        name = f"a_{i:05d}"
        files[image.format(name)] = draw(image_or_junk("RGB", size))
        for pattern in labels:
            if draw(st.booleans()):
                files[pattern.format(name)] = draw(image_or_junk("L", size))
    return kind, files


@fuzz(EXAMPLES["datasets"])
@given(tree=dataset_trees(), require_labels=st.booleans())
def test_dataset_folders_load_or_name_the_problem(
    tmp_path_factory: pytest.TempPathFactory, tree: tuple, require_labels: bool
) -> None:
    kind, files = tree
    root = tmp_path_factory.mktemp(kind)
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    dataset = settle(lambda: build_dataset(kind, root, "train", require_labels), DatasetError)
    if isinstance(dataset, DatasetError):
        return
    for index in range(len(dataset)):
        _check_item(dataset, index)
    checked = settle(lambda: validate(dataset), DatasetError, str(root))
    assert isinstance(checked, DatasetError) or checked == len(dataset)
    if dataset.has_labels:
        stats = settle(lambda: compute_class_stats(dataset), DatasetError, str(root))
        assert isinstance(stats, DatasetError) or len(stats) == len(dataset)


def _check_item(dataset: ds.SegDataset, index: int) -> None:
    """Item ``index`` and its header size agree, or raise DatasetError naming the item."""
    name = dataset.samples[index].name
    item = settle(lambda: dataset[index], DatasetError, name)
    size = settle(lambda: dataset.image_size(index), DatasetError, name)
    if not isinstance(item, DatasetError):
        assert item["image"].shape[2] == 3 and size == item["image"].shape[:2]
        assert item.get("label", item["image"][..., 0]).shape == size
