"""Discrete Subset Diffusion as a model family of the one train loop.

`DiffusionModel` reuses the neural PL scorer (`luce.models.PLScorer`, any of
its encoders) for the base logits and feeds the item features to the
`SubsetDenoiser` as its context. Its `__call__` returns the per-event MD4 loss
(r and A drawn from the "dropout" rng stream the train step provides), so the
family's loss is the model's output. `DiffusionFamily` adds what evaluation
needs: the exact NLL by the subset recursion (k <= EXACT_MAX_K; the MD4 bound
with `nll_kind = "bound"` beyond), the first-pick logits as item scores, and
sets drawn by the exact sampler (steps = k).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from luce.diffusion._denoiser import SubsetDenoiser
from luce.diffusion._likelihood import EXACT_MAX_K, diffusion_loss, exact_set_log_prob, set_elbo
from luce.diffusion._sampler import _sample
from luce.errors import ConfigError, InfeasibleError
from luce.kernels import topk_sample
from luce.models import BATCH_KEYS, PLScorer, chunked, history_columns, inclusion_counts, take_events

# Monte Carlo draws of the MD4 loss behind the bound when k > EXACT_MAX_K.
BOUND_SAMPLES = 64


class DiffusionModel(nn.Module):
  """PL encoder for the base logits + `SubsetDenoiser` with the item features as context.

  Attributes: as `PLScorer` (n_items, encoder, hidden, depth, heads,
  embed_dim, dropout, history_columns), plus k (set size), mixer and
  denoiser_depth of the denoiser.

  Batch: `items` int[B, k], `available` bool[B, n], `item_features`
  float[B, n, f], `event_features` float[B, g].
  """
  n_items: int
  k: int
  encoder: str = "mlp"
  hidden: int = 64
  depth: int = 2
  heads: int = 4
  embed_dim: int = 16
  dropout: float = 0.0
  history_columns: tuple = ((), ())
  mixer: str = "deepsets"
  denoiser_depth: int = 1

  def setup(self):
    self.scorer = PLScorer(n_items=self.n_items, encoder=self.encoder, hidden=self.hidden,
                           depth=self.depth, heads=self.heads, embed_dim=self.embed_dim,
                           dropout=self.dropout, history_columns=self.history_columns)
    self.denoiser = SubsetDenoiser(n_items=self.n_items, k=self.k, hidden=self.hidden,
                                   depth=self.denoiser_depth, mixer=self.mixer, heads=self.heads)

  def encode(self, batch, deterministic: bool = True):
    """Per-event encoding (`SubsetDenoiser.encode` with the PL scores as base)."""
    base = self.scorer(batch, deterministic=deterministic)
    return self.denoiser.encode(batch["item_features"], base)

  def denoise(self, enc, visible, slots_left):
    return self.denoiser.denoise(enc, visible, slots_left)

  def __call__(self, batch, deterministic: bool = True):
    """float32[B]: the one-sample MD4 loss of each event (r, A from the "dropout" rng)."""
    enc = self.encode(batch, deterministic)
    key = jax.random.key(0) if deterministic else self.make_rng("dropout")
    items = jnp.asarray(batch["items"], jnp.int32)
    return diffusion_loss(lambda v, r: self.denoiser.denoise(enc, v, r), items, self.n_items, key,
                          available=batch["available"])


class DiffusionFamily:
  """The family object of `model.family = "diffusion"` (see `luce.models.PLFamily`)."""
  name = "diffusion"
  batch_keys = BATCH_KEYS
  scores_meaning = "first-pick logits of the denoiser (nothing visible, r = k)"

  def __init__(self, model_config, *, n_items: int, kind: str, k: int, item_names: Sequence[str]):
    if kind != "set":
      raise ConfigError(f"model.family='diffusion' trains on unordered sets; these events are "
                        f"{kind}s (the ordered variant, luce.diffusion.ordered_diffusion_loss, has "
                        f"no sampler yet). Use model.family='pl' for rankings.")
    m = model_config
    self.kind, self.k, self.n_items = kind, k, n_items
    self.nll_kind = "exact" if k <= EXACT_MAX_K else "bound"
    self.model = DiffusionModel(n_items=n_items, k=k, encoder=m.encoder, hidden=m.hidden,
                                depth=m.depth, heads=m.heads, embed_dim=m.embed_dim,
                                dropout=m.dropout, history_columns=history_columns(item_names),
                                mixer=m.mixer, denoiser_depth=m.denoiser_depth)
    self._nll = jax.jit(self._nll_chunk)
    self._first = jax.jit(self._first_chunk)
    self._draws = {}

  def take(self, arrays: dict, rows) -> dict:
    """The model's batch of the events `rows`: the catalog layout (the denoiser's
    visible-set state is a vector over the catalog)."""
    return take_events(arrays, rows)

  def loss(self, out, batch):
    """The model's output is already its per-event MD4 loss."""
    return out

  def _logits_fn(self, params, chunk):
    enc = self.model.apply({"params": params}, chunk, method="encode")
    return lambda v, r: self.model.apply({"params": params}, enc, v, r, method="denoise")

  def _nll_chunk(self, params, chunk, key):
    fn = self._logits_fn(params, chunk)
    items = jnp.asarray(chunk["items"], jnp.int32)
    if self.nll_kind == "exact":
      return -exact_set_log_prob(fn, items, self.n_items, available=chunk["available"])
    return set_elbo(fn, items, self.n_items, key=key, samples=BOUND_SAMPLES,
                    available=chunk["available"])

  def _first_chunk(self, params, chunk):
    fn = self._logits_fn(params, chunk)
    visible = jnp.zeros(chunk["available"].shape, bool)
    return fn(visible, jnp.full(visible.shape[:1], self.k, jnp.int32))

  def nll(self, params, arrays, batch_size: int = 256) -> np.ndarray:
    """float64[m]: exact -log p(S) by the subset recursion (k <= EXACT_MAX_K), else
    the MD4 upper bound from BOUND_SAMPLES draws (fixed keys: deterministic)."""
    base = jax.random.key(0)
    if self.nll_kind == "exact":  # 2^k conditionals per event: keep a chunk near 8k of them
      batch_size = max(1, min(batch_size, (1 << 13) >> self.k))
    return chunked(lambda chunk, i: self._nll(params, chunk, jax.random.fold_in(base, i)),
                   arrays, batch_size, dtype=np.float64)

  def scores(self, params, arrays, batch_size: int = 256) -> np.ndarray:
    """float32[m, n]: the denoiser's logits with nothing visible (r = k)."""
    return chunked(lambda chunk, i: self._first(params, chunk), arrays, batch_size,
                   dtype=np.float32)

  def sample(self, params, arrays, key, samples: int, k: int, batch_size: int | None = None) -> np.ndarray:
    """int32[m, samples, k]: valid k-sets of each event's available items from the
    exact sampler, context encoded once per event; chunk c draws from fold_in(key, c)."""
    if k != self.k:
      raise ConfigError(f"k={k}: a diffusion model samples sets of exactly k = {self.k} items; "
                        f"pass k={self.k}.")
    short = np.asarray(arrays["available"]).sum(axis=1) < k
    if short.any():
      raise InfeasibleError(f"event {int(np.argmax(short))} has fewer than k = {k} available items.")
    if samples == 0:
      return np.zeros((len(arrays["items"]), 0, k), np.int32)
    # Each chunk holds events x samples sampler rows: keep it near 20k rows.
    batch_size = batch_size or max(1, 20000 // samples)
    if samples not in self._draws:
      self._draws[samples] = jax.jit(lambda p, chunk, key: self._draw_chunk(p, chunk, key, samples))

    def one(chunk, i):
      sets = self._draws[samples](params, chunk, jax.random.fold_in(key, i))
      return np.asarray(sets).reshape(-1, samples, k)
    return chunked(one, arrays, batch_size, dtype=np.int32)

  def _draw_chunk(self, params, chunk, key, samples):
    enc = self.model.apply({"params": params}, chunk, method="encode")
    enc = jax.tree.map(lambda x: jnp.repeat(x, samples, axis=0) if x.shape[0] > 1 else x, enc)
    available = jnp.repeat(chunk["available"], samples, axis=0)
    fn = lambda v, r: self.model.apply({"params": params}, enc, v, r, method="denoise")
    # The loop of `sample_sets` without its feasibility check, which needs concrete
    # availability: `sample` checked every event before jit.
    return _sample(key, fn, self.n_items, self.k, available.shape[0], self.k, available, None, None,
                   topk_sample.resolve_impl("auto"))

  def inclusion(self, params, arrays, key, draws: int, k: int, batch_size: int | None = None) -> np.ndarray:
    """float32[m, n]: the fraction of `draws` sampled sets of each event holding each item."""
    return inclusion_counts(self.sample(params, arrays, key, draws, k, batch_size), self.n_items)
