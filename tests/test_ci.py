"""CI runs exactly the README's test command, in a virtualenv it builds afresh."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The command lines (not comments) of the README's first fenced code block."""
    block = re.search(r"```[a-z]*\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_ci_runs_the_readme_test_command_in_a_brand_new_venv():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    install, test = readme_commands()
    assert test == "python -m pip install -e '.[test]' && python -m pytest"
    assert test in ci, "the README's test command must be a line of .ci/run, verbatim"
    assert "set -euo pipefail" in ci  # pytest's exit code 5 (no tests collected) fails CI like any other
    venv = next(index for index, line in enumerate(ci) if " -m venv " in line)
    assert "--clear" in ci[venv] and venv < ci.index(test)
    assert any(line.startswith("source ") and "/bin/activate" in line for line in ci[venv:ci.index(test)])
