"""The app on a Cityscapes-layout tree with an official (mmcv-style) checkpoint: it starts, shows
predictions, caches outside the tree, never writes into it, and says when overlaps are unavailable.

The tree is built here (a few 64 x 128 images in ``leftImg8bit`` / ``gtFine``, with and without
``instanceIds``); the checkpoint is a tiny mit_b0 model saved the way mmcv's ``save_checkpoint``
does (see tests/test_official_checkpoints.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_official_checkpoints import save_mmcv_checkpoint, tiny_segmentor

from app.views import compare_picker, longtail
from app.views.compare_picker import filtered_indices
from dida.data.datasets import DatasetError
from dida.data.overlap import NO_INSTANCES
from dida.studio import Studio
from dida.studio.images import foreign_cache_dir, open_data_root, open_source

ROAD, SKY, PERSON, CAR = 7, 23, 24, 26
"""Cityscapes label IDs."""


def write_cityscapes(root: Path, count: int = 3, instances: bool = True) -> Path:
    """A tiny Cityscapes val split: a car touching a person on road below sky, per image."""
    rng = np.random.default_rng(0)
    for i in range(count):
        stem = f"frankfurt_{i:06d}_000019"
        img_dir, gt_dir = root / "leftImg8bit/val/frankfurt", root / "gtFine/val/frankfurt"
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
        Image.fromarray(image).save(img_dir / f"{stem}_leftImg8bit.png")
        label = np.full((64, 128), ROAD, np.uint8)
        label[:20] = SKY
        label[30:50, 20:60], label[30:50, 60:70] = CAR, PERSON
        Image.fromarray(label).save(gt_dir / f"{stem}_gtFine_labelIds.png")
        if instances:
            inst = label.astype(np.uint16)
            inst[label == CAR], inst[label == PERSON] = CAR * 1000, PERSON * 1000
            Image.fromarray(inst).save(gt_dir / f"{stem}_gtFine_instanceIds.png")
    return root


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and mtime (folders included)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("official")
    return save_mmcv_checkpoint(
        folder / "dida_gta2cs_mitb0.pth", tiny_segmentor(0), tiny_segmentor(1)
    )


def open_studio(root: Path, checkpoint: Path, cache: Path, **kw) -> Studio:
    return Studio(
        root, [cache / "no-runs"], None, checkpoints=[str(checkpoint)], cache_dir=cache, **kw
    )


def test_cityscapes_tree_starts_predicts_and_stays_untouched(tmp_path, checkpoint):
    root = write_cityscapes(tmp_path / "cityscapes")
    before = listing(root)
    studio = open_studio(root, checkpoint, tmp_path / "cache")
    try:
        assert studio.data.kind == "cityscapes" and not studio.data.owned
        run_id = "official:dida_gta2cs_mitb0"
        assert [r.run_id for r in studio.runs(with_model=True)] == [run_id]
        assert studio.run(run_id).method == "dida" and studio.run(run_id).iteration == 40000
        items = studio.val_items()
        assert [i.name for i in items] == [f"frankfurt_{i:06d}_000019" for i in range(3)]
        assert set(items[0].classes) == {0, 10, 11, 13}  # road, sky, person, car (train IDs)
        prediction = studio.predict(run_id, 0)
        assert prediction.labels.shape == (64, 128) and prediction.probs.shape == (19, 64, 128)
        np.testing.assert_allclose(
            prediction.probs.astype(np.float32).sum(0), 1.0, atol=19 * 0.5 / 255
        )  # 1/255 steps
        assert set(studio.image_iou([run_id], 0)[run_id]) >= {"road", "car"}
        studio.thumbnail(0)
        assert studio.index_overlaps(wait=True) in ("done", "running", "queued")
        assert studio.overlap_flags() == [True, True, True]
        keep, note = filtered_indices(studio, True, "all")
        assert keep == [0, 1, 2] and note == ""
        assert studio.target_stats()
    finally:
        studio.shutdown()
    assert listing(root) == before, "the app wrote into a Cityscapes tree"
    cache = tmp_path / "cache"
    assert (cache / "thumbs").is_dir() and (cache / "overlap_index.json").is_file()
    assert list((cache / "predictions").rglob("*.npz")) and (cache / "val-stats").is_dir()


def test_results_come_back_from_disk_keyed_by_checkpoint(tmp_path, checkpoint, monkeypatch):
    root = write_cityscapes(tmp_path / "cityscapes", count=1)
    first = open_studio(root, checkpoint, tmp_path / "cache")
    run_id = "official:dida_gta2cs_mitb0"
    expected = first.predict(run_id, 0)
    first.shutdown()
    second = open_studio(root, checkpoint, tmp_path / "cache")
    monkeypatch.setattr(second.catalog, "model", lambda rid: pytest.fail("recomputed"))
    again = second.predict(run_id, 0)
    np.testing.assert_array_equal(again.labels, expected.labels)
    np.testing.assert_array_equal(again.probs, expected.probs)
    np.testing.assert_allclose(again.features.numpy(), expected.features.numpy(), atol=1e-2)
    second.shutdown()
    teacher = open_studio(root, Path(f"{checkpoint}:teacher"), tmp_path / "cache")
    monkeypatch.setattr(teacher.catalog, "model", lambda rid: pytest.fail("recomputed"))
    with pytest.raises(pytest.fail.Exception, match="recomputed"):  # another segmentor: own key
        teacher.predict("official:dida_gta2cs_mitb0:teacher", 0)
    teacher.shutdown()


def test_no_instance_ids_says_unavailable_without_a_background_crash(tmp_path, checkpoint):
    root = write_cityscapes(tmp_path / "cityscapes", instances=False)
    before = listing(root)
    studio = open_studio(root, checkpoint, tmp_path / "cache")
    try:
        assert studio.overlap_state() == NO_INSTANCES
        assert studio.index_overlaps() == NO_INSTANCES
        assert studio.worker.state("overlap-index") is None  # nothing started, nothing crashed
        assert studio.overlap_flags() is None
        _, _, status, timer, pairs, _ = compare_picker.gallery(
            studio, True, "all", "file", None, None
        )
        assert status == f"3 of 3 images — {NO_INSTANCES}" and timer.active is False
        assert pairs["choices"] == [(f"any pair type ({NO_INSTANCES})", "any")]
        for _ in range(3):  # every filter change answers the same, at once
            keep, note = filtered_indices(studio, True, "all")
            assert note == NO_INSTANCES == "unavailable: this dataset has no instanceIds"
            assert keep == [0, 1, 2]
        assert studio.worker.state("overlap-index") is None
    finally:
        studio.shutdown()
    assert listing(root) == before


def test_default_cache_is_outside_the_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = write_cityscapes(tmp_path / "cs", count=1)
    data = open_data_root(root)
    assert data.cache_dir == foreign_cache_dir(root)
    assert data.cache_dir.parent == tmp_path / "xdg" / "dida-studio"
    assert data.cache_dir.name.startswith("cs-") and root not in data.cache_dir.parents
    other = write_cityscapes(tmp_path / "elsewhere" / "cs", count=1)
    assert foreign_cache_dir(other) != data.cache_dir  # same name, other path: other cache


def test_other_folders_are_refused_with_the_layouts_named(tmp_path):
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "notes.txt").write_text("x")
    before = listing(odd)
    with pytest.raises(DatasetError, match="neither a SynthCity root .* nor a Cityscapes root"):
        open_data_root(odd)
    assert listing(odd) == before
    with pytest.raises(DatasetError, match="not a source dataset"):
        open_source(odd)


def test_source_is_explicit_and_named(tmp_path, checkpoint):
    root = write_cityscapes(tmp_path / "cs", count=1)
    gta = tmp_path / "gta"
    (gta / "images").mkdir(parents=True)
    (gta / "labels").mkdir()
    label = np.full((32, 64), ROAD, np.uint8)
    label[:8] = SKY
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(gta / "images/00001.png")
    Image.fromarray(label).save(gta / "labels/00001.png")
    before = listing(gta)
    plain = open_studio(root, checkpoint, tmp_path / "cache")
    assert plain.source_name() is None and plain.source_stats(wait=True) is None
    assert "start the app with --source DIR" in longtail.frequency_table(plain)[1]
    plain.shutdown()
    studio = open_studio(root, checkpoint, tmp_path / "cache", source=gta)
    assert studio.source_name() == f"GTA5 ({gta})"
    stats = studio.source_stats(wait=True)
    assert stats[0]["0"] == 64 * 24 and stats[0]["10"] == 64 * 8  # road, sky pixels
    table, note = longtail.frequency_table(studio)
    assert note == "Source bars: GTA5 (…/gta); target bars: Cityscapes val split (…/cs)."
    assert table.loc[table["class"] == "sky", "source_pixels"].item() == pytest.approx(0.25)
    studio.shutdown()
    assert listing(gta) == before, "source statistics were written into the source folder"


def test_cli_passes_checkpoints_source_and_cache(tmp_path, checkpoint, monkeypatch):
    from app import cli

    args = cli.parse_args(
        ["--data", str(write_cityscapes(tmp_path / "cs", count=1)), "--checkpoint",
         f"{checkpoint}:teacher", "--checkpoint", str(checkpoint), "--cache", str(tmp_path / "c"),
         "--runs", str(tmp_path / "none"), "--assets", str(tmp_path / "none")]
    )  # fmt: skip
    studio = cli._open_studio(args)
    try:
        assert sorted(r.run_id for r in studio.runs()) == [
            "official:dida_gta2cs_mitb0",
            "official:dida_gta2cs_mitb0:teacher",
        ]
        assert studio.data.cache_dir == tmp_path / "c"
    finally:
        studio.shutdown()
        torch.set_num_threads(torch.get_num_threads())


def test_whole_app_builds_on_cityscapes_with_progress_and_bank_note(tmp_path, checkpoint):
    from app.main import build_app

    root = write_cityscapes(tmp_path / "cs", count=2, instances=False)
    before = listing(root)
    studio = open_studio(root, checkpoint, tmp_path / "cache")
    try:
        demo = build_app(studio)
        notes = [b.value for b in demo.blocks.values() if type(b).__name__ == "Markdown"]
        assert sum("Official checkpoints carry no instance bank" in str(n) for n in notes) == 3
        seen = []
        run_id = "official:dida_gta2cs_mitb0"
        studio.predict(run_id, 1, progress=lambda done, total: seen.append((done, total)))
        assert seen == [(i, 18) for i in range(1, 19)]  # test_cfg: 32x32 windows, stride 21
        assert studio.prediction_progress(run_id, 1) is None  # finished: nothing running
    finally:
        studio.shutdown()
    assert listing(root) == before


def test_training_from_the_app_is_refused_on_a_foreign_root(tmp_path, checkpoint):
    root = write_cityscapes(tmp_path / "cs", count=1)
    before = listing(root)
    studio = open_studio(root, checkpoint, tmp_path / "cache")
    try:
        with pytest.raises(ValueError, match="read only.*trains only on SynthCity"):
            studio.train("daformer", "tiny")
        assert studio.trainer.active() is None
    finally:
        studio.shutdown()
    assert listing(root) == before
    assert {p.name for p in tmp_path.iterdir()} <= {"cache", "cs"}  # no SynthCity beside it


def test_memory_cache_holds_few_full_resolution_predictions():
    from dida.studio.studio import PREDICTION_MEMORY, prediction_bytes

    assert prediction_bytes(1024, 2048) == 1024 * 2048 * 39 + 256 * 512 * 256 * 4
    assert PREDICTION_MEMORY // prediction_bytes(1024, 2048) == 9
    assert PREDICTION_MEMORY // prediction_bytes(64, 128) > 32  # small images: the count rules


def test_a_run_folder_given_as_checkpoint_is_listed_and_predicts(tmp_path):
    from test_official_checkpoints import TINY

    from dida import runs

    model = tiny_segmentor(3)
    folder = runs.create_run(tmp_path / "elsewhere", "my_dida", {"model": TINY.to_dict()})
    runs.save_state(folder / runs.MODEL, model.state_dict())
    root = write_cityscapes(tmp_path / "cs", count=1)
    studio = open_studio(root, folder, tmp_path / "cache")
    try:
        assert [r.run_id for r in studio.runs(with_model=True)] == ["run:my_dida"]
        expected = run_image_labels(model, studio.item(0)["image"])
        np.testing.assert_array_equal(studio.predict("run:my_dida", 0).labels, expected)
    finally:
        studio.shutdown()


def run_image_labels(model, image: np.ndarray) -> np.ndarray:
    from dida.inference import run_image

    return run_image(model, image).labels[0].numpy().astype(np.uint8)
