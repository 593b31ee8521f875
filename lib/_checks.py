"""Input checks shared by luce's public functions.

Checks that depend only on shapes and dtypes always run. Checks that depend on
values (duplicates, ranges, NaN) run when the arrays are concrete, i.e. when the
function is called eagerly; under `jax.jit` the values are tracers and those
checks are skipped (see `luce.checked` for errors inside jit).
"""

from __future__ import annotations

import contextvars
import functools

import numpy as np
import jax
from jax.experimental import checkify
import jax.numpy as jnp

from luce.errors import InputError, ShapeError


# True while `checked` traces a function: value checks on tracers then become
# checkify checks instead of being skipped.
_CHECKIFY = contextvars.ContextVar("luce_checkify", default=False)


def checked(fn):
  """`fn` with luce's value checks working inside `jax.jit`.

  Returns a function giving `(error, output)`, as `jax.experimental.checkify`
  does: call `error.throw()` (or inspect `error.get()`) to surface the first
  failed check, with the same message luce raises on concrete arrays (indices
  are flat indices into the argument there).

    err, lp = jax.jit(luce.checked(luce.pl_log_prob))(scores, ranking)
    err.throw()
  """
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    token = _CHECKIFY.set(True)
    try:
      return checkify.checkify(fn)(*args, **kwargs)
    finally:
      _CHECKIFY.reset(token)
  return wrapper


def _traced_check(ok, message, *args) -> None:
  if _CHECKIFY.get():
    checkify.check(ok, message, *args)


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


def _host_float(x) -> np.ndarray:
  """A numpy copy numpy can compare (bfloat16 has no numpy isnan), float64
  kept as it is so a large finite value does not overflow to inf."""
  a = np.asarray(x)
  return a if a.dtype in (np.float64, np.float32) else a.astype(np.float32)


def check_no_nan(x: jax.Array, name: str) -> None:
  """Raise InputError at the first NaN of a concrete float array."""
  if not is_concrete(x):
    bad = jnp.isnan(x).reshape(-1)
    _traced_check(~jnp.any(bad), f"{name} has NaN at flat index {{}}; scores must be real "
                  f"numbers or -inf.", jnp.argmax(bad))
    return
  bad = np.isnan(_host_float(x))
  if bad.any():
    raise InputError(
        f"{name} has NaN at index {_where_first(bad)}; scores must be real "
        f"numbers or -inf (-inf marks an unavailable item).")


def check_no_pos_inf(x: jax.Array, name: str) -> None:
  """Raise InputError at the first +inf of a concrete float array (in its own
  precision: a float64 1e300 is finite)."""
  if not is_concrete(x):
    bad = (x == jnp.inf).reshape(-1)
    _traced_check(~jnp.any(bad), f"{name} has +inf at flat index {{}}; scores must be real "
                  f"numbers or -inf.", jnp.argmax(bad))
    return
  bad = _host_float(x) == np.inf
  if bad.any():
    raise InputError(
        f"{name} has +inf at index {_where_first(bad)}; scores must be real numbers or -inf "
        f"(-inf marks an unavailable item). +inf would make PL undefined.")


def check_item_lists(items: jax.Array, n: int, name: str) -> None:
  """Validate concrete lists of item ids, `int[..., k]` padded with -1.

  Ids must lie in [0, n), -1 may only pad the end of a list, and no id may
  appear twice in one list.
  """
  if not is_concrete(items):
    _check_item_lists_traced(items, n, name)
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


def _check_item_lists_traced(items, n, name):
  if not _CHECKIFY.get() or items.size == 0:
    return
  a = items.reshape(-1, items.shape[-1])
  bad = ((a < -1) | (a >= n)).reshape(-1)
  _traced_check(~jnp.any(bad), f"{name} at flat index {{}} holds {{}}, not an item id "
                f"(0..{n - 1}, or -1 to pad the end).", jnp.argmax(bad), a.reshape(-1)[jnp.argmax(bad)])
  pad = a < 0
  hole = (pad[:, :-1] & ~pad[:, 1:]).any(axis=1)
  _traced_check(~jnp.any(hole), f"{name} row {{}} has -1 before an item; -1 may only pad "
                f"the end of a list.", jnp.argmax(hole))
  s = jnp.sort(a, axis=-1)
  dup = ((s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)).any(axis=1)
  _traced_check(~jnp.any(dup), f"{name} row {{}} lists an item twice; an item can be picked "
                f"once per event.", jnp.argmax(dup))


def check_nonnegative(x, name: str) -> None:
  """Raise InputError at the first negative or NaN entry of `x`."""
  if not is_concrete(x):
    bad = ~(x >= 0).reshape(-1)
    _traced_check(~jnp.any(bad), f"{name} at flat index {{}} is {{}}; it must be ≥ 0.",
                  jnp.argmax(bad), x.reshape(-1)[jnp.argmax(bad)])
    return
  a = np.asarray(x, np.float32)
  bad = ~(a >= 0)
  if bad.any():
    idx = _where_first(bad)
    raise InputError(f"{name}{list(idx)} = {a[idx]}; {name} must be ≥ 0.")


def check_leading_shapes(a_shape, b_shape, a_name: str, b_name: str) -> None:
  """The batch axes (all but the last) of two arrays must broadcast."""
  try:
    np.broadcast_shapes(tuple(a_shape[:-1]), tuple(b_shape[:-1]))
  except ValueError:
    raise ShapeError(
        f"batch axes of {a_name} {tuple(a_shape)} and {b_name} {tuple(b_shape)} "
        f"do not broadcast (all axes but the last must match).") from None


def where_mask(where, rankings, n: int):
  """bool[m, n] availability of int[m, k] `rankings` (None stays None): shape-checked, and
  every listed item available (InputError naming the first row and position that is not)."""
  if where is None:
    return None
  m = rankings.shape[0]
  avail = np.asarray(where)
  if avail.dtype != np.bool_ or avail.shape != (m, n):
    raise ShapeError(f"where must be bool[m={m}, n={n}], got {avail.dtype}{list(avail.shape)}.")
  rows, cols = np.nonzero((rankings >= 0)
                          & ~np.take_along_axis(avail, np.maximum(rankings, 0), axis=1))
  if rows.size:
    raise InputError(f"rankings[{rows[0]}, {cols[0]}] = {rankings[rows[0], cols[0]]} is marked "
                     f"unavailable by where[{rows[0]}]; a listed item must be available.")
  return avail
