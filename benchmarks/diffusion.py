"""Discrete subset diffusion: sampling throughput vs steps, quality vs steps, training throughput.

    python -m benchmarks.diffusion                 # CPU, about 3 minutes under load
    python -m benchmarks.diffusion --quick         # fewer repeats
    python -m benchmarks.diffusion --experiments   # synthetic 5 of 50 and Powerball, both families

Games: 5 of 69 (Powerball's white balls) and 20 of 80 (keno). The denoiser is
`luce.diffusion.SubsetDenoiser` (deep sets, hidden 64, depth 1) with random
weights (scale 0.5, so the set interaction is far from zero: speed does not
depend on the values), context-free and with a per-event context of 16
features per item (encoded once per event, as the sampler does). Sampling:
sets/s of one jitted `sample_sets` call of 4096 sets. Quality vs steps: the
co-occurrence MMD and the largest inclusion-rate gap between 50,000 sets drawn
with `steps` and 50,000 exact (steps = k) sets. Training: events/s of a jitted
MD4 step (loss + AdamW) on batches of 256 sets. Writes benchmarks/out/diffusion.json.

--experiments trains the diffusion and the neural PL families on the same
config through the one loop (`luce.train.train_and_evaluate`, the best
checkpoint of each) and scores both, the baselines and (synthetic) the oracle
on the validation events with `luce.metrics.summary` (exact NLL: the subset
recursion for diffusion, the PL set likelihood for the rest), with bootstrap
95% intervals. Writes benchmarks/out/diffusion_experiments.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
import jax
import jax.numpy as jnp
import optax

from benchmarks import _timing
from luce import diffusion as D

GAMES = {"5of69": (69, 5, (1, 2, 3, 5)), "20of80": (80, 20, (1, 2, 5, 10, 20))}
BATCH = 4096
CONTEXT = 16


def make_model(n, k, context, seed=0):
  model = D.SubsetDenoiser(n_items=n, k=k, hidden=64, depth=1)
  ctx = jnp.zeros((1, n, CONTEXT)) if context else None
  params = jax.jit(lambda key: model.init(key, ctx, jnp.zeros((1, n), bool), jnp.full((1,), k),
                                          method="init_all"))(jax.random.key(seed))["params"]
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  params = tree.unflatten([x + 0.5 * jax.random.normal(kk, x.shape) for x, kk in zip(leaves, keys)])
  return model, params


def sampler(model, params, n, k, steps, context):
  """A jitted (key, context) -> int32[BATCH, k]: encode once, then the loop."""
  def draw(key, ctx):
    enc = model.apply({"params": params}, ctx, method="encode")
    fn = lambda v, r: model.apply({"params": params}, enc, v, r, method="denoise")
    return D.sample_sets(key, fn, n, k, BATCH, steps=steps)
  return jax.jit(draw)


def bench_sampling(quick):
  rows = []
  for game, (n, k, step_list) in GAMES.items():
    for context in (False, True):
      model, params = make_model(n, k, context)
      ctx = (jax.random.normal(jax.random.key(2), (BATCH, n, CONTEXT)) if context else None)
      for steps in step_list:
        draw = sampler(model, params, n, k, steps, context)
        t0 = time.perf_counter()
        jax.block_until_ready(draw(jax.random.key(0), ctx))
        compile_s = time.perf_counter() - t0
        keys = iter(jax.random.split(jax.random.key(1), 1000))
        t = _timing.time_call(lambda: jax.block_until_ready(draw(next(keys), ctx)),
                              min_seconds=0.5 if quick else 2.0, max_repeats=20)
        row = {"game": game, "n": n, "k": k, "context": context, "steps": steps,
               "sets_per_s": BATCH / t["median_s"], "best_sets_per_s": BATCH / t["min_s"],
               "compile_s": compile_s, **t}
        rows.append(row)
        print(f"sample {game:7s} context={str(context):5s} steps={steps:2d}: "
              f"{row['sets_per_s']:>10,.0f} sets/s (best {row['best_sets_per_s']:,.0f}; "
              f"compile {compile_s:.1f}s)", flush=True)
  return rows


def bench_quality(quick):
  rows = []
  draws = 10 if quick else 12  # x 4096 sets
  for game, (n, k, step_list) in GAMES.items():
    model, params = make_model(n, k, False)
    def many(steps):
      draw = sampler(model, params, n, k, steps, False)
      keys = jax.random.split(jax.random.key(100 + steps), draws)
      return np.concatenate([np.asarray(draw(key, None)) for key in keys])
    exact = many(k)
    exact2 = np.concatenate([exact[len(exact) // 2:], exact[:len(exact) // 2]])
    p_exact = D.inclusion_from_samples(exact[None], n)[0]
    for steps in step_list:
      sets = many(steps) if steps != k else exact2
      half = len(sets) // 2
      mmd = D.cooccurrence_mmd(sets[:half], exact[half:], n) if steps != k else \
          D.cooccurrence_mmd(exact[:half], exact[half:], n)
      gap = np.abs(D.inclusion_from_samples(sets[None], n)[0] - p_exact).max() if steps != k else 0.0
      rows.append({"game": game, "steps": steps, "mmd_vs_exact": mmd, "max_inclusion_gap": float(gap),
                   "sets": int(half)})
      print(f"quality {game:7s} steps={steps:2d}: MMD^2 vs exact {mmd:+.4f}, "
            f"max |inclusion gap| {gap:.4f}", flush=True)
  return rows


def bench_training(quick):
  rows = []
  for game, (n, k, _) in GAMES.items():
    for context in (False, True):
      model, params = make_model(n, k, context)
      opt = optax.adamw(1e-3)
      state = (params, opt.init(params))
      batch = 256

      def step(state, sets, ctx, key):
        params, opt_state = state
        def loss(p):
          enc = model.apply({"params": p}, ctx, method="encode")
          fn = lambda v, r: model.apply({"params": p}, enc, v, r, method="denoise")
          return jnp.mean(D.diffusion_loss(fn, sets, n, key))
        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

      step = jax.jit(step, donate_argnums=0)
      rng = np.random.default_rng(0)
      sets = jnp.asarray(np.stack([rng.choice(n, k, replace=False) for _ in range(batch)]), jnp.int32)
      ctx = jax.random.normal(jax.random.key(2), (batch, n, CONTEXT)) if context else None
      t0 = time.perf_counter()
      state, _ = step(state, sets, ctx, jax.random.key(0))
      jax.block_until_ready(state)
      compile_s = time.perf_counter() - t0
      box = {"state": state, "i": 0}

      def run():
        box["i"] += 1
        box["state"], v = step(box["state"], sets, ctx, jax.random.key(box["i"]))
        jax.block_until_ready(v)

      t = _timing.time_call(run, min_seconds=0.5 if quick else 2.0, max_repeats=30)
      row = {"game": game, "context": context, "batch": batch, "events_per_s": batch / t["median_s"],
             "compile_s": compile_s, **t}
      rows.append(row)
      print(f"train  {game:7s} context={str(context):5s}: {row['events_per_s']:>10,.0f} events/s "
            f"(batch {batch}, compile {compile_s:.1f}s)", flush=True)
  return rows


def experiment(name, config, steps):
  """Both families on one config through the one loop (`luce.train.train_and_evaluate`),
  each best checkpoint scored on the validation events by `luce.metrics.summary`."""
  import math
  import tempfile
  import luce.train
  config.train.num_steps = steps
  config.train.log_every = max(steps // 4, 1)
  config.train.progress_bar = False
  results, seconds = {}, {}
  with tempfile.TemporaryDirectory() as workdir:
    for family in ("diffusion", "pl"):
      config.model.family = family
      t0 = time.perf_counter()
      results[family] = luce.train.train_and_evaluate(config, f"{workdir}/{family}")
      seconds[family] = time.perf_counter() - t0
    run = luce.train.load_run(f"{workdir}/diffusion")
  valid = run.prepared.arrays["valid"]
  table = {"diffusion": results["diffusion"]["valid"]["model"],
           "neural_pl": results["pl"]["valid"]["model"],
           **{k: v for k, v in results["pl"]["valid"].items() if k != "model"}}
  quality = sample_quality(run, valid)
  n, k = valid["available"].shape[1], valid["items"].shape[1]
  title = (f"{name}: {table['diffusion']['events']} validation events, exact NLL in nats per event "
           f"(log C({n},{k}) = {math.log(math.comb(n, k)):.4f})")
  print(luce.train.format_table(table, title, config.data.eval_k, "set"), flush=True)
  print(f"  samples: validity {quality['validity']:.4f}, inclusion ECE {quality['ece']:.4f} "
        f"(Brier {quality['brier']:.5f}), co-occurrence MMD^2 to held-out {quality['mmd']:+.4f} "
        f"(held-out vs uniform sets {quality['mmd_uniform']:+.4f}); pairwise overlap "
        f"{np.round(quality['overlap']['observed'], 4).tolist()} vs hypergeometric "
        f"{np.round(quality['overlap']['expected'], 4).tolist()}", flush=True)
  return {"name": name, "steps": steps, "table": table, "sample_quality": quality,
          "train_seconds": {"diffusion": seconds["diffusion"], "neural_pl": seconds["pl"]},
          "diffusion_events_per_s": results["diffusion"]["events_per_second"],
          "log_comb": math.log(math.comb(n, k))}


def sample_quality(run, valid, per_event=200):
  """Sample metrics of the trained diffusion model on the validation events."""
  n, k = valid["available"].shape[1], valid["items"].shape[1]
  sets = run.family.sample(run.params, valid, jax.random.key(7), per_event, k)
  flat = sets.reshape(-1, k)
  rng = np.random.default_rng(0)
  uniform = np.stack([rng.choice(n, k, replace=False) for _ in range(len(valid["items"]))])
  cal = D.inclusion_calibration(D.inclusion_from_samples(sets, n), valid["items"])
  overlap = D.overlap_histogram(flat, n, k, pairs=200_000)
  return {"validity": D.validity_rate(flat, n, k, available=np.repeat(valid["available"], per_event, 0)),
          "ece": cal["ece"], "brier": cal["brier"],
          "mmd": D.cooccurrence_mmd(sets[:, 0], valid["items"], n),
          "mmd_uniform": D.cooccurrence_mmd(uniform, valid["items"], n),
          "overlap": {key: np.asarray(v).tolist() if key in ("observed", "expected") else v
                      for key, v in overlap.items()}}


def experiments(steps):
  from luce.configs import powerball, synthetic
  out = []
  c = synthetic.get_config("set")
  c.data.source = "synthetic:set?n_items=50&k=5&n_events=4000&seed=0"
  out.append(experiment("synthetic 5 of 50", c, steps))
  out.append(experiment("powerball 5 of 69", powerball.get_config(), steps))
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--experiments", action="store_true")
  parser.add_argument("--steps", type=int, default=600, help="train steps of --experiments")
  parser.add_argument("--out", default="benchmarks/out/diffusion.json")
  args = parser.parse_args()
  if args.experiments:
    out = pathlib.Path(args.out).with_name("diffusion_experiments.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(experiments(args.steps), indent=1) + "\n")
    print(f"wrote {out}")
    return
  print(f"backend {jax.default_backend()}, devices {jax.devices()}, cores {_timing.cores()}", flush=True)
  result = {"backend": jax.default_backend(), "device": str(jax.devices()[0]), "cores": _timing.cores(),
            "sampling": bench_sampling(args.quick), "quality": bench_quality(args.quick),
            "training": bench_training(args.quick)}
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1) + "\n")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
