"""luce.models: neural Plackett-Luce scorers (Flax linen) and the model-family interface.

    >>> import jax, numpy as np, luce.models
    >>> model = luce.models.PLScorer(n_items=5, encoder="mlp", hidden=8, depth=1, embed_dim=2)
    >>> batch = {"item_features": np.zeros((2, 5, 3), np.float32),
    ...          "event_features": np.zeros((2, 1), np.float32), "available": np.ones((2, 5), bool)}
    >>> params = model.init(jax.random.key(0), batch)["params"]
    >>> model.apply({"params": params}, batch).shape                 # float32[B, n] scores
    (2, 5)

`PLFamily` is the scorer as a family of the one train loop (`luce.train`):
its loss and NLL are the exact PL likelihood, its samples Gumbel-top-k lists.
It scores each event's available items only, gathered into a padded
[batch, max_available] block (`gather_entrants`):

    >>> arrays = {"available": np.array([[True, False, True, False, True]]),
    ...           "items": np.array([[4, 0]]), "weights": np.ones(1),
    ...           "item_features": np.arange(15.0).reshape(1, 5, 3),
    ...           "event_features": np.zeros((1, 1))}
    >>> g = luce.models.gather_entrants(arrays, np.array([0]), width=3)
    >>> g["entrants"].tolist(), g["items"].tolist(), g["item_features"][0, :, 0].tolist()
    ([[0, 2, 4]], [[2, 0]], [0.0, 6.0, 12.0])

For wide events (a catalog of 10,000 items) `PLFamily(..., negatives=M)` trains
on each event's chosen items plus M negatives drawn from its unchosen items,
uniformly or by a proposal q (`sampled_batch`: the sampled PL likelihood with
the log(|U|/M) or log-q correction, exact when M >= |U|); evaluation stays exact.
"""

from luce.models._sequence import DiagonalSSM, GRUStack, S5Stack, history_sequence, ssm_discretise
from luce.models._scorer import (ENCODERS, MLP, AttentionBlock, Dropout, DropoutRate, PLScorer,
                                 dropout_keep, history_columns)
from luce.models._family import (BATCH_KEYS, PLFamily, chunked, gather_entrants, inclusion_counts,
                                 max_available, scatter_entrants, take_events)
from luce.models._negatives import sample_negatives, sampled_batch
