"""Downloads live in one process-owned folder, named by content, and are removed at exit
(before: one new temp folder per view redraw, never removed)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from app.views import exports

ROOT = Path(__file__).resolve().parents[1]


def test_same_content_reuses_one_file_and_different_content_gets_its_own() -> None:
    first = exports.write_csv("table.csv", ["a", "b"], [[1, 2.5], ["x", None]])
    again = exports.write_csv("table.csv", ["a", "b"], [[1, 2.5], ["x", None]])
    other = exports.write_csv("table.csv", ["a", "b"], [[3, 4]])
    assert first == again and first != other
    assert Path(first).name == Path(other).name == "table.csv"
    assert Path(first).exists() and Path(other).exists()
    assert Path(first).parent.parent == Path(other).parent.parent == exports.export_folder()


def test_csv_round_trip() -> None:
    path = exports.write_csv("rows.csv", ["class", "IoU"], [["person", 45.5], ["rider, bike", 9.4]])
    with open(path, newline="") as f:
        assert list(csv.reader(f)) == [["class", "IoU"], ["person", "45.5"], ["rider, bike", "9.4"]]


def test_png_round_trip() -> None:
    image = np.random.default_rng(0).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    path = exports.write_png("grid.png", image)
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), image)


def test_a_name_cannot_leave_the_folder() -> None:
    path = Path(exports.write_csv("../../escape.csv", ["a"], [[1]]))
    assert path.name == "escape.csv" and path.parent.parent == exports.export_folder()


def test_many_redraws_make_one_folder_which_is_gone_at_exit(tmp_path: Path) -> None:
    script = (
        "from app.views.exports import write_csv\n"
        "paths = {write_csv('t.csv', ['i'], [[i % 3]]) for i in range(30)}\n"
        "print(len(paths)); print(sorted(paths)[0])\n"
    )
    env = {"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    count, path = out.stdout.split()
    assert count == "3"
    assert Path(path).is_relative_to(tmp_path)
    assert not Path(path).exists() and list(tmp_path.iterdir()) == []


def test_remove_exports_removes_the_folder_and_a_later_download_makes_a_new_one() -> None:
    path = Path(exports.write_csv("gone.csv", ["a"], [[1]]))
    folder = exports.export_folder()
    exports.remove_exports()
    assert not folder.exists() and not path.exists()
    exports.remove_exports()  # nothing to remove: no error, no folder made
    again = Path(exports.write_csv("gone.csv", ["a"], [[1]]))
    assert again.exists() and exports.export_folder() != folder


def test_the_apps_exit_removes_its_downloads_although_it_skips_atexit(monkeypatch) -> None:
    """``app.cli.run`` ends the process with ``os._exit`` (no atexit handlers)."""
    from app import cli

    path = Path(exports.write_csv("at_exit.csv", ["a"], [[2]]))
    exited = []
    monkeypatch.setattr(cli, "main", lambda: 0)
    monkeypatch.setattr(cli.os, "_exit", exited.append)
    cli.run()
    assert exited == [0] and not path.exists() and not path.parent.parent.exists()


def test_first_downloads_from_many_threads_share_one_folder() -> None:
    from concurrent.futures import ThreadPoolExecutor

    exports.remove_exports()
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda i: exports.write_csv(f"t{i}.csv", ["i"], [[i]]), range(32)))
    assert {Path(p).parent.parent for p in paths} == {exports.export_folder()}
