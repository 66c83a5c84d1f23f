"""The method table: names → (class, config class). Unknown names raise with the valid ones.

``dida_mic`` is the DIDA class with ``DIDAMICConfig`` (DIDA's options plus MIC's masking), so
DIDA + MIC has its own name and preset options without a second class."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from torch import nn

from dida.methods.base import Method, MethodContext
from dida.methods.daformer import DAFormer, DAFormerConfig
from dida.methods.dida import DIDA, DIDAConfig, DIDAMICConfig
from dida.methods.mic import MIC, MICConfig
from dida.methods.oracle import Oracle, OracleConfig
from dida.methods.proda import ProDA, ProDAConfig
from dida.methods.source_only import SourceOnly, SourceOnlyConfig

METHODS: dict[str, tuple[type[Method], type]] = {
    "source_only": (SourceOnly, SourceOnlyConfig),
    "oracle": (Oracle, OracleConfig),
    "proda": (ProDA, ProDAConfig),
    "daformer": (DAFormer, DAFormerConfig),
    "dida": (DIDA, DIDAConfig),
    "mic": (MIC, MICConfig),
    "dida_mic": (DIDA, DIDAMICConfig),
}


def method_config(name: str, overrides: dict[str, Any] | None = None) -> Any:
    """The config dataclass of method ``name`` with ``overrides`` applied (unknown keys raise)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {sorted(METHODS)}")
    cfg_cls = METHODS[name][1]
    valid = {f.name for f in fields(cfg_cls)}
    unknown = set(overrides or {}) - valid
    if unknown:
        raise ValueError(
            f"{name} has no option(s) {sorted(unknown)}; valid options: {sorted(valid)}"
        )
    return cfg_cls(**(overrides or {}))


def trained_domains(name: str) -> tuple[str, ...]:
    """The labelled/unlabelled domains method ``name`` reads each iteration: a supervised method's
    ``domain`` (``("source",)`` or ``("target",)``), else both."""
    domain = getattr(METHODS[name][0], "domain", None)
    return ("source", "target") if domain is None else (domain,)


def build_method(
    name: str, model: nn.Module, ctx: MethodContext, overrides: dict[str, Any] | None = None
) -> Method:
    """Instantiate method ``name`` around the student ``model``."""
    return METHODS[name][0](model, ctx, method_config(name, overrides))
