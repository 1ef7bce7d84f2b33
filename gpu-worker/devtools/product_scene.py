"""The product shot of ``devtools.scenes``: a bottle with a label, a logo and text on a seamless
studio backdrop, rendered the same way as the room (supersampled rays, exact masks)."""

from __future__ import annotations

import cv2
import numpy as np

from devtools.render import SUPERSAMPLE, NoiseField, _coverage_masks, _finish, _lin


def render_product(width: int, height: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A bottle-shaped product with a label, a logo and text on a seamless studio backdrop.

    Masks for the seller preset: Product (the whole object, label, logo and text included),
    Background, Shadow (the soft contact shadow on the backdrop), Label, Logo, Text.
    """
    rng = np.random.default_rng(seed)
    ss = SUPERSAMPLE
    hs, ws = height * ss, width * ss
    yy, xx = np.mgrid[0:hs, 0:ws].astype(np.float32)
    xn, yn = (xx + 0.5) / ws, (yy + 0.5) / hs
    noise = NoiseField(np.random.default_rng(seed + 7))

    # Backdrop: paper curving from wall to floor, lit from the upper left.
    bg_col = _lin(((230, 226, 218), (214, 222, 230), (226, 226, 226))[int(rng.integers(3))])
    light = 0.75 + 0.35 * (1 - xn) * 0.6 + 0.25 * (1 - yn) - 0.25 * ((xn - 0.4) ** 2 + (yn - 0.45) ** 2)
    radiance = bg_col * (light * (1 + 0.01 * noise.fbm(xn * 40, yn * 40)))[..., None]

    # Bottle silhouette: body, shoulder and neck, centred with a little jitter.
    cxn = 0.5 + rng.uniform(-0.04, 0.04)
    base_y, top_y = 0.86, 0.16
    body_r, neck_r = 0.17 * height / width, 0.055 * height / width
    shoulder_y, neck_y = 0.42, 0.3
    t = np.clip((yn - neck_y) / (shoulder_y - neck_y), 0, 1)
    radius = np.where(yn > shoulder_y, body_r, neck_r + (body_r - neck_r) * (3 * t**2 - 2 * t**3))
    # rounded bottom corners
    corner = 0.03
    radius = np.where(yn > base_y - corner,
                      body_r - corner + np.sqrt(np.clip(corner**2 - (yn - (base_y - corner)) ** 2, 0, None)),
                      radius)
    product = (np.abs(xn - cxn) < radius) & (yn > top_y) & (yn < base_y)
    cap = product & (yn < top_y + 0.07)

    # Contact shadow on the floor part of the backdrop, offset away from the light.
    sh_dx = (xn - cxn - 0.05) / (body_r * 1.6)
    sh_dy = (yn - base_y - 0.005) / 0.035
    shadow_density = np.exp(-(sh_dx**2 + sh_dy**2) * 1.2) * (yn > base_y - 0.02)
    shadow = (shadow_density > 0.25) & ~product
    radiance *= (1 - 0.6 * shadow_density)[..., None]

    # Product shading: cylindrical lambert with a specular stripe.
    rel = np.clip((xn - cxn) / np.maximum(radius, 1e-3), -1, 1)
    nrm_x = rel
    nrm_z = np.sqrt(1 - rel**2)
    lambert = np.clip(-0.55 * nrm_x + 0.8 * nrm_z, 0, None)
    prod_col = _lin(((48, 92, 70), (120, 40, 44), (40, 60, 110))[int(rng.integers(3))])
    spec = np.exp(-((rel + 0.45) / 0.08) ** 2) * 1.4
    shade = 0.15 + 0.95 * lambert
    body = prod_col * shade[..., None] + spec[..., None]
    cap_rad = _lin((40, 40, 42)) * shade[..., None] + 0.6 * spec[..., None]
    radiance = np.where(product[..., None], body, radiance)
    radiance = np.where(cap[..., None], cap_rad, radiance)

    # Label band, a logo disc and a line of text on it.
    label = product & (yn > 0.52) & (yn < 0.76) & (np.abs(rel) < 0.999)
    radiance = np.where(label[..., None], _lin((240, 236, 226)) * shade[..., None] + 0.3 * spec[..., None], radiance)
    logo = label & (((xn - cxn) / (height / width)) ** 2 + (yn - 0.585) ** 2 < 0.035**2)
    radiance = np.where(logo[..., None], _lin((200, 60, 40)) * shade[..., None], radiance)
    text_canvas = np.zeros((hs, ws), np.uint8)
    words = ("NATURAL", "ORGANIC", "CLASSIC")[int(rng.integers(3))]
    scale = 0.0016 * hs
    (tw, th), _ = cv2.getTextSize(words, cv2.FONT_HERSHEY_DUPLEX, scale, max(1, int(scale * 2)))
    cv2.putText(text_canvas, words, (int(cxn * ws - tw / 2), int(0.7 * hs)), cv2.FONT_HERSHEY_DUPLEX, scale, 255,
                max(1, int(scale * 2)), lineType=cv2.LINE_8)
    text = label & (text_canvas > 0)
    radiance = np.where(text[..., None], _lin((30, 30, 34)) * shade[..., None], radiance)

    img = _finish(radiance.astype(np.float32), ss, rng, float(np.median(radiance[~product].mean(axis=-1))) * 1.1)
    labels = np.zeros((hs, ws), np.uint8)  # 0 background
    labels[shadow] = 1
    labels[product] = 2
    labels[label] = 3
    labels[logo] = 4
    labels[text] = 5
    masks = _coverage_masks(labels, {
        "Background": (0, 1), "Shadow": (1,), "Product": (2, 3, 4, 5), "Label": (3, 4, 5),
        "Logo": (4,), "Text": (5,),
    }, ss)
    return img, masks
