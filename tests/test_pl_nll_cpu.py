"""The native CPU pl_nll kernel against the reference, the XLA kernel and float64."""

import itertools
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import luce
from luce.kernels.pl_nll import cpu_ffi, pl_nll
from luce.kernels.pl_nll.reference import pl_nll_reference
from luce.kernels.pl_nll.xla import pl_nll_xla

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not cpu_ffi.available(),
    reason="native CPU kernel unavailable (no compiler or not a CPU backend)")

cpu = jax.jit(cpu_ffi.pl_nll_cpu)


def _make_vg(fn):
  def loss(s, w, r, where, cot):
    nll = fn(s, r, where, w)
    return jnp.sum(nll * cot), nll
  vg_w = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
  vg = jax.jit(jax.value_and_grad(loss, has_aux=True))
  return vg, vg_w


VG = {"cpu": _make_vg(cpu_ffi.pl_nll_cpu), "xla": _make_vg(pl_nll_xla),
      "reference": _make_vg(pl_nll_reference)}


def value_and_grads(name, s, r, where, w, cot):
  """NLL, ∂(cot·NLL)/∂s and (when weighted) ∂/∂w, as numpy."""
  vg, vg_w = VG[name]
  if w is None:
    (_, nll), gs = vg(s, None, r, where, cot)
    return np.asarray(nll), np.asarray(gs), None
  (_, nll), (gs, gw) = vg_w(s, w, r, where, cot)
  return np.asarray(nll), np.asarray(gs), np.asarray(gw)


def make_batch(rng, b, n, k, *, pad=False, mask=False, weighted=False, spread=3.0):
  """Random lists; with pad/mask, about half the rows are padded/masked."""
  s = (rng.normal(size=(b, n)) * spread).astype(np.float32)
  where = np.ones((b, n), bool) if mask else None
  r = np.full((b, k), -1, np.int32)
  for i in range(b):
    avail = np.arange(n)
    if mask and rng.random() < 0.5:
      where[i] = rng.random(n) < 0.7
      where[i, rng.integers(n)] = True
      avail = np.flatnonzero(where[i])
    kk = min(k, len(avail))
    if pad and rng.random() < 0.5:
      kk = int(rng.integers(0, kk + 1))
    r[i, :kk] = rng.choice(avail, kk, replace=False)
  w = (rng.random((b, k)) * 2).astype(np.float32) if weighted else None
  return (jnp.asarray(s), jnp.asarray(r), None if where is None else jnp.asarray(where),
          None if w is None else jnp.asarray(w))


def close(got, want, rtol, atol, what):
  np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


# ---------------------------------------------------------------- vs float64, reference, XLA
SHAPES = [(1, 2, 1, False, False, False), (3, 2, 2, True, True, True),
          (5, 3, 3, False, True, False), (7, 17, 17, True, False, True),
          (6, 33, 5, True, True, True), (4, 130, 129, False, False, True),
          (3, 257, 1, True, True, False), (2, 1000, 1000, True, True, True),
          (2, 150, 149, True, True, True),
          (37, 64, 64, False, False, False), (3, 4099, 31, True, True, True)]


@pytest.mark.parametrize("b,n,k,pad,mask,weighted", SHAPES)
def test_matches_float64(rng, b, n, k, pad, mask, weighted):
  s, r, where, w = make_batch(rng, b, n, k, pad=pad, mask=mask, weighted=weighted)
  cot = rng.normal(size=b).astype(np.float32)
  nll, gs, gw = value_and_grads("cpu", s, r, where, w, jnp.asarray(cot))
  s64 = np.asarray(s, np.float64)
  if where is not None:
    s64 = np.where(np.asarray(where), s64, -np.inf)
  for i in range(b):
    want, g, g_w = np_nll(s64[i], np.asarray(r[i]), None if w is None else np.asarray(w[i]))
    assert nll[i] == pytest.approx(want, rel=2e-6 * math.sqrt(k) + 1e-6, abs=1e-5), i
    close(gs[i], cot[i] * g, 1e-4, 1e-6, f"grad scores row {i}")
    if weighted:
      close(gw[i], cot[i] * g_w, 2e-5, 1e-5, f"grad weights row {i}")


@pytest.mark.parametrize("b,n,k,pad,mask,weighted", [SHAPES[i] for i in (1, 4, 8, 10)])
def test_matches_reference_and_xla(rng, b, n, k, pad, mask, weighted):
  s, r, where, w = make_batch(rng, b, n, k, pad=pad, mask=mask, weighted=weighted)
  cot = jnp.asarray(rng.normal(size=b), jnp.float32)
  got = value_and_grads("cpu", s, r, where, w, cot)
  valid = np.asarray(r) >= 0
  for name in ("reference", "xla"):
    want = value_and_grads(name, s, r, where, w, cot)
    scale = max(1.0, float(np.abs(want[0]).max()))
    close(got[0], want[0], 2e-6 * math.sqrt(k) + 1e-5, 1e-5 * scale, f"nll vs {name}")
    close(got[1], want[1], 1e-4, 3e-5, f"grad scores vs {name}")
    if weighted:
      # Autodiff through the reference gives NaN at pads; the kernels give 0.
      ok = valid if name == "reference" else np.ones_like(valid)
      close(got[2][ok], want[2][ok], 2e-5, 3e-5, f"grad weights vs {name}")
      assert np.all(got[2][~valid] == 0.0)


def np_fast64(s, r, w):
  """float64 NLL and gradients by the O(n + k) formulas (no masks)."""
  s = np.asarray(s, np.float64)
  m = s.max()
  e = np.exp(s - m)
  picked = np.zeros(len(s), bool)
  picked[r] = True
  ep = e[r]
  suffix = e[~picked].sum() + np.cumsum(ep[::-1])[::-1]
  stage = m + np.log(suffix) - s[r]
  prefix = np.cumsum(w / suffix)
  gs = e * prefix[-1]
  gs[r] = ep * prefix - w
  return (w * stage).sum(), gs, stage


@pytest.mark.parametrize("n,k", [(65536, 65536), (65536, 9), (40000, 1)])
def test_long_lists_match_float64(rng, n, k):
  s, r, _, w = make_batch(rng, 2, n, k, weighted=True)
  got = value_and_grads("cpu", s, r, None, w, jnp.ones(2, jnp.float32))
  for i in range(2):
    want = np_fast64(s[i], np.asarray(r[i]), np.asarray(w[i], np.float64))
    assert got[0][i] == pytest.approx(want[0], rel=2e-6), i
    close(got[1][i], want[1], 1e-4, 1e-6, f"grad scores row {i}")
    close(got[2][i], want[2], 1e-5, 2e-5, f"grad weights row {i}")
  if k < 100:
    want = value_and_grads("reference", s, r, None, w, jnp.ones(2, jnp.float32))
    close(got[0], want[0], 1e-5, 1e-4, "nll vs reference")
    close(got[1], want[1], 1e-4, 1e-5, "grad scores vs reference")


# ---------------------------------------------------------------- float64 truth
def np_nll(s, ranking, weights=None):
  """float64 NLL and its gradient in s and w, from the definition."""
  s = np.asarray(s, np.float64)
  race = np.isfinite(s)
  nll, gs, gw = 0.0, np.zeros(len(s)), np.zeros(len(ranking))
  for j, item in enumerate(ranking):
    if item < 0:
      continue
    w = 1.0 if weights is None else float(weights[j])
    vals = np.where(race, s, -np.inf)
    mx = vals.max()
    p = np.exp(vals - mx)
    term = mx + math.log(p.sum()) - s[item]
    nll += w * term
    gw[j] = term
    gs += w * p / p.sum()
    gs[item] -= w
    race[item] = False
  return nll, gs, gw


def test_extreme_magnitudes_exact():
  s = np.array([0.0, -200.0, 100.0, -300.0], np.float32)
  perms = np.array(list(itertools.permutations(range(4))), np.int32)
  lists = np.concatenate([perms, np.where(np.arange(4) < 2, perms, -1)]).astype(np.int32)
  w = np.random.default_rng(0).random(lists.shape).astype(np.float32) + 0.1
  sb = jnp.asarray(np.broadcast_to(s, (len(lists), 4)))
  nll, gs, gw = value_and_grads("cpu", sb, jnp.asarray(lists), None, jnp.asarray(w),
                                jnp.ones(len(lists)))
  for i, p in enumerate(lists):
    want, g, g_w = np_nll(s, p, w[i])
    assert nll[i] == pytest.approx(want, rel=1e-6, abs=1e-5), p
    # ulp(300) = 3e-5 enters the stage terms and the gradient's exponents.
    close(gs[i], g, 2e-5, 1e-6, str(p))
    close(gw[i], g_w, 1e-6, 3e-5, str(p))


def test_wide_spread_rows_match_float64(rng):
  # Rows far outside float32's exp range (exact path) next to ordinary ones.
  n, k, b = 50, 20, 8
  s = rng.normal(size=(b, n)).astype(np.float32)
  s[1] *= 500.0
  s[3, :6] = [-1e4, 3e3, -2e3, 0.0, 1e4, -5e3]
  s[5] *= 80.0
  r = np.stack([rng.permutation(n)[:k] for _ in range(b)]).astype(np.int32)
  r[3] = np.concatenate([np.arange(6), 6 + rng.permutation(n - 6)[:k - 6]])
  r[6, 12:] = -1
  w = (rng.random((b, k)) * 2).astype(np.float32)
  w[1, ::3] = 0.0
  nll, gs, gw = value_and_grads("cpu", jnp.asarray(s), jnp.asarray(r), None, jnp.asarray(w),
                                jnp.ones(b))
  for i in range(b):
    want, g, g_w = np_nll(s[i], r[i], w[i])
    assert nll[i] == pytest.approx(want, rel=2e-6, abs=2e-5), i
    rtol = 2e-7 * np.abs(s[i]).max() + 2e-6
    close(gs[i], g, rtol, 2e-5, f"row {i}")
    close(gw[i], g_w, rtol, 2e-5, f"row {i}")


# ---------------------------------------------------------------- special rows
def test_minus_inf_masks_and_impossible_rows():
  ninf = -np.inf
  s = jnp.array([[0.0, ninf, 1.0, 2.0],     # −inf never picked: unavailable
                 [0.0, ninf, 1.0, 2.0],     # picks the −inf item: impossible
                 [0.5, 1.0, -1.0, 3.0],     # picks a masked item: impossible
                 [ninf, ninf, ninf, ninf],  # nothing available, nothing picked
                 [0.5, 1.0, -1.0, 3.0]], jnp.float32)
  r = jnp.array([[3, 0], [0, 1], [2, -1], [-1, -1], [-1, -1]], jnp.int32)
  where = jnp.array([[True] * 4, [True] * 4, [True, True, False, True], [True] * 4,
                     [True] * 4])
  w = jnp.array([[1.0, 2.0]] * 5, jnp.float32)
  nll, gs, gw = value_and_grads("cpu", s, r, where, w, jnp.ones(5))
  want = value_and_grads("reference", s, r, where, w, jnp.ones(5))
  assert nll[1] == np.inf and nll[2] == np.inf
  assert nll[3] == 0.0 and nll[4] == 0.0
  close(nll[0], want[0][0], 1e-6, 1e-6, "row 0")
  assert np.all(np.isfinite(gs)) and np.all(np.isfinite(gw))
  assert np.all(gs[1:] == 0.0) and np.all(gw[1:] == 0.0)
  close(gs[0], want[1][0], 1e-6, 1e-6, "grad row 0")
  assert gs[0, 1] == 0.0


def test_every_row_kind_in_one_batch_writes_every_output(rng):
  # Large enough to be split over threads. Two calls with the row kinds in
  # other places: an output element left unwritten would show the first
  # call's values (XLA reuses buffers) or garbage.
  n, k = 300, 120
  kinds = ["plain", "padded", "all_pad", "impossible", "exact", "masked", "full_mask", "k1"]
  for trial in range(2):
    b = 8 * 60
    order = rng.permutation(b)
    s = (rng.normal(size=(b, n)) * 2).astype(np.float32)
    r = np.stack([rng.permutation(n)[:k] for _ in range(b)]).astype(np.int32)
    where = np.ones((b, n), bool)
    exact_rows = []
    for i, row in enumerate(order):
      kind = kinds[i % len(kinds)]
      if kind == "padded":
        r[row, rng.integers(1, k):] = -1
      elif kind == "all_pad":
        r[row] = -1
      elif kind == "impossible":
        s[row, r[row, rng.integers(k)]] = -np.inf
      elif kind == "exact":
        s[row] *= 300.0
        exact_rows.append(row)
      elif kind == "masked":
        where[row] = rng.random(n) < 0.8
        where[row, r[row]] = True
      elif kind == "full_mask":
        where[row] = False
        r[row] = -1
      elif kind == "k1":
        r[row, 1:] = -1
    w = (rng.random((b, k)) + 0.5).astype(np.float32)
    args = (jnp.asarray(s), jnp.asarray(r), jnp.asarray(where), jnp.asarray(w))
    cot = rng.normal(size=b).astype(np.float32)
    got = value_and_grads("cpu", *args, jnp.asarray(cot))
    want = value_and_grads("xla", *args, jnp.asarray(cot))
    assert not np.any(np.isnan(got[0])) and np.all(np.isfinite(got[1])) and \
        np.all(np.isfinite(got[2]))
    np.testing.assert_array_equal(np.isinf(got[0]), np.isinf(want[0]))
    # Rows spread over ±1000 nats: float64 truth (XLA's float32 exact path
    # rounds s + C_j at ulp(1000) there; this kernel adds them in double).
    for row in exact_rows[:12]:
      truth = np_nll(s[row].astype(np.float64), r[row], w[row])
      assert got[0][row] == pytest.approx(truth[0], rel=1e-6), row
      close(got[1][row], cot[row] * truth[1], 1e-5, 1e-6, f"exact row {row}")
      close(got[2][row], cot[row] * truth[2], 1e-5, 1e-4, f"exact row {row}")
    other = np.isfinite(want[0])
    other[exact_rows] = False
    close(got[0][other], want[0][other], 2e-5, 1e-4, f"nll, trial {trial}")
    close(got[1][other], want[1][other], 1e-4, 1e-5, f"grad scores, trial {trial}")
    close(got[2][other], want[2][other], 1e-5, 1e-4, f"grad weights, trial {trial}")
    assert np.all(got[1][~np.isfinite(want[0])] == 0.0)
    assert np.all(got[2][~np.isfinite(want[0])] == 0.0)
    # The primal-only kernel writes the same values.
    close(np.asarray(cpu(*args)), got[0], 0, 0, "primal vs forward")


def test_bfloat16_inputs_accumulate_in_float32(rng):
  s, r, _, w = make_batch(rng, 4, 1500, 1500, weighted=True)
  s16, w16 = s.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
  got = cpu(s16, r, None, w16)
  assert got.dtype == jnp.float32
  close(np.asarray(got), np.asarray(cpu(s16.astype(jnp.float32), r, None,
                                        w16.astype(jnp.float32))), 0, 0, "bf16")
  gs, gw = jax.grad(lambda a, b: cpu(a, r, None, b).sum(), argnums=(0, 1))(s16, w16)
  assert gs.dtype == jnp.bfloat16 and gw.dtype == jnp.bfloat16
  assert bool(jnp.all(jnp.isfinite(gs))) and bool(jnp.all(jnp.isfinite(gw)))


# ---------------------------------------------------------------- transformations
def test_vmap_and_batch_axes(rng):
  s, r, where, w = make_batch(rng, 12, 21, 8, pad=True, mask=True, weighted=True)
  flat = cpu(s, r, where, w)
  shp = lambda x: x.reshape(3, 4, *x.shape[1:])
  vm = jax.vmap(jax.vmap(cpu_ffi.pl_nll_cpu))(shp(s), shp(r), shp(where), shp(w))
  close(np.asarray(vm).ravel(), np.asarray(flat), 0, 0, "vmap")
  # Unbatched weights and where broadcast; the gradient under vmap as well.
  g1 = jax.vmap(jax.grad(lambda a, b: cpu_ffi.pl_nll_cpu(a[None], b[None]).sum()))(s, r)
  g2 = jax.grad(lambda a: cpu(a, r, None, None).sum())(s)
  close(np.asarray(g1), np.asarray(g2), 1e-6, 1e-7, "vmap grad")


def test_dispatcher_uses_native_kernel_on_cpu(rng):
  assert "cpu" in luce.kernels.pl_nll.IMPLS
  s, r, where, w = make_batch(rng, 5, 30, 30, pad=True, mask=True, weighted=True)
  hlo = jax.jit(lambda a: luce.pl_log_prob(a, r)).lower(s).as_text()
  assert "luce_pl_nll" in hlo
  a = pl_nll(s, r, where, w, impl="cpu")
  b = pl_nll(s, r, where, w)
  close(np.asarray(a), np.asarray(b), 0, 0, "auto")
  close(np.asarray(a), np.asarray(pl_nll(s, r, where, w, impl="xla")), 1e-5, 1e-5, "xla")


def test_failed_build_falls_back_to_xla_with_one_warning(tmp_path):
  code = (
      "import os, warnings, jax, jax.numpy as jnp, luce\n"
      "from luce.kernels.pl_nll import cpu_ffi\n"
      "s, r = jnp.array([0., 1., 2.]), jnp.array([2, 0])\n"
      "for env in ({'CXX': 'false'}, {'LUCE_NATIVE': '0'}):\n"
      "  os.environ.update(env)\n"
      "  cpu_ffi._state.clear()\n"
      "  with warnings.catch_warnings(record=True) as ws:\n"
      "    warnings.simplefilter('always')\n"
      "    a = luce.pl_log_prob(s, r, impl='cpu')\n"
      "    b = luce.pl_log_prob(s, r, impl='cpu')\n"
      "    c = luce.pl_log_prob(s, r, impl='xla')\n"
      "  hlo = jax.jit(lambda x: luce.pl_log_prob(x, r)).lower(s).as_text()\n"
      "  print('luce_pl_nll' in hlo, cpu_ffi.available(), float(a) - float(c), float(b) - float(c),\n"
      "        sum(issubclass(w.category, cpu_ffi.NativeKernelWarning) for w in ws))\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu", LUCE_CACHE_DIR=str(tmp_path))
  env.pop("CXX", None)
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
  assert out.returncode == 0, out.stderr
  failed, disabled = [line.split() for line in out.stdout.strip().splitlines()]
  # A failed build warns once and falls back; turned off, it is silent.
  assert failed == ["False", "False", "0.0", "0.0", "1"]
  assert disabled == ["False", "False", "0.0", "0.0", "0"]
