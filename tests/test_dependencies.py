"""Every third-party module imported by our code is a distribution pyproject.toml declares.

A package installed by hand on one machine must not hide a missing install step: this maps each
import in bao/, stages/, benchmarks/ and tests/ to the distribution that provides it and fails
on any that neither ``[project] dependencies`` nor the ``test`` extra names.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("bao", "stages", "benchmarks", "tests")
FIRST_PARTY = {"bao", "stages", "benchmarks", "tests"}


def canonical(name: str) -> str:
    """PEP 503 normalisation: ``PyYAML`` and ``pyyaml``, ``a_b`` and ``a-b`` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions(pyproject: Path) -> set[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = [*project["dependencies"], *project.get("optional-dependencies", {}).get("test", [])]
    return {canonical(re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0)) for requirement in requirements}


def top_level_imports(path: Path) -> set[str]:
    """Absolute imports only: ``from . import x`` is the file's own package."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def local_modules(directory: Path) -> set[str]:
    """Modules a script in ``directory`` imports from beside itself (tests' helpers)."""
    return {path.stem for path in directory.glob("*.py")} | {path.name for path in directory.iterdir() if (path / "__init__.py").is_file()}


def undeclared_imports(repo: Path, declared: set[str], distributions: dict[str, list[str]]) -> list[str]:
    """One line per import that no declared distribution provides, naming the file and module.

    A module that nothing installed provides passes only when it is itself declared (a
    dependency for another Python version, such as tomli on 3.10)."""
    problems = []
    helpers = local_modules(repo / "tests")  # benchmarks reuse tests' helpers via sys.path
    for directory in SOURCE_DIRS:
        for path in sorted((repo / directory).rglob("*.py")):
            ignored = FIRST_PARTY | helpers | local_modules(path.parent) | set(sys.stdlib_module_names)
            for module in sorted(top_level_imports(path) - ignored):
                providers = {canonical(name) for name in distributions.get(module, [])}
                if not providers and canonical(module) in declared:
                    continue
                if not providers:
                    problems.append(f"{path.relative_to(repo)}: imports {module!r}, which no installed distribution provides")
                elif not providers & declared:
                    problems.append(f"{path.relative_to(repo)}: imports {module!r} from {sorted(providers)}, not declared in pyproject.toml")
    return problems


def test_every_third_party_import_is_declared():
    declared = declared_distributions(REPO / "pyproject.toml")
    problems = undeclared_imports(REPO, declared, importlib.metadata.packages_distributions())
    assert not problems, "\n".join(problems)


def test_an_undeclared_import_is_named_with_its_file(tmp_path):
    (tmp_path / "bao").mkdir()
    (tmp_path / "bao" / "crf.py").write_text("import numpy\nimport pydensecrf.densecrf\nfrom . import sibling\nimport json\n")
    for directory in SOURCE_DIRS[1:]:
        (tmp_path / directory).mkdir()
    distributions = {"numpy": ["numpy"], "pydensecrf": ["pydensecrf2"]}
    problems = undeclared_imports(tmp_path, {"numpy"}, distributions)
    assert problems == ["bao/crf.py: imports 'pydensecrf' from ['pydensecrf2'], not declared in pyproject.toml"]


def test_requirement_names_are_normalised(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["PyYAML>=6", "opencv_python.headless"]\n'
                         '[project.optional-dependencies]\ntest = ["tomli>=2; python_version < \'3.11\'"]\n')
    assert declared_distributions(pyproject) == {"pyyaml", "opencv-python-headless", "tomli"}
