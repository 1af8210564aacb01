"""scripts/headline.py: the docs' numbers, rounded once from the committed reports of run 18."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_app

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data" / "faces"
RUN18 = "runs/faces/export18/face_encoder_int8.onnx"


@pytest.fixture(scope="module")
def headline():
    return load_app("headline", "scripts")


def test_rounds_once_from_the_raw_value(headline):
    # TAR 0.224492: the report's "22.45" rounded again gives 22.5; once, 22.4
    assert headline.pct(0.22449240199208276) == "22.4"
    assert headline.pct(None) == "–"


def test_run18_headlines(headline, capsys):
    rc = headline.main([str(DATA / "eval18.json"), "--model", RUN18,
                        "--enroll3", str(DATA / "eval18_enroll3.json"),
                        "--release", str(DATA / "release18.json")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "every-pair TAR at FAR 1e-2 / 1e-3 / 1e-4 / 1e-5: 49.8 / 22.4 / 9.3 / 5.2 %" in out
    assert "held-out pairs: 10-fold 87.9 ± 4.4 %, AUC 0.946" in out
    assert "far_1e-4 (τ 0.795): att-orl accepted 88.5 %, unknown in 0.0 %; yale accepted 64.2 %" in out
    assert "far_1e-3 (τ 1.023): att-orl accepted 96.3 %, unknown in 16.0 %" in out
    assert "far_1e-4 (τ 0.795): att-orl accepted 97.1 %, unknown in 0.0 %; yale accepted 92.0 %" in out
    assert "face_encoder_int8.onnx: τ 1.642, every-pair accuracy -0.08, TAR at FAR 0.001 -0.20 points" in out


def test_unknown_model_lists_the_report(headline, capsys):
    rc = headline.main([str(DATA / "eval18.json"), "--model", "nope.onnx"])
    assert rc == 2
    assert RUN18 in capsys.readouterr().err


def test_enroll3_report_of_two_same_named_files(headline, capsys):
    # session 18 evaluated run 21's and the run 20+21 soup's face_encoder_int8.onnx with three
    # photos in one report: each is quoted with its own numbers, not both
    soup = "runs/faces/export_soup2021/face_encoder_int8.onnx"
    rc = headline.main([str(DATA / "eval21.json"), "--model", soup,
                        "--enroll3", str(DATA / "eval21_enroll3.json")])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("three photos per person") == 1
    assert f"# {soup}, three photos per person" in out
    assert "far_1e-4 (τ 0.798): att-orl accepted 96.7 %" in out
    assert "far_1e-4 (τ 0.793): att-orl accepted 96.2 %" not in out
