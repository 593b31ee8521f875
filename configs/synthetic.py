"""Events from a known context-dependent PL model; the trained model should match it.

    luce-train --config=configs/synthetic.py --workdir=/tmp/luce-synthetic

Draws 4,000 top-5 rankings of 20 items from the `synthetic:` source of
luce.data.read (luce.data.synthetic_pl: static strengths plus a bonus for the
previous event's items), trains an MLP PL scorer and prints the validation NLL
of the model, the baselines and `oracle` (the generating model). Expect the
model within 3% of the oracle and well below every baseline. Size and seed are
options of the source string:
`--config.data.source='synthetic:ranking?n_items=50&k=5&n_events=4000&seed=3'`;
`:set` draws unordered sets instead of rankings.
"""

from luce.train import base_config


def get_config(arg: str = "ranking"):
  c = base_config()
  c.data.source = f"synthetic:{arg or 'ranking'}?n_items=20&k=5&n_events=4000&seed=0"
  c.data.eval_k = 5
  c.data.features.calendar = False
  c.train.batch_size = 128
  c.train.num_steps = 800
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  # luce-tune's default space: what population training may vary too
  # (luce-tune --population=P trains P trials at once).
  c.tune.space = ("optimizer.learning_rate=loguniform(1e-3, 3e-2)",
                  "optimizer.weight_decay=loguniform(1e-5, 1e-2)",
                  "model.dropout=uniform(0.0, 0.3)")
  return c
