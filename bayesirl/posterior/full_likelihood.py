"""FullLikelihoodPosterior: draws of the reward parameters and the transition probabilities of
a :class:`~bayesirl.model.dynamics_likelihood.FullLikelihood` (Rust's stage 3).

What :class:`~bayesirl.model.dynamics_likelihood.FullLikelihoodTarget` builds from its draws
(importing this module registers the class there), so ``infer(mdp, demos, FullLikelihood(...),
method=...)`` returns one. It is a :class:`~bayesirl.RewardPosterior` whose ``samples`` hold the
transition probabilities' site ``"p"`` ``(draws, G, K)`` beside the reward's sites, and whose
MAP (``method="map"``) carries standard errors of every site, ``p`` included, in
``extra["standard_errors"]``.

The pointwise log-likelihood ``log_lik`` ``(chains, draws, N)`` is the demonstrations' choices,
one term per demonstration: the transitions' term of the target's likelihood is no
demonstration, so it stays out of LOO; a draw's full log-likelihood is ``log_lik.sum(-1)`` plus
``target.transitions.log_likelihood(p)``.

Each draw's ``p`` is spread over the MDP's successors by the first stage's tying of ``(s, a)``
into groups, which the posterior keeps (:attr:`FullLikelihoodPosterior.transition_groups`,
saved with it): :meth:`FullLikelihoodPosterior.transition_probs` gives every draw's
``(S, A, K)`` probabilities, and :func:`~bayesirl.decisions.counterfactual` plans each draw in
its own. The reward-level tools (``policy()``, ``predictive()``) plan in ``post.mdp``, whose
transition probabilities are the first stage's, not each draw's ``p``.
"""

from __future__ import annotations

import numpy as np
import torch

from bayesirl.model.dynamics_likelihood import SITE, FullLikelihoodTarget
from bayesirl.planning.bellman import broadcast_reward
from bayesirl.planning.buffers import DRAWS_PER_PLAN
from bayesirl.posterior.reward_posterior import RewardPosterior
from bayesirl.posterior.target_draws import per_chain

__all__ = ["FullLikelihoodPosterior"]

GROUPS = "transition_group"  # the saved (S, A) tying, a constant_data variable


class FullLikelihoodPosterior(RewardPosterior):
    """A :class:`~bayesirl.RewardPosterior` of a full-likelihood fit (see the module doc):
    ``params`` has the reward's sites and ``"p"`` ``(chains, draws, G, K)`` (dims ``group``,
    ``slot``); ``log_lik`` ``(chains, draws, N)`` the demonstrations' choices.

    Args (beyond :class:`~bayesirl.RewardPosterior`'s):
        transition_groups: ``(S, A)`` integer group of each ``(s, a)`` (the first stage's
            :class:`~bayesirl.core.dynamics.TransitionSupport` ``groups``), which spreads a
            draw of ``p`` over the MDP's successors; None where unknown (then
            :meth:`transition_probs` refuses).
    """

    def __init__(self, *args, transition_groups=None, **kwargs):
        super().__init__(*args, **kwargs)
        if transition_groups is not None:
            groups = torch.as_tensor(np.asarray(transition_groups) if not isinstance(
                transition_groups, torch.Tensor) else transition_groups)
            if groups.dtype.is_floating_point or groups.dtype == torch.bool:
                raise TypeError(f"transition_groups must be integer group indices, got dtype "
                                f"{groups.dtype}")
            S, A = self.rewards.shape[-2:]
            G = self.params[SITE].shape[-2] if SITE in self.params else None
            if tuple(groups.shape) != (S, A):
                raise ValueError(f"transition_groups must have shape ({S}, {A}) like the "
                                 f"rewards' states and actions, got {tuple(groups.shape)}")
            if G is not None and groups.numel() and (int(groups.min()) < 0 or
                                                     int(groups.max()) >= G):
                raise ValueError(f"transition_groups holds {int(groups.min())}.."
                                 f"{int(groups.max())}, expected group indices in [0, {G}) "
                                 f"of site {SITE!r}'s draws")
            transition_groups = groups.long().cpu()
        self.transition_groups = transition_groups

    def transition_probs(self) -> torch.Tensor:
        """Every draw's transition probabilities on the MDP's successors: ``(chains * draws,
        S, A, K)``, ``P[d, s, a, k] = p[d, groups[s, a], k]`` (rows sum to 1).

        Raises:
            ValueError: without :attr:`transition_groups` (a file written before they were
                saved) or without draws of ``p``.
        """
        if SITE not in self.params:
            raise ValueError(f"the posterior has no draws of the transition probabilities "
                             f"(site {SITE!r})")
        if self.transition_groups is None:
            raise ValueError("the posterior does not know how its draws of p spread over "
                             "states and actions (transition_groups is None): build it with "
                             "infer(..., FullLikelihood(...)) or load a file it saved")
        p = self.samples[SITE]
        return p[:, self.transition_groups.to(p.device), :]

    def _constant_data(self) -> dict:
        """:attr:`transition_groups` as the ``constant_data`` variable ``transition_group``
        (dims ``state``, ``action``), so that :meth:`load` gives them back."""
        if self.transition_groups is None:
            return {}
        return {GROUPS: (self.transition_groups.numpy(), ["state", "action"])}

    @classmethod
    def _from_constant_data(cls, group) -> dict:
        if group is None or GROUPS not in group:
            return {}
        return {"transition_groups": torch.as_tensor(np.asarray(group[GROUPS].values))}

    @classmethod
    def from_target(cls, target: FullLikelihoodTarget, params, *, method: str, log_lik=None,
                    sample_stats=None, settings=None, num_chains: int = 1
                    ) -> FullLikelihoodPosterior:
        """From constrained draws ``{site: (draws, *shape)}`` of ``target`` (chains flattened
        into ``num_chains`` equal blocks). Rewards and the choices' pointwise log-likelihood
        are recomputed from the draws, :data:`~bayesirl.planning.buffers.DRAWS_PER_PLAN` at a
        time (``log_lik`` is not used). Raises FloatingPointError where a draw's reward or
        log-likelihood is not finite."""
        chained = per_chain(params, num_chains)
        C, D = next(iter(chained.values())).shape[:2]
        n, mdp, N = C * D, target.mdp, target.demos.n
        rewards, choices = [], []
        with torch.no_grad():
            for i in range(0, n, DRAWS_PER_PLAN):
                chunk = {k: v[i:i + DRAWS_PER_PLAN] for k, v in params.items()}
                rewards.append(broadcast_reward(mdp, target.reward_model.reward(
                    {k: v for k, v in chunk.items() if k != SITE})))
                choices.append(target.log_likelihood(chunk)[..., :N])
        rewards, choices = torch.cat(rewards), torch.cat(choices)
        for name, value in (("reward", rewards), ("log-likelihood", choices)):
            if not torch.isfinite(value).all():
                raise FloatingPointError(f"inference produced non-finite {name} values at some "
                                         "draws; the posterior is not usable")
        dims = {**target.reward_model.dims, SITE: ("group", "slot")}
        return cls(mdp, rewards.reshape(C, D, *rewards.shape[1:]), chained,
                   choices.reshape(C, D, N), target.demos, method, settings, sample_stats,
                   dims=dims, coords=target.reward_model.coords(mdp),
                   transition_groups=target.transitions.support.groups)


FullLikelihoodTarget.posterior_class = FullLikelihoodPosterior  # the target builds this
