"""Apply a preset (a partial params file) to params.yaml: ``python -m bao.presets PRESET [--set KEY=VALUE ...]``.

A preset names only the keys it changes; nested keys override and everything else in params.yaml
stays, comments included (ruamel.yaml's round trip), so ``git diff params.yaml`` shows exactly
what the preset did and ``dvc repro`` reruns exactly the stages it affects. Every key must
already exist in params.yaml (a typo is an error, not a silent new key), and the merged result
is validated as params before params.yaml is replaced (atomically).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from bao.config import PARAMS_FILE, Params, ParamsError, _validate
from bao.io import atomic_path


def _round_trip() -> YAML:
    loader = YAML()
    loader.preserve_quotes = True
    loader.width = 4096  # never re-wrap a long comment or list
    loader.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return loader


def _flow(value):
    """Lists as params.yaml writes them: ``[256, 384, 512]`` on one line."""
    if isinstance(value, list):
        seq = CommentedSeq(value)
        seq.fa.set_flow_style()
        return seq
    return value


def merge_into(base: CommentedMap, preset: dict, source: str, prefix: str = "") -> None:
    """Override ``base`` in place with ``preset``'s values, recursing into mappings."""
    for key, value in preset.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise ParamsError(f"{source}: {dotted} is not a key of {PARAMS_FILE}")
        if isinstance(value, dict):
            if not isinstance(base[key], dict):
                raise ParamsError(f"{source}: {dotted} is a value in {PARAMS_FILE}, the preset gives a mapping")
            merge_into(base[key], value, source, f"{dotted}.")
        elif isinstance(base[key], dict):
            raise ParamsError(f"{source}: {dotted} is a section in {PARAMS_FILE}, the preset gives {value!r}")
        else:
            base[key] = _flow(value)


def overrides_from_set(assignments: list[str]) -> dict:
    """``["data.root=/x", "seed=3"]`` -> ``{"data": {"root": "/x"}, "seed": 3}`` (values parsed as YAML)."""
    nested: dict = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key:
            raise ParamsError(f"--set {assignment!r}: expected KEY=VALUE, e.g. data.root=/data/VOC2012")
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(text)
    return nested


def read_preset(path: str | Path) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: preset not found") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict) or not raw:
        raise ParamsError(f"{path}: a preset is a non-empty mapping of params keys")
    return raw


def apply_preset(preset: str | Path, *, params_file: str | Path = PARAMS_FILE, assignments: list[str] = ()) -> Params:
    """Merge ``preset`` then the ``KEY=VALUE`` assignments over ``params_file``, validate, write."""
    params_file = Path(params_file)
    loader = _round_trip()
    try:
        merged = loader.load(params_file.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{params_file}: file not found") from None
    merge_into(merged, read_preset(preset), str(preset))
    merge_into(merged, overrides_from_set(list(assignments)), "--set")
    text = io.StringIO()
    loader.dump(merged, text)
    params = _validate(Params, yaml.safe_load(text.getvalue()), f"{params_file} with {preset}")
    with atomic_path(params_file) as temp:
        temp.write_text(text.getvalue())
    return params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", help="partial params file, e.g. presets/real-photos.yaml")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="one more override after the preset, e.g. data.root=/data/VOC2012 (repeatable)")
    parser.add_argument("--params", default=PARAMS_FILE, help="the params file to update (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        apply_preset(args.preset, params_file=args.params, assignments=args.assignments)
    except ParamsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.params}: {args.preset} applied{''.join(f', {a}' for a in args.assignments)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
