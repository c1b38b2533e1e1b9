# Sourced by benchmarks/openset_goals.sh and benchmarks/find_goals.sh: the training data of the
# many-brand embedding (examples/experiments/flickrlogos27_openset_effnet_lite0.toml) and the check
# of its split. Expects P (the proxima binary), DATA and SHARED, and a `step` function.

# The 9 FlickrLogos-27 test brands of examples/experiments/flickrlogos27_effnet_lite0.toml, and the
# 18 training brands.
TEST_BRANDS=Apple,DHL,Ferrari,Heineken,Nike,Pepsi,Starbucks,Vodafone,Yahoo
TRAIN_BRANDS="Adidas BMW Citroen Cocacola Fedex Ford Google HP Intel McDonalds Mini Nbc Porsche Puma RedBull Sprite Texaco Unicef"

# Training data of the many-brand embedding: every catalogue brand outside the icon hash split's
# held-out part and not named like a test brand, pasted into windows of the FlickrLogos-27 training
# photos of the 18 training brands (away from their logos; photos of the 9 test brands are left
# out), plus the 18 training brands' own crops merged by lower-case name. Built under a temporary
# name and renamed, so an interrupted run leaves nothing that a rerun would take as done.
openset_data() {
    [ -d "$DATA/openset-train" ] && return 0
    step "composites of the catalogue brands in real photos"
    rm -rf "$DATA/composites" "$DATA/openset-train.tmp"
    $P data composites --data "$SHARED" --backgrounds "$DATA/fl27/scenes_train.jsonl" --exclude-like "$TEST_BRANDS" --per-brand 8 --out "$DATA/composites"
    cp -al "$DATA/composites" "$DATA/openset-train.tmp"
    local b l
    for b in $TRAIN_BRANDS; do
        l=$(echo "$b" | tr 'A-Z' 'a-z'); mkdir -p "$DATA/openset-train.tmp/$l"; cp -l "$DATA/fl27/crops/$b"/* "$DATA/openset-train.tmp/$l/"
    done
    mv "$DATA/openset-train.tmp" "$DATA/openset-train"
}

# The ratio split of a many-brand run must keep every FlickrLogos-27 training brand in training.
check_many_split() { # split.json
    python3 - "$1" "$TRAIN_BRANDS" <<'PY'
import json, sys
train = set(json.load(open(sys.argv[1]))["train"])
missing = [b for b in sys.argv[2].split() if b.lower() not in train]
if missing:
    sys.exit(f"{sys.argv[1]}: FlickrLogos-27 training brands left out of training by the split: {missing}")
PY
}
