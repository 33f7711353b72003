"""Tests of the spec side of the command line: TOML specs and their validation messages
(bayesirl.cli.spec), the files they name (bayesirl.cli.io) and build() (bayesirl.cli.build)."""

import textwrap
import warnings

import numpy as np
import pytest
import torch

import bayesirl as birl
from bayesirl.cli.build import build, infer_kwargs
from bayesirl.cli.io import load_demos, load_mdp_npz
from bayesirl.cli.spec import (
    PRIOR_FAMILIES,
    SpecError,
    apply_overrides,
    load_spec,
    parse_spec,
    tomllib,
)

BASE = {
    "environment": {"name": "gridworld", "size": 4, "horizon": 5, "block": 2},
    "demonstrations": {"n": 3, "seed": 0},
    "reward": {"model": "linear", "prior": {"family": "normal", "loc": 0.0, "scale": 1.0}},
    "likelihood": {"kind": "soft", "rationality": 1.0},
    "inference": {"method": "map"},
}


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def to_toml(data: dict) -> str:
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for table, body in data.items():
        if isinstance(body, dict):
            lines.append(f"[{table}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def spec_with(tmp_path, changes=None, drop=(), name="spec.toml"):
    """Write BASE with ``changes`` {"table.key": value} (value None deletes) to a file."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    for path, value in (changes or {}).items():
        table, _, key = path.partition(".")
        if not key:
            data[table] = value
            continue
        data.setdefault(table, {})
        if value is None:
            data[table].pop(key, None)
        else:
            data[table][key] = value
    for table in drop:
        data.pop(table)
    path = tmp_path / name
    path.write_text(to_toml(data))
    return path


# --------------------------------------------------------------------------- valid specs
def test_base_spec_parses_into_dataclasses(tmp_path):
    spec = load_spec(spec_with(tmp_path))
    assert spec.name == "spec"
    assert spec.environment.name == "gridworld"
    assert spec.environment.options == {"size": 4, "horizon": 5, "block": 2}
    assert spec.demonstrations.n == 3 and spec.demonstrations.file is None
    assert spec.reward.model == "linear" and spec.reward.prior.family == "normal"
    assert spec.likelihood.rationality == 1.0
    assert spec.inference.method == "map" and spec.inference.warmup is None
    assert "[environment]" in spec.text


def test_defaults_fill_optional_tables(tmp_path):
    spec = load_spec(spec_with(tmp_path, drop=("demonstrations", "reward", "likelihood",
                                               "inference")))
    assert spec.reward.model == "linear"
    assert spec.reward.prior.params == {"loc": 0.0, "scale": 1.0}
    assert spec.likelihood.kind == "soft"
    assert spec.inference.method == "nuts" and spec.inference.num_chains == 2


def test_build_returns_problem_ready_for_infer(tmp_path):
    mdp, demos, model, kwargs = build(load_spec(spec_with(tmp_path, {
        "inference.num_samples": 7, "inference.lr_decay": 0.5,
        "inference.space": "reward"})), fast=False)
    assert mdp.n_states == 16 and mdp.horizon == 5
    assert demos.n == 3 and demos.max_length == 5
    assert isinstance(model, birl.LinearReward) and model.features.shape == (16, 4)
    assert kwargs["method"] == "map"
    assert kwargs["likelihood"] == "soft" and kwargs["rationality"] == 1.0
    # options MAP does not use stay out, so infer has nothing to warn about
    assert not {"num_samples", "warmup", "lr_decay", "space", "steps"} & set(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        post = birl.infer(mdp, demos, model, progress=False, **kwargs)
    assert post.samples["theta"].shape == (1, 4)
    nuts = infer_kwargs(load_spec(spec_with(tmp_path, {
        "inference.method": "nuts", "inference.num_samples": 7, "inference.space": "reward"})))
    assert nuts["num_samples"] == 7 and nuts["warmup"] == 7 and nuts["space"] == "reward"
    assert "lr_decay" not in nuts and "steps" not in nuts
    svi = infer_kwargs(load_spec(spec_with(tmp_path, {
        "inference.method": "svi", "inference.lr_decay": 0.5})))
    assert svi["lr_decay"] == 0.5 and "warmup" not in svi and "space" not in svi


def test_fast_mode_shrinks_counts(tmp_path, monkeypatch):
    spec = load_spec(spec_with(tmp_path, {"inference.method": "nuts",
                                          "inference.num_samples": 1000,
                                          "inference.warmup": 800, "inference.steps": 5000,
                                          "inference.num_chains": 4}))
    slow = infer_kwargs(spec, fast=False)
    assert (slow["num_samples"], slow["warmup"], slow["num_chains"]) == (1000, 800, 4)
    fast = infer_kwargs(spec, fast=True)
    assert (fast["num_samples"], fast["warmup"], fast["num_chains"],
            fast["max_tree_depth"]) == (20, 20, 2, 4)
    svi = load_spec(spec_with(tmp_path, {"inference.method": "svi", "inference.steps": 5000}))
    assert infer_kwargs(svi, fast=False)["steps"] == 5000
    assert infer_kwargs(svi, fast=True)["steps"] == 50
    monkeypatch.setenv("BAYESIRL_FAST", "1")
    assert infer_kwargs(spec)["num_samples"] == 20
    monkeypatch.setenv("BAYESIRL_FAST", "0")
    assert infer_kwargs(spec)["num_samples"] == 1000


@pytest.mark.parametrize("family", sorted(PRIOR_FAMILIES))
def test_every_prior_family_builds_its_distribution(tmp_path, family):
    defaults, positive = PRIOR_FAMILIES[family]
    spec = load_spec(spec_with(tmp_path, {"reward.prior": {"family": family}}))
    d = spec.reward.prior.distribution()
    for k, v in defaults.items():
        assert float(getattr(d, k)) == pytest.approx(v)
    assert bool(d.support.check(torch.tensor(-0.5))) is (not positive)


def test_rationality_prior_and_gp_hyperpriors(tmp_path):
    spec = load_spec(spec_with(tmp_path, {
        "likelihood.rationality": {"prior": "lognormal", "loc": 0.5, "scale": 0.3},
        "reward": {"model": "gp", "lengthscale": {"family": "gamma", "concentration": 2.0},
                   "variance": 1.5, "inputs": "coords"}}))
    mdp, demos, model, kwargs = build(spec, fast=True)
    beta = kwargs["rationality"]
    assert isinstance(beta, torch.distributions.LogNormal)
    assert float(beta.loc) == 0.5 and float(beta.scale) == 0.3
    assert isinstance(model, birl.GPReward) and model.x.shape == (16, 2)
    assert set(model.priors()) == {"z", "lengthscale"} and model.variance == 1.5


def test_tabular_and_neural_models(tmp_path):
    _, _, model, _ = build(load_spec(spec_with(tmp_path, {
        "reward": {"model": "tabular", "per_action": True,
                   "prior": {"family": "laplace", "scale": 0.5}}})))
    assert model.shape == (16, 5)
    _, _, model, _ = build(load_spec(spec_with(tmp_path, {
        "reward": {"model": "neural", "hidden": [8], "prior_scale": 2.0}})))
    assert isinstance(model, birl.NeuralReward) and model.n_layers == 2


def test_overrides(tmp_path):
    spec = apply_overrides(load_spec(spec_with(tmp_path)), method="svi", num_samples=9, seed=4)
    assert (spec.inference.method, spec.inference.num_samples, spec.inference.seed) == (
        "svi", 9, 4)
    assert spec.overrides == {"inference.method": "svi", "inference.num_samples": 9,
                              "inference.seed": 4}
    with pytest.raises(SpecError, match="--method is 'gibbs'"):
        apply_overrides(spec, method="gibbs")
    with pytest.raises(SpecError, match=r"--seed is 4294967296, expected an integer in "
                                        r"\[0, 4294967295\]"):
        apply_overrides(spec, seed=2 ** 32)


def test_the_seed_bound_is_infers():
    """SEED_MAX (inference.seed, --seed) is the largest seed bayesirl.infer takes."""
    from bayesirl.cli.spec import SEED_MAX
    from bayesirl.inference.facade import _check_options

    ok = dict(method="map", space="auto", num_samples=1, warmup=0, num_chains=1, steps=1,
              max_tree_depth=1, num_steps=1, target_accept=0.8, lr=0.1, lr_decay=1.0)
    _check_options(seed=SEED_MAX, **ok)
    with pytest.raises(ValueError, match="seed is 4294967296"):
        _check_options(seed=SEED_MAX + 1, **ok)


def test_unused_inference_options_are_the_ones_the_method_ignores(tmp_path):
    from bayesirl.cli.build import unused_options

    spec = load_spec(spec_with(tmp_path, {"inference.num_chains": 4, "inference.steps": 2000,
                                          "inference.seed": 3, "inference.warmup": 7}))
    assert unused_options(spec) == ["inference.warmup", "inference.num_chains"]  # map
    assert unused_options(spec, ["steps", "seed", "lr"]) == ["inference.steps", "inference.lr"]
    assert unused_options(apply_overrides(spec, method="nuts")) == []


def test_boltzmann_expert_follows_the_likelihood(tmp_path):
    spec = load_spec(spec_with(tmp_path, {"likelihood.kind": "boltzmann",
                                          "demonstrations.rationality": 5.0}))
    _, demos, _, kwargs = build(spec)
    assert kwargs["likelihood"] == "boltzmann" and demos.n == 3


# --------------------------------------------------------------------------- files
def write_mdp_npz(path, **overrides):
    mdp = birl.envs.gridworld(size=3, block=1, horizon=4, seed=0)
    arrays = {"transitions": mdp.transition_matrix().numpy(), "features": mdp.features.numpy(),
              "initial": mdp.initial.numpy(), "horizon": np.array(4),
              "reward": mdp.reward.numpy(), "shape": np.array([3, 3])}
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return mdp


def write_csv(path, rows, header="episode,step,state,action"):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")


def test_mdp_npz_and_csv_demos_resolve_relative_to_the_spec(tmp_path):
    folder = tmp_path / "problem"
    (folder / "data").mkdir(parents=True)
    mdp = write_mdp_npz(folder / "data" / "mdp.npz")
    # rows in any order; two episodes of lengths 3 and 2 (gridworld: action 4 = right)
    write_csv(folder / "data" / "demos.csv",
              [(1, 1, 1, 0), (0, 0, 0, 4), (0, 2, 2, 2), (1, 0, 1, 0), (0, 1, 1, 4)])
    path = folder / "spec.toml"
    path.write_text(textwrap.dedent("""\
        [environment]
        file = "data/mdp.npz"
        [demonstrations]
        file = "data/demos.csv"
        [inference]
        method = "map"
    """))
    spec = load_spec(path)
    assert spec.environment.file == folder / "data" / "mdp.npz"
    built_mdp, demos, _, _ = build(spec)
    assert torch.allclose(built_mdp.transition_matrix(), mdp.transition_matrix())
    assert torch.equal(built_mdp.features, mdp.features)
    assert built_mdp.shape == (3, 3)
    assert demos.lengths.tolist() == [3, 2]
    assert demos.states[0].tolist() == [0, 1, 2] and demos.actions[0].tolist() == [4, 4, 2]
    assert demos.states[1, :2].tolist() == [1, 1]


def test_npz_demos_and_simulated_demos_from_file_mdp(tmp_path):
    mdp = write_mdp_npz(tmp_path / "mdp.npz")
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=4, seed=1)
    demos.save(tmp_path / "demos.npz")
    loaded = load_demos(tmp_path / "demos.npz")
    assert torch.equal(loaded.states, demos.states)
    spec = load_spec(spec_with(tmp_path, {"environment": {"file": "mdp.npz"}}))
    _, simulated, _, _ = build(spec)
    assert simulated.n == 3 and simulated.max_length == 4
    assert load_mdp_npz(tmp_path / "mdp.npz", discount=0.5).discount == 0.5


def test_lava_world_and_decisions(tmp_path):
    from bayesirl.cli.build import deployment_mdp
    from bayesirl.cli.spec import DecisionsSpec

    spec = load_spec(spec_with(tmp_path, {
        "environment": {"name": "lava_world", "size": 5, "horizon": 4, "goal": [0, 0],
                        "lava": [[2, 2], [2, 3]], "terrain": 0.0, "seed": 1},
        "decisions": {"alpha": 0.9, "start": [[4, 4], 3]}}))
    assert spec.decisions == DecisionsSpec(alpha=0.9, lam=0.0, start=((4, 4), 3))
    mdp, demos, _, _ = build(spec)
    assert (mdp.shape, mdp.horizon, mdp.discount) == ((5, 5), 4, None)
    expected = birl.envs.lava_world(size=5, goal=(0, 0), lava=[(2, 2), (2, 3)], terrain=0.0,
                                    seed=1, horizon=4)
    torch.testing.assert_close(mdp.reward, expected.reward.to(mdp.reward))
    assert demos.n == 3
    deploy = deployment_mdp(spec, mdp)
    assert deploy.initial.nonzero().reshape(-1).tolist() == [3, 24]
    assert deploy.initial[[3, 24]].tolist() == [0.5, 0.5]
    assert deployment_mdp(load_spec(spec_with(tmp_path)), mdp) is mdp   # no [decisions]
    with pytest.raises(SpecError, match=r"decisions\.start\[1\] is 25, expected a state index "
                                        r"in \[0, 25\)"):
        deployment_mdp(load_spec(spec_with(tmp_path, {"decisions.start": [0, 25]})), mdp)


# --------------------------------------------------------------------------- bad specs
BAD_SPECS = [
    # (changes, substrings the one-line message must contain)
    ({"environment.sise": 8}, ["environment.sise", "8", "allowed keys", "size"]),
    ({"infrence": {"method": "nuts"}}, ["infrence", "allowed", "inference"]),
    ({"environment": "gridworld"}, ["environment is 'gridworld'", "table"]),
    ({"environment.size": "8"}, ["environment.size", "'8'", "integer"]),
    ({"environment.size": 0}, ["environment.size", "0", "integer >= 1"]),
    ({"environment.slip": 1.5}, ["environment.slip", "1.5", "[0, 1]"]),
    ({"environment.block": [2, 0]}, ["environment.block", "[2, 0]", "positive"]),
    ({"environment.discount": 0.9}, ["environment.horizon", "environment.discount",
                                     "at most one"]),
    ({"environment.name": "gridwrld"}, ["environment.name", "'gridwrld'", "'gridworld'"]),
    ({"environment.name": None}, ["environment.name is missing", "gridworld"]),
    ({"environment": {"name": "gymnasium"}}, ["environment.id is missing"]),
    ({"environment": {"name": "gymnasium", "id": "FrozenLake-v1", "size": 4}},
     ["environment.size", "allowed keys", "id, kwargs"]),
    ({"demonstrations.n": True}, ["demonstrations.n", "True", "integer"]),
    ({"demonstrations.n": -3}, ["demonstrations.n", "-3", ">= 1"]),
    ({"demonstrations.rationality": 0}, ["demonstrations.rationality", "0", "> 0"]),
    ({"demonstrations.expert": "greedy"}, ["demonstrations.expert", "'greedy'", "'soft'"]),
    ({"reward.model": "lineer"}, ["reward.model", "'lineer'", "'linear'"]),
    ({"reward.prior": {"family": "gaussian"}}, ["reward.prior.family", "'gaussian'", "normal",
                                                "laplace"]),
    ({"reward.prior": {"family": "normal", "scale": -1.0}}, ["reward.prior.scale", "-1.0",
                                                            "> 0"]),
    ({"reward.prior": {"family": "normal", "sigma": 1.0}}, ["reward.prior.sigma",
                                                           "allowed keys: loc, scale"]),
    ({"reward.prior": {"family": "uniform", "low": 1.0, "high": 0.0}},
     ["reward.prior.high", "0.0", "reward.prior.low"]),
    ({"reward.prior": {"loc": 0.0}}, ["reward.prior.family is missing"]),
    ({"reward.prior": 1.0}, ["reward.prior", "1.0", "family"]),
    ({"reward.lengthscale": 2.0}, ["reward.lengthscale", "allowed keys: prior"]),
    ({"reward": {"model": "gp", "lengthscale": -1.0}}, ["reward.lengthscale", "-1.0", "> 0"]),
    ({"reward": {"model": "gp", "variance": {"family": "normal"}}},
     ["reward.variance.family", "'normal'", "lognormal", "positive"]),
    ({"reward": {"model": "neural", "hidden": [0]}}, ["reward.hidden", "[0]", "positive"]),
    ({"likelihood.kind": "hard"}, ["likelihood.kind", "'hard'", "'boltzmann'"]),
    ({"likelihood.rationality": -2.0}, ["likelihood.rationality", "-2.0", "> 0"]),
    ({"likelihood.rationality": "high"}, ["likelihood.rationality", "'high'", "lognormal"]),
    ({"likelihood.rationality": {"prior": "normal"}},
     ["likelihood.rationality.prior", "'normal'", "lognormal"]),
    ({"likelihood.rationality": {"prior": "lognormal", "scale": 0.0}},
     ["likelihood.rationality.scale", "0.0", "> 0"]),
    ({"inference.method": "mcmc"}, ["inference.method", "'mcmc'", "'nuts'", "'svi'"]),
    ({"inference.num_samples": 0}, ["inference.num_samples", "0", ">= 1"]),
    ({"inference.lr": "fast"}, ["inference.lr", "'fast'", "> 0"]),
    ({"inference.lr_decay": 0.0}, ["inference.lr_decay", "0.0", "(0, 1]"]),
    ({"inference.space": "values"}, ["inference.space", "values", "value"]),
    ({"inference.guide": "flow"}, ["inference.guide", "'flow'", "'mvn'"]),
    ({"inference.target_accept": 1.0}, ["inference.target_accept", "1.0", "(0, 1)"]),
    ({"inference.chains": 2}, ["inference.chains", "allowed keys", "num_chains"]),
    ({"environment": {"file": "nope.npz"}}, ["environment.file", "'nope.npz'",
                                             "no such file"]),
    ({"environment": {"file": "mdp.txt"}}, ["environment.file", "'mdp.txt'", ".npz"]),
    ({"environment": {"file": "m.npz", "name": "gridworld"}}, ["environment.name",
                                                               "environment.file"]),
    ({"demonstrations": {"file": "nope.csv"}}, ["demonstrations.file", "'nope.csv'",
                                                "no such file"]),
    ({"demonstrations": {"file": "d.json"}}, ["demonstrations.file", "'d.json'", ".csv"]),
    ({"name": 3}, ["name is 3", "string"]),
    ({"name": "/abs/path"}, ["name is '/abs/path'", "a plain file name"]),
    ({"name": "../x"}, ["name is '../x'", "a plain file name"]),
    ({"name": ".."}, ["name is '..'", "a plain file name"]),
    ({"name": "a\\\\b"}, ["name is 'a\\\\b'", "a plain file name"]),  # TOML "a\\b": a\b
    ({"inference.parallel": "no"}, ["inference.parallel is 'no'", "expected true or false"]),
    ({"inference.dense_mass": "yes"}, ["inference.dense_mass is 'yes'",
                                       "expected true or false"]),
    ({"inference.parallel": 0}, ["inference.parallel is 0", "expected true or false"]),
    ({"environment": {"name": "lava_world", "goal": [0, -1]}},
     ["environment.goal", "[0, -1]", "[row, col] pair"]),
    ({"environment": {"name": "lava_world", "lava": [4, 7]}},
     ["environment.lava", "[4, 7]", "list of [row, col] pairs"]),
    ({"environment": {"name": "lava_world", "block": 2}},
     ["environment.block", "allowed keys", "goal, horizon, lava"]),
    ({"decisions.alpha": 1.0}, ["decisions.alpha", "1.0", "(0, 1)"]),
    ({"decisions.lam": 2}, ["decisions.lam", "2", "[0, 1]"]),
    ({"decisions.start": [[1, 2, 3]]}, ["decisions.start", "[[1, 2, 3]]", "[row, col] cells"]),
    ({"decisions.robust": True}, ["decisions.robust", "allowed keys: alpha, lam, start"]),
    # integers beyond what infer, torch and NumPy take: refused here, not deep in a run
    ({"inference.seed": 2 ** 32}, ["inference.seed is 4294967296", "[0, 4294967295]"]),
    ({"demonstrations.seed": 2 ** 64}, ["demonstrations.seed is an integer of about 20 digits",
                                        "64-bit"]),
    ({"environment.size": 10 ** 30}, ["environment.size", "64-bit"]),
    ({"inference.lr": 10 ** 400}, ["inference.lr is an integer of about 401 digits", "> 0"]),
    ({"reward.prior": {"family": "normal", "loc": -10 ** 400}},
     ["reward.prior.loc is an integer of about 401 digits", "a finite number"]),
]


@pytest.mark.parametrize("changes, expected", BAD_SPECS,
                         ids=[",".join(c) for c, _ in BAD_SPECS])
def test_bad_spec_gives_one_message_naming_key_and_value(tmp_path, changes, expected):
    path = spec_with(tmp_path, changes)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_boolean_inference_options_reach_infer(tmp_path):
    spec = load_spec(spec_with(tmp_path, {"inference.method": "nuts",
                                          "inference.parallel": False,
                                          "inference.dense_mass": True}))
    kwargs = build(spec).infer_kwargs
    assert kwargs["parallel"] is False and kwargs["dense_mass"] is True
    nuts = {"inference.method": "nuts"}
    default = build(load_spec(spec_with(tmp_path, nuts))).infer_kwargs
    assert default["parallel"] is None and default["dense_mass"] is None


def test_file_keys_list_allowed_keys_with_demos_file(tmp_path):
    write_csv(tmp_path / "d.csv", [(0, 0, 0, 0)])
    with pytest.raises(SpecError, match=r"demonstrations\.n .*allowed keys: file"):
        load_spec(spec_with(tmp_path, {"demonstrations": {"file": "d.csv", "n": 3}}))


def test_invalid_toml_and_missing_spec(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[environment\nname = 1\n")
    with pytest.raises(SpecError, match="broken.toml: invalid TOML"):
        load_spec(path)
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "absent.toml")
    with pytest.raises(SpecError, match=r"\[environment\] is missing"):
        load_spec(spec_with(tmp_path, drop=("environment",)))


BAD_BUILDS = [
    ({"environment.block": 3}, ["environment (gridworld)", "block is 3"]),
    ({"demonstrations.length": 9}, ["demonstrations.length", "9", "horizon 5"]),
    ({"inference.subsample_size": 10}, ["inference.subsample_size", "10", "(3)"]),
    ({"reward": {"model": "gp", "inputs": "coords"}, "environment": {
        "name": "random_mdp", "n_states": 5, "horizon": 3}}, ["reward.inputs", "'coords'"]),
    ({"environment": {"name": "gymnasium", "id": "NoSuchEnv-v9"}},
     ["environment.id", "'NoSuchEnv-v9'", "gymnasium.make failed"]),
    ({"environment": {"name": "lava_world", "size": 5, "horizon": 4, "goal": [0, 5]}},
     ["environment (lava_world)", "goal[0] is (0, 5)", "5 x 5 grid"]),
]


@pytest.mark.parametrize("changes, expected", BAD_BUILDS,
                         ids=[",".join(c) for c, _ in BAD_BUILDS])
def test_bad_values_found_at_build_name_key(tmp_path, changes, expected):
    if "NoSuchEnv-v9" in str(changes):
        pytest.importorskip("gymnasium")
    spec = load_spec(spec_with(tmp_path, changes))
    with pytest.raises(SpecError) as info:
        build(spec)
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


BAD_CSV = [
    # (header, rows, substrings)
    ("episode,step,state", [(0, 0, 0)], ["column 'action' is missing", "episode, step, "
                                                                       "state, action"]),
    (None, [(0, 0, 0, 1), (0, 2, 1, 1)], ["column step skips to 2", "episode '0'",
                                          "line 3"]),
    (None, [(0, 0, 0, 1), (0, 0, 1, 1)], ["column step repeats 0", "episode '0'"]),
    (None, [(0, 1, 0, 1)], ["column step skips to 1", "step 0 next"]),
    (None, [(0, 0, "x", 1)], ["column state is 'x'", "line 2", "non-negative integer"]),
    (None, [(0, 0, 0, -1)], ["column action is '-1'", "non-negative integer"]),
    (None, [(0, 0, 0)], ["line 2", "3 fields", "expected 4"]),
    (None, [], ["no rows"]),
    (None, [(0, 0, 99, 1)], ["does not fit the environment", "states[0, 0] is 99"]),
    (None, [(0, 0, 0, 7)], ["does not fit the environment", "actions[0, 0] is 7"]),
]


@pytest.mark.parametrize("header, rows, expected", BAD_CSV)
def test_bad_csv_names_column_and_value(tmp_path, header, rows, expected):
    write_csv(tmp_path / "demos.csv", rows, header or "episode,step,state,action")
    spec = load_spec(spec_with(tmp_path, {"demonstrations": {"file": "demos.csv"}}))
    with pytest.raises(SpecError) as info:
        build(spec)
    message = str(info.value)
    assert "\n" not in message and "demonstrations.file" in message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_truncated_and_malformed_npz(tmp_path):
    write_mdp_npz(tmp_path / "mdp.npz")
    data = (tmp_path / "mdp.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    spec = load_spec(spec_with(tmp_path, {"environment": {"file": "cut.npz"}}))
    with pytest.raises(SpecError, match=r"environment\.file: .*cut\.npz: cannot read the "
                                        r"\.npz archive"):
        build(spec)
    demos = birl.Demonstrations.from_arrays([[0, 1]], [[4, 4]])
    demos.save(tmp_path / "d.npz")
    data = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "dcut.npz").write_bytes(data[: len(data) // 2])
    spec = load_spec(spec_with(tmp_path, {"demonstrations": {"file": "dcut.npz"}}))
    with pytest.raises(SpecError, match=r"demonstrations\.file: .*dcut\.npz: cannot read"):
        build(spec)


def test_an_npy_file_renamed_npz_is_one_line_naming_the_file(tmp_path):
    np.save(tmp_path / "mdp.npy", np.zeros((9, 5, 9)))
    (tmp_path / "mdp.npy").rename(tmp_path / "mdp.npz")
    spec = load_spec(spec_with(tmp_path, {"environment": {"file": "mdp.npz"}}))
    with pytest.raises(SpecError) as info:
        build(spec)
    message = str(info.value)
    assert "\n" not in message and "environment.file" in message
    assert str(tmp_path / "mdp.npz") in message and "a .npy file renamed .npz?" in message


def test_a_huge_gridworld_is_refused_with_its_memory_before_allocating(tmp_path, monkeypatch):
    import bayesirl.core.envs as envs

    def never(*args, **kwargs):
        raise AssertionError("the gridworld builder ran")

    monkeypatch.setattr(envs, "gridworld", never)
    spec = load_spec(spec_with(tmp_path, {"environment.size": 100000}))
    with pytest.raises(SpecError) as info:
        build(spec)
    message = str(info.value)
    assert "\n" not in message and "environment.size is 100000" in message
    assert "10000000000 states" in message and "GiB of memory to build" in message
    assert "GiB available" in message


@pytest.mark.parametrize("changes, expected", [
    ({"demonstrations.n": 10 ** 8}, "demonstrations.n is 100000000: 100000000 demonstrations of "
                                    "5 steps, which needs at least 7.92 GiB of memory to "
                                    "simulate, more than the 1 GiB available"),
    ({"environment.horizon": 10 ** 10, "demonstrations.length": 5},
     "environment.horizon is 10000000000: planning 1e+10 steps over 16 states and 5 actions, "
     "which needs at least 7.15e+03 GiB of memory for its tables"),
])
def test_huge_demonstrations_or_horizons_are_refused_with_their_memory(tmp_path, monkeypatch,
                                                                       changes, expected):
    import bayesirl.cli.build as build_module

    monkeypatch.setattr(build_module, "available_memory", lambda: 2.0 ** 30)
    with pytest.raises(SpecError) as info:
        build(load_spec(spec_with(tmp_path, changes)))
    assert "\n" not in str(info.value) and expected in str(info.value)


def test_the_planning_memory_estimate_bounds_the_planners_tables():
    from bayesirl.cli.build import planning_bytes
    from bayesirl.planning.bellman import soft_value_iteration

    mdp = birl.envs.gridworld(size=4, block=1, horizon=7)
    plan = soft_value_iteration(mdp, mdp.reward)
    tables = sum(x.numel() * x.element_size() for x in (plan.log_policy, plan.v))
    assert 0 < planning_bytes(mdp) <= tables
    assert planning_bytes(birl.envs.gridworld(size=4, block=1, discount=0.9)) == 0


@pytest.mark.parametrize("expert", ["soft", "boltzmann"])
@pytest.mark.parametrize("time", ["horizon", "discount"])
def test_a_near_deterministic_expert_simulates_valid_demonstrations(tmp_path, expert, time):
    """A soft expert's log-policy Q - V loses its normalisation to rounding at rationality
    1e10 (rollouts refused the policy as not summing to 1); build renormalises it."""
    changes = {"demonstrations.rationality": 1e10, "demonstrations.expert": expert,
               "environment.horizon": 5 if time == "horizon" else None,
               "environment.discount": 0.9 if time == "discount" else None,
               "demonstrations.length": 5}
    _, demos, _, _ = build(load_spec(spec_with(tmp_path, changes)))
    assert demos.n == 3


def test_an_expert_policy_that_overflows_names_the_rationality(tmp_path):
    spec = load_spec(spec_with(tmp_path, {"demonstrations.rationality": 1.7e308}))
    with pytest.raises(SpecError, match=r"demonstrations.rationality is 1.7e\+308: the soft "
                                        r"expert's policy is not finite"):
        build(spec)


def test_the_memory_estimate_bounds_what_the_builder_allocates():
    from bayesirl.cli.build import environment_bytes

    for name, options in [("gridworld", {"size": 24, "block": 2}),
                          ("gridworld", {"size": 16, "block": 1}),
                          ("lava_world", {"size": 20}),
                          ("random_mdp", {"n_states": 300, "n_actions": 3, "branching": 4,
                                          "n_features": 6})]:
        mdp = getattr(birl.envs, name)(**options)
        built = sum(x.numel() * x.element_size() for x in (
            mdp.successors, mdp.transition_probs, mdp.features, mdp.initial))
        estimate, what = environment_bytes(name, options)
        assert what and built <= estimate <= 4 * built + 2 ** 20, (name, built, estimate)


def test_a_csv_with_a_byte_order_mark_is_read(tmp_path):
    text = "episode,step,state,action\n0,0,0,4\n0,1,0,4\n"
    (tmp_path / "demos.csv").write_bytes(text.encode("utf-8-sig"))
    demos = load_demos(tmp_path / "demos.csv")
    assert demos.states.tolist() == [[0, 0]] and demos.actions.tolist() == [[4, 4]]


def test_a_csv_with_two_state_columns_is_refused_naming_the_column(tmp_path):
    (tmp_path / "demos.csv").write_text("episode,step,state,action,state\n0,0,0,4,1\n")
    with pytest.raises(SpecError) as info:
        load_demos(tmp_path / "demos.csv")
    message = str(info.value)
    assert "column 'state' appears 2 times" in message and "columns 3, 5" in message


BAD_MDP_NPZ = [
    ({"transitions": None}, ["array 'transitions'", "is missing"]),
    ({"rewards": np.zeros(9)}, ["array 'rewards' is not a known array", "reward"]),
    ({"horizon": None}, ["neither a horizon nor a discount"]),
    ({"discount": np.array(0.9)}, ["horizon and discount are both given"]),
    ({"horizon": np.array(2.5)}, ["horizon is 2.5", "integer"]),
    ({"initial": np.full(9, 0.2)}, ["initial sums to 1.8", "expected 1"]),
    ({"features": np.zeros((8, 2))}, ["features must have shape (9, d)"]),
    ({"features": np.array([["a", "b"]] * 9)}, ["array features has dtype <U1",
                                                "expected real numbers"]),
    ({"reward": np.array(["x"] * 9)}, ["array reward has dtype <U1"]),
    ({"shape": np.array(["3", "x"])}, ["array shape has dtype <U1"]),
    ({"shape": np.array([3.5, 3.0])}, ["array shape is [3.5, 3.0]", "two whole numbers"]),
    ({"horizon": np.array(1e300)}, ["array horizon is 1e+300", "GiB of memory for its tables"]),
]


@pytest.mark.parametrize("changes, expected", BAD_MDP_NPZ,
                         ids=[",".join(c) for c, _ in BAD_MDP_NPZ])
def test_bad_mdp_npz(tmp_path, changes, expected):
    write_mdp_npz(tmp_path / "mdp.npz", **changes)
    spec = load_spec(spec_with(tmp_path, {"environment": {"file": "mdp.npz"}}))
    with pytest.raises(SpecError) as info:
        build(spec)
    message = str(info.value)
    assert "environment.file" in message and "mdp.npz" in message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_transitions_not_summing_to_one_name_the_entry(tmp_path):
    P = birl.envs.gridworld(size=3, block=1, horizon=4).transition_matrix().numpy()
    P[3, 1] *= 0.93
    write_mdp_npz(tmp_path / "mdp.npz", transitions=P)
    with pytest.raises(SpecError, match=r"transitions\[3, 1\] sums to 0\.93, expected 1"):
        load_mdp_npz(tmp_path / "mdp.npz")


def test_simulated_demos_need_a_true_reward(tmp_path):
    write_mdp_npz(tmp_path / "mdp.npz", reward=None)
    spec = load_spec(spec_with(tmp_path, {"environment": {"file": "mdp.npz"}}))
    with pytest.raises(SpecError, match="no true reward"):
        build(spec)


def test_parse_spec_from_dict_matches_load_spec(tmp_path):
    path = spec_with(tmp_path)
    spec = parse_spec(tomllib.loads(path.read_text()), tmp_path, "spec")
    assert spec.environment == load_spec(path).environment


def test_spec_choices_are_imported_from_their_one_home():
    import importlib

    facade = importlib.import_module("bayesirl.inference.facade")
    from bayesirl.cli import spec
    from bayesirl.model import likelihood

    assert spec.METHODS is facade.METHODS and spec.SPACES is facade.SPACES
    assert spec.GUIDES is facade.GUIDES and spec.LIKELIHOODS is likelihood.LIKELIHOODS


# --------------------------------------------------------------------------- data sets
def test_a_packaged_data_set_gives_the_mdp_and_the_demonstrations(tmp_path):
    rust = {"name": "rust_bus", "groups": [4], "bins": 90, "discount": 0.99}
    built = build(load_spec(spec_with(tmp_path, {"environment": rust}, drop=("demonstrations",))))
    mdp, demos = birl.datasets.rust_bus(groups=(4,), bins=90, discount=0.99)
    assert built.mdp.n_states == mdp.n_states == 90 and built.mdp.discount == 0.99
    assert torch.equal(built.demos.states, demos.states)
    assert torch.equal(built.demos.actions, demos.actions)
    assert built.reward_model.features.shape == (90, 2, 2)


def test_a_data_set_refuses_a_demonstrations_table_and_bad_options(tmp_path):
    rust = {"name": "rust_bus", "groups": [4]}
    with pytest.raises(SpecError, match="brings its own demonstrations"):
        build(load_spec(spec_with(tmp_path, {"environment": rust})))
    with pytest.raises(SpecError, match=r"environment.source is 'other'"):
        load_spec(spec_with(tmp_path, {"environment": {**rust, "source": "other"}},
                            drop=("demonstrations",)))
    with pytest.raises(SpecError, match=r"rust_bus.*bin_size"):
        build(load_spec(spec_with(tmp_path, {"environment": {**rust, "bin_size": 7000}},
                                  drop=("demonstrations",))))
