# Sourced by the find benchmarks (find_goals.sh, check_goals.sh, pages_goals.sh, openset_goals.sh).
# Expects P (the proxima binary); find_data also DATA, SHARED and a `step` function.

# gallery_with_background OUT MODEL DATA NEGATIVES [gallery build options…]: the gallery of DATA's
# brands embedded by MODEL, plus the crops in NEGATIVES as the (background) brand. Built as OUT.tmp
# and renamed, so an interrupted run leaves nothing that a rerun would take as done; its audit log
# (`<gallery>.audit.jsonl`, written by build and add) is renamed with it.
gallery_with_background() {
    local out=$1 model=$2 data=$3 negatives=$4
    shift 4
    rm -rf "$out.tmp" "$out.tmp.audit.jsonl"
    $P gallery build --model "$model" --data "$data" "$@" --out "$out.tmp"
    $P gallery add --gallery "$out.tmp" --model "$model" --brand "(background)" "$negatives"
    if [ -f "$out.tmp.audit.jsonl" ]; then mv "$out.tmp.audit.jsonl" "$out.audit.jsonl"; fi
    mv "$out.tmp" "$out"
}

# find_data: the data every find benchmark starts from (under a minute): FlickrLogos-27 crops and
# scene manifests; synthetic scenes and icon crops of simple-icons brands (85 % "train" brands, 15 %
# held out by slug hash). Each part is skipped when it exists.
find_data() {
    [ -d "$DATA/fl27/crops" ] || { step "import FlickrLogos-27"; $P data import flickrlogos27 --source "$SHARED/flickrlogos27" --out "$DATA/fl27"; }
    [ -f "$DATA/scenes-train/scenes.jsonl" ] || { step "training scenes"; $P data scenes --screenshots 700 --photos 250 --part train --seed 1 --out "$DATA/scenes-train"; }
    [ -f "$DATA/scenes-heldout/scenes.jsonl" ] || { step "held-out screenshots"; $P data scenes --screenshots 200 --photos 0 --no-logo-fraction 0.5 --part heldout --seed 2 --out "$DATA/scenes-heldout"; }
    if [ ! -d "$DATA/icons-train-ctx" ]; then
        step "icon crops of the training brands: renders, and jittered crops of the training scenes' logo boxes"
        rm -rf "$DATA/icons-train-ctx.tmp"
        $P data icons --part train --per-brand 5 --size 96 --out "$DATA/icons-train-ctx.tmp"
        $P data crops --scenes "$DATA/scenes-train/scenes.jsonl" --per-box 4 --out "$DATA/icons-train-ctx.tmp"
        mv "$DATA/icons-train-ctx.tmp" "$DATA/icons-train-ctx"
    fi
    [ -d "$DATA/icons-heldout" ] || { step "icon crops, held-out brands"; $P data icons --part heldout --per-brand 6 --size 128 --out "$DATA/icons-heldout"; }
}
