"""Bad input: prepare names each problem (file and reason), reports all of them, and writes nothing.

Odd pixel formats that can be converted safely are, with a count; the others are rejected."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from bao.data.datasets import load_image
from bao.data.manifest import read_manifest
from bao.data.palette import save_mask
from bao.data.prepare import prepare_dataset
from bao.data.validate import DatasetError
from dataset_fixtures import (
    HEIGHT, WIDTH, block_mask, data_config, write_coco, write_folder, write_jpeg, write_sbd, write_sbd_mat, write_voc,
)


@pytest.fixture
def folder(tmp_path) -> Path:
    """Four images (img_003 is val) with masks; each test breaks it in one way."""
    return write_folder(tmp_path / "mine", count=4)


def _tree(root: Path) -> dict[str, object]:
    """Every path under ``root`` (symlinks not followed) with its bytes, link target or "dir"."""
    tree = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        tree[key] = os.readlink(path) if path.is_symlink() else "dir" if path.is_dir() else path.read_bytes()
    return tree


def _fails(cfg, tmp_path: Path) -> str:
    """Run prepare expecting DatasetError; nothing under ``tmp_path`` (the dataset, the output's
    directory, any victim file planted beside them) may be created, changed or removed."""
    before = _tree(tmp_path)
    with pytest.raises(DatasetError) as info:
        prepare_dataset(cfg, tmp_path / "out")
    assert _tree(tmp_path) == before, "prepare wrote or changed files although validation failed"
    return str(info.value)


def _set_labels(root: Path, old: str, new: str) -> None:
    path = root / "labels.csv"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_missing_image(folder, tmp_path):
    (folder / "images" / "img_001.jpg").unlink()
    message = _fails(data_config("folder", folder), tmp_path)
    assert f"labels.csv: line 3 names image 'img_001.jpg', but {folder / 'images' / 'img_001.jpg'} does not exist" in message


def test_corrupt_image(folder, tmp_path):
    path = folder / "images" / "img_002.jpg"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated download
    message = _fails(data_config("folder", folder), tmp_path)
    assert f"{path}: unreadable or corrupt image" in message


def test_not_an_image(folder, tmp_path):
    path = folder / "images" / "img_002.jpg"
    path.write_text("<html>404</html>")
    assert f"{path}: unreadable or corrupt image" in _fails(data_config("folder", folder), tmp_path)


def _write_formats(images: Path) -> None:
    """Replace img_000..img_002 and add two images in formats that can be made 8-bit RGB."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(rgb[..., 0]).save(images / "img_000.jpg")  # 8-bit grey JPEG
    Image.fromarray(rgb).convert("CMYK").save(images / "img_001.jpg")  # CMYK JPEG
    Image.fromarray(np.dstack([rgb, np.full((HEIGHT, WIDTH), 255, np.uint8)]), "RGBA").save(images / "img_002.png")
    cv2.imwrite(str(images / "img_004.png"), (rgb.astype(np.uint16) * 257)[..., ::-1])  # 16-bit RGB
    cv2.imwrite(str(images / "img_005.png"), rgb[..., 1].astype(np.uint16) * 256)  # 16-bit grey


def test_grey_cmyk_opaque_rgba_and_16_bit_images_are_converted_with_a_count(folder, tmp_path):
    _write_formats(folder / "images")
    (folder / "images" / "img_002.jpg").unlink()
    _set_labels(folder, "img_002.jpg", "img_002.png")
    with open(folder / "labels.csv", "a") as handle:
        handle.write("img_004.png,cat,train\nimg_005.png,dog,train\n")
    for name in ("img_004", "img_005"):
        save_mask(folder / "masks" / f"{name}.png", np.zeros((HEIGHT, WIDTH), np.uint8))
    summary = prepare_dataset(data_config("folder", folder), tmp_path / "out")
    assert summary["converted_images"] == {"grey": 1, "cmyk": 1, "alpha": 1, "16-bit": 2}
    manifest = read_manifest(tmp_path / "out")
    paths = dict(zip(manifest.table["image_id"], manifest.table["image_path"]))
    assert paths["img_000"] == "converted/img_000.png" and paths["img_003"].endswith("images/img_003.jpg")
    for image_id in ("img_000", "img_001", "img_002", "img_004", "img_005"):
        with Image.open(manifest.resolve(paths[image_id])) as image:
            assert image.mode == "RGB" and image.size == (WIDTH, HEIGHT)
        assert load_image(manifest.resolve(paths[image_id])).shape == (HEIGHT, WIDTH, 3)
    original = np.asarray(Image.open(folder / "images" / "img_002.png").convert("RGB"))
    assert np.array_equal(load_image(manifest.resolve(paths["img_002"])), original)
    assert np.array_equal(load_image(manifest.resolve(paths["img_004"])), original)  # 16-bit x/257 is exact


def test_transparent_image_is_rejected_with_the_reason(folder, tmp_path):
    rgba = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
    rgba[..., 3] = 128
    path = folder / "images" / "img_002.jpg"
    Image.fromarray(rgba, "RGBA").save(path, format="PNG")  # a PNG behind a .jpg name, as users do
    assert f"{path}: image has transparent pixels (mode RGBA)" in _fails(data_config("folder", folder), tmp_path)


def test_16_bit_image_without_high_values_is_rejected(folder, tmp_path):
    path = folder / "images" / "img_002.jpg"
    cv2.imwrite(str(path.with_suffix(".png")), np.full((HEIGHT, WIDTH), 200, np.uint16))
    path.unlink()
    _set_labels(folder, "img_002.jpg", "img_002.png")
    message = _fails(data_config("folder", folder), tmp_path)
    assert f"{path.with_suffix('.png')}: 16-bit image whose values all lie below 256" in message


@pytest.mark.parametrize("height, width", [(8, 10), (HEIGHT, WIDTH + 1), (HEIGHT + 1, WIDTH), (WIDTH, HEIGHT)],
                         ids=["both", "width-only", "height-only", "transposed"])
def test_mask_size_differs_from_image(folder, tmp_path, height, width):
    """Each dimension on its own: a check comparing only the height passed a wrong-width mask."""
    mask = folder / "masks" / "img_001.png"
    save_mask(mask, np.zeros((height, width), np.uint8))
    message = _fails(data_config("folder", folder), tmp_path)
    assert f"{mask}: mask size {width}x{height} differs from its image {WIDTH}x{HEIGHT}" in message


def test_mask_values_outside_classes_and_ignore(folder, tmp_path):
    mask = folder / "masks" / "img_001.png"
    values = np.zeros((HEIGHT, WIDTH), np.uint8)
    values[0, 0], values[1, 1], values[2, 2] = 4, 254, 255
    save_mask(mask, values)
    assert f"{mask}: mask values [4, 254] outside 0..3 and 255" in _fails(data_config("folder", folder), tmp_path)


def test_unknown_class_name(folder, tmp_path):
    _set_labels(folder, "img_001.jpg,dog", "img_001.jpg,dgo")
    assert "labels.csv: line 3: unknown class name 'dgo'" in _fails(data_config("folder", folder), tmp_path)


def test_unknown_class_name_in_voc_xml(tmp_path):
    voc = write_voc(tmp_path / "VOC2012")
    xml = voc / "Annotations" / "2007_000039.xml"
    xml.write_text(xml.read_text().replace("<name>tvmonitor</name>", "<name>television</name>"))
    assert f"{xml}: unknown class name 'television'" in _fails(data_config("voc", voc), tmp_path)


def test_image_with_no_labels(folder, tmp_path):
    _set_labels(folder, "img_002.jpg,bird,", "img_002.jpg,,")
    message = _fails(data_config("folder", folder), tmp_path)
    assert f"{folder / 'images' / 'img_002.jpg'}: image 'img_002' has no class labels" in message


def test_duplicate_ids(folder, tmp_path):
    shutil.copy(folder / "images" / "img_001.jpg", folder / "images" / "img_001.jpeg")
    with open(folder / "labels.csv", "a") as handle:
        handle.write("img_001.jpeg,dog,train\n")
    csv = folder / "labels.csv"
    message = _fails(data_config("folder", folder), tmp_path)
    assert f"image id 'img_001' appears more than once: {csv}: line 3; {csv}: line 6" in message


def test_duplicate_ids_in_voc_lists_name_file_and_line(tmp_path):
    voc = write_voc(tmp_path / "VOC2012")
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "val.txt").write_text("2007_000063\n2007_000032\n2008_000002\n2007_000063\n")  # 032 is also train
    message = _fails(data_config("voc", voc), tmp_path)
    assert f"{lists / 'val.txt'}: line 4: image id '2007_000063' repeats line 1" in message
    assert f"image id '2007_000032' appears more than once: {lists / 'train.txt'}: line 1; {lists / 'val.txt'}: line 2" in message


def test_empty_split(folder, tmp_path):
    _set_labels(folder, "img_003.jpg,cat,val", "img_003.jpg,cat,train")
    assert "split 'val' has no images" in _fails(data_config("folder", folder), tmp_path)


def test_list_file_naming_a_missing_id(tmp_path):
    voc = write_voc(tmp_path / "VOC2012")
    lists = voc / "ImageSets" / "Segmentation" / "val.txt"
    lists.write_text(lists.read_text() + "2011_999999\n")
    message = _fails(data_config("voc", voc), tmp_path)
    assert f"{lists}: line 3: names image '2011_999999', but {voc / 'JPEGImages' / '2011_999999.jpg'} does not exist" in message


def test_empty_list_file_is_named_even_after_another_problem(tmp_path):
    """The problem list is shared by the whole dataset: an earlier file's problem must not hide this one."""
    voc = write_voc(tmp_path / "VOC2012")
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text((lists / "train.txt").read_text() + "../x\n")
    (lists / "val.txt").write_text("\n")
    message = _fails(data_config("voc", voc), tmp_path)
    assert f"{lists / 'train.txt'}: line 3: image id '../x'" in message
    assert f"{lists / 'val.txt'}: split list is empty" in message


def test_missing_list_file(tmp_path):
    voc = write_voc(tmp_path / "VOC2012")
    (voc / "ImageSets" / "Segmentation" / "val.txt").unlink()
    message = _fails(data_config("voc", voc), tmp_path)
    assert f"{voc / 'ImageSets' / 'Segmentation' / 'val.txt'}: split list file not found" in message


def test_train_aug_without_sbd(tmp_path):
    voc = write_voc(tmp_path / "VOC2012")
    assert "split 'train_aug' needs SBD: data.sbd_root (None)" in _fails(data_config("voc", voc, "train_aug"), tmp_path)


def test_sbd_mat_without_gtcls_segmentation(tmp_path):
    voc, sbd = write_voc(tmp_path / "VOC2012"), write_sbd(tmp_path / "sbd")
    from scipy.io import savemat

    savemat(sbd / "cls" / "2008_000003.mat", {"GTinst": {"Segmentation": np.zeros((2, 2), np.uint8)}})
    bad_field = sbd / "cls" / "2008_000007.mat"
    savemat(bad_field, {"GTcls": {"Boundaries": np.zeros((1, 1))}})
    message = _fails(data_config("voc", voc, "train_aug", sbd_root=str(sbd)), tmp_path)
    assert f"{sbd / 'cls' / '2008_000003.mat'}: no variable 'GTcls'" in message
    assert f"{bad_field}: GTcls has no field 'Segmentation'" in message


def test_sbd_mask_size_differs_from_image(tmp_path):
    voc, sbd = write_voc(tmp_path / "VOC2012"), write_sbd(tmp_path / "sbd")
    write_sbd_mat(sbd / "cls" / "2008_000003.mat", np.zeros((5, 5), np.uint8))
    message = _fails(data_config("voc", voc, "train_aug", sbd_root=str(sbd)), tmp_path)
    assert f"{sbd / 'cls' / '2008_000003.mat'}: mask size 5x5 differs from its image {WIDTH}x{HEIGHT}" in message


def _coco_json(coco: Path) -> tuple[Path, dict]:
    path = coco / "annotations" / "instances_train2014.json"
    return path, json.loads(path.read_text())


def _coco_config(coco: Path, tmp_path: Path):
    return data_config("coco", coco, "train2014", "val2014", cache_dir=str(tmp_path / "cache"))


def test_coco_missing_top_level_key(tmp_path):
    coco = write_coco(tmp_path / "coco")
    path, data = _coco_json(coco)
    del data["annotations"]
    path.write_text(json.dumps(data))
    assert f"{path}: missing or non-list key 'annotations'" in _fails(_coco_config(coco, tmp_path), tmp_path)


def test_coco_wrong_or_missing_entry_keys(tmp_path):
    coco = write_coco(tmp_path / "coco")
    path, data = _coco_json(coco)
    del data["annotations"][1]["segmentation"]
    del data["annotations"][2]["segmentation"]
    data["images"][0]["height"] = "16"
    del data["categories"][0]["name"]
    path.write_text(json.dumps(data))
    message = _fails(_coco_config(coco, tmp_path), tmp_path)
    assert f"{path}: annotations[1] is missing key 'segmentation' (and 1 more entries)" in message
    assert f"{path}: images[0] has key 'height' of type str" in message
    assert f"{path}: categories[0] is missing key 'name'" in message


def test_coco_bad_annotation_values(tmp_path):
    coco = write_coco(tmp_path / "coco")
    path, data = _coco_json(coco)
    data["annotations"][0]["category_id"] = 99
    data["annotations"][1]["segmentation"]["size"] = [3, 3]
    data["annotations"][3]["segmentation"] = [[1.0, 2.0, 3.0, 4.0]]
    path.write_text(json.dumps(data))
    message = _fails(_coco_config(coco, tmp_path), tmp_path)
    assert f"{path}: annotations[0] (id 11): unknown category id 99" in message
    assert "annotations[1] (id 12): RLE size [3, 3] differs from the image's [height, width] [16, 20]" in message
    assert "annotations[3] (id 14): each polygon must be a list of at least 3 x,y number pairs" in message
    assert not (tmp_path / "cache").exists()  # nothing rasterised for a rejected dataset


def test_coco_missing_and_invalid_json(tmp_path):
    coco = write_coco(tmp_path / "coco")
    (coco / "annotations" / "instances_val2014.json").unlink()
    path, _ = _coco_json(coco)
    path.write_text("{not json")
    message = _fails(_coco_config(coco, tmp_path), tmp_path)
    assert f"{coco / 'annotations' / 'instances_val2014.json'}: COCO annotation file not found" in message
    assert f"{path}: not valid JSON" in message


@pytest.mark.parametrize("width, height", [(30, 16), (20, 17)], ids=["width-only", "height-only"])
def test_coco_image_size_differs_from_json(tmp_path, width, height):
    coco = write_coco(tmp_path / "coco")
    image = write_jpeg(coco / "train2014" / "COCO_train2014_000000000001.jpg", width, height)
    message = _fails(_coco_config(coco, tmp_path), tmp_path)
    assert f"{image}: image size {width}x{height} differs from its annotation 20x16" in message


def test_every_problem_is_reported_not_only_the_first(folder, tmp_path):
    (folder / "images" / "img_001.jpg").unlink()
    _set_labels(folder, "img_002.jpg,bird,", "img_002.jpg,birb,")
    save_mask(folder / "masks" / "img_000.png", np.full((HEIGHT, WIDTH), 9, np.uint8))
    message = _fails(data_config("folder", folder), tmp_path)
    assert message.startswith("4 problem(s) in the input dataset:")
    assert "img_001.jpg" in message and "'birb'" in message and "mask values [9]" in message
    assert "image 'img_002' has no class labels" in message  # its only label was the unknown one


def test_a_failed_run_leaves_the_previous_output_intact(folder, tmp_path):
    out, summary = tmp_path / "out", tmp_path / "prepare.json"
    returned = prepare_dataset(data_config("folder", folder), out, summary_path=summary)
    assert json.loads(summary.read_text()) == json.loads(json.dumps(returned))  # the stage's metrics file
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    summary_before = summary.read_bytes()
    (folder / "images" / "img_001.jpg").unlink()
    with pytest.raises(DatasetError):
        prepare_dataset(data_config("folder", folder), out, summary_path=summary)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert summary.read_bytes() == summary_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "out", "prepare.json"]


def test_missing_root_and_labels_file(tmp_path):
    assert f"{tmp_path / 'nowhere'}: data.root is not a directory" in _fails(data_config("folder", tmp_path / "nowhere"), tmp_path)
    (tmp_path / "empty").mkdir()
    message = _fails(data_config("folder", tmp_path / "empty"), tmp_path)
    assert f"{tmp_path / 'empty' / 'images'}: image directory not found" in message
    assert f"{tmp_path / 'empty' / 'labels.csv'}: labels file not found" in message


def test_exif_rotated_and_palette_images_get_copies_in_stored_pixel_order(folder, tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone photo
    Image.fromarray(rgb).save(folder / "images" / "img_000.jpg", exif=exif.tobytes(), quality=95)
    Image.fromarray(rgb).convert("P").save(folder / "images" / "img_001.png")
    _set_labels(folder, "img_001.jpg", "img_001.png")
    summary = prepare_dataset(data_config("folder", folder), tmp_path / "out")
    assert summary["converted_images"] == {"exif-rotation": 1, "palette": 1}
    manifest = read_manifest(tmp_path / "out")
    paths = manifest.table.set_index("image_id")["image_path"]
    rotated = load_image(manifest.resolve(paths["img_000"]))
    assert rotated.shape == (HEIGHT, WIDTH, 3)  # not turned: the mask is drawn on the stored pixels
    with Image.open(folder / "images" / "img_000.jpg") as stored:  # PIL's decode ignores EXIF orientation
        assert np.array_equal(rotated, np.asarray(stored.convert("RGB")))
    with Image.open(folder / "images" / "img_001.png") as palette:
        expected = np.asarray(palette.convert("RGB"))
    assert np.array_equal(load_image(manifest.resolve(paths["img_001"])), expected)  # the palette's colours, exactly


# --- hostile input: ids and paths from the dataset, decoders, malformed files -------------------

UNSAFE_IDS = {  # id written into a list file -> the reason prepare gives
    "../../victim": "contains a path separator, so it would leave its folder",
    "/tmp/victim": "contains a path separator, so it would leave its folder",
    "..\\victim": "contains a path separator, so it would leave its folder",
    "..": "is '.' or '..'",
    "bad\x00id": "contains a NUL or other control character",
    "x" * 201: "is longer than 200 bytes",
}


@pytest.mark.parametrize("image_id", list(UNSAFE_IDS), ids=["dotdot", "absolute", "backslash", "parent", "nul", "long"])
def test_unsafe_id_in_a_voc_list_is_a_problem_with_file_and_line(tmp_path, image_id):
    """Before: a line ``../../x/pwn`` made prepare write ``data/x/pwn.png`` and exit 0."""
    voc = write_voc(tmp_path / "VOC2012")
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"not yours to replace")
    lists = voc / "ImageSets" / "Segmentation" / "train.txt"
    lists.write_text(lists.read_text() + image_id + "\n")
    message = _fails(data_config("voc", voc), tmp_path)
    assert f"{lists}: line 3: image id {image_id!r} {UNSAFE_IDS[image_id]}" in message
    assert victim.read_bytes() == b"not yours to replace"


def test_unsafe_id_in_sbd_list_is_refused_before_any_mask_is_written(tmp_path, monkeypatch):
    """Before: SBD masks were converted while reading, so ``../`` in SBD's train.txt overwrote a
    file before validation failed. Now nothing is converted until the dataset has passed."""
    import bao.data.voc

    voc, sbd = write_voc(tmp_path / "VOC2012"), write_sbd(tmp_path / "sbd")
    write_sbd_mat(tmp_path / "victim.mat", block_mask(3, border=False))  # sbd/cls/../../victim.mat
    (tmp_path / "victim.png").write_bytes(b"precious")
    with open(sbd / "train.txt", "a") as handle:
        handle.write("../../victim\n")
    written = []
    monkeypatch.setattr(bao.data.voc, "save_mask", lambda path, mask: written.append(path))
    message = _fails(data_config("voc", voc, "train_aug", sbd_root=str(sbd)), tmp_path)
    assert f"{sbd / 'train.txt'}: line 4: image id '../../victim' contains a path separator" in message
    assert written == [] and (tmp_path / "victim.png").read_bytes() == b"precious"


def test_nothing_is_converted_or_written_when_another_row_fails(folder, tmp_path, monkeypatch):
    """An image that needs an RGB copy (grey) and an SBD-free problem elsewhere: no copy is made."""
    import bao.data.prepare

    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint8)).save(folder / "images" / "img_000.jpg")  # grey: converted
    (folder / "images" / "img_001.jpg").unlink()
    monkeypatch.setattr(bao.data.prepare, "convert_images", lambda *a, **k: pytest.fail("converted before validation passed"))
    assert "img_001.jpg" in _fails(data_config("folder", folder), tmp_path)


@pytest.mark.parametrize("name, reason", [
    ("../outside.jpg", "contains a path separator"),
    ("/etc/outside.jpg", "contains a path separator"),
    ("sub\\img.jpg", "contains a path separator"),
    ("..", "is not a file name"),
    ("", "is not a file name"),
    ("img\x01.jpg", "contains a NUL or other control character"),
])
def test_unsafe_image_name_in_labels_csv(folder, tmp_path, name, reason):
    write_jpeg(tmp_path / "outside.jpg")
    _set_labels(folder, "img_001.jpg,dog", f"{name},dog")
    message = _fails(data_config("folder", folder), tmp_path)
    assert f"{folder / 'labels.csv'}: line 3: image name {name!r} {reason}" in message


def test_symlink_out_of_the_dataset_is_refused_unless_allowed(folder, tmp_path):
    outside = write_jpeg(tmp_path / "elsewhere" / "photo.jpg", seed=7)
    link = folder / "images" / "img_001.jpg"
    link.unlink()
    link.symlink_to(outside)
    mask_link = folder / "masks" / "img_002.png"
    save_mask(tmp_path / "elsewhere" / "mask.png", block_mask(3))
    mask_link.unlink()
    mask_link.symlink_to(tmp_path / "elsewhere" / "mask.png")
    message = _fails(data_config("folder", folder), tmp_path)
    assert f"{link}: resolves to {outside}, outside the dataset" in message and "data.allow_outside_root: true" in message
    assert f"{mask_link}: resolves to {tmp_path / 'elsewhere' / 'mask.png'}, outside the dataset" in message
    prepare_dataset(data_config("folder", folder, allow_outside_root=True), tmp_path / "out")
    assert (tmp_path / "out" / "manifest.parquet").is_file()


def test_symlinked_voc_annotation_out_of_root_is_not_read(tmp_path):
    voc = write_voc(tmp_path / "VOC2012")
    secret = tmp_path / "secret.xml"
    secret.write_text("<annotation><object><name>password123</name></object></annotation>")
    xml = voc / "Annotations" / "2007_000039.xml"
    xml.unlink()
    xml.symlink_to(secret)
    message = _fails(data_config("voc", voc), tmp_path)
    assert f"{xml}: resolves to {secret}, outside the dataset" in message
    assert "password123" not in message  # refused before reading, so nothing of it leaks


def test_symlinked_sbd_mask_out_of_sbd_root_is_not_read(tmp_path, monkeypatch):
    """Labels come from SBD's mask when VOC has no XML: even that read is refused."""
    import bao.data.voc
    import bao.data.validate

    voc, sbd = write_voc(tmp_path / "VOC2012"), write_sbd(tmp_path / "sbd")
    (voc / "Annotations" / "2008_000003.xml").unlink()
    secret = tmp_path / "secret.mat"
    write_sbd_mat(secret, block_mask(5, border=False))
    mat = sbd / "cls" / "2008_000003.mat"
    mat.unlink()
    mat.symlink_to(secret)
    read = []

    def recording(path):
        read.append(Path(path).resolve())
        return real(path)

    real = bao.data.voc.read_sbd_mask
    monkeypatch.setattr(bao.data.voc, "read_sbd_mask", recording)
    monkeypatch.setattr(bao.data.validate, "read_sbd_mask", recording)
    message = _fails(data_config("voc", voc, "train_aug", sbd_root=str(sbd)), tmp_path)
    assert f"{mat}: resolves to {secret}, outside the dataset" in message
    assert secret not in read


def test_unsafe_coco_file_name(tmp_path):
    coco = write_coco(tmp_path / "coco")
    path, data = _coco_json(coco)
    data["images"][0]["file_name"] = "../../evil.jpg"
    path.write_text(json.dumps(data))
    message = _fails(_coco_config(coco, tmp_path), tmp_path)
    assert f"{path}: images[0] file_name '../../evil.jpg' contains a path separator" in message
    assert not (tmp_path / "cache").exists()


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A 60-byte PNG whose header claims ``width`` x ``height`` (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))
    return path


def test_decompression_bombs_are_listed_and_validation_goes_on(folder, tmp_path):
    """A header claiming 50000x50000 (Pillow refuses it outright) and a real image over
    data.max_image_pixels (Pillow only warns, naming no file) are both listed with their file,
    and the other problems are still found."""
    bomb = _png_claiming(folder / "images" / "img_000.png", 50000, 50000)
    _set_labels(folder, "img_000.jpg", "img_000.png")
    large = folder / "images" / "img_002.jpg"
    write_jpeg(large, 40, 20)  # 800 pixels: over the limit of 500 set below, under twice it
    (folder / "images" / "img_001.jpg").unlink()
    message = _fails(data_config("folder", folder, max_image_pixels=500), tmp_path)
    assert f"{bomb}: refused as a possible decompression bomb" in message
    assert f"{large}: image of 40x20 = 800 pixels exceeds data.max_image_pixels (500)" in message
    assert f"{folder / 'images' / 'img_001.jpg'} does not exist" in message
    from PIL import Image as PILImage

    assert PILImage.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's process-wide limit is restored


def test_mask_bomb_is_listed(folder, tmp_path):
    bomb = folder / "masks" / "img_001.png"
    _png_claiming(bomb, 60000, 60000)
    large = folder / "masks" / "img_002.png"
    save_mask(large, np.zeros((HEIGHT, 40), np.uint8))  # 640 pixels: over the limit of 500 set below
    message = _fails(data_config("folder", folder, max_image_pixels=500), tmp_path)
    assert f"{bomb}: refused as a possible decompression bomb" in message
    assert f"{large}: mask of 40x{HEIGHT} = {40 * HEIGHT} pixels exceeds data.max_image_pixels (500)" in message


def test_any_decoder_error_is_a_listed_problem(folder, tmp_path, monkeypatch):
    """A hostile file can make a decoder fail with any exception type, not only OSError."""
    import bao.data.validate

    real = bao.data.validate._conversion

    def exploding(image, path):
        if path.name == "img_001.jpg":
            raise RuntimeError("decoder state corrupted")
        return real(image, path)

    monkeypatch.setattr(bao.data.validate, "_conversion", exploding)
    (folder / "images" / "img_002.jpg").unlink()
    message = _fails(data_config("folder", folder), tmp_path)
    assert f"{folder / 'images' / 'img_001.jpg'}: unreadable or corrupt image (RuntimeError: decoder state corrupted)" in message
    assert "img_002.jpg" in message  # the other problem is still listed


def test_labels_csv_without_labels_column(folder, tmp_path):
    csv = folder / "labels.csv"
    csv.write_text("image,split\nimg_000.jpg,train\nimg_003.jpg,val\n")
    message = _fails(data_config("folder", folder), tmp_path)
    assert f"{csv}: no 'labels' column and no class columns (columns: ['image', 'split'])" in message


@pytest.mark.parametrize("file_name", ["classes.txt", "labels.csv"])
def test_class_and_label_files_that_are_not_utf8(folder, tmp_path, file_name):
    path = folder / file_name
    path.write_bytes(path.read_bytes().replace(b"dog", b"d\xf6g"))  # Latin-1, as old tools save
    message = _fails(data_config("folder", folder), tmp_path)
    assert f"{path}: not UTF-8 text (byte " in message and "save it as UTF-8" in message


def test_voc_list_that_is_not_utf8(tmp_path):
    voc = write_voc(tmp_path / "VOC2012")
    lists = voc / "ImageSets" / "Segmentation" / "val.txt"
    lists.write_bytes(b"2007_000063\n\xff\xfe\n")
    assert f"{lists}: not UTF-8 text (byte 12" in _fails(data_config("voc", voc), tmp_path)


@pytest.mark.parametrize("content, expected", [
    (b"", "cannot parse CSV (no header line)"),
    (b"image,labels,split\nimg_000.jpg,cat,train,extra,fields\n", "cannot parse CSV (the header has 3 fields; line 2 has 5 fields)"),
    (b"image,labels,labels\nimg_000.jpg,cat,dog\n", "cannot parse CSV (column names ['labels'] repeat)"),
    (b'image,labels,split\n"img_000.jpg,cat,train\n', "line 2: cannot parse CSV (unexpected end of data)"),
])
def test_malformed_labels_csv(folder, tmp_path, content, expected):
    csv = folder / "labels.csv"
    csv.write_bytes(content)
    assert f"{csv}: {expected}" in _fails(data_config("folder", folder), tmp_path)


def test_deeply_nested_coco_json(tmp_path):
    coco = write_coco(tmp_path / "coco")
    path, _ = _coco_json(coco)
    path.write_text("[" * 100000 + "]" * 100000)
    assert f"{path}: not valid JSON" in _fails(_coco_config(coco, tmp_path), tmp_path)


def test_more_than_200_problems_are_all_written_to_a_named_file(folder, tmp_path):
    with open(folder / "labels.csv", "a") as handle:
        handle.writelines(f"missing_{index:03d}.jpg,cat,train\n" for index in range(205))
    message = _fails(data_config("folder", folder), tmp_path)
    assert message.startswith("205 problem(s)") and "... and 5 more; all 205 are listed in " in message
    listing = Path(message.rsplit("all 205 are listed in ", 1)[1].strip())
    try:
        lines = listing.read_text().splitlines()
        assert len(lines) == 205 and "missing_204.jpg" in lines[-1]
        assert not listing.is_relative_to(tmp_path)  # a temp file, not in the dataset or the output
    finally:
        listing.unlink()


def test_second_prepare_at_once_is_refused_and_leaves_the_first_runs_staging(folder, tmp_path):
    """Before: each run removed the other's staging directory as a killed run's leftover. The
    first run is another process holding the lock (a bare flock, so it starts in milliseconds)."""
    import subprocess
    import sys

    from bao.io import LockHeldError

    staging = tmp_path / ".out.first-run.tmp"  # what the first run is filling
    staging.mkdir()
    (staging / "manifest.parquet").write_bytes(b"half written")
    hold = "import fcntl, os, sys; fcntl.flock(os.open(sys.argv[1], os.O_RDONLY), fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()"
    first = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "held"
        with pytest.raises(LockHeldError, match=re.escape(f"{tmp_path / 'out'}: another process is writing it")):
            prepare_dataset(data_config("folder", folder), tmp_path / "out")
        assert (staging / "manifest.parquet").read_bytes() == b"half written"
    finally:
        first.communicate("")  # the first run ends; the kernel releases its lock
    prepare_dataset(data_config("folder", folder), tmp_path / "out")
    assert (tmp_path / "out" / "manifest.parquet").is_file()


def test_prepare_outputs_have_umask_permissions(folder, tmp_path):
    old = os.umask(0o022)
    try:
        prepare_dataset(data_config("folder", folder), tmp_path / "out")
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "out" / "manifest.parquet").stat().st_mode & 0o777 == 0o644
