"""Helpers the test modules import (`from luce_test_utils import ...`).

They live here, not in conftest.py: tests/ and tests/data/ each have a
conftest.py, and a plain `from conftest import` gets whichever one Python
imported first.
"""

import os

import numpy as np


def shared_data_dir():
  """The shared data folder, or None when it is absent."""
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = os.environ.get("LUCE_SHARED_DATA", os.path.join(here, "..", "shared", "data"))
  return path if os.path.isdir(path) else None


def pallas_modes():
  """The `interpret=` values a Pallas kernel test runs under: the HLO
  interpreter, the TPU and GPU simulators, and compiled (False) when the
  default backend is an accelerator."""
  import jax
  modes = [True, "tpu", "gpu"]
  if jax.default_backend() in ("gpu", "tpu"):
    modes.append(False)
  return modes


def gumbel_top_k(rng, scores, k, where=None):
  """Top-k lists by Gumbel-max in numpy from float[m, n] scores, independent of luce's
  sampler (-1 past the available items)."""
  g = scores + rng.gumbel(size=np.shape(scores))
  if where is not None:
    g = np.where(where, g, -np.inf)
  order = np.argsort(-g, axis=1)[:, :k]
  if where is not None:
    order = np.where(np.take_along_axis(where, order, axis=1), order, -1)
  return order.astype(np.int32)
