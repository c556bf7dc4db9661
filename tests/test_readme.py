"""The README's library example runs as written; its commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_library_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = [b for b in python_blocks() if "run_pipeline" in b]
    assert blocks, "README shows no run_pipeline example"
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert "customers" in out
    assert (tmp_path / "output" / "processed_customers.json").exists()


def test_ci_runs_the_readme_install_and_test_commands() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -e '.[test]'" in README and "pip install -e '.[test]'" in ci
    assert "python -m pytest" in README and "python -m pytest" in ci
    assert "customer-pipeline run --simulate" in README
