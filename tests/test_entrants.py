"""Entrant-only scoring: `gather_entrants` against a loop reference, and the PL family
scoring gathered entrants equal to the same parameters scoring the whole catalog."""

import jax
import ml_collections
import numpy as np
import optax
import pytest

import luce.train
from luce.errors import DataError, ShapeError
from luce.losses import event_nll
from luce.models import PLFamily, gather_entrants, max_available, scatter_entrants


def _arrays(rng, m=7, n=11, f=3, g=2, k=3, full_row=True):
  """Random events over n items: each has 3..n available items (one row all of them),
  a top-k list of distinct available items (some rows -1 padded)."""
  available = np.zeros((m, n), bool)
  items = np.full((m, k), -1, np.int64)
  for e in range(m):
    count = n if (full_row and e == 1) else int(rng.integers(k, n))
    on = rng.choice(n, count, replace=False)
    available[e, on] = True
    listed = rng.choice(on, k, replace=False)
    take = k if e % 3 else k - 1
    items[e, :take] = listed[:take]
  return {"available": available, "items": items,
          "weights": rng.uniform(0.5, 2.0, m).astype(np.float32),
          "item_features": rng.normal(size=(m, n, f)).astype(np.float32),
          "event_features": rng.normal(size=(m, g)).astype(np.float32)}


def test_gather_entrants_matches_a_loop(rng):
  arrays = _arrays(rng)
  width = max_available(arrays)
  rows = rng.permutation(len(arrays["items"]))[:5]
  g = gather_entrants(arrays, rows, width)
  for j, e in enumerate(rows):
    ids = np.flatnonzero(arrays["available"][e])
    c = len(ids)
    assert g["available"][j].tolist() == [True] * c + [False] * (width - c)
    np.testing.assert_array_equal(g["entrants"][j, :c], ids)
    assert not arrays["available"][e, g["entrants"][j, c:]].any()     # pads: unavailable ids
    np.testing.assert_array_equal(g["item_features"][j, :c], arrays["item_features"][e, ids])
    for slot, item in zip(g["items"][j], arrays["items"][e], strict=True):
      assert (slot == -1) if item < 0 else ids[slot] == item
    np.testing.assert_array_equal(g["event_features"][j], arrays["event_features"][e])
    assert g["weights"][j] == arrays["weights"][e]
  back = scatter_entrants(g["item_features"][..., 0], g["entrants"], g["available"], 11)
  expect = np.where(arrays["available"][rows], arrays["item_features"][rows, :, 0], -np.inf)
  np.testing.assert_array_equal(back, expect)


def test_gather_entrants_bad_input(rng):
  arrays = _arrays(rng)
  count = arrays["available"].sum(axis=1)
  rows = np.array([2, 1, 0])   # row 1 holds all 11 items
  first = rows[np.argmax(count[rows] > 5)]
  with pytest.raises(ShapeError, match=f"event row {first} has {count[first]} available items, "
                                       f"more than .* width 5"):
    gather_entrants(arrays, rows, 5)
  bad = dict(arrays, available=arrays["available"].copy())
  item = int(bad["items"][2, 0])
  bad["available"][2, item] = False
  with pytest.raises(DataError, match=f"event row 2: listed item {item} .position 0. is not among"):
    gather_entrants(bad, np.arange(4), 11)


def _family(encoder, width, dropout=0.0):
  m = ml_collections.ConfigDict(dict(encoder=encoder, hidden=16, depth=2, heads=2, embed_dim=4,
                                     dropout=dropout))
  return PLFamily(m, n_items=11, kind="ranking", k=3, item_names=(), width=width)


@pytest.mark.parametrize("encoder", ["mlp", "itransformer"])
def test_gathered_scores_equal_catalog_scores(rng, encoder):
  """Same parameters: the gathered layout's scores, NLL and loss equal the catalog's."""
  arrays = _arrays(rng)
  width = max_available(arrays)
  gathered, catalog = _family(encoder, width), _family(encoder, None)
  example = catalog.take(arrays, np.arange(4))
  params = catalog.model.init(jax.random.key(int(rng.integers(1 << 30))), example)["params"]
  # Non-zero item biases, so a wrong id lookup would show.
  params = dict(params, item_bias=rng.normal(size=11).astype(np.float32))
  s_gathered = gathered.scores(params, arrays, batch_size=3)
  s_catalog = catalog.scores(params, arrays, batch_size=3)
  assert np.isneginf(s_gathered[~arrays["available"]]).all()
  assert np.isneginf(s_catalog[~arrays["available"]]).all()
  np.testing.assert_allclose(s_gathered, s_catalog, rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(gathered.nll(params, arrays, 3), catalog.nll(params, arrays, 3),
                             rtol=1e-5)
  # The NLL is the PL likelihood of the catalog scores (an independent check of the slots).
  ref = np.asarray(event_nll(np.where(arrays["available"], s_catalog, 0.0), arrays["items"],
                             arrays["available"], kind="ranking"))
  np.testing.assert_allclose(gathered.nll(params, arrays, 3), ref, rtol=1e-5)


def test_gathered_samples_are_valid_catalog_ids(rng):
  arrays = _arrays(rng)
  family = _family("mlp", max_available(arrays))
  params = family.model.init(jax.random.key(0), family.take(arrays, np.arange(2)))["params"]
  drawn = family.sample(params, arrays, jax.random.key(1), samples=50, k=3)
  assert drawn.shape == (7, 50, 3)
  for e in range(7):
    assert arrays["available"][e, drawn[e]].all()
    assert all(len(set(row)) == 3 for row in drawn[e].tolist())
  inclusion = family.inclusion(params, arrays, jax.random.key(2), draws=50, k=3)
  np.testing.assert_allclose(inclusion.sum(axis=1), 3.0, rtol=1e-6)
  assert (inclusion[~arrays["available"]] == 0).all()


def test_gathered_training_steps_equal_catalog_steps(rng):
  """Three AdamW steps from the same init (no dropout) end at the same parameters."""
  arrays = _arrays(rng, m=8)
  width = max_available(arrays)
  config = luce.train.base_config()
  config.optimizer.warmup_steps = 0
  results = []
  for family in (_family("mlp", width), _family("mlp", None)):
    optimizer = optax.adamw(1e-2)
    state = luce.train.init_state(family.model, optimizer, family.take(arrays, np.arange(4)),
                                  jax.random.key(3))
    step = luce.train.make_train_step(family.model, optimizer, family.loss, donate=False)
    for t in range(3):
      state, metrics = step(state, family.take(arrays, np.arange(4) + t), jax.random.key(4))
    results.append((state.params, float(metrics["loss"])))
  (p1, l1), (p2, l2) = results
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_transformer_encoder_keeps_the_catalog_layout():
  assert _family("transformer", 5).width is None
