"""How long ``prepare`` takes per 1,000 images, for each dataset format (not a test: run it by hand).

    python tests/bench_prepare.py [--images 200] [--workers 2]

Writes N generated 500x375 JPEGs (smooth random content plus noise, ~30-60 KB like photos) in
each on-disk format (VOC with masks, VOC train_aug with SBD .mat masks, COCO with 3 polygon
instances and a crowd RLE per image, folder with masks), runs ``prepare_dataset`` on each and
prints one JSON line per run: wall and CPU seconds per 1,000 images, and the same for a baseline
timed right after it in this process: merely decoding the images of the prepared manifest (PIL
open + load, the same number of threads), with prepare/decode ratios. COCO is timed twice:
cold (every mask rasterised: each image's annotations differ, val's from train's too) and with
the mask cache warm (``warm_over_cold``); its rows count ``masks_from_cache`` and
``masks_rasterised`` (null for the formats without a mask cache).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bao.data.manifest import read_manifest  # noqa: E402
from bao.data.palette import save_mask  # noqa: E402
from bao.data.prepare import prepare_dataset  # noqa: E402
from dataset_fixtures import block_mask, coco_split, data_config, voc_xml, write_sbd_mat  # noqa: E402

WIDTH, HEIGHT = 500, 375


def photo(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    smooth = cv2.resize(coarse, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    return np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)


def write_photo(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo(seed)).save(path, format="JPEG", quality=90)


def make_voc(root: Path, ids: list[str], with_masks: bool) -> None:
    for index, image_id in enumerate(ids):
        write_photo(root / "JPEGImages" / f"{image_id}.jpg", index)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{image_id}.xml").write_text(voc_xml(image_id, [{"name": "dog"}, {"name": "person"}], WIDTH, HEIGHT))
        if with_masks or index % 10 < 2:  # train_aug: VOC masks for a few, SBD for the rest
            (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
            save_mask(root / "SegmentationClass" / f"{image_id}.png", block_mask(1 + index % 20, WIDTH, HEIGHT))
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    split = int(len(ids) * 0.8)
    (lists / "train.txt").write_text("\n".join(ids[:split]) + "\n")
    (lists / "val.txt").write_text("\n".join(ids[split:]) + "\n")


def make_sbd(root: Path, ids: list[str]) -> None:
    for index, image_id in enumerate(ids):
        write_sbd_mat(root / "cls" / f"{image_id}.mat", block_mask(1 + index % 20, WIDTH, HEIGHT, border=False))
    half = len(ids) // 2
    (root / "train.txt").write_text("\n".join(ids[:half]) + "\n")
    (root / "val.txt").write_text("\n".join(ids[half:]) + "\n")


def make_coco(root: Path, count: int) -> None:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    n_train = count - count // 5
    # index counts on across the splits: every image its own annotations (val's differ from train's
    # too), so on a cold cache nothing is served from the content-keyed mask cache
    for split, first, n, offset in (("train2014", 1, n_train, 0), ("val2014", 10**6, count // 5, n_train)):
        template = coco_split(split, 0)  # its categories and an annotation of each kind
        images, annotations = [], []
        for i in range(n):
            image_id, index = first + i, offset + i
            name = f"COCO_{split}_{image_id:012d}.jpg"
            write_photo(root / split / name, image_id)
            images.append({"id": image_id, "file_name": name, "height": HEIGHT, "width": WIDTH})
            shift = index % 37  # with the crowd's start (index % 300), unique for 11,100 images
            for k, (x, y) in enumerate(((40 + shift, 30), (200, 100 + shift), (320 - shift, 200))):
                poly = [x, y, x + 150, y + 10, x + 140, y + 140, x + 10, y + 120, x - 5, y + 60]
                annotations.append({"id": 10 * image_id + k, "image_id": image_id, "category_id": (1, 3, 18)[k],
                                    "iscrowd": 0, "segmentation": [[float(v) for v in poly]]})
            crowd = np.zeros((HEIGHT, WIDTH), np.uint8)
            crowd[300:370, 10 + index % 300:490] = 1
            from pycocotools import mask as mask_utils
            rle = mask_utils.encode(np.asfortranarray(crowd))
            annotations.append({"id": 10 * image_id + 9, "image_id": image_id, "category_id": 1, "iscrowd": 1,
                                "segmentation": {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode()}})
        data = {"images": images, "annotations": annotations, "categories": template["categories"]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


def make_folder(root: Path, count: int) -> None:
    lines = ["image,labels,split"]
    for index in range(count):
        write_photo(root / "images" / f"img_{index:05d}.jpg", index)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        save_mask(root / "masks" / f"img_{index:05d}.png", block_mask(1 + index % 3, WIDTH, HEIGHT))
        lines.append(f"img_{index:05d}.jpg,{('cat', 'dog', 'bird')[index % 3]},{'val' if index % 5 == 0 else 'train'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("cat\ndog\nbird\n")


def decode_seconds(paths: list[Path], workers: int) -> tuple[float, float]:
    """Wall and CPU seconds to merely decode ``paths`` in ``workers`` threads: the baseline."""

    def decode(path: Path) -> None:
        with Image.open(path) as image:
            image.load()

    wall, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in pool.map(decode, paths):
            pass
    return time.perf_counter() - wall, time.process_time() - cpu


def timed(name: str, cfg, out: Path, workers: int) -> dict:
    """Prepare ``cfg`` once, then decode its manifest's images as the baseline; print the row."""
    wall, cpu = time.perf_counter(), time.process_time()
    summary = prepare_dataset(cfg, out, workers=workers)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    manifest = read_manifest(out)
    paths = [manifest.resolve(stored) for stored in manifest.table["image_path"]]
    decode_wall, decode_cpu = decode_seconds(paths, workers)
    shutil.rmtree(out)
    count = sum(summary["num_images"].values())
    assert count == len(paths), (count, len(paths))
    source = summary["source"]
    cached = "masks_rasterised" in source or "masks_from_cache" in source
    row = {
        "dataset": name, "images": count,
        "wall_s_per_1000": round(wall * 1000 / count, 2), "cpu_s_per_1000": round(cpu * 1000 / count, 2),
        "decode_wall_s_per_1000": round(decode_wall * 1000 / count, 2), "decode_cpu_s_per_1000": round(decode_cpu * 1000 / count, 2),
        "prepare_over_decode_wall": round(wall / decode_wall, 2), "prepare_over_decode_cpu": round(cpu / decode_cpu, 2),
        "masks_from_cache": source.get("masks_from_cache", 0) if cached else None,
        "masks_rasterised": source.get("masks_rasterised", 0) if cached else None,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "_wall_s": wall, "_cpu_s": cpu,
    }
    return row


def show(row: dict) -> None:
    print(json.dumps({key: value for key, value in row.items() if not key.startswith("_")}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    n, work = args.images, Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        ids = [f"2008_{i:06d}" for i in range(n)]
        make_voc(work / "voc", ids, with_masks=True)
        show(timed("voc", data_config("voc", work / "voc"), work / "out", args.workers))
        make_voc(work / "voc_aug", ids, with_masks=False)
        make_sbd(work / "sbd", ids)
        show(timed("voc train_aug (SBD .mat masks)", data_config("voc", work / "voc_aug", "train_aug", sbd_root=str(work / "sbd")), work / "out", args.workers))
        make_coco(work / "coco", n)
        coco = data_config("coco", work / "coco", "train2014", "val2014", cache_dir=str(work / "cache"))
        cold = timed("coco (cold cache)", coco, work / "out", args.workers)
        show(cold)
        warm = timed("coco (warm cache)", coco, work / "out", args.workers)
        warm["warm_over_cold_wall"] = round(warm["_wall_s"] / cold["_wall_s"], 3)
        warm["warm_over_cold_cpu"] = round(warm["_cpu_s"] / cold["_cpu_s"], 3)
        show(warm)
        make_folder(work / "folder", n)
        show(timed("folder", data_config("folder", work / "folder"), work / "out", args.workers))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
