"""benchmarks/continuous.py: ``--only`` / ``--methods`` rerun some envs and methods and keep the
other rows; the settings, alternatives and rows."""

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
            "min_ess": 5.0, "test_episodes": 20}


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


def test_methods_keeps_the_rows_of_the_methods_it_does_not_run(bench):
    rows = [_row("CartPole-v1", 0), _row("LunarLander-v3", 0), _row("LunarLander-v3", 1)]
    rows[2]["method"] = "map-mlp32"
    bench._write(rows)
    kept = bench._kept_rows(["CartPole-v1", "LunarLander-v3"], ["nuts"])
    assert [(r["env"], r["method"]) for r in kept] == [("LunarLander-v3", "map-mlp32")]
    kept = bench._kept_rows(["CartPole-v1"], ["nuts"])
    assert [(r["env"], r["method"]) for r in kept] == [("LunarLander-v3", "nuts"),
                                                        ("LunarLander-v3", "map-mlp32")]


def test_ns_keeps_the_rows_of_the_other_numbers_of_trajectories(bench):
    rows = [_row("LunarLander-v3", 0), _row("LunarLander-v3", 0), _row("LunarLander-v3", 0)]
    rows[1]["n_trajectories"], rows[2]["n_trajectories"] = 7, 7
    rows[2]["method"] = "map-mlp32"
    bench._write(rows)
    kept = bench._kept_rows(["LunarLander-v3"], ["nuts"], ns=[7])
    assert [(r["n_trajectories"], r["method"]) for r in kept] == [("1", "nuts"),
                                                                   ("7", "map-mlp32")]
    kept = bench._kept_rows(["LunarLander-v3"], None, ns=[7])
    assert [(r["n_trajectories"], r["method"]) for r in kept] == [("1", "nuts")]


def test_ns_runs_only_those_numbers_and_refuses_others(bench, monkeypatch):
    import numpy as np

    bench._write([_row("CartPole-v1", 0)])
    calls = []

    def fake_run(env_id, n, seed, draws, n_test, expert, method="nuts"):
        calls.append(n)
        return {**_row(env_id, seed), "n_trajectories": n}, None

    monkeypatch.setattr(bench, "run", fake_run)
    monkeypatch.setattr(bench, "evaluate", lambda *a, **k: np.array([1.0]))
    bench.main(only=["CartPole-v1"], ns=[10])
    assert set(calls) == {10}
    with open(bench.CSV, newline="") as f:
        assert [(r["n_trajectories"]) for r in csv.DictReader(f)] == ["1"] + ["10"] * 5
    with pytest.raises(SystemExit, match="unknown number of trajectories.*4"):
        bench.main(only=["CartPole-v1"], ns=[4, 7])


def test_an_unknown_method_is_refused_before_any_work(bench):
    with pytest.raises(SystemExit, match="unknown method.*'bar'"):
        bench.main(only=["CartPole-v1"], methods=["nuts", "bar"])
    assert not bench.CSV.exists()


def test_quick_mode_writes_its_own_file_and_leaves_the_full_one(bench, monkeypatch):
    import numpy as np

    bench._write([_row("CartPole-v1", 0), _row("Acrobot-v1", 0)])
    before = bench.CSV.read_text()
    calls = []

    def fake_run(env_id, n, seed, draws, n_test, expert, method="nuts"):
        calls.append((env_id, n, seed, draws, n_test, method))
        return {**_row(env_id, seed), "n_trajectories": n}, None

    monkeypatch.setattr(bench, "run", fake_run)
    monkeypatch.setattr(bench, "evaluate", lambda *a, **k: np.array([1.0]))
    bench.main(quick=True, only=["CartPole-v1"])
    assert bench.CSV.read_text() == before
    with open(bench._csv(quick=True), newline="") as f:
        rows = list(csv.DictReader(f))
    assert bench._csv(quick=True).name == "continuous_quick.csv"
    assert [(r["n_trajectories"], r["seed"]) for r in rows] == [("1", "0"), ("1", "1"),
                                                                 ("15", "0"), ("15", "1")]
    assert {c[3] for c in calls} == {250} and {c[5] for c in calls} == {"nuts"}


def test_every_env_has_settings_and_published_figures(bench):
    assert set(bench.SETTINGS) == set(bench.PUBLISHED) == set(bench.EXPERTS)
    for settings in bench.SETTINGS.values():
        assert settings["likelihood"] in ("soft", "boltzmann")
        bench.birl.QValueModel(**settings["model"])  # valid model arguments


def test_behavioural_cloning_fits_an_mlp_class_not_only_its_biases(bench):
    """From w = 0 an MLP's hidden units are all the same and only the output biases move (a
    constant policy); the clone must start off that saddle."""
    import torch

    from bayesirl.core.control import EXPERTS, make_env
    from bayesirl.core.trajectories import rollout

    env = make_env("CartPole-v1")
    data = rollout(env, EXPERTS["CartPole-v1"], 1, seed=3, progress=False)
    qf = bench.birl.QValueModel(hidden=(8,), weight_scale=3.0).q_function(data)
    w = bench.behavioural_cloning(data, qf)
    tr = data.transitions()
    with torch.no_grad():
        agree = (qf(w, tr.obs).argmax(-1) == tr.actions).double().mean()
    majority = max(float((tr.actions == a).double().mean()) for a in range(2))
    assert agree > 0.9 > majority + 0.2


def test_alternatives_are_valid_and_named_apart_from_nuts(bench):
    for env_id, alternatives in bench.ALTERNATIVES.items():
        assert env_id in bench.SETTINGS and "nuts" not in alternatives
        for method, settings in alternatives.items():
            assert bench._settings(env_id, method) is settings
            assert settings["likelihood"] in ("soft", "boltzmann")
            assert settings["inference"] in ("nuts", "map")
            assert bench._sampled(env_id, method) == (settings["inference"] == "nuts")
            bench.birl.QValueModel(**settings["model"])


def test_a_map_row_has_no_effective_sample_size(bench, monkeypatch):
    """The alternative's row: a MAP posterior, its BC of the same (MLP) class, min_ess nan."""
    import math

    monkeypatch.setitem(bench.ALTERNATIVES, "CartPole-v1", {"map-mlp4": dict(
        model=dict(hidden=(4,), weight_scale=3.0), likelihood="soft", inference="map")})
    row, post = bench.run("CartPole-v1", 1, 0, 10, 1, 500.0, "map-mlp4")
    assert post.method == "map" and post.q_function.hidden == (4,)
    assert row["method"] == "map-mlp4" and math.isnan(row["min_ess"])
    assert row["apprentice_return"] > 0 and row["bc_return"] > 0


def test_the_target_is_valuewalks_fraction_or_the_better_published_one_on_lunarlander(bench):
    # ValueWalk's fraction of the papers' expert (Acrobot: -87 / -88.8, a negative return)
    assert bench.target("Acrobot-v1", 1) == pytest.approx(87.0 / 88.8)
    assert bench.target("CartPole-v1", 15) == pytest.approx(495 / 500)
    # LunarLander: the better of ValueWalk (-171 / 269) and AVRIL (-121 / 269) from 1, of the
    # published expert score 269
    assert bench.target("LunarLander-v3", 1) == pytest.approx(-121 / 269)
    assert bench.target("LunarLander-v3", 7) == pytest.approx(255 / 269)


def test_report_prints_the_written_csv_with_the_targets_and_runs_nothing(bench, capsys,
                                                                        monkeypatch):
    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("report ran a posterior"))
    rows = [dict(_row("Acrobot-v1", s), expert_return=-80.0, apprentice_return=a,
                 bc_return=-90.0, seconds=10.0, min_ess=e)
            for s, a, e in [(0, -78.0, 500.0), (1, -82.0, 400.0)]]
    rows.append(dict(_row("LunarLander-v3", 0), n_trajectories=7, method="map-mlp32",
                     expert_return=250.0, apprentice_return=245.0, min_ess=float("nan")))
    bench._write(rows)
    bench.report()
    out = capsys.readouterr().out.splitlines()
    acrobot = next(line for line in out if line.split()[:2] == ["1", "nuts"]).split()
    # 20 test episodes; mean -80 over the seeds, se sd(-78, -82) / sqrt(2) = 2; fraction 1.00
    # of the expert's -80, BC 0.89, target 0.98: met; 10 s over the smallest ESS, 400
    assert acrobot[2:13] == ["20", "-80.0", "2.0", "1.00", "-90.0", "0.89", "0.98", "0.29",
                             "0.98", "yes", "10.0"]
    assert acrobot[13:] == ["400", "0.025"]
    lander = next(line for line in out if "map-mlp32" in line).split()
    assert lander[4] == "nan" and lander[5] == "0.98"  # one seed: no standard error
    assert lander[10:12] == ["0.95", "yes"] and lander[-2:] == ["nan", "nan"]
    assert any(line.startswith("LunarLander-v3: scripted expert 250.0 on 20 test episodes")
               for line in out)


def test_report_keeps_rows_of_different_test_episodes_apart(bench, capsys):
    """Rows of one env, N and method evaluated on 20 and on 300 episodes (a CSV holding rows of
    runs before and after the protocol's change) print as two lines, each its own expert's
    fraction, the most episodes first; the expert's score is given per number of episodes."""
    rows = [dict(_row("Acrobot-v1", s), expert_return=-75.0, apprentice_return=-75.0)
            for s in (0, 1)]
    rows += [dict(_row("Acrobot-v1", s), expert_return=-90.0, apprentice_return=-88.0,
                  test_episodes=300) for s in (0, 1)]
    bench._write(rows)
    bench.report()
    out = capsys.readouterr().out.splitlines()
    lines = [line.split() for line in out if line.split()[:2] == ["1", "nuts"]]
    assert [(w[2], w[3], w[5]) for w in lines] == [("300", "-88.0", "1.02"),
                                                    ("20", "-75.0", "1.00")]
    assert "Acrobot-v1: scripted expert -90.0 on 300, -75.0 on 20 test episodes" in out


def test_the_full_protocol_tests_each_policy_on_test_episodes_episodes(bench, monkeypatch):
    """main hands run (and the expert's evaluation) TEST_EPISODES episodes, 10 with --quick,
    and every row records how many."""
    import numpy as np

    calls, evaluated = [], []

    def fake_run(env_id, n, seed, draws, n_test, expert, method="nuts"):
        calls.append(n_test)
        return {**_row(env_id, seed), "n_trajectories": n, "test_episodes": n_test}, None

    def fake_evaluate(env, policy, n, **kwargs):
        evaluated.append(n)
        return np.zeros(n)

    monkeypatch.setattr(bench, "run", fake_run)
    monkeypatch.setattr(bench, "evaluate", fake_evaluate)
    bench.main(only=["CartPole-v1"], ns=[1])
    assert bench.TEST_EPISODES == 300 and set(calls) == set(evaluated) == {300}
    bench.main(quick=True, only=["CartPole-v1"])
    assert set(calls[5:]) == set(evaluated[1:]) == {10}
    with open(bench.CSV, newline="") as f:
        assert {r["test_episodes"] for r in csv.DictReader(f)} == {"300"}


def test_run_records_its_test_episodes(bench):
    row, _ = bench.run("CartPole-v1", 1, 0, 10, 3, 500.0)
    assert row["test_episodes"] == 3 and list(row) == list(bench.COLUMNS)


def test_a_csv_of_older_columns_is_refused_by_name(bench):
    bench.CSV.write_text("env,n_trajectories,seed,method,apprentice_return,expert_return,"
                         "bc_return,seconds,min_ess\nCartPole-v1,1,0,nuts,1,2,3,4,5\n")
    with pytest.raises(SystemExit, match=r"lacks the columns \['test_episodes'\]"):
        bench.report()
    with pytest.raises(SystemExit, match="lacks the columns"):
        bench._kept_rows(["Acrobot-v1"])


def test_report_refuses_a_missing_csv(bench):
    with pytest.raises(SystemExit, match="does not exist"):
        bench.report()
