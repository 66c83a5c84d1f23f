"""The oracle: the same supervised step on labelled target crops — the upper bound of every UDA table."""

from __future__ import annotations

from dataclasses import dataclass

from dida.methods.source_only import SourceOnly, SourceOnlyConfig


@dataclass
class OracleConfig(SourceOnlyConfig):
    """Same knobs as source-only; only the domain it trains on differs."""


class Oracle(SourceOnly):
    """Trained on target labels (reads ``batch["target"]["label"]``)."""

    name = "oracle"
    domain = "target"
