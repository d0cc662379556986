"""The synthetic demo dataset: deterministic, and in the exact VOC 2012 layout the loader reads."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bao.data.synthetic import NUM_OBJECTS, SYNTHETIC_CLASSES, GeneratorOptions, _render_sample, generate_synthetic_voc

SIZE = 64
NUM_CLASSES = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic")
    summary = generate_synthetic_voc(
        root, num_train=12, num_val=6, image_size=SIZE, seed=3, num_classes=NUM_CLASSES
    )
    return root, summary


def _ids(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def _all_ids(root: Path) -> list[str]:
    return _ids(root, "train") + _ids(root, "val")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    kwargs = dict(num_train=4, num_val=2, image_size=SIZE, seed=11)
    generate_synthetic_voc(tmp_path / "a", **kwargs)
    generate_synthetic_voc(tmp_path / "b", **kwargs)
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(first) == 3 * 6 + 2
    assert first == second


def test_other_seed_gives_other_images(tmp_path: Path) -> None:
    generate_synthetic_voc(tmp_path / "a", num_train=2, num_val=1, image_size=SIZE, seed=0)
    generate_synthetic_voc(tmp_path / "b", num_train=2, num_val=1, image_size=SIZE, seed=1)
    name = "JPEGImages/syn_000000.jpg"
    assert _files(tmp_path / "a")[name] != _files(tmp_path / "b")[name]


def test_splits_list_all_ids_and_are_disjoint(dataset: tuple[Path, dict]) -> None:
    root, summary = dataset
    train, val = _ids(root, "train"), _ids(root, "val")
    assert (len(train), len(val)) == (12, 6)
    assert not set(train) & set(val)
    expected = {p.stem for p in (root / "JPEGImages").glob("*.jpg")}
    assert set(train) | set(val) == expected
    assert all(image_id.startswith("syn_") for image_id in expected)
    assert summary["num_images"] == 18


def test_images_are_rgb_jpegs_of_the_requested_size(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    for image_id in _all_ids(root):
        with Image.open(root / "JPEGImages" / f"{image_id}.jpg") as image:
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            assert image.size == (SIZE, SIZE)


def test_masks_are_palette_pngs_with_class_and_ignore_values(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    allowed = set(range(NUM_CLASSES + 1)) | {255}
    for image_id in _all_ids(root):
        with Image.open(root / "SegmentationClass" / f"{image_id}.png") as image:
            assert image.format == "PNG"
            assert image.mode == "P"
            assert image.size == (SIZE, SIZE)
            mask = np.asarray(image)
        assert set(np.unique(mask).tolist()) <= allowed
        assert (mask == 0).any() and (mask == 255).any()


def _objects(xml_file: Path) -> list[tuple[str, tuple[int, ...]]]:
    root = ET.parse(xml_file).getroot()
    assert root.tag == "annotation"
    assert root.findtext("size/width") == str(SIZE)
    assert root.findtext("size/height") == str(SIZE)
    assert root.findtext("size/depth") == "3"
    out = []
    for obj in root.findall("object"):
        assert obj.findtext("pose") == "Unspecified"
        assert obj.findtext("truncated") == "0"
        assert obj.findtext("difficult") == "0"
        box = tuple(int(obj.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax"))
        out.append((obj.findtext("name"), box))
    return out


def test_xml_objects_match_the_classes_in_the_mask(dataset: tuple[Path, dict]) -> None:
    root, summary = dataset
    total = 0
    for image_id in _all_ids(root):
        objects = _objects(root / "Annotations" / f"{image_id}.xml")
        assert NUM_OBJECTS[0] <= len(objects) <= NUM_OBJECTS[1]
        total += len(objects)
        mask = np.asarray(Image.open(root / "SegmentationClass" / f"{image_id}.png"))
        in_mask = {SYNTHETIC_CLASSES[v - 1] for v in np.unique(mask) if 0 < v < 255}
        assert {name for name, _ in objects} == in_mask
        for name, (xmin, ymin, xmax, ymax) in objects:
            assert 1 <= xmin <= xmax <= SIZE and 1 <= ymin <= ymax <= SIZE
            crop = mask[ymin - 1:ymax, xmin - 1:xmax]  # VOC boxes are 1-based and inclusive
            assert (crop == SYNTHETIC_CLASSES.index(name) + 1).any()
    assert summary["num_objects"] == total
    assert summary["classes"] == list(SYNTHETIC_CLASSES[:NUM_CLASSES])
    assert sum(summary["objects_per_class"].values()) == total


def test_classes_are_shapes_not_too_few() -> None:
    assert len(SYNTHETIC_CLASSES) >= 6
    assert len(set(SYNTHETIC_CLASSES)) == len(SYNTHETIC_CLASSES)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_train": 0}, "num_train must be"),
        ({"num_val": 0}, "num_val must be"),
        ({"image_size": 31}, "image_size must be"),
        ({"seed": -1}, "seed must be"),
        ({"num_classes": 0}, "num_classes must be"),
        ({"num_classes": len(SYNTHETIC_CLASSES) + 1}, "num_classes must be"),
        ({"image_size": 64.0}, "image_size must be an integer, got 64.0"),
        ({"num_train": True}, "num_train must be an integer, got True"),
        ({"object_scale": (0.0, 0.5)}, "object_scale must be [min, max] with 0 < min <= max <= 4"),
        ({"object_scale": (0.6, 0.5)}, "object_scale must be [min, max] with 0 < min <= max <= 4"),
        ({"object_scale": (0.1, 4.5)}, "object_scale must be [min, max] with 0 < min <= max <= 4"),
        ({"truncation": 0.5}, "truncation must be a number in [0, 0.5)"),
        ({"object_scale": 0.5}, "object_scale must be a [min, max] pair of numbers"),
        ({"num_objects": (0, 2)}, "num_objects[0] must be >= 1"),
        ({"num_objects": (3, 2)}, "num_objects must be [min, max] with min <= max"),
        ({"distractors": (-1, 2)}, "distractors[0] must be >= 0"),
        ({"texture_regions": (1,)}, "texture_regions must be a [min, max] pair"),
        ({"class_part": (0.0, 1.0)}, "class_part must be [min, max] with 0 < min <= max <= 1"),
    ],
)
def test_bad_arguments_raise_value_error(tmp_path: Path, overrides: dict, message: str) -> None:
    kwargs = dict(num_train=2, num_val=1, image_size=SIZE, seed=0, num_classes=None) | overrides
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_synthetic_voc(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


OPTIONS = dict(object_scale=(0.1, 0.85), num_objects=(2, 5), distractors=(3, 9), texture_regions=(0, 2), class_part=(0.4, 0.9),
               truncation=0.2)


def test_generator_options_are_deterministic_and_matter(tmp_path: Path) -> None:
    kwargs = dict(num_train=3, num_val=1, image_size=80, seed=5, **OPTIONS)
    generate_synthetic_voc(tmp_path / "a", **kwargs)
    generate_synthetic_voc(tmp_path / "b", **kwargs)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    for option, value in [("object_scale", (0.3, 0.4)), ("num_objects", (1, 1)), ("distractors", (0, 0)), ("texture_regions", (3, 3)),
                          ("class_part", (1.0, 1.0)), ("truncation", 0.0)]:
        generate_synthetic_voc(tmp_path / option, **(kwargs | {option: value}))
        assert _files(tmp_path / option)["JPEGImages/syn_000000.jpg"] != _files(tmp_path / "a")["JPEGImages/syn_000000.jpg"], option


def test_generator_options_keep_the_voc_layout(tmp_path: Path) -> None:
    summary = generate_synthetic_voc(tmp_path, num_train=4, num_val=2, image_size=72, seed=2, num_classes=4, **OPTIONS)
    ids = _all_ids(tmp_path)
    assert len(ids) == 6 and summary["num_images"] == 6
    for image_id in ids:
        assert (tmp_path / "JPEGImages" / f"{image_id}.jpg").is_file()
        mask = np.asarray(Image.open(tmp_path / "SegmentationClass" / f"{image_id}.png"))
        assert mask.shape == (72, 72) and set(np.unique(mask).tolist()) <= set(range(5)) | {255}
        objects = ET.parse(tmp_path / "Annotations" / f"{image_id}.xml").getroot().findall("object")
        assert 1 <= len(objects) <= OPTIONS["num_objects"][1]
    fraction = summary["foreground_fraction"]
    assert 0.0 < fraction["p10"] <= fraction["mean"] <= fraction["p90"] < 1.0


def _extents(size: int, scale: tuple[float, float], samples: int) -> np.ndarray:
    """Each drawn object's extent (longer side of its full, unoccluded box) as a fraction of the side."""
    options = GeneratorOptions(object_scale=scale, num_objects=(1, 3), distractors=(0, 0), texture_regions=(0, 0), truncation=0.0)
    extents = []
    for index in range(samples):
        _, _, objects = _render_sample(7, index, size, 6, options=options)
        for obj in objects:
            ys, xs = np.nonzero(obj.alpha >= 128)
            extents.append(max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) / size)
    return np.array(extents)


@pytest.mark.parametrize("scale", [(0.08, 0.95), (0.3, 0.5), (0.6, 0.6)])
def test_objects_honour_the_scale_range(scale: tuple[float, float]) -> None:
    size = 160
    extents = _extents(size, scale, 30)
    slack = 3.0 / size  # anti-aliased edges and inclusive pixel counts: a pixel or so either side
    assert extents.min() >= scale[0] - slack and extents.max() <= scale[1] + slack
    if scale[1] - scale[0] > 0.5:  # a wide range is used from small to large
        assert extents.min() < scale[0] + 0.1 and extents.max() > scale[1] - 0.2
        assert (extents < 0.25).mean() > 0.2  # log-uniform: small objects are common


def test_objects_fit_however_large_the_scale() -> None:
    extents = _extents(64, (1.0, 1.0), 5)
    assert extents.max() <= 1.0 and extents.min() > 0.8


def test_truncation_lets_close_ups_overhang_the_frame() -> None:
    options = GeneratorOptions(object_scale=(0.6, 1.4), num_objects=(1, 1), distractors=(0, 0), texture_regions=(0, 0), truncation=0.3)
    touching = 0
    for index in range(20):
        _, mask, objects = _render_sample(4, index, 64, 6, options=options)
        inside = objects[0].alpha >= 128
        assert inside.any() and ((mask > 0) & (mask < 255)).any()
        touching += bool(inside[0].any() or inside[-1].any() or inside[:, 0].any() or inside[:, -1].any())
    assert touching >= 10  # most large objects are cut by the frame
    fractions = [(_render_sample(4, i, 64, 6, options=GeneratorOptions())[1] > 0).mean() for i in range(60)]
    assert 0.1 < np.mean(fractions) < 0.4  # the default mix: about a fifth of the pixels are objects


def test_class_part_keeps_the_mask_and_changes_only_the_paint() -> None:
    whole, part = GeneratorOptions(class_part=(1.0, 1.0)), GeneratorOptions(class_part=(0.3, 0.3))
    for index in range(4):
        rgb_whole, mask_whole, _ = _render_sample(1, index, 96, 6, options=whole)
        rgb_part, mask_part, _ = _render_sample(1, index, 96, 6, options=part)
        assert np.array_equal(mask_whole, mask_part)  # same objects, same places: only their paint differs
        objects = (mask_whole > 0) & (mask_whole < 255)
        assert not np.array_equal(rgb_whole[objects], rgb_part[objects])
