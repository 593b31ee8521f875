#!/usr/bin/env bash
# The tables of benchmarks/MODELS.md: luce-compare of every encoder and family on
# each data set, walk-forward with each config's own backtest settings (permutation
# importance off: the table does not use it).
#
#   bash benchmarks/model_zoo.sh ROOT [DATASET ...]
#
# DATASET: f1 nascar sp500 factors powerball megamillions synthetic (default: all).
# Each comparison lives in ROOT/DATASET (run again: every variant resumes after its
# last finished fold). EXTRA_MODELS adds variants to every data set, e.g.
#   EXTRA_MODELS="ens:model.ensemble.members=('encoder=mlp','encoder=s5')" bash ... f1
# `factors` is a second price table: the five factor ETFs skfolio ships
# (factors_dataset.csv.gz: MTUM, QUAL, SIZE, USMV, VLUE, 2014-2022), written to
# ROOT/factors.csv and read as prices:PATH.
set -euo pipefail
root="${1:?usage: model_zoo.sh ROOT [DATASET ...]}"
shift
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(f1 nascar sp500 factors powerball megamillions synthetic)
mkdir -p "$root"
py="${PYTHON:-python}"

pl_models=(--models=mlp:model.encoder=mlp --models=itransformer:model.encoder=itransformer
           --models=s5:model.encoder=s5 --models=deepar:model.encoder=deepar
           --models=dsd:model.family=diffusion --models=transformer:model.encoder=transformer)
extra=()
if [ -n "${EXTRA_MODELS:-}" ]; then
  while IFS= read -r m; do [ -n "$m" ] && extra+=("--models=$m"); done <<< "${EXTRA_MODELS//|/$'\n'}"
fi

for s in "${sets[@]}"; do
  args=(--config.backtest.importance=False --config.train.progress_bar=False)
  models=("${pl_models[@]}")
  case "$s" in
    f1) config=configs/f1.py ;;
    nascar) config=configs/nascar.py ;;
    sp500)  # 2015-2022 (8 folds), not the config's 2005-2022: 19 folds x 7 models is hours on 2 cores
      config=configs/sp500.py
      args+=(--config.backtest.start=2015-01-01) ;;
    factors)
      config=configs/sp500.py
      "$py" - "$root/factors.csv" <<'EOF'
import sys
from skfolio.datasets import load_factors_dataset
load_factors_dataset().to_csv(sys.argv[1], index_label="Date")
EOF
      args+=("--config.data.source=prices:$root/factors.csv" --config.data.eval_k=2 --config.backtest.portfolio_k=2
             --config.backtest.start=2017-01-01) ;;
    powerball) config=configs/powerball.py ;;
    megamillions)
      config=configs/powerball.py
      args+=(--config.data.source=draws:draws/megamillions.csv) ;;
    synthetic) config=configs/synthetic.py ;;
    *) echo "model_zoo.sh: unknown data set $s" >&2; exit 2 ;;
  esac
  echo "=== $s ($(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg))"
  "$py" -m luce.launchers.compare --config="$config" --workdir="$root/$s" "${args[@]}" \
    "${models[@]}" "${extra[@]}"
done
