"""The Compare tab's image picker: filters (overlapping entities, their pair type, classes), sort
orders (B − A mIoU, where the shown models disagree on overlaps), the gallery, the index box,
uploads and previous / next image (buttons and the ← / → keys).

Scores come from ``Studio.passes`` (shipped score files are read at once; other runs are scored in
the background, and the gallery says how far).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gradio as gr

from app.errors import client_text
from app.views.common import CHEAP, HEAVY, Shared, bind, number, user_errors
from dida.analysis import ranking_by
from dida.data.classes import CLASSES
from dida.studio import ImageKey, Studio, UploadError

SORTS = [
    ("file order", "file"),
    ("B − A mIoU, B's wins first", "gain"),
    ("B − A, B's losses first", "loss"),
    ("where the shown models disagree on overlaps (overlap IoU spread)", "spread"),
]
MAX_GALLERY = 120
"""Thumbnails shown at once (filters and sorting pick which)."""
_DECODER_TEXT = re.compile(
    r"\s*\([A-Za-z_.]*(?:Error|Exception|Warning):[^()]*(?:\([^()]*\)[^()]*)*\)"
)
"""A parenthesised "(SomeError: decoder message)" inside an upload error."""
KEYS_JS = """
() => {
  if (window.didaCompareKeys) return;
  window.didaCompareKeys = true;
  document.addEventListener("keydown", (event) => {
    const tag = (event.target.tagName || "").toLowerCase();
    if (["input", "textarea", "select"].includes(tag) || event.target.isContentEditable) return;
    const id = {ArrowLeft: "compare-prev", ArrowRight: "compare-next"}[event.key];
    const button = id && document.getElementById(id);
    if (button && button.offsetParent !== null) { event.preventDefault(); button.click(); }
  });
}
"""
"""← / → click the previous / next buttons while the Compare tab is shown (not while typing)."""


# --- the image picker ------------------------------------------------------------------------


def class_filter_choices(studio: Studio) -> list[tuple[str, str]]:
    known = studio.known_rare_classes()  # None while a first launch still writes the val split
    rare = (
        "listed once the val split is written"
        if known is None
        else (", ".join(CLASSES[c] for c in known) or "none")
    )
    return [("all images", "all"), (f"any rare class ({rare})", "rare")] + [
        (name, str(c)) for c, name in enumerate(CLASSES)
    ]


def pair_choices(studio: Studio) -> list[tuple[str, str]]:
    """Overlap pair types with their image counts (``"person–car (12 images)"``), most frequent
    first, after "any pair type"; only that choice while the overlap index is being built."""
    types = studio.passes.pair_types()
    if types is None:
        state = studio.index_overlaps()  # "unavailable: ..." when the data has no instanceIds
        why = state if state.startswith("unavailable") else "indexing overlaps…"
        return [(f"any pair type ({why})", "any")]
    return [("any pair type", "any")] + [
        (f"{label} ({len(images)} images)", label) for label, images in types.items()
    ]


def filtered_indices(
    studio: Studio, overlap_only: bool, class_filter: str, pair: str = "any"
) -> tuple[list[int], str]:
    """Val indices passing the filters, and a note when the overlap index is not ready yet."""
    items, note = studio.val_items(), ""
    types = studio.passes.pair_types() if pair not in ("any", None) else None
    if (overlap_only or types is not None) and items and items[0].overlap is None:
        state = studio.index_overlaps()  # "unavailable: ..." when the data has no instanceIds
        unavailable = state.startswith("unavailable")
        note = state if unavailable else "indexing overlapping entities… (applies when done)"
    wanted = set(studio.rare_classes()) if class_filter == "rare" else None
    if class_filter not in ("all", "rare", None):
        wanted = {int(class_filter)}
    with_pair = None if types is None else set(types.get(pair, []))
    keep = [
        i.index
        for i in items
        if (not overlap_only or i.overlap in (True, None))
        and (wanted is None or wanted & set(i.classes))
        and (with_pair is None or i.index in with_pair)
    ]
    return keep, note


def sorted_indices(
    studio: Studio,
    indices: list[int],
    sort: str,
    run_a: str | None,
    run_b: str | None,
    run_ids: list[str] | None = None,
) -> tuple[list[int], dict[int, float], str]:
    """Indices in the chosen order, their scores, and a progress note while scores compute."""
    if sort == "spread":
        return _by_spread(studio, indices, run_ids or [])
    if sort == "file" or not run_a or not run_b:
        return indices, {}, "" if sort == "file" else "choose methods A and B below to sort"
    scores = studio.image_scores(run_a, run_b)
    if scores is None:
        return indices, {}, _scoring_note(studio, [run_a, run_b])
    wanted = set(indices)
    ranked = [i for i in scores.ranking(descending=sort == "gain") if i in wanted]
    return ranked, {i: float(scores.score[i]) for i in ranked}, ""


def _by_spread(
    studio: Studio, indices: list[int], run_ids: list[str]
) -> tuple[list[int], dict[int, float], str]:
    """Indices by the spread of the overlap IoU across ``run_ids``, largest first."""
    if len(run_ids) < 2:
        return indices, {}, "tick two models or more to rank by their disagreement"
    spread = studio.passes.disagreement(run_ids)
    if spread is None:
        return indices, {}, _scoring_note(studio, run_ids)
    wanted = set(indices)
    ranked = [i for i in ranking_by(spread) if i in wanted]
    return ranked, {i: float(spread[i]) for i in ranked}, ""


def _scoring_note(studio: Studio, run_ids: list[str]) -> str:
    done = [studio.passes.scores_progress(r) for r in run_ids]
    total = sum(t for _, t in done)
    return f"computing per-image scores… {sum(d for d, _ in done)}/{total} images"


@user_errors
def gallery(
    studio: Studio,
    overlap_only: bool,
    class_filter: str,
    sort: str,
    run_a: str | None,
    run_b: str | None,
    pair: str = "any",
    run_ids: list[str] | None = None,
) -> tuple[list[tuple[str, str]], list[int], str, Any, Any]:
    """(thumbnails with captions, their val indices, status, timer update, pair-type choices,
    class-filter choices). The timer polls while scores, the overlap index or (first launch) the
    rare classes are still being computed; the choices then fill in."""
    indices, note = filtered_indices(studio, overlap_only, class_filter, pair)
    indices, scores, progress = sorted_indices(studio, indices, sort, run_a, run_b, run_ids)
    shown = indices[:MAX_GALLERY]
    items = [(str(studio.thumbnail(i)), _caption(i, scores.get(i))) for i in shown]
    status = f"{len(indices)} of {len(studio.val)} images" + (
        f" (first {MAX_GALLERY} shown)" if len(indices) > MAX_GALLERY else ""
    )
    waiting = " · ".join(n for n in (note, progress) if n)
    polling = bool(progress) or (bool(note) and not note.startswith("unavailable"))
    pairs = pair_choices(studio)
    indexing = "indexing" in pairs[0][0] or studio.known_rare_classes() is None
    return (
        items,
        shown,
        status + (f" — {waiting}" if waiting else ""),
        gr.Timer(active=polling or indexing),
        gr.update(choices=pairs),
        gr.update(choices=class_filter_choices(studio)),
    )


def _caption(index: int, score: float | None) -> str:
    return f"#{index}" if score is None or score != score else f"#{index} · {100 * score:+.1f}"


def select_image(shown: list[int], evt: gr.SelectData) -> int:
    """Gallery click → the val index of that thumbnail."""
    return int(shown[evt.index])


@user_errors
def choose_index(studio: Studio, value: float | None) -> int:
    """The index typed in the number box (checked against the val split)."""
    return number(value, "image index", 0, len(studio.val) - 1)


def upload(studio: Studio, path: str | None) -> str:
    """Validate an uploaded file → its key; conversions are reported as warnings. Errors name the
    file by its own name only (no server temp folder, no decoder text: ``client_text``)."""
    if not path:
        raise gr.Error("no file received; choose an image file (PNG or JPEG)")
    try:
        key, notes = studio.add_upload(path)
    except (UploadError, ValueError, OSError) as err:
        raise gr.Error(_upload_text(err, Path(path).name)) from err
    for note in notes:
        gr.Warning(client_text(note))
    return key


def _upload_text(err: Exception, name: str) -> str:
    """The user's part of an upload error: no decoder text ("(UnidentifiedImageError: …)"), server
    paths cut to file names; an unexpected error says only that the file could not be read."""
    if not isinstance(err, UploadError):
        return f"{name} could not be read as an image; upload a PNG or JPEG"
    return _DECODER_TEXT.sub("", client_text(err)).split("\n")[0]


def step_image(studio: Studio, key: ImageKey, shown: list[int], step: int) -> int:
    """The previous (``step`` −1) or next (+1) image: in the gallery's order when the current
    image is listed there, else by val index (wrapping around)."""
    if isinstance(key, int) and key in shown:
        return int(shown[(shown.index(key) + step) % len(shown)])
    start = key if isinstance(key, int) else -1 if step > 0 else 0
    return (start + step) % len(studio.val)


def previous_image(studio: Studio, key: ImageKey, shown: list[int]) -> int:
    """The image before the current one (``step_image`` −1): the ◀ button and the ← key."""
    return step_image(studio, key, shown, -1)


def next_image(studio: Studio, key: ImageKey, shown: list[int]) -> int:
    """The image after the current one (``step_image`` +1): the ▶ button and the → key."""
    return step_image(studio, key, shown, 1)


# --- layout and wiring -----------------------------------------------------------------------


def layout(studio: Studio) -> dict[str, Any]:
    """The picker's components (inside the current column), by name."""
    ui: dict[str, Any] = {}
    gr.Markdown("#### Target image")
    ui["overlap"] = gr.Checkbox(label="only images with overlapping entities", value=False)
    ui["classes"] = gr.Dropdown(class_filter_choices(studio), value="all", label="contains class")
    ui["pair"] = gr.Dropdown(
        pair_choices(studio), value="any", label="overlap pair type (images with such a pair)",
        elem_id="compare-pair",
    )  # fmt: skip
    ui["sort"] = gr.Dropdown(
        SORTS, value="file", label="sort by (methods A and B / the ticked models below)"
    )
    ui["status"] = gr.Markdown()
    ui["gallery"] = gr.Gallery(
        columns=3, height=420, allow_preview=False, label="val images", format="jpeg",
        object_fit="contain", elem_id="compare-gallery",
    )  # fmt: skip
    ui["shown"] = gr.State([])
    ui["timer"] = gr.Timer(2.0, active=False)
    with gr.Row():
        ui["prev"] = gr.Button("◀ previous (←)", size="sm", elem_id="compare-prev")
        ui["next"] = gr.Button("next (→) ▶", size="sm", elem_id="compare-next")
    with gr.Row():
        ui["index"] = gr.Number(label="image index", precision=0, value=0, minimum=0)
        ui["upload"] = gr.File(label="or upload an image", file_types=["image"], type="filepath")
    return ui


def wire(studio: Studio, shared: Shared, p: dict[str, Any], ui: dict[str, Any], after: Any) -> None:
    """Gallery (heavy: thumbnails and scores), picks, uploads, ← / → (cheap); ``ui``: the panels'
    run pickers the sort orders read; on a page load the gallery follows ``after`` (the first
    grid)."""
    key = shared.image_key
    gallery_in = [p["overlap"], p["classes"], p["sort"], ui["run_a"], ui["run_b"], p["pair"],
                  ui["models"]]  # fmt: skip
    gallery_out = [p["gallery"], p["shown"], p["status"], p["timer"], p["pair"], p["classes"]]
    gr.on(
        [p["overlap"].change, p["classes"].change, p["sort"].change, p["pair"].change,
         p["timer"].tick, ui["models"].change],
        bind(gallery, studio), gallery_in, gallery_out, api_name="gallery", **HEAVY,
    )  # fmt: skip
    after.then(bind(gallery, studio), gallery_in, gallery_out, api_visibility="private", **HEAVY)
    p["gallery"].select(select_image, p["shown"], key, api_name="select_image", **CHEAP)
    p["index"].submit(bind(choose_index, studio), p["index"], key, api_name="choose_index",
                      **CHEAP)  # fmt: skip
    p["upload"].upload(bind(upload, studio), p["upload"], key, api_name="upload", **HEAVY)
    for name, fn in (("prev", previous_image), ("next", next_image)):
        p[name].click(bind(fn, studio), [key, p["shown"]], key, api_name=f"{name}_image", **CHEAP)
    shared.demo.load(None, None, None, js=KEYS_JS, api_visibility="private")
