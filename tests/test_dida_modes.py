"""The new DIDA modes, MIC-style and DIDA + MIC through the real training loop, and what the app's
Temperature and Instance-bank views read from their runs (bank history, ``dida.explain``)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dida import runs
from dida.bank import BankHistory, InstanceBank
from dida.explain import distribution_over_tps, explain_pixel
from dida.presets import preset_config
from dida.train import TrainConfig, train

PAPER_NEW = {"ins_weight": "confidence", "centre": True, "pseudo_upsample": "logits"}
SMOKE = [
    ("mic", {}),
    ("dida_mic", {"bank_size": 38}),
    ("dida", {"bank_size": 38, "mode": "released", "bank_init_images": 2}),
    ("dida", {"bank_size": 38, **PAPER_NEW, "slot_resolution": "label"}),
]


def _cfg(root: Path, method: str, options: dict, **kw) -> TrainConfig:
    cfg = preset_config("tiny", method)
    data = replace(cfg.data, source_root=str(root), target_root=str(root), rcs=False)
    return replace(cfg, data=data, method_options=options, **{"checkpoint_interval": 0, **kw})


@pytest.mark.parametrize(("method", "options"), SMOKE, ids=lambda v: str(v) if v else "")
def test_two_step_smoke_run(method: str, options: dict, synthcity_tiny, tmp_path) -> None:
    cfg = _cfg(synthcity_tiny, method, options, iters=2)
    kinds = [e.kind for e in train(cfg, tmp_path / "r")]
    assert kinds[0] == "start" and kinds[-1] == "done"
    records = runs.read_metrics(tmp_path / "r", "train")
    assert [r["it"] for r in records] == [1, 2]
    losses = {k: v for r in records for k, v in r.items() if k.startswith("loss_")}
    assert all(math.isfinite(v) for v in losses.values())
    assert ("loss_mask" in losses) == method.endswith("mic")
    assert ("loss_ins" in losses) == method.startswith("dida")
    config = json.loads((tmp_path / "r" / runs.CONFIG).read_text())
    assert TrainConfig.from_dict(config).to_dict() == cfg.to_dict()


def test_precomputed_bank_history_is_one_snapshot_plus_its_updates(
    synthcity_tiny, tmp_path
) -> None:
    options = {"bank_size": 38, "mode": "released", "bank_init_images": 2, "update_interval": 2}
    list(train(_cfg(synthcity_tiny, "dida", options, iters=5), tmp_path / "r"))
    history = BankHistory.load(tmp_path / "r" / runs.BANK_HISTORY)
    assert history.iterations == [0, 2, 4]  # the precompute at bank_start, then every update
    first = history[0]
    written = first.ages >= 0
    assert torch.equal(first.changed, written) and written.any()
    assert (first.source_ids[written] >= 0).all()  # each slot copies one source image's region
    assert (first.ages[written] == 0).all() and (first.source_ids[~written] == -1).all()
    assert all(torch.equal(s.changed, written) for s in history[1:])
    for s in history:  # provenance: every written slot names a source image and its region box
        assert (s.source_ids[written] >= 0).all() and (s.boxes[written] >= 0).all()
        assert (s.source_ids[~written] == -1).all() and (s.boxes[~written] == -1).all()
    bank = InstanceBank.from_snapshot(history[-1])
    assert torch.equal(bank.filled, written) and bank.features.dtype == torch.float32


@pytest.mark.parametrize("index", [0, -1])
def test_temperature_view_explains_a_pixel_on_a_precomputed_bank(
    synthcity_tiny, tmp_path, index: int
) -> None:
    options = {"bank_size": 38, "mode": "released", "bank_init_images": 2, "update_interval": 1}
    list(train(_cfg(synthcity_tiny, "dida", options, iters=2), tmp_path / "r"))
    snapshot = BankHistory.load(tmp_path / "r" / runs.BANK_HISTORY)[index]
    model = runs.load_run_model(tmp_path / "r")
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    explanation = explain_pixel(model, image, snapshot, 10, 20, tp=0.1, normalize=False)
    assert explanation.q.shape == (38,) and math.isclose(explanation.q.sum(), 1.0, rel_tol=1e-5)
    assert 0 <= explanation.pseudo_label_regenerated < 19 and math.isfinite(explanation.entropy)
    sweep = distribution_over_tps(explanation.feature, snapshot, (0.05, 0.1, 1.0), False)
    assert sweep.q.shape == (3, 38) and torch.isfinite(sweep.q).all()
