"""Bad input: prepare names each problem (file and reason), reports all of them, and writes nothing.

Odd pixel formats that can be converted safely are, with a count; the others are rejected."""

from __future__ import annotations

import json
import shutil
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
from dataset_fixtures import HEIGHT, WIDTH, data_config, write_coco, write_folder, write_sbd, write_sbd_mat, write_voc


@pytest.fixture
def folder(tmp_path) -> Path:
    """Four images (img_003 is val) with masks; each test breaks it in one way."""
    return write_folder(tmp_path / "mine", count=4)


def _fails(cfg, tmp_path: Path) -> str:
    """Run prepare expecting DatasetError; nothing may appear in the output's directory."""
    before = set(tmp_path.iterdir())
    with pytest.raises(DatasetError) as info:
        prepare_dataset(cfg, tmp_path / "out")
    assert set(tmp_path.iterdir()) == before, "prepare left output behind"
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


def test_mask_size_differs_from_image(folder, tmp_path):
    mask = folder / "masks" / "img_001.png"
    save_mask(mask, np.zeros((8, 10), np.uint8))
    message = _fails(data_config("folder", folder), tmp_path)
    assert f"{mask}: mask size 10x8 differs from its image {WIDTH}x{HEIGHT}" in message


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
    assert "image id 'img_001' appears more than once" in _fails(data_config("folder", folder), tmp_path)


def test_empty_split(folder, tmp_path):
    _set_labels(folder, "img_003.jpg,cat,val", "img_003.jpg,cat,train")
    assert "split 'val' has no images" in _fails(data_config("folder", folder), tmp_path)


def test_list_file_naming_a_missing_id(tmp_path):
    voc = write_voc(tmp_path / "VOC2012")
    lists = voc / "ImageSets" / "Segmentation" / "val.txt"
    lists.write_text(lists.read_text() + "2011_999999\n")
    message = _fails(data_config("voc", voc), tmp_path)
    assert f"{lists}: names image '2011_999999', but {voc / 'JPEGImages' / '2011_999999.jpg'} does not exist" in message


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
    assert f"sbd_masks/2008_000003.png: mask size 5x5 differs from its image {WIDTH}x{HEIGHT}" in message


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


def test_coco_image_size_differs_from_json(tmp_path):
    coco = write_coco(tmp_path / "coco")
    from dataset_fixtures import write_jpeg

    image = write_jpeg(coco / "train2014" / "COCO_train2014_000000000001.jpg", 30, 16)
    assert f"{image}: image size 30x16 differs from its annotation 20x16" in _fails(_coco_config(coco, tmp_path), tmp_path)


def test_every_problem_is_reported_not_only_the_first(folder, tmp_path):
    (folder / "images" / "img_001.jpg").unlink()
    _set_labels(folder, "img_002.jpg,bird,", "img_002.jpg,birb,")
    save_mask(folder / "masks" / "img_000.png", np.full((HEIGHT, WIDTH), 9, np.uint8))
    message = _fails(data_config("folder", folder), tmp_path)
    assert message.startswith("4 problem(s) in the input dataset:")
    assert "img_001.jpg" in message and "'birb'" in message and "mask values [9]" in message
    assert "image 'img_002' has no class labels" in message  # its only label was the unknown one


def test_a_failed_run_leaves_the_previous_output_intact(folder, tmp_path):
    out = tmp_path / "out"
    prepare_dataset(data_config("folder", folder), out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (folder / "images" / "img_001.jpg").unlink()
    with pytest.raises(DatasetError):
        prepare_dataset(data_config("folder", folder), out)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "out"]


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
    rotated = load_image(manifest.resolve(manifest.table.loc[0, "image_path"]))
    assert rotated.shape == (HEIGHT, WIDTH, 3)  # not turned: the mask is drawn on the stored pixels
