"""Benchmark: the tie-model fit `luce.fit_pl_tied` against the untied `luce.fit_pl`.

    python -m benchmarks.fit_ties [--rankings=100000] [--items=200] [--k=5] [--max_tie_order=2]

Draws `--rankings` top-k lists with ties of `--items` items from the
Davidson-Luce model (`luce.sample_pl_tied`, known log-strengths θ ~ N(0, 1)
and log δ_d = −4 for d = 2..D: with 200 items about 2 positions in 5 are tied), then times, cold (first call, compile
included) and warm (median of the next calls), `luce.fit_pl` on the lists
with ties broken by list order and `luce.fit_pl_tied` on the lists with
their ties. Prints both times and their ratio (the issue asks for the tie
fit within 3× of the untied one) and writes benchmarks/out/fit_ties.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from benchmarks import _timing


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rankings", type=int, default=100_000)
  p.add_argument("--items", type=int, default=200)
  p.add_argument("--k", type=int, default=5)
  p.add_argument("--max_tie_order", type=int, default=2)
  p.add_argument("--log_tie", type=float, default=-4.0)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="benchmarks/out/fit_ties.json")
  args = p.parse_args()

  info = _timing.machine(("jax", "jaxlib", "numpy"))
  info["git"] = _timing.git_state()
  info["loadavg_start"] = os.getloadavg()
  print(f"machine: {info}", flush=True)
  import jax
  import jax.numpy as jnp
  import luce

  rng = np.random.default_rng(args.seed)
  n, m, big_d = args.items, args.rankings, args.max_tie_order
  theta = rng.normal(0.0, 1.0, n)
  theta -= theta.mean()
  log_tie = np.full(big_d - 1, args.log_tie)
  t0 = time.perf_counter()
  key = jax.random.key(args.seed)
  parts = []
  for start in range(0, m, 20_000):
    key, sub = jax.random.split(key)
    parts.append(luce.sample_pl_tied(sub, jnp.asarray(theta, jnp.float32),
                                     jnp.asarray(log_tie, jnp.float32), min(20_000, m - start),
                                     k=args.k))
  rankings = np.concatenate([np.asarray(r) for r, _ in parts])
  tied = np.concatenate([np.asarray(t) for _, t in parts])
  # A list that is one tied block orders nothing (fit_pl_tied refuses it): drop those.
  blocks = ((rankings >= 0) & ~tied).sum(axis=1)
  keep = blocks >= 2
  rankings, tied = rankings[keep], tied[keep]
  sizes = np.diff(np.flatnonzero(np.concatenate([~tied | (rankings < 0),
                                                 np.ones((len(tied), 1), bool)], axis=1)))
  print(f"{len(rankings)} top-{args.k} lists with ties (D = {big_d}) of {n} items drawn in "
        f"{time.perf_counter() - t0:.1f} s; {int(tied.sum())} tied positions, "
        f"{int((~keep).sum())} one-block lists dropped", flush=True)

  def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      out = fn()
      warm.append(time.perf_counter() - t0)
    return out, cold, warm

  plain, plain_cold, plain_warm = timed(lambda: luce.fit_pl(rankings, n))
  print(f"fit_pl (ties broken by list order): cold {plain_cold:.2f} s, warm "
        f"{', '.join(f'{w:.2f}' for w in plain_warm)} s, {plain.n_iter} Newton iterations",
        flush=True)
  tie_fit, tie_cold, tie_warm = timed(
      lambda: luce.fit_pl_tied(rankings, n, tied=tied, max_tie_order=big_d))
  print(f"fit_pl_tied (D = {big_d}): cold {tie_cold:.2f} s, warm "
        f"{', '.join(f'{w:.2f}' for w in tie_warm)} s, {tie_fit.n_iter} Newton iterations",
        flush=True)
  ratio = float(np.median(tie_warm) / np.median(plain_warm))
  err = tie_fit.log_strengths - theta
  print(f"ratio (warm medians) fit_pl_tied / fit_pl = {ratio:.2f} (target ≤ 3); cold "
        f"{tie_cold / plain_cold:.2f}", flush=True)
  print(f"recovery: θ RMSE {np.sqrt(np.mean(err ** 2)):.4f}, log δ {tie_fit.log_tie.round(4)} "
        f"± {tie_fit.log_tie_stderr.round(4)} (truth {log_tie})", flush=True)
  info["loadavg_end"] = os.getloadavg()
  result = {"machine": info, "args": vars(args), "n_rankings": int(len(rankings)),
            "tied_positions": int(tied.sum()), "block_sizes": np.bincount(sizes).tolist(),
            "fit_pl": {"cold_s": plain_cold, "warm_s": plain_warm, "iterations": plain.n_iter},
            "fit_pl_tied": {"cold_s": tie_cold, "warm_s": tie_warm, "iterations": tie_fit.n_iter,
                            "log_tie": tie_fit.log_tie.tolist(),
                            "log_tie_stderr": tie_fit.log_tie_stderr.tolist(),
                            "theta_rmse": float(np.sqrt(np.mean(err ** 2)))},
            "ratio_warm": ratio, "ratio_cold": tie_cold / plain_cold}
  _timing.write_json(result, args.out)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
