"""The long-tail view names the dataset behind every bar and refuses to set a run beside another
dataset's source statistics: a run trained on another SynthCity preset (or folder) than the source
being counted withholds the source bars, and the note says which run trained on what."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.views import longtail
from dida.data.synthcity import synthcity_roots
from dida.studio import Studio
from dida.studio.sources import dataset_source, mismatches, run_source


def _run(folder: Path, **data: object) -> Path:
    """A run folder whose config.json records only ``data`` (enough to be listed)."""
    folder.mkdir(parents=True)
    config = json.loads(Path("assets/checkpoints/dida/config.json").read_text())
    config["data"] = {**config["data"], **data}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture()
def studio(synthcity_tiny: Path, tmp_path: Path) -> Studio:
    """The tiny SynthCity tree (its own source split counted) and three runs: trained on the tiny
    preset elsewhere (same source images), on the default preset, on a GTA5 folder."""
    runs = tmp_path / "runs"
    _run(runs / "tiny_run", source_root=str(tmp_path / "elsewhere"), synthcity_preset="tiny")
    _run(runs / "default_run", source_root="data/synthcity", synthcity_preset="default")
    _run(runs / "gta_run", source="gta5", source_root=str(tmp_path / "gta"))
    studio = Studio(synthcity_tiny, [runs], None, data_preset="tiny", cache_dir=tmp_path / "c")
    studio.source_stats(wait=True)
    yield studio
    studio.shutdown()


def test_source_identities_follow_presets_and_folders(synthcity_tiny: Path, tmp_path: Path) -> None:
    counted = dataset_source("gta5", synthcity_roots(synthcity_tiny)[0])
    assert counted.kind == "synthcity" and "preset tiny" in counted.name
    tiny = run_source(_run(tmp_path / "a", source_root="x", synthcity_preset="tiny"))
    default = run_source(_run(tmp_path / "b", source_root="x", synthcity_preset="default"))
    gta = run_source(_run(tmp_path / "c", source="gta5", source_root=str(tmp_path)))
    assert tiny.same_data(counted) and not default.same_data(counted)
    assert not gta.same_data(counted) and gta.same_data(dataset_source("gta5", tmp_path))
    assert run_source(tmp_path) is None  # no config.json: nothing recorded
    lines = mismatches(counted, [("A", tiny), ("B", default), ("C", None)])
    assert lines == ["B trained on SynthCity source split, preset default (x)"]


def test_matching_runs_keep_the_source_bars_named_by_dataset(studio: Studio) -> None:
    pixels, images, table, _, note = longtail.frequencies(studio, ["run:tiny_run"])
    folder = studio.data_root.resolve().name
    source = f"SynthCity source split, preset tiny ({studio.data_root})"
    assert studio.source_name() == source
    assert note == (
        f"Source bars: SynthCity source split, preset tiny (…/{folder}); "
        f"target bars: SynthCity val split (…/{folder})."
    )
    for figure in (pixels, images):
        assert [t.name for t in figure.data] == [
            f"source: SynthCity source split, preset tiny (…/{folder})",
            f"target: SynthCity val split (…/{folder})",
        ]
    assert "–" not in set(table["source_pixels (%)"])


@pytest.mark.parametrize(
    "run_id, trained",
    [
        ("run:default_run", "SynthCity source split, preset default (data/synthcity)"),
        ("run:gta_run", "GTA5 (…/gta)"),
    ],
)
def test_a_mismatched_run_withholds_the_source_bars(
    studio: Studio, run_id: str, trained: str
) -> None:
    pixels, images, table, _, note = longtail.frequencies(studio, ["run:tiny_run", run_id])
    title = studio.run(run_id).short_title
    assert note.startswith(
        "**Source bars withheld:** they count SynthCity source split, preset tiny"
    )
    assert f"but {title} trained on {trained}" in note and "--source" in note
    for figure in (pixels, images):
        assert [t.name.split(":")[0] for t in figure.data] == ["target"]
    assert set(table["source_pixels (%)"]) == {"–"} and "–" not in set(table["target_pixels (%)"])
    assert studio.source_mismatches(["run:tiny_run"]) == []
