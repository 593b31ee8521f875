"""Benchmark: the set likelihood's quadrature (the pl_set op), value and gradient.

    python -m benchmarks.pl_set [--batch=1024] [--ks=20,100,300] [--rounds=5]

For each set size k, B events of b_i = s_i − log R (normal scores, a few
padded slots per row), times jitted and warm (median of interleaved rounds,
results blocked on) the value and gradient of Σ_events log P under

  xla         `quadrature(..., impl="xla")`: rows × nodes × k in memory
              (skipped past B · nodes · k = 2e9);
  reference   the plain formula (only where B · nodes · k <= 5e7);
  pallas      on a GPU or TPU only: the compiled Pallas kernels
              (`impl="pallas"`: Mosaic GPU or Mosaic TPU by backend), value
              and gradient checked against XLA before timing. On a GPU, sets
              larger than the Mosaic GPU kernels hold (`MAX_K`) are skipped.

and reports events per second. On a CPU the Pallas kernels cannot compile:
each k gets an untimed correctness smoke instead, the TPU kernel under
`interpret=True` on the first 64 rows and the Mosaic GPU kernel in the GPU
simulator (`interpret="gpu"`) on the first 8 (where k fits it).
Prints Markdown; writes benchmarks/out/pl_set.json.
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
import jax
import jax.numpy as jnp

from benchmarks import _timing
from luce.kernels.pl_set import mosaic_gpu, quadrature
from luce.kernels.pl_set.xla import grid

SMOKE_ROWS = {True: 64, "gpu": 8}
REFERENCE_MAX = 5e7
XLA_MAX = 2e9


@functools.partial(jax.jit, static_argnames=("impl", "interpret"))
def value_and_grad(b, valid, *, impl, interpret=False):
  return jax.value_and_grad(
      lambda x: jnp.sum(quadrature(x, valid, impl=impl, interpret=interpret)))(b)


def inputs(rng, bsz, k):
  b = rng.normal(size=(bsz, k)) * 1.5 - np.log(3 * k)
  valid = np.ones((bsz, k), bool)
  valid[::3, k - max(1, k // 10):] = False
  return jnp.asarray(b, jnp.float32), jnp.asarray(valid)


def check(b, valid, **kw):
  v, g = value_and_grad(b, valid, **kw)
  v0, g0 = value_and_grad(b, valid, impl="xla")
  np.testing.assert_allclose(float(v), float(v0), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(g), np.asarray(g0), rtol=1e-3, atol=1e-5)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=1024)
  p.add_argument("--ks", default="20,100,300")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--round_seconds", type=float, default=0.3)
  p.add_argument("--out", default="benchmarks/out/pl_set.json")
  args = p.parse_args()
  info = _timing.machine()
  backend = jax.default_backend()
  accel = backend in ("gpu", "tpu")
  rng = np.random.default_rng(0)
  rows = []
  for k in map(int, args.ks.split(",")):
    b, valid = inputs(rng, args.batch, k)
    nodes = grid(k)[2]
    run = lambda **kw: (lambda: jax.block_until_ready(value_and_grad(b, valid, **kw)))
    fns = {}
    if args.batch * nodes * k <= XLA_MAX:
      fns["xla"] = run(impl="xla")
    if args.batch * nodes * k <= REFERENCE_MAX:
      fns["reference"] = run(impl="reference")
    row = {"k": k, "nodes": nodes}
    if accel:
      if backend == "gpu" and not mosaic_gpu.supports(k):
        row["pallas"] = f"skipped: k > MAX_K={mosaic_gpu.MAX_K}"
      else:
        check(b[:256], valid[:256], impl="pallas")  # XLA at full B may not fit
        fns["pallas"] = run(impl="pallas")
        row["pallas"] = "compiled, matches XLA"
    else:
      done = []
      for mode, smoke_rows in SMOKE_ROWS.items():
        if mode == "gpu" and not mosaic_gpu.supports(k):
          continue
        check(b[:smoke_rows], valid[:smoke_rows], impl="pallas", interpret=mode)
        done.append(f"interpret={mode!r} on {smoke_rows} rows")
      row["pallas"] = "smoke, matches XLA: " + ", ".join(done)
    t = _timing.time_interleaved(fns, rounds=args.rounds, round_seconds=args.round_seconds)
    for f, r in t.items():
      row[f] = {**r, "events_per_s": args.batch / r["median_s"]}
    rows.append(row)
  cols = ["xla", "reference", "pallas"]
  print(f"B = {args.batch} events, value and gradient, {backend}\n")
  print("| k | nodes | " + " | ".join(cols) + " |")
  print("| --- | --- |" + " --- |" * len(cols))
  for r in rows:
    def cell(f):
      if isinstance(r.get(f), dict):
        return f"{r[f]['median_s'] * 1e3:.2f} ms ({r[f]['events_per_s']:.3g} /s)"
      return r.get(f, "–")
    print(f"| {r['k']} | {r['nodes']} | " + " | ".join(cell(c) for c in cols) + " |")
  _timing.write_json({"machine": info, "git": _timing.git_state(), "args": vars(args),
                      "rows": rows}, args.out)


if __name__ == "__main__":
  main()
