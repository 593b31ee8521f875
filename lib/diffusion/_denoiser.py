"""The denoiser of subset diffusion: logits over the n items given a partial set.

`SubsetDenoiser` is permutation-equivariant over items: permuting the items
(with their context and embeddings) permutes the logits, and the partial set
A enters only through a symmetric pooling (deep sets) or self-attention over
the item tokens (transformer), never through the order of its picks.

It is split in two so that the sampler and the exact likelihood (2^k calls
per event) run the expensive part once per event:

  enc = encode(context, base)           # per event: item tokens
  logits = denoise(enc, visible, r)     # per partial set: cheap

The noise level of masked diffusion is not an input: given the visible set A
the posterior over the hidden slots does not depend on t (MD4, Shi et al.
2024), and r = k - |A| is the number of hidden slots.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from luce.errors import ConfigError
from luce.models import AttentionBlock

MIXERS = ("deepsets", "transformer")


class SubsetDenoiser(nn.Module):
  """Logits float32[..., n] of the next item given the partial set.

  Attributes:
    n_items: n.
    k: slots per event (r runs 0..k).
    hidden: width H of the item tokens.
    depth: deep sets: per-item layers after the set interaction (>= 1);
      transformer: attention blocks.
    mixer: "deepsets" (pooled set summary -> query, per-item MLP; O(n H) per
      call after `encode`) or "transformer" (self-attention over the n item
      tokens; O(n^2 H + n H^2) per call).
    heads: attention heads (transformer).

  A fresh model's set interaction is zero: it starts as Plackett-Luce with the
  base logits (the PL family is the special case of logits that ignore A).
  """
  n_items: int
  k: int
  hidden: int = 64
  depth: int = 1
  mixer: str = "deepsets"
  heads: int = 4

  def setup(self):
    if self.mixer not in MIXERS:
      raise ConfigError(f"diffusion mixer={self.mixer!r}; valid: {', '.join(MIXERS)}.")
    h = self.hidden
    self.item_embedding = nn.Embed(self.n_items, h, embedding_init=nn.initializers.normal(0.1))
    self.context_proj = nn.Dense(h)
    self.base_out = nn.Dense(1, use_bias=False)
    self.value_proj = nn.Dense(h)
    self.key_proj = nn.Dense(h)
    self.slots_embedding = nn.Embed(self.k + 1, h)
    self.rank_embedding = nn.Embed(self.k, h)       # ordered variant: the rank of a visible item
    self.query_rank_embedding = nn.Embed(self.k, h)  # ordered variant: the rank asked for
    self.query_in = nn.Dense(h)
    self.query_out = nn.Dense(h)
    self.layers = [nn.Dense(h) for _ in range(max(self.depth - 1, 0))]
    self.visible_embedding = nn.Embed(2, h)
    self.blocks = [AttentionBlock(h, self.heads) for _ in range(self.depth)]
    self.out = nn.Dense(1, use_bias=False, kernel_init=nn.initializers.zeros)

  def encode(self, context=None, base=None):
    """Per-event item tokens.

    Args:
      context: optional float[B, n, c] per-item context encoding (history
        features, an encoder's output); None: context-free (one event shape).
      base: optional float[B, n] base logits added to the output (e.g. a
        neural PL scorer's scores); the denoiser learns its own as well.

    Returns:
      dict of float32 arrays: tokens [B, n, H], base [B, n], values [B, n, H],
      keys [B, n, H] (B may be 1 and broadcasts).
    """
    tokens = self.item_embedding(jnp.arange(self.n_items))[None]        # [1, n, H]
    if context is not None:
      tokens = tokens + self.context_proj(jnp.asarray(context, jnp.float32))
    logits = self.base_out(tokens)[..., 0]
    if base is not None:
      logits = logits + jnp.asarray(base, jnp.float32)
    return {"tokens": tokens, "base": logits, "values": self.value_proj(tokens),
            "keys": self.key_proj(tokens)}

  def denoise(self, enc, visible, slots_left):
    """float32[..., B, n] logits given the partial sets.

    Args:
      enc: `encode`'s output for B events.
      visible: bool[..., B, n] the partial set A of each query (any leading
        axes: e.g. the 2^k subsets of the exact likelihood).
      slots_left: int[..., B] r = k - |A|.
    """
    r = jnp.clip(jnp.asarray(slots_left, jnp.int32), 0, self.k)
    vis = visible.astype(jnp.float32)
    if self.mixer == "transformer":
      x = enc["tokens"] + self.visible_embedding(visible.astype(jnp.int32))
      x = x + self.slots_embedding(r)[..., None, :]
      lead = x.shape[:-2]
      x = x.reshape((-1,) + x.shape[-2:])
      for block in self.blocks:
        x = block(x)
      x = x.reshape(lead + x.shape[-2:])
      return enc["base"] + self.out(nn.gelu(x))[..., 0]
    pooled = (vis[..., None, :] @ enc["values"])[..., 0, :] / self.k     # [..., B, H]
    q = jnp.concatenate([pooled, self.slots_embedding(r)], axis=-1)
    q = self.query_out(nn.gelu(self.query_in(q)))
    return enc["base"] + self._item_head(enc["keys"], q[..., None, :])

  def denoise_ordered(self, enc, visible_rank, slots_left, ranks=None):
    """float32[..., B, k, n]: logits of the item at each rank (ordered variant).

    Each rank of a ranking is its own slot: `visible_rank` int[..., B, n] is
    the rank (0..k-1) of each visible item, -1 for the others; the output
    gives, for every rank p, the logits of the item at p.

    With `ranks` int[..., B] (one rank per query) only that rank's logits are
    computed: float32[..., B, n], equal to the full output at those ranks at
    1/k of the cost (what the sampler asks for, one slot per step).
    """
    r = jnp.clip(jnp.asarray(slots_left, jnp.int32), 0, self.k)
    vis = (visible_rank >= 0)
    rank_vec = self.rank_embedding(jnp.clip(visible_rank, 0, self.k - 1))  # [..., B, n, H]
    summed = jnp.where(vis[..., None], enc["values"] + rank_vec, 0.0)
    pooled = jnp.sum(summed, axis=-2) / self.k                            # [..., B, H]
    q = jnp.concatenate([pooled, self.slots_embedding(r)], axis=-1)
    if ranks is not None:
      q = self.query_in(q) + self.query_rank_embedding(jnp.asarray(ranks, jnp.int32))  # [..., B, H]
      q = self.query_out(nn.gelu(q))
      return enc["base"] + self._item_head(enc["keys"], q[..., None, :])
    q = self.query_in(q)[..., None, :] + self.query_rank_embedding(jnp.arange(self.k))  # [..., B, k, H]
    q = self.query_out(nn.gelu(q))
    return enc["base"][..., None, :] + self._item_head(enc["keys"][..., None, :, :], q[..., None, :])

  def _item_head(self, keys, q):
    """Per-item interaction: gelu(key_i + q) through `depth` - 1 more layers -> [..., n]."""
    x = nn.gelu(keys + q)
    for layer in self.layers:
      x = x + nn.gelu(layer(x))
    return self.out(x)[..., 0]

  def __call__(self, context, visible, slots_left, base=None):
    """encode + denoise in one call (for `init` and simple use)."""
    enc = self.encode(context, base)
    return self.denoise(enc, visible, slots_left)

  def init_all(self, context, visible, slots_left, base=None):
    """Touches every parameter of both variants (for `init`)."""
    enc = self.encode(context, base)
    rank = jnp.where(visible, 0, -1)
    return self.denoise(enc, visible, slots_left), self.denoise_ordered(enc, rank, slots_left)
