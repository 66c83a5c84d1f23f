"""SynthCity drawing: domain styles, colours, textures, the camera, the canvas, image formation.

A scene is drawn into a *segment map* (a PIL mode "I" image): every primitive gets a segment index
whose table row carries its train ID, instance value, colour (HSV), texture and depth. Labels,
instance IDs and the image are then gathered from the segment map with numpy, so image and labels
agree pixel for pixel. ``dida.data.synthcity`` decides what goes where; this module draws it
(the objects themselves are in ``dida.data.synthcity_objects``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, fields, is_dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dida.data.classes import CITYSCAPES_LABEL_IDS, IGNORE_INDEX, INSTANCE_CLASSES, NUM_CLASSES

(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, RIDER,
 CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(NUM_CLASSES)  # fmt: skip
VOID = IGNORE_INDEX
GROUND = (ROAD, SIDEWALK, TERRAIN)
Z_NEAR = 0.3  # metres: polygons are clipped to points at least this far in front of the camera


# --------------------------------------------------------------------------------------------
# Domain style: the three separately switchable parts of the gap.  Values are blended linearly
# between the source style (shift 0) and the target style at shift 1 (see ``blend``).
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Appearance:
    """Colour, texture, lighting and shadows."""

    hue: tuple[float, ...] = (0.0,) * NUM_CLASSES
    """Per-class hue drift in degrees (train-ID order)."""
    saturation: tuple[float, ...] = (1.0,) * NUM_CLASSES
    """Per-class saturation factor."""
    value: tuple[float, ...] = (1.0,) * NUM_CLASSES
    """Per-class brightness factor."""
    texture: float = 1.0
    """Gain on every class's texture amplitude (asphalt grain, bricks, foliage ...)."""
    grain: float = 0.0
    """Amplitude of low-frequency blotches (dirt, weathering) on everything but sky."""
    brightness: float = 1.0
    """Global exposure factor."""
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Per-channel (R, G, B) gains."""
    contrast: float = 1.0
    """Contrast around mid-grey."""
    shadow: float = 0.3
    """Darkening of ground inside cast shadows (0 none, 1 black)."""


@dataclass(frozen=True)
class Optics:
    """Camera effects applied to the finished image."""

    noise: float = 0.0
    """Gaussian sensor-noise standard deviation (fraction of the 0-255 range)."""
    blur: float = 0.0
    """Defocus blur: box-blur radius in pixels at width 512 (scaled with the image width)."""
    vignette: float = 0.0
    """Darkening of the corners (fraction)."""
    jpeg: float = 0.0
    """JPEG strength: 0 off, 1 quality 40 (quality = 95 - 55 * jpeg)."""
    haze: float = 0.0
    """Atmospheric haze: blend towards a haze colour reaching this fraction at large depth."""


@dataclass(frozen=True)
class Geometry:
    """Camera pose, object shapes and class frequencies (scene composition)."""

    horizon: float = 0.44
    """Horizon row as a fraction of the image height (camera pitch)."""
    camera_height: float = 1.9
    """Camera height above the road in metres."""
    focal: float = 0.7
    """Focal length as a fraction of the image width."""
    object_scale: float = 1.0
    """Size factor of vehicles, people and two-wheelers."""
    vehicle_aspect: float = 1.0
    """Height factor of vehicles (their width and length stay)."""
    urban: float = 0.35
    """Weight of urban street sides (tall building rows)."""
    suburban: float = 0.30
    """Weight of suburban sides (houses, lawns, fences, trees)."""
    rural: float = 0.35
    """Weight of open sides (no buildings: terrain, tree lines, barriers, sky)."""
    road_width: float = 1.0
    """Lane-width factor."""
    sidewalk: float = 1.0
    """Sidewalk-width factor."""
    building_height: float = 1.0
    """Building-height factor."""
    building_gap: float = 0.25
    """Probability of a gap after an urban building."""
    intersection: float = 0.4
    """Probability that the street has a cross street."""
    wall: float = 0.25
    """Probability of a wall per street-side segment."""
    fence: float = 0.15
    """Probability of a fence per street-side segment."""
    tree: float = 0.5
    """Tree density factor."""
    pole: float = 1.0
    """Pole density factor."""
    traffic_light: float = 0.15
    """Probability that a pole carries a traffic light."""
    traffic_sign: float = 0.3
    """Probability that a pole carries a traffic sign."""
    parked: float = 0.5
    """Fraction of parking slots taken."""
    traffic: float = 2.5
    """Mean number of moving vehicles per road."""
    truck: float = 0.22
    """Probability that a moving vehicle is a truck."""
    bus: float = 0.08
    """Probability that a moving vehicle is a bus."""
    train: float = 0.06
    """Probability of a tram in the scene."""
    person: float = 2.5
    """Mean number of pedestrians."""
    rider: float = 0.5
    """Mean number of riders on two-wheelers."""
    motorcycle: float = 0.5
    """Probability that a two-wheeler is a motorcycle (else a bicycle)."""
    bicycle: float = 0.25
    """Mean number of parked two-wheelers."""
    clutter: float = 1.0
    """Mean number of unlabelled street objects (bins, boxes)."""


@dataclass(frozen=True)
class Style:
    """A domain's full rendering style: one instance per part."""

    appearance: Appearance = Appearance()
    """Colours, textures, lighting, shadows."""
    optics: Optics = Optics()
    """Camera effects (the "camera" part of the gap)."""
    geometry: Geometry = Geometry()
    """Camera pose, shapes and class frequencies."""

    def __post_init__(self) -> None:
        for part in (self.appearance, self.optics, self.geometry):
            for f in fields(part):
                values = np.atleast_1d(getattr(part, f.name))
                if f.name != "hue" and not (np.isfinite(values).all() and (values >= 0).all()):
                    raise ValueError(
                        f"style {type(part).__name__}.{f.name}={getattr(part, f.name)}"
                        " must be finite and >= 0; fix SOURCE_STYLE / TARGET_STYLE"
                    )


def lerp(a: Any, b: Any, t: float) -> Any:
    """Blend two values of the same structure: floats, tuples of floats, or dataclasses of those."""
    if is_dataclass(a):
        return type(a)(
            **{f.name: lerp(getattr(a, f.name), getattr(b, f.name), t) for f in fields(a)}
        )
    if isinstance(a, tuple):
        return tuple(lerp(x, y, t) for x, y in zip(a, b, strict=True))
    return a + (b - a) * t if t else a


def blend(source: Style, target: Style, appearance: float, optics: float, geometry: float) -> Style:
    """The style at per-part shift weights in [0, 1] (0 = ``source``, 1 = ``target``)."""
    return Style(
        lerp(source.appearance, target.appearance, appearance),
        lerp(source.optics, target.optics, optics),
        lerp(source.geometry, target.geometry, geometry),
    )


# --------------------------------------------------------------------------------------------
# Colours and textures of each class (shared by both domains; the style drifts them).
# --------------------------------------------------------------------------------------------
ANY = -1.0  # hue drawn uniformly
COLOURS: dict[int, tuple[tuple[float, float, float], ...]] = {
    ROAD: ((250, 0.07, 0.36), (220, 0.05, 0.42), (30, 0.06, 0.33)),
    SIDEWALK: ((35, 0.12, 0.64), (0, 0.0, 0.70), (15, 0.22, 0.58)),
    BUILDING: ((30, 0.28, 0.68), (12, 0.5, 0.52), (0, 0.0, 0.56), (45, 0.2, 0.82), (210, 0.1, 0.5)),
    WALL: ((215, 0.1, 0.6), (35, 0.14, 0.66), (0, 0.0, 0.46)),
    FENCE: ((25, 0.42, 0.46), (0, 0.0, 0.58), (140, 0.3, 0.36)),
    POLE: ((0, 0.0, 0.44), (210, 0.14, 0.34), (120, 0.18, 0.26)),
    LIGHT: ((0, 0.0, 0.13), (48, 0.85, 0.7)),
    SIGN: ((0, 0.0, 0.93), (215, 0.82, 0.64), (50, 0.9, 0.9), (0, 0.85, 0.8)),
    VEGETATION: ((95, 0.62, 0.38), (110, 0.56, 0.3), (80, 0.55, 0.46)),
    TERRAIN: ((70, 0.45, 0.6), (45, 0.4, 0.55), (85, 0.42, 0.52)),
    SKY: ((208, 0.5, 0.92), (200, 0.3, 0.9)),
    PERSON: ((ANY, 0.55, 0.55), (0, 0.0, 0.16), (0, 0.0, 0.85), (220, 0.5, 0.36)),
    RIDER: ((ANY, 0.55, 0.55), (0, 0.0, 0.16), (0, 0.0, 0.85), (220, 0.5, 0.36)),
    CAR: ((ANY, 0.65, 0.58), (0, 0.0, 0.92), (0, 0.0, 0.16), (0, 0.0, 0.62), (ANY, 0.5, 0.38)),
    TRUCK: ((0, 0.0, 0.9), (0, 0.0, 0.7), (ANY, 0.6, 0.6), (30, 0.7, 0.72)),
    BUS: ((50, 0.8, 0.86), (0, 0.75, 0.72), (210, 0.7, 0.56), (0, 0.0, 0.9)),
    TRAIN: ((0, 0.7, 0.76), (0, 0.0, 0.9), (55, 0.8, 0.86), (120, 0.4, 0.56)),
    MOTORCYCLE: ((0, 0.0, 0.16), (0, 0.8, 0.72), (ANY, 0.7, 0.62)),
    BICYCLE: ((ANY, 0.7, 0.66), (0, 0.0, 0.22), (0, 0.0, 0.86)),
    VOID: ((120, 0.35, 0.3), (0, 0.0, 0.35), (30, 0.4, 0.45)),
}
PARTS: dict[str, tuple[float, float, float]] = {
    "glass": (205, 0.28, 0.24), "window": (212, 0.3, 0.3), "lit": (45, 0.5, 0.85),
    "tyre": (0, 0.0, 0.08), "skin": (25, 0.5, 0.7), "white": (0, 0.0, 0.92),
    "yellow": (50, 0.8, 0.86), "red": (0, 0.85, 0.85), "green": (130, 0.8, 0.8), "dark": (0, 0.0, 0.1),
    "trunk": (30, 0.5, 0.26),
}  # fmt: skip
JITTER = (6.0, 0.05, 0.06)  # hue degrees, saturation, value

NONE, FINE, COARSE, FOLIAGE, BRICK, BARS, GRASS = range(7)
TEXTURE: dict[int, tuple[int, float]] = {
    ROAD: (FINE, 0.08), SIDEWALK: (BRICK, 0.1), BUILDING: (COARSE, 0.08), WALL: (COARSE, 0.12),
    FENCE: (BARS, 0.32), VEGETATION: (FOLIAGE, 0.3), TERRAIN: (GRASS, 0.22), SKY: (COARSE, 0.05),
    CAR: (FINE, 0.02), TRUCK: (FINE, 0.03), BUS: (FINE, 0.02), TRAIN: (FINE, 0.02),
}  # fmt: skip


def sample_colour(rng: np.random.Generator, cls: int) -> tuple[float, float, float]:
    """An HSV colour (hue in degrees, saturation and value in [0, 1]) for a segment of ``cls``."""
    options = COLOURS[cls]
    h, s, v = options[rng.integers(len(options))]
    h = rng.uniform(0.0, 360.0) if h == ANY else h + rng.normal(0.0, JITTER[0])
    return h, s + rng.normal(0.0, JITTER[1]), v + rng.normal(0.0, JITTER[2])


def part_colour(rng: np.random.Generator, part: str) -> tuple[float, float, float]:
    """A slightly jittered colour of a named object part (glass, tyre, skin ...)."""
    h, s, v = PARTS[part]
    return h + rng.normal(0.0, JITTER[0]), s, v + rng.normal(0.0, JITTER[2] / 2)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """(N, 3) HSV (hue in degrees, s and v in [0, 1]) -> (N, 3) RGB in [0, 1]."""
    h = (hsv[:, 0] % 360.0) / 60.0
    s, v = np.clip(hsv[:, 1], 0, 1), np.clip(hsv[:, 2], 0, 1)
    k = (np.array([5.0, 3.0, 1.0]) + h[:, None]) % 6.0  # (N, 3)
    return v[:, None] - (v * s)[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _periodic_blur(noise: np.ndarray, sigma: tuple[float, float]) -> np.ndarray:
    """Gaussian blur with wrap-around (via FFT), so tiles repeat seamlessly."""
    fy = np.fft.fftfreq(noise.shape[0])[:, None]
    fx = np.fft.rfftfreq(noise.shape[1])[None, :]
    kernel = np.exp(-2 * np.pi**2 * ((fy * sigma[0]) ** 2 + (fx * sigma[1]) ** 2))
    return np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=noise.shape)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (2 * x.std() + 1e-8)


@lru_cache(maxsize=4)
def texture_tiles(height: int, width: int) -> np.ndarray:
    """(7, 2H, 2W) float32 zero-mean texture tiles, indexed by texture kind; fixed seed."""
    rng = np.random.default_rng(1234)
    shape = (2 * height, 2 * width)
    rows, cols = np.indices(shape)
    noise = [rng.standard_normal(shape) for _ in range(4)]
    brick = np.where((rows % 4 == 0) | ((cols + 4 * (rows // 4 % 2)) % 8 == 0), -1.0, 0.3)
    tiles = [
        np.zeros(shape),
        _unit(_periodic_blur(noise[0], (0.6, 0.6))),
        _unit(_periodic_blur(noise[1], (height / 16, height / 16))),
        np.tanh(3 * _unit(_periodic_blur(noise[2], (1.2, 1.2)))),
        _unit(brick + 0.5 * noise[3]),
        np.where(cols % 5 < 2, 1.0, -0.6) + np.where(rows % 11 < 2, 0.8, 0.0),
        _unit(_periodic_blur(noise[3], (1.6, 0.4))),
    ]
    return np.stack(tiles).astype(np.float32)


@lru_cache(maxsize=4)
def noise_tile(height: int, width: int) -> np.ndarray:
    """(2H, 2W, 3) float32 standard-normal sensor noise; fixed seed."""
    return np.random.default_rng(4321).standard_normal((2 * height, 2 * width, 3), dtype=np.float32)


@lru_cache(maxsize=4)
def radial(height: int, width: int) -> np.ndarray:
    """(H, W) float32 squared distance from the image centre, 1 at the corners."""
    y, x = np.ogrid[-1 : 1 : height * 1j, -1 : 1 : width * 1j]
    return ((x**2 + y**2) / 2).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Camera and canvas
# --------------------------------------------------------------------------------------------
class View(NamedTuple):
    """A pinhole camera at (0, camera height, 0) looking along +Z, turned by a small yaw."""

    width: int
    height: int
    focal: float  # pixels
    horizon: float  # row of the horizon
    camera_height: float  # metres
    cos: float
    sin: float
    min_px: float  # thinnest structure drawn, in pixels

    def depth(self, x: float, z: float) -> float:
        """Camera-frame depth of the world ground point (x, z)."""
        return x * self.sin + z * self.cos

    def ground(self, x: float, z: float) -> tuple[float, float, float]:
        """Image point (u, v) of the ground point (x, 0, z) and the scale in pixels per metre."""
        xc, zc = x * self.cos - z * self.sin, max(self.depth(x, z), Z_NEAR)
        scale = self.focal / zc
        return self.width / 2 + xc * scale, self.horizon + self.camera_height * scale, scale


def clip_near(poly: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    """Sutherland-Hodgman clip of a camera-frame polygon to z >= Z_NEAR."""
    out = []
    for i, a in enumerate(poly):
        b = poly[(i + 1) % len(poly)]
        if a[2] >= Z_NEAR:
            out.append(a)
        if (a[2] >= Z_NEAR) != (b[2] >= Z_NEAR):
            t = (Z_NEAR - a[2]) / (b[2] - a[2])
            out.append((a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]), Z_NEAR))
    return out


def project(view: View, points: list[tuple[float, float, float]]) -> list[tuple[float, float]]:
    """World polygon (x, y, z) -> image polygon (u, v), clipped in front of the camera."""
    c, s = view.cos, view.sin
    cam = [(x * c - z * s, y, x * s + z * c) for x, y, z in points]
    if min(p[2] for p in cam) < Z_NEAR:
        cam = clip_near(cam)
    f, u0, v0, h = view.focal, view.width / 2, view.horizon, view.camera_height
    return [(u0 + f * x / z, v0 + f * (h - y) / z) for x, y, z in cam]


class Canvas:
    """The segment map being drawn plus one table row per segment."""

    def __init__(self, view: View, rng: np.random.Generator) -> None:
        self.view, self.rng = view, rng
        self.image = Image.new("I", (view.width, view.height), 0)
        self.draw = ImageDraw.Draw(self.image)
        self.shadow = Image.new("L", (view.width, view.height), 0)
        self.shadow_draw = ImageDraw.Draw(self.shadow)
        self.rows: list[tuple] = []
        self.instances = [0] * NUM_CLASSES

    def new_instance(self, cls: int) -> int:
        """The next instance index k of ``cls`` in this image."""
        self.instances[cls] += 1
        return self.instances[cls] - 1

    def segment(self, cls: int, depth: float, colour: Any = None, inst: int = -1) -> int:
        """A new segment of class ``cls``; ``colour`` is HSV, a part name, or None (class colour)."""
        if colour is None:
            colour = sample_colour(self.rng, cls)
        elif isinstance(colour, str):
            colour = part_colour(self.rng, colour)
        kind, amp = TEXTURE.get(cls, (NONE, 0.0))
        label_id = 0 if cls == VOID else CITYSCAPES_LABEL_IDS[cls]
        value = label_id * 1000 + inst if cls in INSTANCE_CLASSES and inst >= 0 else label_id
        self.rows.append((cls, value, *colour, kind, amp, depth, cls in GROUND))
        return len(self.rows) - 1

    def polygon3d(self, seg: int, points: list[tuple[float, float, float]]) -> None:
        """Fill a world polygon."""
        self.polygon(seg, project(self.view, points))

    def polygon(self, seg: int, points: list[tuple[float, float]]) -> None:
        """Fill an image polygon."""
        if len(points) >= 3:
            self.draw.polygon(points, fill=seg)

    def shade3d(self, points: list[tuple[float, float, float]]) -> None:
        """Mark a world polygon (on the ground) as lying in cast shadow."""
        poly = project(self.view, points)
        if len(poly) >= 3:
            self.shadow_draw.polygon(poly, fill=255)


class Sprite(NamedTuple):
    """A fronto-parallel drawing frame standing on the ground: metres -> pixels."""

    canvas: Canvas
    u: float
    v: float
    scale: float  # pixels per metre
    sx: float  # horizontal factor: -1 mirrors, |sx| < 1 squashes an oblique view

    @classmethod
    def at(cls, canvas: Canvas, x: float, z: float, sx: float = 1.0) -> Sprite:
        u, v, scale = canvas.view.ground(x, z)
        return cls(canvas, u, v, scale, sx)

    def px(self, x: float, y: float) -> tuple[float, float]:
        return self.u + x * self.scale * self.sx, self.v - y * self.scale

    def width(self, metres: float) -> int:
        return max(round(self.canvas.view.min_px), round(metres * self.scale))

    def poly(self, seg: int, points: list[tuple[float, float]]) -> None:
        self.canvas.polygon(seg, [self.px(x, y) for x, y in points])

    def rect(self, seg: int, x0: float, x1: float, y0: float, y1: float) -> None:
        """Axis-aligned box, widened to the minimum pixel width around its centre."""
        half = max(abs(x1 - x0) * abs(self.sx), self.canvas.view.min_px / self.scale) / 2
        xm, (u0, v0), (_, v1) = (x0 + x1) / 2, self.px(0, y0), self.px(0, y1)
        um = u0 + xm * self.scale * self.sx
        self.canvas.draw.rectangle(
            (um - half * self.scale, min(v0, v1), um + half * self.scale, max(v0, v1)), fill=seg
        )

    def line(self, seg: int, points: list[tuple[float, float]], metres: float) -> None:
        self.canvas.draw.line(
            [self.px(x, y) for x, y in points], fill=seg, width=self.width(metres)
        )

    def disc(self, seg: int, x: float, y: float, rx: float, ry: float | None = None) -> None:
        u, v = self.px(x, y)
        a, b = max(rx * self.scale * abs(self.sx), 0.6), (ry or rx) * self.scale
        self.canvas.draw.ellipse((u - a, v - b, u + a, v + b), fill=seg)

    def ring(self, seg: int, x: float, y: float, r: float, metres: float) -> None:
        u, v = self.px(x, y)
        a, b = max(r * self.scale * abs(self.sx), 1.0), r * self.scale
        w = min(self.width(metres), max(1, round(min(a, b))))
        self.canvas.draw.ellipse((u - a, v - b, u + a, v + b), outline=seg, width=w)


# --------------------------------------------------------------------------------------------
# Image formation
# --------------------------------------------------------------------------------------------
class Rendered(NamedTuple):
    """One rendered frame."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    label: np.ndarray  # (H, W) uint8 train IDs, 255 = unlabelled
    instance: np.ndarray  # (H, W) int32 Cityscapes instance values (label_id * 1000 + k)


class Segments(NamedTuple):
    """Per-segment attributes, one row per drawn segment."""

    cls: np.ndarray  # (S,) intp train IDs (255 = void)
    value: np.ndarray  # (S,) int32 instance-map values
    hsv: np.ndarray  # (S, 3) float32
    kind: np.ndarray  # (S,) intp texture kind
    amp: np.ndarray  # (S,) float32 texture amplitude
    depth: np.ndarray  # (S,) float32 metres
    ground: np.ndarray  # (S,) float32 1 on road, sidewalk, terrain

    @classmethod
    def of(cls, rows: list[tuple]) -> Segments:
        table = np.array(rows, dtype=np.float64)  # (S, 9)
        return cls(
            table[:, 0].astype(np.intp), table[:, 1].astype(np.int32), table[:, 2:5].astype(np.float32),
            table[:, 5].astype(np.intp), table[:, 6].astype(np.float32), table[:, 7].astype(np.float32),
            table[:, 8].astype(np.float32),
        )  # fmt: skip


def _class_table(values: tuple[float, ...], identity: float) -> np.ndarray:
    """A 256-entry lookup by train ID (void and others get ``identity``)."""
    table = np.full(256, identity, dtype=np.float32)
    table[:NUM_CLASSES] = values
    return table


def segment_rgb(cls: np.ndarray, hsv: np.ndarray, app: Appearance) -> np.ndarray:
    """(S,) classes and (S, 3) HSV -> (S, 3) RGB after the per-class drift of ``app``."""
    drifted = np.stack(
        [
            hsv[:, 0] + _class_table(app.hue, 0.0)[cls],
            hsv[:, 1] * _class_table(app.saturation, 1.0)[cls],
            hsv[:, 2] * _class_table(app.value, 1.0)[cls],
        ],
        axis=1,
    )
    return hsv_to_rgb(drifted).astype(np.float32)


def surface_light(canvas: Canvas, segs: Segments, seg: np.ndarray, app: Appearance) -> np.ndarray:
    """(H, W) float32 multiplicative light: texture, grain, cast shadow and the sky gradient."""
    h, w = seg.shape
    oy, ox = canvas.rng.integers(0, h), canvas.rng.integers(0, w)
    tiles = texture_tiles(h, w)[:, oy : oy + h, ox : ox + w].reshape(-1)  # (7 * H * W,) copy
    pixel = np.arange(h * w, dtype=np.intp).reshape(h, w)
    texture = np.take(tiles, np.take(segs.kind * (h * w), seg) + pixel)
    light = 1.0 + np.take(segs.amp * np.float32(app.texture), seg) * texture
    sky = np.take((segs.cls == SKY).astype(np.float32), seg)
    if app.grain:
        light += (
            np.float32(app.grain)
            * texture_tiles(h, w)[COARSE, h - 1 :: -1, w - 1 :: -1]
            * (1 - sky)
        )
    shadow = np.asarray(canvas.shadow, dtype=np.float32) * np.float32(app.shadow / 255.0)
    light *= 1.0 - shadow * np.take(segs.ground, seg)
    rows = np.arange(h, dtype=np.float32)[:, None] / np.float32(max(canvas.view.horizon, 1.0))
    return light * (1.0 + sky * (0.2 * np.minimum(rows, 1.0) - 0.1))


def haze_weight(canvas: Canvas, segs: Segments, seg: np.ndarray, haze: float) -> np.ndarray:
    """(H, W) float32 haze blend weight from per-pixel depth (ground depth from its row)."""
    view = canvas.view
    rows = np.arange(seg.shape[0], dtype=np.float32)[:, None] - np.float32(view.horizon)
    ground_depth = np.float32(view.focal * view.camera_height) / np.maximum(rows, 0.5)
    ground = np.take(segs.ground, seg)
    depth = ground * ground_depth + (1 - ground) * np.take(segs.depth, seg)
    return np.float32(haze) * (1.0 - np.exp(depth / np.float32(-80.0)))


def camera_effects(image: np.ndarray, optics: Optics, rng: np.random.Generator) -> np.ndarray:
    """Vignetting, defocus blur, sensor noise and JPEG on an (H, W, 3) float32 image in [0, 1]."""
    h, w = image.shape[:2]
    oy, ox = rng.integers(0, h), rng.integers(0, w)
    if optics.vignette:
        image = image * (1.0 - np.float32(optics.vignette) * radial(h, w))[..., None]
    out = Image.fromarray(np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8))
    if optics.blur > 0:
        out = out.filter(ImageFilter.BoxBlur(optics.blur * w / 512))
    if optics.noise > 0:
        noise = noise_tile(h, w)[oy : oy + h, ox : ox + w] * np.float32(optics.noise * 255)
        out = Image.fromarray(
            np.clip(np.asarray(out, np.float32) + noise + 0.5, 0, 255).astype(np.uint8)
        )
    if optics.jpeg > 0:
        buffer = io.BytesIO()
        out.save(buffer, format="JPEG", quality=round(95 - 55 * optics.jpeg))
        out = Image.open(buffer).convert("RGB")
    return np.asarray(out)


def form_image(canvas: Canvas, style: Style, camera_rng: np.random.Generator) -> Rendered:
    """Turn the drawn segment map into the RGB image, train-ID label and instance map."""
    seg = np.asarray(canvas.image, dtype=np.int32)  # (H, W) segment index
    segs = Segments.of(canvas.rows)
    app, optics = style.appearance, style.optics
    rgb = np.take(segment_rgb(segs.cls, segs.hsv, app), seg, axis=0)  # (H, W, 3)
    jitter = canvas.rng.uniform(0.9, 1.1) * (1 + canvas.rng.normal(0, 0.02, 3))
    gains = (app.brightness * np.asarray(app.white_balance) * jitter).astype(np.float32)
    light = surface_light(canvas, segs, seg, app)[..., None]
    image = rgb * light * (gains * np.float32(app.contrast)) + np.float32(0.5 - 0.5 * app.contrast)
    if optics.haze > 0:
        weight = haze_weight(canvas, segs, seg, optics.haze)[..., None]
        image = image * (1 - weight) + weight * (np.float32(0.78) * gains)
    label = np.take(segs.cls.astype(np.uint8), seg)
    instance = np.take(segs.value, seg)
    return Rendered(camera_effects(image, optics, camera_rng), label, instance)
