"""What `dvc status` and `dvc exp show` say is true: an edit to the code, to a raw label file or to
a weights file named in params reruns exactly the stages that read it; a hardware setting reruns
nothing; the results open `dvc exp show`. No stage runs: a lock is made with `dvc commit` over
stand-in outputs, so the test takes seconds."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from bao.config import SegConfig

from dataset_fixtures import write_folder
from pipeline_utils import make_repo_copy, run

REPO = Path(__file__).resolve().parents[1]

ALL = {"prepare", "train_cam", "train_bao", "pseudo_label", "train_seg", "evaluate"}
METRICS = {  # what each metrics file holds, key order as the stages write it
    "metrics/pseudo_label.json": {"pseudo_miou_bao": 0.5, "baseline_best_miou": 0.4, "bao_per_class_iou": {"background": 0.9}},
    "metrics/evaluate.json": {"val_miou": 0.3, "pseudo_label_miou": 0.5},
    "metrics/prepare.json": {"num_images": {"train": 8, "val": 2}, "num_classes": 3},
}


def _stand_in_outputs(repo: Path) -> None:
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        paths = [out.def_path for stage in dvc_repo.index.stages for out in stage.outs]
    for path in paths:
        target = repo / path
        if path in METRICS or path.endswith("metrics.json"):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(METRICS.get(path, {"final_loss": 1.0})))
        elif Path(path).suffix:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"stand-in")
        else:
            target.mkdir(parents=True, exist_ok=True)
            (target / "stand-in.txt").write_text("x")


@pytest.fixture(scope="module")
def locked_repo(tmp_path_factory) -> Path:
    """A folder dataset under data/raw, backbone weights from a file, every stage locked."""
    root = tmp_path_factory.mktemp("dvc_deps") / "repo"
    overrides = {"data": {"dataset": "folder", "root": "data/raw/shapes"}, "model": {"checkpoint": "weights/backbone.pth"}}
    repo = make_repo_copy(root, overrides)
    write_folder(repo / "data/raw/shapes", count=4)
    (repo / "weights").mkdir()
    (repo / "weights/backbone.pth").write_bytes(b"weights v1")
    _stand_in_outputs(repo)
    run(["dvc", "commit", "-f", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "locked"], repo)
    assert _changed(repo) == set()
    return repo


def _changed(repo: Path) -> set[str]:
    return set(json.loads(run(["dvc", "status", "--json"], repo).stdout))


@pytest.mark.parametrize("edit, expected", [
    # a library module several stages import: the whole bao/ package is every stage's dependency
    (lambda repo: (repo / "bao/data/palette.py").open("a").write("\n# edited\n"), ALL),
    # one raw label of the folder dataset: every stage reads data.root (the manifest points into it)
    (lambda repo: (repo / "data/raw/shapes/labels.csv").open("a").write("img_000.jpg,cat,train\n"), ALL),
    # the backbone weights file named by model.checkpoint: the two stages that load it
    (lambda repo: (repo / "weights/backbone.pth").write_bytes(b"weights v2"), {"train_cam", "train_bao"}),
    # one stage's script: that stage
    (lambda repo: (repo / "stages/train_seg.py").open("a").write("\n# edited\n"), {"train_seg"}),
    # a results param: the stage that reads it
    (lambda repo: (repo / "params.yaml").write_text((repo / "params.yaml").read_text().replace("eps: 0.4", "eps: 0.3")), {"train_bao"}),
    # which labels DeepLab learns from: DeepLab and the evaluation that scores those labels
    (lambda repo: (repo / "params.yaml").write_text((repo / "params.yaml").read_text().replace("labels: bao", "labels: threshold")),
     {"train_seg", "evaluate"}),
    # the t of the threshold labels: the stage that writes them (beside BAO's), and DeepLab (it lists the key)
    (lambda repo: (repo / "params.yaml").write_text((repo / "params.yaml").read_text().replace("threshold: 0.5", "threshold: 0.4")),
     {"pseudo_label", "train_seg"}),
    # the scale val images are segmented at: the evaluation only, DeepLab is not retrained
    (lambda repo: (repo / "params.yaml").write_text((repo / "params.yaml").read_text().replace("eval_resize: train", "eval_resize: native")),
     {"evaluate"}),
    # a hardware setting: nothing
    (lambda repo: (repo / "runtime.yaml").write_text("loader_workers: 4\ninference_batch_size: 16\ncrf_workers: 0\n"), set()),
], ids=["library module", "raw label file", "weights file", "stage script", "results param", "seg labels", "threshold t", "eval scale", "runtime.yaml"])
def test_dvc_status_names_exactly_the_stages_that_must_rerun(locked_repo, edit, expected):
    untracked = [locked_repo / "data/raw/shapes/labels.csv", locked_repo / "weights/backbone.pth"]  # git-ignored
    saved = {path: path.read_bytes() for path in untracked}
    edit(locked_repo)
    try:
        assert _changed(locked_repo) == expected
    finally:
        run(["git", "checkout", "--", "."], locked_repo)
        (locked_repo / "runtime.yaml").unlink(missing_ok=True)
        for path, content in saved.items():
            path.write_bytes(content)
    assert _changed(locked_repo) == set()


def test_exp_show_opens_with_the_results_and_ends_with_the_counts(locked_repo):
    table = list(csv.reader(io.StringIO(run(["dvc", "exp", "show", "--csv"], locked_repo).stdout)))
    header = table[0]
    metric_columns = header[header.index("Created") + 2:]  # after Experiment, rev, typ, Created, parent
    assert metric_columns[:3] == ["pseudo_miou_bao", "baseline_best_miou", "bao_per_class_iou.background"]
    assert metric_columns.index("val_miou") < metric_columns.index("num_images.train")
    counts = [metric_columns.index(name) for name in ("num_images.train", "num_images.val", "num_classes")]
    losses = [index for index, name in enumerate(metric_columns) if name.endswith("final_loss")]
    assert losses and max(losses) < min(counts)  # dataset counts come after every result and loss
    params = [name for name in header if name.startswith(("runtime", "num_workers")) or "workers" in name or "checkpoint_every" in name]
    assert params == []  # no hardware knob is a param


def test_train_seg_lists_every_key_of_its_section_but_the_evaluation_scale():
    """train_seg names its keys one by one (so eval_resize reruns the evaluation only): a new key
    must be listed, or changing it would not retrain DeepLab."""
    listed = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train_seg"]["params"]
    keys = {entry.split(".", 1)[1] for entry in listed if entry.startswith("train_seg.")}
    assert keys == set(SegConfig.model_fields) - {"eval_resize"}
