"""Figure layouts built without ``make_subplots`` (app.views.common.subplots): the same places,
titles and linked axes as make_subplots gives, checked against it."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from plotly.subplots import make_subplots

from app.views import common as C
from app.views.temperature import explanation_figure
from dida.explain import explain_vector


@pytest.mark.parametrize(("rows", "cols", "h", "v"), [(1, 1, 0.01, 0.06), (2, 3, 0.01, 0.06),
                                                       (3, 2, 0.2 / 2, 0.18), (2, 3, 0.2 / 3, 0.18)])  # fmt: skip
def test_grid_domains_are_where_make_subplots_puts_its_cells(rows, cols, h, v) -> None:
    reference = make_subplots(rows=rows, cols=cols, horizontal_spacing=h, vertical_spacing=v)
    layout = reference.to_dict()["layout"]
    for i, (x_domain, y_domain) in enumerate(C.grid_domains(rows, cols, h, v)):
        n = "" if i == 0 else str(i + 1)
        np.testing.assert_allclose(x_domain, layout[f"xaxis{n}"]["domain"], atol=1e-12)
        np.testing.assert_allclose(y_domain, layout[f"yaxis{n}"]["domain"], atol=1e-12)
        assert all(0 <= value <= 1 for value in (*x_domain, *y_domain))


def test_an_image_grid_links_every_panel_to_the_first_and_titles_each() -> None:
    rgb = np.zeros((8, 16, 3), np.uint8)
    figure = C.image_grid([(f"panel {i}", rgb) for i in range(5)])
    layout = json.loads(figure.to_json())["layout"]
    assert [a["text"] for a in layout["annotations"]] == [f"panel {i}" for i in range(5)]
    assert [(t.xaxis, t.yaxis) for t in figure.data] == [("x", "y")] + [
        (f"x{i}", f"y{i}") for i in range(2, 6)
    ]
    assert "matches" not in layout["xaxis"]
    assert all(layout[f"{a}axis{i}"]["matches"] == a for a in "xy" for i in range(2, 6))
    assert layout["xaxis4"]["domain"] == layout["xaxis"]["domain"]  # second row, first column
    assert (
        not layout["yaxis"]["showticklabels"] and layout["height"] == 2 * 230 + 40 + C.GRID_LABEL_PX
    )


def _validated_again(figure: go.Figure) -> None:
    """The figure (built without plotly's validation) passes validation unchanged."""
    again = go.Figure(figure.to_dict())  # validates every property; raises on a wrong one
    assert json.loads(again.to_json()) == json.loads(figure.to_json())


def test_figures_built_without_validation_are_valid_and_a_wrong_property_is_caught() -> None:
    rgb = np.zeros((8, 16, 3), np.uint8)
    _validated_again(C.image_grid([(f"panel {i}", rgb) for i in range(5)], photos=1))
    _validated_again(explanation_figure(_explanation(), 0.5, "cityscapes"))
    wrong = C.subplots([((0, 1), (0, 1))], ["t"], [{"type": "bar", "x": [1], "colour": "red"}])
    with pytest.raises(ValueError, match="colour"):
        _validated_again(wrong)


def _explanation():
    g = torch.Generator().manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(40, 8, generator=g), dim=1)
    slot_labels = torch.arange(40) % 19
    snapshot = type("Snap", (), {"features": bank, "labels": slot_labels, "written": None})()
    p = torch.softmax(torch.randn(19, generator=g), 0)
    return explain_vector(torch.randn(8, generator=g), p, snapshot, (3, 4), (0, 1), 0.1)


def test_the_tp_figure_places_q_above_the_three_class_plots() -> None:
    g = torch.Generator().manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(40, 8, generator=g), dim=1)
    slot_labels = torch.arange(40) % 19
    snapshot = type("Snap", (), {"features": bank, "labels": slot_labels, "written": None})()
    p = torch.softmax(torch.randn(19, generator=g), 0)
    e = explain_vector(torch.randn(8, generator=g), p, snapshot, (3, 4), (0, 1), 0.1)
    layout = json.loads(explanation_figure(e, 0.5, "cityscapes").to_json())["layout"]
    assert layout["xaxis"]["domain"] == [0, 1] and layout["yaxis"]["range"] == [0, 0.5 * 1.05]
    assert [layout[f"yaxis{i}"]["range"] for i in (2, 3, 4)] == [[0, 1]] * 3
    assert layout["yaxis2"]["domain"][1] < layout["yaxis"]["domain"][0]  # below the q plot
    assert layout["annotations"][1]["text"] == "teacher p"
