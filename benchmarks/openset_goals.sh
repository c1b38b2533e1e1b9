#!/usr/bin/env bash
# The open-set benchmark of find on real photos: FlickrLogos-27 whole query photos (135 with a logo,
# 135 without), a gallery of all 27 brands, and embeddings that never trained on the 9 test brands
# of examples/experiments/flickrlogos27_effnet_lite0.toml (Apple, DHL, Ferrari, Heineken, Nike,
# Pepsi, Starbucks, Vodafone, Yahoo). `localiser eval` prints the trained and never-trained brands
# as their own rows (from each run's split.json). Rows (docs/openset.md):
#   fl27-18    the 18 training brands' crops only (the issue's baseline protocol)
#   imagenet   no metric training: the ImageNet trunk and a random linear projection
#   many       thousands of brands pasted into real photos (data composites) + the 18 brands
#   many-seed1 the same with another seed (same split): the rerun spread
#   ens-fl27-18-many  the ensemble of fl27-18 and many (`proxima ensemble`, as in find_goals.sh)
# and, for the best, galleries from 1 and 3 crops per brand (one-shot, few-shot).
#
#   benchmarks/openset_goals.sh                              # OUT=runs/openset
#   LOCALISER=runs/find-bench/localiser benchmarks/openset_goals.sh   # reuse a trained localiser
#
# Each step is skipped when its output exists. Without LOCALISER it trains the find recipe's
# localiser (benchmarks/find_goals.sh's command, about half an hour on a 2-core AMD EPYC). Builds the find
# benchmarks' data/ where it is missing (benchmarks/lib-find.sh); needs
# ../shared/data/{flickrlogos27,simple-icons,gilbarbara-logos} and the EfficientNet-Lite0 weights
# (scripts/fetch-weights.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/openset}
DATA=data
SHARED=${SHARED:-../shared/data}
if [ -z "${PROXIMA_SKIP_BUILD:-}" ]; then cargo build --release -p proxima-cli; fi
P=${PROXIMA:-target/release/proxima}
mkdir -p "$OUT"
step() { echo "== $(date +%T) $*" >&2; }
benchmarks/cpu-line.sh >&2
source benchmarks/lib-find.sh
find_data

# The many-brand training data and its split check (shared with benchmarks/find_goals.sh).
source benchmarks/lib-openset.sh
openset_data

LOC=${LOCALISER:-$OUT/localiser}
[ -f "$LOC/localiser.json" ] || { step "train the localiser (the find recipe's)"; $P localiser train --scenes "$DATA/fl27/scenes_train.jsonl" --scenes "$DATA/scenes-train/scenes.jsonl" \
    --out "$LOC" --input-size 384 --epochs 10 --batch-size 16 --lr 2e-3 --fine-tune-from 5; }

train() { # name, config, overrides...
    local name=$1 cfg=$2; shift 2
    [ -f "$OUT/$name/model/model.json" ] || { step "train $name"; /usr/bin/time -f "$name: %e s wall" $P train --config "$cfg" --out "$OUT/$name" --quiet "$@"; }
}
train fl27-18 examples/experiments/flickrlogos27_effnet_lite0.toml
train imagenet examples/experiments/flickrlogos27_effnet_lite0.toml --set train.epochs=1 --set sampler.batches_per_epoch=1 --set optimizer.lr=1e-12 --set lr.head=1e-12
train many examples/experiments/flickrlogos27_openset_effnet_lite0.toml
check_many_split "$OUT/many/split.json"
# The same recipe and split with another seed: how far a rerun moves the figures.
train many-seed1 examples/experiments/flickrlogos27_openset_effnet_lite0.toml --set seed=1 --set "split_file=\"$OUT/many/split.json\""

# The closed-set find recipe's ensemble (benchmarks/find_goals.sh), here of the 18-brand model and
# the many-brand one: does averaging the two help brands the first never saw?
[ -f "$OUT/ens-fl27-18-many/ensemble.json" ] || $P ensemble "$OUT/fl27-18" "$OUT/many" --out "$OUT/ens-fl27-18-many"

gallery() { # model, gallery name, gallery build flags...
    local model=$1 g=$2; shift 2
    [ -f "$OUT/g-$g" ] || $P gallery build --model "$OUT/$model" --data "$DATA/fl27/crops" --out "$OUT/g-$g" "$@"
}
evaluate() { # model, gallery name, evaluation name, localiser eval flags...
    local model=$1 g=$2 name=$3; shift 3
    [ -f "$OUT/eval-$name.json" ] && return 0
    step "FlickrLogos-27 query photos: $name"
    $P localiser eval --localiser "$LOC" --scenes "$DATA/fl27/scenes_query.jsonl" --model "$OUT/$model" --gallery "$OUT/g-$g" \
        --whole-image --out "$OUT/eval-$name.json" --answers "$OUT/answers-$name.jsonl" "$@"
}
for m in fl27-18 imagenet many many-seed1 ens-fl27-18-many; do
    gallery "$m" "$m"; evaluate "$m" "$m" "$m"
    # Crop level, independent of the localiser: the 9 never-trained brands' crops search each other.
    # Written to a temporary file first, so a failed run leaves no file that a rerun would skip on.
    if [ ! -f "$OUT/crops9-$m.json" ]; then
        $P eval --model "$OUT/$m" --data "$DATA/fl27/crops" --split "$OUT/fl27-18/split.json" --part test --json > "$OUT/crops9-$m.json.tmp"
        mv "$OUT/crops9-$m.json.tmp" "$OUT/crops9-$m.json"
    fi
done
evaluate many many many-tta0 --tta-padding 0
for n in 1 3; do
    for seed in 0 1 2; do gallery many "many-$n-shot-seed$seed" --per-brand "$n" --seed "$seed"; evaluate many "many-$n-shot-seed$seed" "many-$n-shot-seed$seed"; done
done
# One table of every evaluation: all logo photos, trained and never-trained brands.
for f in "$OUT"/eval-*.json; do
    python3 - "$f" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
name = sys.argv[1].split("eval-", 1)[1][:-5]
def row(what, x):
    a = {round(f["target"], 2): f["identified"] for f in x["at_false_alarm"]}
    return f"{name:24} {what:22} n={x['num_logo_images']:3}  top-1 {x['top1']:.3f}  <=1% {a[0.01]:.3f}  <=5% {a[0.05]:.3f}"
print(row("all logo photos", r["identification"]))
try:
    m = json.load(open(sys.argv[1].replace("eval-", "crops9-")))["retrieval"]["metrics"]
    print(f"{name:24} {'9 brands, crop level':22} MAP@R {m['mean_average_precision_at_r']:.3f}  P@1 {m['precision_at_1']:.3f}")
except FileNotFoundError:
    pass
for k, v in (r.get("identification_by_training") or {}).items():
    print(row(k, v))
PY
done
