"""Benchmark: training steps on a 10,000-item catalog, exact against sampled negatives.

    python -m benchmarks.large_catalog [--negatives=0,64,512,2048,64:popularity,512:popularity]
        [--rounds=3] [--seconds=4]

Prepares the data of `configs/large_catalog.py` once (10,000 items, top-5, 4,000
events), then trains one PL family per `model.negatives` value (0: the exact loss
over every item; `M:popularity` draws by `model.negative_proposal = "popularity"`)
through `luce.train.Trainer.fit` in interleaved rounds, so a change in machine load
hits every variant alike. A step's time is the loop's: the host batch (the gathered
entrants, or the chosen items plus sampled negatives), the copy and the jitted step.
Prints a Markdown table (ms per step, events/s, speed-up over exact) with the load
before and after, and a JSON line.
"""

import argparse
import json
import time

import jax
import numpy as np

import luce.train
from benchmarks._timing import git_state, machine
from luce.configs import large_catalog


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--negatives", default="0,64,512,2048,64:popularity,512:popularity")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--seconds", type=float, default=4.0, help="per variant and round")
  args = parser.parse_args()
  before = machine()
  base = large_catalog.get_config()
  base.train.num_steps = 1_000_000        # the schedule stays at its peak while timed
  base.train.progress_bar = False
  t0 = time.perf_counter()
  prepared = luce.train.prepare(luce.train.checked_config(base), say=lambda *a: None)
  prepare_s = time.perf_counter() - t0
  train = prepared.arrays["train"]
  rows = range(len(train["items"]))
  variants = {}
  for name in args.negatives.split(","):
    m, _, proposal = name.partition(":")
    fields = {"negatives": int(m), "negative_proposal": proposal or "uniform"}
    config = luce.train.checked_config(base.to_dict() | {"model": base.model.to_dict() | fields})
    family = luce.train.build_family(config, prepared)
    trainer = luce.train.Trainer(config, family, train, mesh=luce.train.make_mesh(1))
    init_key, step_key = jax.random.split(jax.random.key(0))
    state = trainer.init_state(init_key)
    state, _ = trainer.fit(state, train, rows, until=2, first_step=0, data_seed=0, step_key=step_key,
                           say=lambda *a: None)   # compiles, warms up
    t = time.perf_counter()
    state, _ = trainer.fit(state, train, rows, until=5, first_step=0, data_seed=0, step_key=step_key,
                           say=lambda *a: None)
    per_step = (time.perf_counter() - t) / 3
    variants[name] = {"trainer": trainer, "state": state, "key": step_key, "times": [],
                   "steps": max(2, int(args.seconds / max(per_step, 1e-3)))}
  for _ in range(args.rounds):
    for v in variants.values():
      start = int(luce.train.host_copy(v["state"].step))
      t = time.perf_counter()
      v["state"], _ = v["trainer"].fit(v["state"], train, rows, until=start + v["steps"],
                                       first_step=0, data_seed=0, step_key=v["key"],
                                       say=lambda *a: None)
      v["times"].append((time.perf_counter() - t) / v["steps"])
  after = machine()
  batch, k = base.train.batch_size, prepared.k
  rows_out = {}
  for name, v in variants.items():
    step_s = float(np.median(v["times"]))
    m = v["trainer"].family.negatives
    rows_out[name] = {"scores_per_event": prepared.max_available if m == 0 else k + m,
                   "ms_per_step": 1e3 * step_s, "events_per_s": batch / step_s,
                   "steps_timed": v["steps"] * args.rounds}
  exact = rows_out.get("0")
  print(f"{prepared.n_items} items, top-{k}, batch {batch}; data prepared in {prepare_s:.1f}s; "
        f"load {before['loadavg']} before, {after['loadavg']} after; {before['cpu']}, "
        f"{before['cores']} cores")
  print("| model.negatives | scores per event | ms per step | events/s | vs exact |\n"
        "| --- | --- | --- | --- | --- |")
  for name, r in rows_out.items():
    ratio = f"{exact['ms_per_step'] / r['ms_per_step']:.1f}x" if exact else ""
    print(f"| {'0 (exact)' if name == '0' else name} | {r['scores_per_event']:,} | {r['ms_per_step']:.1f} | "
          f"{r['events_per_s']:,.0f} | {ratio} |")
  print(json.dumps({"machine": before, "load_after": after["loadavg"], "git": git_state(),
                    "variants": rows_out}))


if __name__ == "__main__":
  main()
