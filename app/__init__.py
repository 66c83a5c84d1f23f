"""DIDA Studio's Gradio app: ``build_app(studio)`` lays out the tabs, ``launch_app`` serves them.

The app only places what the engine computes (``dida.studio``, ``dida.visualize``, ``dida.explain``,
``dida.analysis``); start it with ``python launch.py`` (``app.cli``). The names below load
``app.main`` (gradio, torch) on first use, so ``app.cli`` answers ``--help`` and refuses a bad
``--host`` without those imports.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["CSS", "THEME", "build_app", "launch_app"]


def __getattr__(name: str) -> Any:
    """``app.build_app`` and friends, imported from ``app.main`` when first asked for."""
    if name in __all__:
        return getattr(importlib.import_module("app.main"), name)
    raise AttributeError(f"module 'app' has no attribute {name!r}")
