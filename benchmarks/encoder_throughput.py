"""Training throughput of every encoder and family on the shipped configs' real batches.

    python benchmarks/encoder_throughput.py                         # f1, sp500, synthetic
    python benchmarks/encoder_throughput.py --configs=f1 --models=mlp,s5 --steps=50

For each config: its data, batch size and model, with the encoder (or family,
or a two-member ensemble) swapped in; luce's jitted train step
(`luce.train.make_train_step`) on pre-built batches in the family's layout,
alternating rounds over the variants in one process. The table gives median
events/s over rounds, compile time and the ratio to the MLP measured in the
same run (the reference: the other encoders do more per event). Variants:
mlp, itransformer, transformer, s5, deepar, diffusion (sets and rankings),
ensemble (mlp + s5). The last line is a JSON object of the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics

from benchmarks.train_throughput import LuceRunner, host_batches, load_config

VARIANTS = {
    "mlp": {"model.encoder": "mlp"},
    "itransformer": {"model.encoder": "itransformer"},
    "transformer": {"model.encoder": "transformer"},
    "s5": {"model.encoder": "s5"},
    "deepar": {"model.encoder": "deepar"},
    "diffusion": {"model.family": "diffusion"},
    "ensemble": {"model.ensemble.members": ("encoder=mlp", "encoder=s5")},
}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="f1,sp500,synthetic")
  parser.add_argument("--models", default=",".join(VARIANTS))
  parser.add_argument("--steps", type=int, default=30, help="steps per timed round")
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  import luce.train
  from luce.eval._compare import variant_config
  out = {}
  for name in args.configs.split(","):
    base = load_config(name)
    prepared = luce.train.prepare(luce.train.checked_config(base))
    runners = {}
    for variant in args.models.split(","):
      config = variant_config(base, VARIANTS[variant])
      family = luce.train.build_family(config, prepared)
      batches, _ = host_batches(prepared, family, config.train.batch_size, 4)
      runners[variant] = LuceRunner(config, family, batches)
      runners[variant].run(2)                                          # warm
    rates = {v: [] for v in runners}
    for _ in range(args.rounds):
      for v, runner in runners.items():
        rates[v].append(args.steps * base.train.batch_size / runner.run(args.steps))
    ref = statistics.median(rates["mlp"]) if "mlp" in rates else None
    print(f"\n{name} (batch {base.train.batch_size}, {prepared.n_items} items, {prepared.kind}s)")
    print("| variant | events/s | vs mlp | compile s |\n| --- | ---: | ---: | ---: |")
    out[name] = {}
    for v, runner in runners.items():
      rate = statistics.median(rates[v])
      ratio = f"{rate / ref:.2f}x" if ref else ""
      print(f"| {v} | {rate:,.0f} | {ratio} | {runner.compile_seconds:.1f} |")
      out[name][v] = {"events_per_s": round(rate, 1), "compile_s": round(runner.compile_seconds, 2)}
  print(json.dumps(out))


if __name__ == "__main__":
  main()
