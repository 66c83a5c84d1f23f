"""Run names from the app: an unsafe name is refused with the rule before anything is written, by
``Studio.train`` and by the Train tab's handler (a warning and the status, never a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_studio import make_studio

from app.views import train as train_view
from dida import runs
from dida.environment import run_config
from dida.presets import preset_config
from dida.studio import Studio
from dida.studio.catalog import RunCatalog


def _bad_names(tmp_path: Path) -> list[str]:
    return ["..", str(tmp_path / "elsewhere"), "a/../../x", "r" * 300, "a\x00b"]


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.fixture
def studio(tmp_path: Path, synthcity_tiny: Path) -> Studio:
    """A Studio whose runs folder is ``tmp_path/outer/runs`` (empty)."""
    runs_dir = tmp_path / "outer" / "runs"
    runs_dir.mkdir(parents=True)
    return make_studio(synthcity_tiny, runs_dir)


@pytest.mark.parametrize("index", range(5), ids=["dotdot", "absolute", "traversal", "long", "nul"])
def test_studio_train_refuses_unsafe_names_before_writing(
    studio: Studio, tmp_path: Path, index: int
) -> None:
    name, before = _bad_names(tmp_path)[index], _files(tmp_path)
    with pytest.raises(runs.RunNameError, match="is not allowed: use 1-100 characters"):
        studio.train("source_only", "tiny", iters=1, name=name)
    assert studio.trainer.jobs == {}
    assert _files(tmp_path) == before
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "outer" / "x").exists()


@pytest.mark.parametrize("index", range(5), ids=["dotdot", "absolute", "traversal", "long", "nul"])
def test_train_tab_shows_the_rule_for_unsafe_names(
    studio: Studio, tmp_path: Path, index: int
) -> None:
    name, before = _bad_names(tmp_path)[index], _files(tmp_path)
    with pytest.warns(UserWarning, match="is not allowed"):
        job_id, status, timer = train_view.start(
            studio, "source_only", "tiny", 1, 0, name, None, 0.1, None
        )
    assert status.startswith("**Not started**") and "1-100 characters from A-Z" in status
    assert "Traceback" not in status and str(tmp_path) not in status
    assert job_id == {"__type__": "update"} and studio.trainer.jobs == {}
    assert _files(tmp_path) == before and not (tmp_path / "outer" / runs.CONFIG).exists()


def test_a_safe_name_still_queues_a_run_inside_the_runs_folder(studio: Studio) -> None:
    job = studio.train("source_only", "tiny", iters=1, name="fine_name-1.0")
    assert job.run_dir == studio.trainer.runs_dir / "fine_name-1.0"
    studio.trainer.stop(job.job_id)


def test_the_same_run_name_in_two_runs_folders_is_reported(tmp_path: Path) -> None:
    config = run_config(preset_config("tiny", "source_only"), ["test"])
    for folder in ("first", "second"):
        runs.create_run(tmp_path / folder, "same", config)
    catalog = RunCatalog([tmp_path / "first", tmp_path / "second"], None, torch.device("cpu"))
    listed = catalog.refresh()
    assert [r.path for r in listed] == [tmp_path / "first" / "same"]
    (note,) = catalog.problems
    assert str(tmp_path / "second" / "same") in note and "rename one of the two" in note
