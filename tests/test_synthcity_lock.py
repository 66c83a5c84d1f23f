"""One SynthCity generator per folder: a second one waits and then finds the work done, refuses
with a true message after its wait, and a killed holder leaves no stale lock."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dida.data.synthcity import (
    PRESETS,
    generate,
    generate_split,
    main,
    new_manifest,
    read_manifest,
    write_manifest,
)
from dida.data.synthcity_lock import LOCK_FILE, GeneratorBusyError, generator_lock

TINY = PRESETS["tiny"]
REPO = Path(__file__).resolve().parents[1]
HOLD = (
    "import sys, time\n"
    "from dida.data.synthcity_lock import generator_lock\n"
    "with generator_lock(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(120)\n"
)


def _generator(root: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dida.data.synthcity", "--out", str(root), "--preset", "tiny"]
    return subprocess.Popen(
        [*cmd, "--workers", "1", *extra], cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _line(stream, timeout: float = 60.0) -> str:
    """The next line of a child's pipe, or '' when none comes within ``timeout``."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


def _pngs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_two_generators_on_one_folder_both_succeed(tmp_path: Path, synthcity_tiny: Path) -> None:
    root = tmp_path / "sc"
    first, second = _generator(root), _generator(root)
    outputs = [proc.communicate(timeout=300) for proc in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    for out, err in outputs:
        assert "16 images of source, train, val" in out
        assert "delete" not in err and "Traceback" not in err
    assert set(read_manifest(root)["splits"]) == {"source", "train", "val"}
    assert _pngs(root) == _pngs(synthcity_tiny)  # every file whole, as one generator writes it


def test_second_generator_waits_for_the_holder_then_finds_its_split(tmp_path: Path) -> None:
    root = tmp_path / "sc"
    with generator_lock(root):
        waiter = _generator(root, "--splits", "val")
        said = _line(waiter.stderr)
        assert said == f"waiting for generator pid {os.getpid()} writing {root} (up to 1800 s)…\n"
        assert waiter.poll() is None and read_manifest(root) is None
        write_manifest(root, new_manifest(TINY))  # the holder writes the split meanwhile
        generate_split(TINY, root, "val", workers=1)
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0 and "4 images of val" in out and err == ""
    assert list(read_manifest(root)["splits"]) == ["val"]


def test_generator_refuses_after_its_wait(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "sc"
    with generator_lock(root):
        with pytest.raises(GeneratorBusyError) as caught:
            generate(TINY, root, ["val"], wait=0.3)
        assert main(["--out", str(root), "--preset", "tiny", "--splits", "val", "--wait", "0"]) == 2
    busy = f"generator pid {os.getpid()} is still writing SynthCity into {root} after 0 s"
    assert (
        str(caught.value) == f"{busy} of waiting; let it finish (or stop it), then run this again"
    )
    err = capsys.readouterr().err
    assert f"waiting for generator pid {os.getpid()} writing {root} (up to 0 s)…" in err
    assert f"error: {busy} of waiting" in err and "delete" not in err
    assert read_manifest(root) is None  # nothing written while refused


def test_a_killed_holder_leaves_no_stale_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "sc"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root)], cwd=REPO, text=True, stdout=subprocess.PIPE
    )
    assert _line(holder.stdout) == "held\n"
    assert (root / LOCK_FILE).read_text() == f"{holder.pid}\n"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    generate(TINY, root, ["val"], wait=0)  # the OS dropped the dead holder's lock
    assert (
        list(read_manifest(root)["splits"]) == ["val"] and "waiting" not in capsys.readouterr().err
    )
    assert (root / LOCK_FILE).read_text() == ""  # released: no pid left to name


def test_a_finished_tree_is_served_without_the_lock(tmp_path: Path) -> None:
    root = tmp_path / "sc"
    generate(TINY, root, ["val"])
    with generator_lock(root):  # held by someone else: a reader of finished splits never waits
        assert generate(TINY, root, ["val"], wait=0) == root
        with pytest.raises(GeneratorBusyError):
            generate(TINY, root, ["val", "source"], wait=0)


def test_manifest_comes_first_and_keeps_every_split(tmp_path: Path) -> None:
    root = tmp_path / "sc"
    generate(TINY, root, ["val"])
    generate(TINY, root, ["source"])
    manifest = read_manifest(root)
    assert (
        list(manifest["splits"]) == ["val", "source"]
        and manifest["splits"]["source"]["images"] == 8
    )
    assert not list(root.glob("*.tmp"))
