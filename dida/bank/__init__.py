"""DIDA's labelled instance bank (METHOD.md §4.2, §4.3): its pure helpers (``regions``), the bank
object (``instance``), its snapshots and their history (``history``), slot provenance
(``provenance``: source image and region box of each write) and data-parallel collectives
(``collectives``). Every name is importable from ``dida.bank``."""

from dida.bank.collectives import (
    Gatherer,
    Reducer,
    distributed_cat,
    distributed_sum_,
    reduce_class_stats,
)
from dida.bank.history import (
    HISTORY_FORMAT,
    HISTORY_VERSION,
    SNAPSHOT_KEYS,
    BankHistory,
    BankSnapshot,
)
from dida.bank.instance import BankUpdateConfig, InstanceBank
from dida.bank.provenance import (
    class_counts,
    latest_source,
    latest_sources,
    per_class_boxes,
    region_boxes,
    scale_boxes,
    source_provenance,
)
from dida.bank.regions import (
    BalancedSlots,
    allocate_slot_labels,
    balanced_slot_means,
    bilinear_matrix,
    boundary_mask,
    check_labels,
    class_means,
    class_sums,
    first_per_class,
    grouped_kmeans,
    interior_labels,
    oldest_per_class,
    rank_in_class,
    region_means,
    region_sums,
)

__all__ = [
    "HISTORY_FORMAT",
    "HISTORY_VERSION",
    "SNAPSHOT_KEYS",
    "BalancedSlots",
    "BankHistory",
    "BankSnapshot",
    "BankUpdateConfig",
    "Gatherer",
    "InstanceBank",
    "Reducer",
    "allocate_slot_labels",
    "balanced_slot_means",
    "bilinear_matrix",
    "boundary_mask",
    "check_labels",
    "class_counts",
    "class_means",
    "class_sums",
    "distributed_cat",
    "distributed_sum_",
    "first_per_class",
    "grouped_kmeans",
    "interior_labels",
    "latest_source",
    "latest_sources",
    "oldest_per_class",
    "per_class_boxes",
    "rank_in_class",
    "reduce_class_stats",
    "region_boxes",
    "region_means",
    "region_sums",
    "scale_boxes",
    "source_provenance",
]
