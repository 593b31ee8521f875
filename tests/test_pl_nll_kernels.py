"""The pl_nll op's implementations against its pure-jnp reference.

Every case runs each fast implementation (XLA, and the Pallas kernels under
every `pallas_modes()`: the TPU kernel in the HLO interpreter and the TPU
simulator, the Mosaic GPU kernel in the GPU simulator, compiled too when an
accelerator is present) on fresh random inputs and compares values and
gradients with the reference. The simulators are slow to compile, so they get
fewer shapes; every shape still mixes full, padded, all-padding, masked and
−inf rows, with sizes that are not block multiples.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from luce_test_utils import pallas_modes

import luce
from luce.kernels.pl_nll import pl_nll, resolve_impl
from luce.kernels.pl_nll.mosaic_gpu import row_logsumexp, scaled_exp
from luce.kernels.pl_nll.pallas import log_cumsum, masked_logsumexp
from luce.errors import InputError

FAST = [("xla", False)] + [("pallas", mode) for mode in pallas_modes()]
SIMULATED = ("gpu", "tpu")   # hardware simulators: slow compiles, smaller cases


def make_case(rng, bsz, n, k, *, spread=3.0, pad=True, mask=False, neg_inf=False):
  """Scores, ranking, where for `bsz` lists: row b % 7 == 5 is all padding,
  b % 3 == 1 a shorter list, and b % 7 == 2 picks the top-scored items in
  order (the picks then hold most of the row's mass: the Mosaic GPU kernel's
  exact masked pass); the others are random picks."""
  s = rng.normal(size=(bsz, n)) * spread
  where = None
  if mask:
    where = rng.random((bsz, n)) < 0.7
  if neg_inf:
    s[rng.random((bsz, n)) < 0.1] = -np.inf
  r = np.full((bsz, k), -1, np.int32)
  for b in range(bsz):
    ok = np.isfinite(s[b]) & (where[b] if where is not None else True)
    avail = np.flatnonzero(ok)
    kk = min(k, len(avail))
    if pad and kk > 1 and b % 3 == 1:
      kk = int(rng.integers(1, kk + 1))
    if b % 7 == 5:
      kk = 0   # an all-padding row
    if b % 7 == 2:
      r[b, :kk] = avail[np.argsort(-s[b, avail], kind="stable")][:kk]
    else:
      r[b, :kk] = rng.permutation(avail)[:kk]
  return (jnp.asarray(s, jnp.float32), jnp.asarray(r),
          None if where is None else jnp.asarray(where))


def value_and_grad(impl, interpret, s, r, where=None, w=None, cot=None):
  """(per-list values, ∂/∂scores, ∂/∂weights or None) of Σ cot · pl_nll, in
  one compiled call (the simulators' compiles dominate their run time)."""
  cot = jnp.ones(s.shape[0]) if cot is None else cot

  @jax.jit
  def run(s, w, cot):
    f = lambda x, ww: pl_nll(x, r, where, ww, impl=impl, interpret=interpret)
    v, vjp = jax.vjp(f, s, w)
    g, gw = vjp(cot)
    return v, g, gw
  return run(s, w, cot)


def assert_close(got, want, rtol=2e-5, atol=5e-5, what=""):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape
  assert np.all(np.isfinite(got) == np.isfinite(want)), what
  fin = np.isfinite(want)
  np.testing.assert_allclose(got[fin], want[fin], rtol=rtol, atol=atol, err_msg=what)


@pytest.mark.parametrize("impl,interpret", FAST)
def test_matches_reference(rng, impl, interpret):
  # One batch per shape mixes every kind of row: full, padded, all-padding,
  # masked items and −inf scores. Shapes are not multiples of any block.
  shapes = [(5, 2, 2), (11, 130, 129), (4, 1000, 1), (6, 777, 300)]
  if interpret in SIMULATED:
    shapes = [(11, 130, 129), (6, 777, 300)]
  for bsz, n, k in shapes:
    s, r, where = make_case(rng, bsz, n, k, mask=True, neg_inf=True)
    where = where.at[0].set(True)   # row 0 without a mask
    w = jnp.asarray(rng.random((bsz, k)) * 2, jnp.float32)
    cot = jnp.asarray(rng.normal(size=bsz), jnp.float32)
    v, g, gw = value_and_grad(impl, interpret, s, r, where, w, cot)
    v0, g0, gw0 = value_and_grad("reference", False, s, r, where, w, cot)
    what = f"B={bsz} n={n} k={k}"
    assert_close(v, v0, what="value " + what)
    assert_close(g, g0, what="grad scores " + what)
    assert_close(gw, gw0, what="grad weights " + what)


@pytest.mark.parametrize("impl,interpret", FAST)
def test_long_rows_match_xla(rng, impl, interpret):
  # n = 65,536 with short lists and a full ranking of 4,096: too big for the
  # O(n·k) reference, so the XLA path (checked above) is the yardstick. The
  # interpreters (the HLO one and the simulators) get one long row with a long
  # list (n = 8,192, k = 2,000): 64 column chunks, the same streamed carry.
  cases = [(65536, 10), (4096, 4096)] if interpret is False else [(8192, 2000)]
  for n, k in cases:
    s, r, _ = make_case(rng, 3, n, k, spread=5.0)
    v, g, _ = value_and_grad(impl, interpret, s, r)
    v0, g0, _ = value_and_grad("xla", False, s, r)
    assert_close(v, v0, rtol=1e-5, atol=1e-3, what=f"value n={n}")
    assert_close(g, g0, rtol=1e-4, atol=1e-5, what=f"grad n={n}")


@pytest.mark.parametrize("impl,interpret", FAST)
def test_extreme_magnitudes_match_float64(rng, impl, interpret):
  n, k, bsz = 300, 200, 4
  s = rng.normal(size=(bsz, n)) * np.array([1.0, 80.0, 400.0, 3000.0])[:, None]
  r = np.stack([rng.permutation(n)[:k] for _ in range(bsz)]).astype(np.int32)
  s32 = s.astype(np.float32).astype(np.float64)
  want, want_g = np.zeros(bsz), np.zeros((bsz, n))
  for b in range(bsz):
    race = np.ones(n, bool)
    for item in r[b]:
      vals = np.where(race, s32[b], -np.inf)
      mx = vals.max()
      p = np.exp(vals - mx)
      want[b] += mx + np.log(p.sum()) - s32[b, item]
      want_g[b] += p / p.sum()
      want_g[b, item] -= 1.0
      race[item] = False
  got, g, _ = value_and_grad(impl, interpret, jnp.asarray(s32, jnp.float32), jnp.asarray(r))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
  g = np.asarray(g)
  for b in range(bsz):
    # The gradient's exponents s_i − D_j are differences of numbers of size
    # |s|, so float32 leaves them an absolute error of about ulp(|s|): the
    # gradient's relative error grows like 1e-7·max|s|.
    tol = 3e-7 * np.abs(s32[b]).max() + 1e-5
    np.testing.assert_allclose(g[b], want_g[b], rtol=tol, atol=tol, err_msg=f"row {b}")


@pytest.mark.parametrize("impl,interpret", FAST)
def test_bfloat16(rng, impl, interpret):
  s, r, _ = make_case(rng, 6, 200, 50)
  s16 = s.astype(jnp.bfloat16)
  v, g, _ = value_and_grad(impl, interpret, s16, r)
  assert v.dtype == jnp.float32
  assert_close(v, pl_nll(s16.astype(jnp.float32), r, impl="reference"))
  g0 = jax.grad(lambda x: pl_nll(x, r, impl="reference").sum())(s16)
  assert g.dtype == jnp.bfloat16
  assert_close(g.astype(jnp.float32), g0.astype(jnp.float32), rtol=1e-2, atol=1e-2)


# ------------------------------------------------- the Pallas kernels themselves
TPU_KERNEL_MODES = [m for m in pallas_modes() if m in (True, "tpu")]
if jax.default_backend() == "tpu":
  TPU_KERNEL_MODES.append(False)
GPU_KERNEL_MODES = ["gpu"] + ([False] if jax.default_backend() == "gpu" else [])


@pytest.mark.parametrize("mode", TPU_KERNEL_MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bsz,k", [(1, 1), (3, 127), (9, 128), (17, 129), (5, 700)])
def test_log_cumsum_kernel_writes_every_element(rng, mode, reverse, bsz, k):
  if mode == "tpu" and (bsz, k) not in [(1, 1), (17, 129)]:
    pytest.skip("the TPU simulator runs two of the shapes")
  x = rng.normal(size=(bsz, k)) * 4
  x[rng.random((bsz, k)) < 0.1] = -np.inf
  x[0, : k // 2] += 500.0   # a chunk far out of float32's exp range: exact path
  init = rng.normal(size=bsz)
  init[-1] = -np.inf
  out, last = log_cumsum(jnp.asarray(x, jnp.float32), jnp.asarray(init, jnp.float32),
                         reverse=reverse, interpret=mode, poison=True)
  out, last = np.asarray(out), np.asarray(last)
  assert not np.isnan(out).any() and not np.isnan(last).any()
  xs = x[:, ::-1] if reverse else x
  want = np.logaddexp.accumulate(np.concatenate([init[:, None], xs], axis=1), axis=1)[:, 1:]
  want = want[:, ::-1] if reverse else want
  np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(last, want[:, 0] if reverse else want[:, -1], rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("mode", TPU_KERNEL_MODES)
@pytest.mark.parametrize("bsz,n", [(1, 1), (7, 128), (9, 300), (2, 65536)])
def test_masked_logsumexp_kernel_writes_every_element(rng, mode, bsz, n):
  if mode == "tpu" and n > 300:
    pytest.skip("65,536 lanes are 512 simulated grid steps per row block")
  x = rng.normal(size=(bsz, n)) * 50
  keep = rng.random((bsz, n)) < 0.5
  keep[0] = False   # nothing kept: −inf
  got = np.asarray(masked_logsumexp(jnp.asarray(x, jnp.float32), jnp.asarray(keep),
                                    interpret=mode, poison=True))
  assert not np.isnan(got).any()
  with np.errstate(divide="ignore"):
    m = np.where(keep, x, -np.inf).max(axis=1)
    ms = np.where(np.isfinite(m), m, 0.0)
    want = ms + np.log(np.where(keep, np.exp(x - ms[:, None]), 0.0).sum(axis=1))
  assert got[0] == -np.inf
  np.testing.assert_allclose(got[1:], want[1:], rtol=1e-6)


def _logsumexp64(x):
  with np.errstate(divide="ignore", invalid="ignore"):
    m = x.max(axis=1)
    ms = np.where(np.isfinite(m), m, 0.0)
    return ms + np.log(np.exp(x - ms[:, None]).sum(axis=1))


@pytest.mark.parametrize("mode", GPU_KERNEL_MODES)
@pytest.mark.parametrize("bsz,n", [(1, 1), (65, 129), (3, 4000)])
def test_row_logsumexp_kernel_writes_every_element(rng, mode, bsz, n):
  x = rng.normal(size=(bsz, n)) * 50
  x[rng.random((bsz, n)) < 0.1] = -np.inf
  x[0] = -np.inf   # an empty row: −inf, count 0
  bias = np.where(rng.random((bsz, n)) < 0.5, 0.0, -np.inf)
  xj = jnp.asarray(x, jnp.float32)
  for b in (None, bias):
    lse, count = row_logsumexp(xj, None if b is None else jnp.asarray(b, jnp.float32),
                               interpret=mode, poison=True)
    lse, count = np.asarray(lse), np.asarray(count)
    assert not np.isnan(lse).any() and not np.isnan(count).any()
    xb = x.astype(np.float32).astype(np.float64) + (0.0 if b is None else b)
    np.testing.assert_array_equal(count, np.isfinite(xb).sum(axis=1))
    want = _logsumexp64(xb)
    assert np.all(np.isneginf(lse) == np.isneginf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(lse[fin], want[fin], rtol=1e-6)


@pytest.mark.parametrize("mode", GPU_KERNEL_MODES)
@pytest.mark.parametrize("bsz,n", [(1, 1), (65, 129), (3, 4000)])
def test_scaled_exp_kernel_writes_every_element(rng, mode, bsz, n):
  x = rng.normal(size=(bsz, n)) * 3
  x[rng.random((bsz, n)) < 0.1] = -np.inf
  off = rng.normal(size=bsz) - 2.0
  off[-1] = -np.inf   # a zeroed row
  scale = rng.normal(size=bsz)
  got = np.asarray(scaled_exp(jnp.asarray(x, jnp.float32), jnp.asarray(off, jnp.float32),
                              jnp.asarray(scale, jnp.float32), interpret=mode, poison=True))
  assert not np.isnan(got).any()
  x32 = x.astype(np.float32).astype(np.float64)
  want = scale.astype(np.float32)[:, None] * np.exp(x32 + off.astype(np.float32)[:, None])
  np.testing.assert_allclose(got, want, rtol=3e-6, atol=1e-30)


@pytest.mark.parametrize("mode", [m for m in pallas_modes() if m != "tpu"])
def test_pl_log_prob_end_to_end(rng, mode):
  # luce.pl_log_prob passes interpret through to the kernels (batch axes,
  # `where` and weights included).
  s, r, where = make_case(rng, 6, 40, 12, mask=True)
  s = s.reshape(2, 3, 40)
  r, where = r.reshape(2, 3, 12), where.reshape(2, 3, 40)
  w = jnp.asarray(rng.random((2, 3, 12)), jnp.float32)
  got = luce.pl_log_prob(s, r, where=where, weights=w, impl="pallas", interpret=mode)
  want = luce.pl_log_prob(s, r, where=where, weights=w, impl="reference")
  assert_close(got, want)


def test_dispatch():
  expected = {"pallas"} if jax.default_backend() in ("gpu", "tpu") else {"cpu", "xla"}
  assert resolve_impl("auto") in expected
  with pytest.raises(InputError, match="interpret=True runs Pallas kernels only"):
    pl_nll(jnp.zeros((1, 3)), jnp.zeros((1, 2), jnp.int32), impl="xla", interpret=True)
  with pytest.raises(InputError, match="is not one of"):
    pl_nll(jnp.zeros((1, 3)), jnp.zeros((1, 2), jnp.int32), impl="triton")
  with pytest.raises(InputError, match="runs Pallas kernels only"):
    pl_nll(jnp.zeros((1, 3)), jnp.zeros((1, 2), jnp.int32), impl="xla", interpret="gpu")
  for bad in ("cuda", 2, "interpret"):
    with pytest.raises(InputError, match="is not one of"):
      pl_nll(jnp.zeros((1, 3)), jnp.zeros((1, 2), jnp.int32), impl="pallas", interpret=bad)
    with pytest.raises(InputError, match="is not one of"):
      luce.pl_log_prob(jnp.zeros(3), jnp.arange(2), impl="pallas", interpret=bad)
  if jax.default_backend() == "cpu":
    # Compiled Pallas needs an accelerator.
    with pytest.raises(InputError, match="cannot compile"):
      pl_nll(jnp.zeros((1, 3)), jnp.zeros((1, 2), jnp.int32), impl="pallas", interpret=False)
    with pytest.raises(InputError, match="cannot compile"):
      luce.pl_log_prob(jnp.zeros(3), jnp.arange(2), impl="pallas")
