"""The docs stay true: every `-S key=value` names a key of params.yaml, every `python -m module`
imports, every relative link (and its #anchor) points at something that exists; and the plots page
that `dvc plots show` writes draws offline (vega, vega-lite and vega-embed inside, no CDN)."""

from __future__ import annotations

import configparser
import hashlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TEMPLATE = REPO / "vendor" / "vega" / "template.html"

SET_PARAM = re.compile(r"""(?:-S|--set-param)\s+(['"]?)([A-Za-z_][\w.-]*)=""")
PYTHON_M = re.compile(r"\bpython3?\s+-m\s+([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def set_param_keys(text: str) -> list[str]:
    """The dotted keys of every `-S key=value` / `-S 'key=value'` in the text."""
    return [match.group(2) for match in SET_PARAM.finditer(text)]


def has_key(params: dict, dotted: str) -> bool:
    node = params
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def python_modules(text: str) -> list[str]:
    return [match.group(1) for match in PYTHON_M.finditer(text)]


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces -> '-'."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    return {anchor(heading) for heading in HEADING.findall(FENCE.sub("", markdown))}


def broken_links(page: Path, text: str | None = None) -> list[str]:
    """Relative links of a markdown page whose file, or whose #anchor in a markdown file, is missing."""
    text = page.read_text() if text is None else text
    broken = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file.read_text() if path else text):
            broken.append(f"{target}: no heading #{fragment}")
    return broken


# --- the checkers fail on bad input --------------------------------------------------------------

def test_checkers_catch_a_bad_snippet(tmp_path):
    snippet = """Run `dvc exp run -S bao.lr=1e-4 -S 'seed=range(0,5)' -S bao.no_such_key=3` and
`python -m bao.seeds` then `python -m bao.no_such_module`. See [ok](other.md#a-b-c),
[gone](missing.md), [bad anchor](other.md#nowhere), [web](https://dvc.org) and [here](#top-heading).

# Top heading
"""
    assert set_param_keys(snippet) == ["bao.lr", "seed", "bao.no_such_key"]
    params = {"seed": 0, "bao": {"lr": 1e-3}, "scales": [64, 96]}
    assert [has_key(params, key) for key in ["bao.lr", "seed", "bao.no_such_key", "scales.1", "scales.2"]] == \
        [True, True, False, True, False]
    assert python_modules(snippet) == ["bao.seeds", "bao.no_such_module"]
    assert importlib.util.find_spec("bao.no_such_module") is None
    (tmp_path / "other.md").write_text("# A, `b` c\n")
    page = tmp_path / "page.md"
    page.write_text(snippet)
    assert broken_links(page) == ["missing.md: no such file", "other.md#nowhere: no heading #nowhere"]
    assert anchor("Alignment: every map drawn where the `network` saw it") == \
        "alignment-every-map-drawn-where-the-network-saw-it"


# --- the real pages ------------------------------------------------------------------------------

def test_every_page_opens_with_a_title_and_what_it_is_for():
    for page in PAGES[1:]:
        lines = page.read_text().splitlines()
        assert lines[0].startswith("# ") and lines[1] == "" and lines[2].startswith("For "), page.name


def test_readme_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 150


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_set_params_exist_in_params_yaml(page):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    missing = [key for key in set_param_keys(page.read_text()) if not has_key(params, key)]
    assert not missing, f"{page.name}: -S keys not in params.yaml: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_python_m_modules_import(page):
    # looked up in a child process: finding `pip` switches setuptools' distutils shim for the whole
    # process, which later breaks torch.compile's C++ build in this one
    names = sorted(set(python_modules(page.read_text())))
    probe = "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
    missing = subprocess.run([sys.executable, "-c", probe, *names], capture_output=True, text=True, check=True, cwd=REPO).stdout.split()
    assert not missing, f"{page.name}: `python -m` modules that do not import: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_exist(page):
    assert not broken_links(page), f"{page.name}: {broken_links(page)}"


# --- offline plots -------------------------------------------------------------------------------

SUMS = dict(reversed(line.split()) for line in (TEMPLATE.parent / "SHA256SUMS").read_text().splitlines())
REMOTE_SCRIPT = re.compile(r"""<script[^>]*\bsrc\s*=\s*["']?(?:https?:)?//""", re.I)
INLINE_SCRIPT = re.compile(r"<script>/\* (\S+) \(https://registry.npmjs.org\) \*/\n(.*?)\n    </script>", re.S)


def inlined_libraries(html: str) -> dict[str, str]:
    """{name@version: sha256} of the libraries inlined in a page."""
    return {name: hashlib.sha256(code.encode()).hexdigest() for name, code in INLINE_SCRIPT.findall(html)}


def test_dvc_config_uses_the_offline_template():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    assert (REPO / ".dvc" / config["plots"]["html_template"]).resolve() == TEMPLATE
    for licence in ("LICENSE-vega", "LICENSE-vega-lite", "LICENSE-vega-embed"):
        assert "Redistribution and use" in (TEMPLATE.parent / licence).read_text()


def test_template_carries_the_libraries_and_loads_nothing_remote():
    html = TEMPLATE.read_text()
    assert "{plot_divs}" in html and "{scripts}" not in html  # {scripts} would bring DVC's CDN tags back
    assert not REMOTE_SCRIPT.search(html) and "sourceMappingURL" not in html
    assert sorted(SUMS) == ["vega-embed@6.29.0", "vega-lite@5.23.0", "vega@5.33.1"]
    assert inlined_libraries(html) == SUMS
    # the checks can fail: a CDN tag, and a library altered on its way into the page
    assert REMOTE_SCRIPT.search('<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>')
    assert inlined_libraries(html.replace("{", "{{")) != SUMS


def test_dvc_plots_show_writes_an_offline_page(tmp_path):
    """The page plain `dvc plots show` writes from the committed plot data: libraries inline and
    unchanged (byte for byte), no CDN, every declared plot present."""
    result = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    html = (tmp_path / "out" / "index.html").read_text()
    assert not REMOTE_SCRIPT.search(html)
    assert inlined_libraries(html) == SUMS
    for plot in ("threshold_sweep", "per_image_best_t", "per_class_iou", "train_cam", "train_bao", "train_seg"):
        assert plot in html, plot
