"""luce.data: event tables, readers of real formats, validation, features, EDA.

    >>> import luce.data
    >>> table = luce.data.read("synthetic:ranking?n_items=20&k=5&n_events=300&seed=0")
    >>> table.items_array().shape, table.kind                # int32[m, k] item ids, best first
    ((300, 5), 'ranking')
    >>> luce.data.oracle_scores(table).shape                  # the generating model's scores
    (300, 20)
    >>> feats = luce.data.build_features(table, luce.data.FeatureConfig(calendar=False))
    >>> luce.data.split_by_time(table, (0.8, 0.1, 0.1)).bounds
    (0, 240, 270, 300)

Real files go through the same call, e.g. `luce.data.read("draws:draws/powerball.csv")`
(a relative path is looked up in $LUCE_SHARED_DATA).
"""

from luce.data._read import check, read
from luce.data._source import SCHEMES, parse_source, shared_data_dir
from luce.data._synthetic import SyntheticPL, oracle_scores, synthetic_pl
from luce.data._table import (
    KINDS,
    SCHEMA_VERSION,
    Catalog,
    EventTable,
    content_hash,
    read_parquet,
    write,
)
from luce.data._validate import Problem, Provenance, find_problems, validate
from luce.data._features import (
    rank_scores,
    FeatureConfig,
    Features,
    build_features,
    check_no_lookahead,
    perturb_from,
)
from luce.data._store import (
    STORE_DTYPES,
    FeatureStore,
    build_store,
    feature_chunks,
    from_bfloat16_bits,
    to_bfloat16_bits,
)
from luce.data._distributed import STORE_ENGINES, build_store_distributed
from luce.data._pipeline import FeatureRows, StoreBatches, process_rows, store_dataset
from luce.data._batching import TimeSplit, batches, model_arrays, split_by_time
from luce.data._eda import (
    ChiSquare,
    Clusters,
    CoOccurrence,
    Eda,
    RankStability,
    SumTest,
    WinRates,
    chi_square,
    explore,
    fixed_buckets,
    item_frequencies,
    learned_clusters,
    pair_cooccurrence,
    pattern_tests,
    rank_stability,
    win_rates,
)
