"""A SynthCity target split while its generator still writes it.

Each SynthCity image is a pure function of (config, split, index) and its file names follow from
the index (``synthcity.image_paths``), so the split's items are known before they exist. The app's
first launch opens the val split this way as soon as its first image is written and serves while
the rest is generated: a read of an item waits until its files are there (``save_frame`` writes
each file whole, the label last), and fails with what to do if the generator stopped first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from dida.data.datasets import CITYSCAPES_ID_FORMAT, DatasetError, Sample, SegDataset
from dida.data.synthcity import (
    SynthCityConfig,
    image_paths,
    read_manifest,
    synthcity_roots,
    target_name,
)

POLL_S = 0.05


class PendingSplit(SegDataset):
    """The Cityscapes-layout items of a SynthCity target ``split`` under ``root``, in the order
    ``CityscapesDataset`` lists the finished split; ``writing()`` says whether the generator is
    still at work."""

    kind = "cityscapes"
    layout = "SynthCity target split being generated"

    def __init__(
        self, root: Path, split: str, writing: Callable[[], bool], timeout: float = 600.0
    ) -> None:
        manifest = read_manifest(root)
        if manifest is None:
            raise DatasetError(f"{root}: no synthcity.json yet; the split's names are not known")
        count = SynthCityConfig(**manifest["config"]).count(split)
        files = [
            (target_name(split, i, count)[1], image_paths(root, split, i, count))
            for i in range(count)
        ]
        samples = sorted(
            (Sample(stem, f["image"], f["label"], f["instance"]) for stem, f in files),
            key=lambda sample: sample.image,  # the glob order of CityscapesDataset
        )
        target = synthcity_roots(root)[1]
        super().__init__(target, samples, CITYSCAPES_ID_FORMAT)
        self.stats_folder = target / "gtFine" / split
        self.writing, self.timeout = writing, timeout

    def wait(self, index: int) -> None:
        """Block until item ``index``'s image, label and instance files exist."""
        sample, deadline = self.samples[index], time.monotonic() + self.timeout
        while not all(path.exists() for path in (sample.label, sample.image, sample.instance)):
            if not self.writing():
                raise DatasetError(_stopped(sample))
            if time.monotonic() > deadline:
                raise DatasetError(f"{sample.image}: not written within {self.timeout:.0f} s")
            time.sleep(POLL_S)

    def read_label(self, index: int):  # noqa: ANN201 - SegDataset's signature
        self.wait(index)
        return super().read_label(index)

    def image_size(self, index: int = 0) -> tuple[int, int]:
        self.wait(index)
        return super().image_size(index)

    def __getitem__(self, index: int) -> dict:
        self.wait(index)
        return super().__getitem__(index)


def _stopped(sample: Sample) -> str:
    root = sample.image.parents[4]
    return (
        f"{sample.image}: the SynthCity generator stopped before writing it; restart the app "
        f"(it generates the split again) or delete {root} first"
    )
