"""Benchmark: constrained Gumbel-top-k sampling (the topk_sample op).

    python -m benchmarks.topk_sample [--batch=10000] [--rounds=5]

For each case (lottery-like 5 of 69 and 20 of 80 items, B lists per call,
without and with group quotas) times, jitted and warm (median of interleaved
rounds, results blocked on):

  noise       `gumbel_noise(key, (B, n))`: 32 random bits and -log(-log1p(-v))
              per item, the part every implementation shares;
  top_k       plain `lax.top_k(z, k)` on the perturbed scores, no constraints:
              the floor for any exact implementation;
  op/xla      the op on perturbed scores: `lax.top_k`, or the slot scan with
              quotas;
  op/ref      the op's pure-jnp reference (slot-by-slot masked argmax);
  op/cpu      on a CPU: the native kernel (`impl="cpu"`, XLA FFI; see
              `kernels/topk_sample/cpu/topk.cc`); its ids are checked against
              XLA's before timing;
  op/pallas   on a GPU or TPU only: the compiled Pallas kernel (Mosaic GPU or
              Mosaic TPU, `impl="pallas"`); its ids are checked against XLA's
              before timing;
  pl_sample   `pl_sample(key, scores, k, impl=...)`: centering, noise, op,
              with "pallas" on an accelerator and "auto" on a CPU (the native
              kernel when it builds, else XLA); on a CPU also
              `pl_sample/xla`, the same with `impl="xla"`.

and reports sets per second (B / median time). The floor of a sample
(CPU) is max(memory, arithmetic): reading the [B, n] float32 scores and
writing the [B, k] ids at the measured DRAM copy bandwidth, against the two
logs per item of the Gumbel transform at the best measured log throughput
(`pl_log_prob.transcendental_rates`); the 32 random bits per item (threefry
in XLA) are not counted, so the floor is optimistic. On a CPU the Pallas kernels
cannot compile: each runs once per case as a correctness smoke instead (ids
identical to XLA's), the TPU kernel under `interpret=True` on the first 512
rows and the Mosaic GPU kernel in the GPU simulator (`interpret="gpu"`) on
the first 64, untimed (interpreted Pallas says nothing about compiled
speed). Prints Markdown; writes benchmarks/out/topk_sample.json.
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
import jax
import jax.numpy as jnp

from benchmarks import _timing
from luce.kernels.topk_sample import resolve_impl, topk_sample
from luce.sampling import gumbel_noise, pl_sample

SMOKE_ROWS = {True: 512, "gpu": 64}  # interpret mode: rows of the CPU smoke


def cases():
  """(name, n, k, groups, quotas): quotas=None for the unconstrained case."""
  g69 = np.minimum(np.arange(69) // 10, 6)          # decades 0-9, ..., 60-68
  q69 = np.array([[0, 2]] * 6 + [[1, 2]])            # <= 2 per decade, >= 1 of 60-68
  g80 = np.arange(80) // 10                          # 8 groups of 10
  q80 = np.array([[1, 4]] * 8)                       # 1 to 4 from each
  return [("5 of 69", 69, 5, None, None), ("5 of 69 + quotas", 69, 5, g69, q69),
          ("20 of 80", 80, 20, None, None), ("20 of 80 + quotas", 80, 20, g80, q80)]


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=10_000)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--round_seconds", type=float, default=0.3)
  p.add_argument("--out", default="benchmarks/out/topk_sample.json")
  args = p.parse_args()
  b = args.batch
  rng = np.random.default_rng(0)
  key = jax.random.key(0)
  info = _timing.machine()
  print(f"# topk_sample, B = {b}, {info['cpu']}, {info['cores']} cores, "
        f"load {info['loadavg']}, jax {info['versions']['jax']}, {info['date']}\n")
  accel = jax.default_backend() in ("gpu", "tpu")
  if not accel:
    from benchmarks.pl_log_prob import transcendental_rates
    bandwidth = _timing.copy_bandwidth(256)["bytes_per_s_best"]
    log_rate = transcendental_rates()["log"]
  sample_impl = "pallas" if accel else resolve_impl("auto")
  rows = []
  for name, n, k, groups, quotas in cases():
    scores = jnp.asarray(rng.normal(0, 1, (b, n)), jnp.float32)
    kw = {} if quotas is None else {"groups": jnp.asarray(groups, jnp.int32),
                                    "quotas": jnp.asarray(quotas, jnp.int32)}
    z = scores + gumbel_noise(key, (b, n))
    noise = jax.jit(functools.partial(gumbel_noise, shape=(b, n)))
    impls = ("xla", "reference", "pallas") if accel else ("xla", "reference", "cpu")
    op = {impl: jax.jit(functools.partial(topk_sample, k=k, impl=impl, **kw))
          for impl in impls}
    top_k = jax.jit(lambda z: jax.lax.top_k(z, k)[1])
    sample = jax.jit(functools.partial(pl_sample, k=k, impl=sample_impl, **kw))
    fns = {
        "noise": lambda: noise(key).block_until_ready(),
        "top_k": lambda: top_k(z).block_until_ready(),
        "op/xla": lambda: op["xla"](z).block_until_ready(),
        "op/ref": lambda: op["reference"](z).block_until_ready(),
        "pl_sample": lambda: sample(key, scores).block_until_ready(),
    }
    if not accel:
      sample_xla = jax.jit(functools.partial(pl_sample, k=k, impl="xla", **kw))
      fns["op/cpu"] = lambda: op["cpu"](z).block_until_ready()
      fns["pl_sample/xla"] = lambda: sample_xla(key, scores).block_until_ready()
      np.testing.assert_array_equal(np.asarray(op["cpu"](z)), np.asarray(op["xla"](z)))
      np.testing.assert_array_equal(np.asarray(sample(key, scores)),
                                    np.asarray(sample_xla(key, scores)))
    ids = np.asarray(op["xla"](z))
    np.testing.assert_array_equal(ids, np.asarray(op["reference"](z)))
    row = {"case": name, "n": n, "k": k, "batch": b, "pl_sample_impl": sample_impl}
    if accel:
      np.testing.assert_array_equal(np.asarray(op["pallas"](z)), ids)
      fns["op/pallas"] = lambda: op["pallas"](z).block_until_ready()
      row["pallas"] = "compiled, ids match"
    else:
      for mode, smoke_rows in SMOKE_ROWS.items():
        smoke = np.asarray(topk_sample(z[:smoke_rows], k, impl="pallas", interpret=mode, **kw))
        np.testing.assert_array_equal(smoke, ids[:smoke_rows])
      row["pallas"] = "interpret smoke, ids match"
    t = _timing.time_interleaved(fns, rounds=args.rounds, round_seconds=args.round_seconds)
    for f, r in t.items():
      row[f] = {**r, "sets_per_s": b / r["median_s"]}
    if not accel:
      memory = (4 * b * n + 4 * b * k) / bandwidth
      logs = 2 * b * n / log_rate
      row["floor"] = {"memory_s": memory, "logs_s": logs, "floor_s": max(memory, logs),
                      "bandwidth": bandwidth, "log_rate": log_rate}
    rows.append(row)
  cols = (["noise", "top_k", "op/xla", "op/ref"] + (["op/pallas"] if accel else ["op/cpu"])
          + ["pl_sample"] + ([] if accel else ["pl_sample/xla"]))
  floor_head = "" if accel else " floor of a sample | pl_sample % of floor |"
  print(f"| case | {' | '.join(c if c != 'pl_sample' else f'pl_sample ({sample_impl})' for c in cols)}"
        " | ref / xla |" + floor_head)
  print("| --- |" + " --- |" * (len(cols) + 1 + (0 if accel else 2)))
  for r in rows:
    cell = lambda f: f"{r[f]['median_s'] * 1e3:.2f} ms ({r[f]['sets_per_s'] / 1e6:.2f} M/s)"
    floor = ""
    if not accel:
      fl = r["floor"]
      floor = (f" {fl['floor_s'] * 1e3:.2f} ms (memory {fl['memory_s'] * 1e3:.2f}, logs "
               f"{fl['logs_s'] * 1e3:.2f}) | {100 * fl['floor_s'] / r['pl_sample']['median_s']:.0f}% |")
    print(f"| {r['case']} | {' | '.join(cell(c) for c in cols)} "
          f"| {r['op/ref']['median_s'] / r['op/xla']['median_s']:.1f}× |" + floor)
  if accel:
    print(f"\nPallas compiled on {jax.default_backend()}: ids identical to XLA in every case.")
  else:
    print("\nPallas on CPU (not timed): ids identical to XLA in every case, "
          + ", ".join(f"interpret={m!r} on the first {r} rows" for m, r in SMOKE_ROWS.items())
          + ".")
    fl = rows[0]["floor"]
    print(f"Floor: DRAM copy bandwidth {fl['bandwidth'] / 1e9:.1f} GB/s (256 MiB), log throughput "
          f"{fl['log_rate'] / 1e9:.2f} G/s; the random bits are not counted.")
  _timing.write_json({"machine": info, "git": _timing.git_state(), "args": vars(args),
                      "rows": rows}, args.out)


if __name__ == "__main__":
  main()
