"""Sampled negatives: training batches that score an event's chosen items and M others.

An event over n available items costs n scores per training step; with a
catalog of 10,000 items and k = 5 picks nearly all of them are items the
event did not choose. Both PL likelihoods read those unchosen items U only
through one sum, R = Σ_{u∈U} e^{s_u}:

  ranking   log P = Σ_j [ s_{π_j} − log(R + Σ_{m≥j} e^{s_{π_m}}) ]
  set       P(S) = Σ_{B⊆S} (−1)^{|B|} R / (R + w_B)

so the sampled loss keeps every chosen item exactly and replaces R by an
estimate from M negatives N ⊂ U drawn without replacement:

  uniform     R̂ = (|U| / M) Σ_{u∈N} e^{s_u}          (Horvitz-Thompson)
  proposal q  R̂ = Σ_{u∈N} e^{s_u} / p_u(κ)           (priority sampling)

where the proposal draw is Gumbel-top-M on log q (PL sampling from q), κ the
(M+1)-th largest Gumbel key and p_u(κ) = 1 − exp(−q_u e^{−κ}) the chance that
u's key beats it; both give E[R̂] = R. R̂ is written as the scores of the
negatives plus their offsets (log(|U| / M), or −log p_u(κ): the log-q
correction of sampled softmax), and the loss is the PL likelihood of that
block of k + M items (`luce.losses.event_nll`, the same code as the exact
loss). A proposal close to e^s (popularity, for a catalog whose strengths
are skewed) lowers the variance of R̂, and so the bias below, at the same M. What is approximated: R̂ is unbiased for R, but
log R̂ is not unbiased for log R (Jensen: E log R̂ ≤ log R), so the sampled
NLL is a consistent estimator of the exact NLL (its bias and variance vanish
as M grows), not an unbiased one, and so is its gradient. When M ≥ |U|
every unchosen item is drawn with offset 0 and the sampled loss *is* the
exact loss. Training only is sampled: evaluation (`PLFamily.nll`, the
reports) scores every available item exactly.

The negatives of a batch are a pure function of its key (the loop uses the
run's seed, the step and the process index), so a resumed run draws what an
uninterrupted one drew.
"""

from __future__ import annotations

import numpy as np

from luce.errors import DataError, ShapeError


def sample_negatives(available: np.ndarray, items: np.ndarray, count: int, key,
                     proposal: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """M = `count` negatives of each event, drawn without replacement from its unchosen
  available items U_e, with the log-weights that make Σ e^{s + log_weight} over them an
  unbiased estimate of R = Σ_{u∈U_e} e^{s_u}.

  Uniform (`proposal` None): the M smallest of iid uniform keys, a uniform M-subset;
  log_weight = log(|U_e| / M) (Horvitz-Thompson). By a proposal q (`proposal`
  float[n] > 0): Gumbel-top-M on log q over U_e, i.e. PL sampling without
  replacement from q, drawn as exponential races E_i / q_i; with κ the (M+1)-th
  largest key, each drawn item's weight is
  1 / p_i(κ), p_i(κ) = 1 - exp(-q_i e^{-κ}), the probability that its key beats κ
  (priority sampling; Duffield, Lund and Thorup 2007, and Kool, van Hoof and Welling
  2019 for Gumbel keys: unbiased). Either way an event with |U_e| <= M draws all of
  U_e at log_weight 0, so the sampled loss is then the exact one.

  Args:
    available: bool[B, n] the events' available items.
    items: int[B, k] each event's listed items (-1 padded); each listed item
      must be available.
    count: M >= 1, the negatives per event.
    key: int or sequence of ints seeding the draw (`numpy.random.default_rng`).
    proposal: None (uniform) or float[n] positive proposal weights q (any scale).

  Returns:
    (negatives int32[B, M] catalog ids, real bool[B, M], log_weight float32[B, M]):
    row e holds min(M, |U_e|) distinct ids of U_e (`real`), the rest padding
    (ids outside U_e, `real` False, log_weight 0).
  """
  available = np.asarray(available, bool)
  items = np.asarray(items)
  b, n = available.shape
  pool = available.copy()
  rows, cols = np.nonzero(items >= 0)
  listed = items[rows, cols]
  if not available[rows, listed].all():
    bad = int(np.argmin(available[rows, listed]))
    raise DataError(f"batch event {int(rows[bad])}: listed item {int(listed[bad])} (position "
                    f"{int(cols[bad])}) is not among the event's available items.")
  pool[rows, listed] = False
  unchosen = pool.sum(axis=1)
  rng = np.random.default_rng(key)
  if proposal is None:
    # Smallest keys first; items outside U_e get key 2 and come last.
    keys = rng.random((b, n), dtype=np.float32)
    keys[~pool] = 2.0
  else:
    proposal = np.asarray(proposal, np.float64)
    if proposal.shape != (n,) or not (np.isfinite(proposal).all() and (proposal > 0).all()):
      raise ShapeError(f"proposal must be {n} finite positive weights, one per item; got shape "
                       f"{proposal.shape}.")
    # Exponential races: the M smallest E_i / q_i (E_i ~ Exp(1)) are the M largest
    # log q_i + Gumbel_i, i.e. PL sampling without replacement from q.
    keys = rng.standard_exponential((b, n), dtype=np.float32) * (1.0 / proposal).astype(np.float32)
    keys[~pool] = np.inf
  m = min(count, n)
  if m < n:
    order = np.argpartition(keys, m, axis=1)   # [:m] the m smallest keys, [m] the next
    negatives = order[:, :m]
  else:
    negatives = np.broadcast_to(np.arange(n), (b, n)).copy()
  real = np.take_along_axis(pool, negatives, 1)
  if proposal is None:
    drawn = np.minimum(unchosen, count)
    log_weight = np.broadcast_to(np.log(np.maximum(unchosen, 1) / np.maximum(drawn, 1))[:, None],
                                 real.shape)
  else:
    # t = e^{-κ}: the (M+1)-th smallest race time over U_e (inf when U_e has at most M
    # items); p_i(κ) = 1 - exp(-q_i t).
    t = (np.take_along_axis(keys, order[:, m:m + 1], 1).astype(np.float64) if m < n
         else np.full((b, 1), np.inf))
    with np.errstate(invalid="ignore"):
      log_p = np.log(-np.expm1(-proposal[negatives] * t))
    log_weight = np.where(real, -log_p, 0.0) + 0.0           # + 0.0: no -0.0
  log_weight = np.where(real, log_weight, 0.0).astype(np.float32)
  if m < count:  # more negatives asked for than the catalog holds: padding
    pad = ((0, 0), (0, count - m))
    negatives, real, log_weight = np.pad(negatives, pad), np.pad(real, pad), np.pad(log_weight, pad)
  return negatives.astype(np.int32), real, log_weight


def sampled_batch(arrays: dict, rows: np.ndarray, count: int, key,
                  proposal: np.ndarray | None = None) -> dict:
  """The training batch of the events `rows`: their listed items and `count` negatives each.

  Slots 0..k-1 of event e hold its listed items (in list order; -1 pads of
  a short list are padding slots), slots k..k+M-1 its negatives
  (`sample_negatives`: uniform, or by the `proposal` weights q). Keys, in the
  layout of `gather_entrants`::

    entrants       int32[B, k+M]   catalog id of each slot
    available      bool[B, k+M]    real slots
    items          [B, k]          slot of each listed item (j, or -1 for a pad)
    offset         float32[B, k+M] added to the slot's score by the loss:
                                   0 for listed items, the negatives' log-weights
    item_features  float[B, k+M, f]  the features of the slot's item
    weights, event_features          as in `arrays`

  The PL likelihood of `scores + offset` over this block is the sampled
  loss of the module docstring; only the gathered features are read.
  """
  rows = np.asarray(rows)
  items = np.asarray(arrays["items"][rows])
  negatives, real, log_weight = sample_negatives(arrays["available"][rows], items, count, key,
                                                 proposal)
  listed = items >= 0
  entrants = np.concatenate([np.maximum(items, 0), negatives], axis=1).astype(np.int32)
  k = items.shape[1]
  offset = np.concatenate([np.zeros(listed.shape, np.float32), log_weight], axis=1)
  slots = np.where(listed, np.arange(k)[None, :], -1).astype(items.dtype)
  return {"entrants": entrants, "available": np.concatenate([listed, real], axis=1),
          "items": slots, "offset": offset,
          "item_features": arrays["item_features"][rows[:, None], entrants],
          "weights": arrays["weights"][rows], "event_features": arrays["event_features"][rows]}
