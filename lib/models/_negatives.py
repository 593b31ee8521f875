"""Sampled negatives: training batches that score an event's chosen items and M others.

An event over n available items costs n scores per training step; with a
catalog of 10,000 items and k = 5 picks nearly all of them are items the
event did not choose. Both PL likelihoods read those unchosen items U only
through one sum, R = Σ_{u∈U} e^{s_u}:

  ranking   log P = Σ_j [ s_{π_j} − log(R + Σ_{m≥j} e^{s_{π_m}}) ]
  set       P(S) = Σ_{B⊆S} (−1)^{|B|} R / (R + w_B)

so the sampled loss keeps every chosen item exactly and replaces R by an
estimate from M negatives N ⊂ U drawn uniformly without replacement:

  R̂ = (|U| / M) Σ_{u∈N} e^{s_u}       (Horvitz-Thompson: E[R̂] = R)

written as the scores of the negatives plus the offset log(|U| / M), and the
PL likelihood of that block of k + M items (`luce.losses.event_nll`, the
same code as the exact loss). What is approximated: R̂ is unbiased for R, but
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

from luce.errors import DataError


def sample_negatives(available: np.ndarray, items: np.ndarray, count: int,
                     key) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """M = `count` negatives of each event, drawn uniformly from its unchosen available items.

  Args:
    available: bool[B, n] the events' available items.
    items: int[B, k] each event's listed items (-1 padded); each listed item
      must be available.
    count: M >= 1, the negatives per event.
    key: int or sequence of ints seeding the draw (`numpy.random.default_rng`).

  Returns:
    (negatives int32[B, M] catalog ids, real bool[B, M], log_weight float32[B]):
    row e holds min(M, |U_e|) distinct ids of U_e = available and not listed
    (`real`), the rest padding (ids of items outside U_e, `real` False);
    `log_weight` is log(|U_e| / min(M, |U_e|)) (0 when every unchosen item is
    drawn, and for an event with none).
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
  # The M smallest of iid uniform keys over U_e are a uniform M-subset of U_e;
  # items outside U_e get key 2 and come last.
  keys = np.random.default_rng(key).random((b, n), dtype=np.float32)
  keys[~pool] = 2.0
  m = min(count, n)
  negatives = (np.argpartition(keys, m - 1, axis=1)[:, :m] if m < n
               else np.broadcast_to(np.arange(n), (b, n)).copy())
  real = np.take_along_axis(pool, negatives, 1)
  if m < count:  # more negatives asked for than the catalog holds: padding
    negatives = np.pad(negatives, ((0, 0), (0, count - m)))
    real = np.pad(real, ((0, 0), (0, count - m)))
  drawn = np.minimum(unchosen, count)
  log_weight = np.log(np.maximum(unchosen, 1) / np.maximum(drawn, 1)).astype(np.float32)
  return negatives.astype(np.int32), real, log_weight


def sampled_batch(arrays: dict, rows: np.ndarray, count: int, key) -> dict:
  """The training batch of the events `rows`: their listed items and `count` negatives each.

  Slots 0..k-1 of event e hold its listed items (in list order; -1 pads of
  a short list are padding slots), slots k..k+M-1 its negatives
  (`sample_negatives`). Keys, in the layout of `gather_entrants`::

    entrants       int32[B, k+M]   catalog id of each slot
    available      bool[B, k+M]    real slots
    items          [B, k]          slot of each listed item (j, or -1 for a pad)
    offset         float32[B, k+M] added to the slot's score by the loss:
                                   0 for listed items, log(|U_e| / drawn) for negatives
    item_features  float[B, k+M, f]  the features of the slot's item
    weights, event_features          as in `arrays`

  The PL likelihood of `scores + offset` over this block is the sampled
  loss of the module docstring; only the gathered features are read.
  """
  rows = np.asarray(rows)
  items = np.asarray(arrays["items"][rows])
  negatives, real, log_weight = sample_negatives(arrays["available"][rows], items, count, key)
  listed = items >= 0
  entrants = np.concatenate([np.maximum(items, 0), negatives], axis=1).astype(np.int32)
  k = items.shape[1]
  offset = np.concatenate([np.zeros(listed.shape, np.float32),
                           np.broadcast_to(log_weight[:, None], real.shape)], axis=1)
  slots = np.where(listed, np.arange(k)[None, :], -1).astype(items.dtype)
  return {"entrants": entrants, "available": np.concatenate([listed, real], axis=1),
          "items": slots, "offset": offset,
          "item_features": arrays["item_features"][rows[:, None], entrants],
          "weights": arrays["weights"][rows], "event_features": arrays["event_features"][rows]}
