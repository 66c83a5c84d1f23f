"""Request scheduling in the app: cheap events share the unlimited ``interactive`` Gradio group and
expensive ones the ``heavy`` group (two at a time), so a readout never queues behind a prediction."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_studio import private_studio

from app.main import build_app
from dida.studio import Studio

CHEAP_EVENTS = {"click", "readout", "select_image", "choose_index", "tp_click", "tp_explain",
                "bank_select_run", "bank_show", "bank_slot", "umap_selection", "umap_listing",
                "umap_open_in_compare", "train_start", "refresh"}  # fmt: skip
HEAVY_EVENTS = {"grid", "diff", "iou_table", "gallery", "upload", "umap_project", "longtail_iou"}


@pytest.fixture(scope="module")
def app_fns(tmp_path_factory: pytest.TempPathFactory, synthcity_tiny: Path) -> list:
    """The built app's event functions, in the order they were wired."""
    studio: Studio = private_studio(tmp_path_factory, synthcity_tiny)
    return list(build_app(studio).fns.values())


@pytest.fixture(scope="module")
def lanes(tmp_path_factory: pytest.TempPathFactory, synthcity_tiny: Path) -> dict:
    """(api name or function name, position) → (concurrency id, limit) of every queued event."""
    studio: Studio = private_studio(tmp_path_factory, synthcity_tiny)
    fns = build_app(studio).fns.values()
    return {
        (fn.api_name or fn.name, i): (fn.concurrency_id, fn.concurrency_limit)
        for i, fn in enumerate(fns)
        if fn.queue
    }


def test_cheap_events_start_at_once_in_their_own_group(lanes: dict) -> None:
    found = {name: lane for (name, _), lane in lanes.items() if name in CHEAP_EVENTS}
    assert set(found) == CHEAP_EVENTS
    assert set(found.values()) == {("interactive", None)}


def test_expensive_events_share_a_limited_group(lanes: dict) -> None:
    found = {name: lane for (name, _), lane in lanes.items() if name in HEAVY_EVENTS}
    assert set(found) == HEAVY_EVENTS
    assert set(found.values()) == {("heavy", 2)}


def test_every_queued_event_is_in_one_of_the_two_lanes(lanes: dict) -> None:
    assert set(lanes.values()) == {("interactive", None), ("heavy", 2)}


def test_a_page_load_draws_the_grid_first_and_chains_the_rest_after_it(app_fns: list) -> None:
    """On a page load the Compare grid is the only heavy event; the gallery's thumbnails, the
    fixed/broke map and the IoU tables are chained after it instead of competing with it (first
    launch, issue 16)."""
    heavy = {i: fn for i, fn in enumerate(app_fns) if fn.queue and fn.concurrency_id == "heavy"}
    on_load = [i for i, fn in heavy.items() if any(e == "load" for _, e in fn.targets)]
    assert [heavy[i].fn.__name__ for i in on_load] == ["_grid_outputs"]
    chained = {heavy[i].fn.__name__ for i in heavy if heavy[i].trigger_after == on_load[0]}
    assert chained == {"gallery", "diff", "_iou_outputs"}
