"""benchmarks/continuous.py: ``--only`` reruns some envs and keeps the other envs' rows."""

import csv
import importlib.util
import pathlib

import pytest

PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "continuous.py"


@pytest.fixture
def bench(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_continuous", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "CSV", tmp_path / "continuous.csv")
    return module


def _row(env, seed):
    return {"env": env, "n_trajectories": 1, "seed": seed, "method": "nuts",
            "apprentice_return": 1.0, "expert_return": 2.0, "bc_return": 3.0, "seconds": 4.0,
            "min_ess": 5.0}


def test_only_keeps_the_rows_of_the_envs_it_does_not_run(bench):
    bench._write([_row("CartPole-v1", 0), _row("Acrobot-v1", 0), _row("CartPole-v1", 1)])
    kept = bench._kept_rows(["Acrobot-v1"])
    assert [(r["env"], r["seed"]) for r in kept] == [("CartPole-v1", "0"), ("CartPole-v1", "1")]
    bench._write(kept + [_row("Acrobot-v1", 7)])
    with open(bench.CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["env"], r["seed"]) for r in rows] == [
        ("CartPole-v1", "0"), ("CartPole-v1", "1"), ("Acrobot-v1", "7")]
    assert list(rows[0]) == list(bench.COLUMNS)


def test_nothing_is_kept_without_an_earlier_file(bench):
    assert bench._kept_rows(["Acrobot-v1"]) == []


def test_an_unknown_env_is_refused_before_any_work(bench):
    with pytest.raises(SystemExit, match="unknown env.*Foo"):
        bench.main(only=["Foo"])
    assert not bench.CSV.exists()


def test_every_env_has_settings_and_published_figures(bench):
    assert set(bench.SETTINGS) == set(bench.PUBLISHED) == set(bench.EXPERTS)
    for settings in bench.SETTINGS.values():
        assert settings["likelihood"] in ("soft", "boltzmann")
        bench.birl.QValueModel(**settings["model"])  # valid model arguments
