"""Plan -> image homography from clicked point pairs, and the chart seats one camera sees as its layout.

`fit_homography` refuses what would put seats in the wrong place: fewer than 4 pairs, degenerate pairs
(three on a line), clicked points outside the frame, a mapping that mirrors the plan (negative determinant
once the clicked points are in front of the camera), a horizon between the clicked points (the plane folds
over), and with more than 4 pairs one that the others contradict. `project_seats` turns every chart seat
into its footprint on the plan (row pitch x row depth, along the row), projects it and keeps it only when
it lies in the frame, in front of the camera, outside ``hide`` areas and at least ``min_seat_px`` big;
every other seat is *unseen* (never guessed). A section may have its own pairs (a bowl that is not one
plane): its seats then use its own homography (piecewise mapping).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from server.seatmap.chart import Chart

Point = tuple[float, float]
FOOTPRINT = 0.98
"""Seat footprint as a share of the row pitch and row depth (neighbours nearly touch, never overlap)."""


class ProjectionError(ValueError):
    """The pairs or the mapping cannot be used; the message says which pair or what is wrong."""


@dataclass(frozen=True)
class PointPairs:
    plan: np.ndarray  # (N, 2)
    image: np.ndarray  # (N, 2)

    @classmethod
    def of(cls, pairs: Sequence[tuple[Sequence[float], Sequence[float]]]) -> PointPairs:
        plan = np.array([p for p, _ in pairs], float).reshape(-1, 2)
        image = np.array([q for _, q in pairs], float).reshape(-1, 2)
        return cls(plan, image)


def fit_homography(
    pairs: PointPairs, frame_w: int, frame_h: int, max_error_px: float | None = None, what: str = "pairs"
) -> np.ndarray:
    """The 3x3 plan -> image homography, scaled so that the clicked points are in front (w > 0)."""
    n = len(pairs.plan)
    if n < 4:
        raise ProjectionError(f"{what}: a homography needs at least 4 point pairs (plan <-> image), got {n}")
    if not (np.isfinite(pairs.plan).all() and np.isfinite(pairs.image).all()):
        raise ProjectionError(f"{what}: point coordinates must be finite numbers")
    for i, (u, v) in enumerate(pairs.image):
        if not (0 <= u <= frame_w and 0 <= v <= frame_h):
            raise ProjectionError(
                f"{what}[{i}]: image point ({u:g}, {v:g}) lies outside the {frame_w}x{frame_h} frame"
            )
    for name, pts in (("plan", pairs.plan), ("image", pairs.image)):
        bad = _collinear_triple(pts)
        if bad is not None:
            raise ProjectionError(
                f"{what}: {name} points {bad[0]}, {bad[1]} and {bad[2]} lie on one line (or coincide): "
                "click 4 points that span the seats, no three in a row"
            )
    H, _ = cv2.findHomography(pairs.plan, pairs.image, 0)
    if H is None or not np.isfinite(H).all() or abs(np.linalg.det(H)) < 1e-12 * np.abs(H).max() ** 3:
        raise ProjectionError(f"{what}: the point pairs do not define a homography (degenerate)")
    w = _w(H, pairs.plan)
    if not ((w > 0).all() or (w < 0).all()):
        raise ProjectionError(
            f"{what}: the mapping folds the image (its horizon passes between the clicked points): "
            "a point pair is wrong"
        )
    if w[0] < 0:
        H = -H
    if np.linalg.det(H) <= 0:
        raise ProjectionError(
            f"{what}: the mapping folds the image (negative determinant: the plan would be seen mirrored); "
            "click the image points in the same order as the plan points"
        )
    err = np.linalg.norm(apply(H, pairs.plan) - pairs.image, axis=1)
    limit = max_error_px if max_error_px is not None else max(8.0, 0.02 * float(np.hypot(frame_w, frame_h)))
    worst = int(np.argmax(err))
    if n > 4 and err[worst] > limit:
        raise ProjectionError(
            f"{what}[{worst}]: {err[worst]:.0f} px off the mapping the other pairs agree on (limit {limit:.0f} px): "
            "is that point clicked on the wrong seat?"
        )
    return H / H[2, 2] if H[2, 2] > 0 else H


def _collinear_triple(pts: np.ndarray) -> tuple[int, int, int] | None:
    """Indices of three points on one line, checked among the 4 that span the set best (None: fine)."""
    if len(pts) > 4:
        return None  # findHomography's least squares copes; a truly degenerate set fails its determinant check
    scale = max(float(np.ptp(pts, axis=0).max()), 1e-9)
    for a in range(len(pts)):
        for b in range(a + 1, len(pts)):
            for c in range(b + 1, len(pts)):
                d1, d2 = pts[b] - pts[a], pts[c] - pts[a]
                if abs(d1[0] * d2[1] - d1[1] * d2[0]) < 1e-3 * scale * scale:
                    return a, b, c
    return None


def _w(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ H[2, :2] + H[2, 2]


def apply(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (..., 2) plan points to image points (no check of the sign of w)."""
    flat = pts.reshape(-1, 2)
    hom = flat @ H[:, :2].T + H[:, 2]
    return (hom[:, :2] / hom[:, 2:3]).reshape(pts.shape)


# ----------------------------------------------------------------------------------------- footprints
def footprints(chart: Chart) -> np.ndarray:
    """(N, 4, 2) corners of each seat's footprint on the plan: row pitch along the row, row depth across."""
    xy = chart.xy()
    n = len(xy)
    axis = np.tile([1.0, 0.0], (n, 1))
    pitch = np.full(n, np.nan)
    rows: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(chart.seats):
        rows.setdefault((s.section, s.row), []).append(i)
    for idx in rows.values():
        if len(idx) < 2:
            continue
        pts = xy[idx]
        centred = pts - pts.mean(axis=0)
        u = np.linalg.svd(centred, full_matrices=False)[2][0]
        if u[0] < 0 or (u[0] == 0 and u[1] < 0):
            u = -u
        t = centred @ u
        order = np.argsort(t)
        gaps = np.diff(t[order])
        near = np.full(len(idx), np.inf)
        near[order[:-1]] = gaps
        near[order[1:]] = np.minimum(near[order[1:]], gaps)
        ids = np.asarray(idx)
        axis[ids] = u
        pitch[ids] = near
    depth = np.full(n, np.nan)
    by_section: dict[str, list[int]] = {}
    for i, s in enumerate(chart.seats):
        by_section.setdefault(s.section, []).append(i)
    for idx in by_section.values():
        ids = np.asarray(idx)
        sec_pitch = np.nanmedian(pitch[ids]) if np.isfinite(pitch[ids]).any() else np.nan
        row_of = np.array([chart.seats[i].row for i in idx])
        d = _nearest_other_row(xy[ids], row_of, axis[ids])
        sec_depth = np.nanmedian(d) if np.isfinite(d).any() else sec_pitch
        if not np.isfinite(sec_pitch):
            sec_pitch = sec_depth
        if not np.isfinite(sec_pitch):
            sec_pitch = sec_depth = 1.0  # a single seat: any size; the pixel checks decide
        p = pitch[ids]
        p[~np.isfinite(p) | (p > 3 * sec_pitch)] = sec_pitch  # row ends next to an aisle keep a seat's width
        pitch[ids] = p
        depth[ids] = sec_depth
    u = axis * (FOOTPRINT * pitch / 2)[:, None]
    v = np.stack([-axis[:, 1], axis[:, 0]], axis=1) * (FOOTPRINT * depth / 2)[:, None]
    return np.stack([xy - u - v, xy + u - v, xy + u + v, xy - u + v], axis=1)


def _nearest_other_row(pts: np.ndarray, rows: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Per seat, the distance across the row to the nearest seat of another row of its section."""
    out = np.full(len(pts), np.nan)
    if len(set(rows.tolist())) < 2:
        return out
    from scipy.spatial import cKDTree

    for r in set(rows.tolist()):
        mine = rows == r
        tree = cKDTree(pts[~mine])
        dist, j = tree.query(pts[mine], k=1)
        other = pts[~mine][j]
        normal = np.stack([-axis[mine, 1], axis[mine, 0]], axis=1)
        across = np.abs(np.einsum("ij,ij->i", other - pts[mine], normal))
        out[mine] = np.where(across > 0.2 * dist, across, dist)
    return out


# ----------------------------------------------------------------------------------------- projection
@dataclass
class Projection:
    """Which chart seats one camera sees, and where (image pixels)."""

    frame_w: int
    frame_h: int
    homographies: dict[str | None, np.ndarray]
    polygons: dict[int, list[Point]] = field(default_factory=dict)
    """Chart seat index -> footprint polygon in the image, for the seats seen."""
    unseen: Counter[str] = field(default_factory=Counter)
    """Why seats are not seen: outside, behind, too_small, hidden, unmapped (no pairs for their section)."""

    @property
    def seen(self) -> list[int]:
        return sorted(self.polygons)

    def summary(self) -> dict[str, Any]:
        return {"seen": len(self.polygons), "unseen": sum(self.unseen.values()), "unseen_by_reason": dict(self.unseen)}


def project_seats(
    chart: Chart,
    homographies: dict[str | None, np.ndarray],
    frame_w: int,
    frame_h: int,
    min_seat_px: float,
    hide: Sequence[Sequence[Point]] = (),
) -> Projection:
    """Project every chart seat with its section's homography (or the camera's, key None)."""
    import shapely
    from shapely.geometry import Polygon, box

    corners = footprints(chart)
    n = len(corners)
    img = np.zeros_like(corners)
    front = np.zeros(n, bool)
    mapped = np.zeros(n, bool)
    sec_of = np.array([s.section for s in chart.seats])
    for key, H in homographies.items():
        sel = (sec_of == key) if key is not None else ~np.isin(sec_of, [k for k in homographies if k is not None])
        if not sel.any():
            continue
        mapped |= sel
        pts = np.concatenate([corners[sel], chart.xy()[sel][:, None, :]], axis=1)
        w = _w(H, pts.reshape(-1, 2)).reshape(-1, 5)
        front[sel] = (w > 1e-9 * np.abs(H).max()).all(axis=1)
        img[sel] = apply(H, corners[sel])
    proj = Projection(frame_w, frame_h, homographies)
    x, y = img[..., 0], img[..., 1]
    area = 0.5 * np.abs(
        np.sum(x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y, axis=1)
    )
    size = np.sqrt(area)
    centre = img.mean(axis=1)
    in_frame = (centre[:, 0] >= 0) & (centre[:, 0] <= frame_w) & (centre[:, 1] >= 0) & (centre[:, 1] <= frame_h)
    whole = ((x >= 0) & (x <= frame_w) & (y >= 0) & (y <= frame_h)).all(axis=1)
    too_big = size > 0.5 * min(frame_w, frame_h)  # right under the camera or by its horizon: not countable
    hidden = np.zeros(n, bool)
    if hide:
        pts = shapely.points(centre)
        for area_ in hide:
            hidden |= shapely.contains(Polygon(area_), pts)
    frame = box(0, 0, frame_w, frame_h)
    for i in range(n):
        if not mapped[i]:
            proj.unseen["unmapped"] += 1
        elif not front[i] or too_big[i]:
            proj.unseen["behind"] += 1
        elif not in_frame[i]:
            proj.unseen["outside"] += 1
        elif hidden[i]:
            proj.unseen["hidden"] += 1
        elif size[i] < min_seat_px:
            proj.unseen["too_small"] += 1
        elif whole[i]:
            proj.polygons[i] = [(round(float(a), 2), round(float(b), 2)) for a, b in img[i]]
        else:  # straddles the frame edge: keep the part inside if it is most of the seat
            part = Polygon(img[i]).intersection(frame)
            if part.geom_type != "Polygon" or part.area < 0.5 * area[i] or np.sqrt(part.area) < min_seat_px:
                proj.unseen["outside"] += 1
            else:
                proj.polygons[i] = [(round(a, 2), round(b, 2)) for a, b in list(part.exterior.coords)[:-1]]
    return proj


def layout_sections(chart: Chart, proj: Projection) -> list[dict[str, Any]]:
    """The camera's layout sections (edge config format): per chart section seen, its outline and seats."""
    from shapely import unary_union
    from shapely.geometry import Polygon, box

    frame = box(0, 0, proj.frame_w, proj.frame_h)
    by_section: dict[str, list[int]] = {}
    for i in proj.seen:
        by_section.setdefault(chart.seats[i].section, []).append(i)
    out = []
    for sid in sorted(by_section):
        idx = by_section[sid]
        quads = [Polygon(proj.polygons[i]) for i in idx]
        r = 0.5 * float(np.median([np.sqrt(q.area) for q in quads]))
        outline = unary_union(quads).buffer(r, join_style="mitre").simplify(r / 2).intersection(frame)
        if outline.geom_type != "Polygon":
            outline = unary_union(quads).convex_hull.buffer(r / 2, join_style="mitre").intersection(frame)
        coords = [(round(a, 2), round(b, 2)) for a, b in list(outline.exterior.coords)[:-1]]
        seats = [{"id": chart.seats[i].layout_id, "polygon": [list(p) for p in proj.polygons[i]]} for i in idx]
        out.append({"id": sid, "seats": len(seats), "polygon": [list(p) for p in coords], "seat_map": seats})
    return out
