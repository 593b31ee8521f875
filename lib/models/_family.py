"""A model family: everything the one train loop and the evaluation need of a model.

A family bundles a Flax module with how it is trained and scored:

  family.model                      the Flax module; `model.apply({"params": p}, batch)`
  family.loss(out, batch)           float32[B] per-event training loss of the model's output
  family.scores(params, arrays)     float32[m, n] item scores (what hits@k and NDCG rank by)
  family.nll(params, arrays)        float64[m] per-event NLL in nats, exact or a bound
  family.nll_kind                   "exact" or "bound": which `nll` is
  family.scores_meaning             what `scores` are, in words (luce-predict writes it)
  family.sample(params, arrays, key, samples, k)   int32[m, samples, k] sampled events
  family.inclusion(params, arrays, key, draws, k)  float32[m, n] P(item in the event)

`arrays` are the event arrays of `luce.data.model_arrays` (the `BATCH_KEYS`,
leading axis events); everything runs in fixed-size chunks of `batch_size`
events, the last chunk padded, so each shape compiles once. `luce.train`
maps `config.model.family` to a family object in one place
(`luce.train.build_family`); the neural Plackett-Luce family is here, the
Discrete Subset Diffusion family is `luce.diffusion.DiffusionFamily`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from luce.errors import ConfigError
from luce.losses import event_nll
from luce.models._scorer import PLScorer, history_columns
from luce.sampling import pl_sample

# Keys of a batch every family reads (a subset of `luce.data.model_arrays`).
BATCH_KEYS = ("items", "available", "weights", "item_features", "event_features")


def chunked(fn: Callable, arrays: dict, batch_size: int, *args, keys: Sequence[str] = BATCH_KEYS,
            dtype=None) -> np.ndarray:
  """np.concatenate of fn(chunk, i, *args)[:rows] over fixed-size chunks of events.

  Each chunk holds `batch_size` events (the last one padded by repeating the
  final event, then cut), so a jitted `fn` compiles once; `i` is the chunk index.
  """
  m = len(arrays["items"])
  size = min(batch_size, max(m, 1))
  out = []
  for i, start in enumerate(range(0, m, size)):
    idx = np.arange(start, start + size).clip(max=m - 1)
    chunk = {key: arrays[key][idx] for key in keys}
    out.append(np.asarray(fn(chunk, i, *args), dtype)[:min(size, m - start)])
  if out:
    return np.concatenate(out)
  raise ConfigError("no events to evaluate: the split or fold is empty.")


class PLFamily:
  """Neural Plackett-Luce: a `PLScorer` whose scores are the PL model's log-weights.

  The loss and the NLL are the exact PL likelihood of the event over its
  available items (the ordered top-k likelihood for rankings, the set
  likelihood for sets); samples are Gumbel-top-k draws from PL(scores).
  """
  name = "pl"
  nll_kind = "exact"
  batch_keys = BATCH_KEYS
  scores_meaning = "PL log-weights (P(i first) is the softmax over the available items)"

  def __init__(self, model_config, *, n_items: int, kind: str, k: int, item_names: Sequence[str]):
    m = model_config
    self.kind, self.k, self.n_items = kind, k, n_items
    self.model = PLScorer(n_items=n_items, encoder=m.encoder, hidden=m.hidden, depth=m.depth,
                          heads=m.heads, embed_dim=m.embed_dim, dropout=m.dropout,
                          history_columns=history_columns(item_names))
    self._apply = jax.jit(lambda p, b: self.model.apply({"params": p}, b))
    self._nll = jax.jit(lambda s, items, available: event_nll(s, items, available, kind=kind))
    self._draw = jax.jit(
        lambda key, s, forbidden, count, k: pl_sample(
            key, jnp.broadcast_to(s[:, None], (s.shape[0], count) + s.shape[1:]), k,
            forbidden=jnp.broadcast_to(forbidden[:, None], (s.shape[0], count) + s.shape[1:])),
        static_argnums=(3, 4))

  def loss(self, scores, batch):
    """float32[B]: the event's exact PL NLL in nats."""
    return event_nll(scores, batch["items"], batch["available"], kind=self.kind)

  def scores(self, params, arrays, batch_size: int = 1024) -> np.ndarray:
    return chunked(lambda chunk, i: self._apply(params, chunk), arrays, batch_size,
                   dtype=np.float32)

  def nll(self, params, arrays, batch_size: int = 1024) -> np.ndarray:
    def one(chunk, i):
      return self._nll(self._apply(params, chunk), chunk["items"], chunk["available"])
    return chunked(one, arrays, batch_size, dtype=np.float64)

  def sample(self, params, arrays, key, samples: int, k: int, batch_size: int = 1024) -> np.ndarray:
    """int32[m, samples, k]: Gumbel-top-k lists of each event's available items,
    drawn in chunks of events (about 2^22 scores a chunk); chunk c uses fold_in(key, c)."""
    m = len(arrays["items"])
    if samples == 0:
      return np.zeros((m, 0, k), np.int32)
    scores = self.scores(params, arrays, batch_size)
    per_chunk = max(1, min(m, (1 << 22) // max(samples * self.n_items, 1)))
    work = {"items": arrays["items"], "scores": scores, "forbidden": ~np.asarray(arrays["available"])}

    def one(chunk, i):
      return self._draw(jax.random.fold_in(key, i), chunk["scores"], chunk["forbidden"], samples, k)
    return chunked(one, work, per_chunk, keys=("items", "scores", "forbidden"), dtype=np.int32)

  def inclusion(self, params, arrays, key, draws: int, k: int, batch_size: int = 1024) -> np.ndarray:
    """float32[m, n]: the fraction of `draws` PL top-k lists of each event holding each item."""
    return inclusion_counts(self.sample(params, arrays, key, draws, k, batch_size), self.n_items)


def inclusion_counts(drawn: np.ndarray, n: int) -> np.ndarray:
  """float32[m, n]: the fraction of each event's drawn lists (int[m, S, k]) holding each item."""
  m, samples, k = drawn.shape
  counts = np.zeros((m, n), np.float32)
  if samples:
    rows = np.repeat(np.arange(m), samples * k)
    np.add.at(counts, (rows, drawn.reshape(-1)), 1.0)
    counts /= samples
  return counts
