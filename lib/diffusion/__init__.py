"""luce.diffusion: discrete subset diffusion, masked diffusion over k exchangeable slots.

    >>> import jax, jax.numpy as jnp, luce.diffusion
    >>> model = luce.diffusion.SubsetDenoiser(n_items=12, k=3, hidden=16)
    >>> visible, slots_left = jnp.zeros((1, 12), bool), jnp.full((1,), 3)
    >>> params = model.init(jax.random.key(0), None, visible, slots_left, method="init_all")["params"]
    >>> enc = model.apply({"params": params}, None, method="encode")
    >>> logits_fn = lambda vis, r: model.apply({"params": params}, enc, vis, r, method="denoise")
    >>> sets = jnp.array([[0, 4, 7], [2, 3, 11]])
    >>> log_p = luce.diffusion.exact_set_log_prob(logits_fn, sets, 12)      # exact, k <= 12
    >>> bound = luce.diffusion.set_elbo(logits_fn, sets, 12)               # >= -log p
    >>> bool(jnp.all(bound >= -log_p - 1e-4))
    True
    >>> loss = luce.diffusion.diffusion_loss(logits_fn, sets, 12, jax.random.key(1))  # MD4, training
    >>> luce.diffusion.sample_sets(jax.random.key(2), logits_fn, 12, 3, 1000, steps=3).shape
    (1000, 3)

Rankings use the ordered variant, each rank its own slot (`denoise_ordered`;
-1 pads the end of a shorter list):

    >>> ordered_fn = lambda v, r: model.apply({"params": params}, enc, v, r, method="denoise_ordered")
    >>> rankings = jnp.array([[4, 0, 7], [11, 2, -1]])                       # best first
    >>> log_p = luce.diffusion.exact_ranking_log_prob(ordered_fn, rankings, 12)  # exact, k <= 12
    >>> bool(jnp.all(luce.diffusion.ranking_elbo(ordered_fn, rankings, 12) >= -log_p - 1e-4))
    True
    >>> luce.diffusion.sample_rankings(jax.random.key(3), ordered_fn, 12, 3, 5).shape
    (5, 3)

Plackett-Luce is the special case `pl_logits_fn(scores)`: the same
`exact_set_log_prob` then equals `luce.pl_set_log_prob`. `DiffusionFamily`
is this model (sets; rankings by the ordered variant) as a family of the one train loop (`model.family =
"diffusion"` in luce-train, luce-eval, luce-predict and luce-backtest), scored
in the same nats per event as the PL family and the baselines.
"""

from luce.diffusion._denoiser import MIXERS, SubsetDenoiser
from luce.diffusion._likelihood import (EXACT_MAX_K, diffusion_loss, exact_nll_and_elbo,
                                        exact_set_log_prob, ordered_diffusion_loss, pl_logits_fn,
                                        set_elbo, subset_conditionals)
from luce.diffusion._masks import allowed_items, check_constraints, masked_log_softmax
from luce.diffusion._sampler import sample_sets
from luce.diffusion._ordered import (exact_ranking_log_prob, exact_ranking_nll_and_elbo,
                                     ordered_conditionals, ranking_elbo, ranking_lengths,
                                     sample_rankings)
from luce.diffusion._metrics import (cooccurrence_mmd, inclusion_calibration, inclusion_from_samples,
                                     overlap_histogram, validity_rate)
from luce.diffusion._family import BOUND_SAMPLES, DiffusionFamily, DiffusionModel
