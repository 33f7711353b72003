"""Tests of the command line (bayesirl.cli.app): help, exit codes, one-line errors, outputs."""

import importlib
from pathlib import Path

import pytest
import torch
from helpers import tiny_spec

import bayesirl as birl
from bayesirl.cli import app as cli
from bayesirl.inference.facade import METHODS, USED_BY


def used(method, **options):
    """``options`` that ``method`` uses (a spec setting others gets a warning line)."""
    return {k: v for k, v in options.items() if k not in USED_BY or method in USED_BY[k]}


def tiny(method="map"):
    """The tiny gridworld spec with a short run of ``method``."""
    return tiny_spec(comment="a tiny problem for the CLI tests",
                     inference=dict(method=method, **used(method, num_samples=10, warmup=10,
                                                          steps=20, max_tree_depth=4)))


def write_tiny(tmp_path, method="map", name="tiny.toml"):
    path = tmp_path / name
    path.write_text(tiny(method))
    return path


@pytest.mark.parametrize("argv, options", [
    (["--help"], ["run", "demo", "Exit codes", "130 interrupted"]),
    (["run", "--help"], ["SPEC.toml", "--out", "--overwrite", "--method", "--num-samples",
                         "--seed", "--quiet", *METHODS]),
    (["demo", "--help"], ["--out", "--overwrite", "--quiet", "gridworld"]),
])
def test_help_lists_every_option(capsys, argv, options):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for option in options:
        assert option in out


def test_the_method_help_describes_every_method():
    parser = cli._parser()
    run = next(a for a in parser._actions if a.dest == "command").choices["run"]
    method = next(a for a in run._actions if a.dest == "method")
    for name in METHODS:
        assert name in method.help, name


def test_every_option_has_help_text():
    parser = cli._parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, f"bayesirl {name} {action.option_strings or action.dest}"


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "run" in capsys.readouterr().out


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err, err
    assert "Traceback" not in err
    return err


def test_bad_spec_exits_2_with_one_line_naming_the_key(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(tiny("map").replace("size = 3", "sise = 3"))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = one_line_error(capsys)
    assert "environment.sise" in err and "allowed keys" in err and "bad.toml" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, expected", [
    (["run", "missing.toml"], "no such spec file"),
    (["run", "{spec}", "--num-samples", "0"], "--num-samples"),
    (["run", "{spec}", "--method", "gibbs"], "--method"),
    (["run", "{spec}", "--seed", "-1"], "--seed"),
    (["run", "{spec}", "--seed", "4294967296"], "--seed: 4294967296 is not an integer in "
                                                "[0, 4294967295]"),
    (["run"], "SPEC.toml"),
    (["walk"], "walk"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, expected):
    spec = write_tiny(tmp_path)
    argv = [a.replace("{spec}", str(spec)) for a in argv]
    assert cli.main(argv) == 2
    assert expected in one_line_error(capsys)


def test_bad_value_found_at_build_exits_2(tmp_path, capsys):
    path = tmp_path / "block.toml"
    path.write_text(tiny("map").replace("block = 1", "block = 2"))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "block is 2" in one_line_error(capsys)


def test_run_map_writes_outputs_and_skips_diagnostics(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["run", str(write_tiny(tmp_path)), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "posterior summary" in stdout and "MAP: a point estimate" in stdout
    for name in ("posterior.nc", "summary.csv", "reward.png", "policy.png", "report.md"):
        assert (out / name).is_file(), name
    assert not (out / "diagnostics.png").exists()
    report = (out / "report.md").read_text()
    assert "diagnostics: skipped: MAP is a single point" in report
    assert "![reward](reward.png)" in report and "```toml" in report
    post = birl.RewardPosterior.load(out / "posterior.nc")
    assert post.method == "map" and post.num_draws == 1
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0] in (",estimate", ",estimate,se") and len(summary) == 1 + 9
    assert "nan" not in (out / "summary.csv").read_text().lower()


def test_run_nuts_with_overrides(tmp_path, capsys):
    out, path = tmp_path / "out", tmp_path / "tiny.toml"
    path.write_text(tiny("nuts").replace('method = "nuts"', 'method = "map"'))
    code = cli.main(["run", str(path), "--out", str(out), "--method", "nuts",
                     "--num-samples", "8", "--seed", "3", "--quiet"])
    assert code == 0
    captured = capsys.readouterr()
    assert "does not use" not in captured.err  # the spec's NUTS options are used by NUTS
    assert "posterior summary" not in captured.out  # --quiet
    assert "wrote" in captured.out
    post = birl.RewardPosterior.load(out / "posterior.nc")
    assert post.method == "nuts" and post.num_draws == 8 and post.num_chains == 2
    assert post.settings["seed"] == 3
    for name in ("diagnostics.png", "recovery.png"):
        assert (out / name).is_file()
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith(",mean,sd") and "r_hat" in summary[0]
    assert len(summary) == 1 + 9  # one row per theta (9 one-hot cells)
    report = (out / "report.md").read_text()
    for part in ("## Timing", "| inference |", "## Posterior summary", "## Diagnostics",
                 "![diagnostics](diagnostics.png)", "R-hat"):
        assert part in report
    overrides = ('`inference.method = "nuts"`, `inference.num_samples = 8`, '
                 '`inference.seed = 3`')
    assert f"- command-line overrides: {overrides}" in report
    assert f"As written; the command line overrode {overrides}." in report
    assert 'method = "map"' in report  # the spec's text, as written


def test_run_svi_writes_elbo_diagnostics(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["run", str(write_tiny(tmp_path, "svi")), "--out", str(out)]) == 0
    assert "SVI: final ELBO" in capsys.readouterr().out
    assert (out / "diagnostics.png").is_file()
    post = birl.RewardPosterior.load(out / "posterior.nc")
    assert post.method == "svi" and len(post.extra["elbo"]) == 20


def test_decisions_compare_the_mean_and_robust_policies(tmp_path, capsys):
    import pandas as pd

    path = tmp_path / "decide.toml"
    path.write_text(tiny("svi") + "[decisions]\nalpha = 0.9\nlam = 0.0\n"
                    "start = [[2, 2], 0]\n")
    out = tmp_path / "out"
    assert cli.main(["run", str(path), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "decisions (see decisions.png)" in stdout
    assert "wrote posterior.nc, summary.csv, report.md, decisions.csv, " in stdout
    assert "decisions.png" in stdout.split("wrote ")[1]
    table = pd.read_csv(out / "decisions.csv", index_col=0)
    assert list(table.index) == ["posterior-mean reward",
                                 "robust (BROIL, alpha = 0.9, lam = 0)"]
    assert list(table.columns) == ["posterior mean return", "CVaR 0.9 of return",
                                   "true return"]
    mean, robust = table.iloc[0], table.iloc[1]
    # each policy is best at what it optimises: expected return, and CVaR (lam = 0)
    assert mean["posterior mean return"] >= robust["posterior mean return"] - 1e-9
    assert robust["CVaR 0.9 of return"] >= mean["CVaR 0.9 of return"] - 1e-9
    # the returns are those from decisions.start (cells (2, 2) and state 0, equally likely)
    post = birl.RewardPosterior.load(out / "posterior.nc")
    mdp = birl.envs.gridworld(size=3, block=1, horizon=4, dtype=post.rewards.dtype)
    start = torch.zeros(9, dtype=mdp.dtype)
    start[[0, 8]] = 0.5
    plan = birl.decisions.bayes_optimal_policy(mdp, post.reward())
    value = birl.policy_value(mdp.replace(initial=start), plan, post.reward()).mean()
    assert float(value) == pytest.approx(mean["posterior mean return"], rel=1e-6)
    report = (out / "report.md").read_text()
    assert "## Decisions under reward uncertainty" in report
    assert "from decisions.start [[2, 2], 0]" in report
    assert "![decisions](decisions.png)" in report and (out / "decisions.png").is_file()


def test_a_seed_infer_cannot_take_exits_2_before_any_work(tmp_path, capsys):
    path = tmp_path / "seed.toml"
    path.write_text(tiny("map").replace('method = "map"', 'method = "map"\nseed = 4294967296'))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = one_line_error(capsys)
    assert "inference.seed is 4294967296, expected an integer in [0, 4294967295]" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.toml"]


def test_options_the_method_ignores_are_named_in_a_warning(tmp_path, capsys):
    path = tmp_path / "chains.toml"
    path.write_text(tiny("map").replace('method = "map"', 'method = "map"\nnum_chains = 4'))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err == ("bayesirl: warning: inference.num_chains is 4, but method 'map' does not "
                   "use it; ignored\n")


def test_decisions_on_a_non_grid_mdp(tmp_path):
    path = tmp_path / "garnet.toml"
    path.write_text(tiny("svi").replace(
        'name = "gridworld"\nsize = 3\nblock = 1\n',
        'name = "random_mdp"\nn_states = 6\nn_actions = 2\nbranching = 2\nn_features = 2\n')
        + "[decisions]\nstart = [0, 3]\n")
    assert "random_mdp" in path.read_text()
    out = tmp_path / "out"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    assert (out / "decisions.png").is_file() and (out / "decisions.csv").is_file()


def test_decisions_start_outside_the_grid_exits_2(tmp_path, capsys):
    path = tmp_path / "start.toml"
    path.write_text(tiny("map") + "[decisions]\nstart = [[0, 3]]\n")
    assert cli.main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = one_line_error(capsys)
    assert err.startswith("bayesirl: error: ") and "start.toml" in err
    assert "decisions.start[0] is [0, 3]" in err and "3 x 3 grid" in err
    assert not (tmp_path / "o").exists()


def test_default_out_folder_is_named_after_the_spec(tmp_path, monkeypatch):
    spec = write_tiny(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", str(spec), "--quiet"]) == 0
    assert (tmp_path / "bayesirl-output" / "tiny" / "posterior.nc").is_file()


def test_inference_failure_exits_1(tmp_path, capsys, monkeypatch):
    infer_module = importlib.import_module("bayesirl.inference.facade")

    def boom(*args, **kwargs):
        raise FloatingPointError("the ELBO became nan at step 3")

    monkeypatch.setattr(infer_module, "infer", boom)
    assert cli.main(["run", str(write_tiny(tmp_path)), "--out", str(tmp_path / "o")]) == 1
    err = one_line_error(capsys)
    assert "inference failed" in err and "ELBO became nan" in err


def test_demo_runs_the_gridworld_spec(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BAYESIRL_FAST", "1")
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--quiet"]) == 0
    for name in ("posterior.nc", "summary.csv", "reward.png", "policy.png", "diagnostics.png",
                 "report.md"):
        assert (out / name).is_file(), name
    post = birl.RewardPosterior.load(out / "posterior.nc")
    assert post.method == "nuts" and post.samples["theta"].shape[-1] == 16


def test_the_packaged_default_spec_is_models_gridworld_toml():
    from importlib import resources

    packaged = resources.files("bayesirl.cli").joinpath(cli.DEFAULT_SPEC_RESOURCE)
    models = Path(__file__).resolve().parents[1] / "models" / "gridworld.toml"
    assert packaged.read_text("utf-8") == models.read_text("utf-8")
    spec = cli._demo_spec()
    assert spec.name == "gridworld" and spec.inference.method == "nuts"
    assert spec.source is None and spec.text == models.read_text("utf-8")
