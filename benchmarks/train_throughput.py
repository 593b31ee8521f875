"""Training throughput: luce's jitted train step against the same model and loop in PyTorch.

    python benchmarks/train_throughput.py                    # F1 and S&P 500 configs
    python benchmarks/train_throughput.py --configs=sp500 --steps=200

For each config: the real data and batch size of configs/NAME.py, the MLP PL
scorer (item features + static item embedding -> per-item MLP -> score, plus a
per-item bias), AdamW with global-norm clipping and the PL likelihood over each
event's available items. The PyTorch side is the same architecture, batch,
optimizer and loss (reverse logcumsumexp over the ranking), in eager mode.
Both run on the same pre-built batches in one process, in alternating rounds;
the table gives the median events/s over rounds, luce's compile time and the
ratio. Needs torch (CPU: `pip install torch==2.13.0`); F1 needs the shared data.
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


def host_batches(prepared, batch_size: int, count: int, seed: int = 0) -> list[dict]:
  import luce.train
  train = prepared.arrays["train"]
  n = len(train["items"])
  return [{k: train[k][luce.train.batch_indices(i, n, batch_size, seed)] for k in luce.train.BATCH_KEYS}
          for i in range(count)]


# ---- luce ----------------------------------------------------------------------------------------

class LuceRunner:
  def __init__(self, config, prepared, batches):
    import jax
    import luce.train
    self.jax = jax
    config = luce.train.checked_config(config)
    family = luce.train.build_family(config, prepared)
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
  def __init__(self, config, prepared, batches):
    import torch
    from torch import nn
    self.torch = torch
    m, o = config.model, config.optimizer
    n = prepared.n_items
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

      def forward(self, item, event):
        b = item.shape[0]
        x = torch.cat([item, event[:, None, :].expand(b, n, event.shape[-1]),
                       self.embedding.weight[None].expand(b, n, m.embed_dim)], dim=-1)
        return self.mlp(x)[..., 0] + self.item_bias

    self.model = Scorer()
    self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.learning_rate, betas=(o.b1, o.b2),
                                       weight_decay=o.weight_decay)
    self.clip = o.clip_norm
    self.batches = [{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()} for b in batches]
    for b in self.batches:
      b["items"] = b["items"].long()
    self.i = 0

  def run(self, steps: int) -> float:
    torch = self.torch
    t0 = time.perf_counter()
    for _ in range(steps):
      b = self.batches[self.i % len(self.batches)]
      self.i += 1
      scores = self.model(b["item_features"], b["event_features"])
      w = b["weights"]
      loss = (torch_pl_nll(scores, b["items"], b["available"]) * w).sum() / w.sum()
      self.optimizer.zero_grad(set_to_none=True)
      loss.backward()
      if self.clip > 0:
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
      self.optimizer.step()
    return time.perf_counter() - t0


def bench(name: str, steps: int, rounds: int) -> dict:
  import torch
  import luce.train
  config = load_config(name)
  config.model.encoder = "mlp"
  prepared = luce.train.prepare(luce.train.checked_config(config))
  batch_size = config.train.batch_size
  batches = host_batches(prepared, batch_size, 16)
  luce_runner = LuceRunner(config, prepared, batches)
  torch_runner = TorchRunner(config, prepared, batches)
  luce_runner.run(10)
  torch_runner.run(10)  # warm-up
  rates = {"luce": [], "torch": []}
  for _ in range(rounds):
    rates["luce"].append(steps * batch_size / luce_runner.run(steps))
    rates["torch"].append(steps * batch_size / torch_runner.run(steps))
  luce_rate, torch_rate = statistics.median(rates["luce"]), statistics.median(rates["torch"])
  return {"config": name, "batch": batch_size, "items": prepared.n_items,
          "features": batches[0]["item_features"].shape[-1], "luce_events_per_s": luce_rate,
          "torch_events_per_s": torch_rate, "ratio": luce_rate / torch_rate,
          "luce_compile_s": luce_runner.compile_seconds, "torch_threads": torch.get_num_threads()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="f1,sp500")
  parser.add_argument("--steps", type=int, default=100, help="steps per timed round")
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args()
  import jax
  import torch
  print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs")
  print("| config | batch | items n | features | luce events/s | PyTorch events/s | luce / PyTorch | luce compile s |")
  print("|---|---|---|---|---|---|---|---|")
  for name in args.configs.split(","):
    r = bench(name, args.steps, args.rounds)
    print(f"| {r['config']} | {r['batch']} | {r['items']} | {r['features']} | "
          f"{r['luce_events_per_s']:,.0f} | {r['torch_events_per_s']:,.0f} | {r['ratio']:.2f}x | "
          f"{r['luce_compile_s']:.2f} |", flush=True)


if __name__ == "__main__":
  main()
