"""Plackett-Luce log-probability of ordered top-k lists."""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp

from luce import _checks
from luce.errors import ShapeError
from luce.kernels.pl_nll import pl_nll


def pl_log_prob(scores, ranking, *, where=None, weights=None, impl="auto", interpret=False):
  r"""Log-probability of ordered top-k lists under Plackett-Luce.

  With scores s, picks π_1..π_k (best first) and U the available items never
  picked,

    log P = Σ_j w_j [ s_{π_j} − D_j ],
    D_j   = log( Σ_{u ∈ U} e^{s_u} + Σ_{l ≥ j} e^{s_{π_l}} ).

  k = n (or k = number of available items) is a full ranking. The cost is
  O(n + k) per list with no sort, and the result is exact for any finite
  scores (a running max keeps every partial sum in range). The gradient is in
  closed form (custom VJP): ∂log P/∂s_u = −e^{s_u} Σ_j w_j e^{−D_j} for u ∈ U
  and ∂log P/∂s_{π_m} = w_m − e^{s_{π_m}} Σ_{j ≤ m} w_j e^{−D_j}.

  Args:
    scores: float[..., n] one score per item (float32, bfloat16, float16 or
      float64). Computed in float32, or, for float64 scores (which needs
      `jax_enable_x64`), centred on each row's top score in float64 and
      computed in float64 (impl "auto", "xla", "reference"; the float32
      kernels "cpu" and "pallas" compute on the centred scores). −inf marks an
      unavailable item; +inf is an error.
    ranking: int[..., k] item ids, best first; −1 pads the end of a shorter
      list. Batch axes broadcast against those of `scores`.
    where: bool[..., n] or None. False marks an item that was not available in
      that event (choice sets smaller than n); such items are neither picked
      nor in U.
    weights: float[..., k] or None, ≥ 0: weight of each stage's term (e.g. a
      position discount). Pass weights[..., None] for one weight per list.
    impl: "auto" | "cpu" | "xla" | "pallas" | "reference" (see
      `luce.kernels.pl_nll`); "auto" is Pallas on GPU/TPU and, on CPU, the
      native kernel ("cpu", built on first use) or XLA when it cannot build.
    interpret: how impl="pallas" runs (see `luce.kernels`): False compiles
      for the GPU (Mosaic GPU) or TPU (Mosaic TPU); True runs the TPU kernel
      in Pallas' HLO interpreter, "tpu" in the TPU simulator, "gpu" the
      Mosaic GPU kernel in the GPU simulator; the last three run on CPU too.

  Returns:
    float32[...] (float64[...] for float64 scores) log-probabilities (0 for
    an all-padding list, −inf for a list that picks an unavailable item).

  Raises (on concrete arrays; under `jax.jit` the value checks cannot run, see
  `luce.checked`): ShapeError for shapes or dtypes that do not fit, k > n;
  InputError for NaN or +inf scores, ids outside [0, n), −1 before an id, an item
  listed twice, negative or NaN weights.

  Example:
    >>> import jax.numpy as jnp, luce
    >>> s = jnp.array([0.0, 1.0, 2.0])
    >>> float(luce.pl_log_prob(s, jnp.array([2, 1, 0])))  # doctest: +ELLIPSIS
    -0.7209...
  """
  s = _checks.float_array(scores, "scores")
  r = _checks.int_array(ranking, "ranking")
  n, k = s.shape[-1], r.shape[-1]
  if k > n:
    raise ShapeError(
        f"ranking lists {k} items per event but scores has only n = {n} items; "
        f"k must be at most n.")
  _checks.check_leading_shapes(s.shape, r.shape, "scores", "ranking")
  batch = np.broadcast_shapes(s.shape[:-1], r.shape[:-1])
  m = None
  if where is not None:
    m = jnp.asarray(where)
    if m.dtype != jnp.bool_:
      raise ShapeError(f"where must be a bool array, got dtype {m.dtype}.")
    if m.ndim < 1 or m.shape[-1] != n:
      raise ShapeError(f"where must have shape [..., n={n}], got {m.shape}.")
    _checks.check_leading_shapes(s.shape, m.shape, "scores", "where")
    batch = np.broadcast_shapes(batch, m.shape[:-1])
  w = None
  if weights is not None:
    w = _checks.float_array(weights, "weights")
    try:
      np.broadcast_shapes(w.shape, batch + (k,))
    except ValueError:
      raise ShapeError(
          f"weights {w.shape} does not broadcast to the ranking's shape "
          f"{batch + (k,)}.") from None
    _checks.check_nonnegative(w, "weights")
  _checks.check_no_nan(s, "scores")
  _checks.check_no_pos_inf(s, "scores")
  _checks.check_item_lists(r, n, "ranking")

  bsz = int(np.prod(batch, dtype=np.int64))
  flat_s = jnp.broadcast_to(s, batch + (n,)).reshape(bsz, n)
  flat_r = jnp.broadcast_to(r, batch + (k,)).reshape(bsz, k)
  flat_m = None if m is None else jnp.broadcast_to(m, batch + (n,)).reshape(bsz, n)
  flat_w = None if w is None else jnp.broadcast_to(w, batch + (k,)).reshape(bsz, k)
  nll = pl_nll(flat_s, flat_r, flat_m, flat_w, impl=impl, interpret=interpret)
  return (-nll).reshape(batch)
