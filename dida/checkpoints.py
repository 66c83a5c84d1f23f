"""Reading checkpoint files safely: safetensors, our pickles and official mmcv / mmseg ``.pth``.

An official DAFormer / DIDA / MIC checkpoint is what mmcv's ``save_checkpoint`` writes:
``{"meta": {...}, "state_dict": {...}, "optimizer": {...}}``.  Its ``meta`` block holds the config
text, ``CLASSES``, ``PALETTE``, mmcv / mmseg versions, seed, iteration and hook messages, and may
hold numpy scalars and arrays.  Every pickle is read with ``torch.load(weights_only=True)``; the
only globals allowed beyond torch's own are the numpy types that block needs (``mmcv_meta_globals``),
and only for the duration of one load.  Nothing here imports the model (``dida.model`` builds on it).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file as load_safetensors
from torch import Tensor

NUMPY_META_DTYPES = (
    "b1",
    "i1",
    "i2",
    "i4",
    "i8",
    "u1",
    "u2",
    "u4",
    "u8",
    "f2",
    "f4",
    "f8",
    "c8",
    "c16",
)
"""dtypes of the numpy scalars / arrays an mmcv meta block may hold (seed, best_score, ...)."""


def mmcv_meta_globals() -> list:
    """The allow-list for an mmcv ``meta`` block under ``weights_only=True``: ``numpy.ndarray``,
    ``numpy.dtype`` and its per-type classes (numpy 2 pickles ``numpy.dtypes.Int64DType``), and
    numpy's scalar / array rebuilders under both their numpy 2 (``numpy._core``) and numpy 1
    (``numpy.core``, what released checkpoints name) module paths."""
    from numpy._core.multiarray import _reconstruct, scalar

    dtypes = [type(np.dtype(code)) for code in NUMPY_META_DTYPES]
    legacy = [(scalar, "numpy.core.multiarray.scalar")]
    legacy.append((_reconstruct, "numpy.core.multiarray._reconstruct"))
    return [np.ndarray, np.dtype, scalar, _reconstruct, *dtypes, *legacy]


MIN_TORCH_FOR_PICKLE = (2, 10)
"""torch.load(weights_only=True) before 2.10 has known escapes (CVE-2025-32434, CVE-2026-24747)."""


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, holds non-finite weights, or does not fit the model; the
    message names the file and what to do."""


def nonfinite_tensors(state: Mapping[str, Tensor]) -> list[str]:
    """Keys of the floating-point tensors of ``state`` holding a NaN or an infinity."""
    return [
        k for k, v in state.items() if (v.is_floating_point() or v.is_complex()) and not _finite(v)
    ]


_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64, torch.complex64, torch.complex128)


def _finite(value: Tensor) -> bool:
    """Whether ``value`` holds no NaN or infinity.  CPU tensors go through numpy: a model has
    hundreds of tensors, and on a busy CPU each torch op costs a thread-pool round trip (2 s
    instead of 2 ms for mit_b0 while a training runs beside the app)."""
    if value.device.type == "cpu" and value.dtype in _NUMPY_FLOATS:
        return bool(np.isfinite(value.detach().resolve_conj().numpy()).all())
    return bool(torch.isfinite(value).all())


def nonfinite_message(path: str | Path, state: Mapping[str, Tensor], bad: Sequence[str]) -> str:
    """Why a file with non-finite tensors ``bad`` is refused, and what to do instead."""
    return (
        f"{path} holds non-finite weights (NaN or inf) in {len(bad)} of {len(state)} tensors, "
        f"e.g. {list(bad[:3])}: the training that wrote it diverged. Use an earlier checkpoint "
        "or snapshot, or pass allow_nonfinite=True to inspect it anyway"
    )


def check_torch_for_pickle(version: str) -> None:
    """Refuse to unpickle with a torch whose ``weights_only`` loader is known to be escapable."""
    major, minor = (int(p) for p in re.match(r"(\d+)\.(\d+)", version).groups())
    if (major, minor) < MIN_TORCH_FOR_PICKLE:
        raise RuntimeError(
            f"torch {version} cannot load pickled checkpoints safely (CVE-2025-32434, "
            "CVE-2026-24747): upgrade to torch >= 2.10 or convert the file to .safetensors"
        )


def _read_raw(path: Path) -> object:
    """The file's top-level object: safetensors, or ``torch.load(weights_only=True)`` allowing only
    the numpy types an mmcv ``meta`` block pickles (``MMCV_META_GLOBALS``, for this call only)."""
    if path.suffix == ".safetensors":
        return load_safetensors(str(path), device="cpu")
    with torch.serialization.safe_globals(mmcv_meta_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def _unwrap(raw: object, path: Path) -> dict[str, Tensor]:
    """Take ``state_dict`` (mmcv) or ``model`` out of a checkpoint dict; drop DataParallel's prefix."""
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a dict of tensors")
    for container in ("state_dict", "model"):
        if isinstance(raw.get(container), Mapping):
            raw = raw[container]
            break
    bad = [k for k, v in raw.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"{path}: entries {bad[:5]} are not tensors; expected a state dict or a checkpoint "
            f"with a 'state_dict' entry (keys seen: {list(raw)[:8]})"
        )
    return {k.removeprefix("module."): v for k, v in raw.items()}


def load_checkpoint_state(path: str | Path, allow_nonfinite: bool = False) -> dict[str, Tensor]:
    """Read the flat tensor dict of a checkpoint: ``.safetensors``, or a pickle loaded with
    ``torch.load(weights_only=True)`` (mmcv ``{"state_dict", "meta", "optimizer"}`` is unwrapped).

    Raises :class:`CheckpointError` for an unreadable file and, unless ``allow_nonfinite``, for
    one holding NaN or infinite weights."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix != ".safetensors":
        check_torch_for_pickle(torch.__version__)
    try:
        raw = _read_raw(path)
    except Exception as err:  # unpickling / safetensors / zip errors: all mean "not readable"
        raise CheckpointError(
            f"cannot read {path} as a checkpoint ({type(err).__name__}: {str(err)[:300]}). "
            "Expected a DAFormer/DIDA/mmseg .pth, a SegFormer mit_bN.pth or a .safetensors file; "
            "pickles are only read with weights_only=True (convert others to .safetensors)"
        ) from err
    state = _unwrap(raw, path)
    bad = nonfinite_tensors(state)
    if bad and not allow_nonfinite:
        raise CheckpointError(nonfinite_message(path, state, bad))
    return state


def describe_state(state: Mapping[str, Tensor]) -> str:
    """One line on what a state dict holds: tensor count, key prefixes, a few example keys."""
    prefixes = Counter(k.split(".", 1)[0] for k in state)
    parts = ", ".join(f"{p}.* ({n})" for p, n in prefixes.most_common(8))
    return f"{len(state)} tensors; prefixes {parts}; e.g. {list(state)[:3]}"


@dataclass(frozen=True)
class CheckpointMeta:
    """What an mmcv ``meta`` block says about an official checkpoint (empty fields when absent)."""

    config: str
    """The training config as Python text (mmcv ``Config.pretty_text``)."""
    classes: tuple[str, ...]
    iteration: int | None
    versions: dict[str, str]
    """``mmcv_version`` / ``mmseg_version`` entries."""
    test_cfg: dict
    """``model.test_cfg`` parsed from ``config`` (``mode``, ``crop_size``, ``stride``) or {}."""


def read_checkpoint_meta(path: str | Path) -> CheckpointMeta:
    """The ``meta`` block of a ``.pth`` checkpoint (an empty one for safetensors or plain state
    dicts); raises :class:`CheckpointError` for an unreadable file."""
    path = Path(path)
    try:
        raw = {} if path.suffix == ".safetensors" else _read_raw(path)
    except Exception as err:  # same failures as load_checkpoint_state
        raise CheckpointError(
            f"cannot read {path} ({type(err).__name__}: {str(err)[:300]})"
        ) from err
    meta = raw.get("meta") if isinstance(raw, Mapping) else None
    meta = meta if isinstance(meta, Mapping) else {}
    config = str(meta.get("config") or "")
    iteration = meta.get("iter")
    return CheckpointMeta(
        config=config,
        classes=tuple(str(c) for c in meta.get("CLASSES") or ()),
        iteration=None if iteration is None else int(iteration),
        versions={k: str(v) for k, v in meta.items() if str(k).endswith("_version")},
        test_cfg=parse_test_cfg(config),
    )


_TEST_CFG = re.compile(r"test_cfg\s*=\s*dict\(([^()]*(?:\([^()]*\)[^()]*)*)\)")
_ITEM = re.compile(r"(\w+)\s*=\s*('[^']*'|\"[^\"]*\"|\([^()]*\)|\[[^\[\]]*\]|[\w.]+)")


def parse_test_cfg(config: str) -> dict:
    """``test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341))`` → a dict of literal
    values (the last ``test_cfg`` in the text wins, as in mmcv's merged config); {} when absent.
    Values are read with ``ast.literal_eval``: nothing in the text is executed."""
    found = _TEST_CFG.findall(config)
    if not found:
        return {}
    parsed = {}
    for key, text in _ITEM.findall(found[-1]):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            continue
        parsed[key] = tuple(value) if isinstance(value, list) else value
    return parsed


def parse_checkpoint_arg(text: str) -> tuple[Path, str]:
    """``PATH`` or ``PATH:teacher`` / ``PATH:student`` (``--checkpoint``) → (path, ``"model"`` or
    ``"ema_model"``); a colon inside the path itself is kept when the suffix is not a choice."""
    head, sep, choice = text.rpartition(":")
    if sep and choice in WEIGHT_CHOICES:
        return Path(head), WEIGHT_CHOICES[choice]
    return Path(text), "model"


WEIGHT_CHOICES = {"student": "model", "teacher": "ema_model", "model": "model", "ema": "ema_model"}
"""``--checkpoint PATH:CHOICE`` names → segmentor prefix in a UDA checkpoint."""
