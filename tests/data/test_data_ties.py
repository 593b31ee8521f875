"""Readers that keep ties (ties=keep), EventTable.tied_array(), and the tie fit on a
PrefLib file with ties against the enumerated likelihood maximised by scipy."""

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

import luce
from luce import data as ld
from luce.errors import DataError

TOC = """# FILE NAME: t.toc
# DATA TYPE: toc
# NUMBER ALTERNATIVES: 4
# ALTERNATIVE NAME 1: Apple
# ALTERNATIVE NAME 2: Banana
# ALTERNATIVE NAME 3: Cherry
# ALTERNATIVE NAME 4: Date
5: 1,2,3,4
2: 3,{1,2},4
1: {2,4},1,3
"""


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return path


def test_preflib_keeps_braces_as_ties(tmp_path):
  path = _write(tmp_path, "t.toc", TOC)
  with pytest.raises(DataError, match=r"row 9, column 'order': tied items; choose \?ties=keep"):
    ld.read(f"preflib:{path}")
  t = ld.read(f"preflib:{path}?ties=keep")
  assert t.has_ties() and t.metadata["ties"] == "keep"
  assert t.items_array().tolist() == [[0, 1, 2, 3], [2, 0, 1, 3], [1, 3, 0, 2]]
  assert t.tied_array().tolist() == [[False] * 4, [False, False, True, False],
                                     [False, True, False, False]]
  # Items in the order ties=order gives, so code that ignores `tied` reads the same lists.
  assert (t.items_array() == ld.read(f"preflib:{path}?ties=order").items_array()).all()
  assert not ld.read(f"preflib:{path}?ties=order").has_ties()
  e = ld.read(f"preflib:{path}?ties=keep&counts=expand")
  assert e.n_events == 8 and e.tied_array()[5:7, 2].all() and e.tied_array()[7, 1]


def test_long_keeps_equal_ranks_as_ties(tmp_path):
  text = "race,rider,rank\n1,a,1\n1,b,2\n1,c,2\n1,d,3\n2,b,1\n2,a,1\n2,d,2\n2,c,3\n"
  path = _write(tmp_path, "r.csv", text)
  with pytest.raises(DataError, match=r"share this rank; choose a tie policy: \?ties=keep"):
    ld.read(f"long:{path}?event=race&item=rider&rank=rank")
  t = ld.read(f"long:{path}?event=race&item=rider&rank=rank&ties=keep")
  labels = np.asarray(t.catalog.labels)
  assert labels[t.items_array()].tolist() == [["a", "b", "c", "d"], ["b", "a", "d", "c"]]
  assert t.tied_array().tolist() == [[False, False, True, False], [False, True, False, False]]
  assert t.metadata["tied_positions"] == "2"


def test_ergast_shared_positions_are_ties(shared):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    keep = ld.read("ergast:rankings/f1_1950_2019?ties=keep")
    order = ld.read("ergast:rankings/f1_1950_2019")
  assert (keep.items_array() == order.items_array()).all()
  tied = keep.tied_array()
  assert tied.shape == keep.items_array().shape and not tied[:, 0].any()
  assert not (tied & (keep.items_array() < 0)).any()
  # Shared drives (1950s): two drivers credited with one car's positionOrder. Count the
  # rows that repeat (race, positionOrder) once each driver's repeats are merged.
  res = pd.read_csv(shared / "rankings/f1_1950_2019/results.csv")
  res = res.sort_values("positionOrder").drop_duplicates(["raceId", "driverId"])
  assert int(tied.sum()) == int(res.duplicated(["raceId", "positionOrder"]).sum()) > 0
  assert int(keep.metadata["tied_positions"]) == int(tied.sum())


def test_tied_column_round_trips_and_is_checked(tmp_path):
  t = ld.read(f"preflib:{_write(tmp_path, 't.toc', TOC)}?ties=keep")
  path = tmp_path / "t.parquet"
  digest = ld.write(t, path)
  back = ld.read_parquet(path)
  assert back.content_hash == digest == t.content_hash
  assert (back.tied_array() == t.tied_array()).all()
  built = ld.EventTable.from_arrays(t.items_array(), catalog=4, kind="ranking",
                                    tied=t.tied_array())
  assert (built.tied_array() == t.tied_array()).all()
  assert not ld.EventTable.from_arrays(t.items_array(), catalog=4).tied_array().any()
  with pytest.raises(DataError, match=r"tied must be bool\[3, 4\]"):
    ld.EventTable.from_arrays(t.items_array(), catalog=4, tied=t.tied_array()[:, :3])
  bad = ld.EventTable.from_arrays(t.items_array(), catalog=4, kind="ranking",
                                  tied=np.eye(3, 4, dtype=bool))
  with pytest.raises(DataError, match=r"column 'tied', row 0: the first item"):
    bad.tied_array()


def _enumerated_objective(rows, tied, avail, counts, n, big_d, prior):
  """−(log-likelihood − prior/2 ‖θ‖²) and its gradient, each stage's
  denominator a logsumexp over every subset (itertools) of its remaining items."""
  stages = []
  for r, t, a, c in zip(rows, tied, avail, counts):
    blocks = []
    for item, flag in zip(r, t):
      if item < 0:
        break
      if flag:
        blocks[-1].append(int(item))
      else:
        blocks.append([int(item)])
    left = [i for i in range(n) if a[i]]
    for b in blocks:
      subsets = [s for d in range(1, min(big_d, len(left)) + 1)
                 for s in itertools.combinations(left, d)]
      x = np.zeros((len(subsets), n))
      for j, s in enumerate(subsets):
        x[j, list(s)] = 1.0 / len(s)
      chosen = np.zeros(n)
      chosen[b] = 1.0 / len(b)
      stages.append((c, chosen, len(b), x, np.array([len(s) for s in subsets])))
      left = [i for i in left if i not in b]

  def neg(p):
    theta, lam = p[:n], np.concatenate([[0.0], p[n:]])
    val, grad = -0.5 * prior * theta @ theta, np.concatenate([-prior * theta, np.zeros(big_d - 1)])
    for c, chosen, d, x, sizes in stages:
      a = x @ theta + lam[sizes - 1]
      w = np.exp(a - a.max())
      z = w.sum()
      w /= z
      val += c * (chosen @ theta + lam[d - 1] - a.max() - np.log(z))
      grad[:n] += c * (chosen - w @ x)
      if d > 1:
        grad[n + d - 2] += c
      for dd in range(2, big_d + 1):
        grad[n + dd - 2] -= c * w[sizes == dd].sum()
    return -val, -grad

  return neg


def test_fit_on_preflib_file_with_ties(shared):
  t = ld.read("preflib:rankings/preflib/education_qualities.toi?ties=keep")
  r, tied, w = t.items_array().astype(np.int64), t.tied_array(), t.weights()
  assert tied.sum() == 2 and t.n_items == 20
  avail = luce.listed_items(r, t.n_items)  # PlackettLuce's reading: only the listed compete
  fit = luce.fit_pl_tied(r, t.n_items, tied=tied, where=avail, counts=w)
  assert fit.max_tie_order == 2
  neg = _enumerated_objective(r, tied, avail, w, t.n_items, 2, 0.01)
  res = optimize.minimize(neg, np.zeros(t.n_items + 1), jac=True, method="BFGS",
                          options={"gtol": 1e-11, "maxiter": 5000})
  theta = res.x[:t.n_items] - res.x[:t.n_items].mean()
  np.testing.assert_allclose(fit.log_strengths, theta, atol=1e-5)
  np.testing.assert_allclose(fit.log_tie, res.x[t.n_items:], atol=1e-5)
  assert abs(fit.log_posterior + res.fun) < 1e-8
  assert np.isfinite(fit.log_tie_stderr).all() and (fit.stderr > 0).all()
