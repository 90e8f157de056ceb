"""Drawing primitives shared by the synthetic COCO and ADE20K generators.

Every shape is described by one polygon (integer pixel vertices). The same polygon is
rasterised for the image, for the instance/semantic mask and written as the COCO
segmentation, so annotations and pixels agree exactly.
"""
import math

import cv2
import numpy as np

SHAPES = ('circle', 'square', 'triangle')

# Saturated colours that stand out against the grey, noisy background.
_PALETTE = np.array([
    (220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 200, 30),
    (200, 60, 200), (30, 200, 200), (240, 130, 20), (140, 90, 220),
], dtype=np.uint8)


def noisy_background(rng, height, width):
    """A smooth random gradient plus per-pixel noise, uint8 RGB (height, width, 3)."""
    base = rng.uniform(70, 170, size=3)
    tilt = rng.uniform(-40, 40, size=(2, 3))
    ys = np.linspace(-0.5, 0.5, height)[:, None, None]
    xs = np.linspace(-0.5, 0.5, width)[None, :, None]
    img = base + ys * tilt[0] + xs * tilt[1]
    img = img + rng.normal(0.0, 12.0, size=(height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def shape_polygon(kind, cx, cy, radius, angle):
    """Vertices (N, 2) int32 of a shape centred at (cx, cy) with circumradius ``radius``."""
    if kind == 'circle':
        n, start = 32, 0.0
    elif kind == 'square':
        n, start = 4, angle + math.pi / 4
    elif kind == 'triangle':
        n, start = 3, angle - math.pi / 2
    else:
        raise ValueError(f'unknown shape {kind!r}; expected one of {SHAPES}')
    t = start + np.arange(n) * (2 * math.pi / n)
    pts = np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1)
    return np.round(pts).astype(np.int32)


# One hue per shape kind (used with ``colour_by_class``): the class is then visible from the
# colour as well as from the outline, which lets tiny from-scratch trainings learn quickly.
_CLASS_COLOURS = np.array([(225, 45, 45), (40, 190, 70), (45, 85, 230)], dtype=np.uint8)


def random_layout(rng, height, width, max_objects, min_frac=0.12, max_frac=0.28,
                  colour_by_class=True):
    """Non-overlapping shapes: list of dicts (kind index, polygon, colour).

    With ``colour_by_class`` each kind has its own hue (jittered); otherwise colours are drawn
    independently of the kind, so only the outline tells the class.
    """
    short = min(height, width)
    objects, circles = [], []
    num = int(rng.integers(1, max_objects + 1))
    for _ in range(num):
        for _attempt in range(30):
            radius = float(rng.uniform(min_frac, max_frac)) * short
            cx = float(rng.uniform(radius + 1, width - radius - 1))
            cy = float(rng.uniform(radius + 1, height - radius - 1))
            if all(math.hypot(cx - x, cy - y) > radius + r + 2 for x, y, r in circles):
                break
        else:
            continue
        kind = int(rng.integers(0, len(SHAPES)))
        angle = float(rng.uniform(0, 2 * math.pi))
        palette_index = int(rng.integers(0, len(_PALETTE)))
        base = _CLASS_COLOURS[kind] if colour_by_class else _PALETTE[palette_index]
        colour = np.clip(base.astype(np.int16) + rng.integers(-25, 26, size=3), 0, 255)
        circles.append((cx, cy, radius))
        objects.append(dict(
            label=kind, polygon=shape_polygon(SHAPES[kind], cx, cy, radius, angle),
            colour=tuple(int(c) for c in colour)))
    return objects


def polygon_mask(polygon, height, width):
    mask = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(mask, [polygon.reshape(-1, 1, 2)], 1)
    return mask


def paint(img, objects):
    """Fill every object's polygon with its colour (in place) and return img."""
    for obj in objects:
        cv2.fillPoly(img, [obj['polygon'].reshape(-1, 1, 2)], obj['colour'])
    return img


def write_rgb_jpg(path, rgb):
    # cv2 writes BGR; mmcv/mmengine read it back as BGR and the configs' to_rgb handles it.
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                       [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f'could not write {path}')
