"""Benchmark: `luce.fit_pl` against choix's I-LSR on top-5 lists.

    python -m benchmarks.fit_pl [--rankings=100000] [--items=200] [--k=5]

Draws `--rankings` top-k lists of `--items` items from known log-strengths
(numpy Gumbel-max, independent of luce), then fits the strengths with
`luce.fit_pl` (cold: the first call in the process, compile included; warm:
the second call) and with `choix.ilsr_top1` on the top-1 decomposition (each
pick is a top-1 choice among the items not picked yet; this is the same model,
whereas `ilsr_rankings` would drop the unpicked items). Reports time, recovery
of the centred truth (RMSE, correlation) and the log-likelihood of each
estimate under one float64 formula. choix loops in Python (≈ minutes per
iteration at the default size); if it runs past `--choix_budget_s` the run
records its time per iteration and counts the iterations on a 10× smaller
instance instead. Writes benchmarks/out/fit_pl.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from benchmarks import _timing


def sample_top_k(theta, m, k, rng, chunk=20_000):
  """int[m, k] Plackett-Luce top-k lists by Gumbel-max: sort θ + Gumbel noise."""
  n = theta.shape[0]
  out = np.empty((m, k), np.int64)
  for start in range(0, m, chunk):
    stop = min(start + chunk, m)
    keys = theta + rng.gumbel(size=(stop - start, n))
    top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
    out[start:stop] = np.take_along_axis(top, order, axis=1)
  return out


def log_likelihood(theta, rankings):
  """float64 Σ_rows Σ_j [θ_{π_j} − log Σ_{i not picked before j} e^{θ_i}]."""
  w = np.exp(theta - theta.max())
  pw = w[rankings]
  before = np.cumsum(pw, axis=1) - pw  # mass picked before stage j
  remaining = w.sum() - before
  return float(np.sum(np.log(pw) - np.log(remaining)))


def top1_choices(rankings, n):
  """choix top-1 data: [(winner, [items not picked up to this stage]), ...]."""
  m, k = rankings.shape
  rows = np.arange(m)
  left = np.ones((m, n), bool)
  data = []
  for j in range(k):
    left[rows, rankings[:, j]] = False
    losers = np.nonzero(left)[1].reshape(m, n - j - 1)
    data.extend(zip(rankings[:, j].tolist(), losers.tolist()))
  return data


def recovery(est, truth):
  e, t = est - est.mean(), truth - truth.mean()
  return {"rmse": float(np.sqrt(np.mean((e - t) ** 2))),
          "corr": float(np.corrcoef(e, t)[0, 1])}


class _OverBudget(Exception):
  pass


def run_choix(n, data, max_iter, budget_s=None, log=print):
  """`choix.ilsr_top1` with its per-iteration times recorded.

  The iterations are counted by wrapping `choix.lsr.lsr_top1`, which
  `ilsr_top1` calls once per iteration; the algorithm itself is unchanged.
  """
  import choix
  import choix.lsr

  inner = choix.lsr.lsr_top1
  times = []
  start = time.perf_counter()

  def counted(*args, **kwargs):
    t0 = time.perf_counter()
    out = inner(*args, **kwargs)
    times.append(time.perf_counter() - t0)
    log(f"  choix iteration {len(times)}: {times[-1]:.1f} s "
        f"(total {time.perf_counter() - start:.0f} s)")
    if budget_s is not None and time.perf_counter() - start > budget_s:
      raise _OverBudget()
    return out

  choix.lsr.lsr_top1 = counted
  try:
    params = choix.ilsr_top1(n, data, max_iter=max_iter, tol=1e-8)
    over = False
  except _OverBudget:
    params, over = None, True
  finally:
    choix.lsr.lsr_top1 = inner
  return {"params": params, "seconds": time.perf_counter() - start,
          "iterations": len(times), "seconds_per_iteration": float(np.mean(times)),
          "over_budget": over}


def fit_both(theta, rankings, n, args, log, choix_budget_s):
  import luce

  res = {}
  t0 = time.perf_counter()
  fit = luce.fit_pl(rankings, n)
  cold = time.perf_counter() - t0
  warm_all = []
  for _ in range(3):  # the second call is "warm"; two more show the spread
    t0 = time.perf_counter()
    fit = luce.fit_pl(rankings, n)
    warm_all.append(time.perf_counter() - t0)
  warm = warm_all[0]
  res["luce"] = {"cold_s": cold, "warm_s": warm, "warm_calls_s": warm_all,
                 "iterations": fit.n_iter,
                 "prior": fit.prior, **recovery(fit.log_strengths, theta),
                 "log_likelihood": log_likelihood(fit.log_strengths, rankings),
                 "log_likelihood_reported": fit.log_likelihood}
  log(f"luce.fit_pl: cold {cold:.2f} s, warm {warm:.2f} s (then "
      f"{', '.join(f'{w:.2f}' for w in warm_all[1:])} s), {fit.n_iter} Newton iterations")
  # The plain MLE, which is what choix (alpha=0) computes.
  t0 = time.perf_counter()
  mle = luce.fit_pl(rankings, n, prior=0.0)
  res["luce_mle"] = {"warm_s": time.perf_counter() - t0, "iterations": mle.n_iter,
                     "prior": 0.0, **recovery(mle.log_strengths, theta),
                     "log_likelihood": log_likelihood(mle.log_strengths, rankings)}
  log(f"luce.fit_pl(prior=0): {res['luce_mle']['warm_s']:.2f} s")

  if args.choix == "skip":
    return res
  t0 = time.perf_counter()
  data = top1_choices(rankings, n)
  res["choix_data_s"] = time.perf_counter() - t0
  log(f"choix top-1 data: {len(data)} choices, built in {res['choix_data_s']:.1f} s")
  ch = run_choix(n, data, args.choix_max_iter, choix_budget_s, log)
  del data
  params = ch.pop("params")
  res["choix"] = ch
  if params is not None:
    res["choix"].update(recovery(params, theta))
    res["choix"]["log_likelihood"] = log_likelihood(params - params.mean(), rankings)
    res["choix"]["max_abs_diff_vs_luce_mle"] = float(np.max(np.abs(
        (params - params.mean()) - mle.log_strengths)))
  log(f"choix.ilsr_top1: {ch['seconds']:.0f} s, {ch['iterations']} iterations"
      + (" (over budget, stopped)" if ch["over_budget"] else ""))
  return res


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rankings", type=int, default=100_000)
  p.add_argument("--items", type=int, default=200)
  p.add_argument("--k", type=int, default=5)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--choix", choices=("full", "skip"), default="full")
  p.add_argument("--choix_max_iter", type=int, default=10_000)
  p.add_argument("--choix_budget_s", type=float, default=2400.0)
  p.add_argument("--out", default="benchmarks/out/fit_pl.json")
  args = p.parse_args()

  def log(msg):
    print(msg, flush=True)

  info = _timing.machine(("jax", "jaxlib", "numpy", "choix"))
  info["git"] = _timing.git_state()
  log(f"machine: {info}")
  rng = np.random.default_rng(args.seed)
  n, k = args.items, args.k
  theta = rng.normal(0.0, 1.0, n)
  theta -= theta.mean()
  t0 = time.perf_counter()
  rankings = sample_top_k(theta, args.rankings, k, rng)
  log(f"{args.rankings} top-{k} lists of {n} items drawn in {time.perf_counter() - t0:.1f} s")
  t0 = time.perf_counter()
  import luce  # noqa: F401  (import time is not part of the fit)
  log(f"import luce: {time.perf_counter() - t0:.1f} s")

  result = {"machine": info, "args": vars(args),
            "truth_log_likelihood": log_likelihood(theta, rankings)}
  result["full"] = fit_both(theta, rankings, n, args, log, args.choix_budget_s)
  choix_full = result["full"].get("choix")
  if choix_full is not None and choix_full["over_budget"]:
    # The full run took too long: count choix's iterations on 1/10 of the data
    # (luce is refitted there too, for a like-for-like accuracy comparison).
    small = rankings[: args.rankings // 10]
    log(f"choix over budget; counting its iterations on {len(small)} lists")
    result["small"] = fit_both(theta, small, n, args, log, None)
  result["machine"]["loadavg_end"] = os.getloadavg()
  _timing.write_json(result, args.out)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
