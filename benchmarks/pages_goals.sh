#!/usr/bin/env bash
# The browser-page benchmark of find: sign-in pages rendered by headless Chromium, the localiser and
# the identification embedding trained with them, evaluated on held-out pages (brands and templates
# never used in training, half of the pages without a logo), with rows per logo variant, small
# logos, mobile width, theme and template (benchmarks/pages_goals.py).
#
# From scratch on a 2-core AMD EPYC Zen 5 (family 26 model 2, AVX512-BF16, no AMX), with FIND: data
# under a minute, 1800 pages 323 s, localiser 31 min, pages embedding 14 min, galleries and
# evaluations about 6 min; FIND's models (find_goals.sh) not counted
# (benchmarks/results/pages_goals-amd-epyc-zen5-2core-2026-12-08.txt).
#
#   benchmarks/pages_goals.sh                 # OUT=runs/pages-bench
#   BASELINE=1 benchmarks/pages_goals.sh      # also: the find recipe's models (no pages) on the same pages
#   LOC_SIZE=512 benchmarks/pages_goals.sh    # the localiser's input size (default 384)
#   VIEWS= benchmarks/pages_goals.sh          # enrol the held-out brands without views (default small,dark)
#   FIND=runs/find-bench benchmarks/pages_goals.sh  # also: the photo and synthetic-page goals (below)
#
# Each step is skipped when its output exists. Builds the find benchmarks' data/ where it is missing
# (benchmarks/lib-find.sh); needs Chromium (scripts/setup-chromium.sh) and the EfficientNet-Lite0
# weights (scripts/fetch-weights.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/pages-bench}
LOC_SIZE=${LOC_SIZE:-384}
VIEWS=${VIEWS-small,dark}
VIEW_ARGS=(); [ -n "$VIEWS" ] && VIEW_ARGS=(--views "$VIEWS")
DATA=data
SHARED=${SHARED:-../shared/data}
if [ -z "${PROXIMA_SKIP_BUILD:-}" ]; then cargo build --release -p proxima-cli; fi
P=${PROXIMA:-target/release/proxima}
source benchmarks/lib-find.sh
mkdir -p "$OUT"
step() { echo "== $(date +%T) $*" >&2; }
benchmarks/cpu-line.sh >&2
find_data
[ -f "$DATA/pages/report.json" ] || { step "render browser pages"; $P data pages --data "$SHARED" --out "$DATA/pages" --train 1500 --heldout 300; }
if [ ! -d "$DATA/icons-pages-ctx" ]; then
    step "embedding crops: simple-icons + browser pages"
    rm -rf "$DATA/icons-pages-ctx.tmp"
    cp -al "$DATA/icons-train-ctx" "$DATA/icons-pages-ctx.tmp"
    $P data crops --scenes "$DATA/pages/train/scenes.jsonl" --per-box 4 --out "$DATA/icons-pages-ctx.tmp"
    mv "$DATA/icons-pages-ctx.tmp" "$DATA/icons-pages-ctx"
fi
# The localiser: the find recipe's (trunk blocks 5.. fine-tuned, a fresh view of each scene every
# epoch) with the training pages added, 8 epochs. One network for photos, synthetic and browser
# pages (docs/pages.md, "One localiser for every goal"); FROZEN=1 trains the recipe's earlier one
# instead (trunk frozen, 2 cached views, 40 epochs), which misses the photo goal.
if [ ! -f "$OUT/localiser/localiser.json" ]; then
    LOC_SCENES=(--scenes "$DATA/fl27/scenes_train.jsonl" --scenes "$DATA/scenes-train/scenes.jsonl" --scenes "$DATA/pages/train/scenes.jsonl")
    if [ -n "${FROZEN:-}" ]; then
        step "train the localiser (frozen trunk) with browser pages"
        LOC_TRAINING=(--views 2 --epochs 40)
    else
        step "train the localiser (trunk fine-tuned) on photos, synthetic scenes and browser pages"
        LOC_TRAINING=(--epochs 8 --fine-tune-from 5)
    fi
    $P localiser train "${LOC_SCENES[@]}" --out "$OUT/localiser" --input-size "$LOC_SIZE" --batch-size 16 --lr 2e-3 "${LOC_TRAINING[@]}"
fi
[ -f "$OUT/icons/model/model.json" ] || { step "train the embedding with browser-page crops"; $P train --config examples/experiments/pages_effnet_lite0.toml --out "$OUT/icons" --quiet; }
# Galleries: the held-out brands from their logos rendered alone (data/pages/enrol), plus the
# (background) brand of non-logo regions the localiser proposes on training pages and scenes.
if [ ! -f "$OUT/g-pages" ]; then
    step "galleries"
    rm -rf "$OUT/negatives"
    $P localiser negatives --localiser "$OUT/localiser" --scenes "$DATA/scenes-train/scenes.jsonl" --scenes "$DATA/pages/train/scenes.jsonl" --out "$OUT/negatives" --per-scene 8 --min-score 0.03
    gallery_with_background "$OUT/g-pages" "$OUT/icons" "$DATA/pages/enrol" "$OUT/negatives" "${VIEW_ARGS[@]}"
fi
step "evaluate on held-out browser pages"
$P localiser eval --localiser "$OUT/localiser" --scenes "$DATA/pages/heldout/scenes.jsonl" --model "$OUT/icons" --gallery "$OUT/g-pages" \
    --out "$OUT/eval-pages.json" --answers "$OUT/answers-pages.jsonl"
python3 benchmarks/pages_goals.py --answers "$OUT/answers-pages.jsonl" --scenes "$DATA/pages/heldout/scenes.jsonl" --json "$OUT/rows-pages.json"
# The synthetic-page goal of the find recipe, with the same models; its (background) brand is what
# the localiser proposes away from the logos of the synthetic training scenes, as find_goals.sh has it.
if [ ! -f "$OUT/g-heldout" ]; then
    rm -rf "$OUT/negatives-synthetic"
    $P localiser negatives --localiser "$OUT/localiser" --scenes "$DATA/scenes-train/scenes.jsonl" --out "$OUT/negatives-synthetic" --per-scene 8 --min-score 0.03
    gallery_with_background "$OUT/g-heldout" "$OUT/icons" "$DATA/icons-heldout" "$OUT/negatives-synthetic"
fi
step "evaluate on held-out synthetic pages"
$P localiser eval --localiser "$OUT/localiser" --scenes "$DATA/scenes-heldout/scenes.jsonl" --model "$OUT/icons" --gallery "$OUT/g-heldout" \
    --out "$OUT/eval-synthetic.json"
if [ -n "${BASELINE:-}" ] && [ -f runs/check-bench/localiser/localiser.json ]; then
    step "baseline: the find recipe's models (trained without browser pages)"
    B="$OUT/baseline"; mkdir -p "$B"
    [ -f "$B/g" ] || gallery_with_background "$B/g" runs/check-bench/icons "$DATA/pages/enrol" runs/check-bench/negatives
    $P localiser eval --localiser runs/check-bench/localiser --scenes "$DATA/pages/heldout/scenes.jsonl" --model runs/check-bench/icons --gallery "$B/g" \
        --out "$B/eval-pages.json" --answers "$B/answers-pages.jsonl"
    python3 benchmarks/pages_goals.py --answers "$B/answers-pages.jsonl" --scenes "$DATA/pages/heldout/scenes.jsonl" --json "$B/rows-pages.json"
fi
# The other two goals with this localiser (FIND, the OUT of benchmarks/find_goals.sh, gives the find
# recipe's embeddings): the held-out synthetic pages with its simple-icons embedding and the
# FlickrLogos-27 query photos with its photo ensemble, each gallery as find_goals.sh builds it.
if [ -n "${FIND:-}" ]; then
    [ -f "$OUT/g-heldout-find" ] || gallery_with_background "$OUT/g-heldout-find" "$FIND/icons" "$DATA/icons-heldout" "$OUT/negatives-synthetic"
    step "held-out synthetic pages, the find recipe's embedding (goal: identified >= 0.90 at <= 1 % false alarms)"
    $P localiser eval --localiser "$OUT/localiser" --scenes "$DATA/scenes-heldout/scenes.jsonl" --model "$FIND/icons" --gallery "$OUT/g-heldout-find" \
        --out "$OUT/eval-synthetic-find.json" --answers "$OUT/answers-synthetic-find.jsonl"
    step "FlickrLogos-27 query photos, the find recipe's photo ensemble (goal: top-1 >= 0.85, identified >= 0.70 at <= 5 % false alarms)"
    $P localiser eval --localiser "$OUT/localiser" --scenes "$DATA/fl27/scenes_query.jsonl" --model "$FIND/fl27-ens" --gallery "$FIND/g-fl27-ens" \
        --whole-image --out "$OUT/eval-fl27.json" --answers "$OUT/answers-fl27.jsonl"
fi
