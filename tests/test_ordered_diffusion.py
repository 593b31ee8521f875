"""Ordered subset diffusion (rankings): the exact likelihood against brute force over
slot orders, normalisation, the exact sampler, the bound, the PL special case, and the
family through training, luce-eval's and luce-predict's paths."""

import itertools
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import jax
import jax.numpy as jnp
from scipy import stats

import luce
import luce.train
from luce import diffusion as D
from luce.configs import synthetic
from luce.errors import InfeasibleError, InputError, ShapeError


def _denoiser(n, k, seed, scale=0.8):
  """A context-free denoiser with random parameters, every one drawn N(0, scale^2)
  (so the interaction weights are not zero): its jitted ordered logits function.
  Only the parameters' shapes come from Flax (eval_shape: no compile of init)."""
  model = D.SubsetDenoiser(n_items=n, k=k, hidden=8, depth=2)
  shapes = jax.eval_shape(lambda key: model.init(key, None, jnp.zeros((1, n), bool),
                                                 jnp.full((1,), k), method="init_all")["params"],
                          jax.random.key(0))
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda x: jnp.asarray(rng.normal(0.0, scale, x.shape), x.dtype), shapes)
  enc = model.apply({"params": params}, None, method="encode")
  return jax.jit(lambda v, r: model.apply({"params": params}, enc, v, r, method="denoise_ordered"))


def _brute_force(fn, ranking, n, available):
  """(log p, bound) of one ranking (a list of item ids) by enumerating its L! slot
  orders in numpy float64: p = sum_sigma prod_j (1 / (L - j)) pi_{sigma_j}(x | placed),
  bound = mean_sigma sum_j -log pi_{sigma_j}(x | placed)."""
  length = len(ranking)
  memo = {}

  def log_pi(placed, rank):
    if placed not in memo:
      visible = np.full((1, 1, n), -1, np.int32)
      for p in placed:
        visible[0, 0, ranking[p]] = p
      r = np.full((1, 1), length - len(placed), np.int32)
      memo[placed] = (np.asarray(fn(jnp.asarray(visible), jnp.asarray(r)), np.float64)[0, 0],
                      visible[0, 0] < 0)
    logits, hidden = memo[placed]
    ok = hidden & available
    z = logits[rank][ok]
    return logits[rank][ranking[rank]] - (z.max() + math.log(np.exp(z - z.max()).sum()))

  total, bound = 0.0, 0.0
  for order in itertools.permutations(range(length)):
    prob, nll = 1.0, 0.0
    for j, rank in enumerate(order):
      lp = log_pi(tuple(sorted(order[:j])), rank)
      prob *= math.exp(lp) / (length - j)
      nll -= lp
    total += prob
    bound += nll / math.factorial(length)
  return math.log(total), bound


def _random_rankings(rng, n, k, rows, available):
  out = np.full((rows, k), -1, np.int32)
  for b in range(rows):
    length = k if b % 2 == 0 else int(rng.integers(1, k))
    out[b, :length] = rng.choice(np.flatnonzero(available[b]), length, replace=False)
  return out


def test_exact_log_prob_and_bound_match_brute_force_over_slot_orders(seed, rng):
  n, k = 7, 5
  fn = _denoiser(n, k, seed % 1000)
  available = np.ones((4, n), bool)
  available[1, rng.choice(n, n - k, replace=False)] = False     # exactly k available
  available[3, rng.integers(n)] = False
  ranking = _random_rankings(rng, n, k, 4, available)
  nll, bound = D.exact_ranking_nll_and_elbo(fn, ranking, n, available=available)
  for b in range(4):
    row = [int(i) for i in ranking[b] if i >= 0]
    want_lp, want_bound = _brute_force(fn, row, n, available[b])
    assert -float(nll[b]) == pytest.approx(want_lp, rel=1e-5, abs=1e-5), b
    assert float(bound[b]) == pytest.approx(want_bound, rel=1e-5, abs=1e-5), b
  # The public entry points agree with the shared path, with subsets in chunks too.
  np.testing.assert_allclose(D.exact_ranking_log_prob(fn, ranking, n, available=available,
                                                      subset_chunk=5), -nll, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(D.ranking_elbo(fn, ranking, n, available=available), bound, rtol=1e-6)


def test_probabilities_of_all_rankings_sum_to_one(seed):
  """Over every ranking of the available items of each length L (rows padded with -1)."""
  n, k = 5, 3
  fn = _denoiser(n, k, seed % 1000)
  available = np.array([True, True, False, True, True])
  items = np.flatnonzero(available)
  rows, lengths = [], []
  for length in (3, 2, 1):
    for r in itertools.permutations(items, length):
      rows.append(list(r) + [-1] * (k - length))
      lengths.append(length)
  rows.append([2, 0, 1])                                    # lists an unavailable item
  log_p = np.asarray(D.exact_ranking_log_prob(fn, np.array(rows), n, available=available),
                     np.float64)
  lengths = np.array(lengths)
  for length in (3, 2, 1):
    assert np.exp(log_p[:-1][lengths == length]).sum() == pytest.approx(1.0, abs=1e-5), length
  assert log_p[-1] == -np.inf


def test_exact_sampler_matches_the_exact_probabilities(seed):
  """Chi-square of 20000 draws over the 24 rankings of 3 of 4 items, and of 10000 rows
  of the same batch drawing 2 ranks of the 3 items they have, against the recursion
  (rankings expected fewer than 5 times pooled in one cell)."""
  n, k, batch = 4, 3, 30000
  fn = _denoiser(n, k, seed % 1000, scale=1.0)
  full = np.arange(batch) < 20000
  lengths = np.where(full, 3, 2)
  available = np.ones((batch, n), bool)
  available[~full, 1] = False
  draw = lambda key: np.asarray(D.sample_rankings(key, fn, n, k, batch, available=available,
                                                  lengths=lengths))
  drawn = draw(jax.random.key(seed))
  assert drawn.shape == (batch, k) and drawn.dtype == np.int32
  np.testing.assert_array_equal(drawn, draw(jax.random.key(seed)))    # same key, same draws
  three = [list(r) for r in itertools.permutations(range(n), 3)]
  two = [list(r) + [-1] for r in itertools.permutations([0, 2, 3], 2)]
  rows = np.array(three + two, np.int32)
  avail_rows = np.ones((len(rows), n), bool)
  avail_rows[len(three):, 1] = False
  p = np.exp(np.asarray(D.exact_ranking_log_prob(fn, rows, n, available=avail_rows), np.float64))
  index = {tuple(r): i for i, r in enumerate(rows.tolist())}
  for part, sl in ((drawn[full], slice(0, len(three))), (drawn[~full], slice(len(three), None))):
    counts = np.bincount([index[tuple(r)] for r in part.tolist()], minlength=len(rows))
    assert counts.sum() == len(part)                   # every draw is a valid ranking of its row
    expected = p[sl] / p[sl].sum() * len(part)
    rare = expected < 5                      # pooled: chi-square needs expected counts >= 5
    observed, expected = counts[sl][~rare], expected[~rare]
    if rare.any():
      observed = np.append(observed, counts[sl][rare].sum())
      expected = np.append(expected, p[sl][rare].sum() / p[sl].sum() * len(part))
    _, pvalue = stats.chisquare(observed, expected)
    assert pvalue > 1e-4, pvalue
  with pytest.raises(InfeasibleError, match="row 0 has 1 available items"):
    D.sample_rankings(jax.random.key(0), fn, n, k, 2, available=np.eye(1, n, dtype=bool)[0])
  with pytest.raises(InputError, match=r"lengths\[1\] = 5"):
    D.sample_rankings(jax.random.key(0), fn, n, k, 2, lengths=np.array([2, 5]))


def test_bound_is_above_the_exact_nll_and_monte_carlo_estimates_it(seed, rng):
  n, k = 8, 4
  fn = _denoiser(n, k, seed % 1000)
  available = np.ones((6, n), bool)
  ranking = _random_rankings(rng, n, k, 6, available)
  ranking[5, 1:] = -1                  # a length-1 row has no slot order to mix over
  nll, bound = D.exact_ranking_nll_and_elbo(fn, ranking, n)
  assert np.all(np.asarray(bound) >= np.asarray(nll) - 1e-5)
  assert float(bound[5]) == pytest.approx(float(nll[5]), rel=1e-6)
  mc = D.ranking_elbo(fn, ranking, n, key=jax.random.key(seed), samples=4000, sample_chunk=1000)
  np.testing.assert_allclose(mc, bound, rtol=0.03)


def test_rank_and_visibility_blind_logits_give_the_pl_set_probability_over_orders(rng):
  """Logits that ignore the visible ranks and the rank asked for make every order of
  the set equally likely: p(x) = P_PL(set of x) / L!, not the PL ranking probability
  (the slot order, drawn uniformly, decides which rank is filled first)."""
  n, k = 7, 4
  with jax.enable_x64(True):
    scores = jnp.asarray(rng.normal(0, 1.5, (5, n)))
    available = np.ones((5, n), bool)
    available[2, :2] = False
    ranking = _random_rankings(rng, n, k, 5, available)
    fn = lambda v, r: jnp.broadcast_to(scores[:, None, :], v.shape[:-1] + (k, n))
    log_p = np.asarray(D.exact_ranking_log_prob(fn, ranking, n, available=available))
    assert log_p.dtype == np.float64
    lengths = (ranking >= 0).sum(axis=1)
    want = np.asarray(luce.pl_set_log_prob(scores, jnp.asarray(ranking), where=available,
                                           method="exact"))
    want = want - np.array([math.lgamma(x + 1) for x in lengths])
    np.testing.assert_allclose(log_p, want, rtol=1e-10, atol=1e-10)
    # Reversing a ranking leaves its probability unchanged; PL's ranking likelihood differs.
    full = ranking[0:1]
    fn0 = lambda v, r: jnp.broadcast_to(scores[0:1, None, :], v.shape[:-1] + (k, n))
    np.testing.assert_allclose(D.exact_ranking_log_prob(fn0, full[:, ::-1].copy(), n),
                               D.exact_ranking_log_prob(fn0, full, n), rtol=1e-10)
    pl = float(luce.pl_log_prob(scores[0:1], jnp.asarray(full))[0])
    assert abs(pl - log_p[0]) > 1e-3


def test_bad_rankings_name_the_row():
  fn = _denoiser(5, 3, 0)
  with pytest.raises(InputError, match=r"ranking\[1\] = \[2, 2, 0\] repeats an item"):
    D.exact_ranking_log_prob(fn, np.array([[0, 1, 2], [2, 2, 0]]), 5)
  with pytest.raises(InputError, match=r"ranking\[0\] = \[1, -1, 3\] has an item after"):
    D.exact_ranking_log_prob(fn, np.array([[1, -1, 3]]), 5)
  with pytest.raises(InputError, match=r"ranking\[0, 2\] = 5 is not an item id"):
    D.ranking_elbo(fn, np.array([[1, 0, 5]]), 5)
  with pytest.raises(ShapeError, match="k = 13 > 12"):
    D.exact_ranking_log_prob(fn, np.arange(13)[None], 20)


def _config():
  c = synthetic.get_config("ranking")
  c.data.source = "synthetic:ranking?n_items=8&k=4&n_events=200"
  c.data.eval_k = 3
  c.model.update(hidden=16, depth=1, embed_dim=4, family="diffusion")
  c.train.update(batch_size=32, num_steps=40, log_every=10, eval_every=40, checkpoint_every=40,
                 progress_bar=False, async_checkpoints=False)
  c.optimizer.update(learning_rate=1e-2, warmup_steps=5)
  c.baselines.names = ("uniform",)
  return luce.train.checked_config(c)


def test_family_trains_and_runs_the_train_eval_predict_paths(tmp_path):
  """A tiny ranking run through what luce-train, luce-eval and luce-predict call (in
  process): training lowers the loss and the NLL below uniform's; samples are valid."""
  c = _config()
  result = luce.train.train_and_evaluate(c, tmp_path)                # luce-train
  assert result["family"] == "diffusion" and result["nll"] == "exact"
  valid = result["valid"]
  assert abs(valid["uniform"]["nll_per_event"] - math.log(8 * 7 * 6 * 5)) < 1e-4
  assert valid["model"]["nll_per_event"] < valid["uniform"]["nll_per_event"] - 0.3
  lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [line["loss"] for line in lines if line["split"] == "train"]
  assert losses[-1] < losses[0], losses

  run = luce.train.load_run(tmp_path)                                 # luce-eval
  assert isinstance(run.family, D.DiffusionFamily) and run.family.nll_kind == "exact"
  table = luce.train.evaluate_run(run, "test")
  assert set(table["model"]) == set(table["uniform"])
  assert "exact likelihood" in luce.train.format_table(table, "test", 3, "ranking",
                                                       run.family.nll_kind)
  luce.train.write_eval(tmp_path, "test", run.step, run.family, run.config, "ranking", table)
  assert json.loads((tmp_path / "eval_test.json").read_text())["family"] == "diffusion"

  arrays = run.prepared.arrays["test"]
  m = len(arrays["items"])
  with pytest.raises(luce.ConfigError, match="pass 1 <= k <= 4"):
    run.family.sample(run.params, arrays, jax.random.key(1), 5, 5)

  # luce-predict (as many samples as draws: one sampler compile serves both)
  out, hits = luce.train.predict(run, "test", samples=40, draws=40, k=3, seed=0)
  pq.write_table(out, tmp_path / "pred.parquet")
  back = pq.read_table(tmp_path / "pred.parquet")
  assert back.num_rows == m and hits["uniform"] == pytest.approx(9 / 8)
  inclusion = np.array(back.column("inclusion_prob").to_pylist())
  np.testing.assert_allclose(inclusion.sum(axis=1), 3.0, atol=1e-5)
  samples = np.array(back.column("samples").to_pylist())
  assert samples.shape == (m, 40, 3)
  assert all(len(set(r.tolist())) == 3 and arrays["available"][e, r].all()
             for e in range(m) for r in samples[e])
  assert back.schema.metadata[b"luce.scores"].startswith(b"rank-0 logits")
  assert np.all(np.isfinite(np.array(back.column("scores").to_pylist())))
