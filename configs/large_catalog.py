"""A catalog of 10,000 items trained with sampled negatives; evaluated on the exact NLL.

    luce-train --config=configs/large_catalog.py --workdir=/tmp/luce-large-catalog

Draws 4,000 top-5 rankings of 10,000 items from the `synthetic:` source (static
strengths θ ~ N(0, 2²) plus a bonus for the previous event's items) and trains an
MLP PL scorer on each event's 5 chosen items plus `model.negatives` = 64 negatives
drawn from its 9,995 unchosen items by popularity (`model.negative_proposal`: PL
sampling from 1 + each item's training picks; `luce.models.sampled_batch`: the
sampled PL likelihood with the log-q correction), 145x fewer scores per step than
the exact loss. Prints the validation table (exact NLL over all 10,000
items) of the model, the baselines and `oracle` (the generating model); expect the
model within 5% of the oracle and below every baseline (benchmarks/RESULTS.md).
`--config.model.negatives=0` trains on the exact likelihood for comparison,
`--config.model.negative_proposal=uniform` draws uniformly (needs M near 512);
`:set` draws unordered sets. The static PL baseline is left out: `luce.fit_pl`
forms the dense n x n Fisher information (at most 8,192 items).
"""

from luce.train import base_config


def get_config(arg: str = "ranking"):
  c = base_config()
  c.data.source = (f"synthetic:{arg or 'ranking'}?n_items=10000&k=5&n_events=4000&item_spread=2"
                   f"&seed=0")
  c.data.eval_k = 5
  # The generating model reads the last event only; each feature costs 4,000 x 10,000
  # float32 numbers (160 MB) in memory.
  c.data.features.calendar = False
  c.data.features.last = 1
  c.data.features.horizons = ()
  c.data.features.since_last = False
  c.model.hidden = 32
  c.model.depth = 1
  c.model.embed_dim = 2
  c.model.negatives = 64
  c.model.negative_proposal = "popularity"
  c.optimizer.learning_rate = 1e-2
  c.optimizer.weight_decay = 0.0
  c.train.batch_size = 128
  c.train.num_steps = 300
  c.train.eval_every = 100
  c.train.checkpoint_every = 100
  c.train.eval_batch_size = 64   # an evaluation chunk scores 64 x 10,000 items
  c.baselines.names = ("uniform", "frequency", "recency")
  return c
