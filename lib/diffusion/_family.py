"""Discrete Subset Diffusion as a model family of the one train loop.

`DiffusionModel` reuses the neural PL scorer (`luce.models.PLScorer`, any of
its encoders) for the base logits and feeds the item features to the
`SubsetDenoiser` as its context. Its `__call__` returns the per-event MD4 loss
(r and A drawn from the "dropout" rng stream the train step provides), so the
family's loss is the model's output. `DiffusionFamily` adds what evaluation
needs: the exact NLL by the subset recursion (k <= EXACT_MAX_K; the MD4 bound
with `nll_kind = "bound"` beyond), the first-pick logits as item scores, and
sets drawn by the exact sampler (steps = k).

Rankings (`kind = "ranking"`) use the ordered variant (`luce.diffusion._ordered`):
each rank is a slot, the loss is `ordered_diffusion_loss`, the NLL the exact
slot-order mixture by the recursion over ranks (`exact_ranking_log_prob`,
k <= EXACT_MAX_K) or its MD4 bound (`ranking_elbo`), the scores the rank-0
logits with nothing visible, and samples come from `sample_rankings`' exact
loop (one uniformly chosen masked rank per step). An event's slots are its
listed ranks (a -1 padded top-L list has L); an event to sample or score has
L = min(k, its available items).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from luce.diffusion._denoiser import SubsetDenoiser
from luce.diffusion._likelihood import (EXACT_MAX_K, diffusion_loss, exact_set_log_prob,
                                        ordered_diffusion_loss, set_elbo)
from luce.diffusion._ordered import _sample as _sample_ranks
from luce.diffusion._ordered import exact_ranking_log_prob, ranking_elbo
from luce.diffusion._sampler import _sample
from luce.errors import ConfigError, DataError, InfeasibleError
from luce.kernels import topk_sample
from luce.models import BATCH_KEYS, PLScorer, chunked, history_columns, inclusion_counts, take_events

# Monte Carlo draws of the MD4 loss behind the bound when k > EXACT_MAX_K.
BOUND_SAMPLES = 64

# Rankings: floats of the ordered denoiser's item head ([..., k, n, hidden] per
# call) that one evaluation call may hold; the chunks of events, subsets and
# draws are sized to it.
ORDERED_BUDGET = 1 << 24


class DiffusionModel(nn.Module):
  """PL encoder for the base logits + `SubsetDenoiser` with the item features as context.

  Attributes: as `PLScorer` (n_items, encoder, hidden, depth, heads,
  embed_dim, dropout, history_columns), plus k (set size, or the longest
  ranking), mixer and denoiser_depth of the denoiser, and ordered (rankings:
  the ordered variant, each rank a slot).

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
  state_size: int = 16
  mixer: str = "deepsets"
  denoiser_depth: int = 1
  ordered: bool = False

  def setup(self):
    self.scorer = PLScorer(n_items=self.n_items, encoder=self.encoder, hidden=self.hidden,
                           depth=self.depth, heads=self.heads, embed_dim=self.embed_dim,
                           dropout=self.dropout, history_columns=self.history_columns,
                           state_size=self.state_size)
    self.denoiser = SubsetDenoiser(n_items=self.n_items, k=self.k, hidden=self.hidden,
                                   depth=self.denoiser_depth, mixer=self.mixer, heads=self.heads)

  def encode(self, batch, deterministic: bool = True):
    """Per-event encoding (`SubsetDenoiser.encode` with the PL scores as base)."""
    base = self.scorer(batch, deterministic=deterministic)
    return self.denoiser.encode(batch["item_features"], base)

  def denoise(self, enc, visible, slots_left):
    return self.denoiser.denoise(enc, visible, slots_left)

  def denoise_ordered(self, enc, visible_rank, slots_left, ranks=None):
    return self.denoiser.denoise_ordered(enc, visible_rank, slots_left, ranks)

  def __call__(self, batch, deterministic: bool = True):
    """float32[B]: the one-sample MD4 loss of each event (r, A from the "dropout" rng);
    the ordered loss over each ranking's listed ranks when `ordered`."""
    enc = self.encode(batch, deterministic)
    key = jax.random.key(0) if deterministic else self.make_rng("dropout")
    items = jnp.asarray(batch["items"], jnp.int32)
    if self.ordered:
      return ordered_diffusion_loss(lambda v, r: self.denoiser.denoise_ordered(enc, v, r), items,
                                    self.n_items, key, available=batch["available"])
    return diffusion_loss(lambda v, r: self.denoiser.denoise(enc, v, r), items, self.n_items, key,
                          available=batch["available"])


class DiffusionFamily:
  """The family object of `model.family = "diffusion"` (see `luce.models.PLFamily`).

  Sets: the subset diffusion of `luce.diffusion`. Rankings: its ordered
  variant (module docstring), k the longest list; `mixer` must be "deepsets"
  (the ordered denoiser pools the visible ranks, it has no transformer mixer).
  """
  name = "diffusion"
  batch_keys = BATCH_KEYS
  scores_meaning = "first-pick logits of the denoiser (nothing visible, r = k)"

  def __init__(self, model_config, *, n_items: int, kind: str, k: int, item_names: Sequence[str]):
    m = model_config
    if kind not in ("set", "ranking"):
      raise ConfigError(f"model.family='diffusion' models sets and rankings; these events are "
                        f"of kind {kind!r}.")
    if kind == "ranking" and m.mixer != "deepsets":
      raise ConfigError(f"model.mixer={m.mixer!r}: the ordered (ranking) diffusion denoiser has "
                        f"the deepsets mixer only; set model.mixer='deepsets'.")
    self.kind, self.k, self.n_items = kind, k, n_items
    self.ordered = kind == "ranking"
    self.nll_kind = "exact" if k <= EXACT_MAX_K else "bound"
    if self.ordered:
      self.scores_meaning = ("rank-0 logits of the ordered denoiser with nothing visible "
                             "(r = the event's L = min(k, available) ranks): softmax over the "
                             "available items is pi_0(i | nothing visible), the law of rank 0 "
                             "when it is the first slot drawn, not P(i first)")
    self._hidden = m.hidden
    self.model = DiffusionModel(n_items=n_items, k=k, encoder=m.encoder, hidden=m.hidden,
                                depth=m.depth, heads=m.heads, embed_dim=m.embed_dim,
                                dropout=m.dropout, history_columns=history_columns(item_names),
                                state_size=m.get("state_size", 16),
                                mixer=m.mixer, denoiser_depth=m.denoiser_depth,
                                ordered=self.ordered)
    self._nll = jax.jit(self._nll_chunk, static_argnums=(3, 4))
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

  def _ordered_fn(self, params, enc):
    """The ordered logits function of `luce.diffusion._ordered` for an encoding."""
    return lambda v, r: self.model.apply({"params": params}, enc, v, r, method="denoise_ordered")

  def _lengths(self, available):
    """int32[B]: the ranks an event to score or sample has, min(k, its available items)."""
    return jnp.minimum(jnp.sum(available, axis=-1), self.k).astype(jnp.int32)

  def _width(self, available) -> int:
    """The entrant block of rankings: the most available items of an event of
    `available`, rounded up to a multiple of 8 (fewer compiles), at most n."""
    most = int(np.asarray(available).sum(axis=1).max(initial=1))
    return min(self.n_items, -(-max(most, 1) // 8) * 8)

  def _entrant_encoding(self, params, chunk, width):
    """(enc, real bool[B, width], order int32[B, width]): the encoding of each
    event's available items only, slot j holding catalog id order[b, j] (its
    available items first, in catalog order; slots past its count are padding,
    real False).

    The ordered denoiser is equivariant over items and reads the visible set
    only through a sum over visible items, all of them available, so its
    logits on these slots are exactly its catalog logits at those ids: every
    ranking quantity is computed over `width` (about 24 for an F1 race) items
    instead of the catalog's n (848).
    """
    enc = self.model.apply({"params": params}, chunk, method="encode")
    available = jnp.asarray(chunk["available"])
    b = available.shape[0]
    order = jnp.argsort(~available, axis=1, stable=True)[:, :width].astype(jnp.int32)
    real = jnp.arange(width)[None, :] < jnp.sum(available, axis=1)[:, None]

    def gather(x):
      x = jnp.broadcast_to(x, (b,) + x.shape[1:])
      return jnp.take_along_axis(x, order if x.ndim == 2 else order[..., None], axis=1)
    return {name: gather(x) for name, x in enc.items()}, real, order

  def _nll_chunk(self, params, chunk, key, inner=None, width=None):
    items = jnp.asarray(chunk["items"], jnp.int32)
    if self.ordered:
      enc, real, order = self._entrant_encoding(params, chunk, width)
      b = items.shape[0]
      slot_of = jnp.full((b, self.n_items), -1, jnp.int32).at[jnp.arange(b)[:, None], order].set(
          jnp.where(real, jnp.arange(width, dtype=jnp.int32), -1))
      slots = jnp.where(items >= 0, jnp.take_along_axis(slot_of, jnp.maximum(items, 0), 1), -1)
      fn = self._ordered_fn(params, enc)
      if self.nll_kind == "exact":
        return -exact_ranking_log_prob(fn, slots, width, available=real, subset_chunk=inner)
      return ranking_elbo(fn, slots, width, key=key, samples=BOUND_SAMPLES, available=real,
                          sample_chunk=inner)
    fn = self._logits_fn(params, chunk)
    if self.nll_kind == "exact":
      return -exact_set_log_prob(fn, items, self.n_items, available=chunk["available"])
    return set_elbo(fn, items, self.n_items, key=key, samples=BOUND_SAMPLES,
                    available=chunk["available"])

  def _first_chunk(self, params, chunk):
    if self.ordered:
      enc = self.model.apply({"params": params}, chunk, method="encode")
      available = chunk["available"]
      empty = jnp.full(available.shape, -1, jnp.int32)
      return self.model.apply({"params": params}, enc, empty, self._lengths(available),
                              jnp.zeros(available.shape[:1], jnp.int32), method="denoise_ordered")
    fn = self._logits_fn(params, chunk)
    visible = jnp.zeros(chunk["available"].shape, bool)
    return fn(visible, jnp.full(visible.shape[:1], self.k, jnp.int32))

  def _ordered_nll_chunks(self, batch_size: int, width: int) -> tuple[int, int | None]:
    """(events per chunk, subsets or draws per denoiser call) within ORDERED_BUDGET."""
    unit = self.k * width * self._hidden                   # one query's item head
    per_event = (1 << self.k) if self.nll_kind == "exact" else BOUND_SAMPLES
    events = max(1, min(batch_size, ORDERED_BUDGET // (per_event * unit)))
    if events * per_event * unit <= ORDERED_BUDGET:
      return events, None
    return 1, max(1, ORDERED_BUDGET // unit)

  def nll(self, params, arrays, batch_size: int = 256) -> np.ndarray:
    """float64[m]: exact -log p(S) by the subset recursion (k <= EXACT_MAX_K), else
    the MD4 upper bound from BOUND_SAMPLES draws (fixed keys: deterministic).

    Rankings: the exact -log p(x) over each event's listed ranks (the slot-order
    mixture, `exact_ranking_log_prob`), else its MD4 bound (`ranking_elbo`),
    over the event's available items (`_entrant_encoding`); a listed item that
    is not available is a DataError naming the event."""
    base = jax.random.key(0)
    inner, width = None, None
    if self.ordered:
      items, available = np.asarray(arrays["items"]), np.asarray(arrays["available"], bool)
      listed = items >= 0
      off = listed & ~np.take_along_axis(available, np.maximum(items, 0), 1)
      if off.any():
        r, c = np.argwhere(off)[0]
        raise DataError(f"event row {int(r)}: listed item {int(items[r, c])} (rank {int(c)}) is not "
                        f"among the event's available items.")
      width = self._width(available)
      batch_size, inner = self._ordered_nll_chunks(batch_size, width)
    elif self.nll_kind == "exact":  # 2^k conditionals per event: keep a chunk near 8k of them
      batch_size = max(1, min(batch_size, (1 << 13) >> self.k))
    return chunked(lambda chunk, i: self._nll(params, chunk, jax.random.fold_in(base, i), inner,
                                              width),
                   arrays, batch_size, dtype=np.float64)

  def scores(self, params, arrays, batch_size: int = 256) -> np.ndarray:
    """float32[m, n]: the denoiser's logits with nothing visible (r = k); rankings:
    its rank-0 logits with nothing visible (r = the event's min(k, available) ranks)."""
    return chunked(lambda chunk, i: self._first(params, chunk), arrays, batch_size,
                   dtype=np.float32)

  def sample(self, params, arrays, key, samples: int, k: int, batch_size: int | None = None) -> np.ndarray:
    """int32[m, samples, k]: valid k-sets of each event's available items from the
    exact sampler, context encoded once per event; chunk c draws from fold_in(key, c).

    Rankings: the first k ranks (k <= the model's k) of rankings of each event's
    min(model k, available) ranks from the exact ordered sampler, best first:
    draws from the model's law of the event's top k."""
    if self.ordered:
      return self._sample_rankings(params, arrays, key, samples, k, batch_size)
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

  def _sample_rankings(self, params, arrays, key, samples, k, batch_size):
    if not 1 <= k <= self.k:
      raise ConfigError(f"k={k}: a ranking diffusion model draws the top k of rankings of at most "
                        f"{self.k} ranks; pass 1 <= k <= {self.k}.")
    short = np.asarray(arrays["available"]).sum(axis=1) < k
    if short.any():
      raise InfeasibleError(f"event {int(np.argmax(short))} has fewer than k = {k} available items.")
    m = len(arrays["items"])
    if samples == 0:
      return np.zeros((m, 0, k), np.int32)
    width = self._width(arrays["available"])
    # Sampler rows (events x draws) per call: each step's item head holds [rows, width, hidden].
    rows = max(1, ORDERED_BUDGET // (width * self._hidden))
    events = batch_size or max(1, rows // samples)
    block = min(samples, max(rows // events, 1))     # draws per call of an event chunk
    if (block, width) not in self._draws:
      self._draws[block, width] = jax.jit(
          lambda p, chunk, key: self._draw_ranking_chunk(p, chunk, key, block, width))

    def one(chunk, i):
      parts, done = [], 0
      while done < samples:  # blocks of draws, the last one cut
        drawn = self._draws[block, width](params, chunk,
                                          jax.random.fold_in(jax.random.fold_in(key, i), done))
        parts.append(np.asarray(drawn).reshape(-1, block, self.k)[:, :samples - done, :k])
        done += block
      return np.concatenate(parts, axis=1)
    return chunked(one, arrays, events, dtype=np.int32)

  def _draw_ranking_chunk(self, params, chunk, key, samples, width):
    """int32[B samples, k] catalog ids: the ordered sampler over each event's entrants."""
    enc, real, order = self._entrant_encoding(params, chunk, width)
    enc = jax.tree.map(lambda x: jnp.repeat(x, samples, axis=0), enc)
    available = jnp.repeat(real, samples, axis=0)
    fn = lambda v, r, p: self.model.apply({"params": params}, enc, v, r, p, method="denoise_ordered")
    # `sample_rankings`' loop without its feasibility check (`sample` checked every
    # event before jit), asking the denoiser for the drawn rank only.
    slots = _sample_ranks(key, fn, width, self.k, available.shape[0], available,
                          self._lengths(available), True)
    ids = jnp.take_along_axis(jnp.repeat(order, samples, axis=0), jnp.maximum(slots, 0), axis=1)
    return jnp.where(slots >= 0, ids, -1)

  def inclusion(self, params, arrays, key, draws: int, k: int, batch_size: int | None = None) -> np.ndarray:
    """float32[m, n]: the fraction of `draws` sampled sets of each event holding each item."""
    return inclusion_counts(self.sample(params, arrays, key, draws, k, batch_size), self.n_items)
