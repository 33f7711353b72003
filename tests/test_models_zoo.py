"""Every spec in models/ runs end to end through the CLI entry point (BAYESIRL_FAST=1)."""

from pathlib import Path

import pytest

import bayesirl as birl
from bayesirl.cli import app as cli
from bayesirl.cli.spec import load_spec

MODELS = Path(__file__).resolve().parent.parent / "models"
SPECS = sorted(MODELS.glob("*.toml"))


def test_the_zoo_has_the_documented_specs():
    names = {p.stem for p in SPECS}
    assert {"gridworld", "objectworld", "frozenlake", "random_mdp_svi", "boltzmann",
            "lava"} <= names


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_begins_with_a_comment_and_validates(path):
    text = path.read_text()
    assert text.startswith("# "), f"{path.name} must begin with a comment saying what it shows"
    spec = load_spec(path)
    assert spec.name == path.stem and spec.description


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_runs_through_the_cli(path, tmp_path, monkeypatch, capsys):
    if load_spec(path).environment.name == "gymnasium":
        pytest.importorskip("gymnasium")
    monkeypatch.setenv("BAYESIRL_FAST", "1")
    out = tmp_path / path.stem
    assert cli.main(["run", str(path), "--out", str(out), "--quiet"]) == 0, capsys.readouterr()
    for name in ("posterior.nc", "summary.csv", "reward.png", "policy.png", "report.md"):
        assert (out / name).is_file(), name
    post = birl.RewardPosterior.load(out / "posterior.nc")
    assert post.method == load_spec(path).inference.method
    assert post.reward().shape[0] >= 2
    if post.method in ("nuts", "hmc", "svi"):
        assert (out / "diagnostics.png").is_file()
    if load_spec(path).decisions is not None:
        for name in ("decisions.csv", "decisions.png"):
            assert (out / name).is_file(), name
