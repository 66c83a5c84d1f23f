"""Which source data the long-tail bars count and which source data a run trained on, so that one
run's training statistics are never drawn as another dataset's bars.

A SynthCity source split is fixed by its generator settings (image count, size, seed) and named by
its preset; a real dataset (GTA5, SYNTHIA) by its layout and folder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from dida import runs
from dida.data.synthcity import PRESETS, read_manifest, synthcity_roots
from dida.studio.images import SOURCE_KINDS

SYNTHCITY_SOURCE = "synthcity"


@dataclass(frozen=True)
class SourceIdentity:
    """What a source split's class statistics depend on, and its name for people."""

    kind: str
    """``"synthcity"``, ``"gta5"`` or ``"synthia"``."""
    key: tuple
    """SynthCity: (source images, height, width, seed); a real dataset: (its resolved folder,)."""
    name: str
    """E.g. ``SynthCity preset tiny (data/synthcity-tiny)`` or ``GTA5 (/data/gta)``."""

    def same_data(self, other: SourceIdentity) -> bool:
        """Whether both name the same source images (folder names aside for SynthCity)."""
        return (self.kind, self.key) == (other.kind, other.key)


def _synthcity_key(cfg: dict) -> tuple:
    """The generator settings a SynthCity source split depends on (not the target's shift)."""
    return tuple(cfg.get(k) for k in ("n_source", "height", "width", "seed"))


def _preset_name(key: tuple) -> str:
    """The preset whose source split has ``key``, else the settings themselves."""
    for name, cfg in PRESETS.items():
        if _synthcity_key(asdict(cfg)) == key:
            return f"preset {name}"
    return f"with custom settings (source images, height, width, seed) = {key}"


def synthcity_source(key: tuple, root: Path | str) -> SourceIdentity:
    """The SynthCity source split of generator settings ``key`` found at ``root``."""
    name = f"SynthCity source split, {_preset_name(key)} ({root})"
    return SourceIdentity(SYNTHCITY_SOURCE, key, name)


def dataset_source(kind: str, root: Path | str) -> SourceIdentity:
    """The identity of a source dataset of layout ``kind`` at ``root`` (``images.open_source``'s
    kind and root): the source split of a SynthCity tree is known by its generator settings,
    anything else by its resolved folder."""
    root = Path(root)
    manifest = read_manifest(root.parent)
    if manifest is not None and synthcity_roots(root.parent)[0] == root:
        return synthcity_source(_synthcity_key(manifest.get("config", {})), root.parent)
    name = SOURCE_KINDS.get(kind, kind)
    return SourceIdentity(kind, (str(root.resolve()),), f"{name} ({root})")


def run_source(run_dir: Path) -> SourceIdentity | None:
    """The source data a project run (or shipped checkpoint) trained on, from its ``config.json``:
    a SynthCity preset's source split (SynthCity runs are generated with seed 0) or a real
    dataset's folder (relative folders are read from the current directory); None unrecorded."""
    try:
        config = runs.read_json(run_dir / runs.CONFIG)
    except runs.RunError:
        return None
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict) or "source" not in data:
        return None
    root, preset = data.get("source_root", ""), data.get("synthcity_preset", "default")
    if data["source"] != SYNTHCITY_SOURCE:
        return dataset_source(data["source"], root)
    if preset not in PRESETS:  # a preset this version does not know: never equal to a tree
        return SourceIdentity(
            SYNTHCITY_SOURCE, ("preset", preset), f"SynthCity preset {preset} ({root})"
        )
    return synthcity_source(_synthcity_key(asdict(PRESETS[preset])), root)


def mismatches(bars: SourceIdentity, trained: list[tuple[str, SourceIdentity | None]]) -> list[str]:
    """``"<title> trained on <its source>"`` for every (run title, its source) whose source is
    known and is not the data behind the ``bars``."""
    return [
        f"{title} trained on {source.name}"
        for title, source in trained
        if source is not None and not source.same_data(bars)
    ]
