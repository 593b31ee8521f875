"""luce.diffusion: discrete subset diffusion, masked diffusion over k exchangeable slots.

    model = luce.diffusion.SubsetDenoiser(n_items=69, k=5)
    params = model.init(key, None, visible, slots_left)["params"]
    enc = model.apply({"params": params}, context, method="encode")
    logits_fn = lambda vis, r: model.apply({"params": params}, enc, vis, r, method="denoise")
    log_p = luce.diffusion.exact_set_log_prob(logits_fn, sets, n=69)          # exact, k <= 12
    bound = luce.diffusion.set_elbo(logits_fn, sets, n=69)                    # >= -log p
    loss = luce.diffusion.diffusion_loss(logits_fn, sets, 69, key)            # MD4, training
    samples = luce.diffusion.sample_sets(key, logits_fn, 69, 5, 1000, steps=5)

Plackett-Luce is the special case `pl_logits_fn(scores)`: the same
`exact_set_log_prob` then equals `luce.pl_set_log_prob`, so both families are
scored by one evaluation path, in nats per event.
"""

from luce.diffusion._denoiser import MIXERS, SubsetDenoiser
from luce.diffusion._likelihood import (EXACT_MAX_K, diffusion_loss, exact_nll_and_elbo,
                                        exact_set_log_prob, ordered_diffusion_loss, pl_logits_fn,
                                        set_elbo, subset_conditionals)
from luce.diffusion._masks import allowed_items, check_constraints, masked_log_softmax
from luce.diffusion._sampler import sample_sets
from luce.diffusion._metrics import (cooccurrence_mmd, inclusion_calibration, inclusion_from_samples,
                                     overlap_histogram, validity_rate)
from luce.diffusion._train import (DiffusionModel, build_diffusion_model, evaluate_diffusion_run, exact_nll,
                                   first_pick_scores, format_nll_table,
                                   nll_summary, sample_for_events, train_diffusion)
