"""The value-space model on continuous observations: its density against direct evaluation,
the Pyro model, inference through infer(), the posterior object, plots, and (slow) recovery of
a known reward and simulation-based calibration."""

import math
import subprocess
import sys
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesirl as birl
from bayesirl.core.control import (
    EXPERTS,
    acrobot_expert,
    cartpole_expert,
    lunar_lander_expert,
    make_env,
    point_mass,
)
from bayesirl.core.trajectories import Trajectories, evaluate
from bayesirl.model.q_function import FeatureMap, QFunction
from bayesirl.model.q_value import QValueModel, value_space_terms
from bayesirl.plots.continuous import plot_reward_slice, reward_slice
from bayesirl.posterior.continuous import ContinuousPosterior
from bayesirl.posterior.diagnostics import InferenceWarning


def _data(n=3, T=5, dim=2, A=3, seed=0, terminal_last=True):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, T + 1, dim, generator=g)
    acts = torch.randint(A, (n, T), generator=g)
    lengths = torch.tensor([T] + [max(1, T - 1 - i) for i in range(n - 1)])
    term = torch.zeros(n, dtype=torch.bool)
    term[0] = terminal_last
    return Trajectories.from_arrays(obs, acts, terminals=term, lengths=lengths, n_actions=A)


def _direct_log_density(target, w, likelihood):
    """The unnormalised log posterior of ``w`` by a loop over transitions."""
    m, qf, beta, gamma = target.model, target.q_function, target.rationality, target.discount
    tr = target.data.transitions()
    total = dist.Normal(0.0, qf.prior_scale()).log_prob(w).sum()
    for i in range(tr.obs.shape[0]):
        q = qf(w, tr.obs[i:i + 1])[0]
        q_next = qf(w, tr.next_obs[i:i + 1])[0]
        a = int(tr.actions[i])
        log_pi = beta * q[a] - torch.logsumexp(beta * q, 0)
        v = torch.logsumexp(beta * q_next, 0) / beta if likelihood == "soft" else q_next.max()
        r = q[a] - gamma * (0.0 if tr.terminals[i] else v)
        total = total + log_pi + dist.Normal(m.reward_loc, m.reward_scale).log_prob(r)
    return total


# ---------------------------------------------------------------------------- the density
@pytest.mark.parametrize("likelihood", ["soft", "boltzmann"])
@pytest.mark.parametrize("hidden, linearise, skip", [((), False, None), ((4,), False, None),
                                                     ((4,), True, None), ((4,), False, 2.0),
                                                     ((4,), True, 2.0)])
def test_the_potential_is_the_density_evaluated_directly(likelihood, hidden, linearise, skip):
    data = _data()
    model = QValueModel(hidden=hidden, n_fourier=3, weight_scale=1.5, reward_loc=0.2,
                        reward_scale=0.7, discount=0.9, linearise=linearise, skip_scale=skip,
                        fan_in=skip is None)
    target = model.build_target(None, data, likelihood=likelihood, rationality=1.7)
    w = 0.5 * torch.randn(target.n_params)
    u = target.unconstrain({"w": w})
    assert torch.allclose(target.constrain(u)["w"], w)
    direct = _direct_log_density(target, w, likelihood)
    assert torch.allclose(-target.potential(u, jacobian=False), direct)
    assert torch.allclose(-target.potential(u), direct + target.log_det)  # log |det L|


@pytest.mark.parametrize("kind", ["state", "state_action"])
def test_the_structured_reward_prior_is_the_marginal_gaussian(kind):
    data = _data(n=2, T=6, A=3)
    model = QValueModel(reward_prior=kind, reward_loc=0.3, reward_scale=0.8, reward_noise=0.2,
                        reward_fourier=4)
    prior = model.reward_prior_of(data)
    tr = data.transitions()
    at = prior.at(tr.obs, tr.actions)
    psi = prior.design(tr.obs, tr.actions)
    assert psi.shape == (data.n_transitions, 7 * (3 if kind == "state_action" else 1))
    cov = 0.2 ** 2 * torch.eye(len(psi)) + 0.8 ** 2 * psi @ psi.T
    r = torch.randn(5, len(psi))
    exact = dist.MultivariateNormal(torch.full((len(psi),), 0.3), cov).log_prob(r)
    assert torch.allclose(at.log_prob(r), exact)
    # theta | r: mean by the normal equations, covariance from many draws
    g = torch.Generator().manual_seed(0)
    draws = at.theta_given(r[0].expand(20000, -1), g)
    A = torch.eye(psi.shape[1]) / 0.8 ** 2 + psi.T @ psi / 0.2 ** 2
    mean = torch.linalg.solve(A, psi.T @ (r[0] - 0.3) / 0.2 ** 2)
    se = torch.sqrt(torch.diagonal(torch.linalg.inv(A)) / 20000)
    assert ((draws.mean(0) - mean).abs() / se).max() < 4.5
    assert torch.allclose(draws.var(0), torch.diagonal(torch.linalg.inv(A)), rtol=0.1)


def test_the_structured_reward_prior_is_accurate_in_float32():
    """Thousands of rewards and a small noise: the log density in float32 agrees with float64
    to a few float32 roundings of its terms. Woodbury's difference of two quadratic forms
    ``|r|^2 / noise^2 - |C^-1 Psi^T r|^2 / noise^4`` cancelled almost all of its size there
    (errors up to 3 nats here, which shrank NUTS's step size to nothing in float32)."""
    from bayesirl.model.q_value import RewardPrior

    g = torch.Generator().manual_seed(0)
    psi = torch.randn(3000, 50, generator=g, dtype=torch.float64)
    r = (psi @ torch.randn(50, 4, generator=g, dtype=torch.float64)).T  # (4, M)
    r = r + 0.1 * torch.randn(r.shape, generator=g, dtype=torch.float64) - 0.5

    def log_prob(dtype):
        prior = RewardPrior("state", -0.5, 1.0, 0.1, lambda obs: obs, 1)
        at = prior.at(psi.to(dtype), torch.zeros(len(psi), dtype=torch.long))
        return at.log_prob(r.to(dtype)).double()

    exact, single = log_prob(torch.float64), log_prob(torch.float32)
    assert float((single - exact).abs().max()) < 0.02, (single - exact, exact)


def test_with_dynamics_the_reward_prior_covers_every_action():
    task = point_mass(grid=5, discount=0.8, rationality=1.0)
    data = task.sample(2, 3, seed=0)
    model = QValueModel(reward_scale=0.7, discount=0.8, dynamics=task.dynamics)
    target = model.build_target(None, data, likelihood="soft", rationality=1.0)
    w = 0.5 * torch.randn(target.n_params)
    qf, tr = target.q_function, data.transitions()
    direct = dist.Normal(0.0, qf.prior_scale()).log_prob(w).sum()
    seen = set()  # the prior counts each distinct (s, a, s') once
    for i in range(tr.obs.shape[0]):
        q = qf(w, tr.obs[i:i + 1])[0]
        direct = direct + torch.log_softmax(q, 0)[tr.actions[i]]
        for a in range(task.n_actions):
            nxt = task.dynamics(tr.obs[i:i + 1], torch.tensor([a]))[0]
            key = (*tr.obs[i].tolist(), a, *nxt[0].tolist())
            if key not in seen:
                seen.add(key)
                r = q[a] - 0.8 * torch.logsumexp(qf(w, nxt)[0], 0)
                direct = direct + dist.Normal(0.0, 0.7).log_prob(r)
    assert len(seen) < tr.obs.shape[0] * task.n_actions  # the walls and "stay" repeat some
    assert torch.allclose(-target.potential(target.unconstrain({"w": w}), jacobian=False),
                          direct)


def _fixed_features(obs):
    return torch.cat([torch.ones_like(obs[:, :1]), obs, torch.sin(3 * obs)], 1)


def _twice(data):
    """The same trajectories twice over: every transition repeated exactly."""
    return Trajectories(*(torch.cat([getattr(data, k)] * 2)
                          for k in ("obs", "actions", "next_obs", "terminals", "mask")),
                        n_actions=data.n_actions)


@pytest.mark.parametrize("prior", ["iid", "state", "state_action", "iid-dynamics"])
def test_a_repeated_transition_adds_its_action_not_a_second_reward_prior_term(prior):
    """The reward prior is a prior on the reward function: a transition the data hold twice
    has one reward, whose prior density counts once, while its action is a second
    observation. So doubling the data adds exactly the actions' log-likelihood. (A term per
    visit made the prior of a state visited n times n independent observations of its
    reward, as strong as the data.)"""
    task = point_mass(grid=5, discount=0.8, rationality=1.0)
    data = task.sample(3, 4, seed=0)
    kind = prior.split("-")[0]
    dyn = task.dynamics if prior.endswith("dynamics") else None
    # fixed feature maps: the default ones standardise by the data's spread, which doubling
    # the data moves (the n - 1 in the sample variance)
    model = QValueModel(features=_fixed_features, reward_prior=kind, reward_noise=0.3,
                        reward_features=None if kind == "iid" else _fixed_features,
                        discount=0.8, dynamics=dyn, whiten=False)
    once = model.build_target(None, data, likelihood="soft", rationality=1.0)
    twice = model.build_target(None, _twice(data), likelihood="soft", rationality=1.0)
    assert twice.prior_rows.numel() == once.prior_rows.numel()
    w = 0.5 * torch.randn(once.n_params, generator=torch.Generator().manual_seed(0))
    gap = twice.log_joint(w) - once.log_joint(w)
    assert torch.allclose(gap, once.log_likelihood({"w": w}).sum()), prior
    if kind != "iid":
        assert torch.allclose(twice.theta_mean(w), once.theta_mean(w))


def test_the_pyro_model_counts_a_repeated_transition_once_in_the_reward_prior():
    """SVI's model has NUTS's density on data that repeat transitions, in both of its forms:
    the iid prior per step (the repeats masked) and AVRIL's latent rewards (the repeats'
    latent sites masked in the model and in the guide alike, or the guide's entropy would
    grow without bound there)."""
    data = _twice(_data(n=2, T=3))
    target = QValueModel(n_fourier=2).build_target(None, data, likelihood="soft",
                                                   rationality=1.0)
    assert target.prior_rows.numel() == data.n_transitions // 2
    w = 0.3 * torch.randn(target.n_params)
    trace = pyro.poutine.trace(pyro.poutine.condition(target.pyro_model(), data={"w": w})
                               ).get_trace()
    assert torch.allclose(trace.log_prob_sum(), -target.potential(
        target.unconstrain({"w": w}), jacobian=False))
    guide = target.guide("avril")
    r = pyro.poutine.trace(guide).get_trace().nodes["rewards"]["value"]  # (N, T)

    def log_probs(rewards):
        values = {"w": w, "rewards": rewards}
        model = pyro.poutine.trace(pyro.poutine.condition(target.pyro_model(), values))
        q = pyro.poutine.trace(pyro.poutine.condition(guide, values)).get_trace()
        return model.get_trace().log_prob_sum(), q.nodes["rewards"]["fn"].log_prob(rewards)

    base = log_probs(r)
    repeats, firsts = r.clone(), r.clone()
    repeats[2:] += 5.0  # the second copy of each trajectory
    firsts[:2] += 5.0
    assert all(torch.allclose(a, b) for a, b in zip(log_probs(repeats), base, strict=True))
    assert not any(torch.allclose(a, b) for a, b in zip(log_probs(firsts), base, strict=True))


def test_value_space_terms_follow_the_terminal_convention():
    q = torch.tensor([[1.0, 3.0], [0.0, 2.0]])  # two states, two actions
    s, a, nxt = torch.tensor([0, 0]), torch.tensor([1, 1]), torch.tensor([1, 1])
    log_pi, r = value_space_terms(q, s, a, nxt, torch.tensor([False, True]), 2.0, 0.5, "soft")
    v1 = torch.logsumexp(2.0 * q[1], 0) / 2.0
    assert torch.allclose(r, torch.stack([3.0 - 0.5 * v1, torch.tensor(3.0)]))
    assert torch.allclose(log_pi, torch.log_softmax(2.0 * q[0], 0)[1].expand(2))
    _, r_max = value_space_terms(q, s, a, nxt, torch.tensor([False, False]), 2.0, 0.5,
                                 "boltzmann")
    assert torch.allclose(r_max, torch.full((2,), 3.0 - 0.5 * 2.0))


@pytest.mark.parametrize("batch", [(), (5,), (2, 3)])
@pytest.mark.parametrize("hidden", [(), (3, 4)])
def test_q_functions_broadcast_over_batches_of_weights(batch, hidden):
    fmap = FeatureMap.fit(torch.randn(20, 3), n_fourier=4, seed=1)
    qf = QFunction(fmap, fmap.n_features, 2, hidden, level_scale=3.0)
    w = torch.randn(*batch, qf.n_params)
    obs = torch.randn(7, 3)
    q = qf(w, obs)
    assert q.shape == (*batch, 7, 2)
    flat = w.reshape(-1, qf.n_params)
    assert torch.allclose(q.reshape(-1, 7, 2)[-1], qf(flat[-1], obs))
    assert torch.equal(QFunction.from_spec(qf.spec())(w, obs), q)
    assert qf.prior_scale().shape == (qf.n_params,)


def test_features_standardise_the_data_and_keep_a_constant():
    obs = torch.randn(50, 2) * torch.tensor([3.0, 0.1]) + torch.tensor([5.0, -1.0])
    phi = FeatureMap.fit(obs)(obs)
    assert phi.shape == (50, 3) and torch.equal(phi[:, 0], torch.ones(50))
    assert torch.allclose(phi[:, 1:].mean(0), torch.zeros(2), atol=1e-12)
    assert torch.allclose(phi[:, 1:].std(0), torch.ones(2))


def test_crossing_with_flags_multiplies_the_features_by_each_two_valued_coordinate():
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(40, 4, generator=g)
    obs[:, 1] = torch.randint(2, (40,), generator=g).double() * 3 - 1  # values -1 and 2
    obs[:, 3] = torch.randint(2, (40,), generator=g).double()
    plain = FeatureMap.fit(obs, n_fourier=2, seed=3)
    fmap = FeatureMap.fit(obs, n_fourier=2, seed=3, cross_flags=True)
    assert fmap.flags == (1, 3) and torch.allclose(fmap.thresholds, torch.tensor([0.5, 0.5]))
    assert fmap.n_features == 3 * plain.n_features
    phi0, phi = plain(obs), fmap(obs)
    assert phi.shape == (40, fmap.n_features)
    on = torch.stack([obs[:, 1] > 0.5, obs[:, 3] > 0.5], 1).double()
    assert torch.allclose(phi, torch.cat([phi0, on[:, :1] * phi0, on[:, 1:] * phi0], 1))
    assert torch.equal(FeatureMap.from_spec(fmap.spec())(obs), phi)
    assert torch.equal(fmap(obs[None])[0], phi)  # leading batch dims
    assert "flags" not in plain.spec()


def test_cross_flags_refuses_data_without_a_flag_and_given_features():
    with pytest.raises(ValueError, match="no observation coordinate takes exactly two"):
        FeatureMap.fit(torch.randn(20, 3), cross_flags=True)
    with pytest.raises(ValueError, match="cross_flags crosses the default features"):
        QValueModel(features=lambda o: o, cross_flags=True)
    with pytest.raises(TypeError, match="cross_flags must be True or False"):
        QValueModel(cross_flags=1)


def test_a_q_crossed_with_a_flag_learns_an_expert_that_switches_with_it():
    # the expert pushes x toward 0 while the flag is off and away from 0 once it is on: the
    # action depends on x * flag, which a Q linear in (1, x, flag) cannot represent
    g = torch.Generator().manual_seed(1)
    n, T = 8, 30
    x = torch.randn(n, T + 1, generator=g)
    flag = (torch.rand(n, T + 1, generator=g) < 0.5).double()
    obs = torch.stack([x, flag], -1)
    acts = ((x[:, :-1] > 0) == (flag[:, :-1] > 0)).long()
    data = Trajectories.from_arrays(obs, acts, n_actions=2)
    tr = data.transitions()
    agree = {}
    for cross in (False, True):
        post = birl.infer(None, data, QValueModel(cross_flags=cross, weight_scale=10.0),
                          method="map", progress=False)
        with torch.no_grad():
            q = post.q_function(post.samples["w"][0], tr.obs)
        agree[cross] = float((q.argmax(-1) == tr.actions).double().mean())
    assert agree[True] > 0.9 and agree[False] < 0.7, agree
    assert post.settings["model"]["cross_flags"] is True


def test_the_pyro_model_has_the_potentials_density():
    data = _data()
    target = QValueModel(n_fourier=2).build_target(None, data, likelihood="soft",
                                                   rationality=1.0)
    w = 0.3 * torch.randn(target.n_params)
    model = pyro.poutine.condition(target.pyro_model(), data={"w": w})
    trace = pyro.poutine.trace(model).get_trace()
    u = target.unconstrain({"w": w})
    assert torch.allclose(trace.log_prob_sum(), -target.potential(u, jacobian=False))


def test_the_latent_reward_form_integrates_back_to_the_same_density():
    """One trajectory of one step: the latent reward's integral, on a fine grid, gives back
    the reward prior's factor, so AVRIL's form is the same model."""
    data = _data(n=1, T=1)
    target = QValueModel(reward_scale=0.8, bellman_noise=0.3).build_target(
        None, data, likelihood="soft", rationality=1.0)
    w = 0.3 * torch.randn(target.n_params)
    direct = pyro.poutine.trace(pyro.poutine.condition(target.pyro_model(), {"w": w})
                                ).get_trace().log_prob_sum()
    target.guide("avril")  # switches the model to latent rewards
    grid = torch.linspace(-6, 6, 241)  # trapezoid error ~exp(-2 pi^2 0.28^2 / 0.05^2)
    logs = torch.stack([pyro.poutine.trace(pyro.poutine.condition(
        target.pyro_model(), {"w": w, "rewards": r.reshape(1, 1)})).get_trace().log_prob_sum()
        for r in grid])
    integral = torch.logsumexp(logs, 0) + math.log(float(grid[1] - grid[0]))
    assert torch.allclose(integral, direct, atol=1e-6)


def test_duplicate_states_are_evaluated_once():
    data = _data(n=2, T=4)
    target = QValueModel().build_target(None, data, likelihood="soft", rationality=1.0)
    # s'_t = s_{t+1} within a trajectory: M + N distinct states, not 2 M
    assert target.states.shape[0] == data.n_transitions + data.n
    tr = data.transitions()
    assert torch.equal(target.states[target.s_idx], tr.obs)
    assert torch.equal(target.states[target.next_idx], tr.next_obs)


def test_whitening_puts_the_map_at_the_origin_with_unit_curvature():
    data = _data(n=4, T=6)
    target = QValueModel().build_target(None, data, likelihood="soft", rationality=1.0)
    u = {k: v.clone().requires_grad_(True) for k, v in target.init_unconstrained().items()}
    (g,) = torch.autograd.grad(target.potential(u), u["w"])
    assert g.abs().max() < 1e-4
    H = torch.autograd.functional.hessian(lambda x: target.potential({"w": x}),
                                          torch.zeros(target.n_params))
    assert torch.allclose(H, torch.eye(target.n_params), atol=1e-4)
    again = target.rewhitened(torch.randn(500, target.n_params) * 0.5 + 1.0)
    w = torch.randn(target.n_params)
    assert torch.allclose(again.params_of(again.whiten(w)), w)
    assert torch.allclose(again.potential({"w": again.whiten(w)}, jacobian=False),
                          target.potential({"w": target.whiten(w)}, jacobian=False))


def test_an_mlps_map_leaves_the_saddle_at_zero():
    """At w = 0 every hidden unit is the same and only the biases have a gradient: the MAP
    starts from a prior draw instead."""
    data = _data(n=3, T=8, A=2)
    target = QValueModel(hidden=(4,), whiten=False).build_target(None, data, likelihood="soft",
                                                                 rationality=1.0)
    w = target.map_estimate()
    first = w[:target.q_function.n_features * 4]
    assert first.abs().max() > 1e-3
    assert target.log_joint(w) > target.log_joint(torch.zeros_like(w))


def test_build_target_refuses_what_the_model_cannot_use():
    data = _data()
    model = QValueModel()
    with pytest.raises(ValueError, match="mdp must be None"):
        model.build_target(birl.envs.gridworld(size=4), data, likelihood="soft",
                           rationality=1.0)
    with pytest.raises(TypeError, match="data must be Trajectories"):
        model.build_target(None, np.zeros((3, 2)), likelihood="soft", rationality=1.0)
    with pytest.raises(TypeError, match="rationality must be a number"):
        model.build_target(None, data, likelihood="soft", rationality=dist.LogNormal(0., 1.))
    with pytest.raises(ValueError, match="bellman_noise is 2.0"):
        QValueModel(reward_scale=1.0, bellman_noise=2.0)
    with pytest.raises(ValueError, match="hidden is"):
        QValueModel(hidden=(0,))
    with pytest.raises(ValueError, match="n_fourier would be ignored"):
        QValueModel(features=lambda obs: obs, n_fourier=3)
    with pytest.raises(ValueError, match="reward_features would be ignored"):
        QValueModel(reward_features=lambda obs: obs)
    with pytest.raises(ValueError, match="reward_fourier would be ignored"):
        QValueModel(reward_prior="state", reward_features=lambda obs: obs, reward_fourier=2)
    bad = QValueModel(dynamics=lambda o, a: (torch.full_like(o, math.nan), torch.zeros(len(o))))
    with pytest.raises(ValueError, match=r"dynamics' next_obs\[0, 0\] is nan"):
        bad.build_target(None, data, likelihood="soft", rationality=1.0)


# ---------------------------------------------------------------------------- inference
@pytest.fixture(scope="module")
def cartpole_post():
    data = birl.core.rollout("CartPole-v1", cartpole_expert, 2, seed=0, max_steps=40,
                             progress=False)
    with pytest.warns(InferenceWarning):  # 2 x 100 draws: too few for 400 ESS, as it says
        post = birl.infer(None, data, QValueModel(), method="nuts", num_samples=100,
                          warmup=60, num_chains=2, parallel=False, progress=False, seed=0)
    return post


def test_nuts_through_infer_gives_a_continuous_posterior(cartpole_post):
    post = cartpole_post
    M, N = post.data.n_transitions, post.data.n
    assert isinstance(post, ContinuousPosterior) and post.method == "nuts"
    assert post.samples["w"].shape == (200, 11)  # 5 features x 2 actions, and a level
    assert post.reward().shape == (200, M)
    assert post.log_lik.shape == (2, 100, N)
    assert {"diverging", "step_size", "n_steps"} <= set(post.sample_stats)
    lo, hi = post.credible_interval(0.9)
    assert ((lo <= post.mean_reward()) & (post.mean_reward() <= hi)).all()


def test_rewards_anywhere_match_the_data_where_the_successor_is_known(cartpole_post):
    post = cartpole_post
    tr = post.data.transitions()
    exact = post.reward_at(tr.obs, tr.actions, tr.next_obs, tr.terminals)
    assert torch.allclose(exact, post.reward())
    # at an observed (s, a) the one-step model with one neighbour is the observed s'
    nxt, p_term = post.one_step(tr.obs, tr.actions, neighbours=1)
    assert torch.allclose(nxt, tr.next_obs) and torch.equal(p_term, tr.terminals.double())
    assert torch.allclose(post.reward_at(tr.obs, tr.actions, neighbours=1), post.reward())
    band = post.reward_band(tr.obs[:4] + 0.01, tr.actions[:4])
    assert (band.lower <= band.mean).all() and (band.mean <= band.upper).all()


def test_queries_of_the_wrong_shape_or_action_are_refused_by_name(cartpole_post):
    post = cartpole_post  # CartPole: 4 coordinates, 2 actions
    obs = post.data.transitions().obs[:2]
    with pytest.raises(ValueError, match=r"obs must have shape \(M, 4\), got \(2, 3\)"):
        post.q_values(obs[:, :3])
    with pytest.raises(ValueError, match=r"next_obs must have shape \(M, 4\)"):
        post.reward_at(obs, [0, 1], obs[:, :3])
    with pytest.raises(ValueError, match=r"actions\[1\] is 2, expected an action index"):
        post.reward_band(obs, [0, 2])
    with pytest.raises(ValueError, match="actions has 3 entries for 2 observations"):
        post.one_step(obs, [0, 1, 0])


def test_the_apprentice_policies_act_and_thompson_redraws_per_episode(cartpole_post):
    post = cartpole_post
    obs = post.data.transitions().obs[:3].numpy()
    for kind in ("mean", "predictive", "thompson"):
        policy = post.policy(kind)
        assert all(policy(o) in (0, 1) for o in obs)
        assert np.isclose(policy.probs(obs[0]).sum(), 1.0)
    a, b = post.policy("thompson", seed=3), post.policy("thompson", seed=3)
    draws = set()
    for episode in range(5):
        a.reset(episode)
        b.reset(episode)
        assert torch.equal(a._draw, b._draw)
        draws.add(tuple(a._draw[0].tolist()))
    assert len(draws) > 1
    sampled = post.policy("mean", greedy=False, seed=0)
    assert {sampled(obs[0]) for _ in range(50)} <= {0, 1}
    probs = post.action_probs(obs)
    assert probs.shape == (3, 2) and torch.allclose(probs.sum(-1), torch.ones(3))


def test_the_apprentice_policies_are_what_their_kinds_define(cartpole_post):
    """Each kind against its definition on the draws' Q-values: ``"mean"`` greedy on the mean
    Q (probabilities ``softmax(beta E[Q])``), ``"predictive"`` on ``E[softmax(beta Q)]``,
    ``"thompson"`` on one draw's Q; a sampling policy's action frequencies match its
    probabilities within 4 binomial standard errors."""
    post = cartpole_post
    obs = post.data.transitions().obs[:6]
    q = post.q_values(obs)                                           # (draws, M, A)
    beta = post.rationality
    mean = torch.softmax(beta * q.mean(0), -1)
    predictive = torch.softmax(beta * q, -1).mean(0)
    torch.testing.assert_close(post.action_probs(obs, "mean"), mean)
    torch.testing.assert_close(post.action_probs(obs, "predictive"), predictive)
    for kind, want in (("mean", mean), ("predictive", predictive)):
        policy = post.policy(kind)
        for i, o in enumerate(obs.numpy()):
            np.testing.assert_allclose(policy.probs(o), want[i].numpy(), rtol=1e-6, atol=1e-9)
            assert policy(o) == int(q.mean(0)[i].argmax() if kind == "mean" else want[i].argmax())
    thompson = post.policy("thompson", seed=5)
    per_draw = torch.softmax(beta * q, -1)                            # (draws, M, A)
    for episode in range(3):
        thompson.reset(episode)
        got = torch.as_tensor(np.stack([thompson.probs(o) for o in obs.numpy()]))
        match = (per_draw - got.to(per_draw)).abs().amax((-1, -2)) < 1e-6
        assert match.any(), "a Thompson episode acts on no single draw's Q"
        d = int(match.nonzero()[0])
        assert [thompson(o) for o in obs.numpy()] == q[d].argmax(-1).tolist()
    # a sampling policy: frequencies at the observation whose mean policy is least certain
    i = int((mean[:, 0] - 0.5).abs().argmin())
    sampler = post.policy("mean", greedy=False, seed=0)
    n = 2000
    freq = np.mean([sampler(obs[i].numpy()) == 1 for _ in range(n)])
    p1 = float(mean[i, 1])
    assert abs(freq - p1) <= 4 * np.sqrt(p1 * (1 - p1) / n) + 1e-12, (freq, p1)


def test_the_per_trajectory_log_likelihood_is_the_sum_of_its_steps_log_policy(cartpole_post):
    """``log_lik[c, d, i] = sum_t log softmax(beta Q_w(s_it, .))[a_it]`` over trajectory i's
    steps, for the draw ``w`` of chain c, draw d: from the draws' Q-values directly."""
    post = cartpole_post
    data = post.data
    N, T = data.actions.shape
    q = post.q_values(data.obs.reshape(N * T, -1)).reshape(-1, N, T, data.n_actions)
    logp = torch.log_softmax(post.rationality * q, -1)
    steps = logp.gather(-1, data.actions[None, ..., None].expand(q.shape[0], N, T, 1))[..., 0]
    want = (steps * data.mask).sum(-1)                                   # (draws, N)
    torch.testing.assert_close(post.log_lik.reshape(-1, N), want)
    assert post.log_lik.shape == (2, 100, N)


def test_hmc_samples_the_value_space_posterior_too():
    data = birl.core.rollout("CartPole-v1", cartpole_expert, 1, seed=1, max_steps=20,
                             progress=False)
    with pytest.warns(InferenceWarning):  # 2 x 30 draws: too few for 400 ESS, as it says
        post = birl.infer(None, data, QValueModel(), method="hmc", num_samples=30, warmup=30,
                          num_steps=8, num_chains=2, parallel=False, progress=False, seed=0)
    assert isinstance(post, ContinuousPosterior) and post.method == "hmc"
    assert post.samples["w"].shape == (60, QValueModel().q_function(data).n_params)
    assert post.samples["w"].std(0).min() > 0  # the chains moved in every weight
    assert post.reward().shape == (60, int(data.mask.sum()))


def test_arviz_data_has_per_trajectory_log_likelihood_and_round_trips(cartpole_post, tmp_path):
    post = cartpole_post
    idata = post.to_arviz()
    assert idata.log_likelihood["actions"].dims == ("chain", "draw", "trajectory")
    assert idata.posterior["reward"].dims == ("chain", "draw", "transition")
    assert idata.observed_data["obs"].dims == ("trajectory", "step", "obs_dim")
    with warnings.catch_warnings():  # two trajectories: Pareto k is high, as ArviZ warns
        warnings.simplefilter("ignore", UserWarning)
        loo = birl.posterior.arviz_io.az.loo(idata, pointwise=False)
    assert np.isfinite(float(loo.elpd_loo))
    assert post.min_ess() > 0 and post.min_ess("w") > 0
    assert "w[0]" in str(post.summary().index[0]) or len(post.summary()) == 11
    path = tmp_path / "post.nc"
    post.save(path)
    back = ContinuousPosterior.load(path)
    assert torch.equal(back.reward(), post.reward())
    assert torch.equal(back.samples["w"], post.samples["w"])
    assert torch.equal(back.data.obs, post.data.obs) and back.data.n_actions == 2
    obs = post.data.transitions().obs[:5]
    assert torch.allclose(back.q_values(obs), post.q_values(obs))
    assert back.sample_stats.keys() == post.sample_stats.keys()


def test_loading_refuses_a_file_that_is_not_a_continuous_posterior(tmp_path):
    with pytest.raises(FileNotFoundError):
        ContinuousPosterior.load(tmp_path / "missing.nc")
    bad = tmp_path / "bad.nc"
    bad.write_text("not netcdf")
    with pytest.raises(ValueError, match="not a readable netCDF"):
        ContinuousPosterior.load(bad)


def test_map_and_svi_give_posteriors_too():
    data = _data(n=2, T=6, A=2)
    fit = birl.infer(None, data, QValueModel(), method="map", progress=False)
    target = QValueModel().build_target(None, data, likelihood="soft", rationality=1.0)
    assert torch.allclose(fit.samples["w"][0], target.center, atol=1e-4)
    with pytest.raises(ValueError, match=r"credible_interval\(\) needs at least 2 posterior "
                                         r"draws, the method='map' posterior has 1"):
        fit.credible_interval()  # a MAP's interval would have width 0
    with warnings.catch_warnings():  # 50 steps: SVI may say it has not converged
        warnings.simplefilter("ignore", InferenceWarning)
        svi = birl.infer(None, data, QValueModel(), method="svi", guide="normal", steps=50,
                         num_samples=20, progress=False)
    assert svi.samples["w"].shape == (20, target.n_params) and len(svi.extra["elbo"]) == 50


def test_the_avril_guide_learns_an_amortised_reward_posterior(tmp_path):
    data = _data(n=3, T=8, A=2)
    with warnings.catch_warnings():  # 150 steps: SVI may say it has not converged
        warnings.simplefilter("ignore", InferenceWarning)
        post = birl.infer(None, data, QValueModel(), method="svi", guide="avril", steps=150,
                          lr=0.02, num_samples=50, subsample_size=2, progress=False)
    tr = data.transitions()
    band = post.encoder_reward(tr.obs, tr.actions)
    assert band.mean.shape == (data.n_transitions,) and (band.upper > band.lower).all()
    post.save(tmp_path / "avril.nc")
    back = ContinuousPosterior.load(tmp_path / "avril.nc")
    assert torch.allclose(back.encoder_reward(tr.obs, tr.actions).mean, band.mean)
    target = QValueModel().build_target(None, data, likelihood="soft", rationality=1.0)
    target.guide("avril")
    target.guide("normal")  # a later guide on the same target drops the encoder it does not fit
    assert target.encoder is None and not target._latent_rewards
    with pytest.raises(ValueError, match="no reward encoder"):
        birl.infer(None, data, QValueModel(), method="map",
                   progress=False).encoder_reward(tr.obs, tr.actions)
    with pytest.raises(ValueError, match="guide is 'nope'"):
        QValueModel().build_target(None, data, likelihood="soft", rationality=1.0).guide("nope")


def test_a_users_feature_map_must_be_given_again_to_load(tmp_path):
    data = _data(n=2, T=4, A=2)

    def features(obs):
        return torch.cat([torch.ones_like(obs[..., :1]), obs, obs ** 2], -1)

    post = birl.infer(None, data, QValueModel(features=features), method="map", progress=False)
    assert post.q_function.n_features == 5
    post.save(tmp_path / "f.nc")
    with pytest.raises(ValueError, match="pass it again"):
        ContinuousPosterior.load(tmp_path / "f.nc")
    back = ContinuousPosterior.load(tmp_path / "f.nc", features=features)
    obs = data.transitions().obs
    assert torch.allclose(back.q_values(obs), post.q_values(obs))


def test_a_feature_map_that_does_not_fit_the_saved_weights_is_refused_by_name(tmp_path):
    data = _data(n=2, T=4, A=2)

    def features(obs):
        return torch.cat([torch.ones_like(obs[..., :1]), obs], -1)

    post = birl.infer(None, data, QValueModel(features=features), method="map", progress=False)
    post.save(tmp_path / "f.nc")
    with pytest.raises(ValueError, match=r"holds 7 weights, .* has 11 \(5 features\)"):
        ContinuousPosterior.load(tmp_path / "f.nc",
                                 features=lambda obs: torch.cat([features(obs), obs], -1))


def test_a_maps_standard_errors_and_covariance_survive_save_and_load(tmp_path):
    data = _data(n=2, T=6, A=2)
    fit = birl.infer(None, data, QValueModel(), method="map", progress=False)
    assert fit.extra["standard_errors"]["w"].shape == (7,)
    fit.save(tmp_path / "map.nc")
    back = ContinuousPosterior.load(tmp_path / "map.nc")
    assert torch.equal(back.extra["standard_errors"]["w"], fit.extra["standard_errors"]["w"])
    assert torch.equal(back.extra["covariance"], fit.extra["covariance"])
    assert back.extra["coordinates"] == fit.extra["coordinates"] == [f"w[{i}]" for i in range(7)]


def test_a_posterior_loads_in_the_dtype_it_was_fitted_in(tmp_path):
    """float32 data in a float64 session (and so float32 weights) come back float32, equal."""
    d = _data(n=2, T=6, A=2)
    data = Trajectories(d.obs.float(), d.actions, d.next_obs.float(), d.terminals, d.mask,
                        d.n_actions)
    fit = birl.infer(None, data, QValueModel(), method="map", progress=False)
    assert fit.samples["w"].dtype == torch.float32
    fit.save(tmp_path / "f32.nc")
    back = ContinuousPosterior.load(tmp_path / "f32.nc")
    assert back.data.obs.dtype == back.samples["w"].dtype == torch.float32
    assert torch.equal(back.reward(), fit.reward())
    assert torch.equal(back.samples["w"], fit.samples["w"])


def test_reward_at_weighs_the_successor_by_the_chance_of_going_on(cartpole_post):
    post = cartpole_post
    tr = post.data.transitions()
    obs, acts, nxt = tr.obs[:4], tr.actions[:4], tr.next_obs[:4]
    q_now = post.q_values(obs)[:, torch.arange(4), acts]
    v_next = torch.logsumexp(post.q_values(nxt), -1)  # soft, rationality 1
    chance = torch.tensor([0.0, 0.2, 1.0, 0.5])
    expected = q_now - post.discount * (1 - chance) * v_next
    assert torch.allclose(post.reward_at(obs, acts, nxt, chance), expected)
    assert torch.allclose(post.reward_at(obs, acts, nxt, [False, False, True, False])[:, 2],
                          q_now[:, 2])
    with pytest.raises(ValueError, match=r"terminals\[1\] is 1.5, expected a boolean or a "
                                         r"chance in \[0, 1\]"):
        post.reward_at(obs, acts, nxt, [0.0, 1.5, 0.0, 0.0])
    with pytest.raises(TypeError, match="terminals must be an array of numbers"):
        post.reward_at(obs, acts, nxt, ["no"] * 4)
    with pytest.raises(ValueError, match="terminals has 3 entries for 4 observations"):
        post.reward_at(obs, acts, nxt, [0, 0, 0])


def test_a_dynamics_chance_of_termination_weighs_the_successor_in_the_model():
    task = point_mass(grid=5, discount=0.8, rationality=1.0)
    data = task.sample(2, 3, seed=0)

    def dynamics(chance):
        def step(obs, actions):
            return task.dynamics(obs, actions)[0], torch.full((obs.shape[0],), chance)
        return step

    w = 0.5 * torch.randn(QValueModel(discount=0.8).build_target(
        None, data, likelihood="soft", rationality=1.0).n_params)
    r_all = {}
    M, A = data.n_transitions, task.n_actions
    for chance in (0.0, 0.3, 1.0):
        target = QValueModel(discount=0.8, dynamics=dynamics(chance)).build_target(
            None, data, likelihood="soft", rationality=1.0)
        # the prior's rewards back in the (M * A) layout, NaN at the rows left out as repeats
        r_all[chance] = torch.full((M * A,), math.nan).index_put(
            (target.prior_rows,), target._terms(target.q(w))[2])
    taken = torch.nn.functional.one_hot(data.transitions().actions, task.n_actions).reshape(-1)
    untaken = taken == 0  # the observed successor, and its flag, for the action taken
    mixed = 0.7 * r_all[0.0][untaken] + 0.3 * r_all[1.0][untaken]
    both = ~mixed.isnan() & ~r_all[0.3][untaken].isnan()
    assert both.sum() > M
    assert torch.allclose(r_all[0.3][untaken][both], mixed[both])
    kept = ~r_all[0.0][~untaken].isnan()
    assert torch.equal(r_all[0.3][~untaken][kept], r_all[0.0][~untaken][kept])
    bad = QValueModel(dynamics=lambda o, a: (task.dynamics(o, a)[0], torch.zeros(len(o) + 1)))
    with pytest.raises(ValueError, match="dynamics' terminals has 7 entries for 6 observations"):
        bad.build_target(None, data, likelihood="soft", rationality=1.0)
    bad = QValueModel(dynamics=lambda o, a: (task.dynamics(o, a)[0], torch.full((len(o),), 2.0)))
    with pytest.raises(ValueError, match=r"dynamics' terminals\[0\] is 2.0"):
        bad.build_target(None, data, likelihood="soft", rationality=1.0)


def test_the_reward_function_conditions_on_every_action_the_prior_covers(tmp_path):
    """With dynamics the "state" prior covers every action's reward at each observed state, so
    the reward function's weights theta are conditioned on all M x A of them, as in the model
    (the posterior keeps theta's conditional mean per draw, which needs the successors), and
    that survives save and load, where the dynamics are not saved."""
    task = point_mass(grid=5, discount=0.8, rationality=1.0)
    data = task.sample(3, 4, seed=0)
    model = QValueModel(discount=0.8, dynamics=task.dynamics, reward_prior="state")
    target = model.build_target(None, data, likelihood="soft", rationality=1.0)
    w = 0.3 * torch.randn(4, target.n_params, generator=torch.Generator().manual_seed(0))
    post = ContinuousPosterior.from_target(target, {"w": w}, method="draws")
    r_all = target._terms(target.q(w))[2]
    # every action's at each distinct observed state (repeats once)
    n_states = torch.unique(data.transitions().obs, dim=0).shape[0]
    assert r_all.shape == (4, n_states * task.n_actions)
    assert torch.allclose(post.theta_mean[0], target.data_reward_prior.theta_mean(r_all))
    taken_only = ContinuousPosterior(post.q_function, data, post.params, post.rewards,
                                     discount=0.8, likelihood="soft", rationality=1.0,
                                     reward_prior=post.reward_prior)
    assert not torch.allclose(taken_only.theta_mean, post.theta_mean, atol=1e-3)
    obs = data.transitions().obs[:5]
    draws = post.reward_function(obs, seed=1)
    assert draws.shape == (4, 5)
    post.save(tmp_path / "state.nc")
    back = ContinuousPosterior.load(tmp_path / "state.nc")
    assert torch.equal(back.theta_mean, post.theta_mean)
    assert torch.equal(back.reward_function(obs, seed=1), draws)


def _draw_terms_target(kind, dynamics):
    """A tiny target with a ``kind`` reward prior, with or without point-mass dynamics, and
    four draws of its weights."""
    if dynamics:
        task = point_mass(grid=5, discount=0.8, rationality=1.0)
        data = task.sample(2, 3, seed=0)
        model = QValueModel(discount=0.8, dynamics=task.dynamics, reward_prior=kind,
                            whiten=False)
    else:
        data = _data(n=2, T=4, A=3)
        model = QValueModel(discount=0.8, reward_prior=kind, whiten=False,
                            reward_fourier=0 if kind == "iid" else 4)
    target = model.build_target(None, data, likelihood="soft", rationality=1.0)
    w = 0.3 * torch.randn(4, target.n_params, generator=torch.Generator().manual_seed(0))
    return target, w


@pytest.mark.parametrize("kind, dynamics", [("iid", False), ("state", False),
                                            ("state_action", False), ("state", True),
                                            ("state_action", True)])
def test_from_target_keeps_what_the_separate_evaluations_of_each_draw_give(kind, dynamics):
    """draw_terms gives rewards, per-trajectory log-likelihood and theta | w from one pass;
    the posterior built from it holds what terms, log_likelihood and theta_mean give one by
    one."""
    target, w = _draw_terms_target(kind, dynamics)
    post = ContinuousPosterior.from_target(target, {"w": w}, method="draws", num_chains=2)
    assert torch.allclose(post.rewards.reshape(4, -1), target.terms(w)[1])
    assert torch.allclose(post.log_lik.reshape(4, -1), target.log_likelihood({"w": w}))
    if kind == "iid":
        assert post.theta_mean is None and post.theta_chol is None
        assert target.draw_terms(w).theta_mean is None
    else:
        theta = target.theta_mean(w)
        assert post.theta_mean.shape == (2, 2, theta.shape[-1])
        assert torch.allclose(post.theta_mean.reshape(4, -1), theta)
        assert torch.equal(post.theta_chol, target.data_reward_prior.chol)
    given = torch.zeros(4, target.data.n)  # a sampler's own log-likelihood is kept as given
    post = ContinuousPosterior.from_target(target, {"w": w}, method="draws", log_lik=given)
    assert torch.equal(post.log_lik.reshape(4, -1), given)


@pytest.mark.parametrize("dynamics", [False, True])
def test_from_target_evaluates_q_once_per_draw(dynamics, monkeypatch):
    target, w = _draw_terms_target("state", dynamics)
    rows = []
    q = target.q

    def counted(x):
        rows.append(x.shape[0])
        return q(x)

    monkeypatch.setattr(target, "q", counted)
    ContinuousPosterior.from_target(target, {"w": w}, method="draws")
    assert sum(rows) == w.shape[0]  # rewards, log-likelihood and theta | w: one pass


def test_the_policy_refuses_an_observation_of_the_wrong_width(cartpole_post):
    policy = cartpole_post.policy("mean")
    with pytest.raises(ValueError, match=r"obs must have shape \(M, 4\), got \(1, 1\)"):
        policy([0.5])
    with pytest.raises(ValueError, match="one observation at a time, got 2"):
        policy(np.zeros((2, 4)))


def test_the_reward_slice_plot_draws_mean_and_band(cartpole_post):
    post = cartpole_post
    with pytest.raises(ValueError, match="dims is 3, expected two observation coordinates"):
        reward_slice(post, dims=3)
    xs, ys, mean, lo, hi = reward_slice(post, dims=(2, 3), grid=6)
    assert xs.shape == (6,) and mean.shape == (6, 6) and (hi >= lo).all()
    fig, axes = plt.subplots(1, 2)
    out = plot_reward_slice(post, dims=(2, 3), grid=5, axes=axes, names=("angle", "spin"))
    assert len(out) == 2 and out[0].get_xlabel() == "angle" and out[0].images
    plt.close(fig)
    with pytest.raises(ValueError, match="two different coordinates"):
        reward_slice(post, dims=(1, 1))


def test_the_reward_slice_is_the_reward_band_at_each_grid_point(cartpole_post):
    """Cell ``[j, i]`` of the slice is :meth:`reward_band` at ``obs[dims] = (xs[i], ys[j])``,
    the other coordinates at ``fixed``; with no action, the band of each draw's mean over the
    actions; the plot shows the mean and the band's width as they are."""
    post = cartpole_post
    fixed = np.array([0.1, -0.2, 0.0, 0.3])
    bounds = ((-0.1, 0.15), (-0.5, 0.4))
    xs, ys, mean, lo, hi = reward_slice(post, dims=(3, 1), action=1, fixed=fixed,
                                        bounds=bounds, grid=4, prob=0.8)
    assert np.allclose(xs, np.linspace(-0.1, 0.15, 4))
    assert np.allclose(ys, np.linspace(-0.5, 0.4, 4))
    pts = np.tile(fixed, (16, 1))
    pts[:, 3] = np.tile(xs, 4)      # x varies along a row
    pts[:, 1] = np.repeat(ys, 4)    # y down the rows
    obs = torch.as_tensor(pts)
    band = post.reward_band(obs, torch.ones(16, dtype=torch.long), prob=0.8)
    for got, want in ((mean, band.mean), (lo, band.lower), (hi, band.upper)):
        assert np.allclose(got, want.numpy().reshape(4, 4), rtol=1e-12, atol=1e-12)
    _, _, mean_all, lo_all, hi_all = reward_slice(post, dims=(3, 1), fixed=fixed,
                                                  bounds=bounds, grid=4, prob=0.8)
    each = torch.stack([post.reward_at(obs, torch.full((16,), a, dtype=torch.long))
                        for a in range(2)]).mean(0)  # (draws, 16)
    lo_e, hi_e = np.quantile(each.numpy(), [0.1, 0.9], axis=0)
    assert np.allclose(mean_all, each.mean(0).numpy().reshape(4, 4), atol=1e-12)
    assert np.allclose(lo_all, lo_e.reshape(4, 4)) and np.allclose(hi_all, hi_e.reshape(4, 4))
    ax_mean, ax_band = plot_reward_slice(post, dims=(3, 1), fixed=fixed, bounds=bounds, grid=4,
                                         prob=0.8, show_data=False)
    assert np.allclose(ax_mean.images[0].get_array(), mean_all)
    assert np.allclose(ax_band.images[0].get_array(), hi_all - lo_all)
    assert ax_mean.images[0].get_extent() == [xs[0], xs[-1], ys[0], ys[-1]]
    plt.close(ax_mean.figure)


# ---------------------------------------------------------------------------- experts, tasks
def test_the_scripted_experts_return_valid_actions():
    assert cartpole_expert(np.array([0.0, 0.0, 0.1, 0.0])) == 1
    assert cartpole_expert(np.array([0.0, 0.0, -0.1, 0.0])) == 0
    assert acrobot_expert(np.array([1, 0, 1, 0, 0.0, 0.3])) == 2
    assert acrobot_expert(np.array([1, 0, 1, 0, 0.0, -0.3])) == 0
    assert set(EXPERTS) == {"CartPole-v1", "Acrobot-v1", "LunarLander-v3"}
    assert evaluate("CartPole-v1", cartpole_expert, 1, seed=0, progress=False)[0] == 500


@pytest.mark.parametrize("env_id,floor", [("Acrobot-v1", -120.0), ("LunarLander-v3", 100.0)])
def test_the_scripted_experts_solve_their_tasks(env_id, floor):
    """Five seeded episodes of each expert score far above a random policy (Acrobot about
    -500, LunarLander about -200): the floors are well under the experts' means over 300
    episodes (``benchmarks/RESULTS.md``), leaving room for one LunarLander crash in five."""
    returns = evaluate(env_id, EXPERTS[env_id], 5, seed=0, progress=False)
    assert returns.mean() > floor, returns


def test_an_environment_id_loads_box2d_under_warnings_as_errors():
    """Box2D's SWIG extension warns while it loads; raised as an error there, it crashed the
    interpreter (a segmentation fault) when ``evaluate`` or ``rollout`` was given the id
    rather than an environment. Its own process, so that Box2D loads for the first time."""
    code = ("from bayesirl.core.control import EXPERTS\n"
            "from bayesirl.core.trajectories import evaluate\n"
            "print(evaluate('LunarLander-v3', EXPERTS['LunarLander-v3'], 1, seed=0, "
            "progress=False)[0])\n")
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert float(done.stdout.split()[-1]) > 0


def test_the_lunar_lander_heuristic_runs_under_warnings_as_errors():
    """Box2D comes with the dev extra, so this runs wherever the suite does."""
    env = make_env("LunarLander-v3")
    obs, _ = env.reset(seed=0)
    assert lunar_lander_expert(obs) in range(4)


def test_the_point_mass_reward_is_exactly_what_the_bellman_equation_implies():
    task = point_mass(grid=7, discount=0.8, rationality=1.5)
    data = task.sample(4, 6, seed=0)
    tr = data.transitions()
    q = task.q[task.index(tr.obs.numpy())]
    q_next = task.q[task.index(tr.next_obs.numpy())]
    v_next = np.logaddexp.reduce(1.5 * q_next, axis=-1) / 1.5
    implied = q[np.arange(len(q)), tr.actions.numpy()] - 0.8 * v_next
    assert np.allclose(implied, task.true_reward(tr.obs.numpy()))
    nxt, term = task.dynamics(torch.tensor([[1.0, 1.0]]), torch.tensor([1]))
    assert torch.equal(nxt, torch.tensor([[1.0, 1.0]])) and not term.any()  # the wall clips


def test_the_point_mass_one_hot_classes_contain_the_expert_q_and_the_reward():
    """``one_hot`` marks each observation's nearest lattice point, in the observation's dtype;
    a Q linear in it reproduces the expert's ``Q*`` exactly and a reward linear in it the
    field, which is what makes them the well-specified classes of the coverage test."""
    task = point_mass(grid=4)
    obs = torch.tensor([[-1.0, -1.0], [0.3, -0.35], [1.0, 1.0]], dtype=torch.float32)
    feats = task.one_hot(obs)
    assert feats.shape == (3, 16) and feats.dtype == torch.float32
    assert torch.equal(feats.argmax(-1), torch.as_tensor(task.index(obs.numpy())))
    assert torch.equal(feats.sum(-1), torch.ones(3))
    tr = task.sample(5, 6, seed=0).transitions()
    psi = task.one_hot(tr.obs).double()
    assert np.allclose(psi.numpy() @ task.q, task.q[task.index(tr.obs.numpy())])
    field = task.reward_field(task.coords(np.arange(16)))
    assert np.allclose(psi.numpy() @ field, task.true_reward(tr.obs.numpy()))
    with pytest.raises(ValueError, match="obs"):
        task.one_hot(torch.zeros(3, 3))


# ---------------------------------------------------------------------------- slow
@pytest.fixture(scope="module")
def known_reward():
    """Point mass on a 15 x 15 lattice, a soft-optimal expert (beta = 2, gamma = 0.9) of a
    known reward field, 30 trajectories of 20 steps; a reward that is a function of the state
    (reward_prior="state") and the known dynamics. ``(task, data, truth at the data, post)``.

    Convergence is asserted by the tests, not left to ``infer``'s warning: with 2 chains of
    500 the largest split R-hat over the 600 rewards lands either side of its warning
    threshold, 1.01, by chance (1.003-1.018 over seeds 0 and 1 and the whitening centred on or
    0.16 sd off the mode, every min bulk ESS above 1 400 and every recovery figure the same)."""
    task = point_mass()
    data = task.sample(30, 20, seed=1)
    truth = torch.as_tensor(task.true_reward(data.transitions().obs.numpy()))
    model = QValueModel(n_fourier=100, lengthscale=0.5, weight_scale=30.0, discount=0.9,
                        reward_prior="state", reward_fourier=50, reward_lengthscale=0.5,
                        reward_noise=0.1, dynamics=task.dynamics)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "MCMC convergence problems", InferenceWarning)
        post = birl.infer(None, data, model, method="nuts", rationality=2.0, num_samples=500,
                          warmup=500, progress=False, seed=0)
    return task, data, truth, post


@pytest.mark.slow
def test_the_posterior_recovers_a_known_reward_field(known_reward):
    """The posterior mean reward at the data correlates with the truth, and so does the
    reward function's mean over the whole lattice (where the data are sparse)."""
    import arviz as az

    task, data, truth, post = known_reward
    assert post.min_ess() >= 400
    assert float(az.rhat(post.to_arviz(), var_names=["reward"])["reward"].max()) < 1.05
    assert np.corrcoef(post.mean_reward(), truth)[0, 1] > 0.95
    grid = torch.as_tensor(task.coords(np.arange(task.grid ** 2)))
    band = post.reward_band(grid, torch.zeros(len(grid), dtype=torch.long))  # anywhere
    assert np.corrcoef(band.mean, task.reward_field(grid.numpy()))[0, 1] > 0.8


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the band is overconfident against a reward and an "
                   "expert outside the model's classes: shape coverage 0.09 / 0.32 at 50 / 90%; "
                   "classes that contain the truth cover it (the test after this one; benchmarks/"
                   "RESULTS.md, 'The reward prior counts each distinct transition once')")
def test_the_band_of_a_known_reward_covers_it_at_the_nominal_rate(known_reward):
    """Issue 21 asks that the band cover the true reward at about the nominal rate. The
    rewards' level is not identified by the actions (every Q moved by L moves every reward by
    (1 - gamma) L), so the band checked is that of the rewards' shape: each draw and the truth
    centred over the data. Within 0.1 of 50% and of 90%, both ways."""
    _, _, truth, post = known_reward
    draws = post.reward()
    shape = (draws - draws.mean(1, keepdim=True)).numpy()
    true_shape = (truth - truth.mean()).numpy()
    for prob in (0.5, 0.9):
        lo, hi = np.quantile(shape, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
        cover = float(((true_shape >= lo) & (true_shape <= hi)).mean())
        assert abs(cover - prob) < 0.1, (prob, cover)


@pytest.mark.slow
def test_the_band_covers_a_known_reward_that_the_classes_contain():
    """The counterpart of the xfail above: with a Q-function class and a reward class that
    contain the truth (``one_hot`` on a 3 x 3 lattice: any Q, so the expert's ``Q*``; any state
    reward, so the field), the band of the reward function at the visited states covers the
    true field at about the nominal rate. Pooled over 5 data sets (10 trajectories of 10 steps;
    every cell visited), each draw and the truth centred over the states, since the actions do
    not identify the rewards' level. Against an exact band: the RMS of ``(mean - truth) / sd``
    is 1 and the 90% band covers 90%. Asserted: the RMS within [0.5, 1.5] and the 90% band's
    coverage at least 0.8; the misspecified classes above give an RMS of 2.3-2.5 and 0.29."""
    task = point_mass(grid=3)
    z, covered = [], []
    for seed in range(5):
        data = task.sample(10, 10, seed=seed)
        model = QValueModel(features=task.one_hot, weight_scale=30.0, discount=0.9,
                            reward_prior="state", reward_features=task.one_hot,
                            reward_noise=0.1, dynamics=task.dynamics)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "MCMC convergence problems", InferenceWarning)
            post = birl.infer(None, data, model, method="nuts", rationality=2.0,
                              num_samples=250, warmup=250, progress=False, seed=0)
        assert post.min_ess() >= 200
        cells = np.unique(task.index(data.transitions().obs.numpy()))
        assert len(cells) == 9  # every cell visited, as the docstring says
        states = torch.as_tensor(task.coords(cells))
        draws = post.reward_function(states, seed=1).numpy()
        draws = draws - draws.mean(1, keepdims=True)
        truth = task.reward_field(states.numpy())
        truth = truth - truth.mean()
        z.append((draws.mean(0) - truth) / draws.std(0))
        lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
        covered.append((truth >= lo) & (truth <= hi))
    rms_z = float(np.sqrt(np.mean(np.concatenate(z) ** 2)))
    cover = float(np.concatenate(covered).mean())
    assert 0.5 <= rms_z <= 1.5 and cover >= 0.8, (rms_z, cover)


@pytest.mark.slow
def test_nuts_adapts_the_same_step_in_float32_and_float64():
    """A structured reward prior over 4 000 rewards (800 transitions, 5 actions each, with the
    dynamics) with a small noise: NUTS in float32 adapts about float64's step size. With
    Woodbury's cancelling quadratic form, float32's step shrank to 5e-8 and every draw ran to
    the tree-depth cap (1 023 leapfrog steps, against 15)."""
    task = point_mass(grid=9)
    steps = {}
    for dtype in (torch.float32, torch.float64):
        torch.set_default_dtype(dtype)
        data = task.sample(40, 20, seed=1)
        model = QValueModel(n_fourier=20, lengthscale=0.5, weight_scale=30.0, discount=0.9,
                            reward_prior="state", reward_fourier=20, reward_lengthscale=0.5,
                            reward_noise=0.1, dynamics=task.dynamics)
        with warnings.catch_warnings():  # 50 draws: too few for the ESS the warning wants
            warnings.simplefilter("ignore", InferenceWarning)
            post = birl.infer(None, data, model, method="nuts", rationality=2.0,
                              num_samples=50, warmup=50, num_chains=1, progress=False, seed=0)
        assert post.samples["w"].dtype == dtype
        steps[dtype] = float(post.sample_stats["step_size"].double().mean())
        assert float(post.sample_stats["n_steps"].double().mean()) < 100
    assert 0.5 < steps[torch.float32] / steps[torch.float64] < 2, steps


@pytest.mark.slow
def test_nuts_on_a_network_matches_a_metropolis_reference():
    """NUTS on a (not linearised) tanh network's own posterior, whitened at its MAP, against
    random-walk Metropolis on ``log_joint`` (8 chains, the Laplace covariance as proposal):
    the rewards at the data, invariant under the network's sign symmetries, agree in mean and
    spread. The tolerances are about six Monte Carlo standard errors (ESS over 600 for NUTS,
    over 4 000 for Metropolis): a wrong density or transform moves them far more."""
    import arviz as az

    data = _data(n=3, T=6, dim=2, A=2)
    model = QValueModel(hidden=(2,), weight_scale=1.0, discount=0.9)
    target = model.build_target(None, data, likelihood="soft", rationality=1.0)
    with warnings.catch_warnings():  # chains of 600: no warning is the point here
        warnings.simplefilter("ignore", InferenceWarning)
        post = birl.infer(None, data, model, method="nuts", num_samples=600, warmup=300,
                          num_chains=2, progress=False, seed=0)
    nuts = post.reward()
    assert post.min_ess() > 600
    P = target.n_params
    chol = torch.linalg.cholesky(torch.linalg.inv(target.hessian(target.center)))
    g = torch.Generator().manual_seed(1)
    w = target.center + 0.1 * torch.randn(8, P, generator=g)
    with torch.no_grad():
        lp = target.log_joint(w)
        kept = []
        for i in range(40_000):
            prop = w + 2.38 / math.sqrt(P) * torch.randn(8, P, generator=g) @ chol.T
            lp_prop = target.log_joint(prop)
            take = torch.rand(8, generator=g).log() < lp_prop - lp
            w, lp = torch.where(take[:, None], prop, w), torch.where(take, lp_prop, lp)
            if i >= 8_000 and i % 10 == 0:
                kept.append(w)
        ref = target.rewards({"w": torch.stack(kept, 1)})  # (8 chains, draws, M)
    ref_set = az.convert_to_dataset({"r": ref.numpy()})
    assert float(az.ess(ref_set)["r"].min()) > 2_000
    assert float(az.rhat(ref_set)["r"].max()) < 1.01
    ref = ref.reshape(-1, ref.shape[-1])
    z = (nuts.mean(0) - ref.mean(0)) / ref.std(0)
    ratio = nuts.std(0) / ref.std(0)
    assert float(z.abs().max()) < 0.25, z
    assert 0.85 < float(ratio.min()) and float(ratio.max()) < 1.15, ratio


@pytest.mark.slow
def test_svi_guides_against_nuts_on_the_same_posterior():
    """The full-rank Gaussian guide ("mvn") has NUTS's reward posterior at the data: means
    within half a posterior sd, spreads within 20% (measured 0.35 and 0.99-1.13; the
    posterior is near-Gaussian, not Gaussian). AVRIL's guide: its encoder's mean follows
    NUTS's, and its ``q(w)`` is far narrower than the posterior, as its docstring says: ``q``
    factorises ``w`` from the latent rewards that the Bellman residual ties to it within tau,
    so ``q(w)`` takes about ``w``'s spread given the rewards (measured 0.13-0.20 of NUTS's)."""
    data = birl.core.rollout("CartPole-v1", cartpole_expert, 3, seed=0, max_steps=60,
                             progress=False)
    with warnings.catch_warnings():  # SVI's convergence warnings are not what is checked
        warnings.simplefilter("ignore", InferenceWarning)
        nuts = birl.infer(None, data, QValueModel(), method="nuts", num_samples=1000,
                          warmup=500, num_chains=2, progress=False, seed=0).reward()
        mvn = birl.infer(None, data, QValueModel(), method="svi", guide="mvn", steps=6000,
                         lr=0.005, num_samples=2000, progress=False, seed=0).reward()
        avril = birl.infer(None, data, QValueModel(), method="svi", guide="avril", steps=3000,
                           lr=0.01, num_samples=2000, progress=False, seed=0)
    sd = nuts.std(0)
    assert float(((mvn.mean(0) - nuts.mean(0)) / sd).abs().max()) < 0.5
    ratio = mvn.std(0) / sd
    assert 0.85 < float(ratio.min()) and float(ratio.max()) < 1.2, ratio
    tr = data.transitions()
    band = avril.encoder_reward(tr.obs, tr.actions)
    assert np.corrcoef(band.mean, nuts.mean(0))[0, 1] > 0.85
    assert float((avril.reward().std(0) / sd).max()) < 0.35


def _sbc_task():
    """A tiny value-space model: 2-d point-mass observations, 5 actions, Q linear in fixed
    features (no standardisation on the data, so the simulator's prior is the model's)."""
    task = point_mass(grid=5, discount=0.8, rationality=1.0)
    fmap = FeatureMap(torch.zeros(2), torch.full((2,), 0.5), torch.zeros(0, 2), torch.zeros(0))
    model = QValueModel(features=fmap, weight_scale=1.0, level_scale=1.0, reward_loc=-1.0,
                        reward_scale=1.0, discount=0.8)
    return task, model, QFunction(fmap, fmap.n_features, task.n_actions, (), 1.0, 1.0)


def _simulate_joint(task, model, qf, starts, horizon, rng):
    """One exact draw of (w, trajectories) from the joint
    ``p(w) prod_t pi_w(a_t | s_t) prod_t N(r_t; loc, scale) / Z`` by rejection: propose
    ``w ~ p(w)`` and actions from ``pi_w``, accept with
    ``prod_t exp(-(r_t - loc)^2 / (2 scale^2)) <= 1``."""
    while True:
        w = torch.as_tensor(rng.normal(size=qf.n_params)) * qf.prior_scale()
        obs = np.zeros((len(starts), horizon + 1, 2))
        acts = np.zeros((len(starts), horizon), dtype=np.int64)
        obs[:, 0] = starts
        log_accept = 0.0
        for t in range(horizon):
            q = qf(w, torch.as_tensor(obs[:, t])).numpy()
            p = np.exp(q - np.logaddexp.reduce(q, axis=-1, keepdims=True))
            acts[:, t] = [rng.choice(task.n_actions, p=row / row.sum()) for row in p]
            obs[:, t + 1] = task.dynamics(obs[:, t], acts[:, t])[0]
            q_next = qf(w, torch.as_tensor(obs[:, t + 1])).numpy()
            r = (q[np.arange(len(starts)), acts[:, t]]
                 - model.discount * np.logaddexp.reduce(q_next, axis=-1))
            log_accept += float((-0.5 * ((r - model.reward_loc) / model.reward_scale) ** 2
                                 ).sum())
        if np.log(rng.random()) < log_accept:
            data = Trajectories.from_arrays(torch.as_tensor(obs), torch.as_tensor(acts),
                                            n_actions=task.n_actions)
            return w, data


@pytest.mark.slow
def test_simulation_based_calibration_of_the_value_space_posterior():
    """Talts et al. (2018): ranks of true weights (drawn exactly from the joint by rejection)
    among thinned NUTS draws are uniform; chi-square per weight, Bonferroni at 0.001 (a
    correct sampler fails with probability 0.001)."""
    from bayesirl.sbc import rank_uniformity

    task, model, qf = _sbc_task()
    rng = np.random.default_rng(0)
    starts = np.array([[-0.5, -0.5], [0.5, 0.0]])
    n_sims, L = 80, 19
    ranks = []
    for sim in range(n_sims):
        w, data = _simulate_joint(task, model, qf, starts, 3, rng)
        with warnings.catch_warnings():  # one chain: no R-hat; ESS is judged by the ranks
            warnings.simplefilter("ignore", InferenceWarning)
            post = birl.infer(None, data, model, method="nuts", num_samples=200, warmup=150,
                              num_chains=1, progress=False, seed=sim)
        draws = post.samples["w"][::10][:L]
        ranks.append((draws < w).sum(0).numpy())
    p_values, _, _ = rank_uniformity(np.stack(ranks), L)
    assert np.min(p_values) > 0.001 / len(p_values)


def test_a_fit_of_the_weights_starts_at_zero_or_off_an_mlps_saddle():
    """QFunction.start: 0 for a linear Q; for an MLP a seeded prior draw (reproducible, the
    prior's scale per weight), where hidden units differ."""
    fmap = FeatureMap(torch.zeros(2), torch.ones(2), torch.zeros(0, 2), torch.zeros(0))
    linear = QFunction(fmap, fmap.n_features, 3, (), 2.0, 1.0)
    assert torch.equal(linear.start(5), torch.zeros(linear.n_params))
    mlp = QFunction(fmap, fmap.n_features, 3, (64,), 2.0, 1.0)
    w = mlp.start(5)
    assert torch.equal(w, mlp.start(5)) and not torch.equal(w, mlp.start(6))
    z = w / mlp.prior_scale()
    assert abs(float(z.std()) - 1.0) < 0.1 and abs(float(z.mean())) < 0.1


# ---------------------------------------------------------------------------- linearised MLP
@pytest.mark.parametrize("skip", [None, 1.5])
@pytest.mark.parametrize("batch", [(), (4,), (2, 3)])
def test_a_linearised_q_is_the_networks_first_order_expansion(batch, skip):
    """``Q_w0 + J_w0 (w - w0)`` with the Jacobian from autograd, through two hidden layers
    (the tangent of a tangent), the linear term beside the network and the level; the network
    itself at ``w0``."""
    import dataclasses

    fmap = FeatureMap.fit(torch.randn(20, 3), n_fourier=2, seed=1)
    net = QFunction(fmap, fmap.n_features, 3, (5, 4), 2.0, 3.0, skip_scale=skip)
    w0 = net.start(0)
    if skip is not None:  # expand where the linear term is not 0 (a fit starts it at 0)
        w0[net._skip] = torch.randn(fmap.n_features * 3)
    lin = dataclasses.replace(net, linearised_at=w0)
    feats = fmap(torch.randn(7, 3))
    J = torch.autograd.functional.jacobian(lambda w: net.apply(w, feats), w0)  # (7, 3, P)
    w = w0 + torch.randn(*batch, net.n_params)
    expected = net.apply(w0, feats) + torch.einsum("map,...p->...ma", J, w - w0)
    assert torch.allclose(lin.apply(w, feats), expected, atol=1e-12)
    # the network at w0 computed once (as a target keeps it) gives the same expansion
    assert torch.equal(lin.apply(w, feats, lin.primal(feats)), lin.apply(w, feats))
    assert net.primal(feats) is None  # the network itself needs no primal
    assert torch.equal(lin.apply(w0, feats), net.apply(w0, feats))
    assert not torch.allclose(net.apply(w, feats), expected, atol=1e-3)  # the net is not linear
    assert torch.equal(lin.start(7), w0)  # a fit starts where the expansion is exact
    # affine in w: the mean over draws is Q at the mean draw (the mean-Q policy's shortcut)
    assert lin.linear_in_weights and not net.linear_in_weights
    assert dataclasses.replace(net, hidden=(), skip_scale=None).linear_in_weights
    if batch:
        flat = w.reshape(-1, net.n_params)
        assert torch.allclose(lin.apply(flat, feats).mean(0), lin.apply(flat.mean(0), feats))


def _linearised_targets(data, likelihood="soft"):
    def target(linearise):
        return QValueModel(hidden=(4,), weight_scale=3.0, linearise=linearise).build_target(
            None, data, likelihood=likelihood, rationality=1.0)
    return target(False), target(True)


def _grad(target, w):
    w = w.clone().requires_grad_(True)
    return torch.autograd.grad(target.log_joint(w), w)[0]


@pytest.mark.parametrize("likelihood", ["soft", "boltzmann"])
def test_the_linearised_model_has_the_networks_map(likelihood):
    """Same value and gradient at the linearisation point ``w*`` (any point, exactly), so the
    network's MAP is the linearised model's mode; the whitening centres there, with unit
    curvature. (Boltzmann's ``max`` puts the mode on a kink, where the gradient need not
    vanish: there the centre is no worse than ``w*``.)"""
    net, lin = _linearised_targets(_data(n=6, T=10, dim=2, A=3, seed=0), likelihood)
    w_star = lin.q_function.linearised_at
    assert torch.equal(w_star, net.center)
    assert torch.allclose(lin.log_joint(w_star), net.log_joint(w_star))
    assert torch.allclose(_grad(lin, w_star), _grad(net, w_star), atol=1e-10)
    assert float(lin.log_joint(lin.center)) >= float(lin.log_joint(w_star)) - 1e-9
    assert torch.allclose(lin.center, w_star, atol=1e-2)
    if likelihood == "soft":
        assert float(_grad(lin, lin.center).abs().max()) < 1e-7
    H = torch.autograd.functional.hessian(lambda x: lin.potential({"w": x}),
                                          torch.zeros(lin.n_params))
    assert torch.allclose(H, torch.eye(lin.n_params), atol=1e-6)
    away = w_star + 0.3 * torch.randn(lin.n_params)  # linear in w: not the network away from w*
    assert not torch.allclose(lin.log_joint(away), net.log_joint(away), atol=1e-3)
    # the target's Q (its network at w* kept from the build) is the expansion on fresh features
    batch = w_star + 0.3 * torch.randn(2, 3, lin.n_params)
    assert torch.allclose(lin.q(batch), lin.q_function(batch, lin.states), atol=1e-12)


def test_nuts_samples_a_linearised_mlp_in_few_steps_and_it_saves(tmp_path):
    """The linearised posterior is near-Gaussian in the whitened coordinates: NUTS takes a
    handful of leapfrog steps a draw (the network's own posterior on these data takes about
    200), and the file keeps the linearisation point."""
    data = _data(n=6, T=10, dim=2, A=3, seed=0)
    with warnings.catch_warnings():  # 2 x 100 draws: too few for 400 ESS, as it says
        warnings.simplefilter("ignore", InferenceWarning)
        post = birl.infer(None, data, QValueModel(hidden=(4,), weight_scale=3.0,
                                                  linearise=True),
                          method="nuts", num_samples=100, warmup=100, num_chains=2,
                          parallel=False, progress=False, seed=0)
    assert post.settings["model"]["linearise"] is True
    assert float(post.sample_stats["n_steps"].double().mean()) < 30
    assert post.min_ess() > 50
    path = tmp_path / "lin.nc"
    post.save(path)
    back = ContinuousPosterior.load(path)
    assert torch.equal(back.q_function.linearised_at, post.q_function.linearised_at)
    obs = data.transitions().obs
    assert torch.allclose(back.q_values(obs), post.q_values(obs))
    # Q is linear in w: the mean-Q policy acts on Q at the mean weights, which is the mean Q
    policy = post.policy("mean")
    assert post.q_function.linear_in_weights and policy._w.shape[0] == 1
    q_mean = post.q_values(obs).mean(0)
    assert torch.allclose(policy._q(obs[0].numpy())[0], q_mean[0])
    assert [policy(o) for o in obs.numpy()] == q_mean.argmax(-1).tolist()
    tr = data.transitions()
    assert torch.allclose(back.reward_at(tr.obs, tr.actions, tr.next_obs, tr.terminals),
                          post.reward())


def test_the_linearised_laplace_predictive_is_centred_on_the_map():
    """``method="laplace"`` on the linearised model is the linearised Laplace approximation:
    Q is linear in Gaussian weights, so its draws at any state are Gaussian with mean Q at the
    mode and covariance ``J Sigma J^T``."""
    data = _data(n=6, T=10, dim=2, A=3, seed=0)
    model = QValueModel(hidden=(4,), weight_scale=3.0, linearise=True)
    post = birl.infer(None, data, model, method="laplace", num_samples=4000, seed=0,
                      progress=False)
    lin = model.build_target(None, data, likelihood="soft", rationality=1.0)
    obs = torch.randn(5, 2)
    q = post.q_values(obs)                                               # (draws, 5, A)
    q_mode = lin.q_function(lin.center, obs)
    J = torch.autograd.functional.jacobian(lambda w: lin.q_function(w, obs), lin.center)
    cov = lin.scale_tril @ lin.scale_tril.T
    sd = torch.einsum("map,pq,maq->ma", J, cov, J).sqrt()
    assert ((q.mean(0) - q_mode).abs() < 4 * sd / math.sqrt(4000)).all()
    assert torch.allclose(q.std(0), sd, rtol=0.1)


def test_a_linear_term_beside_the_network_adds_phi_w_to_its_q():
    """``skip_scale``: ``Q = MLP(phi) + phi W_s (+ L)`` with ``W_s: (F, A)`` laid out after the
    layers and before the level; its prior ``skip_scale`` per weight (``/ sqrt(F)`` with
    ``fan_in``); a fit starts with it at 0 and the network at the fan-in scaled draw either
    way; the spec keeps both settings."""
    import dataclasses

    fmap = FeatureMap.fit(torch.randn(20, 3), n_fourier=2, seed=1)
    F = fmap.n_features
    net = QFunction(fmap, F, 3, (5,), 2.0, 4.0)
    skip = QFunction(fmap, F, 3, (5,), 2.0, 4.0, skip_scale=7.0)
    P = net.n_params
    assert skip.n_params == P + F * 3 and skip._skip == slice(P - 1, P - 1 + F * 3)
    w = torch.randn(2, skip.n_params, dtype=torch.float64)
    w_net = torch.cat([w[:, :P - 1], w[:, -1:]], -1)
    W_s = w[:, P - 1:-1].reshape(2, F, 3)
    feats = fmap(torch.randn(6, 3))
    assert torch.allclose(skip.apply(w, feats), net.apply(w_net, feats) + feats @ W_s)
    assert torch.equal(QFunction.from_spec(skip.spec()).apply(w, feats), skip.apply(w, feats))
    scale = skip.prior_scale()
    assert torch.allclose(scale[:P - 1], net.prior_scale()[:P - 1])
    assert torch.allclose(scale[skip._skip], torch.full((F * 3,), 7.0 / math.sqrt(F)))
    assert float(scale[-1]) == 4.0
    flat = dataclasses.replace(skip, fan_in=False)
    flat_scale = flat.prior_scale()
    assert torch.allclose(flat_scale[:F * 5], torch.full((F * 5,), 2.0))   # layer 1
    assert torch.allclose(flat_scale[F * 5:F * 5 + 15], torch.full((15,), 2.0))  # layer 2
    assert torch.allclose(flat_scale[skip._skip], torch.full((F * 3,), 7.0))
    assert QFunction.from_spec(flat.spec()).fan_in is False
    # the same start with or without fan-in scaling: the fan-in scaled draw, the linear term 0
    start = skip.start(3)
    assert torch.equal(start, flat.start(3))
    assert torch.equal(start[skip._skip], torch.zeros(F * 3))
    wide = QFunction(fmap, F, 3, (400,), 2.0, None, skip_scale=7.0, fan_in=False)
    z = wide.start(3)[:F * 400] / (2.0 / math.sqrt(F))  # the first layer, in fan-in units
    assert abs(float(z.std()) - 1.0) < 0.05 and abs(float(z.mean())) < 0.05
    # a spec written before the two settings existed reads as neither set
    old = {k: v for k, v in net.spec().items() if k not in ("skip_scale", "fan_in")}
    back = QFunction.from_spec(old)
    assert back.skip_scale is None and back.fan_in and back.n_params == P
    with pytest.raises(ValueError, match="already linear"):
        QFunction(fmap, F, 3, (), 2.0, skip_scale=1.0)


def test_a_skip_term_and_an_unscaled_prior_reach_the_posterior_and_its_file(tmp_path):
    data = _data(n=3, T=6, dim=2, A=3, seed=0)
    model = QValueModel(hidden=(4,), skip_scale=5.0, fan_in=False, weight_scale=2.0,
                        linearise=True)
    assert "skip_scale=5.0" in repr(model) and "fan_in=False" in repr(model)
    post = birl.infer(None, data, model, method="map", progress=False)
    qf = post.q_function
    assert qf.skip_scale == 5.0 and qf.fan_in is False and qf.linearised_at is not None
    assert post.settings["model"]["skip_scale"] == 5.0
    assert post.settings["model"]["fan_in"] is False
    post.save(tmp_path / "s.nc")
    back = ContinuousPosterior.load(tmp_path / "s.nc")
    assert back.q_function.skip_scale == 5.0 and back.q_function.fan_in is False
    obs = data.transitions().obs
    assert torch.allclose(back.q_values(obs), post.q_values(obs))
    # with a user's feature map the file keeps the class in its settings
    def features(o):
        return torch.cat([torch.ones_like(o[..., :1]), o, o ** 2], -1)

    user = birl.infer(None, data, QValueModel(hidden=(4,), features=features, skip_scale=5.0,
                                              fan_in=False), method="map", progress=False)
    user.save(tmp_path / "u.nc")
    again = ContinuousPosterior.load(tmp_path / "u.nc", features=features)
    assert again.q_function.skip_scale == 5.0 and again.q_function.fan_in is False
    assert torch.allclose(again.q_values(obs), user.q_values(obs))


def test_skip_scale_and_fan_in_are_checked():
    with pytest.raises(ValueError, match="skip_scale adds a linear term beside an MLP"):
        QValueModel(skip_scale=1.0)
    with pytest.raises(ValueError, match="skip_scale"):
        QValueModel(hidden=(4,), skip_scale=0.0)
    with pytest.raises(TypeError, match="fan_in must be True or False"):
        QValueModel(hidden=(4,), fan_in=1)


def test_linearise_refuses_a_linear_q_and_a_non_bool():
    with pytest.raises(ValueError, match="already linear"):
        QValueModel(linearise=True)
    with pytest.raises(TypeError, match="linearise must be True or False"):
        QValueModel(hidden=(4,), linearise="yes")
    with pytest.raises(TypeError, match="whiten must be True or False"):
        QValueModel(whiten="False")


def test_a_policy_refuses_a_greedy_flag_that_is_not_a_bool():
    post = birl.infer(None, _data(n=2, T=4, A=2), QValueModel(), method="map", progress=False)
    with pytest.raises(TypeError, match="greedy must be True or False, got 1"):
        post.policy("mean", greedy=1)


def test_whitening_polishes_an_mlps_map_where_lbfgs_stops_on_a_shoulder(monkeypatch):
    """L-BFGS can stall on an MLP's ill-conditioned posterior where the Hessian is not positive
    definite (here: stopped early, at the last of a few iteration caps whose point has a
    negative Hessian eigenvalue; where it passes such points depends on SciPy's L-BFGS-B, which
    changed between releases); the whitening then takes saddle-free Newton steps to the mode
    (gradient ~0, Hessian positive definite, denser than where L-BFGS stopped) and centres
    there. (The posterior has several modes: which one the steps reach from a given shoulder
    need not be the one a long L-BFGS run reaches.)"""
    from bayesirl.model.q_value import QValueTarget

    data = _data(n=6, T=10, dim=2, A=3, seed=0)

    def target(whiten):
        return QValueModel(hidden=(4,), weight_scale=3.0, whiten=whiten).build_target(
            None, data, likelihood="soft", rationality=1.0)

    def gradient(t, w):
        w = w.clone().requires_grad_(True)
        return torch.autograd.grad(-t.log_joint(w), w)[0]

    plain = target(False)
    caps = [k for k in (25, 50, 75, 100, 125, 150, 200)
            if float(torch.linalg.eigvalsh(plain.hessian(plain.map_estimate(max_iter=k)))[0]) < 0]
    assert caps, "L-BFGS passed no shoulder on its way to the mode"
    cap = caps[-1]
    stalled = plain.map_estimate(max_iter=cap)
    full = QValueTarget.map_estimate
    monkeypatch.setattr(QValueTarget, "map_estimate",
                        lambda self, w0=None, max_iter=2000: full(self, w0, cap))
    centre = target(True).center
    assert float(gradient(plain, centre).abs().max()) < 1e-6
    assert float(torch.linalg.eigvalsh(plain.hessian(centre))[0]) > 0
    assert float(plain.log_joint(centre)) > float(plain.log_joint(stalled))
    monkeypatch.setattr(QValueTarget, "_newton_polish", lambda self, w, H: (w, H))
    assert float(gradient(plain, target(True).center).abs().max()) > 1e-2


def test_whitening_centres_on_the_mode_where_lbfgs_stops_at_its_iteration_cap(monkeypatch):
    """A linear Q whose Hessian is positive definite wherever L-BFGS stops: capped at a few
    iterations (as a posterior over many random features caps it at 2 000, gradient still
    near 1), the whitening's Newton steps still take it to the mode that
    :meth:`QValueTarget.init_unconstrained` promises (``u = 0`` is the MAP)."""
    from bayesirl.model.q_value import QValueTarget

    data = _data(n=6, T=10, dim=2, A=3, seed=0)

    def target(whiten):
        return QValueModel(n_fourier=20, weight_scale=10.0, whiten=whiten).build_target(
            None, data, likelihood="soft", rationality=1.0)

    plain = target(False)
    stalled = plain.map_estimate(max_iter=3)
    assert float(torch.linalg.eigvalsh(plain.hessian(stalled))[0]) > 0
    assert float(_grad(plain, stalled).abs().max()) > 1e-2
    mode = plain.map_estimate()
    full = QValueTarget.map_estimate
    monkeypatch.setattr(QValueTarget, "map_estimate",
                        lambda self, w0=None, max_iter=2000: full(self, w0, 3))
    centre = target(True).center
    assert float(_grad(plain, centre).abs().max()) < 1e-6
    assert torch.allclose(centre, mode, atol=1e-4)
