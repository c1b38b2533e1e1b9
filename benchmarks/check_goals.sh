#!/usr/bin/env bash
# The check benchmark (see benchmarks/check_goals.py): held-out synthetic sign-in pages of brands
# never trained on, each logo page checked on its brand's own domain and on a foreign one, each
# no-logo page on a foreign one, with the find models of benchmarks/find_goals.sh.
#
#   benchmarks/check_goals.sh                       # the find benchmark's models (find_goals.sh runs
#                                                   # first, skipping what exists; ~70 min from scratch)
#   LOCALISER=frozen OUT=runs/check-bench benchmarks/check_goals.sh
#                                                   # a frozen-trunk localiser (head on cached trunk
#                                                   # features) instead of the fine-tuned one: cheaper
#
# Every step is skipped when its output exists. Prints the goal table; writes $OUT/check/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/find-bench}
LOCALISER=${LOCALISER:-fine-tuned}
DATA=data
SHARED=${SHARED:-../shared/data}
step() { echo "== $(date +%T) $*" >&2; }
if [ -z "${PROXIMA_SKIP_BUILD:-}" ]; then
    cargo build --release -p proxima-cli
fi
P=${PROXIMA:-target/release/proxima}
source benchmarks/lib-find.sh
benchmarks/cpu-line.sh >&2
if [ "$LOCALISER" = fine-tuned ]; then
    OUT="$OUT" PROXIMA="$P" PROXIMA_SKIP_BUILD=1 benchmarks/find_goals.sh
else
    # The find benchmark's data and held-out part, with the frozen-trunk localiser.
    find_data
    mkdir -p "$OUT"
    [ -f "$OUT/localiser/localiser.json" ] || $P localiser train --scenes "$DATA/fl27/scenes_train.jsonl" --scenes "$DATA/scenes-train/scenes.jsonl" \
        --out "$OUT/localiser" --input-size 384 --views 2 --epochs 40 --batch-size 16 --lr 2e-3
    [ -f "$OUT/icons/model/model.json" ] || $P train --config examples/experiments/simple_icons_effnet_lite0.toml --out "$OUT/icons" --quiet
    if [ ! -f "$OUT/g-heldout" ]; then
        rm -rf "$OUT/negatives"
        $P localiser negatives --localiser "$OUT/localiser" --scenes "$DATA/scenes-train/scenes.jsonl" --out "$OUT/negatives" --per-scene 8 --min-score 0.03
        gallery_with_background "$OUT/g-heldout" "$OUT/icons" "$DATA/icons-heldout" "$OUT/negatives"
    fi
    [ -f "$OUT/eval-heldout.json" ] || $P localiser eval --localiser "$OUT/localiser" --scenes "$DATA/scenes-heldout/scenes.jsonl" --model "$OUT/icons" \
        --gallery "$OUT/g-heldout" --out "$OUT/eval-heldout.json" --answers "$OUT/answers-heldout.jsonl"
fi
python3 benchmarks/check_goals.py --proxima "$P" --out "$OUT" --scenes "$DATA/scenes-heldout/scenes.jsonl"
