"""Benchmark: value+grad of `luce.pl_log_prob` against its peers (CPU or GPU).

    python -m benchmarks.pl_log_prob [--shapes=1024x64x64,256x1024x1024,64x16384x10]

On a GPU (JAX's default backend) the default shapes are 16384x1024x1024 and
16384x1024x16 (B·n = 2^24); "auto" is then the Mosaic GPU Pallas kernel, and
the peers are "xla", rax, and allRank's ListMLE in torch on CUDA (when torch
sees a GPU). The floor there is memory only: the same bytes over the device's
copy bandwidth, measured in the same run (a jitted [B, n] float32 copy).

Each shape is BxNxK: B lists over n items, ranking k items (k = n: full
rankings). Times the jitted value and gradient of Σ_lists −log P (warm, median
of interleaved rounds, results blocked on) for

  luce        `luce.pl_log_prob` with its default impl ("auto": on CPU the
              native FFI kernel "cpu" when it builds, else "xla"), and "xla"
              and "reference"; every ratio is against the default,
  rax         `rax.listmle_loss(scores, labels=−position, reduce_fn=jnp.sum)`,
  torch       ListMLE as allRank writes it (gather in ranking order, subtract
              the max, reversed cumsum of exp, log(· + 1e-10)), with backward,
              one intra-op thread per core and (as a control) one thread,
  naive       one masked logsumexp per position (jnp, Python loop; small k).

Checks every peer's per-list value and gradient against luce's on the same
inputs, shows allRank's 1e-10 floor going wrong at scores spread ±100, and
compares each time with a floor: bytes moved over a measured copy bandwidth
and the exp/log a value+grad needs over a measured exp/log throughput.
Prints Markdown tables; writes benchmarks/out/pl_log_prob.json.
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import numpy as np
import jax
import jax.numpy as jnp

from benchmarks import _timing

DEFAULT_SHAPES = "1024x64x64,256x1024x1024,64x16384x10"
ACCEL_SHAPES = "16384x1024x1024,16384x1024x16"   # B·n = 2^24
NAIVE_MAX_K = 64         # the naive loop unrolls k stages under jit
REFERENCE_MAX_ELEMS = 3e8  # "reference" materialises B·k·n floats (and grads)
TORCH_EPS = 1e-10        # allRank's DEFAULT_EPS


# ---------------------------------------------------------------- inputs

def make_inputs(b, n, k, rng, spread=None):
  """scores float32[b, n] (N(0, 1), or uniform ±spread) and ranking int32[b, k].

  The ranking is a Plackett-Luce draw under the scores (Gumbel-max), so the
  log-probabilities are those of plausible data, not of random permutations.
  """
  if spread is None:
    s = rng.standard_normal((b, n)).astype(np.float32)
  else:
    s = rng.uniform(-spread, spread, (b, n)).astype(np.float32)
  keys = s.astype(np.float64) + rng.gumbel(size=(b, n))
  if k < n:
    top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
    r = np.take_along_axis(top, order, axis=1)
  else:
    r = np.argsort(-keys, axis=1)
  return s, r.astype(np.int32)


def full_order(r, n):
  """int64[b, n]: the ranking followed by the items it never picked."""
  b, k = r.shape
  if k == n:
    return r.astype(np.int64)
  left = np.ones((b, n), bool)
  left[np.arange(b)[:, None], r] = False
  rest = np.nonzero(left)[1].reshape(b, n - k)
  return np.concatenate([r, rest], axis=1).astype(np.int64)


def rax_labels(r, n):
  """float32[b, n]: −position of each picked item; unpicked items tie at −k."""
  b, k = r.shape
  y = np.full((b, n), -float(k), np.float32)
  y[np.arange(b)[:, None], r] = -np.arange(k, dtype=np.float32)
  return y


def exact_nll(s, r):
  """float64 −log P per list: gather in order, shift, reversed cumsum, log.

  In float64 this direct form is exact to ~1e-15 for scores spread up to a few
  hundred nats (e^{−600} is still a normal float64).
  """
  n, k = s.shape[1], r.shape[1]
  x = np.take_along_axis(s.astype(np.float64), full_order(r, n), axis=1)
  x = x - x.max(axis=1, keepdims=True)
  tail = np.cumsum(np.exp(x)[:, ::-1], axis=1)[:, ::-1]
  return np.sum(np.log(tail[:, :k]) - x[:, :k], axis=1)


# ---------------------------------------------------------------- losses

def luce_nll(s, r, impl):
  import luce
  return -luce.pl_log_prob(s, r, impl=impl)


def rax_nll(s, y, where=None):
  import rax
  return rax.listmle_loss(s, y, where=where, reduce_fn=None)


def naive_nll(s, r):
  """One masked logsumexp per position over the items still in the race."""
  b, k = r.shape
  rows = jnp.arange(b)
  left = jnp.ones(s.shape, bool)
  nll = jnp.zeros(b, s.dtype)
  for j in range(k):
    nll = nll + jax.nn.logsumexp(jnp.where(left, s, -jnp.inf), axis=-1) - s[rows, r[:, j]]
    left = left.at[rows, r[:, j]].set(False)
  return nll


def torch_listmle(scores, order, k):
  """allRank's listMLE on a given order, per list; only the first k stages.

  allRank sorts y_true to get `order`; here the ranking is given (ties
  impossible), followed by the unpicked items, whose stages are dropped for
  top-k lists (they stay in every denominator, as Plackett-Luce needs).
  """
  import torch
  x = torch.gather(scores, 1, order)
  top, _ = x.max(dim=1, keepdim=True)
  x = x - top
  cumsums = torch.cumsum(x.exp().flip(dims=[1]), dim=1).flip(dims=[1])
  loss = torch.log(cumsums + TORCH_EPS) - x
  return loss[:, :k].sum(dim=1)


def torch_listmle_cuda_value_and_grad(s_np, order, k):
  """(Σ loss, ∂/∂scores) of allRank's ListMLE by torch autograd on CUDA; the
  call synchronises, so its wall time is the GPU's."""
  import torch
  s = torch.from_numpy(s_np).cuda().requires_grad_(True)
  o = torch.from_numpy(order).cuda()

  def call():
    loss = torch_listmle(s, o, k).sum()
    (g,) = torch.autograd.grad(loss, s)
    torch.cuda.synchronize()
    return loss, g
  return call, (lambda: torch_listmle(s.detach(), o, k).cpu().numpy())


def accelerator() -> bool:
  return jax.default_backend() in ("gpu", "tpu")


def torch_cuda() -> bool:
  try:
    import torch
    return bool(torch.cuda.is_available())
  except ImportError:
    return False


# ---------------------------------------------------------------- runners

def jax_value_and_grad(per_list):
  """Jitted (Σ per_list, ∂/∂scores) as a zero-argument call on fixed inputs."""
  f = jax.jit(jax.value_and_grad(lambda s, *a: jnp.sum(per_list(s, *a))))
  return f


def torch_value_and_grad(s_np, order, k, threads):
  """(Σ loss, ∂/∂scores) by torch autograd with `threads` intra-op threads."""
  import torch
  s = torch.from_numpy(s_np).requires_grad_(True)
  o = torch.from_numpy(order)

  def call():
    if torch.get_num_threads() != threads:
      torch.set_num_threads(threads)
    loss = torch_listmle(s, o, k).sum()
    (g,) = torch.autograd.grad(loss, s)
    return float(loss.detach()), g.numpy()
  return call


def max_rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))


def grad_rel(g, g_ref):
  g, g_ref = np.asarray(g, np.float64), np.asarray(g_ref, np.float64)
  return float(np.max(np.abs(g - g_ref)) / np.max(np.abs(g_ref)))


# ---------------------------------------------------------------- floor

def transcendental_rates(elems=1 << 16):
  """exp and log results per second on all cores: the best of XLA, numpy, torch.

  Each runs on a 256 KiB float32 array that stays in cache, so only the
  arithmetic counts. XLA: a jitted loop of `sum(exp(x + c))` (XLA spreads it
  over its own threads); numpy and torch (one intra-op thread): `exp(x,
  out=y)` in one Python thread per core, each on its own array. Rates use the
  fastest repeat, since a floor should not be raised by other processes'
  load; the fastest library counts, so the floor is not set by a slow one.
  """
  import torch
  threads = _timing.cores()
  x = np.random.default_rng(0).uniform(0.5, 2.0, elems).astype(np.float32)
  reps = 64

  def xla_rate(fn):
    @jax.jit
    def many(x):
      return jax.lax.fori_loop(
          0, 8 * reps, lambda i, acc: acc + jnp.sum(fn(x + i.astype(x.dtype) * 1e-7)), 0.0)
    xj = jnp.asarray(x)
    t = _timing.time_call(lambda: many(xj).block_until_ready(), min_repeats=5,
                          min_seconds=0.5)
    return elems * 8 * reps / t["min_s"]

  def threaded_rate(fn, xs, ys):
    def one(i):
      for _ in range(reps):
        fn(xs[i], out=ys[i])
    t = _timing.time_call(lambda: _timing.parallel(one, threads), min_repeats=5,
                          min_seconds=0.5)
    return threads * elems * reps / t["min_s"]

  xs = [x.copy() for _ in range(threads)]
  ys = [np.empty_like(a) for a in xs]
  txs = [torch.from_numpy(a) for a in xs]
  tys = [torch.from_numpy(a) for a in ys]
  saved = torch.get_num_threads()
  torch.set_num_threads(1)
  try:
    rates = {"exp_xla": xla_rate(jnp.exp), "log_xla": xla_rate(jnp.log),
             "exp_numpy": threaded_rate(np.exp, xs, ys),
             "log_numpy": threaded_rate(np.log, xs, ys),
             "exp_torch": threaded_rate(torch.exp, txs, tys),
             "log_torch": threaded_rate(torch.log, txs, tys)}
  finally:
    torch.set_num_threads(saved)
  for f in ("exp", "log"):
    rates[f] = max(v for k, v in rates.items() if k.startswith(f + "_"))
  return rates


def device_copy_seconds(nbytes: int, repeats: int = 21) -> dict:
  """Best and median time of a jitted copy (x + 1) of `nbytes` of float32 on
  the default device: reads and writes every byte, as a kernel streaming the
  scores in and the gradient out must."""
  x = jnp.ones((max(nbytes // 4, 1),), jnp.float32)
  f = jax.jit(lambda x: x + 1.0)
  t = _timing.time_call(lambda: f(x).block_until_ready(), warmup=3, min_repeats=repeats,
                        min_seconds=0.5)
  return {"threads": 0, "min_s": t["min_s"], "median_s": t["median_s"]}


def floor_seconds(b, n, k, rates):
  """Lower bound on a value+grad: max(memory time, transcendental time).

  Memory: read scores (4 B·n) and ranking (4 B·k), write the gradient
  (4 B·n), timed as a numpy copy of the scores-sized array (measured now, at
  this size, so from cache when the benchmark's inputs fit there too), scaled
  by the ranking's extra bytes. Transcendentals: n exps (e^{s_i}, reused by
  the gradient) and k logs (one per stage) per list; e^{−D_j} = 1/Z_j needs
  no transcendental.
  """
  moved = 4 * b * n + 4 * b * k + 4 * b * n
  if rates is None:   # an accelerator: memory only, at the device's copy bandwidth
    copy = device_copy_seconds(4 * b * n)
    mem = copy["min_s"] * moved / (8 * b * n)
    # What a custom_vjp value+grad must move: the forward reads the scores, the
    # backward reads them again and writes the gradient (12 B per item), plus
    # the ranking read twice and the [B, k] residual D written and read back.
    vjp = 12 * b * n + 16 * b * k
    return {"bytes": moved, "copy": copy, "memory_s": mem, "exp": b * n, "log": b * k,
            "transcendental_s": 0.0, "floor_s": mem, "vjp_bytes": vjp,
            "copy_bytes_per_s": 8 * b * n / copy["min_s"]}
  copy = _timing.copy_seconds(4 * b * n, repeats=21)
  mem = copy["min_s"] * moved / (8 * b * n)
  trans = b * n / rates["exp"] + b * k / rates["log"]
  return {"bytes": moved, "copy": copy, "memory_s": mem, "exp": b * n, "log": b * k,
          "transcendental_s": trans, "floor_s": max(mem, trans)}


# ---------------------------------------------------------------- main

def bench_shape(b, n, k, rng, args, log):
  s_np, r_np = make_inputs(b, n, k, rng)
  s, r = jnp.asarray(s_np), jnp.asarray(r_np)
  y = jnp.asarray(rax_labels(r_np, n))
  order = full_order(r_np, n)
  exact = exact_nll(s_np, r_np)

  fns, skipped, per_list = {}, {}, {}
  vg = {}

  def add_jax(name, per_list_fn, *a):
    f = jax_value_and_grad(per_list_fn)
    t0 = time.perf_counter()
    jax.block_until_ready(f(s, *a))
    log(f"  {name}: compiled + first call {time.perf_counter() - t0:.2f} s")
    fns[name] = lambda: jax.block_until_ready(f(s, *a))
    vg[name] = lambda: f(s, *a)
    per_list[name] = lambda: np.asarray(jax.jit(per_list_fn)(s, *a))

  for impl, name in luce_rows(args):
    if impl == "reference" and b * n * k > REFERENCE_MAX_ELEMS:
      skipped[name] = (
          f"materialises B·k·n = {b * n * k:.2g} floats per array (> {REFERENCE_MAX_ELEMS:.0e})")
      continue
    add_jax(name, functools.partial(luce_nll, impl=impl), r)
  add_jax("rax", rax_nll, y)
  import torch
  if accelerator():
    if torch_cuda():
      name = "torch (allRank), CUDA"
      tcall, tvalues = torch_listmle_cuda_value_and_grad(s_np, order, k)
      t0 = time.perf_counter()
      tcall()
      log(f"  {name}: first call {time.perf_counter() - t0:.2f} s")
      fns[name] = tcall
      vg[name] = lambda: (None, tcall()[1].cpu().numpy())
      per_list[name] = tvalues
    else:
      skipped["torch (allRank)"] = "torch sees no GPU"
  # One thread per core, as asked, and one thread: on a shared machine
  # torch's OpenMP threads wait on each other whenever one is descheduled.
  for threads in ([] if accelerator() else sorted({_timing.cores(), 1}, reverse=True)):
    name = f"torch (allRank), {threads} thread{'s' if threads > 1 else ''}"
    tcall = torch_value_and_grad(s_np, order, k, threads)
    t0 = time.perf_counter()
    tcall()
    log(f"  {name}: first call {time.perf_counter() - t0:.2f} s")
    fns[name] = vg[name] = tcall
    per_list[name] = lambda: torch_listmle(
        torch.from_numpy(s_np), torch.from_numpy(order), k).numpy()
  if k <= NAIVE_MAX_K:
    add_jax("naive loop", naive_nll, r)
  else:
    skipped["naive loop"] = (
        f"k = {k} stages unrolled under jit; O(B·n·k) = {b * n * k:.2g} exps")

  log(f"  timing {list(fns)}")
  times = _timing.time_interleaved(fns, rounds=args.rounds, round_seconds=args.round_seconds)

  # Agreement with luce on the same inputs: per-list values and gradients.
  base = baseline(args)
  ref_val = per_list[base]()
  ref_grad = np.asarray(vg[base]()[1])
  checks = {base: {"value_rel_vs_exact": max_rel(ref_val, exact)}}
  for name in fns:
    if name == base:
      continue
    val = per_list[name]()
    grad = np.asarray(vg[name]()[1])
    note = ""
    if name == "rax" and k < n:
      # rax's ListMLE also scores the unpicked items' order (tied at −k); its
      # tail is ListMLE over the unpicked items alone, so subtract that. Both
      # terms are ~n·log n: in float32 the difference would keep few digits.
      with jax.enable_x64(True):
        s64, y64 = jnp.asarray(s_np, jnp.float64), jnp.asarray(y, jnp.float64)
        unpicked = y64 == -float(k)

        def top_k(s, y, unpicked):
          return rax_nll(s, y, None) - rax_nll(s, y, unpicked)
        val = np.asarray(jax.jit(top_k)(s64, y64, unpicked))
        grad = np.asarray(jax.jit(jax.grad(lambda *a: jnp.sum(top_k(*a))))(s64, y64, unpicked))
      note = ("rax scores all n positions (the unpicked items tied at −k): checked in "
              "float64 as its loss minus its unpicked-tail stages")
    checks[name] = {"value_rel_vs_luce": max_rel(val, ref_val),
                    "grad_rel_vs_luce": grad_rel(grad, ref_grad),
                    "value_rel_vs_exact": max_rel(val, exact)}
    if note:
      checks[name]["note"] = note
  return {"shape": {"B": b, "n": n, "k": k}, "times": times, "checks": checks,
          "skipped": skipped}


def extreme_check(rng):
  """allRank's 1e-10 floor vs luce at scores uniform in ±100 (B=1024, n=64)."""
  import torch
  s_np, r_np = make_inputs(1024, 64, 64, rng, spread=100.0)
  exact = exact_nll(s_np, r_np)
  luce_val = np.asarray(luce_nll(jnp.asarray(s_np), jnp.asarray(r_np), "auto"))
  xla_val = np.asarray(luce_nll(jnp.asarray(s_np), jnp.asarray(r_np), "xla"))
  torch_val = torch_listmle(torch.from_numpy(s_np), torch.from_numpy(r_np.astype(np.int64)),
                            64).numpy()
  rax_val = np.asarray(rax_nll(jnp.asarray(s_np), jnp.asarray(rax_labels(r_np, 64))))
  worst = int(np.argmax(np.abs(torch_val - exact)))
  return {"shape": {"B": 1024, "n": 64, "k": 64, "scores": "uniform ±100"},
          "luce_rel_vs_exact": max_rel(luce_val, exact),
          "luce_xla_rel_vs_exact": max_rel(xla_val, exact),
          "rax_rel_vs_exact": max_rel(rax_val, exact),
          "torch_rel_vs_exact": max_rel(torch_val, exact),
          "torch_worst_list": {"exact": float(exact[worst]), "torch": float(torch_val[worst]),
                               "luce": float(luce_val[worst])}}


def fmt_ms(sec):
  ms = 1e3 * sec
  return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def luce_rows(args):
  """[(impl, row name)] for --luce_impls; "auto" is named by what it runs, and
  an impl that "auto" already runs is not timed twice."""
  from luce.kernels.pl_nll import resolve_impl
  rows, seen = [], set()
  for impl in args.luce_impls.split(","):
    if impl == "cpu" and jax.default_backend() != "cpu":
      continue   # the native kernel runs on the CPU backend only
    resolved = resolve_impl(impl)
    if resolved in seen:
      continue
    seen.add(resolved)
    rows.append((impl, f"luce default ({resolved})" if impl == "auto" else f"luce {impl}"))
  return rows


def baseline(args):
  """The row every ratio and check is against: the first of --luce_impls."""
  return luce_rows(args)[0][1]


def markdown(results, bandwidth, rates, base_name):
  lines = []
  for res in results:
    b, n, k = res["shape"]["B"], res["shape"]["n"], res["shape"]["k"]
    fl = res["floor"]
    base = res["times"][base_name]["median_s"]
    base_min = res["times"][base_name]["min_s"]
    lines.append(f"**B={b}, n={n}, k={k}** ({'full ranking' if k == n else f'top-{k}'}); "
                 f"floor {fmt_ms(fl['floor_s'])} ms = max(memory {fmt_ms(fl['memory_s'])} ms "
                 f"for {fl['bytes'] / 2**20:.2f} MiB, exp/log {fmt_ms(fl['transcendental_s'])} ms "
                 f"for {fl['exp'] / 1e6:.3g}M exp + {fl['log'] / 1e6:.3g}M log)")
    lines.append("")
    extra = " achieved bandwidth (luce) |" if rates is None else ""
    lines.append("| impl | ms (median) | IQR ms | min ms | × luce (median) | × luce (min) | "
                 "% of floor (median / min) | value rel. diff vs luce | grad rel. diff vs luce |"
                 + extra)
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
                 + (" ---: |" if extra else ""))
    for name, t in res["times"].items():
      c = res["checks"][name]
      vdiff = (f"{c['value_rel_vs_luce']:.1e}" if "value_rel_vs_luce" in c else
               f"(vs float64: {c['value_rel_vs_exact']:.1e})")
      gdiff = f"{c['grad_rel_vs_luce']:.1e}" if "grad_rel_vs_luce" in c else "—"
      if "note" in c:
        vdiff += "*"
      lines.append(
          f"| {name} | {fmt_ms(t['median_s'])} | {fmt_ms(t['q25_s'])}–{fmt_ms(t['q75_s'])} | "
          f"{fmt_ms(t['min_s'])} | {t['median_s'] / base:.2f} | {t['min_s'] / base_min:.2f} | "
          f"{100 * fl['floor_s'] / t['median_s']:.1f}% / {100 * fl['floor_s'] / t['min_s']:.1f}% | "
          f"{vdiff} | {gdiff} |")
      if "vjp_bytes" in fl and name.startswith("luce"):
        rate = fl["vjp_bytes"] / t["median_s"]
        lines[-1] += (f" {rate / 1e9:.0f} GB/s = {100 * rate / fl['copy_bytes_per_s']:.0f}% of "
                      f"copy bandwidth |")
      elif "vjp_bytes" in fl:
        lines[-1] += " — |"
    for name, why in res["skipped"].items():
      lines.append(f"| {name} | skipped: {why} | | | | | | | |")
    notes = [c["note"] for c in res["checks"].values() if "note" in c]
    lines.append("")
    if notes:
      lines.append("\\* " + "; ".join(notes) + ".")
      lines.append("")
  if rates is None:
    lines.append(
        f"Floor: memory only = (read scores + ranking, write the gradient) at the "
        f"device's copy bandwidth, measured in this run as the fastest jitted [B, n] "
        f"float32 copy (x + 1); at 256 MiB: {bandwidth / 1e9:.0f} GB/s. "
        f"% of floor = the share of that bandwidth a value+grad reaches. A custom_vjp "
        f"value+grad reads the scores twice (forward, backward) and writes the gradient: "
        f"12 B per item against the floor's 8, so it tops out at 67% of floor; the last "
        f"column of luce's rows is the bandwidth it reaches on those bytes (plus the "
        f"ranking and the [B, k] residual) as a share of the measured copy bandwidth.")
    return "\n".join(lines)
  lines.append(
      f"Floor: memory = the fastest numpy copy of the [B, n] float32 scores (1 thread or "
      f"one per core, at that size, so from cache where it fits), scaled for the ranking's "
      f"bytes; DRAM copy bandwidth for scale: {bandwidth / 1e9:.1f} GB/s (256 MiB). "
      f"Transcendentals = n exp + k log per list at the best measured rate on "
      f"{_timing.cores()} cores: exp {rates['exp'] / 1e9:.2f} G/s, log {rates['log'] / 1e9:.2f} G/s "
      f"(exp: XLA {rates['exp_xla'] / 1e9:.2f}, numpy {rates['exp_numpy'] / 1e9:.2f}, "
      f"torch {rates['exp_torch'] / 1e9:.2f}; log: XLA {rates['log_xla'] / 1e9:.2f}, "
      f"numpy {rates['log_numpy'] / 1e9:.2f}, torch {rates['log_torch'] / 1e9:.2f} G/s).")
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--shapes", default=None,
                 help=f"comma-separated BxNxK (default {DEFAULT_SHAPES} on CPU, "
                      f"{ACCEL_SHAPES} on GPU/TPU)")
  p.add_argument("--rounds", type=int, default=7)
  p.add_argument("--round_seconds", type=float, default=0.3)
  p.add_argument("--luce_impls", default="auto,xla,cpu,reference",
                 help="luce impls to time; the first is the baseline of the ratios")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="benchmarks/out/pl_log_prob.json")
  args = p.parse_args()

  def log(msg):
    print(msg, flush=True)

  import torch
  torch.set_num_threads(_timing.cores())
  info = _timing.machine(("jax", "jaxlib", "numpy", "torch", "rax", "choix"))
  info["torch_threads"] = torch.get_num_threads()
  info["jax_devices"] = [str(d) for d in jax.devices()]
  info["git"] = _timing.git_state()
  log(f"machine: {info}")

  if args.shapes is None:
    args.shapes = ACCEL_SHAPES if accelerator() else DEFAULT_SHAPES
  info["torch_cuda"] = torch_cuda()
  if accelerator():
    t = device_copy_seconds(256 * 2**20)
    bw = {"array_mib": 256, "threads": 0, "device": str(jax.devices()[0]),
          "bytes_per_s_best": 2 * 256 * 2**20 / t["min_s"],
          "bytes_per_s_median": 2 * 256 * 2**20 / t["median_s"]}
    rates = None
    log(f"device copy bandwidth {bw['bytes_per_s_best'] / 1e9:.0f} GB/s (256 MiB, jitted x + 1)")
  else:
    bw = _timing.copy_bandwidth(256)
    rates = transcendental_rates()
    log(f"DRAM copy bandwidth {bw['bytes_per_s_best'] / 1e9:.1f} GB/s; rates "
        + ", ".join(f"{k} {v / 1e9:.2f} G/s" for k, v in rates.items()))

  rng = np.random.default_rng(args.seed)
  results = []
  for spec in args.shapes.split(","):
    b, n, k = (int(v) for v in spec.split("x"))
    log(f"B={b} n={n} k={k}")
    res = bench_shape(b, n, k, rng, args, log)
    res["floor"] = floor_seconds(b, n, k, rates)
    results.append(res)
    floor = res["floor"]["floor_s"]
    for name, t in res["times"].items():
      log(f"  {name}: {1e3 * t['median_s']:.3f} ms ({100 * floor / t['median_s']:.1f}% of the "
          f"floor {1e3 * floor:.3f} ms at median, {100 * floor / t['min_s']:.1f}% at min)  "
          f"{res['checks'][name]}")
  extreme = extreme_check(rng)
  info["loadavg_end"] = os.getloadavg()

  table = markdown(results, bw["bytes_per_s_best"], rates, baseline(args))
  print()
  print(table)
  print()
  w = extreme["torch_worst_list"]
  print(f"Scores uniform in ±100 (B=1024, n=64, full rankings drawn from PL), max relative "
        f"error vs float64: luce default {extreme['luce_rel_vs_exact']:.1e}, luce xla "
        f"{extreme['luce_xla_rel_vs_exact']:.1e}, rax "
        f"{extreme['rax_rel_vs_exact']:.1e}, torch (allRank) {extreme['torch_rel_vs_exact']:.1e} "
        f"(worst list: exact {w['exact']:.2f}, torch {w['torch']:.2f}, luce {w['luce']:.2f}).")
  _timing.write_json({"machine": info, "bandwidth": bw, "rates": rates,
                      "results": results, "extreme": extreme, "markdown": table},
                     args.out)


if __name__ == "__main__":
  main()
