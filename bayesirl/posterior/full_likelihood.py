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
``target.transitions.log_likelihood(p)``. The reward-level tools (``policy()``,
``predictive()``) plan in ``post.mdp``, whose transition probabilities are the first stage's,
not each draw's ``p``.
"""

from __future__ import annotations

import torch

from bayesirl.model.dynamics_likelihood import SITE, FullLikelihoodTarget
from bayesirl.planning.bellman import broadcast_reward
from bayesirl.planning.buffers import DRAWS_PER_PLAN
from bayesirl.posterior.reward_posterior import RewardPosterior
from bayesirl.posterior.target_draws import per_chain

__all__ = ["FullLikelihoodPosterior"]


class FullLikelihoodPosterior(RewardPosterior):
    """A :class:`~bayesirl.RewardPosterior` of a full-likelihood fit (see the module doc):
    ``params`` has the reward's sites and ``"p"`` ``(chains, draws, G, K)`` (dims ``group``,
    ``slot``); ``log_lik`` ``(chains, draws, N)`` the demonstrations' choices."""

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
                   dims=dims, coords=target.reward_model.coords(mdp))


FullLikelihoodTarget.posterior_class = FullLikelihoodPosterior  # the target builds this
