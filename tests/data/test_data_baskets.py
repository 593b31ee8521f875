"""baskets: one basket of item labels per line; variable-size sets over the whole catalog,
and long: set files without an availability column scored over the catalog too."""

import itertools
import math

import numpy as np
import pytest

import luce.data
from luce.errors import ConfigError, DataError
from luce.losses import event_nll

BASKETS = "milk,bread,eggs\nbread,butter\n\nmilk,bread,jam,eggs\neggs\n"


def test_baskets_read_in_file_order_over_the_whole_catalog(tmp_path):
  path = tmp_path / "b.txt"
  path.write_text(BASKETS)
  table = luce.data.read(f"baskets:{path}")
  assert table.kind == "set" and len(table) == 4
  assert table.catalog.labels == ("milk", "bread", "eggs", "butter", "jam")
  assert [[table.catalog.labels[i] for i in row] for row in table.events.column("items").to_pylist()] \
      == [["milk", "bread", "eggs"], ["bread", "butter"], ["milk", "bread", "jam", "eggs"], ["eggs"]]
  assert table.times().tolist() == [0, 1, 2, 3] and table.metadata["blank_lines"] == "1"
  assert "available" not in table.events.column_names
  arrays = luce.data.model_arrays(table)
  assert arrays["available"].all()                      # every catalog item, every basket


def test_variable_size_baskets_are_scored_exactly(tmp_path, rng):
  """Each basket's set NLL under random scores equals float64 brute force (sum over the
  orderings of the basket of PL top-|S| probabilities); uniform scores give log C(n, |S|)."""
  path = tmp_path / "b.txt"
  path.write_text(BASKETS)
  arrays = luce.data.model_arrays(luce.data.read(f"baskets:{path}"))
  n = arrays["available"].shape[1]
  scores = rng.normal(size=n)
  got = np.asarray(event_nll(np.broadcast_to(scores, arrays["available"].shape).astype(np.float32),
                             arrays["items"], arrays["available"], kind="set"), np.float64)
  w = np.exp(scores - scores.max())
  for e, row in enumerate(arrays["items"]):
    basket = [int(i) for i in row if i >= 0]
    p = 0.0
    for order in itertools.permutations(basket):
      left, q = w.sum(), 1.0
      for i in order:
        q *= w[i] / left
        left -= w[i]
      p += q
    np.testing.assert_allclose(got[e], -math.log(p), rtol=2e-5)
  uniform = np.asarray(event_nll(np.zeros(arrays["available"].shape, np.float32), arrays["items"],
                                 arrays["available"], kind="set"))
  sizes = (arrays["items"] >= 0).sum(axis=1)
  np.testing.assert_allclose(uniform, [math.log(math.comb(n, int(s))) for s in sizes], rtol=1e-5)


def test_basket_problems_are_named(tmp_path):
  path = tmp_path / "b.txt"
  path.write_text("milk,bread\nbread,bread,eggs\nmilk,,eggs\n")
  with pytest.raises(DataError, match=r"b.txt, row 2.*item twice in one basket") as info:
    luce.data.read(f"baskets:{path}?on_invalid=report")
  assert "row 3" in str(info.value) and "empty item label" in str(info.value)
  path.write_text("milk,bread\nbread,bread,eggs\n")
  assert luce.data.read(f"baskets:{path}?duplicates=once").events.column("items").to_pylist()[1] \
      == [1, 2]


def test_semicolon_and_header_options(tmp_path):
  path = tmp_path / "b.csv"
  path.write_text("basket\na;b\nb;c;d\n")
  table = luce.data.read(f"baskets:{path}?header=true")
  assert len(table) == 2 and table.n_items == 4


def _long_sets(tmp_path):
  path = tmp_path / "l.csv"
  path.write_text("basket,item\n1,a\n1,b\n2,b\n2,c\n3,a\n3,c\n3,d\n")
  return path


def test_long_sets_without_availability_are_scored_over_the_catalog(tmp_path):
  """Before: each event's own rows were all it could pick, so every NLL was 0."""
  table = luce.data.read(f"long:{_long_sets(tmp_path)}?event=basket&item=item&kind=set")
  assert "available" not in table.events.column_names
  arrays = luce.data.model_arrays(table)
  nll = np.asarray(event_nll(np.zeros(arrays["available"].shape, np.float32), arrays["items"],
                             arrays["available"], kind="set"))
  np.testing.assert_allclose(nll, [math.log(6), math.log(6), math.log(4)], rtol=1e-5)


def test_long_set_covariates_without_availability_are_refused(tmp_path):
  path = tmp_path / "l.csv"
  path.write_text("basket,item,price\n1,a,1.0\n1,b,2.0\n2,b,2.0\n2,c,3.0\n")
  with pytest.raises(ConfigError, match="covariates on sets need the items that could have been"):
    luce.data.read(f"long:{path}?event=basket&item=item&kind=set&covariates=price")

