"""Likelihoods and the training loss of subset diffusion.

A model is given as a logits function, the denoiser with its context bound:

  logits_fn(visible bool[Q, B, n], slots_left int[Q, B]) -> float[Q, B, n]

for B events and Q partial sets per event; the mask M (`allowed_items`)
turns logits into pi(i | A) = softmax(logits + log M)_i. A Plackett-Luce
model is the logits function that ignores A: `pl_logits_fn(scores)`.

- `exact_set_log_prob`: log p(S) = log f(S) by the subset recursion
  f(empty) = 1, f(A) = sum_{i in A} f(A \\ i) pi(i | A \\ i), the same function
  (`luce.pl_set.subset_recursion`) that `luce.pl_set_log_prob` runs, from the
  2^k - 1 conditionals pi(. | B), B a proper subset of S, got in one batched
  call. k <= 12.
- `set_elbo`: the MD4 bound -log p(S) <= L(S) - log k!, with
  L(S) = sum_{r=1..k} (1/r) E_{A subset S, |A| = k - r} sum_{i in S \\ A} -log pi(i | A),
  exact over all subsets for k <= 12 (from the same conditionals), Monte
  Carlo for any k.
- `diffusion_loss`: one-sample unbiased estimate of L(S) for training,
  k E_{r ~ U{1..k}} E_A (1/r) sum_{i in S \\ A} -log pi(i | A); and
  `ordered_diffusion_loss`, the variant where each rank is its own slot.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import jax
import jax.numpy as jnp

from luce.diffusion._masks import allowed_items, masked_log_softmax
from luce.errors import InputError, ShapeError
from luce.pl_set import subset_recursion

EXACT_MAX_K = 12


def pl_logits_fn(scores):
  """The Plackett-Luce model as a logits function: float[B, n] scores that
  ignore the partial set, so pi(i | A) = w_i / sum_{j not in A} w_j."""
  scores = jnp.asarray(scores, jnp.float32)
  return lambda visible, slots_left: jnp.broadcast_to(scores, visible.shape)


@functools.lru_cache(maxsize=None)
def _layer_bits(k):
  """bool[C(k, c), k] per popcount layer c = 0..k, masks in increasing order
  (the order of `luce.pl_set._subset_tables`)."""
  masks = np.arange(1 << k)
  bits = ((masks[:, None] >> np.arange(k)) & 1).astype(bool)
  count = bits.sum(axis=1)
  return [bits[count == c] for c in range(k + 1)]


def _check_subset(subset, n):
  subset = jnp.asarray(subset)
  if subset.ndim != 2 or not jnp.issubdtype(subset.dtype, jnp.integer):
    raise ShapeError(f"subset must be int[B, k], got {subset.dtype}{list(subset.shape)}.")
  if not isinstance(subset, jax.core.Tracer):
    s = np.asarray(subset)
    if ((s < 0) | (s >= n)).any():
      b, j = np.argwhere((s < 0) | (s >= n))[0]
      raise InputError(f"subset[{b}, {j}] = {s[b, j]} is not an item id in [0, {n}).")
    srt = np.sort(s, axis=1)
    if (srt[:, 1:] == srt[:, :-1]).any():
      b = int(np.argwhere(srt[:, 1:] == srt[:, :-1])[0, 0])
      raise InputError(f"subset[{b}] = {s[b].tolist()} repeats an item; a set has k distinct items.")
  return subset.astype(jnp.int32)


def subset_conditionals(logits_fn, subset, n, *, available=None, groups=None, quotas=None):
  """log pi(S_j | B) for every proper subset B of each event's set S.

  Args:
    logits_fn: see the module docstring.
    subset: int32[B, k] the sets (any order, no padding).
    n: items.
    available, groups, quotas: the constraints of M (`allowed_items`).

  Returns:
    list over popcount c = 0..k-1 of float32[C(k, c), k, B]: entry [m, j, b]
    is log pi(subset[b, j] | {subset[b, i] : bit i of mask m}); one call of
    logits_fn on all 2^k - 1 partial sets at once.
  """
  b, k = subset.shape
  layers = _layer_bits(k)[:k]
  bits = jnp.asarray(np.concatenate(layers))                       # [Q, k]
  onehot = jax.nn.one_hot(subset, n, dtype=jnp.float32)            # [B, k, n]
  visible = jnp.einsum("qj,bjn->qbn", bits.astype(jnp.float32), onehot) > 0
  slots_left = jnp.broadcast_to((k - bits.sum(axis=1))[:, None], visible.shape[:2])
  allowed = allowed_items(visible, slots_left, available=available, groups=groups, quotas=quotas)
  log_pi = masked_log_softmax(logits_fn(visible, slots_left), allowed)   # [Q, B, n]
  at_set = jnp.take_along_axis(log_pi, jnp.broadcast_to(subset[None], (len(bits), b, k)), axis=-1)
  at_set = jnp.swapaxes(at_set, 1, 2)                              # [Q, k, B]
  sizes = np.cumsum([0] + [len(layer) for layer in layers])
  return [at_set[sizes[c]:sizes[c + 1]] for c in range(k)]


def exact_set_log_prob(logits_fn, subset, n, *, available=None, groups=None, quotas=None):
  """Exact log p(S) of each event's set by the subset recursion (k <= 12).

  Args:
    logits_fn: the model (module docstring); `pl_logits_fn(scores)` for PL,
      which reproduces `luce.pl_set_log_prob(scores, subset, method="exact")`.
    subset: int[B, k] the observed sets, distinct item ids in any order.
    n: number of items.
    available: optional bool[B, n] or bool[n]; groups, quotas: optional
      int[n] and int[G, 2]: the constraints of M.

  Returns:
    float32[B] log p(S) (exact, not a bound); -inf for a set M forbids.
  """
  subset = _check_subset(subset, n)
  k = subset.shape[1]
  if k > EXACT_MAX_K:
    raise ShapeError(f"the exact set likelihood makes 2^k calls per event; k = {k} > "
                     f"{EXACT_MAX_K}: use set_elbo (a bound) instead.")
  return -_nll_and_bound(logits_fn, subset, n, available, groups, quotas)[0]


@functools.partial(jax.jit, static_argnums=(0, 2))
def _nll_and_bound(logits_fn, subset, n, available, groups, quotas):
  """(-log p(S), L(S) - log k!) float32[B] each, from one batch of conditionals.

  Jitted with the logits function static: the same function object (keep one,
  e.g. a jitted closure) compiles once per shape.
  """
  k = subset.shape[1]
  cond = subset_conditionals(logits_fn, subset, n, available=available, groups=groups,
                             quotas=quotas)
  return -_recursion(cond, k), _elbo_from_conditionals(cond, k)


def _recursion(cond, k):
  def log_cond(c, pred, item):
    flat = cond[c].reshape((-1, cond[c].shape[-1]))                # [C(k,c) k, B]
    return jnp.take(flat, pred * k + item, axis=0)
  size = jnp.full(cond[0].shape[-1:], k, jnp.int32)
  return subset_recursion(log_cond, size, k)


def _elbo_from_conditionals(cond, k):
  """L(S) - log k! from all conditionals (the exact finite sum over subsets)."""
  total = 0.0
  for c in range(k):
    bits = jnp.asarray(_layer_bits(k)[c])                           # [C, k]
    r = k - c
    hidden = jnp.where(~bits[:, :, None], -cond[c], 0.0)            # [C, k, B]
    total = total + jnp.sum(hidden, axis=(0, 1)) / (r * math.comb(k, r))
  return total - math.lgamma(k + 1)


def set_elbo(logits_fn, subset, n, *, key=None, samples: int = 64, available=None,
             groups=None, quotas=None):
  """The MD4 bound on -log p(S) in nats: L(S) - log k! >= -log p(S).

  Exact (every subset A of S, no noise) when key is None and k <= 12; with a
  key, the Monte Carlo mean of `samples` draws of `diffusion_loss` (any k).

  Returns:
    float32[B] upper bounds on each event's NLL.
  """
  subset = _check_subset(subset, n)
  k = subset.shape[1]
  if key is None:
    if k > EXACT_MAX_K:
      raise ShapeError(f"the exact ELBO sums over 2^k subsets; k = {k} > {EXACT_MAX_K}: pass "
                       f"a key for the Monte Carlo estimate.")
    return _nll_and_bound(logits_fn, subset, n, available, groups, quotas)[1]
  one = lambda sub: diffusion_loss(logits_fn, subset, n, sub, available=available, groups=groups,
                                   quotas=quotas)
  losses = jax.jit(jax.vmap(one))(jax.random.split(key, samples))   # [samples, B]
  return jnp.mean(losses, axis=0) - math.lgamma(k + 1)


def exact_nll_and_elbo(logits_fn, subset, n, *, available=None, groups=None, quotas=None):
  """(-log p(S) exact, the bound L(S) - log k!): float32[B] each, from one
  batch of 2^k - 1 conditionals (k <= 12)."""
  subset = _check_subset(subset, n)
  if subset.shape[1] > EXACT_MAX_K:
    raise ShapeError(f"exact_nll_and_elbo makes 2^k calls per event; k = {subset.shape[1]} > "
                     f"{EXACT_MAX_K}.")
  return _nll_and_bound(logits_fn, subset, n, available, groups, quotas)


def _random_order(key, b, k):
  """int32[B, k]: a uniform random permutation of 0..k-1 per event (slot j's
  place in a random order; slots with place < k - r form a uniform (k - r)-subset)."""
  return jnp.argsort(jax.random.uniform(key, (b, k)), axis=-1).astype(jnp.int32)


def diffusion_loss(logits_fn, subset, n, key, *, available=None, groups=None, quotas=None):
  """One-sample MD4 loss per event, an unbiased estimate of L(S):

    k (1/r) sum_{i in S \\ A} -log pi(i | A),  r ~ U{1..k}, A a uniform
    (k - r)-subset of S.

  Its mean minus log k! bounds -log p(S) (`set_elbo`).

  Args:
    logits_fn: the model (module docstring); called with Q = 1.
    subset: int[B, k] the sets; n: items; key: a `jax.random.key`.
    available, groups, quotas: constraints of M (applied in training too).

  Returns:
    float32[B].
  """
  b, k = subset.shape
  subset = jnp.asarray(subset, jnp.int32)
  key_r, key_a = jax.random.split(key)
  r = jax.random.randint(key_r, (b,), 1, k + 1)
  shown = _random_order(key_a, b, k) < (k - r)[:, None]             # [B, k]: slot in A
  onehot = jax.nn.one_hot(subset, n, dtype=jnp.float32)
  visible = jnp.einsum("bj,bjn->bn", shown.astype(jnp.float32), onehot) > 0
  allowed = allowed_items(visible, r, available=available, groups=groups, quotas=quotas)
  log_pi = masked_log_softmax(logits_fn(visible[None], r[None])[0], allowed)
  at_set = jnp.take_along_axis(log_pi, subset, axis=-1)             # [B, k]
  nll = -jnp.sum(jnp.where(shown, 0.0, at_set), axis=-1)
  return k * nll / r


def _random_place(key, real):
  """int32[B, k]: each slot's place in a uniform random order of the row's real
  slots (places 0..L-1), the padding slots after them (places L..k-1); the
  slots with place < L - r then form a uniform (L - r)-subset of the real ones."""
  u = jnp.where(real, jax.random.uniform(key, real.shape), 2.0)
  return jnp.argsort(jnp.argsort(u, axis=-1), axis=-1).astype(jnp.int32)


def ordered_diffusion_loss(logits_fn_ordered, ranking, n, key, *, available=None):
  """One-sample MD4 loss for ordered lists, each rank its own slot:

    L (1/r) sum_{p hidden} -log pi_p(ranking_p | visible ranks),
    r ~ U{1..L}, the visible ranks a uniform (L - r)-subset of the L real ones,

  an unbiased estimate of the bound `luce.diffusion.ranking_elbo` >= -log
  p(ranking) (no k! term: the order is observed). L is the row's list
  length: a top-L list is padded with -1 after its L items and only its L
  ranks are slots (`luce.diffusion.exact_ranking_log_prob`). The item at
  rank p may be any available item not visible elsewhere.

  Args:
    logits_fn_ordered: (visible_rank int[Q, B, n], slots_left int[Q, B]) ->
      float[Q, B, k, n], e.g. `SubsetDenoiser.denoise_ordered` with its
      encoding bound; called with Q = 1 and slots_left = r.
    ranking: int[B, k] item ids best first, -1 padding the end of a shorter
      list. n: items. key: a `jax.random.key`.
    available: optional bool[B, n] or bool[n] (False: never at any rank).

  Returns:
    float32[B] (0 for a row that lists nothing).
  """
  b, k = ranking.shape
  ranking = jnp.asarray(ranking, jnp.int32)
  real = ranking >= 0
  length = jnp.sum(real, axis=-1).astype(jnp.int32)
  key_r, key_a = jax.random.split(key)
  r = jax.random.randint(key_r, (b,), 1, jnp.maximum(length, 1) + 1)
  shown = _random_place(key_a, real) < (length - r)[:, None]          # [B, k]: rank visible
  rows = jnp.arange(b)[:, None]
  visible_rank = jnp.full((b, n), -1, jnp.int32).at[
      rows, jnp.where(shown, ranking, n)].set(jnp.broadcast_to(jnp.arange(k), (b, k)), mode="drop")
  allowed = visible_rank < 0
  if available is not None:
    allowed &= available
  logits = logits_fn_ordered(visible_rank[None], r[None])[0]          # [B, k, n]
  log_pi = masked_log_softmax(logits, allowed[:, None, :])
  at_rank = jnp.take_along_axis(log_pi, jnp.maximum(ranking, 0)[:, :, None], axis=-1)[..., 0]
  nll = -jnp.sum(jnp.where(real & ~shown, at_rank, 0.0), axis=-1)
  return length * nll / r
