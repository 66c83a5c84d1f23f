"""Run directories: atomic safetensors state round-trips, metrics logs, listings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dida import runs


def test_nested_state_round_trip(tmp_path: Path) -> None:
    opt_state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 2)}},
        "param_groups": [{"lr": 1e-3, "params": [0], "betas": (0.9, 0.999)}],
    }
    state = {"model": {"w": torch.arange(6).reshape(2, 3)}, "optimizer": opt_state, "flag": True}
    runs.save_state(tmp_path / "c.safetensors", state, {"it": 7})
    loaded, meta = runs.load_state(tmp_path / "c.safetensors")
    assert meta == {"it": 7}
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert list(loaded["optimizer"]["state"]) == [0]  # integer keys survive
    assert torch.equal(loaded["optimizer"]["state"][0]["exp_avg"], opt_state["state"][0]["exp_avg"])
    assert loaded["optimizer"]["param_groups"][0]["betas"] == [0.9, 0.999]
    assert loaded["flag"] is True


def test_optimizer_state_survives(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    runs.save_state(tmp_path / "o.safetensors", {"optimizer": opt.state_dict()})
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-2)
    fresh.load_state_dict(runs.load_state(tmp_path / "o.safetensors")[0]["optimizer"])
    for a, b in zip(opt.state.values(), fresh.state.values(), strict=True):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    runs.atomic_write_json(path, {"a": 1})

    class Boom:
        def __bytes__(self) -> bytes:
            raise RuntimeError("disk full")

    with pytest.raises(TypeError):
        runs.atomic_write_bytes(path, Boom())  # type: ignore[arg-type]
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left behind


def test_unreadable_checkpoint_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "checkpoint.safetensors"
    bad.write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.raises(runs.RunError, match="checkpoint.safetensors"):
        runs.load_state(bad)


def test_metrics_ignore_a_torn_last_line_and_truncate(tmp_path: Path) -> None:
    for it in (10, 20, 30):
        runs.append_metrics(tmp_path, {"kind": "train", "it": it, "loss": 1.0 / it})
    with open(tmp_path / runs.METRICS, "a") as f:
        f.write('{"kind": "train", "it": 4')  # a killed writer
    assert [r["it"] for r in runs.read_metrics(tmp_path)] == [10, 20, 30]
    runs.truncate_metrics(tmp_path, 20)
    assert [r["it"] for r in runs.read_metrics(tmp_path, "train")] == [10, 20]


def test_create_run_refuses_a_different_config(tmp_path: Path) -> None:
    cfg = {"method": {"name": "source_only", "options": {}}, "iters": 5, "command": "a"}
    run = runs.create_run(tmp_path, "r", cfg)
    assert runs.create_run(tmp_path, "r", {**cfg, "command": "b"}) == run  # resume is fine
    with pytest.raises(runs.RunError, match="different config"):
        runs.create_run(tmp_path, "r", {**cfg, "iters": 6})
    info = runs.run_info(run)
    assert (info.method, info.state, info.max_iters, info.miou) == (
        "source_only",
        "created",
        5,
        None,
    )


def test_load_checkpoint_model_reads_a_network_stored_in_the_checkpoint(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from dida.model import ModelConfig, SegModel

    cfg = ModelConfig(backbone="mit_b0", embed_dim=16, drop_path_rate=0.0)
    torch.manual_seed(7)
    teacher = SegModel(cfg)
    runs.atomic_write_json(tmp_path / runs.CONFIG, {"model": cfg.to_dict()})
    stored = {f"method.teacher.{k}": v.contiguous() for k, v in teacher.state_dict().items()}
    save_file({**stored, "method.prototypes": torch.zeros(19, 16)}, tmp_path / runs.CHECKPOINT)
    loaded = runs.load_checkpoint_model(tmp_path, "method.teacher.")
    assert not loaded.training
    for a, b in zip(loaded.state_dict().values(), teacher.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(runs.RunError, match=r"holds no method\.warmup\.\* tensors"):
        runs.load_checkpoint_model(tmp_path, "method.warmup.")
