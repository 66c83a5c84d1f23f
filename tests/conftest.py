"""Shared fixtures: a tiny SynthCity tree (generated once per session) and tiny training configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dida.data.synthcity import ensure_synthcity

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def synthcity_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` SynthCity preset with all three splits."""
    root = tmp_path_factory.mktemp("synthcity") / "tiny"
    return ensure_synthcity(root, "tiny", ("source", "train", "val"))
