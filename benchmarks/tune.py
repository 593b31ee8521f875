"""Population training against sequential runs: P small trials at once in one vmapped step.

    python -m benchmarks.tune                     # P = 16, 300 steps, synthetic rankings
    python -m benchmarks.tune --population=16 --steps=300 --rounds=3

Two measurements, each repeated `--rounds` times with the two sides interleaved:

- whole runs: 16 `luce.train.train_and_evaluate` runs one after another (what a
  tuner running trials one at a time pays: data, compile, train, evaluations,
  checkpoints) against one `luce.tune.train_population` of 16 members that
  differ in learning rate, weight decay, dropout and seed, with the same
  steps, evaluations and checkpoints;
- the step alone: 16 calls of the compiled luce-train step against one call
  of the compiled vmapped population step, on the same batches.

The floor: the population step does the FLOPs of the 16 steps; on a CPU with
few cores a small model is bound by per-call overhead (dispatch, small
kernels), which the vmapped step pays once instead of 16 times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np


def config(steps: int) -> dict:
  return {"data": {"source": "synthetic:ranking?n_items=10&k=3&n_events=3000&seed=0", "eval_k": 3},
          "model": {"hidden": 16, "depth": 2, "dropout": 0.1},
          "train": {"batch_size": 32, "num_steps": steps, "eval_every": max(steps // 3, 1),
                    "checkpoint_every": max(steps // 3, 1), "log_every": 50, "progress_bar": False,
                    "async_checkpoints": True},
          "baselines": {"names": ("uniform",)}}


def members(population: int) -> list[dict]:
  rng = np.random.default_rng(0)
  return [{"optimizer.learning_rate": float(10 ** rng.uniform(-3, -1.5)),
           "optimizer.weight_decay": float(10 ** rng.uniform(-5, -2)),
           "model.dropout": float(rng.uniform(0, 0.3)), "seed": i} for i in range(population)]


def whole_runs(population: int, steps: int, rounds: int) -> dict:
  from luce.train import checked_config, train_and_evaluate
  from luce.tune import apply_params, train_population
  base, ms = checked_config(config(steps)), members(population)
  quiet = lambda *a, **k: None
  times = {"sequential": [], "population": []}
  agree = []
  for _ in range(rounds):
    with tempfile.TemporaryDirectory() as d:
      t0 = time.perf_counter()
      seq = [train_and_evaluate(apply_params(base, m), f"{d}/s{i}", say=quiet) for i, m in enumerate(ms)]
      times["sequential"].append(time.perf_counter() - t0)
      t0 = time.perf_counter()
      pop = train_population(base, ms, [f"{d}/p{i}" for i in range(population)], say=quiet)
      times["population"].append(time.perf_counter() - t0)
      agree.append(max(abs(a["valid"]["model"]["nll_per_event"] - b["valid"]["model"]["nll_per_event"])
                       for a, b in zip(seq, pop)))
  return {k: statistics.median(v) for k, v in times.items()} | {"max_nll_diff": max(agree)}


def step_only(population: int, steps: int, rounds: int) -> dict:
  """The compiled steps alone on fixed batches: 16 sequential calls vs one vmapped call."""
  import jax
  import jax.numpy as jnp
  from luce.models import DropoutRate
  from luce.train import (batch_indices, build_family, checked_config, init_state, make_optimizer,
                          make_train_step, prepare)
  from luce.train._step import train_step_fn
  from luce.tune import apply_params
  base = checked_config(config(steps))
  cs = [apply_params(base, m) for m in members(population)]
  prepared = prepare(cs[0])
  family = build_family(cs[0], prepared)
  train = prepared.arrays["train"]
  n = len(train["items"])
  example = family.take(train, np.arange(cs[0].train.batch_size))
  keys = [jax.random.split(jax.random.key(c.seed)) for c in cs]
  batches = [{k: jnp.asarray(v) for k, v in family.take(
      train, batch_indices(0, n, c.train.batch_size, c.seed)).items()} for c in cs]
  # sequential: each member's own compiled step (as luce-train compiles it)
  seq = []
  for c, (k_init, k_step), b in zip(cs, keys, batches):
    opt = make_optimizer(c)
    model = family.model.clone(dropout=c.model.dropout)
    fn = make_train_step(model, opt, family.loss, donate=False)
    st = init_state(model, opt, example, k_init)
    seq.append((fn.lower(st, b, k_step).compile(), st, b, k_step))
  # population
  states = jax.tree.map(lambda *x: jnp.stack(x), *[s for _, s, _, _ in seq])
  batch = {k: jnp.stack([b[k] for b in batches]) for k in batches[0]}
  step_keys = jnp.stack([k[1] for k in keys])
  rates = [DropoutRate.of(c.model.dropout) for c in cs]
  hp = {"learning_rate": jnp.asarray([c.optimizer.learning_rate for c in cs], jnp.float32),
        "weight_decay": jnp.asarray([c.optimizer.weight_decay for c in cs], jnp.float32),
        "threshold": jnp.asarray([r.threshold for r in rates], jnp.uint32),
        "keep": jnp.asarray([r.keep for r in rates], jnp.float32)}

  def member_step(state, b, key, h):
    opt = make_optimizer(cs[0], learning_rate=h["learning_rate"], weight_decay=h["weight_decay"])
    model = family.model.clone(dropout=DropoutRate(h["threshold"], h["keep"]))
    return train_step_fn(model, opt, family.loss)(state, b, key)

  vstep = jax.jit(jax.vmap(member_step)).lower(states, batch, step_keys, hp).compile()
  from benchmarks._timing import time_interleaved

  def run_seq():
    out = [fn(st, b, k) for fn, st, b, k in seq]
    jax.block_until_ready(out)

  def run_pop():
    jax.block_until_ready(vstep(states, batch, step_keys, hp))
  t = time_interleaved({"sequential": run_seq, "population": run_pop}, rounds=max(rounds, 5))
  flops = None
  try:
    cost = seq[0][0].cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", 0.0)) * population
  except Exception:  # noqa: BLE001 - cost analysis is optional
    pass
  return {"sequential": t["sequential"]["median_s"], "population": t["population"]["median_s"],
          "flops": flops, "events": population * cs[0].train.batch_size}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--population", type=int, default=16)
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  import jax
  from benchmarks._timing import machine
  info = machine(("jax", "jaxlib", "optax", "flax", "optuna"))
  print(f"{info['date']} {info['cpu']} ({info['cores']} cores), jax {jax.__version__}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
  P = args.population
  s = step_only(P, args.steps, args.rounds)
  w = whole_runs(P, args.steps, args.rounds)
  print(f"| measured | {P} sequential | population of {P} | population speed-up |")
  print("|---|---|---|---|")
  print(f"| one step of all {P} (ms) | {s['sequential'] * 1e3:.2f} | {s['population'] * 1e3:.2f} | "
        f"{s['sequential'] / s['population']:.2f}x |")
  print(f"| {P} whole runs of {args.steps} steps (s) | {w['sequential']:.1f} | {w['population']:.1f} | "
        f"{w['sequential'] / w['population']:.2f}x |")
  if s["flops"]:
    print(f"\nFLOPs per population step {s['flops'] / 1e6:.1f} M: "
          f"{s['flops'] / s['population'] / 1e9:.2f} GFLOP/s in the population step, "
          f"{s['flops'] / s['sequential'] / 1e9:.2f} GFLOP/s sequentially")
  print(f"largest |population - sequential| best validation NLL over members and rounds: "
        f"{w['max_nll_diff']:.2e}")
  print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
  main()
