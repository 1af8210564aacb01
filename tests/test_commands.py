"""The commands the README, docs/ and `make help` give: they must run as written."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import load_app

REPO = Path(__file__).resolve().parent.parent


def _joined_lines(text: str) -> list[str]:
    """Lines with shell/make ``\\`` continuations joined."""
    return re.sub(r"\\\n\s*", " ", text).splitlines()


def test_make_help_expands_variables():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "$(" not in done.stdout, done.stdout
    assert "faces from runs/faces/" in done.stdout


def test_demo_help_has_the_whole_description(capsys):
    demo = load_app("demo")
    with pytest.raises(SystemExit) as stop:
        demo.main(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert ("list the released models, then run the face door-lock demo and the style demo "
            "on CPU with the models in models/.") in text


def test_jetson_doc_check_command_is_the_makefiles_and_passes(capsys):
    """docs/JETSON.md's `--check` example names the files `make jetson-check` checks."""
    pytest.importorskip("onnx", reason="the check reads graphs with the onnx package")
    from export.jetson.cli import main

    make = _joined_lines((REPO / "Makefile").read_text())
    recipe = make[make.index(next(l for l in make if l.startswith("jetson-check:"))) + 1]
    wanted = [w for w in recipe.split() if w.endswith(".onnx")]
    doc = _joined_lines((REPO / "docs" / "JETSON.md").read_text())
    (line,) = [l for l in doc if l.startswith("python -m export jetson --check models/")]
    given = [w for w in line.split("#")[0].split() if w.endswith(".onnx")]
    assert given == wanted and wanted
    missing = [p for p in given if not (REPO / p).is_file()]
    assert not missing, f"released ONNX graphs absent: {missing}"
    assert main(["--check", *(str(REPO / p) for p in given)]) == 0
    assert f"{len(given)} graph(s) checked: all importable" in capsys.readouterr().out
