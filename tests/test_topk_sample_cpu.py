"""The native CPU topk_sample kernel (impl="cpu") against the reference.

Fresh random inputs every run (replay with LUCE_TEST_SEED=<seed>): ids must
equal the reference's exactly (the jnp reference, and for the many shapes
`np_reference`, the same slot loop in numpy, which needs no compile per
shape), over many shapes, ties (integer scores),
−inf/NaN entries, all −inf rows, u per row, forbidden items, shared and
per-row quotas (tight, binding, infeasible), large batches that split over
the thread pool, and vmap; plus the fallback to XLA under LUCE_NATIVE=0.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from luce.kernels.topk_sample import cpu_ffi, resolve_impl, topk_sample
from luce.sampling import pl_sample

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not cpu_ffi.available(),
    reason="the native kernel needs the CPU backend and a C++ compiler")


def scores(rng, bsz, n, *, ties=False, neg_inf=0.1, nan=0.0):
  if ties:
    z = rng.integers(-3, 4, (bsz, n)).astype(np.float32)
    z[rng.random((bsz, n)) < 0.1] = -0.0
  else:
    z = (rng.normal(size=(bsz, n)) * 2 + rng.gumbel(size=(bsz, n))).astype(np.float32)
  z[rng.random((bsz, n)) < neg_inf] = -np.inf
  z[rng.random((bsz, n)) < nan] = np.nan
  if bsz > 2:
    z[1] = -np.inf       # nothing available
    z[2, 1:] = -np.inf   # one item at most
  return z


def quotas_for(rng, bsz, n, k, per_row=True):
  n_groups = int(rng.integers(1, 6))
  groups = rng.integers(0, n_groups, n).astype(np.int32)
  q = np.zeros((bsz, n_groups, 2), np.int32)
  for b in range(bsz):
    kind = b % 5
    mins = rng.multinomial(k, np.ones(n_groups) / n_groups)
    if kind == 0:        # loose
      mins = (mins * rng.random(n_groups) * 0.5).astype(int)
      maxs = np.full(n_groups, k)
    elif kind == 1:      # tight: the mins fill every slot
      maxs = mins + rng.integers(0, 3, n_groups)
    elif kind == 2:      # binding maxima
      mins = np.zeros(n_groups, int)
      maxs = rng.integers(0, k + 1, n_groups)
      maxs[rng.integers(n_groups)] = k
    elif kind == 3:      # negative mins (read as 0), huge maxima
      mins = -rng.integers(0, 3, n_groups)
      maxs = np.full(n_groups, 2**31 - 1)
    else:                # random, often infeasible
      mins = rng.integers(0, k + 1, n_groups) // max(1, n_groups - 1)
      maxs = rng.integers(-1, k + 1, n_groups)
    q[b, :, 0], q[b, :, 1] = mins, maxs
  return groups, (q if per_row else q[0])


def np_reference(z, k, u=None, forbidden=None, groups=None, quotas=None):
  """`reference.topk_sample_reference` line by line in numpy."""
  z = np.asarray(z, np.float32)
  rows, n = z.shape
  avail = z > -np.inf
  if forbidden is not None:
    avail &= ~np.broadcast_to(forbidden, z.shape)
  zz = np.where(avail, z, -np.inf)
  take = np.full(rows, k) if u is None else np.clip(np.broadcast_to(u, (rows,)), 0, k)
  if quotas is None:
    groups, q = np.zeros(n, np.int32), np.broadcast_to(np.array([[0, k]]), (rows, 1, 2))
  else:
    q = np.broadcast_to(np.asarray(quotas, np.int64), (rows,) + np.shape(quotas)[-2:])
  qmin, qmax = np.maximum(q[..., 0], 0), q[..., 1]
  n_groups = q.shape[1]
  g = np.clip(groups, 0, n_groups - 1)
  out = np.full((rows, k), -1, np.int32)
  taken = np.zeros((rows, n), bool)
  count = np.zeros((rows, n_groups), np.int64)
  rr = np.arange(rows)
  for j in range(k):
    deficit = np.maximum(qmin - count, 0)
    tight = deficit.sum(1, keepdims=True) >= k - j
    group_ok = (count < qmax) & (~tight | (deficit > 0))
    eligible = avail & ~taken & group_ok[:, g] & (j < take)[:, None]
    pick = np.argmax(np.where(eligible, zz, -np.inf), axis=1)
    hit = eligible.any(1)
    taken[rr[hit], pick[hit]] = True
    count[rr[hit], g[pick[hit]]] += 1
    out[hit, j] = pick[hit]
  if quotas is not None:
    for b in range(rows):
      supply = np.bincount(g[avail[b]], minlength=n_groups)
      hi = np.minimum(qmax[b], supply)
      ok = ((qmin[b] <= hi).all() and qmin[b].sum() <= k <= hi.sum()
            and ((groups >= 0) & (groups < n_groups)).all())
      if not ok:
        out[b] = -1
  return out


def check(z, k, oracle="numpy", **kw):
  got = np.asarray(topk_sample(z, k, impl="cpu", **kw))
  if oracle == "numpy":
    want = np_reference(z, k, **kw)
  else:
    want = np.asarray(topk_sample(z, k, impl="reference", **kw))
  np.testing.assert_array_equal(got, want, err_msg=f"n={z.shape[1]} k={k} {sorted(kw)}")
  return got


SHAPES = [(7, 1, 1), (9, 2, 1), (9, 2, 2), (11, 5, 5), (8, 17, 3), (6, 33, 32), (6, 33, 33),
          (5, 69, 5), (5, 80, 20), (4, 130, 40), (4, 300, 129), (3, 777, 300), (2, 5000, 4),
          (2, 5000, 64), (2, 5000, 5000)]


@pytest.mark.parametrize("ties", [False, True])
def test_no_quotas(rng, ties):
  for bsz, n, k in SHAPES:
    z = scores(rng, bsz, n, ties=ties, nan=0.02)
    u = rng.integers(-1, k + 2, bsz).astype(np.int32)
    u[0] = k
    if bsz > 3:
      u[3] = 0
    forbidden = rng.random((bsz, n)) < 0.2
    check(z, k)
    check(z, k, u=u)
    check(z, k, u=u, forbidden=forbidden)
    check(z, k, u=int(rng.integers(0, k + 1)), forbidden=forbidden[0])
  # The numpy oracle is the jnp reference.
  z = scores(rng, 9, 50, ties=ties, nan=0.02)
  check(z, 12, oracle="jnp", u=np.arange(9, dtype=np.int32) - 1,
        forbidden=rng.random((9, 50)) < 0.2)
  # The plain top-k (no −inf, no ties): numpy's stable sort by −z.
  z = rng.normal(size=(3, 300)).astype(np.float32)
  got = np.asarray(topk_sample(z, 300, impl="cpu"))
  np.testing.assert_array_equal(got, np.argsort(-z, axis=1, kind="stable"))


@pytest.mark.parametrize("ties", [False, True])
def test_quotas(rng, ties):
  for bsz, n, k in SHAPES:
    if n * k > 10**6:
      continue  # k = n = 5000: the numpy slot loop is slow; the walk's sort is covered
    for per_row in (True, False):
      z = scores(rng, max(bsz, 10), n, ties=ties, neg_inf=0.05)
      groups, q = quotas_for(rng, z.shape[0], n, k, per_row)
      u = rng.integers(0, k + 1, z.shape[0]).astype(np.int32)
      u[::3] = k
      forbidden = rng.random(z.shape) < 0.1
      check(z, k, groups=groups, quotas=q)
      check(z, k, groups=groups, quotas=q, u=u, forbidden=forbidden)
  z = scores(rng, 20, 40, ties=ties)
  groups, q = quotas_for(rng, 20, 40, 9)
  check(z, 9, oracle="jnp", groups=groups, quotas=q, u=np.arange(20, dtype=np.int32) % 11)


def test_quotas_long_walk(rng):
  # The best items all sit in a group at its max: the walk passes over
  # them, past the first lazily sorted chunk (and the next ones).
  bsz, n, k = 6, 3000, 20
  z = np.sort(rng.normal(size=(bsz, n)).astype(np.float32), axis=1)[:, ::-1].copy()
  groups = (np.arange(n) >= 2500).astype(np.int32)
  q = np.array([[0, 2], [0, k]], np.int32)
  got = check(z, k, groups=groups, quotas=q)
  np.testing.assert_array_equal(got[:, 2:], np.broadcast_to(np.arange(2500, 2518), (bsz, 18)))
  # Tight from the start: every slot must come from the group in deficit.
  q = np.array([[0, k], [k, k]], np.int32)
  got = check(z, k, groups=groups, quotas=q, u=np.arange(bsz, dtype=np.int32) * 4)
  assert (got[got >= 0] >= 2500).all()


def test_infeasible_and_bad_group_ids(rng):
  n, k = 12, 4
  z = scores(rng, 6, n, neg_inf=0.0)
  groups = np.arange(n) % 3
  for q in ([[3, 3], [2, 2], [0, 4]],       # Σ min > k
            [[0, 1], [0, 1], [0, 1]],       # Σ max < k
            [[2, 1], [0, 4], [0, 4]],       # min > max
            [[0, 4], [0, 4], [5, 5]]):      # min > supply
    got = check(z, k, groups=groups, quotas=np.array(q, np.int32))
    assert (got == -1).all()
  bad = groups.copy()
  bad[5] = 3   # out of range: every row −1
  got = check(z, k, groups=bad, quotas=np.array([[0, 4]] * 3, np.int32))
  assert (got == -1).all()


def test_large_batch_splits_over_threads(rng):
  # ~700k elements of work: above the kernel's per-task minimum.
  bsz, n = 10_000, 69
  z = scores(rng, bsz, n)
  u = rng.integers(0, 6, bsz).astype(np.int32)
  check(z, 5, u=u)
  groups = np.minimum(np.arange(n) // 10, 6)
  q = np.array([[0, 2]] * 6 + [[1, 2]], np.int32)
  check(z, 5, groups=groups, quotas=q)
  # k = 20 takes the sorted-buffer path at every row, split over the pool too.
  np.testing.assert_array_equal(topk_sample(z, 20, impl="cpu"), topk_sample(z, 20, impl="xla"))


def test_vmap_and_jit(rng):
  z = scores(rng, 3 * 8, 30).reshape(3, 8, 30)
  u = rng.integers(0, 6, (3, 8)).astype(np.int32)
  groups = np.arange(30) % 4
  q = np.array([[1, 2], [0, 3], [1, 5], [0, 1]], np.int32)
  qb = np.stack([quotas_for(rng, 8, 30, 5)[1][:, :1].repeat(4, 1) for _ in range(3)])
  qb[..., 0] = np.minimum(qb[..., 0], 1)
  qb[..., 1] = np.maximum(qb[..., 1], 2)
  for impl_kw in (dict(), dict(groups=groups, quotas=q)):
    f = lambda impl, impl_kw=impl_kw: jax.vmap(
        lambda a, b: topk_sample(a, 5, u=b, impl=impl, **impl_kw))(z, u)
    np.testing.assert_array_equal(f("cpu"), f("reference"))
  # Per-row quotas batched too, and groups batched.
  g3 = np.stack([groups, groups[::-1], np.zeros(30, np.int32)])
  f = lambda impl: jax.vmap(lambda a, g, qq: topk_sample(a, 5, groups=g, quotas=qq, impl=impl))(
      z, g3, qb)
  np.testing.assert_array_equal(f("cpu"), f("reference"))
  jitted = jax.jit(lambda a: topk_sample(a, 5, impl="cpu"))
  np.testing.assert_array_equal(jitted(z[0]), topk_sample(z[0], 5, impl="reference"))


def test_dtypes(rng):
  z = rng.normal(size=(5, 40))
  for dtype in (jnp.float64, jnp.bfloat16, jnp.float16):
    a = jnp.asarray(z).astype(dtype) if dtype != jnp.float64 else z
    np.testing.assert_array_equal(topk_sample(a, 7, impl="cpu"),
                                  topk_sample(a, 7, impl="reference"))


def test_auto_is_cpu_and_pl_sample_uses_it(seed):
  assert resolve_impl("auto") == "cpu"
  rng = np.random.default_rng(seed)
  s = rng.normal(size=(50, 30)).astype(np.float32)
  groups = np.arange(30) % 3
  quotas = np.array([[1, 2], [0, 2], [1, 3]])
  key = jax.random.key(seed)
  hlo = jax.jit(lambda a: pl_sample(key, a, 4)).lower(s).as_text()
  assert "luce_topk_sample" in hlo
  for kw in ({}, dict(groups=groups, quotas=quotas)):
    np.testing.assert_array_equal(pl_sample(key, s, 4, **kw),
                                  pl_sample(key, s, 4, impl="reference", **kw))


def test_disabled_falls_back_to_xla(tmp_path):
  code = (
      "import warnings, jax, numpy as np\n"
      "from luce.kernels.topk_sample import cpu_ffi, resolve_impl, topk_sample\n"
      "z = np.random.default_rng(0).normal(size=(4, 9)).astype(np.float32)\n"
      "with warnings.catch_warnings(record=True) as ws:\n"
      "  warnings.simplefilter('always')\n"
      "  a = topk_sample(z, 3, impl='cpu')\n"
      "  hlo = jax.jit(lambda x: topk_sample(x, 3)).lower(z).as_text()\n"
      "ok = (np.asarray(a) == np.asarray(topk_sample(z, 3, impl='reference'))).all()\n"
      "print(resolve_impl('auto'), cpu_ffi.available(), 'luce_topk_sample' in hlo, ok,\n"
      "      sum(issubclass(w.category, cpu_ffi.NativeKernelWarning) for w in ws))\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu", LUCE_CACHE_DIR=str(tmp_path))
  for extra, want in (({"LUCE_NATIVE": "0"}, "xla False False True 0"),
                      ({"CXX": "false", "PATH": "/nonexistent"}, "xla False False True 1")):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(env, **extra), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == want.split(), (extra, out.stdout, out.stderr)
