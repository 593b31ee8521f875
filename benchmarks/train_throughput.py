"""Training throughput: luce's jitted train step against the same model and loop in PyTorch.

    python benchmarks/train_throughput.py                    # F1 and S&P 500 configs
    python benchmarks/train_throughput.py --configs=sp500 --steps=200

For each config: the real data and batch size of configs/NAME.py, the MLP PL
scorer (item features + static item embedding -> per-item MLP -> score, plus a
per-item bias), AdamW with global-norm clipping and the PL likelihood over each
event's available items. Two layouts of the same batches:
  catalog   every event scores all n items of the catalog (luce before entrant
            gathering, `model.entrants=False`);
  entrants  each event's available items gathered into a [batch, most
            available] block (`luce.models.gather_entrants`, the default).
The PyTorch side is the same architecture, batches (either layout), optimizer
and loss (reverse logcumsumexp over the ranking), in eager mode. All four run
on the same pre-built batches in one process, in alternating rounds; the
table gives the median events/s over rounds, luce's compile time, the ratios
and the host time of gathering one batch (the train loop does it in its
prefetch, ahead of the device). Needs torch (CPU: `pip install torch==2.13.0`);
F1 needs the shared data.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import statistics
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_config(name: str):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def host_batches(prepared, family, batch_size: int, count: int, seed: int = 0) -> tuple[list, float]:
  """(`count` batches of the training split in `family`'s layout, median host seconds
  to build one)."""
  import luce.train
  train = prepared.arrays["train"]
  n = len(train["items"])
  out, seconds = [], []
  for i in range(count):
    rows = luce.train.batch_indices(i, n, batch_size, seed)
    t0 = time.perf_counter()
    out.append(family.take(train, rows))
    seconds.append(time.perf_counter() - t0)
  return out, statistics.median(seconds)


# ---- luce ----------------------------------------------------------------------------------------

class LuceRunner:
  def __init__(self, config, family, batches):
    import jax
    import luce.train
    self.jax = jax
    optimizer = luce.train.make_optimizer(config)
    self.state = luce.train.init_state(family.model, optimizer, batches[0], jax.random.key(0))
    step = luce.train.make_train_step(family.model, optimizer, family.loss)
    self.batches = [jax.device_put(b) for b in batches]
    self.key = jax.random.key(1)
    t0 = time.perf_counter()
    self.step = step.lower(self.state, self.batches[0], self.key).compile()
    self.compile_seconds = time.perf_counter() - t0
    self.i = 0

  def run(self, steps: int) -> float:
    """Seconds for `steps` steps (blocking on the last)."""
    t0 = time.perf_counter()
    for _ in range(steps):
      self.state, metrics = self.step(self.state, self.batches[self.i % len(self.batches)], self.key)
      self.i += 1
    self.jax.block_until_ready(metrics["loss"])
    return time.perf_counter() - t0


# ---- PyTorch -------------------------------------------------------------------------------------

def torch_pl_nll(scores, items, available):
  """-log P of top-k lists under PL over the available items; torch twin of luce.pl_log_prob.

  scores [B, n], items int64 [B, k] (-1 pads), available bool [B, n] -> [B].
  """
  import torch
  neg_inf = torch.finfo(scores.dtype).min
  s = scores.masked_fill(~available, float("-inf"))
  valid = items >= 0
  picked = torch.gather(s, 1, items.clamp(min=0))                       # [B, k]
  n = scores.shape[1]
  # Pads scatter into an extra column, so they cannot unmark a listed item 0.
  listed = torch.zeros(available.shape[0], n + 1, dtype=torch.bool).scatter(
      1, torch.where(valid, items, n), True)[:, :n]
  log_u = torch.logsumexp(s.masked_fill(listed, float("-inf")), dim=1, keepdim=True)
  tail = torch.logcumsumexp(picked.masked_fill(~valid, neg_inf).flip(1), dim=1).flip(1)
  denominators = torch.logaddexp(tail, log_u)
  terms = torch.where(valid, picked - denominators, torch.zeros_like(picked))
  return -terms.sum(1)


class TorchRunner:
  def __init__(self, config, n: int, batches):
    import torch
    from torch import nn
    self.torch = torch
    m, o = config.model, config.optimizer
    f = batches[0]["item_features"].shape[-1] + batches[0]["event_features"].shape[-1] + m.embed_dim

    class Scorer(nn.Module):
      def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(n, m.embed_dim)
        layers, width = [], f
        for _ in range(m.depth):
          layers += [nn.Linear(width, m.hidden), nn.GELU(approximate="tanh"), nn.Dropout(m.dropout)]
          width = m.hidden
        layers.append(nn.Linear(width, 1, bias=False))
        self.mlp = nn.Sequential(*layers)
        self.item_bias = nn.Parameter(torch.zeros(n))

      def forward(self, item, event, ids):
        """ids: int64[B, slots] catalog id of each slot (gathered entrants), or None (catalog)."""
        b, slots = item.shape[:2]
        if ids is None:
          embedded, bias = self.embedding.weight[None].expand(b, slots, m.embed_dim), self.item_bias
        else:
          embedded, bias = self.embedding(ids), self.item_bias[ids]
        x = torch.cat([item, event[:, None, :].expand(b, slots, event.shape[-1]), embedded], dim=-1)
        return self.mlp(x)[..., 0] + bias

    self.model = Scorer()
    self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.learning_rate, betas=(o.b1, o.b2),
                                       weight_decay=o.weight_decay)
    self.clip = o.clip_norm
    self.batches = [{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()} for b in batches]
    for b in self.batches:
      b["items"] = b["items"].long()
      if "entrants" in b:
        b["entrants"] = b["entrants"].long()
    self.i = 0

  def run(self, steps: int) -> float:
    torch = self.torch
    t0 = time.perf_counter()
    for _ in range(steps):
      b = self.batches[self.i % len(self.batches)]
      self.i += 1
      scores = self.model(b["item_features"], b["event_features"], b.get("entrants"))
      w = b["weights"]
      loss = (torch_pl_nll(scores, b["items"], b["available"]) * w).sum() / w.sum()
      self.optimizer.zero_grad(set_to_none=True)
      loss.backward()
      if self.clip > 0:
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
      self.optimizer.step()
    return time.perf_counter() - t0


LAYOUTS = ("catalog", "entrants")


def bench(name: str, steps: int, rounds: int) -> dict:
  import torch
  import luce.train
  config = luce.train.checked_config(load_config(name))
  config.model.encoder = "mlp"
  prepared = luce.train.prepare(config)
  batch_size = config.train.batch_size
  runners, out = {}, {"config": name, "batch": batch_size, "items": prepared.n_items}
  for layout in LAYOUTS:
    config.model.entrants = layout == "entrants"
    family = luce.train.build_family(config, prepared)
    batches, gather_s = host_batches(prepared, family, batch_size, 16)
    out[f"{layout}_gather_ms"] = 1e3 * gather_s
    out[f"{layout}_slots"] = batches[0]["item_features"].shape[1]
    out["features"] = batches[0]["item_features"].shape[-1]
    runners[f"luce {layout}"] = LuceRunner(config, family, batches)
    out[f"luce_{layout}_compile_s"] = runners[f"luce {layout}"].compile_seconds
    runners[f"torch {layout}"] = TorchRunner(config, prepared.n_items, batches)
  for runner in runners.values():
    runner.run(10)  # warm-up
  rates = {key: [] for key in runners}
  for _ in range(rounds):
    for key, runner in runners.items():
      rates[key].append(steps * batch_size / runner.run(steps))
  for key in runners:
    out[key.replace(" ", "_") + "_events_per_s"] = statistics.median(rates[key])
  out["torch_threads"] = torch.get_num_threads()
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="f1,sp500")
  parser.add_argument("--steps", type=int, default=100, help="steps per timed round")
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args()
  import jax
  import torch
  print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
  print("| config | batch | items n | slots (entrants) | features | luce catalog ev/s | "
        "luce entrants ev/s | entrants / catalog | PyTorch catalog ev/s | PyTorch entrants ev/s | "
        "luce / PyTorch (entrants) | gather ms/batch | luce compile s |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  for name in args.configs.split(","):
    r = bench(name, args.steps, args.rounds)
    lc, le = r["luce_catalog_events_per_s"], r["luce_entrants_events_per_s"]
    tc, te = r["torch_catalog_events_per_s"], r["torch_entrants_events_per_s"]
    print(f"| {r['config']} | {r['batch']} | {r['items']} | {r['entrants_slots']} | {r['features']} | "
          f"{lc:,.0f} | {le:,.0f} | {le / lc:.2f}x | {tc:,.0f} | {te:,.0f} | {le / te:.2f}x | "
          f"{r['entrants_gather_ms']:.2f} | {r['luce_entrants_compile_s']:.2f} |", flush=True)
  print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
  main()
