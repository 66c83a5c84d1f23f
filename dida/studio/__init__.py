"""The engine-side registry behind the app (nothing here imports the UI), one room per file:

* ``catalog``     — runs and shipped checkpoints, their summaries, models and bank histories
* ``images``      — the target val split and uploads, class statistics, overlap index, thumbnails
* ``uploads``     — validating and converting uploaded files
* ``predictions`` — compact predictions, pixel readings, per-image IoU, and the LRU that keeps them
* ``passes``      — whole-val-split passes and per-image scores
* ``points``      — bank slot tables and feature points for the bank and UMAP views
* ``provenance``  — a slot's source image and region box, crops, the listing of a UMAP selection
* ``jobs``        — the training queue (one job at a time) and the configs it trains
* ``work``        — background tasks and request priorities (who waits for whom)
* ``bank_views``  — slot provenance, tp explanations and projections (a mixin of the façade)
* ``readings``    — labels, pixel readouts, per-image IoU from the cheapest source (a mixin)
* ``studio``      — the façade :class:`Studio` the app calls

Every name the app, the tests and the scripts import from ``dida.studio`` is re-exported here.
"""

from dida.analysis import rare_classes
from dida.studio.catalog import (
    METHOD_TITLES,
    MODEL_CARD,
    RUN,
    SHIPPED,
    RunCatalog,
    RunSummary,
    run_id,
)
from dida.studio.images import OVERLAP_FILE, ImageKey, ValImages, ValItem
from dida.studio.jobs import TrainJob, TrainQueue, train_config, warm_start
from dida.studio.passes import ValPasses
from dida.studio.points import (
    PointSet,
    bank_points,
    classify_features,
    join_points,
    pixel_points,
    sample_pixel_features,
    slot_rows,
)
from dida.studio.predictions import (
    LRU,
    ImagePrediction,
    PixelReading,
    ValPass,
    image_confusion,
    image_prediction,
    per_class_iou,
    pixel_reading,
)
from dida.studio.provenance import (
    NOT_RECORDED,
    SelectedPixel,
    Selection,
    SlotSource,
    box_crop,
    list_selection,
    pixel_crop,
    slot_source,
)
from dida.studio.studio import Studio
from dida.studio.uploads import (
    MAX_UPLOAD_PIXELS,
    MAX_UPLOAD_SIDE,
    MIN_UPLOAD_SIDE,
    UploadError,
    load_upload,
    upload_key,
)
from dida.studio.work import InferenceGate, Tasks

__all__ = [
    "LRU",
    "MAX_UPLOAD_PIXELS",
    "MAX_UPLOAD_SIDE",
    "METHOD_TITLES",
    "MIN_UPLOAD_SIDE",
    "MODEL_CARD",
    "NOT_RECORDED",
    "OVERLAP_FILE",
    "RUN",
    "SHIPPED",
    "ImageKey",
    "ImagePrediction",
    "InferenceGate",
    "PixelReading",
    "PointSet",
    "RunCatalog",
    "RunSummary",
    "SelectedPixel",
    "Selection",
    "SlotSource",
    "Studio",
    "Tasks",
    "TrainJob",
    "TrainQueue",
    "UploadError",
    "ValImages",
    "ValItem",
    "ValPass",
    "ValPasses",
    "bank_points",
    "box_crop",
    "classify_features",
    "image_confusion",
    "image_prediction",
    "join_points",
    "list_selection",
    "load_upload",
    "per_class_iou",
    "pixel_crop",
    "pixel_points",
    "pixel_reading",
    "rare_classes",
    "run_id",
    "sample_pixel_features",
    "slot_rows",
    "slot_source",
    "train_config",
    "upload_key",
    "warm_start",
]
