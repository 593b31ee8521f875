"""Events from a known context-dependent PL model; the trained model should match it.

    luce-train --config=configs/synthetic.py --workdir=/tmp/luce-synthetic

Draws `data.synthetic.n_events` top-k rankings of n items from
luce.models.synthetic_pl (static strengths plus a bonus for the previous event's
items), trains an MLP PL scorer and prints the validation NLL of the model, the
baselines and `oracle` (the generating model). Expect the model within 3% of
the oracle and well below every baseline. Size and seed are config fields:
`--config.data.synthetic.n_items=50 --config.data.synthetic.seed=3`;
`:set` draws unordered sets instead of rankings.
"""

from luce.configs.common import base_config


def get_config(arg: str = "ranking"):
  c = base_config()
  c.data.source = "synthetic"
  c.data.synthetic.kind = arg or "ranking"
  c.data.eval_k = 5
  c.data.features.calendar = False
  c.train.batch_size = 128
  c.train.num_steps = 800
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  return c
