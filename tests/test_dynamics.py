"""Tests of bayesirl.core.dynamics: supports, the Dirichlet posterior from observed triples,
its mean, mode and draws, and the MDP built from them."""

import numpy as np
import pytest
import torch

from bayesirl.core.dynamics import DirichletTransitions, TransitionSupport, fit_transitions
from bayesirl.core.mdp import TabularMDP


def rust_support(S=6):
    """Keep moves 0, 1 or 2 states up; replace resets to 0 then moves; one tied group."""
    return TransitionSupport.from_offsets(S, 2, (0, 1, 2), origin=(None, 0))


def sample_triples(support, theta, n, seed):
    """``n`` observations from the support with group probabilities ``theta (G, K)``:
    uniform (s, a), a slot drawn from the (s, a)'s group, s' its successor."""
    rng = np.random.default_rng(seed)
    S, A = support.n_states, support.n_actions
    s = rng.integers(0, S, n)
    a = rng.integers(0, A, n)
    g = support.groups[s, a].numpy()
    k = np.array([rng.choice(theta.shape[1], p=theta[gi]) for gi in g])
    return s, a, support.successors[s, a, k].numpy(), g, k


# ---------------------------------------------------------------------- supports
def test_offsets_move_from_the_state_or_from_the_reset_state_and_clip_at_the_top():
    sup = rust_support(S=6)
    succ = sup.successors
    assert succ.shape == (6, 2, 3)
    for s in range(6):
        assert succ[s, 0].tolist() == [min(s + j, 5) for j in range(3)]
        assert succ[s, 1].tolist() == [0, 1, 2]
    assert sup.n_groups == 1 and (sup.groups == 0).all()
    assert sup.slot_names == ("+0", "+1", "+2")


@pytest.mark.parametrize("tie, groups", [("all", 1), ("action", 2), ("none", 12)])
def test_tie_gives_one_group_overall_per_action_or_per_state_action(tie, groups):
    sup = TransitionSupport.from_offsets(6, 2, (0, 1), tie=tie)
    assert sup.n_groups == groups
    if tie == "action":
        assert (sup.groups == torch.arange(2)).all()


def test_per_action_offsets_and_negative_moves_clip_at_the_bottom():
    sup = TransitionSupport.from_offsets(4, 2, [[-1, 1], [0, 2]], tie="action")
    assert sup.successors[0, 0].tolist() == [0, 1]
    assert sup.successors[3, 1].tolist() == [3, 3]
    assert sup.slot_names is None  # the actions' offsets differ


def test_support_rejects_bad_tables_naming_the_entry():
    succ = torch.zeros(3, 2, 2, dtype=torch.long)
    succ[1, 0, 1] = 3
    with pytest.raises(ValueError, match=r"successors\[1, 0, 1\] is 3, expected a state index"):
        TransitionSupport(succ)
    valid = torch.ones(3, 2, 2, dtype=torch.bool)
    valid[2, 1] = False
    with pytest.raises(ValueError, match=r"valid\[2, 1\] has no True slot"):
        TransitionSupport(torch.zeros(3, 2, 2), valid=valid)
    valid = torch.ones(3, 2, 2, dtype=torch.bool)
    valid[2, 1, 1] = False
    with pytest.raises(ValueError, match=r"valid\[2, 1\] .* expected the same valid slots "
                                         r"within group 0"):
        TransitionSupport(torch.zeros(3, 2, 2), valid=valid, groups=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="group 1 has no"):
        TransitionSupport(torch.zeros(3, 2, 2), groups=torch.tensor([[0, 2]] * 3))
    with pytest.raises(ValueError, match="origin"):
        TransitionSupport.from_offsets(3, 2, (0, 1), origin=(None,))
    with pytest.raises(ValueError, match=r"origin\[1\] is 3"):
        TransitionSupport.from_offsets(3, 2, (0, 1), origin=(None, 3))
    with pytest.raises(ValueError, match="tie is 'some'"):
        TransitionSupport.from_offsets(3, 2, (0, 1), tie="some")


# ---------------------------------------------------------------------- the posterior
def test_concentration_is_the_prior_plus_the_slot_counts_of_the_observations():
    sup = TransitionSupport.from_offsets(5, 2, (0, 1, 2), origin=(None, 0), tie="action")
    theta = np.array([[0.3, 0.6, 0.1], [0.5, 0.25, 0.25]])
    s, a, s1, g, k = sample_triples(sup, theta, 400, seed=3)
    # drop the observations a clipped top makes censored (from 3 and 4 under keep)
    ok = ~((a == 0) & (s >= 3))
    prior = torch.tensor([0.5, 1.0, 2.0])
    post = fit_transitions(sup, s[ok], a[ok], s1[ok], prior=prior)
    expected = np.zeros((2, 3))
    for gi, ki in zip(g[ok], k[ok], strict=True):
        expected[gi, ki] += 1
    assert np.array_equal(post.counts.numpy(), expected)
    assert torch.equal(post.concentration, prior + torch.from_numpy(expected))
    assert post.n_observations == int(ok.sum())


def test_mean_and_mode_are_the_dirichlet_formulas_spread_over_the_tied_members():
    sup = rust_support(S=6)
    post = DirichletTransitions.from_counts(sup, [[30, 60, 10]], prior=2.0)
    c = torch.tensor([32.0, 62.0, 12.0])
    assert torch.allclose(post.group_mean()[0], c / c.sum())
    assert torch.allclose(post.group_mode()[0], (c - 1) / (c.sum() - 3))
    succ, probs = post.mean()
    assert torch.equal(succ, sup.successors)
    assert torch.allclose(probs, (c / c.sum()).expand(6, 2, 3))
    sd = (c * (c.sum() - c) / (c.sum() ** 2 * (c.sum() + 1))).sqrt()
    assert torch.allclose(post.group_sd()[0], sd)


def test_the_mode_under_a_uniform_prior_is_the_observed_frequencies():
    post = DirichletTransitions.from_counts(rust_support(), [[1682, 2555, 55]], prior=1.0)
    n = torch.tensor([1682.0, 2555.0, 55.0])
    assert torch.allclose(post.group_mode()[0], n / n.sum())


def test_the_mode_is_refused_where_it_is_not_defined():
    post = DirichletTransitions.from_counts(rust_support(), [[0, 3, 0]], prior=0.5)
    with pytest.raises(ValueError, match="group 0 .* mode needs every entry >= 1"):
        post.group_mode()
    with pytest.raises(ValueError, match="mode needs"):
        DirichletTransitions.from_counts(rust_support(), [[0, 0, 0]]).mode()


def test_a_group_with_one_valid_slot_has_mode_one_there_observed_or_not():
    """A move the support fixes (one valid slot) has probability 1 whatever was counted; the
    mode of the other groups is unchanged by it."""
    succ = torch.tensor([[[1, 2]], [[2, 0]], [[2, 0]]])          # (S=3, A=1, K=2)
    valid = torch.tensor([[[True, True]], [[True, True]], [[True, False]]])
    sup = TransitionSupport(succ, valid=valid)
    post = DirichletTransitions.from_counts(sup, [[3, 1], [2, 2], [0, 0]], prior=1.0)
    mode = post.group_mode()
    assert torch.allclose(mode[0], torch.tensor([0.75, 0.25], dtype=mode.dtype))
    assert mode[2].tolist() == [1.0, 0.0]
    mdp = post.to_mdp("mode", discount=0.9)
    assert torch.allclose(mdp.transition_matrix()[2, 0], torch.tensor(
        [0.0, 0.0, 1.0], dtype=mdp.dtype))


def test_draws_are_reproducible_from_their_seed_tied_and_on_the_simplex():
    post = DirichletTransitions.from_counts(rust_support(S=5), [[20, 50, 5]], prior=1.0)
    d = post.draws(7, seed=11)
    assert d.shape == (7, 5, 2, 3)
    assert torch.equal(d, post.draws(7, seed=11))
    assert not torch.equal(d, post.draws(7, seed=12))
    assert torch.allclose(d.sum(-1), torch.ones(7, 5, 2))
    assert (d >= 0).all()
    # one vector per group and draw, shared by every (s, a)
    assert torch.equal(d, d[:, :1, :1].expand_as(d))


def test_draws_average_to_the_posterior_mean_within_monte_carlo_error():
    post = DirichletTransitions.from_counts(rust_support(S=4), [[12, 30, 3]], prior=1.0)
    n = 4000
    d = post.draws(n, seed=0)[:, 0, 0]  # (n, K)
    z = (d.mean(0) - post.group_mean()[0]) / (post.group_sd()[0] / n ** 0.5)
    assert (z.abs() < 4).all(), z


def test_free_dynamics_estimate_every_state_action_on_its_own():
    succ = torch.tensor([[[0, 1], [1, 2]], [[1, 2], [0, 2]], [[2, 0], [2, 1]]])
    sup = TransitionSupport(succ)
    assert sup.n_groups == 6
    post = fit_transitions(sup, [0, 0, 0, 1, 2], [0, 0, 1, 1, 1], [1, 0, 2, 0, 1], prior=1.0)
    expected = torch.zeros(6, 2, dtype=torch.float64)
    expected[0, 1] = 1
    expected[0, 0] = 1
    expected[1, 1] = 1  # (0, 1) -> 2 is its slot 1
    expected[3, 0] = 1  # (1, 1) -> 0
    expected[5, 1] = 1  # (2, 1) -> 1
    assert torch.equal(post.counts, expected)


def test_invalid_slots_get_no_probability_and_no_counts():
    succ = torch.tensor([[[0, 1, 0]], [[1, 0, 0]]])
    valid = torch.tensor([[[True, True, False]], [[True, True, False]]])
    sup = TransitionSupport(succ, valid=valid, groups=torch.zeros(2, 1))
    post = fit_transitions(sup, [0, 1, 1], [0, 0, 0], [1, 0, 1])
    assert post.counts.tolist() == [[1.0, 2.0, 0.0]]
    assert post.concentration.tolist() == [[2.0, 3.0, 0.0]]
    assert (post.draws(5, seed=0)[..., 2] == 0).all()
    assert torch.allclose(post.mean()[1].sum(-1), torch.ones(2, 1))
    with pytest.raises(ValueError, match=r"counts\[0, 2\] is 1 on a slot that is not valid"):
        DirichletTransitions.from_counts(sup, [[1, 1, 1]])


# ---------------------------------------------------------------------- bad observations
def test_a_transition_outside_the_support_names_the_observation_s_a_and_next_state():
    with pytest.raises(ValueError, match=r"observation 2: transition s=3, a=1 -> s'=4 is "
                                         r"outside the support, expected s' in \[0, 1, 2\]"):
        fit_transitions(rust_support(), [0, 1, 3], [0, 0, 1], [1, 3, 4])
    with pytest.raises(ValueError, match=r"observation 1: next_states\[1\] is 9, expected an "
                                         r"index in \[0, 6\)"):
        fit_transitions(rust_support(), [0, 1], [0, 0], [1, 9])
    with pytest.raises(ValueError, match=r"observation 0: actions\[0\] is 2"):
        fit_transitions(rust_support(), [0], [2], [0])
    with pytest.raises(ValueError, match="actions must have shape"):
        fit_transitions(rust_support(), [0, 1], [0], [0, 1])
    with pytest.raises(TypeError, match="states must hold integer indices"):
        fit_transitions(rust_support(), [0.5], [0], [0])


def test_a_censored_observation_at_the_clipped_top_is_an_error_unless_dropped():
    sup = rust_support(S=6)  # from 4, keep: +1 and +2 both reach 5
    with pytest.raises(ValueError, match=r"observation 1: transition s=4, a=0 -> s'=5 fills "
                                         r"slots \[1, 2\]"):
        fit_transitions(sup, [0, 4], [0, 0], [0, 5])
    post = fit_transitions(sup, [0, 4, 4], [0, 0, 0], [0, 5, 4], ambiguous="drop")
    assert post.counts.tolist() == [[2.0, 0.0, 0.0]] and post.n_censored == 1


def test_staying_in_the_absorbing_top_state_carries_no_information_and_is_not_counted():
    post = fit_transitions(rust_support(S=6), [5, 5, 2], [0, 0, 0], [5, 5, 3])
    assert post.counts.tolist() == [[0.0, 1.0, 0.0]]
    assert post.n_uninformative == 2 and post.n_censored == 0


def test_priors_and_counts_are_checked_naming_the_entry():
    sup = rust_support()
    with pytest.raises(ValueError, match=r"prior\[0, 1\] is 0, expected a concentration > 0"):
        DirichletTransitions.from_counts(sup, [[1, 1, 1]], prior=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"counts\[0, 2\] is -1, expected a count >= 0"):
        DirichletTransitions.from_counts(sup, [[1, 1, -1]])
    with pytest.raises(ValueError, match=r"prior must be a number or have shape \(3,\)"):
        DirichletTransitions.from_counts(sup, [[1, 1, 1]], prior=[1.0, 1.0])


# ---------------------------------------------------------------------- the MDP
def test_to_mdp_gives_a_valid_mdp_from_the_mean_mode_or_a_draw():
    sup = rust_support(S=6)
    post = DirichletTransitions.from_counts(sup, [[40, 55, 5]])
    phi = torch.randn(6, 2, 2, generator=torch.Generator().manual_seed(0))
    f64 = torch.float64
    draw = post.draws(1, seed=4, dtype=f64)[0]
    for estimate, theta in (("mean", post.group_mean(f64)[0]), ("mode", post.group_mode(f64)[0]),
                            (draw, draw[0, 0])):
        mdp = post.to_mdp(estimate, discount=0.95, features=phi, dtype=f64)
        assert isinstance(mdp, TabularMDP) and mdp.dtype == f64
        P = mdp.transition_matrix()
        assert torch.allclose(P.sum(-1), torch.ones(6, 2, dtype=f64))
        assert torch.allclose(P[:, 1, :3], theta.expand(6, 3))  # replace resets to 0, moves
        assert torch.allclose(P[2, 0, 2:5], theta)  # keep moves 0, 1, 2 up
        assert torch.allclose(P[4, 0, 4:], torch.stack([theta[0], theta[1:].sum()]))
        assert P[5, 0, 5] == 1  # the top state absorbs
        assert torch.equal(mdp.features, phi.to(f64))
    mdp = post.to_mdp(horizon=4, initial=torch.tensor([1.0, 0, 0, 0, 0, 0]))
    assert mdp.horizon == 4 and mdp.initial[0] == 1
    with pytest.raises(ValueError, match=r"estimate must be 'mean', 'mode' or probabilities "
                                         r"of shape \(6, 2, 3\)"):
        post.to_mdp(torch.ones(6, 2), discount=0.9)
    with pytest.raises(ValueError, match="estimate is 'median'"):
        post.to_mdp("median", discount=0.9)


def test_counts_table_has_a_row_per_valid_slot():
    post = DirichletTransitions.from_counts(rust_support(), [[1682, 2555, 55]])
    table = post.counts_table()
    assert list(table) == ["group", "slot", "name", "prior", "count", "concentration", "mean",
                           "sd"]
    assert table["count"].tolist() == [1682, 2555, 55]
    assert table["name"].tolist() == ["+0", "+1", "+2"]
    assert np.allclose(table["mean"], post.group_mean(torch.float64)[0].numpy())


# ---------------------------------------------------------------------- transitions in a posterior
def test_probabilities_spread_group_parameters_differentiably_over_batches():
    post = DirichletTransitions.from_counts(rust_support(S=4), [[5, 3, 2]])
    theta = torch.tensor([[[0.2, 0.5, 0.3]], [[0.6, 0.3, 0.1]]], requires_grad=True)  # (2, 1, 3)
    probs = post.probabilities(theta)
    assert probs.shape == (2, 4, 2, 3)
    assert torch.equal(probs[1, 3, 1], theta[1, 0])
    probs[:, 2, 0, 1].sum().backward()
    assert theta.grad[:, 0].tolist() == [[0.0, 1.0, 0.0]] * 2


def test_the_transition_log_likelihood_is_maximal_at_the_frequencies():
    post = DirichletTransitions.from_counts(rust_support(), [[1682, 2555, 55]])
    mle = post.group_mode(torch.float64)
    n = torch.tensor([1682.0, 2555.0, 55.0], dtype=torch.float64)
    assert torch.allclose(post.log_likelihood(mle), (n * mle[0].log()).sum())
    # Rust (1987) Table IX, group 4: full (-3304.155) minus choice (-163.584) log-likelihood
    assert abs(post.log_likelihood(mle).item() - (-3304.155 + 163.584)) < 1e-3
    others = post.draws(50, seed=2, dtype=torch.float64)[:, :1, 0]  # (50, G=1, K)
    assert (post.log_likelihood(others) < post.log_likelihood(mle)).all()
    zero = DirichletTransitions.from_counts(rust_support(), [[3, 2, 0]])
    theta = torch.tensor([[0.6, 0.4, 0.0]], requires_grad=True)
    ll = zero.log_likelihood(theta)
    ll.backward()
    assert torch.isfinite(ll) and torch.isfinite(theta.grad).all()
