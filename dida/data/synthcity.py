"""SynthCity: a procedural two-domain street-scene benchmark in the GTA5 and Cityscapes formats.

The source domain is rendered in a clean "game" style, the target in a "camera" style. One dial,
``shift`` in [0, 1], blends every difference (0 = the target drawn exactly like the source); the gap
is made of three separately switchable parts: appearance, camera and geometry. The shift-1 end of
every part lives in one place, ``TARGET_STYLE``, for calibration.

    python -m dida.data.synthcity --out data/synthcity --preset default

writes ``source/{images,labels}/00001.png`` (GTA5 layout: palette PNGs of Cityscapes label IDs),
``target/{leftImg8bit,gtFine}/{train,val}/CITY/...`` (Cityscapes layout) and ``synthcity.json``.
Image i of a split is seeded from (seed, domain, split, i): output does not depend on the worker
count. This module samples *what* is in a street and writes the files; ``synthcity_render`` draws.
See docs/SYNTHCITY.md.
"""

from __future__ import annotations

import argparse
import heapq
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from dida.data import synthcity_render as R
from dida.data.classes import (
    CITYSCAPES_LABEL_IDS,
    CLASSES,
    NUM_CLASSES,
    PALETTE,
    train_to_label_ids,
)
from dida.data.synthcity_render import Appearance, Canvas, Footprint, Geometry, Optics, Style

GENERATOR_VERSION = 1
MANIFEST = "synthcity.json"
SPLITS = ("source", "train", "val")
CITIES = {"train": ("pixelburg", "voxelheim", "rasterdam", "texelstadt"),
          "val": ("meshingen", "shaderton")}  # fmt: skip
FRAME = 19  # Cityscapes frame names end in _000019
_SEED_WORDS = {"source": (0, 0), "train": (1, 1), "val": (1, 2)}  # (domain, split)

# -------------------------------------------------------------------------------------------------
# The domain styles: SOURCE_STYLE is the "game" look, TARGET_STYLE the target at shift = 1.
# Calibrate the benchmark here: every target value is blended from the source by shift x part.
# -------------------------------------------------------------------------------------------------
SOURCE_STYLE = Style()
# fmt: off
TARGET_STYLE = Style(
    appearance=Appearance(
        # road swalk build wall fence pole light sign veg terr sky pers ridr car truck bus train moto bike
        hue=(15, -20, 15, -15, 20, 10, 0, -10, 22, -25, 12, 0, 0, 0, 0, -15, 15, 0, 0),
        saturation=(1.3, .7, .6, .7, .6, .8, .8, .75, .7, .65, .45, .7, .7, .65, .7, .7, .7, .7, .7),
        value=(1.1, .9, .85, .9, .85, .9, 1, .85, .8, .85, 1.05, .85, .85, .85, .85, .85, .85, .85, .85),
        texture=1.7, grain=0.1, brightness=0.82, white_balance=(0.94, 1.0, 1.08), contrast=0.85,
        shadow=0.55,
    ),
    optics=Optics(noise=0.035, blur=1.0, vignette=0.35, jpeg=0.6, haze=0.25),
    geometry=Geometry(
        horizon=0.40, camera_height=1.4, focal=0.76, object_scale=1.08, vehicle_aspect=0.93,
        urban=0.6, suburban=0.35, rural=0.05, road_width=0.9, sidewalk=1.7, building_height=1.0,
        building_gap=0.15, intersection=0.6, wall=0.12, fence=0.25, tree=1.8, pole=1.5,
        traffic_light=0.3, traffic_sign=0.5, parked=0.8, traffic=2.0, truck=0.05, bus=0.08,
        train=0.08, person=7.0, rider=1.4, motorcycle=0.3, bicycle=1.5, clutter=2.0,
    ),
)
# fmt: on


@dataclass(frozen=True)
class SynthCityConfig:
    """What to generate. The defaults are the ``default`` preset."""

    n_source: int = 2500
    """Number of labelled source images (GTA5 layout)."""
    n_target_train: int = 1000
    """Number of target training images (their labels are only read by the oracle)."""
    n_target_val: int = 250
    """Number of target validation images."""
    height: int = 256
    """Image height in pixels (multiple of 32)."""
    width: int = 512
    """Image width in pixels (multiple of 32)."""
    seed: int = 0
    """Base seed; image i of a split is seeded from (seed, domain, split, i)."""
    shift: float = 1.0
    """Size of the domain gap in [0, 1]: 0 renders the target exactly like the source."""
    appearance: bool = True
    """Apply the appearance part of the gap (class colours, textures, lighting, shadows)."""
    camera: bool = True
    """Apply the camera part of the gap (noise, blur, vignetting, JPEG, haze)."""
    geometry: bool = True
    """Apply the geometry part of the gap (camera pose, object shapes, class frequencies)."""

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.shift) <= 1.0:
            raise ValueError(f"shift={self.shift} is outside [0, 1]; choose a value in [0, 1]")
        for name in ("height", "width"):
            size = getattr(self, name)
            if not isinstance(size, int) or size < 32 or size % 32:
                raise ValueError(f"{name}={size!r} must be a multiple of 32 (e.g. 256 x 512)")
        for name in ("n_source", "n_target_train", "n_target_val", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} must be a non-negative integer")

    def count(self, split: str) -> int:
        """Number of images in ``split`` (source, train or val)."""
        counts = {"source": self.n_source, "train": self.n_target_train, "val": self.n_target_val}
        return counts[check_split(split)]

    def style(self, split: str) -> Style:
        """The rendering style of ``split``: the source style, or the target style at this shift."""
        if check_split(split) == "source":
            return SOURCE_STYLE
        weights = [self.shift * on for on in (self.appearance, self.camera, self.geometry)]
        return R.blend(SOURCE_STYLE, TARGET_STYLE, *weights)


PRESETS: dict[str, SynthCityConfig] = {
    "tiny": SynthCityConfig(n_source=8, n_target_train=4, n_target_val=4, height=64, width=128),
    "quick": SynthCityConfig(400, 200, 100, height=128, width=256),
    "default": SynthCityConfig(),
}


def check_split(split: str) -> str:
    """``split`` if it is one of SPLITS, else a ValueError naming the valid ones."""
    if split not in SPLITS:
        raise ValueError(f"unknown SynthCity split {split!r}: use one of {list(SPLITS)}")
    return split


def preset_config(preset: str, **overrides: object) -> SynthCityConfig:
    """The config of a named preset with some fields replaced (None values are ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown SynthCity preset {preset!r}: use one of {list(PRESETS)}")
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


# -------------------------------------------------------------------------------------------------
# Street plan. World: X right, Y up, Z forward, metres; the camera stands at X = Z = 0.
# -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Side:
    """One side of the street; widths and distances are |X| in metres."""

    sign: int  # -1 left, +1 right
    kind: str  # "urban", "suburban" or "rural"
    edge: float  # road edge
    verge: float  # grass strip between road and sidewalk
    sidewalk: float
    setback: float  # lawn between sidewalk and buildings
    parking: bool  # a parking lane along the kerb

    @property
    def inner(self) -> float:
        return self.edge + self.verge

    @property
    def outer(self) -> float:
        return self.inner + self.sidewalk

    @property
    def line(self) -> float:
        """The building line."""
        return self.outer + self.setback


@dataclass(frozen=True)
class Street:
    """The sampled plan of one street."""

    sides: tuple[Side, Side]  # left, right
    lane: float  # lane width
    lanes: tuple[float, ...]  # lane-centre X of moving traffic
    end: float  # Z of the far row closing the street
    cross: tuple[float, float] | None  # Z range of a cross street's carriageway
    cross_walk: float  # sidewalk width along the cross street
    crossing: float | None  # Z of a zebra crossing's far edge
    sun: int  # sign of the side the sun shines from

    @property
    def road(self) -> tuple[float, float]:
        """X of the left and right road edges."""
        return -self.sides[0].edge, self.sides[1].edge

    def blocked(self, z0: float, z1: float) -> bool:
        """Whether Z range z0..z1 reaches into the cross street (or its sidewalks)."""
        if self.cross is None:
            return False
        return z1 > self.cross[0] - self.cross_walk and z0 < self.cross[1] + self.cross_walk


def sample_view(rng: np.random.Generator, geo: Geometry, height: int, width: int) -> R.View:
    """Camera intrinsics and pose of one image."""
    yaw = np.deg2rad(np.clip(rng.normal(0.0, 3.0), -8.0, 8.0))
    focal = geo.focal * width * rng.uniform(0.95, 1.05)
    horizon = height * (geo.horizon + rng.normal(0.0, 0.02))
    camera_height = geo.camera_height * rng.uniform(0.9, 1.1)
    return R.View(
        width,
        height,
        focal,
        horizon,
        camera_height,
        np.cos(yaw),
        np.sin(yaw),
        max(1.0, width / 256),
    )


def sample_side(rng: np.random.Generator, sign: int, kind: str, edge: float, geo: Geometry) -> Side:
    """Verge, sidewalk and setback of a street side of the given kind."""
    parking = bool(rng.random() < (0.5 if sign > 0 else 0.4))
    edge += 2.2 * parking
    if kind == "urban":
        verge = rng.uniform(0.8, 2.0) if rng.random() < 0.2 else 0.0
        walk, setback = rng.uniform(3.0, 6.0), rng.uniform(0.0, 1.0)
    elif kind == "suburban":
        verge = rng.uniform(0.8, 2.5) if rng.random() < 0.6 else 0.0
        walk, setback = rng.uniform(2.0, 3.5), rng.uniform(3.0, 8.0)
    else:
        verge, setback = rng.uniform(2.0, 6.0), 0.0
        walk = rng.uniform(1.0, 2.0) if rng.random() < 0.4 else 0.0
    return Side(sign, kind, edge, verge, walk * geo.sidewalk, setback, parking)


def sample_street(rng: np.random.Generator, geo: Geometry) -> Street:
    """Side kinds, lanes, sidewalks, street length, cross street and zebra crossing."""
    kinds, weights = ("urban", "suburban", "rural"), np.array([geo.urban, geo.suburban, geo.rural])
    first, second = rng.choice(kinds, 2, p=weights / weights.sum())
    pair = (first, first if rng.random() < 0.6 else second)[:: int(rng.choice((-1, 1)))]
    lane = rng.uniform(3.0, 3.6) * geo.road_width
    n_left, n_right = int(rng.integers(1, 3)), int(rng.random() < 0.3)
    edges = ((0.5 + n_left) * lane, (0.5 + n_right) * lane)
    left, right = (
        sample_side(rng, sign, str(pair[i]), edges[i], geo) for i, sign in ((0, -1), (1, 1))
    )
    cross = None
    if rng.random() < geo.intersection:
        start = rng.uniform(14.0, 45.0)
        cross = (start, start + rng.uniform(8.0, 14.0))
    crossing = rng.uniform(10, 30) if rng.random() < 0.2 else None
    return Street(
        sides=(left, right),
        lane=lane,
        lanes=tuple(k * lane for k in range(-n_left, n_right + 1)),
        end=rng.uniform(150, 400) if "rural" in pair else rng.uniform(70, 180),
        cross=cross,
        cross_walk=rng.uniform(2.5, 4.5),
        crossing=cross[0] - 0.5 if cross else crossing,
        sun=int(rng.choice((-1, 1))),
    )


# -------------------------------------------------------------------------------------------------
# Ground and buildings (drawn first, far to near)
# -------------------------------------------------------------------------------------------------
def ground_quad(canvas: Canvas, seg: int, x: tuple[float, float], z: tuple[float, float]) -> None:
    """Fill the ground rectangle x0..x1 by z0..z1."""
    corners = ((x[0], z[0]), (x[1], z[0]), (x[1], z[1]), (x[0], z[1]))
    canvas.polygon3d(seg, [(a, 0.0, b) for a, b in corners])


def draw_ground(canvas: Canvas, st: Street) -> None:
    """Far terrain, outer areas, verges, sidewalks, the cross street, the road and markings."""
    colour = {cls: R.sample_colour(canvas.rng, cls) for cls in R.GROUND}
    seg = {cls: canvas.segment(cls, 0.0, colour[cls]) for cls in R.GROUND}
    w, h, horizon = canvas.view.width, canvas.view.height, canvas.view.horizon
    canvas.polygon(seg[R.TERRAIN], [(0, horizon), (w, horizon), (w, h), (0, h)])
    along = (R.Z_NEAR, st.end)
    for side in st.sides:
        outside = seg[R.SIDEWALK if side.kind == "urban" else R.TERRAIN]
        ground_quad(canvas, outside, (side.sign * side.outer, side.sign * 400.0), along)
        ground_quad(
            canvas, seg[R.SIDEWALK], (side.sign * side.inner, side.sign * side.outer), along
        )
        ground_quad(canvas, seg[R.TERRAIN], (side.sign * side.edge, side.sign * side.inner), along)
    if st.cross:
        walks = (st.cross[0] - st.cross_walk, st.cross[1] + st.cross_walk)
        ground_quad(canvas, seg[R.SIDEWALK], (-400.0, 400.0), walks)
        ground_quad(canvas, seg[R.ROAD], (-400.0, 400.0), st.cross)
    ground_quad(canvas, seg[R.ROAD], st.road, along)
    draw_markings(canvas, st, canvas.segment(R.ROAD, 0.0, (colour[R.ROAD][0], 0.03, 0.85)))


def draw_markings(canvas: Canvas, st: Street, paint: int) -> None:
    """Dashed lane lines, a solid centre line and a zebra crossing (road class, painted white)."""
    for x in [c + st.lane / 2 for c in st.lanes[:-1]]:
        solid = abs(x + st.lane / 2) < 1e-6  # between the oncoming lanes and ours
        for z in np.arange(2.0, min(st.end, 120.0), 3.0 if solid else 9.0):
            if not st.blocked(z, z + 3.0):
                ground_quad(canvas, paint, (x - 0.07, x + 0.07), (z, z + 3.0))
    if st.crossing is not None:
        for x in np.arange(st.road[0] + 0.5, st.road[1] - 0.5, 1.0):
            ground_quad(canvas, paint, (x, x + 0.5), (st.crossing - 3.0, st.crossing))


def blocks(
    rng: np.random.Generator, span: tuple[float, float], lengths: tuple[float, float]
) -> list:
    """Consecutive (start, end) pieces of random length covering span."""
    pieces, a = [], span[0]
    while a < span[1]:
        b = min(a + rng.uniform(*lengths), span[1])
        pieces.append((a, b))
        a = b
    return pieces


def frontal_row(canvas: Canvas, z: float, x: tuple[float, float], kind: str, geo: Geometry) -> None:
    """Facades or tree crowns facing the camera at depth z (the far end, or across a cross street)."""
    rng = canvas.rng
    for a, b in blocks(rng, x, (10.0, 30.0)):
        roll = rng.random()
        if kind == "urban" or (kind == "suburban" and roll < 0.5) or roll < 0.1:
            tall = (10.0, 35.0) if kind == "urban" else (5.0, 10.0)
            R.building(canvas, ("z", z), (a, b), rng.uniform(*tall) * geo.building_height)
        elif roll < 0.85:
            R.tree_band(canvas, ("z", z), (a, b), (4.0, 9.0))


def side_row(
    canvas: Canvas,
    st: Street,
    side: Side,
    x: float,
    z: tuple[float, float],
    geo: Geometry,
    front: bool,
) -> None:
    """Buildings along a street side at |X| = x, far to near; the front row casts shadows."""
    rng, pieces, s = canvas.rng, [], side.sign
    for a, b in blocks(rng, z, (8.0, 25.0) if side.kind == "urban" else (7.0, 12.0)):
        gap = front and b - a > 5 and (side.kind == "suburban" or rng.random() < geo.building_gap)
        pieces.append((a, b - rng.uniform(3.0, 9.0) * gap))
    for a, b in reversed(pieces):
        if st.blocked(a, b):
            continue
        tall = (9.0, 28.0) if side.kind == "urban" else (4.5, 8.0)
        height = rng.uniform(*tall) * geo.building_height * (1.0 if front else 1.3)
        if front and s == st.sun:
            reach = x - 0.6 * height
            canvas.shade3d(
                [(s * x, 0, a), (s * x, 0, b), (s * reach, 0, b + 2), (s * reach, 0, a + 2)]
            )
        depth = sorted((s * x, s * (x + rng.uniform(8.0, 15.0))))
        R.building(canvas, ("x", s * x), (a, b), height, ("z", a) if front else None, tuple(depth))


def tree_line(canvas: Canvas, st: Street, side: Side, x: float, z: tuple[float, float]) -> None:
    """A band of tree crowns along a street side at |X| = x, interrupted by the cross street."""
    pieces = [z]
    if st.cross is not None:
        walks = (st.cross[0] - st.cross_walk, st.cross[1] + st.cross_walk)
        pieces = [(z[0], min(z[1], walks[0])), (max(z[0], walks[1]), z[1])]
    for a, b in pieces:
        if b > a:
            R.tree_band(canvas, ("x", side.sign * x), (a, b), (4.0, 9.0))


def draw_buildings(canvas: Canvas, st: Street, geo: Geometry) -> None:
    """Far row; back rows beyond, then across, then before the cross street; then front rows."""
    for side in st.sides:
        frontal_row(canvas, st.end, tuple(sorted((0.0, side.sign * 160.0))), side.kind, geo)
    back = [side.line + canvas.rng.uniform(8.0, 16.0) for side in st.sides]
    split = st.cross[1] + st.cross_walk if st.cross else st.end
    for lo, hi in ((split, st.end), (1.0, split)):
        for side, x in zip(st.sides, back, strict=True):
            if side.kind == "urban":
                side_row(canvas, st, side, x, (lo, hi), geo, front=False)
            else:
                tree_line(canvas, st, side, x - 6.0, (lo, hi))
        for side in st.sides if st.cross and lo == split else ():
            frontal_row(
                canvas,
                split,
                tuple(sorted((side.sign * side.line, side.sign * 160.0))),
                side.kind,
                geo,
            )
    for side in st.sides:
        if side.kind != "rural":
            side_row(canvas, st, side, side.line, (1.0, st.end), geo, front=True)


# -------------------------------------------------------------------------------------------------
# Street furniture, vehicles and people: placed with disjoint footprints, drawn in painter's order
# -------------------------------------------------------------------------------------------------
def _overlap(a: Footprint, b: Footprint) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.z0 < b.z1 and b.z0 < a.z1


class Placer:
    """Collects objects (footprint, drawing call) whose footprints do not overlap."""

    def __init__(self, canvas: Canvas) -> None:
        self.canvas = canvas
        self.items: list[tuple[Footprint, Callable[[], None]]] = []

    def add(self, footprint: Footprint, draw: Callable[..., None], *args: object) -> bool:
        """Keep the object unless it is too close or overlaps one already placed."""
        if footprint.z0 < 2.0 or any(_overlap(footprint, fp) for fp, _ in self.items):
            return False
        self.items.append((footprint, partial(draw, self.canvas, *args)))
        return True


def nearer(a: Footprint, b: Footprint) -> bool:
    """Whether ``a`` is in front of ``b`` along rays hitting both (disjoint footprints).

    Two disjoint rectangles are split by an axis-parallel line; the one on the camera's side of it
    is nearer.
    """
    if (
        a.x1 <= b.x0
    ):  # a left of b: the line can pass at x > 0 (the camera's side is a's) iff b.x0 > 0
        return b.x0 > 0
    if b.x1 <= a.x0:
        return a.x0 <= 0
    if a.z1 <= b.z0 or b.z1 <= a.z0:
        return a.z1 <= b.z0
    return a.z0 < b.z0


def _directions(fp: Footprint) -> tuple[float, float]:
    """Range of x / z over the footprint: the viewing directions it covers."""
    ratios = [x / max(z, R.Z_NEAR) for x in (fp.x0, fp.x1) for z in (fp.z0, fp.z1)]
    return min(ratios), max(ratios)


def painter_order(footprints: Sequence[Footprint]) -> list[int]:
    """Drawing order: each object after every object it hides; ties far first."""
    n = len(footprints)
    spans = [_directions(fp) for fp in footprints]
    in_front: list[list[int]] = [[] for _ in range(n)]
    waiting = [0] * n  # number of objects that must be drawn before
    by_start = sorted(range(n), key=lambda i: spans[i][0])
    for pos, i in enumerate(by_start):
        for j in by_start[pos + 1 :]:
            if spans[j][0] >= spans[i][1]:
                break
            near, far = (i, j) if nearer(footprints[i], footprints[j]) else (j, i)
            in_front[far].append(near)
            waiting[near] += 1
    ready = [(-footprints[i].z0, i) for i in range(n) if waiting[i] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)[1]
        order.append(i)
        for j in in_front[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, (-footprints[j].z0, j))
    return order + sorted(set(range(n)) - set(order), key=lambda i: -footprints[i].z0)


def place_barriers(place: Placer, st: Street, geo: Geometry) -> None:
    """Walls and fences along the property line (along the road edge on rural sides)."""
    rng = place.canvas.rng
    for side in st.sides:
        x = side.sign * (side.edge + 0.4 if side.kind == "rural" else side.outer)
        for a, b in blocks(rng, (3.0, min(st.end, 100.0)), (6.0, 20.0)):
            roll = rng.random()
            cls = R.WALL if roll < geo.wall else R.FENCE if roll < geo.wall + geo.fence else None
            if cls is not None and not st.blocked(a, b):
                height = rng.uniform(0.8, 2.2) if cls == R.WALL else rng.uniform(1.0, 1.9)
                place.add(Footprint(x - 0.05, x + 0.05, a, b), R.barrier, cls, x, (a, b), height)


def place_poles(place: Placer, st: Street, geo: Geometry) -> None:
    """Lamps, traffic-light and sign poles along the kerb; a traffic light at the cross street."""
    rng = place.canvas.rng
    corner = st.cross[0] - st.cross_walk / 2 if st.cross else None
    for side in st.sides:
        x, z = side.sign * (side.edge + 0.45), rng.uniform(2.0, 12.0)
        spots = [corner] if corner is not None else []
        while z < min(st.end, 90.0):
            if not st.blocked(z - 1.0, z + 1.0):
                spots.append(z)
            z += rng.uniform(14.0, 26.0) / geo.pole
        for z in spots:
            light = rng.random() < (0.85 if z == corner else geo.traffic_light)
            sign = rng.random() < geo.traffic_sign
            arm = rng.uniform(2.5, 5.0) if light and rng.random() < 0.4 else 0.0
            fp = Footprint(x - 0.15, x + 0.15, z - 0.15, z + 0.15)
            place.add(fp, R.street_pole, x, z, side.sign, light, sign, arm)


def place_vegetation(place: Placer, st: Street, geo: Geometry) -> None:
    """Trees in sidewalk pits (urban), on verges and on lawns."""
    rng = place.canvas.rng
    for side in st.sides:
        rows = []
        if side.sidewalk >= 2.5 and rng.random() < 0.5:
            rows.append((side.inner + 0.6 * side.sidewalk, 1.0))
        if side.verge >= 1.0:
            rows.append((side.edge + side.verge / 2, 0.9))
        if side.setback >= 3.0:
            rows.append((side.outer + side.setback * rng.uniform(0.3, 0.7), 1.1))
        for x, size in rows:
            x *= side.sign
            step = rng.uniform(7.0, 14.0) / geo.tree
            for z in np.arange(rng.uniform(3, 10), min(st.end, 90.0), step):
                if not st.blocked(z - 2, z + 2):
                    fp = Footprint(x - 0.2, x + 0.2, z - 0.2, z + 0.2)
                    place.add(fp, R.tree, x, z, size * rng.uniform(0.8, 1.2))


def add_vehicle(place: Placer, cls: int, x: float, z: float, axis: str, geo: Geometry) -> bool:
    """A vehicle of random size: its rear centre at (x, z) ("z": along the street), or its near
    side's centre at (x, z) ("x": across it)."""
    rng = place.canvas.rng
    (l0, l1), (w0, w1), (h0, h1) = R.VEHICLES[cls]["size"]
    length, width = rng.uniform(l0, l1) * geo.object_scale, rng.uniform(w0, w1) * geo.object_scale
    dims = (length, width, rng.uniform(h0, h1) * geo.object_scale * geo.vehicle_aspect)
    flip = bool(rng.random() < 0.5)
    if axis == "z":
        fp = Footprint(x - width / 2, x + width / 2, z, z + length)
        return place.add(fp, R.vehicle, cls, x, z, "z", dims, flip)
    fp = Footprint(x - length / 2, x + length / 2, z, z + width)
    return place.add(fp, R.vehicle, cls, x - length / 2, z, "x", dims, flip)


def near_biased(rng: np.random.Generator, near: float, far: float) -> float:
    """A depth in near..far, biased towards near (density falls linearly): keeps objects large."""
    return near + (far - near) * (1.0 - np.sqrt(1.0 - rng.random()))


def traffic_class(rng: np.random.Generator, geo: Geometry) -> int:
    roll = rng.random()
    return R.TRUCK if roll < geo.truck else R.BUS if roll < geo.truck + geo.bus else R.CAR


def place_vehicles(place: Placer, st: Street, geo: Geometry) -> None:
    """Parked cars, moving traffic, maybe a tram, and cross traffic seen from the side."""
    rng = place.canvas.rng
    for side in st.sides:
        z = rng.uniform(3.0, 8.0)
        while side.parking and z < min(st.end, 80.0):
            if rng.random() < geo.parked and not st.blocked(z, z + 5):
                cls = R.TRUCK if rng.random() < 0.06 else R.CAR
                add_vehicle(place, cls, side.sign * (side.edge - 1.1), z, "z", geo)
            z += rng.uniform(5.0, 9.0)
    for _ in range(rng.poisson(geo.traffic)):
        x = float(rng.choice(st.lanes))
        add_vehicle(place, traffic_class(rng, geo), x, near_biased(rng, 8.0, 70.0), "z", geo)
    if rng.random() < geo.train:
        x = float(rng.choice(st.lanes[:-1]))
        add_vehicle(place, R.TRAIN, x, rng.uniform(10.0, 45.0), "z", geo)
    if st.cross:
        lanes = (st.cross[0] + 0.3, (st.cross[0] + st.cross[1]) / 2 + 0.3)
        for _ in range(rng.poisson(geo.traffic * 0.8)):
            cls = R.TRAIN if rng.random() < geo.train else traffic_class(rng, geo)
            add_vehicle(place, cls, rng.uniform(-40.0, 40.0), float(rng.choice(lanes)), "x", geo)


def person_spot(rng: np.random.Generator, st: Street) -> tuple[float, float]:
    """Where a pedestrian stands: sidewalk, zebra crossing, cross-street corner, between cars."""
    side = st.sides[int(rng.integers(2))]
    mode = rng.choice(4, p=(0.55, 0.15, 0.2, 0.1))
    if mode == 1 and st.crossing is not None:
        return rng.uniform(st.road[0] + 0.5, st.road[1] - 0.5), st.crossing - rng.uniform(0.3, 2.7)
    if mode == 2 and st.cross is not None:
        x, z = rng.uniform(side.edge + 0.3, side.edge + 6.0), st.cross[0] - rng.uniform(0.3, 2.0)
    elif mode == 3 and side.parking:
        x, z = side.edge - rng.uniform(0.3, 2.0), near_biased(rng, 5.0, 30.0)
    elif side.sidewalk < 0.8:
        x, z = side.edge + rng.uniform(0.3, 1.5), near_biased(rng, 4.5, 45.0)
    else:
        x, z = rng.uniform(side.inner + 0.3, side.outer - 0.3), near_biased(rng, 4.5, 45.0)
    return side.sign * x, z


def place_people(place: Placer, st: Street, geo: Geometry) -> None:
    """Pedestrians (some in small groups), riders and parked two-wheelers."""
    rng, scale = place.canvas.rng, geo.object_scale
    for _ in range(rng.poisson(geo.person)):
        x, z = person_spot(rng, st)
        for k in range(1 + (rng.random() < 0.3) * int(rng.integers(1, 3))):
            xk, zk = x + 0.6 * k * rng.choice((-1, 1)), z + rng.uniform(-0.6, 0.6) * (k > 0)
            fp = Footprint(xk - 0.2, xk + 0.2, zk - 0.2, zk + 0.2)
            place.add(fp, R.person, xk, zk, R.PERSON, scale, float(rng.choice((-1, 1))))
    for _ in range(rng.poisson(geo.rider)):
        cls = R.MOTORCYCLE if rng.random() < geo.motorcycle else R.BICYCLE
        crossing = st.cross[0] + 1.5 if st.cross else st.crossing
        if crossing is not None and rng.random() < 0.4:  # crossing: seen from the side
            x, z = rng.uniform(st.road[0] - 8, st.road[1] + 8), crossing + rng.uniform(0.0, 1.5)
            fp, view = Footprint(x - 0.9, x + 0.9, z - 0.2, z + 0.2), "side"
        else:  # riding along the kerb: seen from behind
            x, z = st.road[1] - rng.uniform(0.7, 1.6), near_biased(rng, 6.0, 45.0)
            fp, view = Footprint(x - 0.35, x + 0.35, z - 0.9, z + 0.9), "rear"
        place.add(fp, R.two_wheeler, cls, x, z, view, True, float(rng.choice((-1, 1))) * scale)
    for _ in range(rng.poisson(geo.bicycle)):
        side = st.sides[int(rng.integers(2))]
        cls = R.MOTORCYCLE if rng.random() < geo.motorcycle * 0.5 else R.BICYCLE
        if side.sidewalk < 1.0:
            continue
        x, z = (
            side.sign * rng.uniform(side.inner + 0.5, side.outer - 0.5),
            near_biased(rng, 5.0, 35.0),
        )
        for k in range(1 + (rng.random() < 0.35) * int(rng.integers(1, 4))):  # maybe a row
            squash = float(rng.choice((-1, 1))) * rng.uniform(0.45, 1.0) * scale  # oblique view
            fp = Footprint(x - 0.5, x + 0.5, z + 0.7 * k - 0.3, z + 0.7 * k + 0.3)
            place.add(fp, R.two_wheeler, cls, x, z + 0.7 * k, "side", False, squash)


def place_clutter(place: Placer, st: Street, geo: Geometry) -> None:
    """Unlabelled objects (bins, boxes) on sidewalks."""
    rng = place.canvas.rng
    for _ in range(rng.poisson(geo.clutter)):
        side = st.sides[int(rng.integers(2))]
        x = side.sign * rng.uniform(side.inner, max(side.outer, side.inner + 1.0))
        z = rng.uniform(4.0, 40.0)
        place.add(Footprint(x - 0.4, x + 0.4, z - 0.3, z + 0.3), R.clutter, x, z)


PLACEMENT = (
    place_barriers,
    place_poles,
    place_vegetation,
    place_vehicles,
    place_people,
    place_clutter,
)


def render_scene(style: Style, height: int, width: int, seed: np.random.SeedSequence) -> R.Rendered:
    """One frame: a street plan, ground, buildings, then objects in painter's order; the image."""
    layout_seed, camera_seed = seed.spawn(2)
    rng, geo = np.random.default_rng(layout_seed), style.geometry
    canvas = Canvas(sample_view(rng, geo, height, width), rng)
    canvas.polygon(canvas.segment(R.SKY, 1e4), [(0, 0), (width, 0), (width, height), (0, height)])
    street = sample_street(rng, geo)
    draw_ground(canvas, street)
    draw_buildings(canvas, street, geo)
    place = Placer(canvas)
    for step in PLACEMENT:
        step(place, street, geo)
    for i in painter_order([fp for fp, _ in place.items]):
        place.items[i][1]()
    return R.form_image(canvas, style, np.random.default_rng(camera_seed))


def render_image(cfg: SynthCityConfig, split: str, index: int) -> R.Rendered:
    """Image ``index`` of ``split`` (source, train or val), exactly as the generator writes it."""
    domain, code = _SEED_WORDS[check_split(split)]
    seed = np.random.SeedSequence([cfg.seed, domain, code, index])
    return render_scene(cfg.style(split), cfg.height, cfg.width, seed)


# -------------------------------------------------------------------------------------------------
# Files
# -------------------------------------------------------------------------------------------------
def _gta_palette() -> list[int]:
    """768 palette entries: the Cityscapes colour of each label ID (black elsewhere)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[list(CITYSCAPES_LABEL_IDS)] = PALETTE
    return palette.reshape(-1).tolist()


GTA_PALETTE = _gta_palette()


def synthcity_roots(root: str | Path) -> tuple[Path, Path]:
    """(source root in the GTA5 layout, target root in the Cityscapes layout) of a SynthCity tree."""
    return Path(root) / "source", Path(root) / "target"


def target_name(split: str, index: int, count: int) -> tuple[str, str]:
    """(city, Cityscapes frame stem) of target image ``index`` of ``count`` in ``split``."""
    cities = CITIES[split]
    c = index * len(cities) // max(count, 1)
    first = -(-c * count // len(cities))  # first index of city c
    return cities[c], f"{cities[c]}_{index - first:06d}_{FRAME:06d}"


def image_paths(root: Path, split: str, index: int, count: int) -> dict[str, Path]:
    """The files of one image: image and label (and instance for the target splits)."""
    source, target = synthcity_roots(root)
    if split == "source":
        name = f"{index + 1:05d}.png"
        return {"image": source / "images" / name, "label": source / "labels" / name}
    city, stem = target_name(split, index, count)
    gt = target / "gtFine" / split / city / f"{stem}_gtFine"
    return {
        "image": target / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        "label": gt.with_name(f"{gt.name}_labelIds.png"),
        "instance": gt.with_name(f"{gt.name}_instanceIds.png"),
    }


def save_frame(frame: R.Rendered, paths: dict[str, Path]) -> None:
    """Write one frame in the GTA5 (source) or Cityscapes (target) format."""
    for folder in {path.parent for path in paths.values()}:
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame.image).save(paths["image"], compress_level=1)
    label = Image.fromarray(train_to_label_ids(frame.label))
    if "instance" in paths:
        instance = Image.fromarray(frame.instance.astype(np.uint16))  # 16-bit PNG, as Cityscapes
        instance.save(paths["instance"], compress_level=1)
    else:
        label.putpalette(GTA_PALETTE)  # 'P' mode: indices are label IDs, as GTA5
    label.save(paths["label"], compress_level=1)


def write_range(config: dict, split: str, root: str, start: int, stop: int) -> np.ndarray:
    """Render and save images start..stop-1; returns (2, 19) class pixel and image counts."""
    cfg, counts = SynthCityConfig(**config), np.zeros((2, NUM_CLASSES), dtype=np.int64)
    for index in range(start, stop):
        frame = render_image(cfg, split, index)
        save_frame(frame, image_paths(Path(root), split, index, cfg.count(split)))
        pixels = np.bincount(frame.label.ravel(), minlength=256)[:NUM_CLASSES]
        counts += np.stack([pixels, pixels > 0])
    return counts


def write_split(cfg: SynthCityConfig, root: Path, split: str, workers: int = 1) -> np.ndarray:
    """Generate every image of ``split`` under ``root``; (2, 19) class pixel and image counts."""
    n = cfg.count(split)
    chunk = max(1, min(32, -(-n // max(4 * workers, 1))))
    jobs = [(asdict(cfg), split, str(root), a, min(a + chunk, n)) for a in range(0, n, chunk)]
    total = np.zeros((2, NUM_CLASSES), dtype=np.int64)
    if workers <= 1 or len(jobs) <= 1:
        return sum((write_range(*job) for job in jobs), total)
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return sum(pool.starmap(write_range, jobs), total)


# -------------------------------------------------------------------------------------------------
# Manifest and the first-launch entry point
# -------------------------------------------------------------------------------------------------
def read_manifest(root: str | Path) -> dict | None:
    """The manifest of a SynthCity tree, or None when there is none."""
    path = Path(root) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def new_manifest(cfg: SynthCityConfig) -> dict:
    """A manifest without splits: generator version, full config, seed, counts, classes, cities."""
    return {
        "generator": "synthcity",
        "version": GENERATOR_VERSION,
        "config": asdict(cfg),
        "seed": cfg.seed,
        "counts": {split: cfg.count(split) for split in SPLITS},
        "classes": list(CLASSES),
        "cities": {split: list(names) for split, names in CITIES.items()},
        "splits": {},
    }


def _regenerate_hint(root: Path, cfg: SynthCityConfig) -> str:
    flags = f"--seed {cfg.seed} --shift {cfg.shift} --height {cfg.height} --width {cfg.width}"
    return f"delete {root} (or choose another folder) and run: python -m dida.data.synthcity --out {root} {flags}"


def check_tree(root: Path, cfg: SynthCityConfig) -> dict:
    """The manifest to continue from; raises when ``root`` holds something else."""
    manifest = read_manifest(root)
    if manifest is None:
        if any((root / d).exists() for d in ("source", "target")):
            raise ValueError(
                f"{root} has source/ or target/ but no {MANIFEST}; {_regenerate_hint(root, cfg)}"
            )
        return new_manifest(cfg)
    theirs = manifest.get("config", {})
    diff = {k: (theirs.get(k), v) for k, v in asdict(cfg).items() if theirs.get(k) != v}
    if diff or manifest.get("version") != GENERATOR_VERSION:
        raise ValueError(
            f"{root} holds a SynthCity tree of generator version {manifest.get('version')} (this is "
            f"{GENERATOR_VERSION}) with a different config {{field: (on disk, requested)}} {diff}; "
            + _regenerate_hint(root, cfg)
        )
    return manifest


def split_complete(root: Path, manifest: dict, cfg: SynthCityConfig, split: str) -> bool:
    """Whether the manifest lists ``split`` and all its images are on disk."""
    if manifest["splits"].get(split, {}).get("images") != cfg.count(split):
        return False
    source, target = synthcity_roots(root)
    folder = source / "images" if split == "source" else target / "leftImg8bit" / split
    return sum(1 for _ in folder.rglob("*.png")) == cfg.count(split)


def generate(
    cfg: SynthCityConfig, root: str | Path, splits: Sequence[str] = SPLITS, workers: int = 1
) -> Path:
    """Write the missing ``splits`` of ``cfg`` under ``root`` (complete ones are re-used)."""
    root, splits = Path(root), [check_split(s) for s in splits]
    manifest = check_tree(root, cfg)
    for split in splits:
        if split_complete(root, manifest, cfg, split):
            continue
        root.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        counts = write_split(cfg, root, split, workers)
        manifest["splits"][split] = {
            "images": cfg.count(split),
            "seconds": round(time.perf_counter() - start, 2),
            "class_pixels": counts[0].tolist(),
            "class_images": counts[1].tolist(),
        }
        (root / (MANIFEST + ".tmp")).write_text(json.dumps(manifest, indent=1))
        (root / (MANIFEST + ".tmp")).replace(root / MANIFEST)
    return root


def default_workers() -> int:
    """Worker processes when none are given: at most 2 (the machine is shared)."""
    return max(1, min(2, os.cpu_count() or 1))


def ensure_synthcity(
    root: str | Path,
    preset: str = "default",
    splits: Sequence[str] = ("val",),
    seed: int = 0,
    shift: float | None = None,
) -> Path:
    """Make sure ``root`` holds ``splits`` of a SynthCity preset, generating only what is missing.

    Raises ValueError, saying how to regenerate, when ``root`` holds a tree of another config.
    """
    cfg = preset_config(preset, seed=seed, shift=shift)
    small = sum(cfg.count(split) for split in splits) < 64  # a worker pool costs more than it saves
    return generate(cfg, root, splits, 1 if small else default_workers())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dida.data.synthcity", description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--preset", default="default", choices=list(PRESETS))
    p.add_argument("--seed", type=int, default=None, help="base seed (preset: 0)")
    p.add_argument("--shift", type=float, default=None, help="domain gap in [0, 1] (preset: 1.0)")
    for part in ("appearance", "camera", "geometry"):
        p.add_argument(
            f"--no-{part}",
            dest=part,
            action="store_false",
            default=None,
            help=f"switch off the {part} part of the gap",
        )
    p.add_argument("--n-source", type=int, default=None, help="source images")
    p.add_argument("--n-target", dest="n_target_train", type=int, default=None, help="target train")
    p.add_argument("--n-val", dest="n_target_val", type=int, default=None, help="target val images")
    p.add_argument("--height", type=int, default=None, help="image height (multiple of 32)")
    p.add_argument("--width", type=int, default=None, help="image width (multiple of 32)")
    p.add_argument("--workers", type=int, default=default_workers(), help="processes")
    p.add_argument("--splits", default=",".join(SPLITS), help="subset of source,train,val")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    names = {f.name for f in fields(SynthCityConfig)}
    cfg = preset_config(args.preset, **{k: v for k, v in vars(args).items() if k in names})
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    start = time.perf_counter()
    generate(cfg, args.out, splits, args.workers)
    seconds, total = time.perf_counter() - start, sum(cfg.count(s) for s in splits)
    print(
        f"SynthCity {args.preset} -> {args.out}: {total} images of {', '.join(splits)} "
        f"in {seconds:.1f} s ({total / max(seconds, 1e-9):.1f} images/s)"
    )


if __name__ == "__main__":
    main()
