"""Functions take at most four positional parameters; the rest are keyword-only.

A signature that changes then fails loudly at every call site instead of shifting arguments into
the wrong slots (``amp`` once landed in ``train_loop``'s checkpoint slot that way).
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_POSITIONAL = 4


def too_many_positional(path: Path, root: Path = REPO) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            positional = [arg.arg for arg in node.args.posonlyargs + node.args.args if arg.arg not in ("self", "cls")]
            if len(positional) > MAX_POSITIONAL:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name}({', '.join(positional)})")
    return found


def test_at_most_four_positional_parameters():
    paths = [path for directory in ("bao", "stages", "benchmarks") for path in sorted((REPO / directory).rglob("*.py"))]
    paths += [path for path in sorted((REPO / "tests").glob("*.py")) if not path.name.startswith("test_")]  # test helpers
    offenders = [line for path in paths for line in too_many_positional(path)]
    assert not offenders, "make the parameters past the fourth keyword-only:\n" + "\n".join(offenders)


def test_the_check_sees_methods_and_keyword_only_markers(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("class A:\n    def f(self, a, b, c, d, e): ...\n    def g(self, a, b, c, d, *, e): ...\n")
    assert too_many_positional(module, tmp_path) == ["module.py:2 f(a, b, c, d, e)"]
