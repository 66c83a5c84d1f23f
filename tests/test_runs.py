"""Run directories: atomic safetensors state round-trips, metrics logs, listings."""

from __future__ import annotations

import json
import os
import stat
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
    with runs.RunLock(run):  # a live owner: the state as written
        info = runs.run_info(run)
    assert (info.method, info.state, info.max_iters, info.miou) == (
        "source_only",
        "created",
        5,
        None,
    )
    assert runs.run_info(run).state == "interrupted"  # nobody holds it: interrupted at 0


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


# --- loaders: non-finite weights, damaged files, mismatches ------------------------------------


def _tiny_run(folder: Path) -> dict[str, torch.Tensor]:
    """A run folder with config, model.safetensors and a checkpoint holding the teacher."""
    from dida.model import ModelConfig, SegModel

    cfg = ModelConfig(backbone="mit_b0", embed_dim=8, num_classes=3, drop_path_rate=0.0)
    torch.manual_seed(3)
    state = SegModel(cfg, load_backbone_weights=False).state_dict()
    runs.atomic_write_json(folder / runs.CONFIG, {"model": cfg.to_dict()})
    runs.save_state(folder / runs.MODEL, state, {"it": 4})
    runs.save_state(folder / runs.CHECKPOINT, {"method": {"teacher": state}}, {"it": 4})
    return state


def _poison(path: Path, keys: list[str]) -> None:
    """Rewrite a save_state file with a NaN or inf as the first element of each of ``keys``."""
    flat, skeleton = runs.flatten_state(runs.load_state(path)[0])
    for i, key in enumerate(keys):
        flat[key].view(-1)[0] = (float("nan"), float("inf"))[i % 2]
    runs.save_state(path, runs.unflatten_state(skeleton, flat), runs.load_state(path)[1])


def test_loaders_refuse_non_finite_weights_naming_the_file_and_count(tmp_path: Path) -> None:
    state = _tiny_run(tmp_path)
    keys = [k for k, v in state.items() if v.is_floating_point()][:2]
    _poison(tmp_path / runs.MODEL, keys)
    message = rf"{runs.MODEL} holds non-finite weights \(NaN or inf\) in 2 of {len(state)} tensors"
    with pytest.raises(runs.RunError, match=message):
        runs.load_state(tmp_path / runs.MODEL)
    with pytest.raises(runs.RunError, match=message + r".*allow_nonfinite=True"):
        runs.load_run_model(tmp_path)
    model = runs.load_run_model(tmp_path, allow_nonfinite=True)
    assert torch.isnan(model.state_dict()[keys[0]].view(-1)[0])
    assert runs.load_checkpoint_model(tmp_path).state_dict().keys() == state.keys()
    _poison(tmp_path / runs.CHECKPOINT, [f"method.teacher.{k}" for k in keys[:1]])
    with pytest.raises(runs.RunError, match=rf"{runs.CHECKPOINT} holds non-finite.* 1 of "):
        runs.load_checkpoint_model(tmp_path)
    assert runs.load_checkpoint_model(tmp_path, allow_nonfinite=True).training is False


def test_a_truncated_checkpoint_is_named_with_what_to_do(tmp_path: Path) -> None:
    _tiny_run(tmp_path)
    data = (tmp_path / runs.CHECKPOINT).read_bytes()
    (tmp_path / runs.CHECKPOINT).write_bytes(data[: len(data) // 2])
    with pytest.raises(runs.RunError, match=r"checkpoint.safetensors is not a readable .*restore"):
        runs.load_checkpoint_model(tmp_path)
    (tmp_path / runs.CONFIG).write_bytes(b"\xff\xfe")
    with pytest.raises(runs.RunError, match=r"config.json is not valid JSON"):
        runs.load_run_model(tmp_path)
    runs.atomic_write_json(tmp_path / runs.CONFIG, {"model": {"embed": 3}})
    with pytest.raises(runs.RunError, match=r"config.json has no usable model section"):
        runs.load_run_model(tmp_path)


def test_a_model_file_of_another_shape_lists_each_mismatch(tmp_path: Path) -> None:
    state = _tiny_run(tmp_path)
    state["decode_head.conv_seg.weight"] = torch.zeros(3, 5, 1, 1)
    state["decode_head.conv_seg.bias"] = state["decode_head.conv_seg.bias"].long()
    runs.save_state(tmp_path / runs.MODEL, state)
    with pytest.raises(runs.RunError) as raised:
        runs.load_run_model(tmp_path)
    assert str(raised.value).splitlines()[1:] == [
        "shape (1): ['decode_head.conv_seg.weight: file (3, 5, 1, 1) vs model (3, 8, 1, 1)']",
        "dtype (1): ['decode_head.conv_seg.bias: file torch.int64 vs model torch.float32']",
    ]
    assert f"{runs.MODEL} (model of {tmp_path / runs.CONFIG}) does not match" in str(raised.value)


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
def test_atomic_writes_get_the_mode_open_would_give(tmp_path: Path) -> None:
    runs.atomic_write_json(tmp_path / "a.json", {"x": 1})
    (tmp_path / "plain").write_text("x")

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(tmp_path / "a.json") == mode(tmp_path / "plain") == runs.FILE_MODE
