"""The page header names the dataset actually loaded — kind and folder — not SynthCity for every
``--data``: a Cityscapes root is called Cityscapes (read only), a SynthCity tree names its preset."""

from __future__ import annotations

from pathlib import Path

from test_official_checkpoints import save_mmcv_checkpoint, tiny_segmentor
from test_real_data import open_studio, write_cityscapes

from app.main import build_app, header_text
from dida.studio import Studio


def _header_of_page(studio: Studio) -> str:
    demo = build_app(studio)
    return next(
        c["props"]["value"]
        for c in demo.config["components"]
        if c["props"].get("elem_id") == "app-header"
    )


def test_header_names_a_cityscapes_root_and_its_folder(tmp_path: Path) -> None:
    root = write_cityscapes(tmp_path / "my_cityscapes", count=2)
    checkpoint = save_mmcv_checkpoint(tmp_path / "m.pth", tiny_segmentor(0), tiny_segmentor(1))
    studio = open_studio(root, checkpoint, tmp_path / "cache")
    try:
        text = header_text(studio)
        assert "**Cityscapes** val images (read only: 2 images in `…/my_cityscapes`)" in text
        assert "SynthCity" not in text and str(tmp_path) not in text  # no server path
        assert _header_of_page(studio) == text
    finally:
        studio.shutdown()


def test_header_names_a_synthcity_tree_with_its_preset(
    synthcity_tiny: Path, tmp_path: Path
) -> None:
    (tmp_path / "runs").mkdir()
    studio = Studio(synthcity_tiny, [tmp_path / "runs"], None, data_preset="tiny")
    try:
        text = header_text(studio)
        folder = synthcity_tiny.resolve().name
        assert f"**SynthCity** val images (preset tiny, target: 4 images in `…/{folder}`)" in text
        assert "Cityscapes" not in text
    finally:
        studio.shutdown()
