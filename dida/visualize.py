"""Label maps, error maps and probability maps as uint8 RGB arrays (H, W, 3) for the app's views.

Pure, vectorised numpy: every colouring is one lookup in a 256-entry table, no plotting library.
Inputs may be numpy arrays or CPU/CUDA tensors; labels are train IDs 0..18 with 255 = ignore
(``dida.data.classes``), probabilities are (C, H, W).

Colour choices (docs APP.md "Palettes and accessibility"):

* ``cityscapes`` — the palette of the papers (not colour-blind safe).
* ``cvd`` — the "stuff" classes take one Okabe-Ito hue per Cityscapes category (flat,
  construction, object, nature, sky), told apart within a category by lightness steps: the base
  hue blended toward black (t < 0) or white (t > 0).  The eight look-alike "thing" classes users
  inspect (person, rider, car, truck, bus, train, motorcycle, bicycle) each get their own colour
  (``CVD_THINGS``), found by a max-min search over a 16-level RGB grid: every pair of the eight
  stays at least ΔE*ab 33 apart with normal vision and under simulated deuteranopia, protanopia
  and tritanopia (Machado et al. 2009, full severity), and at least 14 from every stuff colour;
  all 19 stay at least 9.8 apart.  Ignore stays black.
* error / diff maps use 2–3 Okabe-Ito colours on greys; sequential maps use matplotlib's viridis
  and cividis tables (copied below, so matplotlib is not needed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from dida.data.classes import CLASSES, IGNORE_INDEX, NUM_CLASSES, PALETTE, class_index

Color = tuple[int, int, int]

# ---------------------------------------------------------------------------------------------
# Palettes

CVD_CATEGORIES: tuple[tuple[str, str, tuple[int, ...], tuple[float, ...]], ...] = (
    ("flat", "#CC79A7", (0, 1), (-0.1, 0.5)),
    ("construction", "#E69F00", (2, 3, 4), (-0.65, -0.15, 0.35)),
    ("object", "#F0E442", (5, 6, 7), (-0.45, -0.1, 0.25)),
    ("nature", "#009E73", (8, 9), (-0.3, 0.3)),
    ("sky", "#56B4E9", (10,), (0.2,)),
)
"""(category, Okabe-Ito base hue, train IDs, lightness step t of each) of the ``cvd`` stuff classes."""
CVD_THINGS: dict[int, str] = {
    11: "#991133",  # person: crimson
    12: "#ff55ff",  # rider: pink
    13: "#0033ff",  # car: blue
    14: "#550099",  # truck: violet
    15: "#66ffff",  # bus: cyan
    16: "#aaaa55",  # train: olive
    17: "#883377",  # motorcycle: plum
    18: "#bbff11",  # bicycle: lime
}
"""Train ID -> colour of the look-alike thing classes in the ``cvd`` palette (see the docstring)."""


def hex_to_rgb(code: str) -> Color:
    """'#RRGGBB' -> (r, g, b)."""
    text = code.lstrip("#")
    if len(text) != 6:
        raise ValueError(f"colour {code!r} is not of the form '#RRGGBB'")
    return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))


def rgb_to_hex(rgb: Iterable[int]) -> str:
    """(r, g, b) -> '#rrggbb'."""
    r, g, b = (int(v) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def tone(rgb: Color, t: float) -> Color:
    """A lightness step of ``rgb``: blended toward black (t < 0) or white (t > 0) by |t|."""
    if not -1.0 <= t <= 1.0:
        raise ValueError(f"lightness step t must lie in [-1, 1], got {t}")
    base = np.asarray(rgb, dtype=np.float64)
    target = 0.0 if t < 0 else 255.0
    return tuple(int(v) for v in np.rint(base + (target - base) * abs(t)))


def _cvd_palette() -> np.ndarray:
    palette = np.zeros((NUM_CLASSES, 3), dtype=np.uint8)
    for _, base, ids, steps in CVD_CATEGORIES:
        for c, t in zip(ids, steps, strict=True):
            palette[c] = tone(hex_to_rgb(base), t)
    for c, code in CVD_THINGS.items():
        palette[c] = hex_to_rgb(code)
    return palette


def _read_only(array: np.ndarray) -> np.ndarray:
    array = array.copy()
    array.flags.writeable = False
    return array


PALETTES: dict[str, np.ndarray] = {
    "cityscapes": _read_only(PALETTE),
    "cvd": _read_only(_cvd_palette()),
}
"""Palette name -> (19, 3) uint8 colour of each train ID (read-only)."""

IGNORE_COLOR: Color = (0, 0, 0)
"""Ignore (255) and hidden classes in ``colorize``."""
ISOLATE_COLOR: Color = (64, 64, 64)
"""Classes other than the isolated one in ``colorize(..., isolate=c)``."""


def palette_array(palette: str | np.ndarray = "cityscapes") -> np.ndarray:
    """The (N, 3) uint8 colours of a palette given by name (a key of PALETTES) or as an array."""
    if isinstance(palette, str):
        if palette not in PALETTES:
            raise ValueError(f"unknown palette {palette!r}; choose one of {sorted(PALETTES)}")
        return PALETTES[palette]
    colors = np.asarray(palette)
    if colors.ndim != 2 or colors.shape[1] != 3 or not 0 < len(colors) <= IGNORE_INDEX:
        raise ValueError(f"a palette must be (N, 3) RGB with 1 <= N < 255, got {colors.shape}")
    return colors.astype(np.uint8)


def legend_entries(
    palette: str | np.ndarray = "cityscapes", classes: Iterable[int | str] | None = None
) -> list[tuple[str, str]]:
    """(class name, '#rrggbb') of every class, or of ``classes`` (IDs or names) in the given order."""
    colors = palette_array(palette)
    ids = range(len(colors)) if classes is None else [class_index(c) for c in classes]
    return [(CLASSES[c], rgb_to_hex(colors[c])) for c in ids]


# ---------------------------------------------------------------------------------------------
# Input checks


def _numpy(values: object) -> np.ndarray:
    """A numpy view of an array or a (CPU or CUDA) tensor."""
    if hasattr(values, "detach"):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _label_map(label: object, name: str, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(H, W) integer train IDs 0..num_classes-1 or 255, else a ValueError naming ``name``."""
    label = _numpy(label)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(
            f"{name} must be an (H, W) integer map of train IDs, got {label.dtype} {label.shape}"
        )
    bad = (label < 0) | ((label >= num_classes) & (label != IGNORE_INDEX))
    if bad.any():
        raise ValueError(
            f"{name} holds {label[bad].flat[0]}, neither a train ID 0-{num_classes - 1} nor "
            f"{IGNORE_INDEX} (ignore); map label IDs to train IDs first (dida.data.classes)"
        )
    return label


def _same_shape(**maps: np.ndarray) -> None:
    shapes = {name: m.shape[:2] for name, m in maps.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"maps differ in size (H, W): {shapes}; resize them to one size first")


def _rgb_image(image: object, name: str) -> np.ndarray:
    image = _numpy(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{name} must be a uint8 (H, W, 3) RGB array, got {image.dtype} {image.shape}"
        )
    return image


def _class_ids(classes: Iterable[int | str], num_classes: int) -> list[int]:
    ids = [class_index(c) for c in classes]
    if any(c >= num_classes for c in ids):
        raise ValueError(f"classes {ids} exceed the palette's {num_classes} colours")
    return ids


# ---------------------------------------------------------------------------------------------
# Label maps


def colorize(
    label: object,
    palette: str | np.ndarray = "cityscapes",
    hidden: Iterable[int | str] = (),
    isolate: int | str | None = None,
) -> np.ndarray:
    """Train-ID map (H, W) -> RGB (H, W, 3) uint8.

    Ignore (255) and ``hidden`` classes (IDs or names) are black; with ``isolate=c`` only class c
    keeps its colour and the other classes turn dim grey (ISOLATE_COLOR).
    """
    colors = palette_array(palette)
    label = _label_map(label, "label", len(colors))
    lut = np.zeros((256, 3), dtype=np.uint8)  # (256, 3) colour of each label value
    lut[: len(colors)] = colors
    if isolate is not None:
        keep = _class_ids([isolate], len(colors))[0]
        lut[: len(colors)] = ISOLATE_COLOR
        lut[keep] = colors[keep]
    lut[_class_ids(hidden, len(colors))] = IGNORE_COLOR
    return lut[label]


def visible_mask(label: object, hidden: Iterable[int | str] = ()) -> np.ndarray:
    """(H, W) bool: pixels of a class that is not ignore (255) and not in ``hidden``."""
    label = _label_map(label, "label")
    lut = np.ones(256, dtype=bool)
    lut[IGNORE_INDEX] = False
    lut[_class_ids(hidden, NUM_CLASSES)] = False
    return lut[label]


def overlay(
    image: object, label_rgb: object, opacity: float, where: object | None = None
) -> np.ndarray:
    """Blend RGB ``label_rgb`` over ``image`` (both (H, W, 3) uint8): (1 - a) image + a label_rgb.

    Rounded to the nearest integer. With ``where`` ((H, W) bool, e.g. ``visible_mask``) the other
    pixels keep the plain image.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must lie in [0, 1], got {opacity}")
    image, label_rgb = _rgb_image(image, "image"), _rgb_image(label_rgb, "label_rgb")
    _same_shape(image=image, label_rgb=label_rgb)
    base = image.astype(np.float32)
    blend = np.rint(base + np.float32(opacity) * (label_rgb - base)).astype(np.uint8)
    if where is None:
        return blend
    where = _numpy(where).astype(bool)
    _same_shape(image=image, where=where)
    return np.where(where[..., None], blend, image)


def boundaries(label: object) -> np.ndarray:
    """(H, W) bool: pixels whose label differs from the pixel above or to the left (1 px lines)."""
    label = _numpy(label)
    if label.ndim != 2:
        raise ValueError(f"label must be an (H, W) map, got shape {label.shape}")
    edge = np.zeros(label.shape, dtype=bool)
    edge[1:] |= label[1:] != label[:-1]
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    return edge


def add_outline(image_rgb: object, label: object, color: Color = (255, 255, 255)) -> np.ndarray:
    """A copy of ``image_rgb`` (H, W, 3) with the class boundaries of ``label`` drawn in ``color``.

    Outlines let regions be told apart without relying on colour alone.
    """
    image = _rgb_image(image_rgb, "image_rgb")
    edge = boundaries(label)
    _same_shape(image_rgb=image, label=edge)
    out = image.copy()
    out[edge] = color
    return out


# ---------------------------------------------------------------------------------------------
# Error and difference maps

ERROR_LEGEND: tuple[tuple[str, str], ...] = (
    ("correct", "#444444"),
    ("wrong", "#D55E00"),
    ("ignore", "#999999"),
)
"""Name and colour of each ``error_categories`` code 0, 1, 2."""
DIFF_LEGEND: tuple[tuple[str, str], ...] = (
    ("ignore", "#000000"),
    ("both right", "#CCCCCC"),
    ("both wrong", "#555555"),
    ("fixed (a wrong, b right)", "#0072B2"),
    ("broke (a right, b wrong)", "#E69F00"),
)
"""Name and colour of each ``diff_categories`` code 0..4."""


def _legend_lut(legend: tuple[tuple[str, str], ...]) -> np.ndarray:
    return np.array([hex_to_rgb(code) for _, code in legend], dtype=np.uint8)


def error_categories(pred: object, gt: object) -> np.ndarray:
    """(H, W) uint8 codes: 0 correct, 1 wrong, 2 ignore (gt = 255)."""
    pred, gt = _label_map(pred, "pred"), _label_map(gt, "gt")
    _same_shape(pred=pred, gt=gt)
    codes = (pred != gt).astype(np.uint8)
    codes[gt == IGNORE_INDEX] = 2
    return codes


def error_map(pred: object, gt: object) -> np.ndarray:
    """RGB (H, W, 3): correct = dim grey, wrong = vermillion #D55E00, ignore = grey #999999."""
    return _legend_lut(ERROR_LEGEND)[error_categories(pred, gt)]


def diff_categories(pred_a: object, pred_b: object, gt: object) -> np.ndarray:
    """(H, W) uint8 codes: 0 ignore, 1 both right, 2 both wrong, 3 fixed, 4 broke (see DIFF_LEGEND)."""
    pred_a, pred_b = _label_map(pred_a, "pred_a"), _label_map(pred_b, "pred_b")
    gt = _label_map(gt, "gt")
    _same_shape(pred_a=pred_a, pred_b=pred_b, gt=gt)
    right_a, right_b = pred_a == gt, pred_b == gt
    table = np.array([[2, 3], [4, 1]], dtype=np.uint8)  # [a right][b right]
    codes = table[right_a.astype(np.intp), right_b.astype(np.intp)]
    codes[gt == IGNORE_INDEX] = 0
    return codes


def diff_map(pred_a: object, pred_b: object, gt: object) -> np.ndarray:
    """RGB (H, W, 3): fixed (a wrong, b right) #0072B2, broke (a right, b wrong) #E69F00,
    both right light grey, both wrong dark grey, ignore black."""
    return _legend_lut(DIFF_LEGEND)[diff_categories(pred_a, pred_b, gt)]


def diff_counts(pred_a: object, pred_b: object, gt: object) -> dict[str, int]:
    """Pixels in each ``DIFF_LEGEND`` category, keyed by its name."""
    counts = np.bincount(diff_categories(pred_a, pred_b, gt).ravel(), minlength=len(DIFF_LEGEND))
    return {name: int(n) for (name, _), n in zip(DIFF_LEGEND, counts, strict=True)}


# ---------------------------------------------------------------------------------------------
# Probability maps

# matplotlib 3.x viridis / cividis sampled at 256 levels, rounded to uint8, as RGB hex triples.
_VIRIDIS_HEX = (
    "44015444025645045745055946075a46085c460a5d460b5e470d60470e61471063471164471365481467481668"
    "48176948186a481a6c481b6d481c6e481d6f481f70482071482173482374482475482576482677482878482979"
    "472a7a472c7a472d7b472e7c472f7d46307e46327e46337f463480453581453781453882443983443a83443b84"
    "433d84433e85423f854240864241864142874144874045884046883f47883f48893e49893e4a893e4c8a3d4d8a"
    "3d4e8a3c4f8a3c508b3b518b3b528b3a538b3a548c39558c39568c38588c38598c375a8c375b8d365c8d365d8d"
    "355e8d355f8d34608d34618d33628d33638d32648e32658e31668e31678e31688e30698e306a8e2f6b8e2f6c8e"
    "2e6d8e2e6e8e2e6f8e2d708e2d718e2c718e2c728e2c738e2b748e2b758e2a768e2a778e2a788e29798e297a8e"
    "297b8e287c8e287d8e277e8e277f8e27808e26818e26828e26828e25838e25848e25858e24868e24878e23888e"
    "23898e238a8d228b8d228c8d228d8d218e8d218f8d21908d21918c20928c20928c20938c1f948c1f958b1f968b"
    "1f978b1f988b1f998a1f9a8a1e9b8a1e9c891e9d891f9e891f9f881fa0881fa1881fa1871fa28720a38620a486"
    "21a58521a68522a78522a88423a98324aa8325ab8225ac8226ad8127ad8128ae8029af7f2ab07f2cb17e2db27d"
    "2eb37c2fb47c31b57b32b67a34b67935b77937b87838b9773aba763bbb753dbc743fbc7340bd7242be7144bf70"
    "46c06f48c16e4ac16d4cc26c4ec36b50c46a52c56954c56856c66758c7655ac8645cc8635ec96260ca6063cb5f"
    "65cb5e67cc5c69cd5b6ccd5a6ece5870cf5773d05675d05477d1537ad1517cd2507fd34e81d34d84d44b86d549"
    "89d5488bd6468ed64590d74393d74195d84098d83e9bd93c9dd93ba0da39a2da37a5db36a8db34aadc32addc30"
    "b0dd2fb2dd2db5de2bb8de29bade28bddf26c0df25c2df23c5e021c8e020cae11fcde11dd0e11cd2e21bd5e21a"
    "d8e219dae319dde318dfe318e2e418e5e419e7e419eae51aece51befe51cf1e51df4e61ef6e620f8e621fbe723"
    "fde725"
)
_CIVIDIS_HEX = (
    "00224e00234f00245100255300255400265600275800285900285b00295d002a5f002a61002b62002c64002c66"
    "002d68002e6a002e6c002f6d00306f0030700031700031710132710533710833700c34700f3570123570143670"
    "16377018376f1a386f1c396f1e3a6f203a6f213b6e233c6e243c6e263d6e273e6e293f6e2a3f6d2b406d2d416d"
    "2e416d2f426d31436d32436d33446d34456c35456c36466c38476c39486c3a486c3b496c3c4a6c3d4a6c3e4b6c"
    "3f4c6c404c6c414d6c424e6c434e6c444f6c45506c46516c47516c48526c49536c4a536c4b546c4c556c4d556c"
    "4e566c4f576c50576c51586d52596d535a6d545a6d555b6d555c6d565c6d575d6d585e6d595e6e5a5f6e5b606e"
    "5c616e5d616e5e626e5e636f5f636f60646f61656f62656f636670646770656870656870666970676a71686a71"
    "696b716a6c716b6d726c6d726c6e726d6f726e6f736f7073707173717274727274727374737475747475757575"
    "7676767777767777777878777979777a7a787b7a787c7b787d7c787e7c787e7d787f7e78807f78817f78828079"
    "8381798482798582798683798784788885788985788a86788b87788c88788d88788e89788f8a78908b78918b78"
    "928c78928d78938e78948e77958f779690779791779892779992779a93769b94769c95769d95769e96769f9775"
    "a09875a19975a29975a39a74a49b74a59c74a69c74a79d73a89e73a99f73aaa073aba072aca172ada272aea371"
    "afa471b0a571b1a570b3a670b4a76fb5a86fb6a96fb7a96eb8aa6eb9ab6dbaac6dbbad6dbcae6cbdae6cbeaf6b"
    "bfb06bc0b16ac1b26ac2b369c3b369c4b468c5b568c6b667c7b767c8b866c9b965cbb965ccba64cdbb63cebc63"
    "cfbd62d0be62d1bf61d2c060d3c05fd4c15fd5c25ed6c35dd7c45cd9c55cdac65bdbc75adcc859ddc858dec958"
    "dfca57e0cb56e1cc55e2cd54e4ce53e5cf52e6d051e7d150e8d24fe9d34eead34cebd44bedd54aeed649efd748"
    "f0d846f1d945f2da44f3db42f5dc41f6dd3ff7de3ef8df3cf9e03afbe138fce236fde334fee434fee535fee636"
    "fee838"
)


def _lut_from_hex(text: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(text), dtype=np.uint8).reshape(256, 3)


COLORMAPS: dict[str, np.ndarray] = {
    "viridis": _read_only(_lut_from_hex(_VIRIDIS_HEX)),
    "cividis": _read_only(_lut_from_hex(_CIVIDIS_HEX)),
}
"""Sequential colour map name -> (256, 3) uint8 table (matplotlib's, sampled at 256 levels)."""


def apply_colormap(
    values: object, cmap: str = "viridis", vmin: float = 0.0, vmax: float = 1.0
) -> np.ndarray:
    """(H, W) floats -> RGB (H, W, 3): (v - vmin) / (vmax - vmin) clipped to [0, 1], 256 levels."""
    if cmap not in COLORMAPS:
        raise ValueError(f"unknown colour map {cmap!r}; choose one of {sorted(COLORMAPS)}")
    if not vmax > vmin:
        raise ValueError(f"need vmax > vmin, got vmin={vmin}, vmax={vmax}")
    scaled = (_numpy(values).astype(np.float32) - vmin) / (vmax - vmin)
    index = np.rint(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)
    return COLORMAPS[cmap][index]


def _probs(probs: object) -> np.ndarray:
    probs = _numpy(probs)
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise ValueError(
            f"probs must be (C, H, W) class probabilities with C >= 2, got shape {probs.shape}; "
            "pass Prediction.probs[i] for image i"
        )
    return probs.astype(np.float32, copy=False)


def confidence(probs: object) -> np.ndarray:
    """(C, H, W) -> (H, W) max_c p_c."""
    return _probs(probs).max(axis=0)


def normalized_entropy(probs: object) -> np.ndarray:
    """(C, H, W) -> (H, W) −Σ_c p_c log p_c / log C in [0, 1] (1 = uniform)."""
    p = _probs(probs)
    plogp = p * np.log(np.where(p > 0, p, 1.0))
    return -plogp.sum(axis=0) / np.log(p.shape[0])


CONFIDENCE_BELOW_COLOR: Color = (153, 153, 153)
"""Pixels under the threshold in ``confidence_map`` (grey: outside viridis)."""


def confidence_map(
    probs: object, threshold: float | None = None, cmap: str = "viridis"
) -> np.ndarray:
    """RGB (H, W, 3) of the max probability (0 dark → 1 yellow); pixels whose confidence is below
    ``threshold`` (e.g. DAFormer's pseudo-label threshold 0.968) are grey."""
    conf = confidence(probs)
    rgb = apply_colormap(conf, cmap)
    if threshold is not None:
        rgb[conf < threshold] = CONFIDENCE_BELOW_COLOR
    return rgb


def entropy_map(probs: object, cmap: str = "cividis") -> np.ndarray:
    """RGB (H, W, 3) of the normalised entropy (0 certain, dark → 1 uniform, light)."""
    return apply_colormap(normalized_entropy(probs), cmap)


# ---------------------------------------------------------------------------------------------
# Overlap overlay, present classes, grid export

OVERLAP_COLOR: Color = (255, 0, 255)
"""Magenta: the overlap band drawn over a panel (no Cityscapes class uses it)."""


def mark_mask(
    image_rgb: object, mask: object, color: Color = OVERLAP_COLOR, alpha: float = 0.6
) -> np.ndarray:
    """A copy of ``image_rgb`` (H, W, 3) with the bool ``mask`` (H, W) blended in ``color``."""
    image = _rgb_image(image_rgb, "image_rgb")
    mask = _numpy(mask).astype(bool)
    _same_shape(image=image, mask=mask)
    solid = np.broadcast_to(np.array(color, np.uint8), image.shape)
    return overlay(image, solid, alpha, where=mask)


def present_classes(*labels: object) -> list[int]:
    """Train IDs (ascending) that occur in any of the (H, W) label maps (ignore 255 left out)."""
    found = set()
    for label in labels:
        found |= {int(c) for c in np.unique(_numpy(label)) if c < NUM_CLASSES}
    return sorted(found)


def grid_image(panels: Sequence[tuple[str, object]], columns: int = 3, gap: int = 4) -> np.ndarray:
    """The panels' RGB images (H, W, 3) tiled ``columns`` wide on white, each under its title
    (drawn with PIL's default font), as one uint8 image for a PNG download."""
    from PIL import Image, ImageDraw

    if not panels:
        raise ValueError("no panels to compose")
    images = [_rgb_image(rgb, title) for title, rgb in panels]
    h = max(i.shape[0] for i in images) + 16  # 16 px title band
    w = max(i.shape[1] for i in images)
    cols, rows = min(columns, len(images)), -(-len(images) // columns)
    canvas = Image.new("RGB", (cols * (w + gap) - gap, rows * (h + gap) - gap), "white")
    draw = ImageDraw.Draw(canvas)
    for i, ((title, _), rgb) in enumerate(zip(panels, images, strict=True)):
        x, y = (i % cols) * (w + gap), (i // cols) * (h + gap)
        draw.text((x + 2, y + 2), title, fill=(0, 0, 0))
        canvas.paste(Image.fromarray(rgb), (x, y + 16))
    return np.asarray(canvas)
