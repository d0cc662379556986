"""A deterministic synthetic demo dataset written in the exact PASCAL VOC 2012 layout.

The point is a small dataset on which weakly supervised segmentation is a real problem:

* a class is a *shape* (disc, square, triangle, ...) wearing its own texture family (stripes,
  checkerboard, dots, ...) in its own colour family (a hue band; saturation, brightness,
  period and angle random): local cues a small CNN trained from scratch on two CPU cores
  learns within minutes, so CAMs light up object interiors and blur at their borders;
* every image holds 1-4 objects (fewer more often) of scales from small to most of the image
  (extent 10%..140% of the side by default, log-uniform, close-ups cut by the frame, so
  foreground covers about 22% of an image on average but from 1% to over half of it, as in
  PASCAL VOC), with random rotation, aspect and position; they may partially occlude each other
  (the mask shows the top one);
* backgrounds are cluttered, and how much varies per image: smooth gradients, band-limited
  noise, 0-3 textured regions and 0-12 small distractor blobs, lines and curves (flat, gradient
  and blotchy fills) in colours drawn from the whole hue circle, so background regions often
  share a class's colour: CAMs bleed into them, and the background threshold matters;
* masks carry a VOC-style 255 "ignore" band along every object boundary.

Every image is drawn from its own ``np.random.default_rng([seed, index])``, so the files do not
depend on generation order and the same arguments give byte-identical files.
Speed: 600 images at 128x128 take about 7 s of CPU time on one core of the 2-core build
machine, measured while other jobs shared it (about a tenth is palette.voc_palette per mask).
"""

from __future__ import annotations

import colorsys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from bao.data.palette import IGNORE_INDEX, save_mask

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "disc", "square", "triangle", "star", "ring", "cross", "crescent", "arrow",
)

JPEG_QUALITY = 95
MIN_IMAGE_SIZE = 32
# Generator options (params.yaml data.synthetic.*; bao.config.SyntheticConfig repeats these defaults, a test keeps them equal)
OBJECT_SCALE = (0.1, 1.4)  # range of an object's extent (longer side of its box) as a fraction of the image side, log-uniform
NUM_OBJECTS = (1, 4)  # objects per image, min..max; each extra object is OBJECT_COUNT_RATIO times as likely
OBJECT_COUNT_RATIO = 0.6
DISTRACTORS = (0, 12)  # background clutter items per image, min..max (uniform: some images clean, some busy)
TEXTURE_REGIONS = (0, 3)  # textured background regions per image, min..max
MAX_OBJECT_SCALE = 4.0  # object_scale's upper limit (objects larger than the image need truncation > 0)
TRUNCATION = 0.3  # share of an object's box that may lie outside the image, per axis (0: objects fully inside)
CLASS_PART = (0.1, 0.7)  # share of an object wearing its class texture, min..max (the rest: a plain texture; 1.0: all of it)
MIN_VISIBLE_FRACTION = 0.6  # an occluded object keeps at least this much of its area
CLASS_HUE_JITTER = 0.03  # std of a class colour's hue around its family (classes are 0.125 apart)
MIN_COLOUR_CONTRAST = 50.0  # mean RGB distance object vs. surroundings, so objects stay visible
SUBPIXEL_BITS = 4  # cv2 fixed-point shift: smooth edges at any size

Polygon = np.ndarray  # (N, 2) float points in unit shape coordinates (extent about [-1, 1])


@dataclass(frozen=True)
class PlacedObject:
    """One drawn instance: its class index (1-based) and its soft coverage (0..255)."""

    label: int
    alpha: np.ndarray


# ----------------------------------------------------------------------------- shapes


def _circle(radius: float = 1.0, centre: tuple[float, float] = (0.0, 0.0), n: int = 48) -> Polygon:
    angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)], axis=1)


def _disc(rng: np.random.Generator) -> list[tuple[Polygon, int]]:
    return [(_circle(), 255)]


def _square(rng: np.random.Generator) -> list[tuple[Polygon, int]]:
    return [(np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]), 255)]


def _triangle(rng: np.random.Generator) -> list[tuple[Polygon, int]]:
    apex_shift = rng.uniform(-0.4, 0.4)  # not always isosceles
    return [(np.array([[apex_shift, -1.0], [0.95, 0.75], [-0.95, 0.75]]), 255)]


def _star(rng: np.random.Generator) -> list[tuple[Polygon, int]]:
    points = int(rng.integers(5, 7))
    radii = np.tile([1.0, rng.uniform(0.4, 0.5)], points)
    angles = np.linspace(0.0, 2.0 * np.pi, 2 * points, endpoint=False) - np.pi / 2
    return [(np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1), 255)]


def _ring(rng: np.random.Generator) -> list[tuple[Polygon, int]]:
    return [(_circle(), 255), (_circle(rng.uniform(0.45, 0.6)), 0)]


def _cross(rng: np.random.Generator) -> list[tuple[Polygon, int]]:
    w = rng.uniform(0.28, 0.38)
    return [(np.array([
        [-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w],
        [w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w],
    ]), 255)]


def _crescent(rng: np.random.Generator) -> list[tuple[Polygon, int]]:
    return [(_circle(), 255), (_circle(rng.uniform(0.75, 0.85), (rng.uniform(0.45, 0.55), 0.0)), 0)]


def _arrow(rng: np.random.Generator) -> list[tuple[Polygon, int]]:
    w, neck = rng.uniform(0.18, 0.28), rng.uniform(0.0, 0.3)
    return [(np.array([
        [-1, -w], [neck, -w], [neck, -0.65], [1, 0], [neck, 0.65], [neck, w], [-1, w],
    ]), 255)]


SHAPES: dict[str, Callable[[np.random.Generator], list[tuple[Polygon, int]]]] = {
    "disc": _disc, "square": _square, "triangle": _triangle, "star": _star,
    "ring": _ring, "cross": _cross, "crescent": _crescent, "arrow": _arrow,
}


def _fill_polygons(size: int, parts: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Anti-aliased coverage (0..255) of polygons in pixel coordinates; value 0 cuts holes."""
    canvas = np.zeros((size, size), np.uint8)
    scale = 1 << SUBPIXEL_BITS
    for points, value in parts:
        fixed = np.round(points * scale).astype(np.int32)
        cv2.fillPoly(canvas, [fixed], int(value), lineType=cv2.LINE_AA, shift=SUBPIXEL_BITS)
    return canvas


def _place_shape(
    rng: np.random.Generator, name: str, size: int, *, scale: tuple[float, float] = OBJECT_SCALE, truncation: float = TRUNCATION
) -> np.ndarray:
    """Draw one class shape with random extent, aspect, rotation and position, inside the image
    (or cut by its border, with ``truncation`` > 0).

    The extent (the longer side of the shape's box, as a fraction of the image side) is
    log-uniform in ``scale``: as many objects from 10% to 20% of the side as from 70% to 140%,
    photographs' mix of far objects and close-ups. With ``truncation`` > 0 up to that share of the
    box may lie outside the image on each axis, and objects may be larger than the image (extent
    > 1): close-ups cut by the frame. With the defaults objects cover 22% of an image on average
    (PASCAL VOC: about 22%), from under 2% (p10) to about 50% (p90)."""
    parts = SHAPES[name](rng)
    fits = (size - 3.0) / size if truncation == 0 else float("inf")  # largest extent that still fits inside the image
    low = min(max(scale[0], 10.0 / size), fits)  # tiny images: keep objects a few pixels thick
    high = min(max(scale[1], low), fits)
    extent = np.exp(rng.uniform(np.log(low), np.log(high))) * size
    aspect = np.exp(rng.uniform(-0.35, 0.35))
    angle = rng.uniform(0.0, 2.0 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    linear = rotation @ np.diag([aspect, 1.0 / aspect])
    box = parts[0][0] @ linear.T
    linear = linear * (extent / float((box.max(axis=0) - box.min(axis=0)).max()))
    transformed = [(points @ linear.T, value) for points, value in parts]
    outline = transformed[0][0]
    lo, hi = outline.min(axis=0), outline.max(axis=0)
    if truncation == 0:
        offset = rng.uniform(1.0 - lo, np.maximum(size - 2.0 - hi, 1.0 - lo))
    else:  # the box may overhang each border by `truncation` of its own size (both, if larger than the image)
        margin = truncation * (hi - lo)
        first, last = 1.0 - lo - margin, size - 2.0 - hi + margin
        offset = rng.uniform(np.minimum(first, last), np.maximum(first, last))
    return _fill_polygons(size, [(points + offset, value) for points, value in transformed])


# ----------------------------------------------------------------------------- textures


def _random_colour(rng: np.random.Generator, hue: float | None = None) -> np.ndarray:
    """A random HSV colour; with ``hue``, a saturated colour close to that hue (a class's colour family)."""
    if hue is None:
        rgb = colorsys.hsv_to_rgb(rng.uniform(0.0, 1.0), rng.uniform(0.15, 1.0), rng.uniform(0.2, 1.0))
    else:
        rgb = colorsys.hsv_to_rgb((hue + rng.normal(0.0, CLASS_HUE_JITTER)) % 1.0, rng.uniform(0.5, 1.0), rng.uniform(0.35, 1.0))
    return np.array(rgb, np.float32) * 255.0


def _class_hue(label: int) -> float:
    """Classes are spread evenly around the hue circle; backgrounds draw from the whole circle."""
    return (label - 1) / len(SYNTHETIC_CLASSES)


def _rotated_coords(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in a randomly rotated frame, for patterns at any angle."""
    ys = np.arange(shape[0], dtype=np.float32)[:, None]
    xs = np.arange(shape[1], dtype=np.float32)[None, :]
    angle = rng.uniform(0.0, np.pi)
    c, s = float(np.cos(angle)), float(np.sin(angle))  # Python floats keep the maps float32
    return c * xs + s * ys, -s * xs + c * ys


def _unit_range(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / max(high - low, 1e-6)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Band-limited noise in [0, 1]: a coarse random grid upsampled with cubic interpolation."""
    coarse = rng.random((cells, cells), dtype=np.float32)
    return _unit_range(cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC))


# Pattern kinds. Objects of class k always wear CLASS_PATTERNS[k] (colours, period and angle
# random); backgrounds and distractors only wear BACKGROUND_PATTERNS.
CLASS_PATTERNS = ("stripes", "checker", "dots", "rings", "zigzag", "grid", "crosshatch", "waves")
BACKGROUND_PATTERNS = ("flat", "gradient", "blotches")


def _pattern(rng: np.random.Generator, shape: tuple[int, int], unit: float, kind: str) -> np.ndarray:
    """A blend weight map in [0, 1] of one texture kind; ``unit`` is the image side / 128."""
    period = rng.uniform(5.0, 11.0) * unit
    if kind == "flat":
        return np.zeros(shape, np.float32)
    if kind == "blotches":
        return _smooth_noise(rng, shape, max(3, int(max(shape) / (3 * period))))
    u, v = _rotated_coords(rng, shape)
    wave_u, wave_v = np.sin(2 * np.pi * u / period), np.sin(2 * np.pi * v / period)
    patterns = {
        "gradient": lambda: _unit_range(u),
        "stripes": lambda: wave_u > 0,
        "checker": lambda: (np.floor(u / period) + np.floor(v / period)) % 2,
        "dots": lambda: wave_u * wave_v > 0.4,
        "rings": lambda: np.sin(2 * np.pi * np.hypot(u - u.mean(), v - v.mean()) / period) > 0,
        "zigzag": lambda: np.sin(2 * np.pi * (u + 0.5 * period * np.abs(((v / period) % 2) - 1)) / period) > 0,
        "grid": lambda: (np.abs(wave_u) > 0.85) | (np.abs(wave_v) > 0.85),
        "crosshatch": lambda: (np.abs(np.sin(np.pi * (u + v) / period)) > 0.8) | (np.abs(np.sin(np.pi * (u - v) / period)) > 0.8),
        "waves": lambda: np.sin(2 * np.pi * (u + 0.3 * period * np.sin(2 * np.pi * v / (2 * period))) / period) > 0,
    }
    return np.asarray(patterns[kind](), dtype=np.float32)


def _texture(
    rng: np.random.Generator, shape: tuple[int, int], unit: float, *, kind: str | None = None, hue: float | None = None
) -> np.ndarray:
    """An RGB texture (float32, 0..255) blending two colours through a pattern (random background kind by default)."""
    weight = _pattern(rng, shape, unit, kind or BACKGROUND_PATTERNS[int(rng.integers(len(BACKGROUND_PATTERNS)))])
    first, second = _random_colour(rng, hue), _random_colour(rng, hue)
    return np.multiply.outer(weight, second - first) + first


def _blend(image: np.ndarray, alpha: np.ndarray, top: np.ndarray) -> np.ndarray:
    """``image`` with ``top`` composited through ``alpha`` (0..1, HxW), in place."""
    image += alpha[..., None] * (top - image)
    return image


# ----------------------------------------------------------------------------- background


def _background(
    rng: np.random.Generator, size: int, distractors: tuple[int, int] = DISTRACTORS, texture_regions: tuple[int, int] = TEXTURE_REGIONS
) -> np.ndarray:
    """Gradient + band-limited colour noise + textured regions + small distractors (not any class).

    How busy a background is varies per image: the counts of textured regions and distractors
    are drawn per image from their ranges, so some images are clean and others cluttered."""
    unit, shape = size / 128.0, (size, size)
    u, _ = _rotated_coords(rng, shape)
    first = _random_colour(rng)
    image = np.multiply.outer(_unit_range(u), _random_colour(rng) - first) + first
    noise = _smooth_noise(rng, shape, int(rng.integers(3, 9))) - 0.5
    image += np.multiply.outer(noise, (_random_colour(rng) - 128.0) * rng.uniform(0.3, 0.8))
    for _ in range(int(rng.integers(texture_regions[0], texture_regions[1] + 1))):
        region = (_smooth_noise(rng, shape, int(rng.integers(2, 5))) > rng.uniform(0.3, 0.7)).astype(np.float32)
        region = cv2.GaussianBlur(region, (0, 0), unit) * rng.uniform(0.3, 0.8)
        image = _blend(image, region, _texture(rng, shape, unit))
    for _ in range(int(rng.integers(distractors[0], distractors[1] + 1))):
        image = _add_distractor(rng, image)
    return image


def _distractor_alpha(rng: np.random.Generator, size: int) -> np.ndarray:
    """Coverage of a small blob, line or curve: clutter a CAM may fire on but the mask calls background."""
    canvas = np.zeros((size, size), np.uint8)
    kind = rng.integers(3)
    thickness = max(1, int(round(rng.uniform(1.0, 3.0) * size / 128.0)))
    if kind == 0:  # irregular blob, smaller than any object
        extent = int(rng.uniform(0.05, 0.11) * size) + 2
        y, x = rng.integers(0, size - extent, size=2)
        canvas[y:y + extent, x:x + extent] = (_smooth_noise(rng, (extent, extent), 4) > 0.55) * 255
    elif kind == 1:  # straight line
        ends = np.round(rng.uniform(0, size, (2, 2))).astype(np.int32)
        cv2.line(canvas, tuple(map(int, ends[0])), tuple(map(int, ends[1])), 255, thickness, cv2.LINE_AA)
    else:  # wiggly open curve
        steps = rng.normal(0.0, 0.06 * size, (6, 2)).cumsum(axis=0) + rng.uniform(0, size, 2)
        cv2.polylines(canvas, [np.round(steps).astype(np.int32)], False, 255, thickness, cv2.LINE_AA)
    return canvas


def _add_distractor(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Paint one distractor with a random texture, working only inside its bounding box for speed."""
    canvas = _distractor_alpha(rng, image.shape[0])
    x, y, w, h = cv2.boundingRect(canvas)
    if w and h:
        box = (slice(y, y + h), slice(x, x + w))
        alpha = canvas[box].astype(np.float32) / 255.0
        image[box] = _blend(image[box], alpha, _texture(rng, (h, w), image.shape[0] / 128.0))
    return image


# ----------------------------------------------------------------------------- objects


def _ignore_radius(size: int) -> int:
    """Half-width of the 255 boundary band: about 2 px at 128 px, growing with the image like VOC's."""
    return max(1, int(round(size / 128.0)))


def _label_map(size: int, objects: list[PlacedObject]) -> np.ndarray:
    """Hard class map without the ignore band; later objects are on top."""
    labels = np.zeros((size, size), np.uint8)
    for obj in objects:
        labels[obj.alpha >= 128] = obj.label
    return labels


def _with_ignore_band(labels: np.ndarray) -> np.ndarray:
    """Mark pixels within the band radius of a class change as 255, as in VOC masks."""
    kernel = np.ones((2 * _ignore_radius(labels.shape[0]) + 1,) * 2, np.uint8)
    boundary = cv2.dilate(labels, kernel) != cv2.erode(labels, kernel)
    out = labels.copy()
    out[boundary] = IGNORE_INDEX
    return out


def _visible_owner(objects: list[PlacedObject]) -> np.ndarray:
    """Index of the object seen at each pixel (-1: background), so occlusion is per instance."""
    owner = np.full(objects[0].alpha.shape, -1, np.int32)
    for index, obj in enumerate(objects):
        owner[obj.alpha >= 128] = index
    return owner


def _layout_ok(objects: list[PlacedObject]) -> bool:
    """Every object keeps enough visible area, and some pixels outside the ignore band."""
    masked = _with_ignore_band(_label_map(objects[0].alpha.shape[0], objects))
    owner = _visible_owner(objects)
    for index, obj in enumerate(objects):
        full = int((obj.alpha >= 128).sum())
        visible = owner == index
        if full == 0 or visible.sum() < MIN_VISIBLE_FRACTION * full:
            return False
        if not (masked[visible] == obj.label).any():
            return False
    return True


def _object_count(rng: np.random.Generator, num_objects: tuple[int, int]) -> int:
    """min..max objects, each extra object OBJECT_COUNT_RATIO times as likely as one fewer."""
    counts = np.arange(num_objects[0], num_objects[1] + 1)
    weights = OBJECT_COUNT_RATIO ** (counts - counts[0])
    return int(rng.choice(counts, p=weights / weights.sum()))


def _choose_objects(
    rng: np.random.Generator, size: int, num_classes: int, *, scale: tuple[float, float] = OBJECT_SCALE,
    num_objects: tuple[int, int] = NUM_OBJECTS, truncation: float = TRUNCATION,
) -> list[PlacedObject]:
    """Objects of uniformly random classes; an object that would hide too much is redrawn or dropped."""
    wanted = _object_count(rng, num_objects)
    objects: list[PlacedObject] = []
    while not objects:  # the first object only fails on degenerate draws; retry until one fits
        label = int(rng.integers(num_classes)) + 1
        candidate = [PlacedObject(label, _place_shape(rng, SYNTHETIC_CLASSES[label - 1], size, scale=scale, truncation=truncation))]
        if _layout_ok(candidate):
            objects = candidate
    for _ in range(wanted - 1):
        label = int(rng.integers(num_classes)) + 1
        for _attempt in range(20):
            candidate = objects + [PlacedObject(label, _place_shape(rng, SYNTHETIC_CLASSES[label - 1], size, scale=scale, truncation=truncation))]
            if _layout_ok(candidate):
                objects = candidate
                break
    return objects


def _paint_object(
    rng: np.random.Generator, image: np.ndarray, obj: PlacedObject, class_part: tuple[float, float] = CLASS_PART
) -> np.ndarray:
    """Composite the class's texture family (random colours) inside the object's box, redrawn until it contrasts.

    With ``class_part`` below 1, only a share (drawn from the range) of the object wears its class
    texture, one smooth blob of it; the rest wears a plain texture in any colour, as a photographed
    object has distinctive parts (a face, a wheel) and plain ones. The mask still covers it all."""
    inside = obj.alpha >= 128
    surround = (cv2.dilate(inside.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0) & ~inside
    around = image[surround].mean(axis=0) if surround.any() else image.reshape(-1, 3).mean(axis=0)  # a close-up fills the image
    x, y, w, h = cv2.boundingRect(obj.alpha)
    box = (slice(y, y + h), slice(x, x + w))
    unit = image.shape[0] / 128.0
    kind = CLASS_PATTERNS[obj.label - 1]
    hue = _class_hue(obj.label)
    texture = _texture(rng, (h, w), unit, kind=kind, hue=hue)
    for _attempt in range(8):
        if np.linalg.norm(texture[inside[box]].mean(axis=0) - around) >= MIN_COLOUR_CONTRAST:
            break
        texture = _texture(rng, (h, w), unit, kind=kind, hue=hue)
    cover = float(rng.uniform(*class_part)) if class_part[0] < 1.0 else 1.0
    if cover < 1.0:
        field = _smooth_noise(rng, (h, w), int(rng.integers(2, 4)))
        part = (field >= np.quantile(field[inside[box]], 1.0 - cover)).astype(np.float32)
        part = cv2.GaussianBlur(part, (0, 0), unit)
        plain = _texture(rng, (h, w), unit)
        texture = plain + part[..., None] * (texture - plain)
    u, _ = _rotated_coords(rng, (h, w))
    texture *= (1.0 + rng.uniform(0.0, 0.25) * (u / max(h, w) - 0.5))[..., None]  # gentle lighting
    image[box] = _blend(image[box], obj.alpha[box].astype(np.float32) / 255.0, texture)
    return image


# ----------------------------------------------------------------------------- one sample


@dataclass(frozen=True)
class GeneratorOptions:
    """How the images are drawn, beyond their size (see the module constants for each default)."""

    object_scale: tuple[float, float] = OBJECT_SCALE
    num_objects: tuple[int, int] = NUM_OBJECTS
    distractors: tuple[int, int] = DISTRACTORS
    texture_regions: tuple[int, int] = TEXTURE_REGIONS
    class_part: tuple[float, float] = CLASS_PART
    truncation: float = TRUNCATION


def _render_sample(
    seed: int, index: int, size: int, num_classes: int, *, options: GeneratorOptions = GeneratorOptions()
) -> tuple[np.ndarray, np.ndarray, list[PlacedObject]]:
    """The RGB image, the VOC mask and the objects of sample ``index``: a pure function of its arguments."""
    rng = np.random.default_rng([seed, index])
    image = _background(rng, size, options.distractors, options.texture_regions)
    objects = _choose_objects(rng, size, num_classes, scale=options.object_scale, num_objects=options.num_objects, truncation=options.truncation)
    for obj in objects:
        image = _paint_object(rng, image, obj, options.class_part)
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 0.8))  # camera softness
    image += rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(2.0, 6.0)  # sensor noise
    rgb = np.rint(np.clip(image, 0.0, 255.0, out=image), out=image).astype(np.uint8)
    return rgb, _with_ignore_band(_label_map(size, objects)), objects


def _visible_boxes(objects: list[PlacedObject]) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Class name and 1-based inclusive VOC box of each object's visible (unoccluded) pixels."""
    owner = _visible_owner(objects)
    boxes = []
    for index, obj in enumerate(objects):
        ys, xs = np.nonzero(owner == index)
        box = (int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1)
        boxes.append((SYNTHETIC_CLASSES[obj.label - 1], box))
    return boxes


def _annotation_xml(image_id: str, size: int, boxes: list[tuple[str, tuple[int, int, int, int]]]) -> bytes:
    """A VOC 2012 style annotation document."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2012"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "bao-wsss synthetic"
    size_el = ET.SubElement(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(size_el, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "1"
    for name, (xmin, ymin, xmax, ymax) in boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


# ----------------------------------------------------------------------------- public API


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def _check_range(name: str, value: object, minimum: int, maximum: int | None = None) -> tuple[int, int]:
    """An integer [min, max] pair with minimum <= min <= max (<= maximum)."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a [min, max] pair, got {value!r}")
    low = _check_int(f"{name}[0]", value[0], minimum, maximum)
    high = _check_int(f"{name}[1]", value[1], minimum, maximum)
    if high < low:
        raise ValueError(f"{name} must be [min, max] with min <= max, got {list(value)}")
    return low, high


def _check_fraction_range(name: str, value: object, maximum: float = 1.0) -> tuple[float, float]:
    """A [min, max] pair of numbers with 0 < min <= max <= maximum."""
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(
        isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"{name} must be a [min, max] pair of numbers, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not 0.0 < low <= high <= maximum:
        raise ValueError(f"{name} must be [min, max] with 0 < min <= max <= {maximum:g}, got {list(value)}")
    return low, high


def _check_truncation(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 <= value < 0.5:
        raise ValueError(f"truncation must be a number in [0, 0.5), got {value!r}")
    return float(value)


def generate_synthetic_voc(
    root: str | Path,
    *,
    num_train: int,
    num_val: int,
    image_size: int,
    seed: int,
    num_classes: int | None = None,
    object_scale: tuple[float, float] = OBJECT_SCALE,
    num_objects: tuple[int, int] = NUM_OBJECTS,
    distractors: tuple[int, int] = DISTRACTORS,
    texture_regions: tuple[int, int] = TEXTURE_REGIONS,
    class_part: tuple[float, float] = CLASS_PART,
    truncation: float = TRUNCATION,
) -> dict:
    """Write a VOC 2012 layout under ``root`` (train ids first, then val) and return a summary.

    ``num_classes`` keeps the first N of SYNTHETIC_CLASSES (default: all). ``object_scale`` is
    the range of an object's extent (its box's longer side / the image side, uniform),
    ``truncation`` the share of an object's box that may lie outside the image (0: none; objects
    then fit inside whatever ``object_scale`` says), ``num_objects`` the objects per image, ``distractors`` and ``texture_regions`` the per-image
    clutter of the background, ``class_part`` the share of an object wearing its class texture
    (each a [min, max] range). Raises ValueError on bad arguments.
    Files are written in place; the caller is responsible for atomicity.
    """
    num_train = _check_int("num_train", num_train, 1)
    num_val = _check_int("num_val", num_val, 1)
    image_size = _check_int("image_size", image_size, MIN_IMAGE_SIZE)
    seed = _check_int("seed", seed, 0)
    num_classes = _check_int(
        "num_classes", len(SYNTHETIC_CLASSES) if num_classes is None else num_classes, 1, len(SYNTHETIC_CLASSES)
    )
    options = GeneratorOptions(
        object_scale=_check_fraction_range("object_scale", object_scale, MAX_OBJECT_SCALE),
        num_objects=_check_range("num_objects", num_objects, 1),
        distractors=_check_range("distractors", distractors, 0),
        texture_regions=_check_range("texture_regions", texture_regions, 0),
        class_part=_check_fraction_range("class_part", class_part),
        truncation=_check_truncation(truncation),
    )
    root = Path(root)
    dirs = {name: root / name for name in ("JPEGImages", "Annotations", "SegmentationClass")}
    split_dir = root / "ImageSets" / "Segmentation"
    for directory in (*dirs.values(), split_dir):
        directory.mkdir(parents=True, exist_ok=True)

    classes = SYNTHETIC_CLASSES[:num_classes]
    object_counts = dict.fromkeys(classes, 0)
    image_counts = dict.fromkeys(classes, 0)
    foreground = []
    ids = [f"syn_{index:06d}" for index in range(num_train + num_val)]
    for index, image_id in enumerate(ids):
        rgb, mask, objects = _render_sample(seed, index, image_size, num_classes, options=options)
        Image.fromarray(rgb, mode="RGB").save(
            dirs["JPEGImages"] / f"{image_id}.jpg", format="JPEG", quality=JPEG_QUALITY, subsampling=0
        )
        save_mask(dirs["SegmentationClass"] / f"{image_id}.png", mask)
        boxes = _visible_boxes(objects)
        (dirs["Annotations"] / f"{image_id}.xml").write_bytes(_annotation_xml(image_id, image_size, boxes))
        foreground.append(float((_label_map(image_size, objects) > 0).mean()))
        for name, _box in boxes:
            object_counts[name] += 1
        for name in {name for name, _box in boxes}:
            image_counts[name] += 1

    (split_dir / "train.txt").write_text("".join(f"{i}\n" for i in ids[:num_train]))
    (split_dir / "val.txt").write_text("".join(f"{i}\n" for i in ids[num_train:]))
    fractions = np.array(foreground)
    return {
        "classes": list(classes),
        "num_images": len(ids),
        "num_train": num_train,
        "num_val": num_val,
        "num_objects": sum(object_counts.values()),
        "objects_per_class": object_counts,
        "images_per_class": image_counts,
        "foreground_fraction": {  # share of object pixels per image (PASCAL VOC: about 0.22 on average, varying widely)
            "mean": float(fractions.mean()), "std": float(fractions.std()),
            "p10": float(np.percentile(fractions, 10)), "p90": float(np.percentile(fractions, 90)),
        },
    }
