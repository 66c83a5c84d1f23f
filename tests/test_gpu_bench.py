"""The lent-GPU bench driver's pure parts: the pixel check, the check runs' command, and bringing a
results archive back (finished runs only, never over a run folder, scored from the final eval, with
the weights ``--weights`` put beside it)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dida import runs
from dida.bench import suites as bench
from dida.bench.scores import BENCH_EVAL, FINAL_EVAL_SOURCE
from dida.data.classes import CLASSES
from dida.environment import run_config
from scripts import gpu_bench


def test_pixel_check_reads_pixels_not_png_bytes(tmp_path: Path) -> None:
    pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    for level in (0, 9):  # the same pixels compressed two ways: one md5
        Image.fromarray(pixels).save(tmp_path / f"{level}.png", compress_level=level)
    assert gpu_bench.pixel_md5(tmp_path / "0.png") == gpu_bench.pixel_md5(tmp_path / "9.png")
    assert gpu_bench.check_pixels(tmp_path) == list(gpu_bench.EXPECTED_PIXELS)  # all missing


def test_a_check_run_is_the_same_command_into_its_own_folder(tmp_path: Path) -> None:
    job = next(j for j in bench.suite_jobs("fidelity", None) if j.name == "daformer_s0")
    argv, check = job.argv(tmp_path, 1), gpu_bench.check_argv(job, tmp_path)
    at = argv.index("--runs") + 1
    assert check[at] == str(gpu_bench.CHECK_ROOT / "fidelity") and argv[at] != check[at]
    assert check[:at] + check[at + 1 :] == argv[:at] + argv[at + 1 :]
    assert str(job.init_file(tmp_path)) in " ".join(check)  # starts from the bench's weights


def _eval_record(it: int, iou: float) -> dict:
    return {
        "kind": "eval", "it": it, "train_cpu_s": 1.0, "train_wall_s": 1.0,
        "mIoU": {"19": iou, "16": iou, "13": iou}, "aAcc": 0.9, "mAcc": 0.5,
        "IoU": dict.fromkeys(CLASSES, iou), "Acc": dict.fromkeys(CLASSES, 0.5),
        "classes": list(CLASSES), "confusion": [[0] * len(CLASSES)] * len(CLASSES),
    }  # fmt: skip


def _run_files(synthcity_tiny: Path, name: str, state: str) -> dict[str, bytes]:
    data = (f"data.source_root={synthcity_tiny}", f"data.target_root={synthcity_tiny}")
    job = bench.Job("fidelity", name, "source_only", "tiny", 0, data)
    config = run_config(bench.job_config(job, Path("runs/bench")))
    metrics = [_eval_record(2, 0.1), _eval_record(4, 0.25)]
    return {
        "config.json": json.dumps(config).encode(),
        "status.json": json.dumps({"state": state, "it": 4}).encode(),
        "metrics.jsonl": "".join(json.dumps(m) + "\n" for m in metrics).encode(),
    }


def _archive(path: Path, runs_files: dict[str, dict[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for run, files in runs_files.items():
            for name, content in files.items():
                info = tarfile.TarInfo(f"{run}/{name}")
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def test_import_brings_finished_runs_back_scored_from_their_final_eval(
    synthcity_tiny: Path, tmp_path: Path
) -> None:
    archive = _archive(tmp_path / "results.tar.gz", {
        "runs/bench/fidelity/done_s1": _run_files(synthcity_tiny, "done_s1", "finished"),
        "runs/bench/fidelity/half_s1": _run_files(synthcity_tiny, "half_s1", "running"),
        "runs/bench/fidelity/here_s1": _run_files(synthcity_tiny, "here_s1", "finished"),
    })  # fmt: skip
    (tmp_path / "runs/bench/fidelity/here_s1").mkdir(parents=True)
    lines = gpu_bench.import_results(archive, tmp_path)
    assert lines == [
        "runs/bench/fidelity/done_s1: imported",
        "runs/bench/fidelity/half_s1: not finished (running at 4); not imported",
        "runs/bench/fidelity/here_s1: already here; not imported",
    ]
    record = runs.read_json(tmp_path / "runs/bench/fidelity/done_s1" / BENCH_EVAL)
    assert record["all"]["mIoU"]["19"] == 0.25 and record["it"] == 4  # the last eval, not the 2nd
    assert record["overlap"] is None and record["scored_from"] == FINAL_EVAL_SOURCE
    assert record["rare_mIoU"] == pytest.approx(0.25) and record["val_images"] == 4
    assert not (tmp_path / "runs/bench/fidelity/half_s1").exists()
    assert not any((tmp_path / "runs/bench/fidelity/here_s1").iterdir())


def _trained(root: Path, name: str, state: str, files: dict[str, bytes]) -> gpu_bench.Launch:
    run_dir = root / "runs/bench/fidelity" / name
    run_dir.mkdir(parents=True)
    runs.write_status(run_dir, state, it=4)
    for file, content in files.items():
        (run_dir / file).write_bytes(content)
    return gpu_bench.Launch(name, run_dir, "dida", [], 0, root / "logs" / name)


def test_weights_come_back_in_parts_and_land_in_the_imported_runs(
    synthcity_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished run's model and bank history, a stopped run's checkpoint (in parts of at most
    OUT's file size, here 8 bytes) come back; a run with no room is listed; import joins the parts
    and leaves the stopped run stopped at its checkpoint, to resume here."""
    monkeypatch.setattr(gpu_bench, "OUT_FILE_BYTES", 8)
    gpu = tmp_path / "gpu"
    weights = {runs.MODEL: b"model bytes", runs.BANK_HISTORY: b"bank"}
    items = [
        _trained(gpu, "done_s1", "finished", weights),  # 2 + 1 parts
        _trained(gpu, "half_s1", "running", {**weights, runs.CHECKPOINT: b"checkpoint"}),  # 2 + 1
        _trained(gpu, "new_s1", "running", weights),  # no checkpoint yet: nothing to bring back
        _trained(gpu, "late_s1", "finished", weights),  # no room left in OUT
    ]
    out = tmp_path / "out"
    out.mkdir()
    archive = _archive(out / "results.tar.gz", {
        "runs/bench/fidelity/done_s1": _run_files(synthcity_tiny, "done_s1", "finished"),
        "runs/bench/fidelity/half_s1": {**_run_files(synthcity_tiny, "half_s1", "running"),
                                        "status.json": b'{"state": "running", "it": 7, "saved_it": 4}'},
        "runs/bench/fidelity/new_s1": _run_files(synthcity_tiny, "new_s1", "running"),
    })  # fmt: skip
    skipped = gpu_bench.pack_weights(items, out)  # 8 − archive − summary.json: room for 6 parts
    assert skipped == [f"{items[3].run_dir}: weights not brought back (OUT's file limits)"]
    assert len([p for p in out.iterdir() if ".part" in p.name]) == 6
    assert (out / f"fidelity.half_s1.{runs.CHECKPOINT}.part1").read_bytes() == b"nt"
    lines = gpu_bench.import_results(archive, tmp_path / "here")
    here = tmp_path / "here/runs/bench/fidelity"
    assert lines == [
        f"runs/bench/fidelity/done_s1: imported with {runs.MODEL}, {runs.BANK_HISTORY}",
        f"runs/bench/fidelity/half_s1: imported to resume here (stopped at 4) with "
        f"{runs.CHECKPOINT}, {runs.BANK_HISTORY}",
        "runs/bench/fidelity/new_s1: not finished (running at 4); not imported",
    ]
    assert (here / "done_s1" / runs.MODEL).read_bytes() == b"model bytes"
    assert (here / "half_s1" / runs.CHECKPOINT).read_bytes() == b"checkpoint"
    assert runs.read_status(here / "half_s1")["state"] == "stopped"
    assert not (here / "half_s1" / runs.MODEL).exists()  # a resume writes it from the checkpoint


def test_compare_curves_averages_each_loss_over_windows_up_to_the_shorter_run(
    tmp_path: Path,
) -> None:
    for name, last, scale in (("gpu", 800, 1.0), ("cpu", 1200, 2.0)):
        (tmp_path / name).mkdir()
        lines = [
            json.dumps({"kind": "train", "it": it, "loss_source": scale * it, "loss_target": 1.0})
            for it in range(50, last + 1, 50)
        ]
        (tmp_path / name / runs.METRICS).write_text("\n".join(lines) + "\n")
    table = gpu_bench.compare_curves([tmp_path / "gpu", tmp_path / "cpu"], width=400)
    assert table.splitlines()[0] == "| run | loss | 1–400 | 401–800 |"
    assert f"| {tmp_path / 'gpu'} | loss_source | 225.0000 | 625.0000 |" in table
    assert f"| {tmp_path / 'cpu'} | loss_source | 450.0000 | 1250.0000 |" in table
    assert table.count("| loss_target | 1.0000 | 1.0000 |") == 2
