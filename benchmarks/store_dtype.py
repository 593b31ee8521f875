"""Benchmark: the NLL cost of storing item features as float16 or bfloat16.

    python -m benchmarks.store_dtype [--steps=600] [--source=synthetic:ranking?...]

Trains the same config (seed, Grain batch order, model) through the feature
store with item features stored as float32, float16 and bfloat16, and once
through the in-memory path (float32, its own batch order), and prints the
validation NLL of each beside the generating model's (the oracle, on
synthetic data), as a Markdown table and a JSON line. The store runs differ
only in the stored dtype, so their NLL differences are its cost.
"""

import argparse
import json
import tempfile
import time

import luce.train

SOURCE = "synthetic:ranking?n_items=20&k=5&n_events=20000&seed=0"


def run(source: str, steps: int, pipeline: str, dtype: str, workdir: str) -> dict:
  config = {"data": {"source": source, "pipeline": pipeline, "store_dtype": dtype, "eval_k": 5},
            "baselines": {"names": ("uniform",)},
            "train": {"num_steps": steps, "eval_every": steps, "checkpoint_every": steps,
                      "progress_bar": False}}
  t0 = time.perf_counter()
  result = luce.train.train_and_evaluate(config, workdir, say=lambda m: None)
  valid = result["valid"]
  return {"nll": valid["model"]["nll_per_event"], "oracle": valid.get("oracle", {}).get("nll_per_event"),
          "seconds": round(time.perf_counter() - t0, 1)}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--source", default=SOURCE)
  args = parser.parse_args()
  rows = {}
  with tempfile.TemporaryDirectory() as tmp:
    rows["memory float32"] = run(args.source, args.steps, "memory", "float32", f"{tmp}/memory")
    for dtype in ("float32", "float16", "bfloat16"):
      rows[f"store {dtype}"] = run(args.source, args.steps, "store", dtype, f"{tmp}/{dtype}")
  base = rows["store float32"]["nll"]
  print("| path | valid NLL (nats/event) | vs store float32 | s |\n| --- | --- | --- | --- |")
  for name, r in rows.items():
    print(f"| {name} | {r['nll']:.5f} | {r['nll'] - base:+.5f} | {r['seconds']} |")
  oracle = rows["store float32"]["oracle"]
  if oracle is not None:
    print(f"| oracle (generating model) | {oracle:.5f} | | |")
  print(json.dumps({"source": args.source, "steps": args.steps, **rows}))


if __name__ == "__main__":
  main()
