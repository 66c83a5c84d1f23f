"""Where and how a run was made: the command line and the environment recorded in its config."""

from __future__ import annotations

import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from dida.config import TrainConfig
from dida.distributed import resolve_device


def run_config(cfg: TrainConfig, argv: list[str] | None = None) -> dict[str, Any]:
    """The config written to ``config.json``: the train config + command + environment."""
    return {
        **cfg.to_dict(),
        "command": command_line(argv if argv is not None else sys.argv),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "hardware": hardware_name(cfg.device),
        },
    }


def hardware_name(device: str) -> str:
    """What the run starts training on: the GPU's name, or the CPU model and torch's threads."""
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        return torch.cuda.get_device_name(resolved)
    return f"{platform.processor() or _cpu_model()} ({torch.get_num_threads()} threads)"


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "CPU"
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else "CPU"


def command_line(argv: list[str]) -> str:
    """The program (first item, as given) and its shell-quoted arguments."""
    return " ".join([argv[0], shlex.join(argv[1:])]) if argv else ""
