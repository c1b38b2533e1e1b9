"""Rows of the browser-page goals from `proxima localiser eval --answers` on held-out pages.

    python3 benchmarks/pages_goals.py --answers A.jsonl --scenes data/pages/heldout/scenes.jsonl [--json OUT]

The operating point is the one of the goal: the lowest confidence threshold that keeps false alarms
(a brand named on a page without a logo) at or below 1 % (and 5 %). A logo page counts as identified
when find's answer (its most confident region) names the page's brand at or above that threshold.
Rows: the logo's variant (colour mark, wordmark, one-colour mark, white on a brand bar), logos under
32 px (the longer side of the page's own logo box), mobile-width pages, and each held-out template.
"""
import argparse
import json
import math
import os


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--answers", required=True)
    ap.add_argument("--scenes", required=True)
    ap.add_argument("--json")
    a = ap.parse_args()
    scenes = {}
    with open(a.scenes) as f:
        for line in f:
            if line.strip():
                s = json.loads(line)
                scenes[os.path.basename(s["image"])] = s
    rows = []
    with open(a.answers) as f:
        for line in f:
            r = json.loads(line)
            s = scenes[os.path.basename(r["answer"]["image"])]
            conf = r["answer"].get("confidence")
            rows.append((s, r["answer"].get("brand"), -math.inf if conf is None else conf))
    negatives = sorted((c for s, b, c in rows if not s["brands"] and b is not None), reverse=True)
    n_neg = sum(1 for s, _, _ in rows if not s["brands"])
    out = {"pages": len(rows), "no_logo_pages": n_neg, "operating_points": {}}

    def threshold_for(rate: float) -> float:
        allowed = int(math.floor(rate * n_neg + 1e-9))
        # Strictly above the (allowed+1)-th highest false-alarm confidence.
        return math.nextafter(negatives[allowed], math.inf) if len(negatives) > allowed else -math.inf

    for rate in (0.01, 0.05):
        t = threshold_for(rate)
        fa = sum(1 for c in negatives if c >= t) / max(n_neg, 1)
        groups = {}
        for s, brand, conf in rows:
            if not s["brands"]:
                continue
            _, template, theme, width, variant = s["kind"].split("/")
            own = [b for b in s["boxes"] if b["brand"] in s["brands"]]
            side = max((max(b["bbox"][2] - b["bbox"][0], b["bbox"][3] - b["bbox"][1]) for b in own), default=0)
            hit = brand in s["brands"] and conf >= t
            keys = ["all", f"variant={variant}", f"template={template}", f"width={width}", f"theme={theme}"]
            if side < 32:
                keys.append("logo<32px")
            for k in keys:
                n, h = groups.get(k, (0, 0))
                groups[k] = (n + 1, h + hit)
        out["operating_points"][f"{rate:.2f}"] = {
            "threshold": t,
            "false_alarm_rate": fa,
            "rows": {k: {"pages": n, "identified": h / n} for k, (n, h) in sorted(groups.items())},
        }
    top1 = [brand in s["brands"] for s, brand, _ in rows if s["brands"]]
    out["top1"] = sum(top1) / max(len(top1), 1)
    print(f"held-out browser pages: {len(rows)} ({n_neg} without a logo); top-1 on logo pages {out['top1']:.3f}")
    print("| row | pages | identified at <= 1 % FA | at <= 5 % FA |")
    print("|---|---|---|---|")
    p1, p5 = out["operating_points"]["0.01"], out["operating_points"]["0.05"]
    for k, v in p1["rows"].items():
        print(f"| {k} | {v['pages']} | {v['identified']:.3f} | {p5['rows'][k]['identified']:.3f} |")
    print(f"(false alarms: {p1['false_alarm_rate']:.3f} at threshold {p1['threshold']:.4f}; {p5['false_alarm_rate']:.3f} at {p5['threshold']:.4f})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
