"""The subset diffusion sampler: k distinct items meeting every constraint.

Start from the empty set (all k slots masked). At step j of `steps` (linear
schedule alpha_t = 1 - t on the grid t_j = 1 - j/steps), each of the r masked
slots unmasks with probability (alpha_s - alpha_t) / (1 - alpha_t) =
1 / (steps - j), so u ~ Binomial(r, 1 / (steps - j)) items join the set, drawn
by Gumbel-top-u on logits + log M (`luce.kernels.topk_sample`): u draws from
pi(. | A) without replacement. The last step has probability 1, so every set
ends with k items.

steps = k is the exact sampler: one item per step, each drawn from
pi(i | A) = softmax(logits + log M)_i, so the set has probability f(S) of the
subset recursion (`exact_set_log_prob`). (The denoiser does not depend on t,
so the unmasking times matter only through which slots unmask together; with
one per step there are no simultaneous draws.) Fewer steps make fewer network
calls and draw u > 1 items from the same conditional, an approximation.

Validity: within a step the op applies the group rule with the r slots left
(see `_masks`); items in A and unavailable items are forbidden. Given the
feasibility check before sampling, no set can break a constraint.
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
from jax import lax

from luce.diffusion._masks import allowed_items, check_constraints
from luce.errors import InputError, ShapeError
from luce.kernels import topk_sample as topk_kernels
from luce.sampling import gumbel_noise

# A finite score below any real logit plus noise: the phantom items that make
# the op count the r slots left instead of all k (see `_step_picks`).
_PHANTOM = -1e30


def sample_sets(key, logits_fn, n, k, batch, *, steps=None, available=None, groups=None,
                quotas=None, impl="auto"):
  """Draw `batch` k-sets of n items from a subset diffusion model.

  Args:
    key: a `jax.random.key`; same key, same samples.
    logits_fn: (visible bool[1, B, n], slots_left int[1, B]) -> float[1, B, n],
      the denoiser with its context bound (see `luce.diffusion` and
      `pl_logits_fn`). Traced inside one `lax.fori_loop`.
    n, k: static ints, 1 <= k <= n.
    batch: static int B, sets to draw.
    steps: static int in [1, k], default k (exact).
    available: optional bool[n] or bool[B, n]: False = never pick (forbidden
      or unavailable).
    groups, quotas: optional int[n] group ids and int[G, 2] (min, max) picks
      per group.
    impl: the `topk_sample` implementation ("auto", "xla", "pallas",
      "reference").

  Returns:
    int32[B, k] item ids, ascending in each row: k distinct items meeting
    every constraint.

  Raises:
    InfeasibleError: (before sampling) no k-set meets the constraints.
    InputError, ShapeError: bad k, steps, or constraint shapes.

  Call it inside `jax.jit` (with n, k, batch, steps static and the
  constraints closed over or passed concretely) to compile the whole loop once.
  """
  for name, value in (("n", n), ("k", k), ("batch", batch)):
    try:
      operator.index(value)
    except TypeError:
      raise ShapeError(f"{name} must be a static Python int, got {type(value).__name__}.") from None
  steps = k if steps is None else operator.index(steps)
  if not 1 <= steps <= k:
    raise InputError(f"steps = {steps} is out of range 1 <= steps <= k = {k} (steps = k is exact).")
  available, groups, quotas = check_constraints(n, k, available=available, groups=groups,
                                                quotas=quotas)
  if available is not None:
    available = jnp.broadcast_to(available, (batch, n))
  impl = topk_kernels.resolve_impl(impl)
  return _sample(key, logits_fn, n, k, batch, steps, available, groups, quotas, impl)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 9))
def _sample(key, logits_fn, n, k, batch, steps, available, groups, quotas, impl):
  """The loop, jitted with the logits function static (one compile per function and shape)."""

  def body(j, state):
    key, visible, picks, count = state
    key, key_u, key_g = jax.random.split(key, 3)
    r = k - count
    if steps == k:
      u = jnp.ones_like(r)
    else:
      u = jax.random.binomial(key_u, r.astype(jnp.float32), 1.0 / (steps - j)).astype(jnp.int32)
      u = jnp.where(j == steps - 1, r, jnp.clip(u, 0, r))
    logits = logits_fn(visible[None], r[None])[0].astype(jnp.float32)
    z = logits + gumbel_noise(key_g, (batch, n))
    new = _step_picks(z, visible, r, u, available, groups, quotas, k, steps == k, impl)
    rows = jnp.arange(batch)[:, None]
    visible = visible.at[rows, jnp.where(new >= 0, new, n)].set(True, mode="drop")
    slot = jnp.where(new >= 0, count[:, None] + jnp.arange(new.shape[1]), k)
    picks = picks.at[rows, slot].set(new, mode="drop")
    return key, visible, picks, count + jnp.sum(new >= 0, axis=-1).astype(jnp.int32)

  init = (key, jnp.zeros((batch, n), bool), jnp.full((batch, k), -1, jnp.int32),
          jnp.zeros((batch,), jnp.int32))
  picks = lax.fori_loop(0, steps, body, init)[2]
  return jnp.sort(picks, axis=-1)


def _step_picks(z, visible, r, u, available, groups, quotas, k, one, impl):
  """int32[B, k or 1]: the items added this step (-1 past u).

  One item per step: argmax of z over M (the op's top-1 with ~M forbidden).
  Several: the op's constrained top-u. The op's group rule counts k_max - j
  slots left; to make it count the row's r, k phantom items (score _PHANTOM,
  below every real item) form an extra group with min = max = k - r: they
  raise the deficit by exactly k - r and are never among the first u <= r
  picks while a real item is eligible (feasibility guarantees one is).
  """
  batch, n = z.shape
  if one or quotas is None:
    allowed = allowed_items(visible, r, available=available, groups=groups, quotas=quotas)
    width = 1 if one else k
    return topk_kernels.topk_sample(z, width, u=None if one else u, forbidden=~allowed, impl=impl)
  member = jax.nn.one_hot(groups, quotas.shape[0], dtype=jnp.float32)
  count = jnp.round(visible.astype(jnp.float32) @ member).astype(jnp.int32)   # [B, G]
  left = jnp.stack([jnp.maximum(quotas[:, 0] - count, 0), quotas[:, 1] - count], axis=-1)
  phantom = jnp.broadcast_to((k - r)[:, None, None], (batch, 1, 2))
  zp = jnp.concatenate([z, jnp.full((batch, k), _PHANTOM, z.dtype)], axis=-1)
  forbid = visible if available is None else visible | ~available
  forbid = jnp.concatenate([forbid, jnp.zeros((batch, k), bool)], axis=-1)
  groups_p = jnp.concatenate([groups, jnp.full((k,), quotas.shape[0], jnp.int32)])
  picks = topk_kernels.topk_sample(zp, k, u=u, forbidden=forbid, groups=groups_p,
                                   quotas=jnp.concatenate([left, phantom], axis=1), impl=impl)
  return jnp.where(picks < n, picks, -1)
