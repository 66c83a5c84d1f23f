"""The studio's overlap index: same-class pairs (person–person) reach the Compare pair-type filter, and a
saved index of an older version is rebuilt instead of reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.views import compare
from dida.analysis import pair_types
from dida.data.overlap import OVERLAP_INDEX_VERSION, OverlapIndex, summarize_overlaps
from dida.studio import OVERLAP_FILE, Studio


@pytest.fixture()
def studio(synthcity_tiny: Path, tmp_path: Path) -> Studio:
    """A studio over the tiny SynthCity val split, no runs, its caches in ``tmp_path``."""
    (tmp_path / "runs").mkdir()
    studio = Studio(
        synthcity_tiny, [tmp_path / "runs"], None, data_preset="tiny", cache_dir=tmp_path / "cache"
    )
    yield studio
    studio.shutdown()


def _expected_counts(studio: Studio) -> dict[tuple[str, str], int]:
    """Pair counts over the val split, from the instance maps directly."""
    counts: dict[tuple[str, str], int] = {}
    for i in range(len(studio.images.val)):
        for pair in summarize_overlaps("x", studio.item(i)["instance"]).pairs:
            counts[pair] = counts.get(pair, 0) + 1
    return counts


def test_person_person_pairs_are_listed_with_their_image_counts(studio: Studio) -> None:
    studio.index_overlaps(wait=True)
    types = studio.passes.pair_types()
    assert types is not None and "person–person" in types
    counts = _expected_counts(studio)
    assert {k: len(v) for k, v in types.items()} == {"–".join(k): n for k, n in counts.items()}
    choices = {value: label for label, value in compare.pair_choices(studio)}
    n = counts[("person", "person")]
    assert choices["person–person"] == f"person–person ({n} images)"
    _, shown, status, _, _, _ = compare.gallery(
        studio, False, "all", "file", None, None, "person–person"
    )
    assert shown == types["person–person"] and status.startswith(f"{n} of 4 images")


def test_a_saved_index_of_an_older_version_is_rebuilt(studio: Studio) -> None:
    path = studio.images.cache_dir / OVERLAP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in studio.images.val.samples]
    old = {"touch": 1, "width": 3, "classes": [11, 13], "images": []}
    old["images"] = [{"name": n, "pairs": [], "overlap_pixels": 0} for n in names]
    path.write_text(json.dumps(old))  # version 1 (no version field): no pairs at all
    assert studio.overlap_flags() is None  # not reused while the index is rebuilt
    studio.index_overlaps(wait=True)
    assert "person–person" in studio.passes.pair_types()
    saved = OverlapIndex.load(path)
    assert saved.version == OVERLAP_INDEX_VERSION
    assert pair_types(saved) == studio.passes.pair_types()
