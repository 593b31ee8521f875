"""luce.diffusion on luce.train's pipeline: a few steps of DiffusionModel, exact NLL for both families."""

import numpy as np

from luce import diffusion as D
from luce.configs import synthetic


def test_train_diffusion_smoke_and_one_evaluation_path():
  c = synthetic.get_config("set")
  c.data.synthetic.update(n_items=12, k=3, n_events=300)
  c.model.update(hidden=16, depth=1, embed_dim=4)
  c.train.update(batch_size=32, num_steps=12, log_every=6, progress_bar=False)
  c.baselines.names = ("uniform",)
  result = D.train_diffusion(c, log=lambda *a: None)
  valid = result["valid"]
  assert set(valid) == {"diffusion", "uniform", "oracle"}
  # uniform through the recursion is log C(12, 3) on every event
  assert abs(valid["uniform"]["nll_per_event"] - np.log(220)) < 1e-4
  assert np.isfinite(valid["diffusion"]["nll_per_event"])
  # the oracle is better than uniform on its own data
  assert valid["oracle"]["nll_per_event"] < valid["uniform"]["nll_per_event"]
