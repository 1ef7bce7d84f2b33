"""Synthetic photos whose truth is known: a ray-cast room and a product shot, with exact masks.

Both scenes are rendered by casting one ray per sub-pixel (``SUPERSAMPLE`` x ``SUPERSAMPLE`` per
pixel) against simple geometry: the room is an axis-aligned box with a window, a door, a tiled
panel, moldings and box-shaped furniture; every surface carries a procedural texture evaluated in
its own plane coordinates (so the wood floor's planks and grain are in true perspective). Light
comes from the window as an area light sampled at several points, with soft shadows from the
furniture, an ambient term darkened near corners, a filmic tone curve and sensor noise.

A concept's mask is the set of pixels whose sub-pixel coverage by that concept is at least half,
so edges in the photo are anti-aliased the way a camera's are while the masks stay exact.

    rgb, masks = render_room(1600, 1200, seed=0)       # masks["Wall"], masks["Floor"], ...
    rgb, masks = render_product(800, 800, seed=0)      # devtools.product_scene: masks["Product"], ...

``render_room(..., furniture=False)`` renders the same room (same seed) without its furniture,
which is the ground truth a removal can be compared with.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from devtools.render import SUPERSAMPLE, Box, NoiseField, _coverage_masks, _finish, _lin, _ray_box

# Surface labels of the room; concepts are unions of these.
CEILING, WALL, FLOOR, TILE, GROUT, GLASS, GLASS_HL, WINDOW_FRAME, DOOR, DOOR_FRAME, MOLDING = range(11)
FURNITURE0 = 16  # furniture piece k has label FURNITURE0 + k

ROOM_CONCEPTS: dict[str, tuple[int, ...]] = {
    "Wall": (WALL,),
    "Floor": (FLOOR,),
    "Ceiling": (CEILING,),
    "Tile": (TILE, GROUT),
    "Grout": (GROUT,),
    "Window": (GLASS, GLASS_HL, WINDOW_FRAME),
    "Glass_highlight": (GLASS_HL,),
    "Frame_Molding": (WINDOW_FRAME, DOOR_FRAME, MOLDING),
    "Door": (DOOR,),
}

WALL_PAINTS = [(214, 205, 188), (196, 204, 207), (222, 214, 196), (188, 196, 178), (226, 222, 214)]
FABRICS = [(92, 104, 122), (130, 126, 118), (84, 110, 96), (150, 112, 92), (70, 72, 80)]


# -- the room ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Room:
    xl: float = -2.4   # left wall
    xr: float = 2.6    # right wall
    yc: float = -1.25  # ceiling (y grows downwards, camera at y = 0)
    yf: float = 1.45   # floor
    zb: float = 5.5    # back wall
    window: tuple[float, float, float, float] = (3.45, 4.95, -0.55, 0.75)  # z0, z1, y0, y1 on left wall
    door: tuple[float, float, float, float] = (0.95, 1.85, 1.45 - 2.05, 1.45)  # x0, x1, y0, y1 on back wall
    tile: tuple[float, float, float, float] = (-1.75, -0.3, 1.45 - 1.45, 1.45 - 0.4)  # x0, x1, y0, y1


def _furniture(room: _Room, rng: np.random.Generator) -> list[Box]:
    yf = room.yf
    fabric = FABRICS[int(rng.integers(len(FABRICS)))]
    jx, jz = rng.uniform(-0.08, 0.08), rng.uniform(-0.1, 0.1)
    sofa = FURNITURE0
    table = FURNITURE0 + 1
    lamp = FURNITURE0 + 2
    dark_wood = (92, 64, 44)
    boxes = [
        # sofa: seat, back, two arms (one instance)
        Box((0.62 + jx, yf - 0.44, 2.25 + jz), (2.28 + jx, yf, 3.12 + jz), sofa, fabric, 0.05),
        Box((0.62 + jx, yf - 0.86, 3.12 + jz), (2.28 + jx, yf, 3.36 + jz), sofa, fabric, 0.05),
        Box((0.46 + jx, yf - 0.6, 2.2 + jz), (0.62 + jx, yf, 3.36 + jz), sofa, fabric, 0.05),
        Box((2.28 + jx, yf - 0.6, 2.2 + jz), (2.44 + jx, yf, 3.36 + jz), sofa, fabric, 0.05),
        # coffee table: top and four legs
        Box((-1.3 - jx, yf - 0.42, 2.45), (-0.35 - jx, yf - 0.37, 3.0), table, dark_wood, 0.03),
    ]
    for lx in (-1.26 - jx, -0.43 - jx):
        for lz in (2.49, 2.92):
            boxes.append(Box((lx, yf - 0.37, lz), (lx + 0.05, yf, lz + 0.05), table, dark_wood, 0.02))
    # floor lamp in the back-left corner: base, pole and shade
    lamp_x, lamp_z = -1.9 + jx * 0.5, 4.7 + jz * 0.5
    shade = (236, 226, 204)
    boxes += [
        Box((lamp_x - 0.16, yf - 0.03, lamp_z - 0.16), (lamp_x + 0.16, yf, lamp_z + 0.16), lamp, (60, 60, 62), 0.02),
        Box((lamp_x - 0.018, yf - 1.36, lamp_z - 0.018), (lamp_x + 0.018, yf - 0.03, lamp_z + 0.018), lamp,
            (60, 60, 62), 0.02),
        Box((lamp_x - 0.2, yf - 1.68, lamp_z - 0.2), (lamp_x + 0.2, yf - 1.36, lamp_z + 0.2), lamp, shade, 0.04),
    ]
    return boxes


def _room_hits(room: _Room, dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which room plane each ray (origin 0, direction (dx, dy, 1)) hits, and at what depth z."""
    with np.errstate(divide="ignore"):
        cand = np.stack([
            np.where(dy < 0, room.yc / dy, np.inf),   # ceiling
            np.where(dy > 0, room.yf / dy, np.inf),   # floor
            np.where(dx < 0, room.xl / dx, np.inf),   # left wall
            np.where(dx > 0, room.xr / dx, np.inf),   # right wall
            np.full_like(dx, room.zb),                # back wall
        ])
    plane = np.argmin(cand, axis=0)
    return plane, np.take_along_axis(cand, plane[None], 0)[0]


def _window_light(room: _Room, n_z: int, n_y: int) -> tuple[np.ndarray, float]:
    z0, z1, y0, y1 = room.window
    zs = np.linspace(z0, z1, n_z + 2)[1:-1]
    ys = np.linspace(y0, y1, n_y + 2)[1:-1]
    pts = np.array([(room.xl + 0.02, y, z) for y in ys for z in zs], np.float32)
    return pts, (z1 - z0) * (y1 - y0) / len(pts)


def _irradiance(px, py, pz, nx, ny, nz, lights, area, boxes: list[Box] | None):
    """Window light reaching points with normals n; with ``boxes``, shadowed by them (soft)."""
    e = np.zeros(np.shape(px), np.float32)
    for lx, ly, lz in lights:
        vx, vy, vz = lx - px, ly - py, lz - pz
        d2 = vx * vx + vy * vy + vz * vz + 1e-6
        inv = 1.0 / np.sqrt(d2)
        cos_s = np.clip((vx * nx + vy * ny + vz * nz) * inv, 0, None)
        cos_w = np.clip(-vx * inv, 0, None)  # the window faces +x
        contrib = cos_s * cos_w / d2
        if boxes:
            lit = np.ones_like(contrib)
            for b in boxes:
                t, _ = _ray_box(px, py, pz, vx, vy, vz, b)
                lit = np.where(t < 1.0, 0.0, lit)
            contrib = contrib * lit
        e += contrib
    return e * area


def render_room(width: int, height: int, seed: int, furniture: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A lit room with exact concept masks (interior preset): RGB uint8 H x W x 3 and bool masks."""
    rng = np.random.default_rng(seed)
    ss = SUPERSAMPLE
    room = _Room()
    f = 0.62 * width * ss
    cx = width * ss * rng.uniform(0.47, 0.53)
    cy = height * ss * rng.uniform(0.42, 0.48)
    boxes = _furniture(room, rng)
    paint = WALL_PAINTS[int(rng.integers(len(WALL_PAINTS)))]
    noise = NoiseField(np.random.default_rng(seed + 1000))
    fine = NoiseField(np.random.default_rng(seed + 2000), smooth=0.8)
    if not furniture:
        boxes_drawn: list[Box] = []
    else:
        boxes_drawn = boxes

    hs, ws = height * ss, width * ss
    u = (np.arange(ws, dtype=np.float32) + 0.5)
    v = (np.arange(hs, dtype=np.float32) + 0.5)
    dx = np.broadcast_to(((u - cx) / f)[None, :], (hs, ws)).astype(np.float32)
    dy = np.broadcast_to(((v - cy) / f)[:, None], (hs, ws)).astype(np.float32)
    plane, z = _room_hits(room, dx, dy)
    px, py, pz = dx * z, dy * z, z.astype(np.float32)

    normals = np.array([(0, 1, 0), (0, -1, 0), (1, 0, 0), (-1, 0, 0), (0, 0, -1)], np.float32)
    nx, ny, nz = (normals[plane, i] for i in range(3))
    labels = np.where(plane == 0, CEILING, np.where(plane == 1, FLOOR, WALL)).astype(np.uint8)
    albedo = np.empty((hs, ws, 3), np.float32)
    albedo[:] = _lin(paint)

    # Plaster: a faint low-frequency mottling plus fine grain, in plane coordinates.
    su = np.where(plane >= 2, np.where(plane == 4, px, pz), px)
    sv = np.where(plane <= 1, pz, py)
    plaster = 1.0 + 0.025 * noise.fbm(su * 3, sv * 3) + 0.02 * fine(su * 90, sv * 90)
    albedo *= plaster[..., None]

    # Ceiling: warm white.
    ceil = plane == 0
    albedo[ceil] = _lin((236, 234, 228)) * plaster[ceil, None]

    # Floor: planks along z with per-plank tone, grooves and grain.
    fl = plane == 1
    fx, fz = px[fl], pz[fl]
    plank_w, plank_len = 0.19, 1.3
    plank = np.floor((fx - room.xl) / plank_w)
    offset = np.mod(plank * 0.618, 1.0) * plank_len
    seg = np.floor((fz + offset) / plank_len)
    hashed = np.mod(np.sin(plank * 12.9898 + seg * 78.233) * 43758.5453, 1.0)
    local_x = (fx - room.xl) - plank * plank_w
    local_z = np.mod(fz + offset, plank_len)
    phase = local_x / 0.011 + 2.2 * noise(fx * 6 + hashed * 50, fz * 0.7) + hashed * 7
    grain = 0.5 + 0.5 * np.sin(2 * np.pi * phase)
    tone = 0.82 + 0.3 * hashed + 0.07 * noise.fbm(fx * 2, fz * 2, 3)
    wood = (tone - 0.22 * grain**3 + 0.05 * fine(fx * 300, fz * 40))
    groove = np.minimum(np.minimum(local_x, plank_w - local_x), np.minimum(local_z, plank_len - local_z))
    wood = np.where(groove < 0.003, wood * 0.45, wood)
    floor_colour = _lin((170, 124, 84))
    hue = (hashed - 0.5)[:, None] * np.array([0.06, 0.02, -0.04], np.float32)
    albedo[fl] = np.clip(floor_colour * (1 + hue), 0, 1) * wood[:, None]

    # Back wall features: tiled panel and the door.
    back = plane == 4
    tx0, tx1, ty0, ty1 = room.tile
    tile_zone = back & (px >= tx0) & (px < tx1) & (py >= ty0) & (py < ty1)
    tsize, gw = 0.16, 0.014
    tu, tv = (px - tx0) / tsize, (py - ty0) / tsize
    in_tile_u, in_tile_v = (tu - np.floor(tu)) * tsize, (tv - np.floor(tv)) * tsize
    grout_px = tile_zone & ((in_tile_u < gw) | (in_tile_v < gw))
    labels[tile_zone] = TILE
    labels[grout_px] = GROUT
    tile_hash = np.mod(np.sin(np.floor(tu) * 19.19 + np.floor(tv) * 47.11) * 9173.13, 1.0)
    tile_col = _lin((84, 132, 140)) * (0.9 + 0.2 * tile_hash[..., None])
    sel = tile_zone & ~grout_px
    albedo[sel] = tile_col[sel] * (1 + 0.02 * fine(px[sel] * 200, py[sel] * 200))[:, None]
    albedo[grout_px] = _lin((200, 196, 188))

    d0, d1, dy0, dy1 = room.door
    casing = 0.08
    door_zone = back & (px >= d0) & (px < d1) & (py >= dy0)
    frame_zone = back & (px >= d0 - casing) & (px < d1 + casing) & (py >= dy0 - casing) & ~door_zone
    labels[frame_zone] = DOOR_FRAME
    albedo[frame_zone] = _lin((240, 238, 232))
    labels[door_zone] = DOOR
    # a four-panel door: inset panels are slightly darker with a shadowed rim
    rel_x = (px - d0) / (d1 - d0)
    rel_y = (py - dy0) / (dy1 - dy0)
    in_panel = ((np.abs(rel_x - 0.28) < 0.16) | (np.abs(rel_x - 0.72) < 0.16)) & (
        (np.abs(rel_y - 0.27) < 0.18) | (np.abs(rel_y - 0.72) < 0.2))
    door_col = _lin((226, 220, 206))
    albedo[door_zone] = door_col
    albedo[door_zone & in_panel] = door_col * 0.9

    # Moldings: crown along the ceiling and baseboards along the floor, on every wall.
    walls = plane >= 2
    crown = walls & (py < room.yc + 0.09)
    base = walls & (py > room.yf - 0.11) & ~door_zone & ~frame_zone
    labels[crown | base] = MOLDING
    albedo[crown | base] = _lin((244, 242, 236))

    # Window on the left wall: frame, mullions, glass showing a bright outside, highlight streaks.
    left = plane == 2
    wz0, wz1, wy0, wy1 = room.window
    win = left & (pz >= wz0) & (pz < wz1) & (py >= wy0) & (py < wy1)
    fw = 0.07
    rz, ry = pz - wz0, py - wy0
    mid_z, mid_y = (wz1 - wz0) / 2, (wy1 - wy0) * 0.38
    is_frame = (rz < fw) | (rz > wz1 - wz0 - fw) | (ry < fw) | (ry > wy1 - wy0 - fw) | (
        np.abs(rz - mid_z) < fw / 2) | (np.abs(ry - mid_y) < fw / 2)
    glass = win & ~is_frame
    labels[win & is_frame] = WINDOW_FRAME
    albedo[win & is_frame] = _lin((246, 246, 244))
    labels[glass] = GLASS
    diag = (rz + 0.8 * ry) / 0.9
    streak = glass & ((np.abs(np.mod(diag, 1.0) - 0.35) < 0.045) | (np.abs(np.mod(diag, 1.0) - 0.5) < 0.02))
    labels[streak] = GLASS_HL

    # Furniture, nearest hit wins.
    depth = z.copy()
    box_normal_axis = np.full((hs, ws), -1, np.int8)
    box_sign = np.zeros((hs, ws), np.float32)
    box_index = np.full((hs, ws), -1, np.int16)
    for i, b in enumerate(boxes_drawn):
        corners = np.array([(x, y, zz) for x in (b.lo[0], b.hi[0]) for y in (b.lo[1], b.hi[1])
                            for zz in (b.lo[2], b.hi[2])], np.float32)
        us = cx + f * corners[:, 0] / corners[:, 2]
        vs = cy + f * corners[:, 1] / corners[:, 2]
        c0, c1 = int(max(0, np.floor(us.min()) - 1)), int(min(ws, np.ceil(us.max()) + 1))
        r0, r1 = int(max(0, np.floor(vs.min()) - 1)), int(min(hs, np.ceil(vs.max()) + 1))
        if c0 >= c1 or r0 >= r1:
            continue
        sub = (slice(r0, r1), slice(c0, c1))
        zero = np.zeros((r1 - r0, c1 - c0), np.float32)
        t, axis = _ray_box(zero, zero, zero, dx[sub], dy[sub], np.ones_like(zero), b)
        closer = t < depth[sub]
        depth[sub] = np.where(closer, t, depth[sub])
        box_normal_axis[sub] = np.where(closer, axis, box_normal_axis[sub])
        direction = np.stack([dx[sub], dy[sub], np.ones_like(zero)])
        comp = np.take_along_axis(direction, axis[None].astype(np.int64), 0)[0]
        box_sign[sub] = np.where(closer, -np.sign(comp), box_sign[sub])
        box_index[sub] = np.where(closer, i, box_index[sub])
    on_box = box_index >= 0
    if on_box.any():
        bi = box_index[on_box]
        labels[on_box] = np.array([b.label for b in boxes_drawn], np.uint8)[bi]
        px[on_box], py[on_box], pz[on_box] = dx[on_box] * depth[on_box], dy[on_box] * depth[on_box], depth[on_box]
        ax, sg = box_normal_axis[on_box], box_sign[on_box]
        nx[on_box], ny[on_box], nz[on_box] = (np.where(ax == k, sg, 0.0) for k in range(3))
        colours = np.array([_lin(b.colour) for b in boxes_drawn], np.float32)[bi]
        grains = np.array([b.grain for b in boxes_drawn], np.float32)[bi]
        bu = np.where(ax == 0, pz[on_box], px[on_box])
        bv = np.where(ax == 1, pz[on_box], py[on_box])
        weave = fine(bu * 400, bv * 400) + 0.5 * noise(bu * 20, bv * 20)
        albedo[on_box] = colours * (1 + grains * weave)[:, None]

    # Lighting: window area light (shadowed on room surfaces, at a lower resolution since the
    # shadows are soft), ambient light darkened near corners and under furniture.
    lights, area = _window_light(room, 4, 3)
    direct = _irradiance(px, py, pz, nx, ny, nz, lights, area, None)
    if boxes_drawn:
        step = 4 * ss
        lo_px, lo_py, lo_pz = (a[::step, ::step] for a in (px, py, pz))
        lo_n = [a[::step, ::step] for a in (nx, ny, nz)]
        lo_room = box_index[::step, ::step] < 0
        lo_lit = _irradiance(lo_px, lo_py, lo_pz, *lo_n, lights, area, boxes_drawn)
        lo_free = _irradiance(lo_px, lo_py, lo_pz, *lo_n, lights, area, None)
        vis = np.where(lo_room & (lo_free > 1e-6), lo_lit / np.maximum(lo_free, 1e-6), 1.0).astype(np.float32)
        vis = cv2.GaussianBlur(vis, (0, 0), 1.0)
        vis = cv2.resize(vis, (ws, hs), interpolation=cv2.INTER_LINEAR)
        direct = np.where(on_box, direct, direct * vis)
    dist_corner = np.minimum.reduce([px - room.xl, room.xr - px, py - room.yc, room.yf - py, room.zb - pz])
    corner_ao = 1.0 - 0.35 * np.exp(-np.abs(dist_corner) / 0.35)
    contact = np.ones((hs, ws), np.float32)
    for b in boxes_drawn:
        ddx = np.maximum(np.maximum(b.lo[0] - px, px - b.hi[0]), 0)
        ddz = np.maximum(np.maximum(b.lo[2] - pz, pz - b.hi[2]), 0)
        ddy = np.maximum(np.maximum(b.lo[1] - py, py - b.hi[1]), 0)
        dist = np.sqrt(ddx**2 + ddz**2 + ddy**2)
        contact *= np.where(on_box, 1.0, 1.0 - 0.45 * np.exp(-dist / 0.12))
    ambient = 0.2 * corner_ao * contact
    radiance = albedo * (direct + ambient)[..., None]

    wall_lum = radiance[labels == WALL].mean(axis=1) if (labels == WALL).any() else radiance.mean(axis=2)
    exposure_ref = float(np.median(wall_lum))

    # Outside view through the glass: bright sky above, greenery below; the highlights are hotter.
    outside_y = np.clip((py - wy0) / (wy1 - wy0), 0, 1)[..., None]
    sky = np.array([0.75, 0.85, 1.0], np.float32) * (1 - outside_y) + np.array([0.45, 0.6, 0.35]) * outside_y
    glass_all = np.isin(labels, (GLASS, GLASS_HL))
    texture = 1 + 0.08 * noise.fbm(pz[glass_all] * 8, py[glass_all] * 8, 3)
    radiance[glass_all] = sky[glass_all] * texture[:, None] * 2.2 * exposure_ref
    radiance[labels == GLASS_HL] = 14.0 * exposure_ref

    img = _finish(radiance, ss, rng, exposure_ref)

    groups = dict(ROOM_CONCEPTS)
    groups["Furniture"] = tuple(FURNITURE0 + k for k in range(3))
    masks = _coverage_masks(labels, groups, ss)
    return img, masks
