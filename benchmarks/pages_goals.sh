#!/usr/bin/env bash
# The browser-page benchmark of find: sign-in pages rendered by headless Chromium, the localiser and
# the identification embedding trained with them, evaluated on held-out pages (brands and templates
# never used in training, half of the pages without a logo), with rows per logo variant, small
# logos, mobile width, theme and template (benchmarks/pages_goals.py).
#
#   benchmarks/pages_goals.sh                 # OUT=runs/pages-bench
#   BASELINE=1 benchmarks/pages_goals.sh      # also: the find recipe's models (no pages) on the same pages
#   LOC_SIZE=512 benchmarks/pages_goals.sh    # the localiser's input size (default 384)
#   VIEWS= benchmarks/pages_goals.sh          # enrol the held-out brands without views (default small,dark)
#   FIND=runs/find-bench benchmarks/pages_goals.sh  # also: one localiser for every goal (below)
#
# Each step is skipped when its output exists. Needs the find benchmark's data (benchmarks/find_goals.sh
# builds data/ first), Chromium (scripts/setup-chromium.sh) and the EfficientNet-Lite0 weights.
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
echo "== CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores, flags:$(grep -m1 -o -w 'amx_bf16\|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')" >&2
[ -f "$DATA/scenes-train/scenes.jsonl" ] && [ -d "$DATA/icons-train-ctx" ] && [ -f "$DATA/fl27/scenes_train.jsonl" ] \
    || { echo "data/ is incomplete: run benchmarks/find_goals.sh once (it builds data/ first)" >&2; exit 2; }
[ -f "$DATA/pages/report.json" ] || { step "render browser pages"; $P data pages --data "$SHARED" --out "$DATA/pages" --train 1500 --heldout 300; }
if [ ! -d "$DATA/icons-pages-ctx" ]; then
    step "embedding crops: simple-icons + browser pages"
    rm -rf "$DATA/icons-pages-ctx.tmp"
    cp -al "$DATA/icons-train-ctx" "$DATA/icons-pages-ctx.tmp"
    $P data crops --scenes "$DATA/pages/train/scenes.jsonl" --per-box 4 --out "$DATA/icons-pages-ctx.tmp"
    mv "$DATA/icons-pages-ctx.tmp" "$DATA/icons-pages-ctx"
fi
[ -f "$OUT/localiser/localiser.json" ] || { step "train the localiser (frozen trunk) with browser pages"; $P localiser train --scenes "$DATA/fl27/scenes_train.jsonl" \
    --scenes "$DATA/scenes-train/scenes.jsonl" --scenes "$DATA/pages/train/scenes.jsonl" --out "$OUT/localiser" --input-size "$LOC_SIZE" --views 2 --epochs 40 --batch-size 16 --lr 2e-3; }
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
# The synthetic-page goal of the find recipe, with the same models.
[ -f "$OUT/g-heldout" ] || gallery_with_background "$OUT/g-heldout" "$OUT/icons" "$DATA/icons-heldout" "$OUT/negatives"
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
# One localiser for every goal: the find recipe's two localisers (FIND, the OUT of
# benchmarks/find_goals.sh) and this one averaged (`localiser ensemble`, docs/pages.md), measured
# on the held-out browser pages (this embedding), the held-out synthetic pages (the find recipe's
# icons embedding and background, as find_goals.sh measures them) and the FlickrLogos-27 query
# photos (its photo ensemble).
if [ -n "${FIND:-}" ]; then
    A="$OUT/all"; mkdir -p "$A"
    [ -f "$A/localisers/localisers.json" ] || $P localiser ensemble "$FIND/localiser" "$FIND/localiser-seed1" "$OUT/localiser" --out "$A/localisers"
    if [ ! -f "$A/g-pages" ]; then
        step "one localiser for every goal: galleries"
        rm -rf "$A/negatives" "$A/negatives-synthetic"
        $P localiser negatives --localiser "$A/localisers" --scenes "$DATA/scenes-train/scenes.jsonl" --scenes "$DATA/pages/train/scenes.jsonl" --out "$A/negatives" --per-scene 8 --min-score 0.03
        $P localiser negatives --localiser "$A/localisers" --scenes "$DATA/scenes-train/scenes.jsonl" --out "$A/negatives-synthetic" --per-scene 8 --min-score 0.03
        gallery_with_background "$A/g-heldout" "$FIND/icons" "$DATA/icons-heldout" "$A/negatives-synthetic"
        gallery_with_background "$A/g-pages" "$OUT/icons" "$DATA/pages/enrol" "$A/negatives" "${VIEW_ARGS[@]}"
    fi
    step "one localiser for every goal: held-out browser pages (goal: identified >= 0.90 at <= 1 % false alarms)"
    $P localiser eval --localiser "$A/localisers" --scenes "$DATA/pages/heldout/scenes.jsonl" --model "$OUT/icons" --gallery "$A/g-pages" \
        --out "$A/eval-pages.json" --answers "$A/answers-pages.jsonl"
    python3 benchmarks/pages_goals.py --answers "$A/answers-pages.jsonl" --scenes "$DATA/pages/heldout/scenes.jsonl" --json "$A/rows-pages.json"
    step "one localiser for every goal: held-out synthetic pages (goal: identified >= 0.90 at <= 1 % false alarms)"
    $P localiser eval --localiser "$A/localisers" --scenes "$DATA/scenes-heldout/scenes.jsonl" --model "$FIND/icons" --gallery "$A/g-heldout" \
        --out "$A/eval-synthetic.json" --answers "$A/answers-synthetic.jsonl"
    step "one localiser for every goal: FlickrLogos-27 query photos (goal: top-1 >= 0.85, identified >= 0.70 at <= 5 % false alarms)"
    $P localiser eval --localiser "$A/localisers" --scenes "$DATA/fl27/scenes_query.jsonl" --model "$FIND/fl27-ens" --gallery "$FIND/g-fl27-ens" \
        --whole-image --out "$A/eval-fl27.json" --answers "$A/answers-fl27.jsonl"
fi
