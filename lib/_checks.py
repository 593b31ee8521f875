"""Input checks shared by luce's public functions.

Checks that depend only on shapes and dtypes always run. Checks that depend on
values (duplicates, ranges, NaN) run when the arrays are concrete, i.e. when the
function is called eagerly; under `jax.jit` the values are tracers and those
checks are skipped (see `luce.checked` for errors inside jit).
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from luce.errors import InputError, ShapeError


def is_concrete(*xs) -> bool:
  """True when no argument is a JAX tracer (values can be inspected)."""
  return not any(isinstance(x, jax.core.Tracer) for x in xs if x is not None)


def _where_first(bad: np.ndarray) -> tuple[int, ...]:
  return tuple(int(i) for i in np.argwhere(bad)[0])


def float_array(x, name: str) -> jax.Array:
  """`x` as a floating JAX array; integers are promoted, others refused."""
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_:
    x = x.astype(jnp.float32)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ShapeError(f"{name} must be a float array, got dtype {x.dtype}.")
  if x.ndim < 1:
    raise ShapeError(f"{name} must have at least one axis (the items), got a scalar.")
  return x


def int_array(x, name: str) -> jax.Array:
  """`x` as an int32 JAX array; floats are refused rather than truncated."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise ShapeError(
        f"{name} must hold integer item ids, got dtype {x.dtype}; "
        f"convert it with {name}.astype(int) if the values are whole numbers.")
  if x.ndim < 1:
    raise ShapeError(f"{name} must have at least one axis (the list), got a scalar.")
  return x.astype(jnp.int32)


def check_no_nan(x: jax.Array, name: str) -> None:
  """Raise InputError at the first NaN of a concrete float array."""
  if not is_concrete(x):
    return
  bad = np.isnan(np.asarray(x, dtype=np.float32))
  if bad.any():
    raise InputError(
        f"{name} has NaN at index {_where_first(bad)}; scores must be real "
        f"numbers or -inf (-inf marks an unavailable item).")


def check_item_lists(items: jax.Array, n: int, name: str) -> None:
  """Validate concrete lists of item ids, `int[..., k]` padded with -1.

  Ids must lie in [0, n), -1 may only pad the end of a list, and no id may
  appear twice in one list.
  """
  if not is_concrete(items):
    return
  a = np.asarray(items)
  if a.size == 0:
    return
  bad = (a < -1) | (a >= n)
  if bad.any():
    idx = _where_first(bad)
    raise InputError(
        f"{name}{list(idx)} = {a[idx]} is not an item id: ids run from 0 to "
        f"{n - 1} (n = {n} items) and -1 pads a short list.")
  pad = a < 0
  # A pad followed by an id means a hole in the list, which has no meaning.
  hole = pad[..., :-1] & ~pad[..., 1:]
  if hole.any():
    idx = _where_first(hole)
    raise InputError(
        f"{name}{list(idx)} is -1 but a later position holds an item; -1 may "
        f"only pad the end of a list.")
  s = np.sort(a, axis=-1)
  dup = (s[..., 1:] == s[..., :-1]) & (s[..., 1:] >= 0)
  if dup.any():
    row = _where_first(dup)[:-1]
    item = int(s[row + (_where_first(dup)[-1],)])
    pos = [int(p) for p in np.flatnonzero(a[row] == item)]
    raise InputError(
        f"{name}{list(row)} lists item {item} twice (positions {pos}); an item "
        f"can be picked once per event.")


def check_leading_shapes(a_shape, b_shape, a_name: str, b_name: str) -> None:
  """The batch axes (all but the last) of two arrays must broadcast."""
  try:
    np.broadcast_shapes(tuple(a_shape[:-1]), tuple(b_shape[:-1]))
  except ValueError:
    raise ShapeError(
        f"batch axes of {a_name} {tuple(a_shape)} and {b_name} {tuple(b_shape)} "
        f"do not broadcast (all axes but the last must match).") from None
