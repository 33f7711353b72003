"""SVI checkpoints (bayesirl.inference.svi): a run resumes only from a checkpoint of the same
problem and settings, and is told what differs otherwise; a checkpoint holds tensors and plain
values only, so a crafted file is refused without running anything; a checkpoint whose shapes do
not fit is one line, not a traceback."""

import pickle

import pyro.distributions as dist
import pytest
import torch

import bayesirl as birl

KW = dict(method="svi", steps=20, num_samples=4, progress=False, seed=3, checkpoint_every=10)


@pytest.fixture
def problem():
    mdp = birl.envs.gridworld(size=4, slip=0.1, horizon=5, block=2, seed=0)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=10, seed=0)
    return mdp, demos, birl.LinearReward(mdp.features)


@pytest.fixture
def checkpoint(problem, tmp_path):
    """A finished run's checkpoint, and that run's posterior."""
    mdp, demos, model = problem
    path = tmp_path / "svi.ckpt"
    return path, birl.infer(mdp, demos, model, checkpoint=path, **KW)


def test_a_finished_checkpoint_of_the_same_run_gives_the_same_posterior(problem, checkpoint):
    mdp, demos, model = problem
    path, first = checkpoint
    again = birl.infer(mdp, demos, model, checkpoint=path, **KW)
    assert again.extra["elbo"] == first.extra["elbo"]
    assert torch.equal(again.samples["theta"], first.samples["theta"])


def test_a_constant_step_run_continues_a_shorter_one(problem, checkpoint, tmp_path):
    """With lr_decay=1 the step does not depend on the number of steps, so a longer run may
    resume a shorter one's checkpoint and ends where an uninterrupted longer run does."""
    mdp, demos, model = problem
    path, _ = checkpoint
    longer = birl.infer(mdp, demos, model, checkpoint=path, **{**KW, "steps": 30})
    fresh = birl.infer(mdp, demos, model, **{**KW, "steps": 30})
    assert longer.extra["elbo"] == fresh.extra["elbo"]
    assert torch.equal(longer.samples["theta"], fresh.samples["theta"])


@pytest.mark.parametrize("change,differ,shown", [
    ("demos", {"demonstrations"}, ""),
    ("model", {"reward model", "prior"}, "LinearReward "),
    ("prior", {"prior"}, ""),
    ("likelihood", {"likelihood"}, "likelihood ('soft' there, 'boltzmann' here)"),
    ("guide", {"guide"}, "guide ('mvn' there, 'normal' here)"),
    ("lr", {"lr"}, "lr (0.01 there, 0.02 here)"),
    ("seed", {"seed"}, "seed (3 there, 4 here)"),
    ("subsample", {"subsample_size"}, "subsample_size (None there, 5 here)"),
    ("decay", {"lr_decay", "steps"}, "steps ('absent' there, 20 here)"),
    ("mdp", {"MDP"}, ""),
])
def test_resuming_on_anything_else_is_refused_naming_what_differs(problem, checkpoint, change,
                                                                  differ, shown):
    """A stale checkpoint (other demonstrations, another reward model or prior, ...) is
    refused with one line listing exactly what differs, with both values where they are
    short."""
    mdp, demos, model = problem
    path, _ = checkpoint
    kw = dict(KW)
    if change == "demos":
        demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=10, seed=1)
    elif change == "model":
        model = birl.TabularReward(mdp.n_states)
    elif change == "prior":
        model = birl.LinearReward(mdp.features, prior=dist.Normal(0.0, 2.0))
    elif change == "mdp":
        mdp = birl.envs.gridworld(size=4, slip=0.2, horizon=5, block=2, seed=0)
    else:
        kw.update({"likelihood": {"likelihood": "boltzmann"}, "guide": {"guide": "normal"},
                   "lr": {"lr": 0.02}, "seed": {"seed": 4}, "subsample": {"subsample_size": 5},
                   "decay": {"lr_decay": 0.5}}[change])
    with pytest.raises(ValueError) as error:
        birl.infer(mdp, demos, model, checkpoint=path, **kw)
    message = str(error.value)
    start = f"checkpoint {path} was written by a run on another "
    end = "; delete it, or pass another checkpoint path, to start afresh"
    assert "\n" not in message and message.startswith(start) and message.endswith(end)
    items = message[len(start):-len(end)].split("; ")
    assert {item.split(" (")[0] for item in items} == differ, message
    assert shown in message


def test_a_checkpoint_whose_shapes_do_not_fit_is_one_line(problem, checkpoint):
    mdp, demos, model = problem
    path, _ = checkpoint
    state = torch.load(path, weights_only=True)
    name = next(iter(state["guide"]))
    state["guide"][name] = torch.cat([state["guide"][name], state["guide"][name][:1]])
    torch.save(state, path)
    with pytest.raises(ValueError, match=f"checkpoint {path}: the guide parameter '{name}' has "
                                         r"shape \(\d+,\), expected \(\d+,\)"):
        birl.infer(mdp, demos, model, checkpoint=path, **KW)


def test_a_checkpoint_holds_tensors_and_plain_values_only(checkpoint):
    path, _ = checkpoint
    state = torch.load(path, weights_only=True)  # would raise on anything else
    assert state["format"] == "bayesirl.svi-checkpoint/2" and state["step"] == KW["steps"]
    assert all(isinstance(v, (str, int, float, type(None))) for v in state["fingerprint"].values())


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: code that a loader must never run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_crafted_pickle_payload_is_refused_without_running(problem, tmp_path, how):
    mdp, demos, model = problem
    marker, path = tmp_path / "ran", tmp_path / "evil.ckpt"
    payload = {"format": "bayesirl.svi-checkpoint/2", "step": 0, "x": _Payload(marker)}
    if how == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(ValueError) as error:
        birl.infer(mdp, demos, model, checkpoint=path, **KW)
    assert str(error.value).startswith(f"checkpoint {path} is not a readable bayesirl SVI "
                                       "checkpoint (it must hold tensors and plain values only)")
    assert "\n" not in str(error.value)
    assert not marker.exists()


def test_digest_depends_on_content_only():
    """Equal content digests equally (in any process: no ids, no addresses), any change of a
    value, dtype or shape does not; 0-d tensors, bools and NaN included."""
    from bayesirl.inference.target import digest

    def thing(x=1.5, dtype=torch.float64):
        return {"a": torch.tensor(x, dtype=dtype), "b": [torch.ones(2, 3, dtype=torch.bool),
                                                        float("nan"), None, "s"],
                "prior": dist.Normal(torch.zeros(2), 1.0), "model": birl.TabularReward(3)}

    assert digest(thing()) == digest(thing())
    assert len({digest(thing()), digest(thing(2.5)), digest(thing(dtype=torch.float32)),
                digest({**thing(), "b": []}), digest(birl.GPReward(torch.zeros(3, 1))),
                digest(birl.GPReward(torch.ones(3, 1)))}) == 6


@pytest.mark.parametrize("model", ["gp", "gp-hyper", "neural", "tabular-sa"])
def test_every_reward_model_fingerprints(problem, tmp_path, model):
    """A checkpoint is written and resumed for each kind of reward model (their parameters,
    0-d hyperparameter tensors and networks included)."""
    mdp, demos, _ = problem
    coords = torch.arange(mdp.n_states, dtype=torch.float64)[:, None]
    make = {"gp": lambda: birl.GPReward(coords, lengthscale=2.0),
            "gp-hyper": lambda: birl.GPReward(coords, lengthscale=dist.LogNormal(0.0, 1.0)),
            "neural": lambda: birl.NeuralReward(mdp.features, hidden=(3,)),
            "tabular-sa": lambda: birl.TabularReward(mdp.n_states, mdp.n_actions)}[model]
    path = tmp_path / "svi.ckpt"
    kw = {**KW, "steps": 10, "checkpoint_every": 5}
    first = birl.infer(mdp, demos, make(), checkpoint=path, **kw)
    again = birl.infer(mdp, demos, make(), checkpoint=path, **kw)
    assert again.extra["elbo"] == first.extra["elbo"]


@pytest.mark.parametrize("where, match", [
    ("missing/ck.pt", "its directory .* does not exist"),
    (".", "a directory; expected the path of a file"),
])
def test_a_checkpoint_in_no_directory_is_refused_before_svi_starts(problem, tmp_path, where,
                                                                   match, monkeypatch):
    import bayesirl.inference.svi as svi_module

    def never(*args, **kwargs):
        raise AssertionError("SVI ran")

    monkeypatch.setattr(svi_module, "run_svi", never)
    mdp, demos, model = problem
    with pytest.raises(ValueError, match=f"checkpoint is .*{match}"):
        birl.infer(mdp, demos, model, method="svi", steps=300, progress=False,
                   checkpoint=tmp_path / where)
