"""luce.models: neural Plackett-Luce scorers (Flax linen) and the synthetic generating model.

    model = luce.models.PLScorer(n_items=20, encoder="mlp", hidden=64)
    params = model.init(key, batch)["params"]
    scores = model.apply({"params": params}, batch)     # float32[B, n]
"""

from luce.models._scorer import ENCODERS, MLP, AttentionBlock, PLScorer, history_columns
from luce.models.synthetic import SyntheticPL, synthetic_pl
