"""What to ask next and what to do for a new member: mutual information (exact and simulated)
against known answers, pair and expert rankings, the population's robust policy."""

import math

import pytest
import torch

import bayesirl as birl
from bayesirl.core.preferences import Preferences
from bayesirl.decisions.information import (
    demonstration_information_gain,
    expert_information_gain,
    mutual_information,
    pair_information_gain,
    population_robust_policy,
)
from bayesirl.model.hierarchical import HierarchicalReward, simulate_experts
from bayesirl.model.preferences import PreferenceModel
from bayesirl.testing import tiny_chain_mdp


def _entropy(p):
    return -sum(x * math.log(x) for x in p if x > 0)


def test_mutual_information_has_its_known_values():
    opposite = torch.tensor([[1.0, 0.0], [0.0, 1.0]])               # two draws, K = 2
    assert float(mutual_information(opposite)) == pytest.approx(math.log(2))
    agree = torch.tensor([[0.3, 0.7], [0.3, 0.7]])
    assert float(mutual_information(agree)) == pytest.approx(0.0, abs=1e-15)
    eps = 0.1
    soft = torch.tensor([[1 - eps, eps], [eps, 1 - eps]])
    assert float(mutual_information(soft)) == pytest.approx(
        math.log(2) - _entropy([eps, 1 - eps]))
    # weighted draws: I = H(w) for deterministic opposite answers
    w = torch.tensor([0.2, 0.8])
    assert float(mutual_information(opposite, w)) == pytest.approx(_entropy([0.2, 0.8]))
    with pytest.raises(ValueError, match="sum to 1"):
        mutual_information(torch.tensor([[0.5, 0.6], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="weights must be 2 non-negative"):
        mutual_information(opposite, torch.tensor([1.0, -1.0]))


def test_pair_gain_is_largest_where_the_draws_disagree():
    F = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [0.0, 0.0]])
    prefs = Preferences.from_pairs([[0, 1]], features=F)
    target = PreferenceModel(birl.LinearReward(torch.eye(2)), rationality=50.0).build_target(
        None, prefs)
    # two draws that agree about trajectory 2 against 3 but not about 0 against 1
    post = target.make_posterior({"theta": torch.tensor([[1.0, 0.0], [0.0, 1.0]])},
                                 method="draws")
    candidates = Preferences.from_pairs([[2, 3], [0, 1]], features=F)
    result = pair_information_gain(post, candidates)
    assert result.best == 1
    assert float(result.gain[1]) == pytest.approx(math.log(2), abs=1e-9)
    assert float(result.gain[0]) == pytest.approx(0.0, abs=1e-9)
    assert (result.stderr == 0).all()
    with pytest.raises(TypeError, match="candidates must be Preferences"):
        pair_information_gain(post, [[0, 1]])


def _one_state_mdp():
    """One state, two actions, horizon 1: a demonstration is one action."""
    P = torch.ones(1, 2, 1)
    return birl.TabularMDP.from_dense(P, horizon=1, features=torch.ones(1, 2, 1))


def test_demonstration_gain_estimates_the_mutual_information_of_a_binary_answer():
    mdp = _one_state_mdp()
    eps = 0.2
    pi = torch.tensor([[1 - eps, eps], [eps, 1 - eps]])              # two draws
    same = torch.tensor([[0.6, 0.4], [0.6, 0.4]])
    log_policy = torch.stack([pi, same], 1).log()[:, :, None, None]  # (D=2, Q=2, T=1, S=1, A)
    result = demonstration_information_gain(mdp, log_policy, n_rollouts=4000, seed=0)
    exact = math.log(2) - _entropy([eps, 1 - eps])
    assert abs(float(result.gain[0]) - exact) < 4 * float(result.stderr[0])
    assert float(result.stderr[0]) < 0.01
    assert float(result.gain[1]) == pytest.approx(0.0, abs=1e-12)
    assert result.best == 0


def test_demonstration_gain_checks_its_shapes():
    mdp = _one_state_mdp()
    with pytest.raises(ValueError, match=r"log_policy must have shape \(D, Q, T, S, A\)"):
        demonstration_information_gain(mdp, torch.zeros(2, 1, 2))
    with pytest.raises(ValueError, match="length is 2, expected an integer"):
        demonstration_information_gain(mdp, torch.zeros(2, 1, 1, 1, 2).log_softmax(-1),
                                       length=2)


def _hierarchical_posterior(mdp, tau=0.5):
    data, _ = simulate_experts(mdp, mdp.features, 2, mean=torch.tensor([1.0, -0.5]),
                               scale=0.5, n_experts=3, seed=0)
    target = HierarchicalReward(mdp.features, 3).build_target(mdp, data)
    g = torch.Generator().manual_seed(0)
    D = 6
    params = {"mu": torch.randn(D, 2, generator=g), "tau": torch.full((D, 2), tau),
              "z": torch.randn(D, 3, 2, generator=g)}
    return target.make_posterior(params, method="draws")


def test_expert_gain_is_zero_for_an_expert_the_draws_agree_on():
    mdp = tiny_chain_mdp(horizon=3)
    post = _hierarchical_posterior(mdp)
    post.params["z"][..., 2, :] = 0.0                       # expert 2: theta = mu in all draws
    post.params["mu"][:] = post.params["mu"][:, :1]         # and mu is certain
    post._rewards = None
    result = expert_information_gain(post, n_rollouts=8, seed=1)
    assert result.gain.shape == (3,)
    assert float(result.gain[2]) == pytest.approx(0.0, abs=1e-12)
    assert result.best in (0, 1) and float(result.gain[result.best]) > 0


def test_population_robust_policy_uses_the_predictive_rewards_of_a_new_member():
    mdp = tiny_chain_mdp(horizon=3)
    post = _hierarchical_posterior(mdp, tau=0.0)        # a new member is exactly mu
    got = population_robust_policy(mdp, post, alpha=0.9, lam=0.3)
    mu_rewards = post.params["mu"].reshape(-1, 2) @ mdp.features.T
    want = birl.decisions.robust_policy(mdp, mu_rewards, alpha=0.9, lam=0.3)
    torch.testing.assert_close(got.occupancy, want.occupancy)
    assert got.objective == pytest.approx(want.objective)
    wider = population_robust_policy(mdp, _hierarchical_posterior(mdp, tau=2.0), n=4)
    assert wider.returns.shape == (24,)
    separate = HierarchicalReward(mdp.features, 3, pooling="none").build_target(
        mdp, post.data).make_posterior({"theta": torch.randn(6, 3, 2)}, method="draws")
    with pytest.raises(ValueError, match="has no population"):
        population_robust_policy(mdp, separate)


def test_population_robust_policy_refuses_other_dynamics():
    """Documented: the MDP must have the posterior's transitions, not only its S and A (a
    deployment may change the horizon, discount or initial distribution)."""
    mdp = tiny_chain_mdp(horizon=3)
    post = _hierarchical_posterior(mdp)
    slippery = tiny_chain_mdp(horizon=3, slip=0.6)
    with pytest.raises(ValueError, match=r"their transition probabilities differ.*"
                                         r"posterior\.predictive_reward\(n\) to robust_policy"):
        population_robust_policy(slippery, post)
    with pytest.raises(ValueError, match=r"numbers of states differ \(3 vs 4\)"):
        population_robust_policy(birl.envs.gridworld(size=2, block=1, horizon=3), post)
    # the deployment's horizon and initial distribution may differ
    other = mdp.replace(discount=0.9, initial=torch.tensor([0.0, 0.0, 1.0], dtype=mdp.dtype))
    assert math.isfinite(population_robust_policy(other, post).objective)


def test_decision_tools_take_one_experts_posterior():
    mdp = tiny_chain_mdp(horizon=3)
    post = _hierarchical_posterior(mdp)
    one = post.expert(1)
    query = birl.decisions.active_query(mdp, one, criterion="info_gain")
    assert query.scores.shape == (3,)
    rewards = post.reward()[:, 1]
    direct = birl.decisions.active_query(mdp, rewards, criterion="info_gain")
    torch.testing.assert_close(query.scores, direct.scores)   # shared rationality 1
    robust = birl.decisions.robust_policy(mdp, one, alpha=0.9)
    torch.testing.assert_close(robust.returns,
                               birl.decisions.robust_policy(mdp, rewards, alpha=0.9).returns)
