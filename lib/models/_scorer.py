"""Neural Plackett-Luce scorers: an encoder of each event's history, one score per item.

Every model maps a batch (the arrays of `luce.data.model_arrays`) to float32[B, n]
scores; the PL likelihood of the event runs over the available items only, so
scores of unavailable items are ignored (the loss passes `where=available`).

Encoders (`encoder=`):
- "mlp": the same MLP on every item's features, its static embedding and the
  event's calendar features (items do not see each other).
- "transformer": a Transformer over time. Tokens are the last L events, each a
  vector over all items (inclusion and rank score in that event, taken from the
  `in_last_l` / `rank_last_l` features); the pooled context feeds the per-item MLP.
- "itransformer": items as tokens (iTransformer): each token is an item's
  history features plus its embedding; self-attention across the available
  items of the event, so an item's score depends on its rivals.
- "s5": a diagonal state-space stack (`luce.models.S5Stack`) over each item's
  last L outcomes, oldest first; its final state, and the mean of the final
  states over the event's available items (the field), join the per-item MLP.
- "deepar": the same with DeepAR's recurrent encoder (`luce.models.GRUStack`,
  stacked GRUs over the previous events' outcomes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from luce.errors import ConfigError
from luce.models._sequence import GRUStack, S5Stack, history_sequence

ENCODERS = ("mlp", "transformer", "itransformer", "s5", "deepar")
SEQUENCE_ENCODERS = ("s5", "deepar")


def _mix32(x):
  """A 32-bit integer hash (Wellons' "lowbias32" finaliser): each output bit
  depends on every input bit; consecutive inputs give unrelated outputs."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


class DropoutRate(NamedTuple):
  """A dropout rate as arrays, so that it may be traced (one per member of a
  vmapped population, `luce.tune.train_population`): the 32-bit threshold of
  `dropout_keep` and the kept fraction 1 - rate, both computed on the host
  exactly as the float path computes them. `DropoutRate.of(rate)`."""
  threshold: jax.Array
  keep: jax.Array

  @classmethod
  def of(cls, rate: float) -> "DropoutRate":
    return cls(np.uint32(dropout_threshold(rate)), np.float32(1.0 - rate))


def dropout_threshold(rate: float) -> int:
  """The uint32 bound below which `dropout_keep` drops an element: 2^32 * rate."""
  return min(round(float(rate) * 2.0**32), 2**32 - 1)


def _dropout_bits(key, shape):
  size = int(np.prod(shape))
  if size >= 1 << 32:
    raise ConfigError(f"dropout over {size} elements: the counter is 32-bit (< 2^32 elements).")
  seed = jax.random.bits(key, (2,), jnp.uint32)
  x = _mix32(jax.lax.iota(jnp.uint32, size) ^ seed[0])
  return _mix32(x + seed[1]).reshape(shape)


def dropout_keep(key, shape, rate: float):
  """bool[shape]: True where an element is kept, each with probability 1 - rate.

  Counter-based: element i's bit is a hash of (i, two 32-bit words drawn from
  `key` by threefry), so it is a pure function of the key and the element's
  position (the same on any device layout) and costs a few integer ops per
  element, where threefry itself costs ~20x more on CPU (0.09 ms against 1.5 ms
  for a [2, 128, 20, 64] mask on 2 cores). Threshold 2^32 * rate: the drop
  probability is exact to 2^-32.
  """
  return _dropout_bits(key, shape) >= jnp.uint32(dropout_threshold(rate))


class Dropout(nn.Module):
  """Inverted dropout (as `flax.linen.Dropout`) on `dropout_keep`'s cheap mask.

  Draws from the "dropout" rng; `deterministic=True` or rate 0 is the identity.
  `rate` is a float, or a `DropoutRate` of arrays (a traced rate: the same
  mask and scale as its float).
  """
  rate: float | DropoutRate

  @nn.compact
  def __call__(self, x, *, deterministic: bool = True):
    if deterministic:
      return x
    if isinstance(self.rate, DropoutRate):
      keep = _dropout_bits(self.make_rng("dropout"), x.shape) >= self.rate.threshold
      return jnp.where(keep, x / self.rate.keep, jnp.zeros_like(x))
    if self.rate == 0.0:
      return x
    if self.rate >= 1.0:
      return jnp.zeros_like(x)
    keep = dropout_keep(self.make_rng("dropout"), x.shape, self.rate)
    return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x))


class MLP(nn.Module):
  """`depth` Dense+GELU layers of width `hidden`, then a Dense to `out` when given."""
  hidden: int
  depth: int
  out: int | None = None
  dropout: float = 0.0
  out_bias: bool = True

  @nn.compact
  def __call__(self, x, *, deterministic: bool = True):
    for _ in range(self.depth):
      x = nn.gelu(nn.Dense(self.hidden)(x))
      x = Dropout(self.dropout)(x, deterministic=deterministic)
    if self.out is not None:
      x = nn.Dense(self.out, use_bias=self.out_bias)(x)
    return x


class AttentionBlock(nn.Module):
  """Pre-norm Transformer block: self-attention then MLP, both residual."""
  hidden: int
  heads: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, mask=None, *, deterministic: bool = True):
    y = nn.LayerNorm()(x)
    y = nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=self.hidden,
                                        dropout_rate=self.dropout)(
                                            y, y, mask=mask, deterministic=deterministic)
    x = x + y
    y = nn.LayerNorm()(x)
    y = MLP(self.hidden * 2, 1, out=self.hidden)(y)
    return x + Dropout(self.dropout)(y, deterministic=deterministic)


class PLScorer(nn.Module):
  """History encoder + PL scorer head: float32[B, n] scores.

  Attributes:
    n_items: n, the catalog size.
    encoder: one of ENCODERS.
    hidden: width of every layer.
    depth: MLP layers (mlp), or Transformer blocks (transformer, itransformer),
      or sequence layers and MLP layers both (s5, deepar).
    heads: attention heads.
    embed_dim: size of each item's static embedding (0: none).
    dropout: dropout rate in training.
    state_size: complex states of each "s5" layer.
    history_columns: for "transformer", "s5" and "deepar", the indices of the item-feature
      columns that hold the last L events, as (inclusion columns, rank columns)
      with ranks possibly empty; see `history_columns`.

  Input batch: `item_features` float[B, n, f], `event_features` float[B, g],
  `available` bool[B, n]; or the gathered layout of `gather_entrants`, where
  axis 1 holds an event's available items and `entrants` int[B, n] their
  catalog ids (the same parameters score both).
  """
  n_items: int
  encoder: str = "mlp"
  hidden: int = 64
  depth: int = 2
  heads: int = 4
  embed_dim: int = 16
  dropout: float = 0.0
  history_columns: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())
  state_size: int = 16

  @nn.compact
  def __call__(self, batch, *, deterministic: bool = True):
    if self.encoder not in ENCODERS:
      raise ConfigError(f"model.encoder={self.encoder!r}; valid: {', '.join(ENCODERS)}.")
    item = jnp.asarray(batch["item_features"], jnp.float32)           # [B, n, f]
    event = jnp.asarray(batch["event_features"], jnp.float32)         # [B, g]
    available = batch["available"]                                    # [B, n]
    b, n, _ = item.shape
    # Gathered entrants (`luce.models.gather_entrants`): axis 1 holds each event's
    # available items, `entrants` their catalog ids; otherwise it is the catalog.
    entrants = batch.get("entrants")
    ids = jnp.arange(n)[None] if entrants is None else jnp.asarray(entrants, jnp.int32)
    parts = [item, jnp.broadcast_to(event[:, None, :], (b, n, event.shape[-1]))]
    if self.embed_dim:
      embedding = nn.Embed(self.n_items, self.embed_dim, name="item_embedding")(ids)
      parts.append(jnp.broadcast_to(embedding, (b, n, self.embed_dim)))

    if self.encoder == "transformer":
      if entrants is not None:
        raise ConfigError("model.encoder='transformer' reads every item's history: give it the "
                          "catalog layout, not gathered entrants.")
      parts.append(jnp.broadcast_to(self._time_context(item, event, deterministic)[:, None, :],
                                    (b, n, self.hidden)))
    if self.encoder in SEQUENCE_ENCODERS:
      parts.extend(self._sequence_state(item, available, deterministic))
    x = jnp.concatenate(parts, axis=-1)

    if self.encoder == "itransformer":
      x = nn.Dense(self.hidden)(x)
      # Items attend to the available items of their event only.
      mask = (available[:, None, None, :] & available[:, None, :, None])
      for _ in range(self.depth):
        x = AttentionBlock(self.hidden, self.heads, self.dropout)(x, mask, deterministic=deterministic)
      x = nn.LayerNorm()(x)
      scores = nn.Dense(1, use_bias=False)(nn.gelu(nn.Dense(self.hidden)(x)))[..., 0]
    else:
      scores = MLP(self.hidden, self.depth, out=1, dropout=self.dropout, out_bias=False)(
          x, deterministic=deterministic)[..., 0]
    # No shared output bias: PL is invariant to adding a constant to every
    # score, so its gradient is 0 and Adam would turn rounding noise into steps.
    if self.embed_dim:
      # A per-item bias: the static PL strength the features refine.
      scores = scores + self.param("item_bias", nn.initializers.zeros, (self.n_items,))[ids]
    return scores

  def _sequence_state(self, item, available, deterministic):
    """[float32[B, n, hidden] each item's final state, float32[B, n, hidden] the field's]."""
    seq = history_sequence(item, self.history_columns)                # [B, n, L, c]
    if self.encoder == "s5":
      stack = S5Stack(self.hidden, self.depth, self.state_size, self.dropout, name="sequence")
    else:
      stack = GRUStack(self.hidden, self.depth, self.dropout, name="sequence")
    state = stack(seq, deterministic=deterministic)[:, :, -1]         # [B, n, H]
    weight = available.astype(jnp.float32)[..., None]
    field = jnp.sum(state * weight, axis=1) / jnp.maximum(jnp.sum(weight, axis=1), 1.0)
    field = nn.Dense(self.hidden, name="field")(field)
    return [state, jnp.broadcast_to(field[:, None], state.shape)]

  def _time_context(self, item, event, deterministic):
    """float32[B, hidden]: a Transformer over the last L events' item vectors."""
    inclusion, ranks = self.history_columns
    if not inclusion:
      raise ConfigError("model.encoder='transformer' needs the in_last_l history features; set "
                        "data.features.last >= 1.")
    steps = [item[:, :, list(cols)] for cols in ((inclusion,) + ((ranks,) if ranks else ()))]
    tokens = jnp.concatenate(steps, axis=1)                           # [B, n*c, L]
    tokens = jnp.swapaxes(tokens, 1, 2)                               # [B, L, n*c]: token l = event t-1-l
    x = nn.Dense(self.hidden)(tokens)
    position = self.param("time_position", nn.initializers.normal(0.02), (len(inclusion), self.hidden))
    x = x + position[None]
    for _ in range(self.depth):
      x = AttentionBlock(self.hidden, self.heads, self.dropout)(x, deterministic=deterministic)
    return nn.LayerNorm()(x).mean(axis=1)


def history_columns(item_names: Sequence[str]) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(indices of `in_last_1..L`, indices of `rank_last_1..L`) in the feature names."""
  def find(prefix):
    cols = sorted(((int(name[len(prefix):]), i) for i, name in enumerate(item_names)
                   if name.startswith(prefix)))
    return tuple(i for _, i in cols)
  return find("in_last_"), find("rank_last_")
