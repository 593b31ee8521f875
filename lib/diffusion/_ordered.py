"""Ordered Discrete Subset Diffusion: rankings, each rank its own slot.

A ranking x = (x_0, ..., x_{L-1}) of L items (best first) has L slots, one
per rank. The model is given as an ordered logits function, the denoiser's
`denoise_ordered` with its context bound:

  logits_fn_ordered(visible_rank int[Q, B, n], slots_left int[Q, B]) -> float[Q, B, k, n]

where visible_rank[q, b, i] is the rank of item i when it is visible (-1
when not) and entry [q, b, p] of the output holds the logits of the item at
rank p. With V the visible ranks (items x_V), the item at a hidden rank p is
drawn from

  pi_p(i | V) = softmax over the allowed items of those logits at rank p,

the allowed items being the available ones not visible at another rank.

Generative process (`sample_rankings`, exact): all L slots masked; while r
slots are masked, pick one of them, p, uniformly (probability 1/r) and draw
its item from pi_p(. | V). So a ranking's probability is the mixture over
the L! slot orders sigma,

  p(x) = sum_sigma prod_j (1 / (L - j)) pi_{sigma_j}(x_{sigma_j} | sigma_<j)
       = (1 / L!) sum_sigma prod_j pi_{sigma_j}(x_{sigma_j} | sigma_<j),

computed by the subset recursion over sets V of ranks
(`luce.pl_set.subset_recursion`, the same one the set likelihood runs):
f(empty) = 1, f(V) = sum_{p in V} f(V \\ p) pi_p(x_p | V \\ p), p(x) = f(all) / L!
(every order has the same prior 1/L!, so the 1/r factors come out as one
constant). `exact_ranking_log_prob` gets all 2^L - 1 conditionals of an
event from batched calls of the logits function (L <= EXACT_MAX_K).

The bound (MD4, by Jensen over sigma): -log p(x) <= L(x) =
E_sigma[-sum_j log pi_{sigma_j}(...)] = sum_{r=1..L} (1/r) E_{|V| = L - r}
sum_{p not in V} -log pi_p(x_p | V), with no log L! term (the order is
observed). `ranking_elbo` sums it exactly over every V (L <= 12) or averages
`ordered_diffusion_loss`, its one-sample unbiased estimate, with a key.

Variable length: a ranking event is int[B, k] item ids best first with -1
padding after a row's L <= k items (a top-L list). Only its first L ranks are
slots: the recursion, the bound and the loss run over them, with r in 1..L
and slots_left = L - |V| given to the denoiser.

A logits function that ignores both V and the rank gives every ordering of
the set the same probability: p(x) = P_PL(set of x) / L!, the Plackett-Luce
*set* probability spread evenly over the L! orders (not the PL ranking
probability): the slot order, not the logits, decides which rank is drawn
first.
"""

from __future__ import annotations

import functools
import math
import operator

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

from luce.diffusion._likelihood import EXACT_MAX_K, _layer_bits, ordered_diffusion_loss
from luce.diffusion._masks import masked_log_softmax
from luce.errors import InfeasibleError, InputError, ShapeError
from luce.pl_set import subset_recursion
from luce.sampling import gumbel_noise


def ranking_lengths(ranking) -> jax.Array:
  """int32[B]: the list length L of each row of an int[B, k] ranking (its items
  before the -1 padding)."""
  return jnp.sum(jnp.asarray(ranking) >= 0, axis=-1).astype(jnp.int32)


def _check_ranking(ranking, n):
  """int32[B, k]: item ids in [0, n) best first, -1 only after a row's last item,
  no item twice in a row, at least one item per row (value checks on concrete
  arrays only)."""
  ranking = jnp.asarray(ranking)
  if ranking.ndim != 2 or not jnp.issubdtype(ranking.dtype, jnp.integer) or ranking.shape[1] < 1:
    raise ShapeError(f"ranking must be int[B, k] with k >= 1, got "
                     f"{ranking.dtype}{list(ranking.shape)}.")
  if not isinstance(ranking, jax.core.Tracer):
    x = np.asarray(ranking)
    bad = (x < -1) | (x >= n)
    if bad.any():
      b, j = np.argwhere(bad)[0]
      raise InputError(f"ranking[{b}, {j}] = {x[b, j]} is not an item id in [0, {n}) nor the "
                       f"-1 padding.")
    pad = x < 0
    after = pad[:, :-1] & ~pad[:, 1:]
    if after.any():
      b, j = np.argwhere(after)[0]
      raise InputError(f"ranking[{b}] = {x[b].tolist()} has an item after the -1 padding at "
                       f"position {j}; pad only the end of a shorter list.")
    if pad[:, 0].any():
      b = int(np.argmax(pad[:, 0]))
      raise InputError(f"ranking[{b}] lists no item; every event ranks at least one.")
    srt = np.sort(np.where(pad, -1 - np.arange(x.shape[1]), x), axis=1)
    if (srt[:, 1:] == srt[:, :-1]).any():
      b = int(np.argwhere(srt[:, 1:] == srt[:, :-1])[0, 0])
      raise InputError(f"ranking[{b}] = {x[b].tolist()} repeats an item; a ranking lists "
                       f"distinct items.")
  return ranking.astype(jnp.int32)


def _check_available(available, n):
  if available is None:
    return None
  available = jnp.asarray(available)
  if available.dtype != jnp.bool_ or available.ndim not in (1, 2) or available.shape[-1] != n:
    raise ShapeError(f"available must be bool[n] or bool[B, n] with n = {n}, got "
                     f"{available.dtype}{list(available.shape)}.")
  return available


def _proper_subsets(k):
  """bool[2^k - 1, k]: every proper subset of the k slots, popcount layers 0..k-1
  in turn, each in increasing mask order (the layout of `subset_recursion`)."""
  return np.concatenate(_layer_bits(k)[:k])


def ordered_conditionals(logits_fn_ordered, ranking, n, *, available=None, subset_chunk=None):
  """log pi_p(x_p | V) for every proper subset V of each event's ranks.

  Args:
    logits_fn_ordered: see the module docstring.
    ranking: int32[B, k] (-1 padded, checked by the caller).
    n: items.
    available: optional bool[B, n] or bool[n].
    subset_chunk: None: one call of the logits function on all 2^k - 1
      subsets; an int c: `lax.map` over blocks of c subsets (memory bound:
      the denoiser's item head holds [c, B, k, n, H]).

  Returns:
    list over popcount c = 0..k-1 of float[C(k, c), k, B]: entry [m, p, b] is
    log pi_p(ranking[b, p] | the ranks of bit mask m visible), 0 where p is a
    padding rank of row b (never read) and -inf where p is in m.
  """
  b, k = ranking.shape
  length = ranking_lengths(ranking)
  bits = _proper_subsets(k)
  q = len(bits)
  onehot = jax.nn.one_hot(ranking, n, dtype=jnp.float32)            # [B, k, n], pads all 0
  item = jnp.broadcast_to(jnp.maximum(ranking, 0)[None, :, :, None], (1, b, k, 1))

  def block(bits_block):                                             # [C, k] bool
    rank_plus = bits_block.astype(jnp.float32) * (jnp.arange(k) + 1.0)
    visible_rank = jnp.einsum("qj,bjn->qbn", rank_plus, onehot,
                              precision=lax.Precision.HIGHEST)
    visible_rank = jnp.round(visible_rank).astype(jnp.int32) - 1     # [C, B, n]
    count = jnp.sum(bits_block[:, None, :] & (ranking >= 0)[None], axis=-1)   # [C, B]
    slots_left = jnp.maximum(length[None] - count, 0).astype(jnp.int32)
    allowed = visible_rank < 0
    if available is not None:
      allowed &= available
    logits = logits_fn_ordered(visible_rank, slots_left)               # [C, B, k, n]
    log_pi = masked_log_softmax(logits, allowed[:, :, None, :])
    at = jnp.take_along_axis(log_pi, jnp.broadcast_to(item, log_pi.shape[:3] + (1,)), axis=-1)
    return jnp.swapaxes(at[..., 0], 1, 2)                            # [C, k, B]

  if subset_chunk is None or subset_chunk >= q:
    at = block(jnp.asarray(bits))
  else:
    blocks = -(-q // subset_chunk)
    padded = np.concatenate([bits, np.zeros((blocks * subset_chunk - q, k), bool)])
    at = lax.map(block, jnp.asarray(padded.reshape(blocks, subset_chunk, k)))
    at = at.reshape((blocks * subset_chunk,) + at.shape[2:])[:q]
  at = jnp.where((jnp.arange(k)[:, None] < length[None, :])[None], at, 0.0)
  sizes = np.cumsum([0] + [math.comb(k, c) for c in range(k)])
  return [at[sizes[c]:sizes[c + 1]] for c in range(k)]


def _log_prob_from_conditionals(cond, length, k):
  """log p(x) = log f(first L ranks) - log L! (`subset_recursion`)."""
  def log_cond(c, pred, item):
    flat = cond[c].reshape((-1, cond[c].shape[-1]))                  # [C(k,c) k, B]
    return jnp.take(flat, pred * k + item, axis=0)
  log_f = subset_recursion(log_cond, length, k)
  return log_f - jax.lax.lgamma(length.astype(log_f.dtype) + 1)


def _elbo_from_conditionals(cond, length, k):
  """L(x) = sum_c sum_{V in the first L ranks, |V| = c} sum_{p < L, p not in V}
  -log pi_p(x_p | V) / ((L - c) C(L, c)): the exact finite sum, float[B]."""
  dtype = cond[0].dtype
  ell = length.astype(dtype)
  total = jnp.zeros(length.shape, dtype)
  for c in range(k):
    layer = _layer_bits(k)[c]                                         # [C, k]
    top = np.where(layer, np.arange(k), -1).max(axis=1)               # V's last rank (-1: empty)
    inside = jnp.asarray(top)[:, None] < length[None, :]              # [C, B]: V within the L ranks
    hidden = jnp.asarray(~layer)[:, :, None] & (jnp.arange(k)[None, :, None] < length[None, None, :])
    terms = jnp.where(hidden & inside[:, None, :], -cond[c], 0.0)       # [C, k, B]
    log_comb = (jax.lax.lgamma(ell + 1) - math.lgamma(c + 1) - jax.lax.lgamma(ell - c + 1))
    weight = jnp.where(length > c, jnp.exp(-log_comb) / jnp.maximum(ell - c, 1), 0.0)
    total = total + weight * jnp.sum(terms, axis=(0, 1))
  return total


@functools.partial(jax.jit, static_argnums=(0, 2, 4))
def _nll_and_bound(logits_fn_ordered, ranking, n, available, subset_chunk):
  """(-log p(x), L(x)) float[B] each from one set of conditionals (jitted with the
  logits function static: keep one function object to compile once per shape)."""
  k = ranking.shape[1]
  length = ranking_lengths(ranking)
  cond = ordered_conditionals(logits_fn_ordered, ranking, n, available=available,
                              subset_chunk=subset_chunk)
  return -_log_prob_from_conditionals(cond, length, k), _elbo_from_conditionals(cond, length, k)


def _check_exact(ranking, what):
  k = ranking.shape[1]
  if k > EXACT_MAX_K:
    raise ShapeError(f"{what} makes 2^k calls per event; k = {k} > {EXACT_MAX_K}: use "
                     f"ranking_elbo with a key (a Monte Carlo bound) instead.")


def exact_ranking_log_prob(logits_fn_ordered, ranking, n, *, available=None, subset_chunk=None):
  """Exact log p(x) of each event's ranking under ordered subset diffusion (k <= 12).

  The mixture over slot orders of the module docstring, by the subset
  recursion over the L ranks of each row from its 2^L - 1 conditionals.

  Args:
    logits_fn_ordered: (visible_rank int[Q, B, n], slots_left int[Q, B]) ->
      float[Q, B, k, n] (module docstring).
    ranking: int[B, k] item ids best first, -1 padding after a row's L items.
    n: items.
    available: optional bool[B, n] or bool[n]: False = never at any rank.
    subset_chunk: optional int, subsets per call of the logits function
      (default: all 2^k - 1 in one call; smaller bounds the memory).

  Returns:
    float[B] log p(x) (float32; float64 for float64 logits), exact, not a
    bound; -inf for a ranking listing an unavailable item.

  Raises:
    ShapeError: k > EXACT_MAX_K or a malformed ranking / available.
    InputError: an id outside [0, n), a repeated item, an item after the padding.
  """
  ranking = _check_ranking(ranking, n)
  _check_exact(ranking, "exact_ranking_log_prob")
  return -_nll_and_bound(logits_fn_ordered, ranking, n, _check_available(available, n),
                         subset_chunk)[0]


def exact_ranking_nll_and_elbo(logits_fn_ordered, ranking, n, *, available=None,
                               subset_chunk=None):
  """(-log p(x) exact, the bound L(x)): float[B] each from one batch of
  conditionals (k <= 12); arguments as `exact_ranking_log_prob`."""
  ranking = _check_ranking(ranking, n)
  _check_exact(ranking, "exact_ranking_nll_and_elbo")
  return _nll_and_bound(logits_fn_ordered, ranking, n, _check_available(available, n),
                        subset_chunk)


def ranking_elbo(logits_fn_ordered, ranking, n, *, key=None, samples: int = 64, available=None,
                 subset_chunk=None, sample_chunk=None):
  """The MD4 bound on -log p(x) in nats: L(x) >= -log p(x) (module docstring).

  Exact (every subset V of the ranks, no noise) when key is None and
  k <= 12; with a key, the Monte Carlo mean of `samples` draws of
  `ordered_diffusion_loss` (any k).

  Args:
    logits_fn_ordered, ranking, n, available: as `exact_ranking_log_prob`.
    key: None (exact) or a `jax.random.key` (Monte Carlo).
    samples: Monte Carlo draws (>= 1).
    subset_chunk: as `exact_ranking_log_prob` (exact path).
    sample_chunk: optional int: draws evaluated together (`lax.map` over
      blocks of them; default all at once).

  Returns:
    float[B] upper bounds on each event's NLL.
  """
  ranking = _check_ranking(ranking, n)
  available = _check_available(available, n)
  if key is None:
    _check_exact(ranking, "the exact ranking ELBO")
    return _nll_and_bound(logits_fn_ordered, ranking, n, available, subset_chunk)[1]
  samples = operator.index(samples)
  if samples < 1:
    raise InputError(f"samples = {samples}: the Monte Carlo bound needs at least 1 draw.")
  return _mc_bound(logits_fn_ordered, ranking, n, key, available, samples, sample_chunk)


@functools.partial(jax.jit, static_argnums=(0, 2, 5, 6))
def _mc_bound(logits_fn_ordered, ranking, n, key, available, samples, sample_chunk):
  one = lambda sub: ordered_diffusion_loss(logits_fn_ordered, ranking, n, sub, available=available)
  keys = jax.random.split(key, samples)
  losses = lax.map(one, keys, batch_size=min(sample_chunk or samples, samples))   # [samples, B]
  return jnp.mean(losses, axis=0)


def sample_rankings(key, logits_fn_ordered, n, k, batch, *, available=None, lengths=None):
  """Draw `batch` rankings from ordered subset diffusion, exactly.

  All slots of a row start masked; at each step one of its r masked ranks p
  is picked uniformly and its item drawn from pi_p(. | visible) by
  Gumbel-argmax over the allowed items (available, not yet placed). The
  rankings have probability `exact_ranking_log_prob`.

  Args:
    key: a `jax.random.key`; same key, same rankings.
    logits_fn_ordered: (visible_rank int[1, B, n], slots_left int[1, B]) ->
      float[1, B, k_model, n] (module docstring), traced inside one
      `lax.fori_loop`; k <= k_model of its ranks are used.
    n, k: static ints, 1 <= k <= n: the slots of a row (its length L) unless
      `lengths` says otherwise.
    batch: static int B, rankings to draw.
    available: optional bool[n] or bool[B, n]: False = never drawn.
    lengths: optional int or int[B], each row's L in 1..k (default k): a row
      draws a top-L ranking and is padded with -1 after it.

  Returns:
    int32[B, k] item ids, best first, distinct and available, -1 past L.

  Raises:
    InfeasibleError: (before sampling) a row has fewer available items than its L.
    InputError, ShapeError: bad n, k, batch, lengths or available.
  """
  for name, value in (("n", n), ("k", k), ("batch", batch)):
    try:
      operator.index(value)
    except TypeError:
      raise ShapeError(f"{name} must be a static Python int, got {type(value).__name__}.") from None
  if not 1 <= k <= n:
    raise InputError(f"k = {k} is out of range 1 <= k <= n = {n}.")
  lengths = jnp.broadcast_to(jnp.asarray(k if lengths is None else lengths), (batch,))
  if not jnp.issubdtype(lengths.dtype, jnp.integer):
    raise ShapeError(f"lengths must be an int or int[B], got {lengths.dtype}.")
  lengths = lengths.astype(jnp.int32)
  available = _check_available(available, n)
  available = (jnp.ones((batch, n), bool) if available is None
               else jnp.broadcast_to(available, (batch, n)))
  if not any(isinstance(a, jax.core.Tracer) for a in (lengths, available)):
    ell, count = np.asarray(lengths), np.asarray(available).sum(axis=1)
    if ((ell < 1) | (ell > k)).any():
      b = int(np.argmax((ell < 1) | (ell > k)))
      raise InputError(f"lengths[{b}] = {int(ell[b])} is out of range 1 <= L <= k = {k}.")
    if (count < ell).any():
      b = int(np.argmax(count < ell))
      raise InfeasibleError(f"row {b} has {int(count[b])} available items, fewer than its "
                            f"L = {int(ell[b])} ranks.")
  return _sample(key, logits_fn_ordered, n, k, batch, available, lengths, False)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 7))
def _sample(key, logits_fn, n, k, batch, available, lengths, by_rank):
  """The loop. by_rank: logits_fn(visible_rank [B, n], slots_left [B], rank [B]) ->
  float[B, n], the one rank asked for (the family's cheap path); else the
  module's ordered logits function, whose output is indexed at that rank."""
  rows = jnp.arange(batch)

  def body(j, state):
    key, visible_rank, picks = state
    key, key_slot, key_item = jax.random.split(key, 3)
    active = j < lengths                                              # [B]
    slots_left = jnp.maximum(lengths - j, 0)
    masked = (picks < 0) & (jnp.arange(k) < lengths[:, None])          # [B, k]
    slot = jnp.argmax(jnp.where(masked, jax.random.uniform(key_slot, (batch, k)), -1.0), axis=-1)
    if by_rank:
      logits = logits_fn(visible_rank, slots_left, slot)
    else:
      full = logits_fn(visible_rank[None], slots_left[None])[0]         # [B, k_model, n]
      logits = jnp.take_along_axis(full, slot[:, None, None], axis=1)[:, 0]
    allowed = (visible_rank < 0) & available
    z = jnp.where(allowed, logits.astype(jnp.float32) + gumbel_noise(key_item, (batch, n)), -jnp.inf)
    item = jnp.argmax(z, axis=-1).astype(jnp.int32)
    picks = picks.at[rows, slot].set(jnp.where(active, item, picks[rows, slot]))
    visible_rank = visible_rank.at[rows, jnp.where(active, item, n)].set(
        slot.astype(jnp.int32), mode="drop")
    return key, visible_rank, picks

  init = (key, jnp.full((batch, n), -1, jnp.int32), jnp.full((batch, k), -1, jnp.int32))
  return lax.fori_loop(0, k, body, init)[2]
