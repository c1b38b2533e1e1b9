#!/usr/bin/env python3
"""The check benchmark: `proxima check` on the held-out synthetic pages of benchmarks/find_goals.sh.

Each logo page (brands never trained on) is checked twice, once on its brand's own domain and once
on a foreign one (a subdomain trick, a look-alike name, an IP address, another TLD, in turn); each
page without a logo once, on a foreign domain. The gallery is the find benchmark's held-out gallery
with the brands' domains from catalogue/brands.json; a held-out brand the catalogue lacks gets
`<slug>.com` (counted in the report). Find's threshold is the find benchmark's operating point at
<= 1 % false alarms on the no-logo pages (eval-heldout.json), so the figures here are the check's on
top of that find goal.

    benchmarks/check_goals.sh          # runs find_goals.sh first (skipping what exists), then this

Writes OUT/check/{g-check,urls.txt,answers.jsonl,report.json}; prints the goal table.
"""
import argparse
import json
import pathlib
import re
import subprocess
import sys


def run(cmd):
    """Runs a proxima command; exit 0 and 1 are answers (check's 1: an impersonation), 2 an error."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode not in (0, 1):
        sys.exit(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr}")
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxima", default="target/release/proxima")
    ap.add_argument("--out", default="runs/find-bench")
    ap.add_argument("--scenes", default="data/scenes-heldout/scenes.jsonl")
    ap.add_argument("--catalogue", default="catalogue/brands.json")
    a = ap.parse_args()
    out = pathlib.Path(a.out)
    work = out / "check"
    work.mkdir(parents=True, exist_ok=True)
    P = a.proxima

    ev = json.loads((out / "eval-heldout.json").read_text())
    at1 = [f for f in ev["identification"]["at_false_alarm"] if abs(f["target"] - 0.01) < 1e-9][0]
    threshold = at1["threshold"]

    gallery = work / "g-check"
    gallery.write_bytes((out / "g-heldout").read_bytes())
    imp = run([P, "gallery", "domains", "--gallery", gallery, "--import", a.catalogue])
    print(imp.stdout.splitlines()[0])
    doms = {b["brand"]: b["domains"] for b in json.loads(run([P, "gallery", "domains", "--gallery", gallery, "--json"]).stdout)["brands"]}

    manifest = pathlib.Path(a.scenes)
    scenes = [json.loads(l) for l in manifest.read_text().splitlines() if l.strip()]
    synthetic = 0
    for s in scenes:
        for b in s["brands"][:1]:
            if not doms.get(b):
                d = re.sub(r"[^a-z0-9]", "", b.lower()) + ".com"
                run([P, "gallery", "domains", "--gallery", gallery, "--brand", b, "--set", d])
                doms[b] = [d]
                synthetic += 1

    kinds = ["subdomain trick", "look-alike name", "IP address", "other TLD"]
    lines, truth = [], []
    for i, s in enumerate(scenes):
        img = (manifest.parent / s["image"]).resolve()
        if s["brands"]:
            b = s["brands"][0]
            own = doms[b][0]
            label = own.split(".")[0]
            lines.append(f"https://login.{own}/signin {img}")
            truth.append(("own", b, None))
            kind = kinds[i % len(kinds)]
            foreign = {
                "subdomain trick": f"https://{own}.account-verify.net/signin",
                "look-alike name": f"https://{label}-secure-login.com/",
                "IP address": f"http://203.0.113.{i % 250 + 1}/{label}/",
                "other TLD": f"https://{label}.login-{i}.xyz/",
            }[kind]
            lines.append(f"{foreign} {img}")
            truth.append(("foreign", b, kind))
        else:
            lines.append(f"https://shop{i}.example-store.com/ {img}")
            truth.append(("no_logo", None, None))
    urls = work / "urls.txt"
    urls.write_text("\n".join(lines) + "\n")

    r = run([P, "check", "--model", out / "icons", "--localiser", out / "localiser", "--gallery", gallery,
             f"--threshold={threshold}", "--url-file", urls, "--json"])
    answers = [json.loads(l) for l in r.stdout.splitlines()]
    (work / "answers.jsonl").write_text(r.stdout)
    timing = r.stderr.strip().splitlines()[-1]

    def rate(sel, pred):
        xs = [ans for ans, t in zip(answers, truth) if sel(t)]
        return sum(1 for x in xs if pred(x)), len(xs)

    flagged = lambda x: x["verdict"] == "impersonation"
    rows = [
        ("logo pages on a foreign domain: impersonation flagged (goal >= 0.90)", rate(lambda t: t[0] == "foreign", flagged)),
        ("  ... flagged naming the page's true brand", sum(1 for x, t in zip(answers, truth) if t[0] == "foreign" and flagged(x) and x["brand"] == t[1]), None),
        ("logo pages on their brand's own domain: flagged (goal <= 0.01)", rate(lambda t: t[0] == "own", flagged)),
        ("no-logo pages: flagged (goal <= 0.01)", rate(lambda t: t[0] == "no_logo", flagged)),
    ]
    for k in kinds:
        rows.append((f"  foreign: {k}", rate(lambda t, k=k: t[2] == k, flagged)))
    n_foreign = rate(lambda t: t[0] == "foreign", lambda x: True)[1]
    report = {"threshold": threshold, "synthetic_domains": synthetic, "pages": len(scenes), "checks": len(answers), "timing": timing, "rows": {}}
    print(f"find threshold {threshold:.4f} (find goal's <= 1 % operating point); {synthetic} brands given <slug>.com; {timing}")
    for row in rows:
        name, v = row[0], row[1]
        if isinstance(v, tuple):
            k, n = v
        else:
            k, n = v, n_foreign
        report["rows"][name.strip(" .")] = {"count": k, "of": n, "rate": k / n if n else None}
        print(f"{name:<72} {k:>4}/{n:<4} {k / n if n else float('nan'):.3f}")
    (work / "report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
