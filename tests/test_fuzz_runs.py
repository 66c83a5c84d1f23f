"""Property-based fuzzing of the checkpoint loaders (safetensors and ``.pth``) and of run names.

Each generated case ends in a loaded state or model, or in the project's own error naming the file
(:class:`RunError`, :class:`CheckpointError`) — never a raw SafetensorError, KeyError,
UnpicklingError or load_state_dict RuntimeError, never a hang. Settings and helpers are
``test_fuzz``'s.
"""

from __future__ import annotations

import io
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from safetensors.torch import save as st_save
from test_fuzz import fuzz, settle
from test_model import official_state

from dida import runs
from dida.model import CheckpointError, ModelConfig, SegModel, load_official
from dida.runs import RunError, RunNameError

EXAMPLES = {"state": 150, "damaged": 150, "run_model": 25, "official": 30, "names": 300}
"""Generated cases per test of this file."""

TINY = ModelConfig(backbone="mit_b0", embed_dim=8, num_classes=3, drop_path_rate=0.0)


@pytest.fixture(scope="module")
def tiny_model() -> SegModel:
    torch.manual_seed(0)
    return SegModel(TINY, load_backbone_weights=False)


@pytest.fixture(scope="module")
def tiny_state(tiny_model: SegModel) -> dict[str, torch.Tensor]:
    return tiny_model.state_dict()


@pytest.fixture(scope="module")
def tiny_official(tiny_model: SegModel) -> dict[str, torch.Tensor]:
    """The tiny model's state in the official MiT / mmseg naming."""
    return official_state(tiny_model)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_runs")


# --- generated states ------------------------------------------------------------------------

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.uint8]
DTYPES += [torch.bool]


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    """A small tensor of any dtype and shape (0-d and empty included), sometimes non-finite."""
    shape = draw(st.lists(st.integers(0, 4), max_size=3))
    values = torch.randn(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    if values.numel() and draw(st.booleans()):
        values.view(-1)[0] = draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
    return values.to(draw(st.sampled_from(DTYPES)))


KEYS = st.text(st.characters(codec="utf-8", exclude_characters="."), min_size=1, max_size=6)
NESTED = st.recursive(
    st.one_of(tensors(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=8,
)
"""Nested states like a training checkpoint (dicts, lists, tensors, JSON scalars)."""


def nonfinite(state: Any) -> bool:
    """Whether any floating-point tensor in ``state`` holds a NaN or an infinity (numpy: an
    oracle independent of dida.model.nonfinite_tensors)."""
    tensors_in = runs.flatten_state(state)[0].values()
    return any(
        t.is_floating_point() and not np.isfinite(t.float().numpy()).all() for t in tensors_in
    )


@fuzz(EXAMPLES["state"])
@given(state=st.dictionaries(KEYS, NESTED, max_size=4), metadata=st.dictionaries(KEYS, NESTED))
def test_saved_states_load_back_or_are_refused_as_non_finite(
    folder: Path, state: dict, metadata: dict
) -> None:
    path = folder / "state.safetensors"
    metadata = json.loads(json.dumps(runs.flatten_state(metadata)[1]))
    runs.save_state(path, state, metadata)
    loaded = settle(lambda: runs.load_state(path), RunError, str(path), "allow_nonfinite")
    assert isinstance(loaded, RunError) == nonfinite(state)
    state_back, metadata_back = runs.load_state(path, allow_nonfinite=True)
    assert metadata_back == metadata
    assert _same(state_back, json.loads(json.dumps(runs.flatten_state(state)[1])), state)


def _same(loaded: Any, skeleton: Any, original: Any) -> bool:
    """``loaded`` equals ``original`` (tensors bitwise, tuples as lists, as JSON stores them)."""
    if isinstance(original, torch.Tensor):
        bits = (t.reshape(-1).view(torch.uint8) for t in (loaded, original))
        return loaded.shape == original.shape and torch.equal(*bits)
    if isinstance(original, dict):
        return list(loaded) == list(original) and all(
            _same(loaded[k], skeleton[k], original[k]) for k in original
        )
    if isinstance(original, (list, tuple)):
        return len(loaded) == len(original) and all(map(_same, loaded, skeleton, original))
    return loaded == skeleton


# --- damaged safetensors files ---------------------------------------------------------------

SKELETONS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(['{"a": {"__tensor__": "missing"}}', '{"__items__": 5}', "[1, 2]", "{"]),
    st.sampled_from(['{"a": {"__tensor__": [1]}}', '{"a": {"__items__": [[1, 2, 3]]}}', "7"]),
    st.sampled_from(["[" * 5000 + "]" * 5000, '{"a": {"__items__": [[[1], 2]]}}']),
)


@st.composite
def safetensors_bytes(draw: st.DrawFn) -> bytes:
    """Valid safetensors whose header lies about the state, truncated files, and random bytes."""
    tensors_in = draw(st.dictionaries(KEYS, tensors(), max_size=3))
    header = {"skeleton": draw(SKELETONS)} if draw(st.booleans()) else {}
    if draw(st.booleans()):
        header["metadata"] = draw(st.sampled_from(["{}", "[]", "x", '{"it": 3}']))
    data = st_save({k: v.contiguous() for k, v in tensors_in.items()}, metadata=header)
    kind = draw(st.sampled_from(["whole", "truncated", "random", "empty"]))
    if kind == "truncated":
        return data[: draw(st.integers(0, len(data) - 1))]
    return {"whole": data, "random": draw(st.binary(max_size=200)), "empty": b""}[kind]


@fuzz(EXAMPLES["damaged"])
@given(data=safetensors_bytes())
@example(data=st_save({"a": torch.zeros(2)}, metadata={"skeleton": '{"b": {"__tensor__": "x"}}'}))
@example(data=st_save({"a": torch.zeros(2)}, metadata={"skeleton": '{"a": 1}'})[:-3])
def test_damaged_state_files_are_refused_naming_the_file(folder: Path, data: bytes) -> None:
    path = folder / "damaged.safetensors"
    path.write_bytes(data)
    result = settle(lambda: runs.load_state(path, allow_nonfinite=True), RunError, str(path))
    assert isinstance(result, RunError) or (isinstance(result[0], dict) and len(result) == 2)


# --- run folders: load_run_model and load_checkpoint_model -----------------------------------

MUTATIONS = ["none", "none", "drop", "extra", "shape", "scalar", "dtype", "int", "nan", "conv_seg"]
MUTATION = st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 10**4))
"""(what to break, index of the key to break it in)."""


def mutate(state: dict[str, torch.Tensor], mutation: tuple[str, int]) -> dict[str, torch.Tensor]:
    """A copy of ``state`` with one key, shape, dtype or value broken as ``mutation`` says."""
    kind, index = mutation
    state = dict(state)
    key = sorted(state)[index % len(state)]
    if kind == "drop":
        del state[key]
    elif kind == "extra":
        state[key + "_extra"] = torch.zeros(1)
    elif kind in ("shape", "scalar"):
        state[key] = torch.zeros(()) if kind == "scalar" else torch.zeros(*state[key].shape, 2)
    elif kind in ("dtype", "int"):
        state[key] = state[key].to(torch.int32 if kind == "int" else torch.float16)
    elif kind == "nan" and state[key].is_floating_point() and state[key].numel():
        state[key] = state[key].clone()
        state[key].view(-1)[0] = float("nan")
    elif kind == "conv_seg":  # the classifier's input width D wrong (5 instead of 8)
        state["decode_head.conv_seg.weight"] = torch.zeros(3, 5, 1, 1)
    return state


def fits(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> bool:
    """Same keys and shapes, finite, and each dtype convertible (float to float, int to int)."""

    def kind(t: torch.Tensor) -> tuple[bool, bool]:
        return t.is_floating_point(), t.dtype == torch.bool

    return (
        state.keys() == reference.keys()
        and all(
            state[k].shape == v.shape and kind(state[k]) == kind(v) for k, v in reference.items()
        )
        and not nonfinite(state)
    )


GOOD_CONFIG = {"model": TINY.to_dict()}
CONFIGS = st.one_of(
    st.just(GOOD_CONFIG),
    st.sampled_from([{"model": 5}, {"model": {"embed": 3}}, [], {"model": {"backbone": "x"}}]),
    st.sampled_from([{"model": {**TINY.to_dict(), "embed_dim": 10**9}}, {}, {"model": "abc"}]),
    st.sampled_from([{"model": {**TINY.to_dict(), "dilations": [1.5]}}, "NaN"]),
    st.binary(max_size=40),
)


def _write_run(run_dir: Path, config: Any, model_state: dict, teacher: dict) -> None:
    run_dir.mkdir(exist_ok=True)
    raw = config if isinstance(config, bytes) else json.dumps(config).encode()
    (run_dir / runs.CONFIG).write_bytes(raw)
    skeleton = {k: {"__tensor__": k} for k in model_state}  # save_state's layout, without fsync
    header = {"skeleton": json.dumps(skeleton), "metadata": "{}"}
    (run_dir / runs.MODEL).write_bytes(st_save(model_state, metadata=header))
    stored = {f"method.teacher.{k}": v.contiguous() for k, v in teacher.items()}
    (run_dir / runs.CHECKPOINT).write_bytes(st_save({**stored, "optim.x": torch.ones(1)}))


@fuzz(EXAMPLES["run_model"])
@given(
    model_change=MUTATION,
    teacher_change=MUTATION,
    config=CONFIGS,
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
)
@example(model_change=("nan", 5), teacher_change=("none", 0), config=GOOD_CONFIG, cut=None)
@example(model_change=("shape", 9), teacher_change=("none", 0), config=GOOD_CONFIG, cut=4000)
@example(model_change=("none", 0), teacher_change=("shape", 9), config=b"\xff", cut=None)
def test_run_folders_load_models_or_name_the_file(
    folder: Path,
    tiny_state: dict,
    model_change: tuple,
    teacher_change: tuple,
    config: Any,
    cut: int | None,
) -> None:
    run_dir = folder / "run"
    model_state, teacher = mutate(tiny_state, model_change), mutate(tiny_state, teacher_change)
    _write_run(run_dir, config, model_state, teacher)
    if cut is not None:  # a checkpoint cut short by a kill or a full disk
        whole = (run_dir / runs.CHECKPOINT).read_bytes()
        (run_dir / runs.CHECKPOINT).write_bytes(whole[: cut % len(whole)])
    for load, state in ((runs.load_run_model, model_state), (runs.load_checkpoint_model, teacher)):
        model = settle(lambda f=load: f(run_dir), RunError, str(run_dir))
        intact = cut is None or load is runs.load_run_model
        valid = config == GOOD_CONFIG and intact and fits(state, tiny_state)
        assert isinstance(model, SegModel) == valid
        assert isinstance(model, RunError) or not model.training


# --- official checkpoints (.pth pickles and .safetensors) ------------------------------------


class Payload:
    """A pickle that would create a folder when unpickled without ``weights_only``."""

    marker = Path("/tmp/dida-fuzz-pickle-ran")

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.marker),)


DISALLOWED = [Payload(), {1, 2}, OrderedDict(a=Payload()), Path("x"), complex(1, 2), bytearray(3)]
DISALLOWED += [os.system, {"state_dict": {"a": Payload()}}, {"model": {1: torch.zeros(1)}}]
DISALLOWED += [[torch.zeros(2)], 7, "state_dict", {1: torch.zeros(1)}, {"meta": {"iter": 3}}]
DISALLOWED += [{"state_dict": {"a": np.zeros(2)}}, np.float32(1)]
"""Pickles weights_only refuses, and allowed ones that are no state dict."""

WRAPPERS = ["plain", "state_dict", "uda", "junk", "disallowed"]
MMCV_META = {"iter": 3, "seed": np.int64(5), "hist": np.arange(3.0), "env_info": "x"}
"""An mmcv ``meta`` block: numpy scalars and arrays are what released checkpoints pickle."""


def official_bytes(
    state: dict[str, torch.Tensor], wrapper: str, suffix: str, keep: float, extra: Any
) -> bytes:
    """A checkpoint file of ``state`` as mmcv, plain or UDA dict (or ``extra`` bytes / object),
    ``.pth`` or ``.safetensors``, cut to the fraction ``keep`` of its bytes."""
    obj: Any = {
        "plain": state,
        "state_dict": {"state_dict": state, "meta": MMCV_META},
        "uda": {f"model.{k}": v for k, v in state.items()},
    }.get(wrapper, extra)
    if wrapper == "junk":
        data = extra
    elif suffix == ".safetensors" and wrapper in ("plain", "uda"):
        data = st_save({k: v.contiguous() for k, v in obj.items()})
    else:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        data = buffer.getvalue()
    return data[: max(1, int(len(data) * keep))]


@fuzz(EXAMPLES["official"])
@given(
    mutation=MUTATION,
    wrapper=st.sampled_from(WRAPPERS),
    suffix=st.sampled_from([".pth", ".safetensors"]),
    keep=st.one_of(st.just(1.0), st.floats(0, 1)),
    extra=st.one_of(st.binary(max_size=300), st.sampled_from(DISALLOWED)),
)
@example(mutation=("conv_seg", 0), wrapper="plain", suffix=".pth", keep=1.0, extra=b"")
@example(mutation=("none", 0), wrapper="disallowed", suffix=".pth", keep=1.0, extra=Payload())
@example(mutation=("none", 0), wrapper="disallowed", suffix=".pth", keep=1.0, extra={1: "x"})
def test_official_checkpoints_load_or_name_the_file(
    folder: Path,
    tiny_official: dict,
    mutation: tuple,
    wrapper: str,
    suffix: str,
    keep: float,
    extra: Any,
) -> None:
    state = mutate(tiny_official, mutation)
    if wrapper == "junk" and not isinstance(extra, bytes):
        wrapper = "disallowed"
    if wrapper == "disallowed" and isinstance(extra, bytes):
        wrapper = "junk"
    path = folder / f"official{suffix}"
    path.write_bytes(official_bytes(state, wrapper, suffix, keep, extra))
    model = settle(lambda: load_official(path), CheckpointError, str(path))
    readable = wrapper in ("plain", "uda") or (wrapper, suffix) == ("state_dict", ".pth")
    valid = readable and keep == 1.0 and fits(state, tiny_official)
    assert isinstance(model, SegModel) == valid
    assert not Payload.marker.exists()


def test_a_wrong_classifier_shape_is_one_mismatch_not_every_head_layer(
    folder: Path, tiny_official: dict
) -> None:
    state = {**tiny_official, "decode_head.conv_seg.weight": torch.zeros(3, 5, 1, 1)}
    path = folder / "conv_seg.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as raised:
        load_official(path)
    problems = str(raised.value).split("does not match the model:\n")[1]
    assert problems == (
        "shape (1): ['decode_head.conv_seg.weight: file (3, 5, 1, 1) vs model (3, 8, 1, 1)']"
    )


def test_official_loader_refuses_non_finite_weights_unless_allowed(
    folder: Path, tiny_official: dict
) -> None:
    state = dict(tiny_official)
    for key, value in (("decode_head.conv_seg.bias", "nan"), ("backbone.norm1.weight", "-inf")):
        state[key] = state[key].clone()
        state[key][0] = float(value)
    path = folder / "diverged.pth"
    torch.save({"state_dict": state, "meta": {"iter": 9}}, path)
    message = rf"{path}.*non-finite weights \(NaN or inf\) in 2 of {len(state)} tensors"
    with pytest.raises(CheckpointError, match=message + ".*allow_nonfinite=True"):
        load_official(path)
    model = load_official(path, allow_nonfinite=True)
    assert torch.isnan(model.decode_head.conv_seg.bias[0])


# --- run names -------------------------------------------------------------------------------

NAMES = st.one_of(
    st.text(),
    st.text(st.sampled_from("ab./\\\x00-_ ~é:"), max_size=12),
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,110}", fullmatch=True),
    st.sampled_from(["..", ".", "", "a/../../x", "/etc", "a\x00b", "x" * 100, "x" * 101, ".git"]),
    st.sampled_from(["escape", "-rf", "a/b", "~", "ok.name", "a" * 255, None, 5, b"bytes"]),
)


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder holding a symlink ``escape`` that points outside it."""
    root = tmp_path_factory.mktemp("names") / "runs"
    root.mkdir()
    (root / "escape").symlink_to(root.parent)
    return root


@fuzz(EXAMPLES["names"])
@given(name=NAMES)
@example(name="escape")
@example(name="..")
def test_accepted_run_names_are_direct_children_of_the_runs_folder(
    runs_root: Path, name: Any
) -> None:
    checked = settle(lambda: runs.check_run_name(name), RunNameError, "run name")
    path = settle(lambda: runs.run_path(runs_root, name), RunNameError, "run name")
    if isinstance(path, RunNameError):
        assert isinstance(checked, RunNameError) or name == "escape"
        return
    assert checked == name and path == runs_root / name
    path.mkdir(exist_ok=True)
    assert path.resolve().parent == runs_root.resolve() and path.is_dir()
