"""SynthCity scenes: the plan of one street and the objects along it, drawn in painter's order.

``render_scene(style, height, width, seed)`` samples a camera and a street (sides, lanes, a cross
street, a zebra crossing), draws the ground and the buildings far to near, places street furniture,
vehicles and people with disjoint footprints, orders them so that each is drawn after everything it
hides, and forms the image. *How* a class looks lives in ``synthcity_render``; which styles, splits
and files exist lives in ``synthcity``. See docs/SYNTHCITY.md.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from dida.data import synthcity_objects as objects
from dida.data import synthcity_render as R
from dida.data.synthcity_objects import Footprint
from dida.data.synthcity_render import Canvas, Geometry, Style


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
            objects.building(canvas, ("z", z), (a, b), rng.uniform(*tall) * geo.building_height)
        elif roll < 0.85:
            objects.tree_band(canvas, ("z", z), (a, b), (4.0, 9.0))


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
        objects.building(
            canvas, ("x", s * x), (a, b), height, ("z", a) if front else None, tuple(depth)
        )


def tree_line(canvas: Canvas, st: Street, side: Side, x: float, z: tuple[float, float]) -> None:
    """A band of tree crowns along a street side at |X| = x, interrupted by the cross street."""
    pieces = [z]
    if st.cross is not None:
        walks = (st.cross[0] - st.cross_walk, st.cross[1] + st.cross_walk)
        pieces = [(z[0], min(z[1], walks[0])), (max(z[0], walks[1]), z[1])]
    for a, b in pieces:
        if b > a:
            objects.tree_band(canvas, ("x", side.sign * x), (a, b), (4.0, 9.0))


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
                place.add(
                    Footprint(x - 0.05, x + 0.05, a, b), objects.barrier, cls, x, (a, b), height
                )


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
            place.add(fp, objects.street_pole, x, z, side.sign, light, sign, arm)


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
                    place.add(fp, objects.tree, x, z, size * rng.uniform(0.8, 1.2))


def add_vehicle(place: Placer, cls: int, x: float, z: float, axis: str, geo: Geometry) -> bool:
    """A vehicle of random size: its rear centre at (x, z) ("z": along the street), or its near
    side's centre at (x, z) ("x": across it)."""
    rng = place.canvas.rng
    (l0, l1), (w0, w1), (h0, h1) = objects.VEHICLES[cls]["size"]
    length, width = rng.uniform(l0, l1) * geo.object_scale, rng.uniform(w0, w1) * geo.object_scale
    dims = (length, width, rng.uniform(h0, h1) * geo.object_scale * geo.vehicle_aspect)
    flip = bool(rng.random() < 0.5)
    if axis == "z":
        fp = Footprint(x - width / 2, x + width / 2, z, z + length)
        return place.add(fp, objects.vehicle, cls, x, z, "z", dims, flip)
    fp = Footprint(x - length / 2, x + length / 2, z, z + width)
    return place.add(fp, objects.vehicle, cls, x - length / 2, z, "x", dims, flip)


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
            place.add(fp, objects.person, xk, zk, R.PERSON, scale, float(rng.choice((-1, 1))))
    for _ in range(rng.poisson(geo.rider)):
        cls = R.MOTORCYCLE if rng.random() < geo.motorcycle else R.BICYCLE
        crossing = st.cross[0] + 1.5 if st.cross else st.crossing
        if crossing is not None and rng.random() < 0.4:  # crossing: seen from the side
            x, z = rng.uniform(st.road[0] - 8, st.road[1] + 8), crossing + rng.uniform(0.0, 1.5)
            fp, view = Footprint(x - 0.9, x + 0.9, z - 0.2, z + 0.2), "side"
        else:  # riding along the kerb: seen from behind
            x, z = st.road[1] - rng.uniform(0.7, 1.6), near_biased(rng, 6.0, 45.0)
            fp, view = Footprint(x - 0.35, x + 0.35, z - 0.9, z + 0.9), "rear"
        place.add(
            fp, objects.two_wheeler, cls, x, z, view, True, float(rng.choice((-1, 1))) * scale
        )
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
            place.add(fp, objects.two_wheeler, cls, x, z + 0.7 * k, "side", False, squash)


def place_clutter(place: Placer, st: Street, geo: Geometry) -> None:
    """Unlabelled objects (bins, boxes) on sidewalks."""
    rng = place.canvas.rng
    for _ in range(rng.poisson(geo.clutter)):
        side = st.sides[int(rng.integers(2))]
        x = side.sign * rng.uniform(side.inner, max(side.outer, side.inner + 1.0))
        z = rng.uniform(4.0, 40.0)
        place.add(Footprint(x - 0.4, x + 0.4, z - 0.3, z + 0.3), objects.clutter, x, z)


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
