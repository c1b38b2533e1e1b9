# Sourced by the find benchmarks (find_goals.sh, check_goals.sh, pages_goals.sh). Expects P (the
# proxima binary).

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
