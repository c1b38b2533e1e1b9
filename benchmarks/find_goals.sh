#!/usr/bin/env bash
# The find benchmark: every step behind the numbers of docs/find.md, from the
# shared data to the two goal measurements (FlickrLogos-27 query photos; held-out synthetic
# screenshots of brands never trained on).
#
# Each step is skipped when its output already exists, so a rerun only evaluates. From scratch on
# a 2-core AMD EPYC Zen 4 (AVX512-BF16, no AMX) it takes about 90 min: two localisers 24 and
# 28 min, FlickrLogos-27 embedding 6 min, many-brand embedding 17 min (plus about 1 min for its
# composites when data/ has none), simple-icons embedding 11 min, data, galleries and evaluations a
# few minutes (benchmarks/results/find_goals-ensemble-amd-epyc-zen4-2core-2026-12-07.txt, from
# before the second localiser, and find_goals-localisers-amd-epyc-zen4-2core-2026-12-07.txt). Rerun
# there, it gave models byte-identical to an earlier run's: on one machine the training is
# deterministic.
#
#   benchmarks/find_goals.sh            # models, galleries and reports in OUT=runs/find-bench
#   OUT=/tmp/fb benchmarks/find_goals.sh
#
# Data goes to data/, where the experiment files expect it.
#
# Needs ../shared/data/{flickrlogos27,simple-icons,gilbarbara-logos} and the EfficientNet-Lite0 weights
# (scripts/fetch-weights.sh). Prints each evaluation; writes $OUT/eval-*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/find-bench}
DATA=data
SHARED=${SHARED:-../shared/data}
if [ -z "${PROXIMA_SKIP_BUILD:-}" ]; then
    cargo build --release -p proxima-cli
fi
# PROXIMA names another binary (a copy that a concurrent build cannot replace mid-run).
P=${PROXIMA:-target/release/proxima}
mkdir -p "$OUT"
step() { echo "== [+${SECONDS} s] $*" >&2; }
benchmarks/cpu-line.sh >&2

# Data: FlickrLogos-27 crops and scene manifests; synthetic scenes and icon crops of simple-icons
# brands (benchmarks/lib-find.sh).
source benchmarks/lib-find.sh
find_data

# The localiser: head and the trunk's stride-16/32 stages fine-tuned on fresh views each epoch.
[ -f "$OUT/localiser/localiser.json" ] || { step "train the localiser"; $P localiser train --scenes "$DATA/fl27/scenes_train.jsonl" --scenes "$DATA/scenes-train/scenes.jsonl" \
    --out "$OUT/localiser" --input-size 384 --epochs 10 --batch-size 16 --lr 2e-3 --fine-tune-from 5; }
# A second localiser, the same training from another seed, and `find` runs with the two averaged
# (docs/find.md, "An ensemble of localisers"): single localisers of four seeds gave FlickrLogos-27
# top-1 0.830-0.874 with the photo ensemble below, pairs of them 0.844-0.867.
[ -f "$OUT/localiser-seed1/localiser.json" ] || { step "train the second localiser (seed 1)"; $P localiser train --scenes "$DATA/fl27/scenes_train.jsonl" --scenes "$DATA/scenes-train/scenes.jsonl" \
    --out "$OUT/localiser-seed1" --input-size 384 --epochs 10 --batch-size 16 --lr 2e-3 --fine-tune-from 5 --seed 1; }
[ -f "$OUT/localisers/localisers.json" ] || $P localiser ensemble "$OUT/localiser" "$OUT/localiser-seed1" --out "$OUT/localisers"
LOC="$OUT/localisers"

# FlickrLogos-27: the embedding of the 27 brands' training crops (the query photos are other
# photos), and the many-brand open-set embedding of benchmarks/openset_goals.sh (thousands of
# catalogue brands pasted into real photos + 18 of the 27 brands). `find` runs with their ensemble:
# with the first localiser alone each is 0.83-0.85 top-1, any pairing 0.87-0.88; with the second
# alone 0.81, 0.83 the ensemble (docs/find.md, "An ensemble for photos").
[ -f "$OUT/fl27-all/model/model.json" ] || { step "train the FlickrLogos-27 embedding"; $P train --config examples/experiments/flickrlogos27_all_brands_effnet_lite0.toml --out "$OUT/fl27-all" --quiet; }
source benchmarks/lib-openset.sh
openset_data
[ -f "$OUT/many/model/model.json" ] || { step "train the many-brand embedding"; $P train --config examples/experiments/flickrlogos27_openset_effnet_lite0.toml --out "$OUT/many" --quiet; }
check_many_split "$OUT/many/split.json"
[ -f "$OUT/fl27-ens/ensemble.json" ] || $P ensemble "$OUT/fl27-all" "$OUT/many" --out "$OUT/fl27-ens"
for m in fl27-all fl27-ens; do
    [ -f "$OUT/g-$m" ] || $P gallery build --model "$OUT/$m" --data "$DATA/fl27/crops" --out "$OUT/g-$m"
done
step "FlickrLogos-27 query photos, the 27-brand embedding alone"
$P localiser eval --localiser "$LOC" --scenes "$DATA/fl27/scenes_query.jsonl" --model "$OUT/fl27-all" --gallery "$OUT/g-fl27-all" \
    --whole-image --out "$OUT/eval-fl27-all.json" --answers "$OUT/answers-fl27-all.jsonl"
step "FlickrLogos-27 query photos, the ensemble (goal: top-1 ≥ 0.85, identified ≥ 0.70 at ≤ 5 % false alarms)"
$P localiser eval --localiser "$LOC" --scenes "$DATA/fl27/scenes_query.jsonl" --model "$OUT/fl27-ens" --gallery "$OUT/g-fl27-ens" \
    --whole-image --out "$OUT/eval-fl27.json" --answers "$OUT/answers-fl27.jsonl"

# Held-out screenshots: the simple-icons embedding, a gallery of all held-out brands plus the
# (background) brand made of what the localiser finds away from the logos of *training* scenes.
[ -f "$OUT/icons/model/model.json" ] || { step "train the simple-icons embedding"; $P train --config examples/experiments/simple_icons_effnet_lite0.toml --out "$OUT/icons" --quiet; }
if [ ! -f "$OUT/g-heldout-ens" ]; then
    rm -rf "$OUT/negatives-ens"
    $P localiser negatives --localiser "$LOC" --scenes "$DATA/scenes-train/scenes.jsonl" --out "$OUT/negatives-ens" --per-scene 8 --min-score 0.03
    gallery_with_background "$OUT/g-heldout-ens" "$OUT/icons" "$DATA/icons-heldout" "$OUT/negatives-ens"
fi
step "held-out synthetic screenshots (goal: identified ≥ 0.90 at ≤ 1 % false alarms)"
$P localiser eval --localiser "$LOC" --scenes "$DATA/scenes-heldout/scenes.jsonl" --model "$OUT/icons" --gallery "$OUT/g-heldout-ens" \
    --out "$OUT/eval-heldout.json" --answers "$OUT/answers-heldout.jsonl"
echo "== find_goals.sh done in ${SECONDS} s of wall time" >&2
