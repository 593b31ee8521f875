"""The topk_sample op's implementations against its pure-jnp reference.

Every case draws fresh perturbed scores (normal scores plus continuous Gumbel
noise, so ties have probability zero) and checks that each fast
implementation returns exactly the reference's ids, and that the ids meet
every constraint (checked in numpy, independently of any implementation).
The fast ones: XLA, the native CPU kernel, and the Pallas kernels under every mode of
`conftest.pallas_modes()`: the TPU kernel in the HLO interpreter (True) and
the TPU simulator ("tpu"), the Mosaic GPU kernel in the GPU simulator
("gpu"), and compiled (False) when an accelerator is present. The shapes
reach both GPU paths (rows resident in shared memory, and rows wider than
512 items streamed through the TMA pipeline). Replay a failure with
LUCE_TEST_SEED=<seed>.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from luce_test_utils import pallas_modes
from luce import kernels
from luce.errors import InputError
from luce.kernels.topk_sample import cpu_ffi, mosaic_gpu, resolve_impl, top_u, topk_sample
from luce.kernels.topk_sample.pallas import topk_sample_pallas
from luce.sampling import pl_sample

# "cpu" (the native kernel) falls back to XLA where it cannot be built.
FAST = ([("xla", False), ("cpu", False)]
        + [("pallas", mode) for mode in pallas_modes()])


def perturbed_case(rng, bsz, n, *, neg_inf=0.1, forbid=0.2, short_rows=True):
  """float32[B, n] perturbed scores with −inf items, and bool[B, n] forbidden."""
  z = rng.normal(size=(bsz, n)) * 2 + rng.gumbel(size=(bsz, n))
  z[rng.random((bsz, n)) < neg_inf] = -np.inf
  forbidden = rng.random((bsz, n)) < forbid
  if short_rows and bsz > 2:
    z[1, 1:] = -np.inf          # one available item at most
    forbidden[2] = True         # nothing available
  return z.astype(np.float32), forbidden


def mixed_u(rng, bsz, k):
  u = rng.integers(0, k + 1, bsz)
  u[0] = k
  if bsz > 3:
    u[3] = 0
  return u.astype(np.int32)


def random_quotas(rng, bsz, n, k):
  """groups int[n] and per-row quotas int[B, G, 2]: loose, tight (Σ min = k),
  binding maxima, and infeasible rows."""
  n_groups = int(rng.integers(1, 7))
  groups = rng.integers(0, n_groups, n).astype(np.int32)
  q = np.zeros((bsz, n_groups, 2), np.int32)
  for b in range(bsz):
    kind = b % 4
    mins = rng.multinomial(k, np.ones(n_groups) / n_groups)
    if kind == 0:      # loose
      mins = (mins * rng.random(n_groups) * 0.5).astype(int)
      maxs = np.full(n_groups, k)
    elif kind == 1:    # tight: the mins use up every slot
      maxs = mins + rng.integers(0, 3, n_groups)
    elif kind == 2:    # binding maxima
      mins = np.zeros(n_groups, int)
      maxs = rng.integers(0, k + 1, n_groups)
      maxs[rng.integers(n_groups)] = k  # at least one group can fill the list
    else:              # random; often infeasible (min > max, Σ min > k, ...)
      mins = rng.integers(0, k + 1, n_groups) // max(1, n_groups - 1)
      maxs = rng.integers(0, k + 1, n_groups)
    q[b, :, 0], q[b, :, 1] = mins, maxs
  return groups, q


def feasible_np(avail, groups, q, k):
  n_groups = q.shape[0]
  supply = np.bincount(groups[avail], minlength=n_groups)
  lo, hi = q[:, 0], np.minimum(q[:, 1], supply)
  return bool((lo <= hi).all() and lo.sum() <= k <= hi.sum())


def check_valid(ids, z, forbidden, k, u, groups=None, q=None, what=""):
  """Every constraint, in numpy: −1 past u, distinct available items, quotas."""
  ids = np.asarray(ids)
  assert ids.shape == (z.shape[0], k) and ids.dtype == np.int32, what
  for b in range(z.shape[0]):
    row = ids[b]
    avail = np.isfinite(z[b]) & ~forbidden[b]
    m = f"{what} row {b}: {row}"
    assert (row[u[b]:] == -1).all(), m
    if q is not None and not feasible_np(avail, groups, q[b], k):
      assert (row == -1).all(), m + " infeasible row not -1"
      continue
    filled = row[row >= 0]
    # Filled slots come first, then −1 only.
    assert (row[:len(filled)] >= 0).all(), m
    assert len(filled) == min(u[b], avail.sum()), m
    assert len(set(filled.tolist())) == len(filled), m + " repeated item"
    assert avail[filled].all(), m + " unavailable item"
    if q is not None:
      counts = np.bincount(groups[filled], minlength=q.shape[1])
      assert (counts <= q[b, :, 1]).all(), m + " a max is exceeded"
      if u[b] == k:
        assert (counts >= q[b, :, 0]).all(), m + " a min is not met"


# (B, n, k): n from 2 up, k from 1 to n, nothing a multiple of a block. The
# simulators ("tpu", "gpu") run a grid step in about a second, so they get
# the same kinds of case at sizes that keep this file quick; n > 512 still
# takes the GPU kernel's streamed path.
NO_QUOTA_SHAPES = [(13, 2, 1), (9, 2, 2), (10, 130, 129), (5, 777, 300), (2, 65536, 3)]
NO_QUOTA_SHAPES_SIM = [(13, 2, 1), (9, 2, 2), (10, 130, 129), (3, 777, 37), (2, 5000, 3)]
SIMULATED = ("tpu", "gpu")


def shapes_for(interpret, full, simulated):
  return simulated if interpret in SIMULATED else full


@pytest.mark.parametrize("impl,interpret", FAST)
def test_no_quotas_match_reference(rng, impl, interpret):
  for bsz, n, k in shapes_for(interpret, NO_QUOTA_SHAPES, NO_QUOTA_SHAPES_SIM):
    z, forbidden = perturbed_case(rng, bsz, n)
    u = mixed_u(rng, bsz, k)
    got = topk_sample(z, k, u=u, forbidden=forbidden, impl=impl, interpret=interpret)
    want = topk_sample(z, k, u=u, forbidden=forbidden, impl="reference")
    what = f"{impl} B={bsz} n={n} k={k}"
    np.testing.assert_array_equal(got, want, err_msg=what)
    check_valid(got, z, forbidden, k, u, what=what)
  # Without u, forbidden and −inf the op is the plain top-k: check it against
  # numpy's sort as well (k = n: a full permutation).
  n = 130 if interpret in SIMULATED else 300
  z = rng.normal(size=(3, n)).astype(np.float32)
  got = np.asarray(topk_sample(z, n, impl=impl, interpret=interpret))
  np.testing.assert_array_equal(got, np.argsort(-z, axis=1))


QUOTA_SHAPES = [(16, 7, 3), (12, 80, 20), (8, 300, 150), (2, 65536, 4)]
QUOTA_SHAPES_SIM = [(16, 7, 3), (12, 80, 20), (8, 200, 33), (2, 5000, 4)]


@pytest.mark.parametrize("impl,interpret", FAST)
def test_quotas_match_reference(rng, impl, interpret):
  for bsz, n, k in shapes_for(interpret, QUOTA_SHAPES, QUOTA_SHAPES_SIM):
    z, forbidden = perturbed_case(rng, bsz, n, neg_inf=0.05, forbid=0.1)
    groups, q = random_quotas(rng, bsz, n, k)
    u = mixed_u(rng, bsz, k)
    u[4 % bsz:] = np.where(np.arange(4 % bsz, bsz) % 3 == 0, k, u[4 % bsz:])
    kw = dict(u=u, forbidden=forbidden, groups=groups, quotas=q)
    got = topk_sample(z, k, impl=impl, interpret=interpret, **kw)
    want = topk_sample(z, k, impl="reference", **kw)
    what = f"{impl} B={bsz} n={n} k={k} G={q.shape[1]}"
    np.testing.assert_array_equal(got, want, err_msg=what)
    check_valid(got, z, forbidden, k, u, groups, q, what=what)
  # One quota table for every row, no u: the shared-table path.
  bsz, n, k = 9, 40, 6
  z, forbidden = perturbed_case(rng, bsz, n, neg_inf=0.0, forbid=0.1, short_rows=False)
  groups = np.arange(n) % 4
  q = np.array([[1, 2], [2, 2], [0, 3], [0, 1]], np.int32)
  got = topk_sample(z, k, forbidden=forbidden, groups=groups, quotas=q, impl=impl,
                    interpret=interpret)
  want = topk_sample(z, k, forbidden=forbidden, groups=groups, quotas=q, impl="reference")
  np.testing.assert_array_equal(got, want)
  check_valid(got, z, forbidden, k, np.full(bsz, k), groups, np.broadcast_to(q, (bsz, 4, 2)))


@pytest.mark.parametrize("impl,interpret", FAST)
def test_top_u_is_a_prefix_of_top_k(rng, impl, interpret):
  # The diffusion step: u slots of the k_max-slot fill, quotas kept
  # reachable for all k_max; u = 0 rows are all −1.
  bsz, n, k = (16 if interpret in SIMULATED else 24), 69, 8
  z, forbidden = perturbed_case(rng, bsz, n, neg_inf=0.0, forbid=0.1, short_rows=False)
  groups = np.arange(n) % 3
  q = np.array([[2, 3], [0, 4], [3, 8]], np.int32)
  u = (np.arange(bsz) % (k + 1)).astype(np.int32)
  kw = dict(forbidden=forbidden, groups=groups, quotas=q, impl=impl, interpret=interpret)
  full = np.asarray(topk_sample(z, k, **kw))
  part = np.asarray(top_u(z, k, u, **kw))
  assert (full >= 0).all()
  want = np.where(np.arange(k) < u[:, None], full, -1)
  np.testing.assert_array_equal(part, want)


@pytest.mark.parametrize("interpret", pallas_modes())
def test_pallas_writes_every_output(rng, interpret):
  # The ids output starts as a sentinel (an aliased buffer: input_output_aliases
  # for the TPU kernel, a jax.new_ref for the Mosaic GPU one): every element,
  # padding slots included, must be overwritten. B is not a multiple of a
  # row block and k spans two output tiles (TPU: 128 lanes; GPU: 128-slot
  # staging). The GPU kernel runs its resident path without quotas and its
  # streamed one (SMEM capped at one chunk) with them.
  bsz, n, k = 11, 150, 130
  z, forbidden = perturbed_case(rng, bsz, n)
  u = mixed_u(rng, bsz, k)
  u[0] = k
  groups, q = random_quotas(rng, bsz, n, k)
  for kw, cols in (({}, 512), ({"groups": jnp.asarray(groups), "quotas": jnp.asarray(q)}, 128)):
    if kernels.pallas_flavour(interpret) == "tpu":
      run = functools.partial(topk_sample_pallas, interpret=interpret)
    else:
      run = functools.partial(mosaic_gpu.topk_sample_mosaic_gpu, interpret=interpret,
                              resident_cols=cols)
    got = np.asarray(jax.jit(lambda z, f, u, kw, run=run: run(z, k, u, f, poison=-7, **kw))(
        z, forbidden, u, kw))
    assert not (got == -7).any(), got
    want = topk_sample(z, k, u=u, forbidden=forbidden, impl="reference", **kw)
    np.testing.assert_array_equal(got, want)


def test_mosaic_gpu_many_groups_falls_back_exactly(rng):
  # More groups than the GPU kernel's per-row bitmask holds: the XLA slot scan.
  bsz, n, k = 4, 90, 6
  z, forbidden = perturbed_case(rng, bsz, n, neg_inf=0.0, short_rows=False)
  groups = np.arange(n) % 45
  q = np.tile(np.array([[0, 1]], np.int32), (45, 1))
  q[:3, 0] = 1
  kw = dict(forbidden=forbidden, groups=groups, quotas=q)
  got = topk_sample(z, k, impl="pallas", interpret="gpu", **kw)
  np.testing.assert_array_equal(got, topk_sample(z, k, impl="reference", **kw))


def _pl_probs_full(scores):
  """P(ordering) for every permutation of the n items, float64, keyed by tuple."""
  w = np.exp(np.asarray(scores, np.float64))
  probs = {}
  for perm in itertools.permutations(range(len(w))):
    left, p = w.sum(), 1.0
    for i in perm:
      p *= w[i] / left
      left -= w[i]
    probs[perm] = p
  return probs


def test_pallas_sampler_chi_square(seed):
  # All 24 orderings of n = 4 items, drawn by pl_sample through the Pallas
  # kernel (interpreted), against exact PL probabilities. The same test
  # rejects PL with one score shifted by 0.5, so it can fail.
  rng = np.random.default_rng(seed)
  n, draws = 4, 40_000
  scores = rng.normal(0, 1, n).astype(np.float32)
  out = np.asarray(pl_sample(jax.random.key(seed), np.broadcast_to(scores, (draws, n)), n,
                             impl="pallas", interpret=True))
  perms = list(itertools.permutations(range(n)))
  index = {p: i for i, p in enumerate(perms)}
  observed = np.bincount([index[tuple(r)] for r in out.tolist()], minlength=len(perms))

  def pvalue(s):
    p = _pl_probs_full(s)
    expected = draws * np.array([p[perm] for perm in perms])
    return scipy.stats.chisquare(observed, expected).pvalue

  assert pvalue(scores) > 1e-3, f"seed {seed}, scores {scores}"
  assert pvalue(scores + np.array([0.5, 0, 0, 0])) < 1e-3, f"seed {seed}: can't fail"


@pytest.mark.parametrize("impl,interpret", FAST)
def test_pl_sample_same_ids_for_every_impl(seed, impl, interpret):
  # End to end through the public sampler (interpret="gpu": the Mosaic GPU
  # kernel in the simulator): the same ids as the reference for one key.
  rng = np.random.default_rng(seed)
  n, k = 69, 5
  bsz = 70 if interpret in SIMULATED else 300
  scores = rng.normal(0, 1, (bsz, n)).astype(np.float32)
  scores[rng.random((bsz, n)) < 0.05] = -np.inf
  scores[:, :21] = np.nan_to_num(scores[:, :21], neginf=0.0)
  groups = np.arange(n) % 7
  quotas = np.array([[1, 2]] * 3 + [[0, 1]] * 4)
  key = jax.random.key(seed)
  # (Without quotas the same path is checked by the chi-square test above.)
  want = np.asarray(pl_sample(key, scores, k, groups=groups, quotas=quotas, impl="reference"))
  got = pl_sample(key, scores, k, groups=groups, quotas=quotas, impl=impl, interpret=interpret)
  np.testing.assert_array_equal(got, want, err_msg=f"seed {seed} {impl} {interpret}")


def test_dispatch():
  if jax.default_backend() in ("gpu", "tpu"):
    expected = "pallas"
  else:
    expected = "cpu" if cpu_ffi.available() else "xla"
  assert resolve_impl("auto") == expected
  z = jnp.zeros((1, 3))
  with pytest.raises(InputError, match="interpret=True runs Pallas kernels only"):
    topk_sample(z, 2, impl="xla", interpret=True)
  with pytest.raises(InputError, match="interpret=True runs Pallas kernels only"):
    pl_sample(jax.random.key(0), z, 2, impl="reference", interpret=True)
  with pytest.raises(InputError, match="is not one of"):
    topk_sample(z, 2, impl="triton")
  with pytest.raises(InputError, match="is not one of"):
    topk_sample(z, 2, impl="pallas", interpret="cuda")
  if jax.default_backend() == "cpu":
    with pytest.raises(InputError, match="cannot compile"):
      topk_sample(z, 2, impl="pallas")
  with pytest.raises(InputError, match="out of range"):
    topk_sample(z, 4)
