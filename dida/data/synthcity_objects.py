"""SynthCity objects: buildings, barriers, vehicles, people, two-wheelers, poles, trees and clutter.

Each function draws one object into a ``Canvas`` (``dida.data.synthcity_render``) as projected
primitives with their segment rows; ``dida.data.synthcity_scene`` decides where they stand and in
which order they are painted.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import numpy as np

from dida.data.synthcity_render import (
    BICYCLE,
    BUILDING,
    BUS,
    CAR,
    LIGHT,
    MOTORCYCLE,
    PERSON,
    POLE,
    RIDER,
    SIGN,
    TRAIN,
    TRUCK,
    VEGETATION,
    VOID,
    WALL,
    Z_NEAR,
    Canvas,
    Sprite,
    part_colour,
    sample_colour,
)

# --------------------------------------------------------------------------------------------
# Objects.  World: X right, Y up, Z forward; metres.  A "plane" is ("x", X) or ("z", Z) and a
# point on it is given by (a, y), a running along Z or X respectively.
# --------------------------------------------------------------------------------------------
Plane = tuple[str, float]


def on_plane(plane: Plane, a: float, y: float) -> tuple[float, float, float]:
    return (plane[1], y, a) if plane[0] == "x" else (a, y, plane[1])


def plane_quad(
    canvas: Canvas, seg: int, plane: Plane, a: tuple[float, float], y: tuple[float, float]
) -> None:
    """Fill the rectangle a0..a1 x y0..y1 of a vertical plane."""
    corners = ((a[0], y[0]), (a[1], y[0]), (a[1], y[1]), (a[0], y[1]))
    canvas.polygon3d(seg, [on_plane(plane, p, q) for p, q in corners])


def window_grid(
    canvas: Canvas, plane: Plane, a: tuple[float, float], height: float, depth: float
) -> None:
    """Rows of windows on a facade; columns whose windows would be under ~2 pixels are skipped."""
    rng, view = canvas.rng, canvas.view
    floor, pitch = rng.uniform(3.0, 3.6), rng.uniform(2.6, 4.0)
    width, tall = pitch * rng.uniform(0.35, 0.6), floor * rng.uniform(0.4, 0.6)
    lit = rng.random() < 0.15
    n_cols, n_rows = int((a[1] - a[0]) / pitch), int((height - 1.0) / floor)
    if n_cols < 1 or n_rows < 1 or view.focal * min(tall, width) / depth < 2 * view.min_px:
        return
    seg = canvas.segment(BUILDING, depth, "lit" if lit else "window")
    start = a[0] + (a[1] - a[0] - n_cols * pitch) / 2 + (pitch - width) / 2
    edges = start + pitch * np.arange(n_cols)[:, None] + np.array([0.0, width])  # (cols, 2) along a
    x, z = (
        (np.full_like(edges, plane[1]), edges)
        if plane[0] == "x"
        else (edges, np.full_like(edges, plane[1]))
    )
    zc = x * view.sin + z * view.cos  # (cols, 2) camera depth of both window edges
    u = view.width / 2 + view.focal * (x * view.cos - z * view.sin) / np.maximum(zc, Z_NEAR)
    bottoms = 1.0 + floor * np.arange(n_rows) + (floor - tall) / 2  # (rows,)
    ys = np.stack([bottoms, bottoms, bottoms + tall, bottoms + tall], axis=1)  # (rows, 4) corners
    big = (zc.min(1) > Z_NEAR) & (np.abs(u[:, 1] - u[:, 0]) >= 2 * view.min_px)
    big &= view.focal * tall / np.maximum(zc.max(1), Z_NEAR) >= 2 * view.min_px
    for col in np.flatnonzero(big):
        corner_zc = zc[col, [0, 1, 1, 0]]
        us = u[col, [0, 1, 1, 0]].tolist()
        vs = (
            view.horizon + view.focal * (view.camera_height - ys) / corner_zc
        ).tolist()  # (rows, 4)
        for row in vs:
            canvas.draw.polygon(list(zip(us, row, strict=True)), fill=seg)


def building(
    canvas: Canvas,
    plane: Plane,
    a: tuple[float, float],
    height: float,
    front: Plane | None = None,
    front_a: tuple[float, float] = (0.0, 0.0),
) -> None:
    """A facade with windows, optionally with a second (front) face on another plane."""
    depth = max(abs(canvas.view.depth(*_plane_xz(plane, a[0]))), 1.0)
    colour = sample_colour(canvas.rng, BUILDING)
    faces = [(plane, a, 1.0)] + ([(front, front_a, 0.8)] if front else [])
    for face_plane, span, shade in faces:
        seg = canvas.segment(BUILDING, depth, (colour[0], colour[1], colour[2] * shade))
        plane_quad(canvas, seg, face_plane, span, (0.0, height))
        if canvas.rng.random() < 0.85:
            window_grid(canvas, face_plane, span, height, depth)


def _plane_xz(plane: Plane, a: float) -> tuple[float, float]:
    return (plane[1], a) if plane[0] == "x" else (a, plane[1])


def barrier(canvas: Canvas, cls: int, x: float, z: tuple[float, float], height: float) -> None:
    """A wall or fence standing in the plane X = x."""
    seg = canvas.segment(cls, max(z[0], 1.0))
    plane_quad(canvas, seg, ("x", x), z, (0.0, height))
    if cls == WALL:
        h, s, v = canvas.rows[seg][2:5]
        cap = canvas.segment(WALL, max(z[0], 1.0), (h, s, min(v * 1.25, 1.0)))
        plane_quad(canvas, cap, ("x", x), z, (height - 0.15, height))


class Footprint(NamedTuple):
    """Axis-aligned ground rectangle of an object (for painter's ordering)."""

    x0: float
    x1: float
    z0: float
    z1: float


def visible_faces(
    box: Footprint, y: tuple[float, float], camera_height: float
) -> list[tuple[str, Plane, tuple[float, float]]]:
    """The faces of a box the camera at (0, h, 0) sees: (name, plane, a-range)."""
    faces = [("z0", ("z", box.z0), (box.x0, box.x1))]
    if box.x0 > 0:
        faces.append(("x0", ("x", box.x0), (box.z0, box.z1)))
    elif box.x1 < 0:
        faces.append(("x1", ("x", box.x1), (box.z0, box.z1)))
    if y[1] < camera_height:
        faces.append(("top", ("y", y[1]), (0.0, 0.0)))
    return faces


def draw_box(
    canvas: Canvas, seg: int, box: Footprint, y: tuple[float, float], top: int | None = None
) -> list:
    """Fill the visible faces of a box; returns them for decorating (windows, wheels)."""
    faces = visible_faces(box, y, canvas.view.camera_height)
    for name, plane, span in faces:
        if name == "top":
            corners = [(box.x0, box.z0), (box.x1, box.z0), (box.x1, box.z1), (box.x0, box.z1)]
            canvas.polygon3d(seg if top is None else top, [(x, y[1], z) for x, z in corners])
        else:
            plane_quad(canvas, seg, plane, span, y)
    return [f for f in faces if f[0] != "top"]


# Vehicle sizes: (length, width, height) ranges in metres; wheel radius; axles as length fractions.
VEHICLES: dict[int, dict[str, Any]] = {
    CAR: {"size": ((3.9, 4.8), (1.7, 1.9), (1.4, 1.6)), "wheel": 0.32, "axles": (0.17, 0.83)},
    TRUCK: {
        "size": ((6.5, 9.0), (2.3, 2.5), (3.0, 3.8)),
        "wheel": 0.46,
        "axles": (0.12, 0.3, 0.86),
    },
    BUS: {"size": ((10.5, 12.5), (2.5, 2.55), (3.0, 3.2)), "wheel": 0.5, "axles": (0.2, 0.78)},
    TRAIN: {
        "size": ((20.0, 30.0), (2.5, 2.65), (3.3, 3.5)),
        "wheel": 0.38,
        "axles": (0.1, 0.5, 0.9),
    },
}


def _local_box(
    origin: tuple[float, float],
    axis: str,
    flip: bool,
    dims: tuple[float, float],
    lo: float,
    hi: float,
    inset: float,
) -> Footprint:
    """Footprint of the length fractions lo..hi of a vehicle (length L, width W) at ``origin``."""
    (length, width), (x, z) = dims, origin
    if flip:
        lo, hi = 1 - hi, 1 - lo
    if axis == "z":
        return Footprint(
            x - width / 2 + inset, x + width / 2 - inset, z + lo * length, z + hi * length
        )
    return Footprint(x + lo * length, x + hi * length, z + inset, z + width - inset)


def _glass(canvas: Canvas, seg: int, faces: list, y: tuple[float, float], margin: float) -> None:
    """Windows inset by ``margin`` (fraction) on each of the given faces."""
    for _, plane, (a0, a1) in faces:
        pad = (a1 - a0) * margin
        plane_quad(canvas, seg, plane, (a0 + pad, a1 - pad), y)


def _panes(
    canvas: Canvas, seg: int, plane: Plane, a: tuple[float, float], y: tuple[float, float]
) -> None:
    """A band of window panes with pillars along a long side."""
    n = max(int((a[1] - a[0]) / 1.6), 1)
    step = (a[1] - a[0]) / n
    for i in range(n):
        plane_quad(canvas, seg, plane, (a[0] + i * step + 0.15, a[0] + (i + 1) * step - 0.15), y)


def _wheels(canvas: Canvas, seg: int, plane: Plane, centres: list[float], radius: float) -> None:
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    for c in centres:
        pts = [on_plane(plane, c + radius * np.cos(t), radius + radius * np.sin(t)) for t in angles]
        canvas.polygon3d(seg, pts)


def _distance(fp: Footprint) -> float:
    """Distance from the camera to the nearest point of a footprint (z > 0)."""
    dx = 0.0 if fp.x0 <= 0.0 <= fp.x1 else min(abs(fp.x0), abs(fp.x1))
    return float(np.hypot(dx, fp.z0))


def _vehicle_blocks(cls: int, h: float) -> list[tuple[float, float, float, float, float, str]]:
    """Boxes of a vehicle: (length fraction from, to, y from, to, side inset, colour)."""
    if cls == CAR:
        return [(0.0, 1.0, 0.3, 0.6 * h, 0.0, "body"), (0.2, 0.8, 0.6 * h, h, 0.1, "glass")]
    if cls == TRUCK:
        return [(0.75, 1.0, 0.5, 0.75 * h, 0.05, "body"), (0.0, 0.72, 0.55, h, 0.0, "cargo")]
    return [(0.0, 1.0, 0.35 if cls == BUS else 0.45, h, 0.0, "body")]


def _vehicle_glass(
    canvas: Canvas, cls: int, part: str, faces: list, axis: str, y: tuple[float, float], glass: int
) -> None:
    """Windscreens and window bands on the faces of one vehicle box."""
    h = y[1] - y[0]
    if cls == TRUCK and part == "body":
        _glass(canvas, glass, faces, (y[0] + 0.45 * h, y[0] + 0.85 * h), 0.12)
    elif cls in (BUS, TRAIN):
        for name, plane, span in faces:
            if (name == "z0") == (axis == "z"):  # an end face
                _glass(canvas, glass, [(name, plane, span)], (y[0] + 0.4 * h, y[0] + 0.85 * h), 0.1)
            else:
                _panes(canvas, glass, plane, span, (y[0] + 0.35 * h, y[0] + 0.8 * h))


def vehicle(
    canvas: Canvas,
    cls: int,
    x: float,
    z: float,
    axis: str,
    dims: tuple[float, float, float],
    flip: bool = False,
) -> None:
    """A car, truck, bus or train: boxes drawn far to near, glass, wheels.

    ``axis`` is the driving direction ("z" along the street, "x" across it); (x, z) is the footprint
    corner nearest the camera's axis for "x" and the rear centre for "z"; ``flip`` swaps front and back.
    """
    length, width, height = dims
    inst, depth = canvas.new_instance(cls), max(canvas.view.depth(x, z), 1.0)
    segs = {part: canvas.segment(cls, depth, colour, inst) for part, colour in
            (("body", None), ("cargo", None), ("glass", "glass"), ("tyre", "tyre"))}  # fmt: skip
    box = partial(_local_box, (x, z), axis, flip, (length, width))
    radius = VEHICLES[cls]["wheel"]
    for a in (0.1, 0.9):  # tyres under the body, seen between the wheels
        draw_box(canvas, segs["tyre"], box(a - 0.04, a + 0.04, 0.1), (0.0, radius * 1.6))
    blocks = _vehicle_blocks(cls, height)
    blocks.sort(key=lambda b: -_distance(box(b[0], b[1], b[4])))  # far to near
    for lo, hi, y0, y1, inset, part in blocks:
        faces = draw_box(canvas, segs[part], box(lo, hi, inset), (y0, y1), top=segs["body"])
        _vehicle_glass(canvas, cls, part, faces, axis, (y0, y1), segs["glass"])
    axles = [1 - f if flip else f for f in VEHICLES[cls]["axles"]]
    for name, plane, (a0, a1) in visible_faces(box(0.0, 1.0, 0.0), (0.0, height), 0.0):
        if (name == "z0") == (axis == "x"):  # a long side
            _wheels(canvas, segs["tyre"], plane, [a0 + f * (a1 - a0) for f in axles], radius)


def person(
    canvas: Canvas, x: float, z: float, cls: int = PERSON, size: float = 1.0, sx: float = 1.0
) -> None:
    """A standing or walking pedestrian seen from the front, back or side."""
    rng = canvas.rng
    sp = Sprite.at(canvas, x, z, sx)
    sp = sp._replace(scale=sp.scale * size * rng.uniform(0.9, 1.08))
    inst, depth = canvas.new_instance(cls), max(canvas.view.depth(x, z), 1.0)
    top, bottom = canvas.segment(cls, depth, None, inst), canvas.segment(cls, depth, None, inst)
    skin = canvas.segment(cls, depth, "skin", inst)
    stride = rng.uniform(0.0, 0.22)
    sp.line(bottom, [(-0.08, 0.92), (-0.08 - stride, 0.0)], 0.15)
    sp.line(bottom, [(0.08, 0.92), (0.08 + stride, 0.0)], 0.15)
    sp.poly(top, [(-0.2, 0.86), (0.2, 0.86), (0.23, 1.46), (-0.23, 1.46)])
    swing = rng.uniform(-0.1, 0.1)
    sp.line(top, [(-0.23, 1.42), (-0.28 + swing, 0.9)], 0.1)
    sp.line(top, [(0.23, 1.42), (0.28 - swing, 0.9)], 0.1)
    sp.disc(skin, 0.0, 1.6, 0.12, 0.13)


def _rider(
    sp: Sprite,
    segs: tuple[int, int, int],
    hip: tuple[float, float],
    shoulder: tuple[float, float],
    hand: tuple[float, float],
    foot: tuple[float, float],
    helmet: float,
) -> None:
    """A seated rider from hip, shoulder, hand and foot positions (side view)."""
    top, bottom, head = segs
    knee = ((hip[0] + foot[0]) / 2 + 0.18, (hip[1] + foot[1]) / 2 + 0.05)
    sp.line(bottom, [hip, knee, foot], 0.14)
    sp.line(top, [hip, shoulder], 0.34)
    sp.line(top, [shoulder, hand], 0.09)
    sp.disc(head, shoulder[0] + 0.08, shoulder[1] + 0.17, helmet)


def two_wheeler(
    canvas: Canvas, cls: int, x: float, z: float, view_kind: str, ridden: bool, sx: float = 1.0
) -> None:
    """A bicycle (thin frame) or motorcycle (heavy body), seen from the side or the back, maybe ridden."""
    rng = canvas.rng
    sp = Sprite.at(canvas, x, z, sx)
    depth = max(canvas.view.depth(x, z), 1.0)
    inst = canvas.new_instance(cls)
    frame, tyre = canvas.segment(cls, depth, None, inst), canvas.segment(cls, depth, "tyre", inst)
    rider = None
    if ridden:
        k = canvas.new_instance(RIDER)
        head = "dark" if cls == MOTORCYCLE else "skin"
        rider = tuple(canvas.segment(RIDER, depth, c, k) for c in (None, None, head))
    draw = {("side", BICYCLE): _bicycle_side, ("side", MOTORCYCLE): _motorcycle_side,
            ("rear", BICYCLE): _bicycle_rear, ("rear", MOTORCYCLE): _motorcycle_rear}  # fmt: skip
    draw[(view_kind, cls)](sp, frame, tyre, rider, rng)


def _bicycle_side(
    sp: Sprite, frame: int, tyre: int, rider: tuple | None, rng: np.random.Generator
) -> None:
    for cx in (-0.52, 0.52):
        sp.ring(tyre, cx, 0.34, 0.34, 0.07)
    hub, crank, seat, head = (-0.52, 0.34), (-0.02, 0.3), (-0.18, 0.86), (0.42, 0.86)
    sp.line(frame, [hub, crank, seat, hub], 0.05)
    sp.line(frame, [crank, head, seat], 0.05)
    sp.line(frame, [(0.52, 0.34), head, (0.38, 1.02)], 0.05)
    sp.line(frame, [(-0.28, 0.9), (-0.08, 0.9)], 0.06)
    if rider:
        _rider(sp, rider, (-0.16, 0.95), (0.14, 1.45), (0.38, 1.02), (0.02, 0.3), 0.12)


def _motorcycle_side(
    sp: Sprite, frame: int, tyre: int, rider: tuple | None, rng: np.random.Generator
) -> None:
    for cx in (-0.7, 0.7):
        sp.disc(tyre, cx, 0.33, 0.33)
    sp.poly(
        frame,
        [
            (-0.8, 0.55),
            (-0.45, 0.8),
            (0.05, 0.82),
            (0.42, 1.0),
            (0.62, 0.72),
            (0.35, 0.36),
            (-0.35, 0.36),
        ],
    )
    sp.line(frame, [(0.5, 1.02), (0.7, 0.33)], 0.09)
    if rider:
        _rider(sp, rider, (-0.18, 0.92), (0.12, 1.42), (0.5, 1.06), (0.08, 0.42), 0.15)


def _bicycle_rear(
    sp: Sprite, frame: int, tyre: int, rider: tuple | None, rng: np.random.Generator
) -> None:
    sp.rect(tyre, -0.035, 0.035, 0.0, 0.7)
    sp.line(frame, [(0.0, 0.32), (0.0, 0.9)], 0.06)
    sp.line(frame, [(-0.28, 1.02), (0.28, 1.02)], 0.05)
    if rider:
        top, bottom, head = rider
        sp.line(bottom, [(-0.1, 0.95), (-0.14, 0.3)], 0.13)
        sp.line(bottom, [(0.1, 0.95), (0.15, 0.55)], 0.13)
        sp.poly(top, [(-0.2, 0.92), (0.2, 0.92), (0.23, 1.45), (-0.23, 1.45)])
        sp.line(top, [(-0.22, 1.42), (-0.28, 1.02)], 0.09)
        sp.line(top, [(0.22, 1.42), (0.28, 1.02)], 0.09)
        sp.disc(head, 0.0, 1.6, 0.12, 0.13)


def _motorcycle_rear(
    sp: Sprite, frame: int, tyre: int, rider: tuple | None, rng: np.random.Generator
) -> None:
    sp.rect(tyre, -0.08, 0.08, 0.0, 0.62)
    sp.poly(frame, [(-0.25, 0.4), (0.25, 0.4), (0.3, 0.95), (-0.3, 0.95)])
    sp.line(frame, [(-0.42, 1.1), (0.42, 1.1)], 0.06)
    if rider:
        top, bottom, head = rider
        sp.line(bottom, [(-0.2, 0.95), (-0.34, 0.7), (-0.3, 0.45)], 0.14)
        sp.line(bottom, [(0.2, 0.95), (0.34, 0.7), (0.3, 0.45)], 0.14)
        sp.poly(top, [(-0.22, 0.92), (0.22, 0.92), (0.25, 1.48), (-0.25, 1.48)])
        sp.line(top, [(-0.24, 1.42), (-0.4, 1.1)], 0.1)
        sp.line(top, [(0.24, 1.42), (0.4, 1.1)], 0.1)
        sp.disc(head, 0.0, 1.64, 0.15, 0.16)


def street_pole(
    canvas: Canvas, x: float, z: float, side: int, light: bool, sign: bool, arm: float
) -> None:
    """A pole at the kerb: a street lamp, or carrying a traffic light (maybe on an arm over the road)
    and/or a traffic sign.  ``side`` is -1 (left kerb) or +1; the arm points to the road."""
    rng, depth = canvas.rng, max(canvas.view.depth(x, z), 1.0)
    sp = Sprite.at(canvas, x, z, -side)
    seg = canvas.segment(POLE, depth)
    height = (
        rng.uniform(3.2, 4.6)
        if light
        else rng.uniform(6.0, 8.5)
        if not sign
        else rng.uniform(2.8, 3.4)
    )
    sp.rect(seg, -0.09, 0.09, 0.0, height)
    if light:
        reach = arm if arm > 0 else 0.0
        if reach:
            sp.line(seg, [(0.0, height - 0.1), (reach, height - 0.1)], 0.12)
        _traffic_light(canvas, sp, reach, height, depth)
    elif not sign:
        sp.line(seg, [(0.0, height), (1.3, height + 0.25)], 0.1)
        sp.rect(seg, 1.1, 1.6, height + 0.05, height + 0.3)
    if sign:
        _traffic_sign(canvas, sp, 2.35 if light else height - 0.45, depth)


def _traffic_light(canvas: Canvas, sp: Sprite, x: float, top: float, depth: float) -> None:
    rng = canvas.rng
    box = canvas.segment(LIGHT, depth)
    sp.rect(box, x - 0.23, x + 0.23, top - 1.1, top)
    if rng.random() < 0.7:  # seen from the front: three lamps, one lit
        lit = rng.integers(3)
        for i, part in enumerate(("red", "yellow", "green")):
            colour = part_colour(rng, part) if i == lit else part_colour(rng, "dark")
            sp.disc(canvas.segment(LIGHT, depth, colour), x, top - 0.2 - 0.35 * i, 0.12)


def _traffic_sign(canvas: Canvas, sp: Sprite, y: float, depth: float) -> None:
    rng = canvas.rng
    face = canvas.segment(SIGN, depth)
    shape, r = rng.integers(4), rng.uniform(0.34, 0.45)
    if shape == 0:
        sp.disc(face, 0.0, y, r)
        sp.disc(canvas.segment(SIGN, depth, "white"), 0.0, y, 0.7 * r)
    elif shape == 1:
        sp.poly(face, [(-1.1 * r, y - 0.8 * r), (1.1 * r, y - 0.8 * r), (0.0, y + 1.1 * r)])
    elif shape == 2:
        sp.rect(face, -r, r, y - r, y + r)
    else:
        sp.poly(face, [(0.0, y - 1.2 * r), (1.2 * r, y), (0.0, y + 1.2 * r), (-1.2 * r, y)])


def tree(canvas: Canvas, x: float, z: float, size: float) -> None:
    """A trunk and a canopy of one to three overlapping blobs (all vegetation)."""
    rng, depth = canvas.rng, max(canvas.view.depth(x, z), 1.0)
    sp = Sprite.at(canvas, x, z)
    trunk_h, radius = size * rng.uniform(1.8, 2.8), size * rng.uniform(1.2, 2.0)
    sp.rect(
        canvas.segment(VEGETATION, depth, "trunk"), -0.14 * size, 0.14 * size, 0.0, trunk_h + radius
    )
    leaves = canvas.segment(VEGETATION, depth)
    for _ in range(rng.integers(1, 4)):
        dx, dy = rng.uniform(-0.5, 0.5) * radius, rng.uniform(0.5, 1.1) * radius
        sp.disc(
            leaves,
            dx,
            trunk_h + dy,
            radius * rng.uniform(0.7, 1.0),
            radius * rng.uniform(0.75, 1.0),
        )


def tree_band(
    canvas: Canvas, plane: Plane, a: tuple[float, float], height: tuple[float, float]
) -> None:
    """A line of tree crowns on a vertical plane: one polygon with a row of rounded bumps on top."""
    rng = canvas.rng
    centres = np.arange(a[0], a[1] + 4.0, 4.0)
    tops = rng.uniform(*height, len(centres))
    arc = np.array([-1.0, -0.7, 0.0, 0.7, 1.0])  # crown outline: offsets along a, rising to the top
    along = (centres[:, None] + 2.4 * arc).clip(a[0], a[1]).ravel()
    up = (tops[:, None] - 2.0 * (1 - np.sqrt(1 - np.clip(np.abs(arc), 0, 1) ** 2))).ravel()
    outline = [(a[1], 0.0), (a[0], 0.0), *zip(along.tolist(), up.tolist(), strict=True)]
    depth = max(abs(canvas.view.depth(*_plane_xz(plane, a[0]))), 1.0)
    canvas.polygon3d(canvas.segment(VEGETATION, depth), [on_plane(plane, p, q) for p, q in outline])


def bush(canvas: Canvas, x: float, z: float, size: float) -> None:
    """A low vegetation blob on the ground."""
    sp = Sprite.at(canvas, x, z)
    sp.disc(
        canvas.segment(VEGETATION, max(canvas.view.depth(x, z), 1.0)),
        0.0,
        0.4 * size,
        1.2 * size,
        0.5 * size,
    )


def clutter(canvas: Canvas, x: float, z: float) -> None:
    """An unlabelled street object (bin, box, bench): label ID 0."""
    sp = Sprite.at(canvas, x, z)
    width, height = canvas.rng.uniform(0.4, 1.6), canvas.rng.uniform(0.5, 1.1)
    sp.rect(
        canvas.segment(VOID, max(canvas.view.depth(x, z), 1.0)), -width / 2, width / 2, 0.0, height
    )
