"""Official mmseg checkpoints as mmcv's ``save_checkpoint`` writes them: a ``meta`` block with numpy
scalars and arrays, ``state_dict`` with ``model.*`` (student) / ``ema_model.*`` (teacher) /
``imnet_model.*`` and an ``optimizer`` — read with ``weights_only=True`` and the allow-list only.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dida.checkpoints import (
    mmcv_meta_globals,
    parse_checkpoint_arg,
    parse_test_cfg,
    read_checkpoint_meta,
)
from dida.data.classes import CLASSES
from dida.inference import InferenceSettings
from dida.model import CheckpointError, ModelConfig, SegModel, load_checkpoint_state, load_official
from dida.studio.catalog import RunCatalog, no_bank_message

TINY = ModelConfig(backbone="mit_b0", embed_dim=16)
CONFIG_TEXT = """norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    decode_head=dict(type='DAFormerHead', num_classes=19),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(32, 32), stride=(21, 21)))
uda = dict(type='DACS', alpha=0.999, pseudo_threshold=0.968)
"""


def tiny_segmentor(seed: int) -> SegModel:
    torch.manual_seed(seed)
    return SegModel(TINY).eval()


def mmcv_meta() -> dict:
    """A meta block with the types mmcv writes (numpy scalars from hooks, a numpy array)."""
    return {
        "mmcv_version": "1.3.7",
        "mmseg_version": "0.16.0+e6f6e04",
        "config": CONFIG_TEXT,
        "CLASSES": tuple(CLASSES),
        "PALETTE": [[128, 64, 128]] * len(CLASSES),
        "env_info": "sys.platform: linux\nPython: 3.8.5",
        "seed": np.int64(0),
        "exp_name": "gta2cs_uda_warm_fdthings_rcs_croppl_a999_daformer_mitb5_s0.py",
        "epoch": 1,
        "iter": 40000,
        "time": "Sat Jan  1 00:00:00 2022",
        "hook_msgs": {"last_ckpt": "/work/iter_40000.pth", "best_score": np.float64(0.685)},
        "class_weights": np.linspace(0.5, 1.5, len(CLASSES), dtype=np.float32),
        "pseudo_threshold": np.float32(0.968),
        "flip": np.bool_(False),
    }


def save_mmcv_checkpoint(path: Path, student: SegModel, teacher: SegModel) -> Path:
    """``torch.save({"meta", "state_dict", "optimizer"})`` as mmcv's ``save_checkpoint``."""
    state = {f"model.{k}": v for k, v in student.state_dict().items()}
    state |= {f"ema_model.{k}": v for k, v in teacher.state_dict().items()}
    state |= {f"imnet_model.{k}": v for k, v in student.backbone.state_dict().items()}
    optimizer = {"state": {0: {"step": torch.tensor(40000.0), "exp_avg": torch.zeros(3)}},
                 "param_groups": [{"lr": 6e-5, "betas": (0.9, 0.999), "params": [0]}]}  # fmt: skip
    torch.save({"meta": mmcv_meta(), "state_dict": state, "optimizer": optimizer}, path)
    return path


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SegModel, SegModel]:
    student, teacher = tiny_segmentor(0), tiny_segmentor(1)
    path = tmp_path_factory.mktemp("ck") / "daformer_gta2cs.pth"
    return save_mmcv_checkpoint(path, student, teacher), student, teacher


def test_plain_weights_only_refuses_the_meta_block(official):
    with pytest.raises(pickle.UnpicklingError, match="numpy"):
        torch.load(official[0], weights_only=True)


def test_meta_block_is_read_with_the_allow_list(official):
    meta = read_checkpoint_meta(official[0])
    assert meta.iteration == 40000 and meta.classes == tuple(CLASSES)
    assert meta.versions == {"mmcv_version": "1.3.7", "mmseg_version": "0.16.0+e6f6e04"}
    assert meta.test_cfg == {"mode": "slide", "crop_size": (32, 32), "stride": (21, 21)}
    settings = InferenceSettings.from_test_cfg(meta.test_cfg)
    assert (settings.mode, settings.crop, settings.stride) == ("slide", (32, 32), (21, 21))
    assert torch.serialization.get_safe_globals() == [] or not any(
        g in torch.serialization.get_safe_globals() for g in (np.ndarray, np.dtype)
    ), "the allow-list must be scoped to the call"


def test_allow_list_is_exactly_numpy_types():
    names = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"
             for g in mmcv_meta_globals()}  # fmt: skip
    assert all(n.startswith("numpy.") for n in names)
    assert {"numpy.core.multiarray.scalar", "numpy._core.multiarray._reconstruct"} <= names


def test_a_pickled_callable_is_still_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"meta": {"x": print}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint_state(path)


@pytest.mark.parametrize("choice, prefix", [("", 0), (":student", 0), (":teacher", 1)])
def test_student_or_teacher_weights(official, choice, prefix):
    path, *models = official
    _, which = parse_checkpoint_arg(f"{path}{choice}")
    model = load_official(path, which).eval()
    expected = models[prefix].state_dict()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, models[prefix](x).logits)


def test_checkpoint_argument_keeps_colons_of_paths():
    assert parse_checkpoint_arg("a/b.pth:teacher") == (Path("a/b.pth"), "ema_model")
    assert parse_checkpoint_arg("a/b.pth") == (Path("a/b.pth"), "model")
    assert parse_checkpoint_arg("c:/x.pth") == (Path("c:/x.pth"), "model")


def test_parse_test_cfg_reads_literals_only():
    assert parse_test_cfg("model = dict(test_cfg=dict(mode='whole'))") == {"mode": "whole"}
    assert parse_test_cfg("x = 1") == {}
    assert parse_test_cfg("test_cfg=dict(mode=__import__('os').getcwd())") == {}


def test_catalog_lists_official_files_as_panel_models_without_a_bank(official, tmp_path):
    path = official[0]
    catalog = RunCatalog([tmp_path], None, torch.device("cpu"), [str(path), f"{path}:teacher"])
    found = {r.run_id: r for r in catalog.refresh()}
    assert set(found) == {"official:daformer_gta2cs", "official:daformer_gta2cs:teacher"}
    student = found["official:daformer_gta2cs"]
    assert (student.method, student.has_model, student.has_bank) == ("daformer", True, False)
    assert student.inference.mode == "slide" and student.title.endswith("· official")
    teacher = catalog.model("official:daformer_gta2cs:teacher")
    torch.testing.assert_close(
        teacher.state_dict()["decode_head.conv_seg.weight"],
        official[2].state_dict()["decode_head.conv_seg.weight"],
    )
    assert catalog.bank_history("official:daformer_gta2cs") is None
    with pytest.raises(Exception, match="official checkpoints carry no instance bank"):
        catalog.snapshot("official:daformer_gta2cs")
    assert "choose a DIDA run of this project" in no_bank_message(student)


def test_unreadable_checkpoint_is_a_listed_problem(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a zip")
    catalog = RunCatalog([tmp_path], None, torch.device("cpu"), [str(bad), str(tmp_path / "nope")])
    assert catalog.refresh() == []
    assert len(catalog.problems) == 2 and all("cannot be listed" in p for p in catalog.problems)
