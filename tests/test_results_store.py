"""The on-disk prediction store (dida.studio.results): format 2 (compressed, probabilities in
1/255 steps), round trips, stale and corrupt files, the budget, and the background precompute."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from dida.studio import Studio
from dida.studio import results as R
from dida.studio.predictions import (
    ImagePrediction,
    dequantize_probs,
    image_prediction,
    pixel_reading,
    pixel_vectors,
    quantize_probs,
)


def _prediction(seed: int = 0, classes: int = 19, h: int = 32, w: int = 64) -> ImagePrediction:
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(3 * torch.randn(classes, h, w, generator=g), dim=0)
    return image_prediction(probs, torch.randn(8, h // 4, w // 4, generator=g))


def test_quantized_probabilities_round_trip_exactly_and_stay_within_half_a_step() -> None:
    probs = torch.softmax(3 * torch.randn(19, 16, 16), dim=0).numpy()
    steps = quantize_probs(probs)
    assert steps.dtype == np.uint8 and np.abs(steps / 255 - probs).max() <= 0.5 / 255 + 1e-7
    kept = dequantize_probs(steps)
    assert kept.dtype == np.float16 and np.array_equal(quantize_probs(kept), steps)
    assert quantize_probs(np.array([0.0, 1.0, 0.5])).tolist() == [0, 255, 128]


def test_a_stored_prediction_reads_back_identical_and_smaller(tmp_path: Path) -> None:
    store, pred = R.ResultStore(tmp_path), _prediction()
    path = store.put("ckpt", "img", ("whole",), pred)
    back = store.get("ckpt", "img", ("whole",))
    assert back is not None and np.array_equal(back.labels, pred.labels)
    assert np.array_equal(back.probs, pred.probs) and back.probs.dtype == np.float16
    torch.testing.assert_close(back.features, pred.features.half().float())
    assert path.stat().st_size < pred.probs.nbytes / 2  # uint8 steps, compressed
    assert store.get("ckpt", "img", ("slide",)) is None and store.get("other", "img", ()) is None


def test_labels_alone_read_back_and_a_damaged_file_is_removed(tmp_path: Path) -> None:
    store, pred = R.ResultStore(tmp_path), _prediction()
    path = store.put("ckpt", "img", (), pred)
    labels = store.labels("ckpt", "img", ())
    assert labels is not None and labels.dtype == np.uint8
    assert np.array_equal(labels, pred.labels) and store.labels("ckpt", "other", ()) is None
    path.write_bytes(b"PK\x03\x04 truncated")
    assert store.labels("ckpt", "img", ()) is None and not path.exists()
    np.savez_compressed(path, labels=pred.labels.astype(np.int64), probs=quantize_probs(pred.probs))
    assert store.labels("ckpt", "img", ()) is None and not path.exists()  # not uint8 labels


def test_the_stored_top_3_reads_every_pixel_like_the_whole_prediction(tmp_path: Path) -> None:
    store, pred = R.ResultStore(tmp_path), _prediction(3, h=16, w=24)
    tied = pred.probs.copy()
    tied[:, 0, 0] = 0
    tied[[4, 2], 0, 0] = dequantize_probs(np.uint8(128))  # a tie: the lower train ID first
    labels = pred.labels.copy()
    labels[0, 0] = 2
    pred = ImagePrediction(labels, tied, pred.features)
    store.put("c", "i", (), pred)
    top = store.top("c", "i", ())
    assert top is not None and top.classes.shape == (3, 16, 24) and top.steps.dtype == np.uint8
    for y in range(16):
        for x in range(24):
            assert top.reading("m", x, y) == pixel_reading("m", pred, x, y)
    half = float(dequantize_probs(np.uint8(128)))
    assert top.reading("m", 0, 0).top[:2] == ((2, half), (4, half))
    assert store.top("c", "other", ()) is None


def test_one_stored_pixel_reads_like_the_whole_prediction(tmp_path: Path) -> None:
    """What the tp explanation reads of a stored file equals ``pixel_vectors`` of the whole
    prediction read back, at every pixel (features on their 1/4 grid, probabilities renormalised)."""
    store, pred = R.ResultStore(tmp_path), _prediction(4, h=16, w=24)
    store.put("c", "i", (), pred)
    whole = store.get("c", "i", ())
    for y in range(16):
        for x in range(24):
            feature, p, cell = store.pixel("c", "i", (), x, y)
            f_ref, p_ref, cell_ref = pixel_vectors(whole, x, y)
            assert cell == cell_ref and torch.equal(feature, f_ref) and torch.equal(p, p_ref)
    assert store.pixel("c", "other", (), 0, 0) is None


def test_member_reads_are_kept_read_only_and_a_rewritten_file_is_read_again(tmp_path: Path) -> None:
    store, first, second = R.ResultStore(tmp_path), _prediction(1), _prediction(2)
    path = store.put("c", "i", (), first)
    labels = store.labels("c", "i", ())
    assert labels is store.labels("c", "i", ()) and not labels.flags.writeable  # one read, kept
    np.savez_compressed(path, labels=second.labels)  # the same file, new content
    assert np.array_equal(store.labels("c", "i", ()), second.labels)
    assert not np.array_equal(first.labels, second.labels)


def test_files_of_the_old_layout_are_neither_read_nor_kept(tmp_path: Path) -> None:
    store, pred = R.ResultStore(tmp_path), _prediction()
    path = store.path("ckpt", "img", ())
    path.parent.mkdir(parents=True)
    np.savez(path, labels=pred.labels, probs=pred.probs, features=pred.features.numpy())
    assert store.get("ckpt", "img", ()) is None and not path.exists()  # float16 probs refused
    path.write_bytes(b"PK\x03\x04 truncated")
    assert store.get("ckpt", "img", ()) is None and not path.exists()


def test_files_of_older_formats_are_removed_when_a_store_opens(tmp_path: Path) -> None:
    old = tmp_path / "0123abcd.npz"
    old.write_bytes(b"format 1")
    keep = tmp_path / "notes.txt"
    keep.write_text("not a prediction")
    v2 = tmp_path / "v2" / "0123abcd.npz"
    v2.parent.mkdir()
    v2.write_bytes(b"format 2: no top-3 members")
    store = R.ResultStore(tmp_path)
    assert not old.exists() and keep.exists() and store.folder == tmp_path / f"v{R.FORMAT}"
    assert not v2.parent.exists()


def test_the_store_reports_its_share_of_the_budget_and_trims_oldest_first(tmp_path: Path) -> None:
    store = R.ResultStore(tmp_path, max_bytes=10**9)
    first = store.put("c", "a", (), _prediction(1))
    size = first.stat().st_size
    assert store.total_bytes() == size and not store.full(0.5)
    store.max_bytes = 2 * size
    assert store.full(0.5)
    store.put("c", "b", (), _prediction(2))
    store.put("c", "d", (), _prediction(3))
    assert not first.exists() and store.get("c", "d", ()) is not None


@pytest.fixture
def studio_for_precompute(
    synthcity_tiny: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
):
    """A Studio over the tiny fixture runs with a private, empty cache folder."""
    from tests.test_studio import fixture_runs

    runs_dir = fixture_runs(tmp_path_factory, synthcity_tiny)
    studio = Studio(synthcity_tiny, [runs_dir], None, data_preset="tiny", cache_dir=tmp_path)
    yield studio, "run:source_only"
    studio.shutdown()


def test_precompute_writes_every_val_prediction_then_readouts_need_no_forward(
    studio_for_precompute,
) -> None:
    studio, run_id = studio_for_precompute
    studio.precompute([run_id])
    studio.precomputing.wait(("precompute", (run_id,)), timeout=300)
    assert studio.precompute_state([run_id]) == "done"
    files = list(studio.results.folder.glob("*.npz"))
    assert len(files) == len(studio.val)
    calls = []
    studio._compute = lambda *a, **k: calls.append(a)  # a forward would be recorded here
    for index in range(len(studio.val)):
        assert studio.predict(run_id, index).labels.shape == studio.item(index)["image"].shape[:2]
    assert calls == []


def test_precompute_stops_at_its_share_of_the_cache_budget(studio_for_precompute) -> None:
    studio, run_id = studio_for_precompute
    studio.results.max_bytes = 1  # any stored file fills it
    studio.precompute([run_id], share=0.5)
    studio.precomputing.wait(("precompute", (run_id,)), timeout=300)
    assert studio.precompute_state([run_id]) == "done"
    assert len(list(studio.results.folder.glob("*.npz"))) <= 1


def test_label_views_and_readouts_read_only_the_stored_members_they_need(
    studio_for_precompute,
) -> None:
    """Studio.labels: the in-memory prediction's, else the disk file's labels alone (no full read,
    no forward), else a prediction — equal in every case."""
    studio, run_id = studio_for_precompute
    expected = studio.predict(run_id, 0).labels  # computed and stored
    assert studio.labels(run_id, 0) is expected  # from memory
    studio._predictions.clear()
    full_reads, forwards = [], []
    studio.results.get = lambda *a: full_reads.append(a)
    studio._compute = lambda *a, **k: forwards.append(a)
    assert np.array_equal(studio.labels(run_id, 0), expected)
    readings = studio.readout([run_id], 0, 3, 2)
    assert full_reads == [] and forwards == []
    del studio.results.get, studio._compute
    assert readings[-1] == pixel_reading(studio.run(run_id).title, studio.predict(run_id, 0), 3, 2)
    studio.results.path(*studio._result_ids(run_id, 1)).unlink(missing_ok=True)
    assert np.array_equal(studio.labels(run_id, 1), studio.predict(run_id, 1).labels)


def test_npz_bytes_reads_back_like_savez_compressed_and_is_compressed() -> None:
    rng = np.random.default_rng(0)
    arrays = {"labels": rng.integers(0, 19, (32, 64), dtype=np.uint8),
              "features": rng.standard_normal((8, 8, 16)).astype(np.float16),
              "zeros": np.zeros((3, 100, 100), np.uint8)}  # fmt: skip
    data = R.npz_bytes(**arrays)
    with np.load(io.BytesIO(data), allow_pickle=False) as back:
        assert sorted(back.files) == sorted(arrays)
        for name, array in arrays.items():
            assert back[name].dtype == array.dtype and np.array_equal(back[name], array)
    assert len(data) < sum(a.nbytes for a in arrays.values()) / 2
