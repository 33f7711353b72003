"""Counterfactuals over posterior draws: stationary and discounted occupancies, Rust's demand."""

import importlib
import math

import numpy as np
import pytest
import torch

import bayesirl as birl
from bayesirl.core.dynamics import DirichletTransitions, TransitionSupport
from bayesirl.decisions.counterfactual import (
    FixedDynamicsWarning,
    band,
    counterfactual,
    discounted_occupancy,
    replacement_demand,
    stationary_distribution,
)
from bayesirl.posterior.full_likelihood import FullLikelihoodPosterior
from bayesirl.posterior.reward_posterior import RewardPosterior
from bayesirl.testing import naive_log_policy

# the module, which the package's function of the same name shadows as an attribute
cf = importlib.import_module("bayesirl.decisions.counterfactual")
KEEP, REPLACE = 0, 1


def tiny_bus(p=0.5, discount=0.0, scale=1.0):
    """Three mileage bins; keep moves up one bin with probability p (the top bin absorbs);
    replace restarts from bin 0 and then moves like keep from there. Features: keep
    ``(-scale * x, 0)``, replace ``(0, -1)``, so theta = (theta_11, RC) as in Rust's model."""
    P = torch.zeros(3, 2, 3)
    for s in range(3):
        P[s, KEEP, s] += 1 - p
        P[s, KEEP, min(s + 1, 2)] += p
    P[:, REPLACE] = P[0, KEEP]
    phi = torch.zeros(3, 2, 2)
    phi[:, KEEP, 0] = -scale * torch.arange(3.0)
    phi[:, REPLACE, 1] = -1.0
    return birl.TabularMDP.from_dense(P, discount=discount, features=phi,
                                      feature_names=("theta_11", "RC"))


def posterior_of(mdp, theta):
    """A RewardPosterior of a linear reward with the given theta draws ``(D, 2)``."""
    theta = torch.as_tensor(theta, dtype=torch.float64)
    rewards = torch.einsum("dk,sak->dsa", theta, mdp.features)
    return RewardPosterior(mdp, rewards.unsqueeze(0), params={"theta": theta.unsqueeze(0)},
                           settings={"likelihood": "soft"}, dims={"theta": ("feature",)},
                           coords={"feature": ["theta_11", "RC"]})


def brute_stationary(mdp, policy):
    """Stationary distribution by the eigenvector of the dense controlled chain (NumPy)."""
    P = mdp.transition_matrix().numpy()
    chain = np.einsum("sa,sat->st", policy.numpy(), P)
    w, v = np.linalg.eig(chain.T)
    d = np.real(v[:, np.argmin(np.abs(w - 1))])
    return torch.tensor(d / d.sum())


def test_stationary_distribution_of_the_three_state_bus_is_the_hand_computed_one():
    # replace only in the top bin: d0 = d0/2 + d2/2, d1 = d0/2 + d1/2 + d2/2, d2 = d1/2
    mdp = tiny_bus()
    policy = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    d = stationary_distribution(mdp, policy)
    assert torch.allclose(d, torch.tensor([0.25, 0.5, 0.25]), atol=1e-14)


def test_replacement_demand_of_a_myopic_bus_is_the_hand_computed_rate():
    # discount 0: P(replace | x) = sigmoid(theta_11 x - RC) = 1/2, 3/4, 9/10 at theta_11 = log 3,
    # RC = 0; the stationary chain then has d = (63, 72, 10) / 145, so replacements per month
    # are (63/2 + 72 * 3/4 + 10 * 9/10) / 145 = 189/290
    mdp = tiny_bus(discount=0.0)
    post = posterior_of(mdp, [[math.log(3), 5.0]] * 4)
    curve = replacement_demand(post, [0.0], progress=False)
    assert curve.draws.shape == (1, 4)
    assert torch.allclose(curve.draws, torch.full((1, 4), 12 * 189 / 290), atol=1e-12)
    c = counterfactual(post, params={"theta": [math.log(3), 0.0]}, progress=False)
    assert torch.allclose(c.state_distribution()[0], torch.tensor([63, 72, 10]) / 145,
                          atol=1e-14)


def test_stationary_distribution_matches_the_eigenvector_of_the_controlled_chain():
    mdp = tiny_bus(p=0.3, discount=0.95)
    theta = torch.tensor([[2.0, 1.5], [0.5, 3.0], [1.0, 0.1]])
    rewards = torch.einsum("dk,sak->dsa", theta, mdp.features)
    c = counterfactual(rewards, mdp=mdp, progress=False)
    for i in range(3):
        policy = naive_log_policy(mdp, rewards[i]).exp()
        assert torch.allclose(c.policy[i], policy, atol=1e-9)
        assert torch.allclose(c.state_distribution()[i], brute_stationary(mdp, policy),
                              atol=1e-9)
    assert torch.allclose(c.occupancy.sum((-2, -1)), torch.ones(3), atol=1e-12)


def test_batched_draws_equal_draws_one_at_a_time():
    mdp = tiny_bus(p=0.4, discount=0.9)
    g = torch.Generator().manual_seed(0)
    theta = torch.rand(7, 2, generator=g) * torch.tensor([3.0, 4.0])
    post = posterior_of(mdp, theta)
    grid = [0.5, 2.0, 6.0]
    curve = replacement_demand(post, grid, chunk_size=5, progress=False)
    for i in range(7):
        one = replacement_demand(posterior_of(mdp, theta[i:i + 1]), grid, progress=False)
        assert torch.allclose(curve.draws[:, i], one.draws[:, 0], rtol=1e-12, atol=1e-14)
    whole = counterfactual(post, occupancy="discounted", progress=False)
    looped = torch.cat([counterfactual(posterior_of(mdp, theta[i:i + 1]),
                                       occupancy="discounted", progress=False).occupancy
                        for i in range(7)])
    assert torch.allclose(whole.occupancy, looped, rtol=1e-12, atol=1e-14)


def test_demand_falls_as_the_replacement_cost_rises_and_the_band_brackets_the_mean():
    mdp = tiny_bus(p=0.5, discount=0.9)
    g = torch.Generator().manual_seed(1)
    theta = torch.stack([1.0 + 0.3 * torch.randn(200, generator=g),
                         2.0 + 0.5 * torch.randn(200, generator=g)], -1)
    curve = replacement_demand(posterior_of(mdp, theta), torch.linspace(0.0, 8.0, 9),
                               prob=0.9, progress=False)
    assert curve.mean.shape == curve.lower.shape == curve.upper.shape == (9,)
    assert (curve.lower <= curve.mean).all() and (curve.mean <= curve.upper).all()
    assert (curve.lower < curve.upper).all()  # theta_11 varies: the band has width
    assert (curve.mean.diff() < 0).all()
    wider = band(curve.draws, prob=0.99, dim=1)
    assert (wider.lower <= curve.lower).all() and (wider.upper >= curve.upper).all()


def test_discounted_occupancy_matches_the_iterative_occupancy():
    mdp = tiny_bus(p=0.3, discount=0.9)
    mdp = mdp.replace(initial=torch.tensor([0.6, 0.3, 0.1]), discount=0.9)
    policy = torch.softmax(torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(2)), -1)
    exact = discounted_occupancy(mdp, policy)
    assert torch.allclose(exact, birl.occupancy(mdp, policy, solver="iterate"), atol=1e-8)
    assert torch.allclose(exact.sum((-2, -1)), torch.full((4,), 10.0), atol=1e-10)


def test_the_lazy_chain_beyond_the_dense_limit_agrees_with_the_dense_solve(monkeypatch):
    mdp = tiny_bus(p=0.3, discount=0.9)
    policy = torch.softmax(torch.randn(5, 3, 2, generator=torch.Generator().manual_seed(3)), -1)
    dense = stationary_distribution(mdp, policy)
    monkeypatch.setattr(cf, "DENSE_MAX_STATES", 0)
    assert torch.allclose(stationary_distribution(mdp, policy), dense, atol=1e-10)


def test_changed_dynamics_and_params_reach_the_implied_policy():
    mdp = tiny_bus(p=0.3, discount=0.9)
    theta = torch.tensor([[1.0, 2.0], [1.5, 2.5]])
    post = posterior_of(mdp, theta)
    base = counterfactual(post, progress=False)
    # the same world recomputed: the posterior's own rewards
    assert torch.allclose(base.rewards, post.reward())
    # faster mileage: more time in high bins, more replacements
    fast_mdp = tiny_bus(p=0.7, discount=0.9)
    fast = counterfactual(post, mdp=fast_mdp, progress=False)
    rate = fast.occupancy[..., REPLACE].sum(-1)
    assert (rate > base.occupancy[..., REPLACE].sum(-1)).all()
    # the same dynamics as new probabilities on the posterior MDP's successors
    faster = fast_mdp.transition_matrix().gather(-1, mdp.successors)
    same = counterfactual(post, transition_probs=faster, progress=False)
    assert torch.allclose(same.occupancy, fast.occupancy, atol=1e-12)
    # a function of the draws: RC doubled
    doubled = counterfactual(post, params=lambda d: {"theta": d["theta"] * torch.tensor(
        [1.0, 2.0])}, progress=False)
    assert torch.allclose(doubled.rewards[:, :, REPLACE], -2 * theta[:, 1:].expand(2, 3))
    summary = doubled.summary(lambda pi, occ: occ[..., REPLACE].sum(-1), prob=0.5)
    assert summary.mean.shape == ()
    # rewards changed directly
    shifted = counterfactual(post, reward=lambda r: r + 1.0, progress=False)
    assert torch.allclose(shifted.policy, base.policy, atol=1e-10)  # a constant changes nothing


def test_a_chain_with_two_recurrent_classes_has_no_stationary_distribution():
    P = torch.zeros(3, 1, 3)
    P[0, 0, 0] = P[2, 0, 2] = 1.0
    P[1, 0, 0] = P[1, 0, 2] = 0.5
    mdp = birl.TabularMDP.from_dense(P, discount=0.9)
    with pytest.raises(ValueError, match="no unique stationary distribution"):
        stationary_distribution(mdp, torch.ones(3, 1))


def test_the_lazy_chain_also_refuses_two_recurrent_classes(monkeypatch):
    """Beyond the dense limit the lazy chain from uniform alone converged to (1/2, 0, 1/2)."""
    P = torch.zeros(3, 1, 3)
    P[0, 0, 0] = P[2, 0, 2] = 1.0
    P[1, 0, 0] = P[1, 0, 2] = 0.5
    mdp = birl.TabularMDP.from_dense(P, discount=0.9)
    monkeypatch.setattr(cf, "DENSE_MAX_STATES", 0)
    with pytest.raises(ValueError, match="no unique stationary distribution .* draw 0"):
        stationary_distribution(mdp, torch.ones(3, 1))


def test_a_changed_rationality_is_the_planners_and_p_is_not_a_reward_site():
    mdp = tiny_bus(p=0.3, discount=0.9)
    theta = torch.tensor([[1.0, 2.0], [1.5, 2.5]])
    rewards = torch.einsum("dk,sak->dsa", theta.double(), mdp.features)
    post = RewardPosterior(mdp, rewards.unsqueeze(0),
                           params={"theta": theta.double().unsqueeze(0),
                                   "rationality": torch.ones(1, 2, dtype=torch.float64)},
                           settings={"likelihood": "soft"}, dims={"theta": ("feature",)},
                           coords={"feature": ["theta_11", "RC"]})
    base = counterfactual(post, progress=False)
    sharp = counterfactual(post, params={"rationality": 10.0}, progress=False)
    want = cf.action_log_probs(mdp, post.reward(), "soft", torch.full((2,), 10.0)).exp()
    assert torch.allclose(sharp.policy, want)
    assert not torch.allclose(sharp.policy, base.policy, atol=1e-3)
    via_function = counterfactual(post, params=lambda d: {**d, "rationality": 10 * d[
        "rationality"]}, progress=False)
    assert torch.allclose(via_function.policy, want)


def offset_bus(discount=0.9):
    """Three bins from a first stage: keep moves up 0 or 1 bin, replace restarts at bin 0 and
    then moves; one group of increment probabilities (Rust's tying), features as
    :func:`tiny_bus`'s. The MDP's successors are the support's, as a full likelihood needs."""
    support = TransitionSupport.from_offsets(3, 2, offsets=(0, 1), origin=(None, 0))
    phi = torch.zeros(3, 2, 2, dtype=torch.float64)
    phi[:, KEEP, 0] = -torch.arange(3.0)
    phi[:, REPLACE, 1] = -1.0
    stage = DirichletTransitions.from_counts(support, torch.tensor([[6.0, 4.0]]))
    return stage.to_mdp(discount=discount, features=phi, feature_names=("theta_11", "RC"),
                        dtype=torch.float64), support


def full_posterior(mdp, support, theta, p, cls=FullLikelihoodPosterior, **kwargs):
    """A posterior of a linear reward with draws of theta ``(D, 2)`` and of p ``(D, 1, 2)``."""
    theta = torch.as_tensor(theta, dtype=torch.float64)
    p = torch.as_tensor(p, dtype=torch.float64)
    rewards = torch.einsum("dk,sak->dsa", theta, mdp.features)
    return cls(mdp, rewards.unsqueeze(0), params={"theta": theta.unsqueeze(0),
                                                  "p": p.unsqueeze(0)},
               settings={"likelihood": "soft"}, dims={"theta": ("feature",),
                                                      "p": ("group", "slot")},
               coords={"feature": ["theta_11", "RC"]}, **kwargs)


THETA = [[1.0, 2.0], [1.5, 2.5]]
P_DRAWS = [[[0.7, 0.3]], [[0.1, 0.9]]]  # (D, G, K): far apart, so that the draws' own p matter


def by_hand(mdp, rewards, probs, kind="stationary"):
    """Each draw planned alone in its own probabilities: policies and occupancies (D, S, A)."""
    pis, occs = [], []
    for r, P in zip(rewards, probs, strict=True):
        world = mdp.with_probabilities(P)
        pi = cf.action_log_probs(world, r, "soft", 1.0).exp()
        pis.append(pi)
        occs.append(stationary_distribution(world, pi).unsqueeze(-1) * pi if kind ==
                    "stationary" else discounted_occupancy(world, pi))
    return torch.stack(pis), torch.stack(occs)


@pytest.mark.parametrize("kind", ["stationary", "discounted"])
def test_a_full_likelihood_posterior_plans_each_draw_in_its_own_transition_probabilities(kind):
    mdp, support = offset_bus()
    post = full_posterior(mdp, support, THETA, P_DRAWS, transition_groups=support.groups)
    probs = post.transition_probs()
    assert probs.shape == (2, 3, 2, 2)
    torch.testing.assert_close(probs[1, 2, KEEP], torch.tensor([0.1, 0.9], dtype=torch.float64))
    out = counterfactual(post, occupancy=kind, progress=False, chunk_size=1)  # no warning
    want_pi, want_occ = by_hand(mdp, post.reward(), probs, kind)
    torch.testing.assert_close(out.policy, want_pi)
    torch.testing.assert_close(out.occupancy, want_occ)
    torch.testing.assert_close(out.transitions, probs)
    # planned in the first stage's probabilities instead, the draws' policies differ
    fixed = counterfactual(post, transition_probs=mdp.transition_probs, occupancy=kind,
                           progress=False)
    assert fixed.transitions is None
    assert not torch.allclose(fixed.policy[1], out.policy[1], atol=1e-3)
    # "draws" beside a changed discount: each draw's own p in that MDP
    slower = mdp.replace(discount=0.5)
    again = counterfactual(post, mdp=slower, transition_probs="draws", occupancy=kind,
                           progress=False)
    torch.testing.assert_close(again.policy, by_hand(slower, post.reward(), probs, kind)[0])


def test_replacement_demand_plans_each_cost_and_draw_in_the_draws_own_p():
    mdp, support = offset_bus()
    post = full_posterior(mdp, support, THETA, P_DRAWS, transition_groups=support.groups)
    grid = torch.tensor([1.0, 3.0], dtype=torch.float64)
    curve = replacement_demand(post, grid, progress=False, chunk_size=3)
    probs = post.transition_probs()
    for g, cost in enumerate(grid):
        theta = torch.tensor(THETA, dtype=torch.float64)
        theta[:, 1] = cost
        rewards = torch.einsum("dk,sak->dsa", theta, mdp.features)
        _, occ = by_hand(mdp, rewards, probs)
        torch.testing.assert_close(curve.draws[g], 12 * occ[..., REPLACE].sum(-1))
    fixed = replacement_demand(post, grid, transition_probs=mdp.transition_probs,
                               progress=False)
    assert not torch.allclose(fixed.draws, curve.draws, atol=1e-3)


def test_the_layout_of_the_draws_of_p_is_saved_and_loaded(tmp_path):
    mdp, support = offset_bus()
    post = full_posterior(mdp, support, THETA, P_DRAWS, transition_groups=support.groups)
    post.save(tmp_path / "full.nc")
    back = FullLikelihoodPosterior.load(tmp_path / "full.nc", mdp)
    assert torch.equal(back.transition_groups, support.groups)
    torch.testing.assert_close(back.transition_probs(), post.transition_probs())
    torch.testing.assert_close(counterfactual(back, progress=False).policy,
                               counterfactual(post, progress=False).policy)
    # read as a plain RewardPosterior, the draws of p have no layout: planned in one MDP, warned
    plain = RewardPosterior.load(tmp_path / "full.nc", mdp)
    with pytest.warns(FixedDynamicsWarning, match="leaves out the dynamics' uncertainty"):
        counterfactual(plain, progress=False)


def test_a_posterior_with_draws_of_p_but_no_layout_warns_that_it_plans_in_one_mdp():
    mdp, support = offset_bus()
    for post in (full_posterior(mdp, support, THETA, P_DRAWS, cls=RewardPosterior),
                 full_posterior(mdp, support, THETA, P_DRAWS)):  # transition_groups None
        with pytest.warns(FixedDynamicsWarning, match="leaves out the dynamics' uncertainty"):
            counterfactual(post, progress=False)
        with pytest.warns(FixedDynamicsWarning):
            replacement_demand(post, torch.tensor([1.0, 2.0]), progress=False)
        counterfactual(post, transition_probs=mdp.transition_probs, progress=False)  # quiet
        with pytest.raises(ValueError, match=r"transition_probs='draws' needs a posterior"):
            counterfactual(post, transition_probs="draws", progress=False)
        with pytest.raises(ValueError, match=r"params\['p'\] would change the transition"):
            counterfactual(post, params={"p": torch.tensor(P_DRAWS)},
                           transition_probs=mdp.transition_probs, progress=False)
    with pytest.raises(ValueError, match="transition_groups is None"):
        post.transition_probs()


def test_bad_per_draw_dynamics_inputs_are_named():
    mdp, support = offset_bus()
    post = full_posterior(mdp, support, THETA, P_DRAWS, transition_groups=support.groups)
    with pytest.raises(ValueError, match=r"transition_probs is 'draw', expected 'draws'"):
        counterfactual(post, transition_probs="draw", progress=False)
    with pytest.raises(ValueError, match="give mdp or transition_probs, not both"):
        counterfactual(post, mdp=mdp, transition_probs=mdp.transition_probs, progress=False)
    other = birl.TabularMDP.from_dense(mdp.transition_matrix(), discount=0.9)  # K = S
    with pytest.raises(ValueError, match="has other successors"):
        counterfactual(post, mdp=other, transition_probs="draws", progress=False)
    with pytest.raises(ValueError, match=r"transition_groups must have shape \(3, 2\)"):
        full_posterior(mdp, support, THETA, P_DRAWS,
                       transition_groups=torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="transition_groups must be integer"):
        full_posterior(mdp, support, THETA, P_DRAWS, transition_groups=torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"expected group indices in \[0, 1\)"):
        full_posterior(mdp, support, THETA, P_DRAWS,
                       transition_groups=torch.ones(3, 2, dtype=torch.long))


@pytest.fixture(scope="module")
def small():
    mdp = tiny_bus(discount=0.5)
    return mdp, posterior_of(mdp, [[1.0, 2.0], [1.2, 2.2]])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(cost_grid=[]), ValueError, r"cost_grid must be a non-empty 1-d sequence"),
    (dict(cost_grid=[1.0, math.nan]), ValueError, r"cost_grid must be .* finite"),
    (dict(cost_grid=[[1.0]]), ValueError, r"cost_grid must be a non-empty 1-d"),
    (dict(prob=1.0), ValueError, r"prob is 1.0, expected a number in \(0, 1\)"),
    (dict(feature="price"), ValueError, r"feature 'price' is not among .*'theta_11', 'RC'"),
    (dict(replace_action=2), ValueError, r"replace_action is 2, expected an action index in"),
    (dict(periods_per_year=0), ValueError, r"periods_per_year is 0, expected a number > 0"),
    (dict(chunk_size=0), ValueError, r"chunk_size is 0, expected an integer >= 1"),
    (dict(site="w"), ValueError, r"the posterior has no site 'w'"),
    (dict(mdp=birl.TabularMDP.from_dense(torch.ones(4, 2, 4) / 4, discount=0.5)),
     ValueError, r"mdp has S=4, A=2 but the posterior's MDP has S=3, A=2"),
])
def test_bad_demand_inputs_raise_naming_the_argument(small, kwargs, error, match):
    mdp, post = small
    kwargs = {"cost_grid": [1.0], **kwargs}
    with pytest.raises(error, match=match):
        replacement_demand(post, progress=False, **kwargs)


def test_bad_counterfactual_inputs_raise_naming_the_argument(small):
    mdp, post = small
    with pytest.raises(ValueError, match=r"occupancy is 'total', expected one of"):
        counterfactual(post, occupancy="total", progress=False)
    with pytest.raises(ValueError, match=r"transition_probs must have shape \(3, 2, 2\)"):
        counterfactual(post, transition_probs=torch.ones(3, 2, 3) / 3, progress=False)
    with pytest.raises(ValueError, match=r"transition_probs\[0, 0\] sums to 2"):
        counterfactual(post, transition_probs=torch.ones(3, 2, 2), progress=False)
    with pytest.raises(ValueError, match="give mdp or transition_probs, not both"):
        counterfactual(post, mdp=mdp, transition_probs=mdp.transition_probs, progress=False)
    with pytest.raises(ValueError, match="params names site 'w'"):
        counterfactual(post, params={"w": 1.0}, progress=False)
    with pytest.raises(ValueError, match=r"params\['theta'\] has shape \(3,\)"):
        counterfactual(post, params={"theta": [1.0, 2.0, 3.0]}, progress=False)
    with pytest.raises(TypeError, match="posterior must be a RewardPosterior"):
        counterfactual("draws", progress=False)
    with pytest.raises(ValueError, match="horizon 4; counterfactual occupancies need"):
        counterfactual(post, mdp=mdp.replace(horizon=4), progress=False)
    with pytest.raises(ValueError, match="reward draws need mdp"):
        counterfactual(post.reward(), progress=False)
    with pytest.raises(ValueError, match="prob is 0, expected"):
        band(post.reward(), prob=0)
    tabular = RewardPosterior(mdp, post.rewards + 1.0, params=post.params,
                              coords=post.coords)
    with pytest.raises(ValueError, match="not the MDP's features times 'theta'"):
        replacement_demand(tabular, [1.0], progress=False)
