"""Every shipped checkpoint loads, and scores its stored mIoU on a fixed slice of the SynthCity val
split (a silent change to the model, the data generator or the metric shows up here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dida import runs
from dida.bench.ship import EXPECTED, SHIPPED_ROWS, SHOWCASE_SHIPPED, SLICE_IMAGES, slice_miou
from dida.data.datasets import build_dataset
from dida.data.pipeline import EvalImages
from dida.data.synthcity import ensure_synthcity, synthcity_roots
from dida.studio import Studio

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED = sorted(p.parent for p in (ASSETS / "checkpoints").glob(f"*/{EXPECTED}"))
TOLERANCE = 0.002
"""mIoU (fraction) the slice may move by: CPU kernels differ slightly between machines."""


@pytest.fixture(scope="module")
def default_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SynthCity ``default`` val split (generated: the project's own benchmark data)."""
    return ensure_synthcity(tmp_path_factory.mktemp("synthcity") / "default", "default", ("val",))


@pytest.fixture(scope="module")
def default_val(default_root: Path) -> EvalImages:
    return EvalImages(
        build_dataset("cityscapes", synthcity_roots(default_root)[1], "val"), resize=None
    )


def test_one_checkpoint_per_method_ships() -> None:
    """Every method's row ships; the other showcase models ship as they finish training."""
    names = {p.name for p in SHIPPED}
    assert set(SHIPPED_ROWS) <= names <= set(SHOWCASE_SHIPPED), sorted(names)
    size = sum(f.stat().st_size for p in SHIPPED for f in p.iterdir())
    assert size < 60 * 2**20, f"shipped checkpoints take {size / 2**20:.0f} MB"


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_shipped_checkpoint_matches_its_expected_slice_miou(
    folder: Path, default_val: EvalImages
) -> None:
    expected = runs.read_json(folder / EXPECTED)
    assert expected["val_images"] == SLICE_IMAGES
    assert slice_miou(folder, default_val) == pytest.approx(expected["mIoU"], abs=TOLERANCE)


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_shipped_checkpoint_has_a_card_and_a_score(folder: Path) -> None:
    text = (folder / "MODEL_CARD.md").read_text()
    miou = runs.run_info(folder).miou
    assert miou is not None and f"**{100 * miou:.1f}**" in text
    assert "python -m dida.bench" in text and "Seed " in text
    assert (folder / runs.BANK_HISTORY).exists() == folder.name.startswith("dida")


def test_the_app_engine_lists_the_shipped_checkpoints(default_root: Path, tmp_path: Path) -> None:
    studio = Studio(default_root, runs_dirs=[tmp_path], assets_dir=ASSETS)
    shipped = {s.name: s for s in studio.runs() if s.kind == "shipped"}
    assert set(shipped) == {p.name for p in SHIPPED}
    assert shipped["dida"].has_bank and all(s.has_model for s in shipped.values())
