"""A SynthCity val split read while it is written: the same items in the same order as the finished
split, each read waiting for its files, a clear error if the generator stopped first; the Studio
opens on it without waiting and says the rare classes are not known yet."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dida.data.datasets import CityscapesDataset, DatasetError
from dida.data.pending import PendingSplit
from dida.data.synthcity import ensure_synthcity, synthcity_roots
from dida.studio.images import ValImages, open_data_root
from dida.studio.work import Tasks


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthcity(tmp_path_factory.mktemp("pending") / "tiny", "tiny", ("val",))


def _copy(tree: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tree, tmp_path / "tiny"))


def test_the_pending_split_lists_the_finished_split_in_its_order(tree: Path) -> None:
    pending = PendingSplit(tree, "val", writing=lambda: False)
    found = CityscapesDataset(synthcity_roots(tree)[1], "val")
    assert [s.name for s in pending.samples] == [s.name for s in found.samples]
    assert pending.samples == found.samples and pending.label_format == found.label_format
    for key in ("image", "label", "instance"):
        assert np.array_equal(pending[3][key], found[3][key])
    assert pending.image_size(0) == found.image_size(0)
    assert not list(tree.rglob("*.part"))  # every file was written aside and renamed


def test_a_read_waits_for_files_being_written(tree: Path, tmp_path: Path) -> None:
    root = _copy(tree, tmp_path)
    pending = PendingSplit(root, "val", writing=lambda: True, timeout=30)
    sample, aside = pending.samples[2], tmp_path / "aside"
    aside.mkdir()
    files = [sample.image, sample.instance, sample.label]
    for f in files:
        shutil.move(f, aside / f.name)

    def write_back() -> None:
        time.sleep(0.3)
        for f in files:
            shutil.move(aside / f.name, f)

    threading.Thread(target=write_back).start()
    start = time.monotonic()
    item = pending[2]
    assert time.monotonic() - start >= 0.25 and item["name"] == sample.name
    assert item["label"].shape == item["image"].shape[:2]


def test_a_stopped_generator_is_an_error_that_says_what_to_do(tree: Path, tmp_path: Path) -> None:
    root = _copy(tree, tmp_path)
    pending = PendingSplit(root, "val", writing=lambda: False)
    pending.samples[1].label.unlink()
    with pytest.raises(DatasetError, match="stopped before writing it; restart the app"):
        pending.read_label(1)
    with pytest.raises(DatasetError, match="no synthcity.json yet"):
        PendingSplit(tmp_path / "nothing", "val", writing=lambda: True)


def test_the_store_opens_a_split_being_written_without_waiting(tree: Path, tmp_path: Path) -> None:
    root = _copy(tree, tmp_path)
    writing = threading.Event()
    writing.set()
    data = open_data_root(root, "tiny", tmp_path / "cache", writing=writing.is_set)
    store = ValImages(data, Tasks("test-pending"))
    assert isinstance(store.val, PendingSplit) and data.writing is not None
    assert store.known_rare_classes() is None  # not known yet: computed in the background
    writing.clear()
    assert store.known_rare_classes() == store.rare_classes()
    done = ValImages(open_data_root(root, "tiny", tmp_path / "cache"), Tasks("test-done"))
    assert isinstance(done.val, CityscapesDataset) and done.data.writing is None
