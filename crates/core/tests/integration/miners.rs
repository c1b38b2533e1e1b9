//! Tests of the miners beyond the parity files: naive oracles, properties, errors.
//!
//! The deterministic miners are compared with plain loops over the same distance matrix (for
//! configurations the parity file lacks: similarities, reference sets, value ranges, batches
//! large enough to span several streaming blocks). The random miners are tested by their
//! distributions against oracle probabilities computed in f64.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use proxima_core::miner::{DistanceWeightedMiner, DistanceWeightedMinerParams, UniformHistogramMiner, UniformHistogramMinerParams};
use proxima_core::{Batch, CoreError, Distance, MinerBox, MinerSpec, Tuples};
use serde_json::{Value, json};
use tch::{Device, Kind, Tensor};

type Triple = (i64, i64, i64);
type PairSets = (BTreeSet<(i64, i64)>, BTreeSet<(i64, i64)>);

fn miner(config: Value) -> MinerBox {
    let spec: MinerSpec = serde_json::from_value(config).expect("miner config");
    spec.build().expect("miner builds")
}

fn randn(n: i64, d: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randn([n, d], (Kind::Float, Device::Cpu))
}

fn labels_of(v: &[i64]) -> Tensor {
    Tensor::from_slice(v)
}

/// `i / per_class` labels.
fn grouped(n: i64, per_class: i64) -> Vec<i64> {
    (0..n).map(|i| i / per_class).collect()
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    let t = t.to_kind(Kind::Double);
    let (n, m) = (t.size()[0], t.size()[1]);
    let flat = Vec::<f64>::try_from(t.flatten(0, -1)).unwrap();
    (0..n as usize).map(|i| flat[i * m as usize..(i + 1) * m as usize].to_vec()).collect()
}

fn triplets(t: Tuples) -> BTreeSet<Triple> {
    match t {
        Tuples::Triplets(t) => t.to_vec().into_iter().collect(),
        Tuples::Pairs(_) => panic!("expected triplets"),
    }
}

fn pairs(t: Tuples) -> PairSets {
    match t {
        Tuples::Pairs(p) => {
            let (a, b) = p.to_vecs();
            (a.into_iter().collect(), b.into_iter().collect())
        }
        Tuples::Triplets(_) => panic!("expected pairs"),
    }
}

/// The (f32) distance matrix as f64 rows, and the label relation, for the oracles.
struct Oracle {
    mat: Vec<Vec<f32>>,
    labels: Vec<i64>,
    ref_labels: Vec<i64>,
    is_self: bool,
    inverted: bool,
}

impl Oracle {
    fn new(distance: &Distance, emb: &Tensor, labels: &[i64], reference: Option<(&Tensor, &[i64])>) -> Self {
        let mat = distance.matrix(emb, reference.map(|r| r.0)).unwrap();
        let mat = rows(&mat).into_iter().map(|r| r.into_iter().map(|x| x as f32).collect()).collect();
        Oracle {
            mat,
            labels: labels.to_vec(),
            ref_labels: reference.map_or(labels.to_vec(), |r| r.1.to_vec()),
            is_self: reference.is_none(),
            inverted: distance.is_inverted(),
        }
    }
    fn is_pos(&self, i: usize, j: usize) -> bool {
        self.labels[i] == self.ref_labels[j] && !(self.is_self && i == j)
    }
    fn is_neg(&self, i: usize, j: usize) -> bool {
        self.labels[i] != self.ref_labels[j]
    }
    fn n(&self) -> usize {
        self.labels.len()
    }
    fn m(&self) -> usize {
        self.ref_labels.len()
    }
}

/// PML's TripletMarginMiner, as loops.
fn triplet_margin_oracle(o: &Oracle, margin: f32, kind: &str) -> BTreeSet<Triple> {
    let mut out = BTreeSet::new();
    for a in 0..o.n() {
        for p in (0..o.m()).filter(|&p| o.is_pos(a, p)) {
            for n in (0..o.m()).filter(|&n| o.is_neg(a, n)) {
                let (ap, an) = (o.mat[a][p], o.mat[a][n]);
                let t = if o.inverted { ap - an } else { an - ap };
                let keep = match kind {
                    "easy" => t > margin,
                    "hard" => t <= margin && t <= 0.0,
                    "semihard" => t <= margin && t > 0.0,
                    _ => t <= margin,
                };
                if keep {
                    out.insert((a as i64, p as i64, n as i64));
                }
            }
        }
    }
    out
}

#[test]
fn triplet_margin_miner_spans_blocks_and_matches_oracle() {
    // 1100 × 7 positive pairs × 1100 columns > 2 blocks of the streaming budget.
    let (n, d) = (1100, 8);
    let emb = randn(n, d, 3);
    let lab = grouped(n, 8);
    let l = labels_of(&lab);
    let o = Oracle::new(&Distance::lp(), &emb, &lab, None);
    for kind in ["all", "semihard"] {
        let got = triplets(miner(json!({"type": "TripletMarginMiner", "margin": 0.1, "type_of_triplets": kind})).mine(&Batch::new(&emb, &l)).unwrap());
        let want = triplet_margin_oracle(&o, 0.1, kind);
        assert!(!want.is_empty());
        assert_eq!(got, want, "{kind}");
    }
}

#[test]
fn triplet_margin_miner_with_similarity_and_reference_set() {
    let emb = randn(20, 5, 4);
    let refs = randn(26, 5, 5);
    let lab: Vec<i64> = (0..20).map(|i| i % 4).collect();
    let rlab: Vec<i64> = (0..26).map(|i| i % 5).collect();
    let (l, rl) = (labels_of(&lab), labels_of(&rlab));
    for kind in ["all", "hard", "semihard", "easy"] {
        for (dist, dist_cfg) in [(Distance::cosine(), json!({"type": "cosine"})), (Distance::lp(), json!({"type": "lp"}))] {
            let m = miner(json!({"type": "triplet_margin", "margin": 0.3, "type_of_triplets": kind, "distance": dist_cfg}));
            let got = triplets(m.mine(&Batch::with_reference(&emb, &l, &refs, &rl)).unwrap());
            let o = Oracle::new(&dist, &emb, &lab, Some((&refs, &rlab)));
            assert_eq!(got, triplet_margin_oracle(&o, 0.3, kind), "{kind} {dist:?}");
        }
    }
}

/// PML's AngularMiner, as f64 loops on the raw embeddings (`pairwise_distance` adds 1e-6).
/// Returns (surely kept, possibly kept) to allow for rounding at the threshold.
fn angular_oracle(emb: &[Vec<f64>], refs: &[Vec<f64>], o: &Oracle, angle_deg: f64) -> (BTreeSet<Triple>, BTreeSet<Triple>) {
    let pd = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| (a - b + 1e-6).powi(2)).sum::<f64>().sqrt();
    let thr = angle_deg.to_radians();
    let (mut sure, mut maybe) = (BTreeSet::new(), BTreeSet::new());
    for (a, ea) in emb.iter().enumerate().take(o.n()) {
        for p in (0..o.m()).filter(|&p| o.is_pos(a, p)) {
            let c: Vec<f64> = ea.iter().zip(&refs[p]).map(|(x, y)| (x + y) / 2.0).collect();
            let ap = pd(ea, &refs[p]);
            for n in (0..o.m()).filter(|&n| o.is_neg(a, n)) {
                let angle = (ap / (2.0 * pd(&refs[n], &c))).atan();
                if angle > thr + 1e-5 {
                    sure.insert((a as i64, p as i64, n as i64));
                }
                if angle > thr - 1e-5 {
                    maybe.insert((a as i64, p as i64, n as i64));
                }
            }
        }
    }
    (sure, maybe)
}

#[test]
fn angular_miner_matches_oracle_with_reference_set() {
    let emb = randn(18, 6, 6) * 3.0;
    let refs = randn(22, 6, 7);
    let lab: Vec<i64> = (0..18).map(|i| i % 3).collect();
    let rlab: Vec<i64> = (0..22).map(|i| i % 4).collect();
    let (l, rl) = (labels_of(&lab), labels_of(&rlab));
    let o = Oracle::new(&Distance::lp(), &emb, &lab, Some((&refs, &rlab)));
    let got = triplets(miner(json!({"type": "AngularMiner", "angle": 35})).mine(&Batch::with_reference(&emb, &l, &refs, &rl)).unwrap());
    let (sure, maybe) = angular_oracle(&rows(&emb), &rows(&refs), &o, 35.0);
    assert!(!sure.is_empty() && sure.len() < o.n() * o.m() * o.m());
    assert!(sure.is_subset(&got) && got.is_subset(&maybe), "{} kept, oracle {}..{}", got.len(), sure.len(), maybe.len());
}

#[test]
fn angular_and_distance_weighted_reject_other_distances() {
    for name in ["AngularMiner", "DistanceWeightedMiner"] {
        for dist in [json!({"type": "cosine"}), json!({"type": "lp", "power": 2.0}), json!({"type": "lp", "normalize_embeddings": false})] {
            let spec: MinerSpec = serde_json::from_value(json!({"type": name, "distance": dist})).unwrap();
            assert!(matches!(spec.build(), Err(CoreError::InvalidParameter { .. })), "{name} {dist}");
        }
    }
}

/// PML's BatchEasyHardMiner pick for one row: `largest` uses `max(v·mask)`, else `min` with
/// `finfo.max` for non-candidates. Returns (value, index, found).
fn pick_row(row: &[f32], cand: &[bool], largest: bool) -> (f32, usize, bool) {
    let found = cand.iter().any(|&c| c);
    let vals: Vec<f32> = row
        .iter()
        .zip(cand)
        .map(|(&v, &c)| {
            if largest {
                if c { v } else { 0.0 }
            } else if c {
                v
            } else {
                f32::MAX
            }
        })
        .collect();
    let mut best = 0;
    for (j, &v) in vals.iter().enumerate() {
        if (largest && v > vals[best]) || (!largest && v < vals[best]) {
            best = j;
        }
    }
    (vals[best], best, found)
}

fn easy_hard_oracle(o: &Oracle, ps: &str, ns: &str, pos_range: Option<[f32; 2]>, neg_range: Option<[f32; 2]>) -> PairSets {
    let hardish = |s: &str| s == "hard" || s == "semihard";
    let pos_largest = hardish(ps) != o.inverted;
    let neg_largest = hardish(ns) == o.inverted;
    let side = |i: usize, pos: bool, thr: Option<f32>| {
        let largest = if pos { pos_largest } else { neg_largest };
        let range = if pos { pos_range } else { neg_range };
        let cand: Vec<bool> = (0..o.m())
            .map(|j| {
                let v = o.mat[i][j];
                (if pos { o.is_pos(i, j) } else { o.is_neg(i, j) })
                    && thr.is_none_or(|t| if largest { v < t } else { v > t })
                    && range.is_none_or(|[lo, hi]| lo <= v && v <= hi)
            })
            .collect();
        pick_row(&o.mat[i], &cand, largest)
    };
    let (mut pos, mut neg) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..o.n() {
        let (p, n) = if ps == "semihard" && ns != "all" {
            let n = side(i, false, None);
            (Some(side(i, true, Some(n.0))), Some(n))
        } else if ns == "semihard" && ps != "all" {
            let p = side(i, true, None);
            (Some(p), Some(side(i, false, Some(p.0))))
        } else {
            ((ps != "all").then(|| side(i, true, None)), (ns != "all").then(|| side(i, false, None)))
        };
        let all_pos = || (0..o.m()).filter(move |&j| o.is_pos(i, j));
        match p {
            Some(p) if p.2 && (n.is_none() || n.unwrap().2) => {
                pos.insert((i as i64, p.1 as i64));
            }
            None => pos.extend(all_pos().map(|j| (i as i64, j as i64))),
            _ => {}
        }
        match n {
            Some(n) if n.2 && (p.is_none() || p.unwrap().2) => {
                neg.insert((i as i64, n.1 as i64));
            }
            None => neg.extend((0..o.m()).filter(|&j| o.is_neg(i, j)).map(|j| (i as i64, j as i64))),
            _ => {}
        }
    }
    (pos, neg)
}

#[test]
fn batch_easy_hard_miner_matches_oracle_for_strategies_and_ranges() {
    let emb = randn(30, 6, 8);
    let lab: Vec<i64> = (0..30).map(|i| i % 6).collect();
    let l = labels_of(&lab);
    let o = Oracle::new(&Distance::lp(), &emb, &lab, None);
    let strategies = ["easy", "semihard", "hard", "all"];
    let ranges: [Option<[f32; 2]>; 2] = [None, Some([0.6, 1.3])];
    let mut checked = 0;
    for ps in strategies {
        for ns in strategies {
            let invalid = (ps == "semihard" && matches!(ns, "semihard" | "all")) || (ns == "semihard" && ps == "all");
            let spec = |pr: Option<[f32; 2]>, nr: Option<[f32; 2]>| {
                json!({"type": "BatchEasyHardMiner", "pos_strategy": ps, "neg_strategy": ns,
                       "allowed_pos_range": pr.map(|r| [r[0] as f64, r[1] as f64]), "allowed_neg_range": nr.map(|r| [r[0] as f64, r[1] as f64])})
            };
            if invalid {
                let s: MinerSpec = serde_json::from_value(spec(None, None)).unwrap();
                assert!(matches!(s.build(), Err(CoreError::InvalidParameter { .. })), "{ps}/{ns} must be rejected");
                continue;
            }
            for pr in ranges {
                for nr in ranges {
                    let got = pairs(miner(spec(pr, nr)).mine(&Batch::new(&emb, &l)).unwrap());
                    let want = easy_hard_oracle(&o, ps, ns, pr, nr);
                    assert_eq!(got, want, "{ps}/{ns} ranges {pr:?} {nr:?}");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 13 * 4);
}

fn pair_margin_oracle(o: &Oracle, pos_margin: f32, neg_margin: f32) -> PairSets {
    let (mut pos, mut neg) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..o.n() {
        for j in 0..o.m() {
            let v = o.mat[i][j];
            if o.is_pos(i, j) && (if o.inverted { v < pos_margin } else { v > pos_margin }) {
                pos.insert((i as i64, j as i64));
            }
            if o.is_neg(i, j) && (if o.inverted { v > neg_margin } else { v < neg_margin }) {
                neg.insert((i as i64, j as i64));
            }
        }
    }
    (pos, neg)
}

fn multi_similarity_oracle(o: &Oracle, eps: f32) -> PairSets {
    let (mut pos, mut neg) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..o.n() {
        let p: Vec<f32> = (0..o.m()).filter(|&j| o.is_pos(i, j)).map(|j| o.mat[i][j]).collect();
        let n: Vec<f32> = (0..o.m()).filter(|&j| o.is_neg(i, j)).map(|j| o.mat[i][j]).collect();
        if p.is_empty() || n.is_empty() {
            continue;
        }
        let (pmin, pmax) = (p.iter().cloned().fold(f32::MAX, f32::min), p.iter().cloned().fold(f32::MIN, f32::max));
        let (nmin, nmax) = (n.iter().cloned().fold(f32::MAX, f32::min), n.iter().cloned().fold(f32::MIN, f32::max));
        for j in 0..o.m() {
            let v = o.mat[i][j];
            let (kp, kn) = if o.inverted { (v - eps < nmax, v + eps > pmin) } else { (v + eps > nmin, v - eps < pmax) };
            if o.is_pos(i, j) && kp {
                pos.insert((i as i64, j as i64));
            }
            if o.is_neg(i, j) && kn {
                neg.insert((i as i64, j as i64));
            }
        }
    }
    (pos, neg)
}

/// Pairs as a multiset of unordered index pairs: in a self batch `d(i, j) = d(j, i)`, so which
/// of two mirror pairs tied at HDC's cut-off is kept is arbitrary.
fn unordered(pairs: &BTreeSet<(i64, i64)>) -> std::collections::BTreeMap<(i64, i64), usize> {
    let mut m = std::collections::BTreeMap::new();
    for &(i, j) in pairs {
        *m.entry((i.min(j), i.max(j))).or_default() += 1;
    }
    m
}

fn hdc_oracle(o: &Oracle, f: f64) -> PairSets {
    let pick = |pos: bool| -> BTreeSet<(i64, i64)> {
        let mut v: Vec<(f32, usize, usize)> = Vec::new();
        for i in 0..o.n() {
            for j in 0..o.m() {
                if (pos && o.is_pos(i, j)) || (!pos && o.is_neg(i, j)) {
                    v.push((o.mat[i][j], i, j));
                }
            }
        }
        let k = (f * v.len() as f64).ceil() as usize;
        // Hardest first: large distances for positives, small for negatives (reversed for a similarity).
        let desc = pos != o.inverted;
        v.sort_by(|a, b| if desc { b.0.total_cmp(&a.0) } else { a.0.total_cmp(&b.0) });
        v.into_iter().take(k).map(|(_, i, j)| (i as i64, j as i64)).collect()
    };
    (pick(true), pick(false))
}

#[test]
fn pair_miners_match_oracles_with_both_distance_kinds_and_reference_sets() {
    let emb = randn(21, 5, 9);
    let refs = randn(17, 5, 10);
    let lab: Vec<i64> = (0..21).map(|i| i % 4).collect();
    let rlab: Vec<i64> = (0..17).map(|i| i % 5).collect();
    let (l, rl) = (labels_of(&lab), labels_of(&rlab));
    for (dist, cfg) in [(Distance::lp(), json!({"type": "lp"})), (Distance::cosine(), json!({"type": "cosine"}))] {
        for reference in [None, Some((&refs, rlab.as_slice()))] {
            let batch = match reference {
                Some(_) => Batch::with_reference(&emb, &l, &refs, &rl),
                None => Batch::new(&emb, &l),
            };
            let o = Oracle::new(&dist, &emb, &lab, reference);
            let (pm, nm) = if dist.is_inverted() { (0.3, 0.1) } else { (1.0, 1.2) };
            let got = pairs(miner(json!({"type": "PairMarginMiner", "pos_margin": pm, "neg_margin": nm, "distance": cfg})).mine(&batch).unwrap());
            assert_eq!(got, pair_margin_oracle(&o, pm as f32, nm as f32), "pair margin {dist:?}");
            let got = pairs(miner(json!({"type": "MultiSimilarityMiner", "epsilon": 0.2, "distance": cfg})).mine(&batch).unwrap());
            assert_eq!(got, multi_similarity_oracle(&o, 0.2), "multi-similarity {dist:?}");
            let got = pairs(miner(json!({"type": "HDCMiner", "filter_percentage": 0.3, "distance": cfg})).mine(&batch).unwrap());
            let want = hdc_oracle(&o, 0.3);
            if reference.is_some() {
                assert_eq!(got, want, "hdc {dist:?}");
            } else {
                assert_eq!((unordered(&got.0), unordered(&got.1)), (unordered(&want.0), unordered(&want.1)), "hdc {dist:?}");
            }
        }
    }
}

const DETERMINISTIC: [&str; 7] = ["BatchHardMiner", "BatchEasyHardMiner", "MultiSimilarityMiner", "TripletMarginMiner", "PairMarginMiner", "AngularMiner", "HDCMiner"];
const RANDOM: [&str; 2] = ["DistanceWeightedMiner", "UniformHistogramMiner"];

/// Maps tuples mined on a permuted batch back to the original indices.
fn unpermute(t: Tuples, perm: &[i64]) -> (BTreeSet<Triple>, PairSets) {
    let p = |i: i64| perm[i as usize];
    match t {
        Tuples::Triplets(t) => (t.to_vec().into_iter().map(|(a, b, c)| (p(a), p(b), p(c))).collect(), Default::default()),
        Tuples::Pairs(x) => {
            let (a, b) = x.to_vecs();
            (Default::default(), (a.into_iter().map(|(i, j)| (p(i), p(j))).collect(), b.into_iter().map(|(i, j)| (p(i), p(j))).collect()))
        }
    }
}

fn as_sets(t: Tuples) -> (BTreeSet<Triple>, PairSets) {
    unpermute(t, &(0..10_000).collect::<Vec<i64>>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn deterministic_miners_are_permutation_invariant(n in 6i64..20, classes in 2i64..5, seed in 0i64..1000, rot in 1usize..5) {
        let emb = randn(n, 4, seed);
        let lab: Vec<i64> = (0..n).map(|i| (i * 7 + seed) % classes).collect();
        let mut perm: Vec<i64> = (0..n).collect();
        perm.rotate_left(rot % n as usize);
        perm.swap(0, (n - 1) as usize);
        let pt = Tensor::from_slice(&perm);
        let emb_p = emb.index_select(0, &pt);
        let lab_p: Vec<i64> = perm.iter().map(|&i| lab[i as usize]).collect();
        let (l, lp) = (labels_of(&lab), labels_of(&lab_p));
        for name in DETERMINISTIC {
            let m = miner(json!({"type": name}));
            let a = as_sets(m.mine(&Batch::new(&emb, &l)).unwrap());
            let b = unpermute(m.mine(&Batch::new(&emb_p, &lp)).unwrap(), &perm);
            if name == "HDCMiner" {
                prop_assert_eq!((unordered(&a.1.0), unordered(&a.1.1)), (unordered(&b.1.0), unordered(&b.1.1)));
            } else {
                prop_assert_eq!(a, b, "{}", name);
            }
        }
    }

    #[test]
    fn degenerate_batches_give_no_invalid_tuples(n in 2i64..12, seed in 0i64..1000, singletons in any::<bool>()) {
        let emb = randn(n, 3, seed);
        let lab: Vec<i64> = if singletons { (0..n).collect() } else { vec![5; n as usize] };
        let l = labels_of(&lab);
        for name in DETERMINISTIC.iter().chain(RANDOM.iter()) {
            let t = miner(json!({"type": name})).mine(&Batch::new(&emb, &l)).unwrap();
            match t {
                Tuples::Triplets(t) => prop_assert!(t.is_empty(), "{} gave triplets", name),
                Tuples::Pairs(p) => {
                    // One class: no negatives; singletons: no positives (and nothing from miners needing both).
                    if singletons { prop_assert_eq!(p.num_pos(), 0, "{}", name) } else { prop_assert_eq!(p.num_neg(), 0, "{}", name) }
                }
            }
        }
    }
}

#[test]
fn every_miner_rejects_bad_input_and_unknown_fields() {
    let l = labels_of(&[0, 0, 1]);
    let nan = Tensor::from_slice(&[f32::NAN, 0.0, 1.0, 1.0, 0.5, 0.5]).view([3, 2]);
    let short = labels_of(&[0, 1]);
    let emb = randn(3, 2, 1);
    for name in DETERMINISTIC.iter().chain(RANDOM.iter()) {
        let m = miner(json!({"type": name}));
        assert!(matches!(m.mine(&Batch::new(&nan, &l)), Err(CoreError::NonFinite(_))), "{name}");
        assert!(matches!(m.mine(&Batch::new(&emb, &short)), Err(CoreError::Shape(_))), "{name}");
        assert!(serde_json::from_value::<MinerSpec>(json!({"type": name, "no_such_parameter": 1})).is_err(), "{name}");
    }
    for bad in [
        json!({"type": "HDCMiner", "filter_percentage": 1.5}),
        json!({"type": "UniformHistogramMiner", "num_bins": 0}),
        json!({"type": "TripletMarginMiner", "type_of_triplets": "medium"}),
        json!({"type": "BatchEasyHardMiner", "allowed_pos_range": [1.0, 0.0]}),
    ] {
        let ok = serde_json::from_value::<MinerSpec>(bad.clone()).map(|s| s.build().is_ok()).unwrap_or(false);
        assert!(!ok, "{bad} must be rejected");
    }
}

// ---------------------------------------------------------------- random miners

/// The oracle sampling probabilities of DistanceWeightedMiner for one anchor, in f64:
/// ∝ 1/q(max(d, cutoff)) over the negatives with d < nonzero_loss_cutoff.
fn dw_probabilities(emb: &[Vec<f64>], labels: &[i64], a: usize, cutoff: f64, nzc: f64) -> Vec<f64> {
    let dim = emb[0].len() as f64;
    let unit = |v: &[f64]| {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter().map(|x| x / n).collect::<Vec<f64>>()
    };
    let ua = unit(&emb[a]);
    let mut w: Vec<f64> = (0..emb.len())
        .map(|j| {
            if labels[j] == labels[a] {
                return 0.0;
            }
            let uj = unit(&emb[j]);
            let d = ua.iter().zip(&uj).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
            if d >= nzc {
                return 0.0;
            }
            let d = d.max(cutoff);
            let log_q = (dim - 2.0) * d.ln() + (dim - 3.0) / 2.0 * (1.0 - 0.25 * d * d).ln();
            (-log_q).exp()
        })
        .collect();
    let s: f64 = w.iter().sum();
    if s > 0.0 {
        w.iter_mut().for_each(|x| *x /= s);
    }
    w
}

#[test]
fn distance_weighted_miner_samples_by_inverse_sphere_density() {
    let (n, d) = (48, 6);
    let emb = randn(n, d, 11);
    let lab = grouped(n, 6);
    let l = labels_of(&lab);
    let e = rows(&emb);
    let (cutoff, nzc) = (0.5, 1.4);
    let m = miner(json!({"type": "DistanceWeightedMiner", "cutoff": cutoff, "nonzero_loss_cutoff": nzc}));
    let mut counts: HashMap<(i64, i64), f64> = HashMap::new();
    let mut per_anchor = vec![0.0f64; n as usize];
    let mut pos_counts: HashMap<(i64, i64), f64> = HashMap::new();
    for rep in 0..300 {
        tch::manual_seed(1000 + rep);
        let t = m.mine(&Batch::new(&emb, &l)).unwrap();
        let Tuples::Triplets(t) = t else { panic!("triplets") };
        for (a, p, ng) in t.to_vec() {
            assert_eq!(lab[a as usize], lab[p as usize]);
            assert_ne!(a, p);
            assert_ne!(lab[a as usize], lab[ng as usize]);
            *counts.entry((a, ng)).or_default() += 1.0;
            *pos_counts.entry((a, p)).or_default() += 1.0;
            per_anchor[a as usize] += 1.0;
        }
    }
    let mut checked = 0;
    let (mut closer_prob, mut farther_prob) = (0.0, 0.0);
    for a in 0..n as usize {
        let probs = dw_probabilities(&e, &lab, a, cutoff, nzc);
        if probs.iter().all(|&p| p == 0.0) {
            assert_eq!(per_anchor[a], 0.0, "anchor {a} has no eligible negative but was sampled");
            continue;
        }
        // Every anchor gets (class size) triplets per draw.
        assert_eq!(per_anchor[a], 300.0 * 6.0);
        for (j, &p) in probs.iter().enumerate() {
            let observed = counts.get(&(a as i64, j as i64)).copied().unwrap_or(0.0) / per_anchor[a];
            if p == 0.0 {
                assert_eq!(observed, 0.0, "anchor {a}: negative {j} is outside the cutoffs but was sampled");
            } else {
                // Binomial standard error with 1800 draws; 5 sigma plus a small floor.
                let se = (p * (1.0 - p) / per_anchor[a]).sqrt();
                assert!((observed - p).abs() <= 5.0 * se + 2e-3, "anchor {a} negative {j}: observed {observed}, expected {p}");
                checked += 1;
            }
        }
        // Closer eligible negatives carry more probability than farther ones (1/q decreases below √2).
        let ua = &e[a];
        let dist = |j: usize| {
            let n1 = ua.iter().map(|x| x * x).sum::<f64>().sqrt();
            let n2 = e[j].iter().map(|x| x * x).sum::<f64>().sqrt();
            ua.iter().zip(&e[j]).map(|(x, y)| (x / n1 - y / n2).powi(2)).sum::<f64>().sqrt()
        };
        let mut elig: Vec<(f64, usize)> = (0..n as usize).filter(|&j| probs[j] > 0.0).map(|j| (dist(j), j)).collect();
        elig.sort_by(|x, y| x.0.total_cmp(&y.0));
        let half = elig.len() / 2;
        for (k, &(_, j)) in elig.iter().enumerate() {
            let obs = counts.get(&(a as i64, j as i64)).copied().unwrap_or(0.0);
            if k < half {
                closer_prob += obs;
            } else if k >= elig.len() - half {
                farther_prob += obs;
            }
        }
    }
    assert!(checked > 100, "only {checked} probabilities checked");
    assert!(closer_prob > 1.5 * farther_prob, "closer half sampled {closer_prob} times, farther half {farther_prob}");
    // Positives are uniform over the anchor's other class members.
    for (&(a, _), &c) in &pos_counts {
        let expected = per_anchor[a as usize] / 5.0;
        assert!((c - expected).abs() < 6.0 * (expected * 0.8).sqrt(), "positive counts not uniform: {c} vs {expected}");
    }
}

#[test]
fn distance_weighted_weights_match_oracle() {
    let (n, d) = (24, 16);
    let emb = randn(n, d, 12);
    let lab = grouped(n, 4);
    let l = labels_of(&lab);
    let dw = DistanceWeightedMiner { params: DistanceWeightedMinerParams { cutoff: 0.5, nonzero_loss_cutoff: 1.4 }, distance: Distance::lp() };
    let w = rows(&dw.weights(&Batch::new(&emb, &l)).unwrap());
    let e = rows(&emb);
    for (a, row) in w.iter().enumerate() {
        let p = dw_probabilities(&e, &lab, a, 0.5, 1.4);
        for (j, (&got, &want)) in row.iter().zip(&p).enumerate() {
            assert!((got - want).abs() < 1e-4 + 1e-3 * want, "weight [{a}][{j}] = {got} vs {want}");
        }
    }
}

/// One seeded draw of the distance-weighted miner, in a child process: libtorch's generator is
/// global, so other tests running in parallel threads would consume numbers between
/// `manual_seed` and the draw.
fn seeded_draw_in_child(seed: i64) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "miners::distance_weighted_seeded_draw_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("PROXIMA_DW_SEED", seed.to_string())
        .output()
        .expect("test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().find_map(|l| l.split_once("DRAW:").map(|x| x.1)).unwrap_or_else(|| panic!("child printed no draw: {stdout}")).to_string()
}

#[test]
#[ignore = "run by distance_weighted_miner_is_deterministic_under_manual_seed in a fresh process"]
fn distance_weighted_seeded_draw_child() {
    let Some(seed) = std::env::var("PROXIMA_DW_SEED").ok().and_then(|s| s.parse::<i64>().ok()) else { return };
    let emb = Tensor::from_slice(&(0..24 * 16).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0).sin()).collect::<Vec<f32>>()).view([24, 16]);
    let l = labels_of(&grouped(24, 4));
    tch::manual_seed(seed);
    let t = miner(json!({"type": "distance_weighted"})).mine(&Batch::new(&emb, &l)).unwrap();
    let Tuples::Triplets(t) = t else { panic!("triplets") };
    let raw: Vec<Vec<i64>> = [t.anchor, t.positive, t.negative].iter().map(|x| Vec::<i64>::try_from(x).unwrap()).collect();
    println!("DRAW:{raw:?}");
}

#[test]
fn distance_weighted_miner_is_deterministic_under_manual_seed() {
    let (a, b, c) = (seeded_draw_in_child(5), seeded_draw_in_child(5), seeded_draw_in_child(6));
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn uniform_histogram_miner_spreads_pairs_over_the_bins() {
    // Skewed distances: most pairs are far, a few are very close (near-duplicates).
    let (n, d) = (64, 8);
    let mut emb = randn(n, d, 13);
    let dup = emb.narrow(0, 0, 8) + randn(8, d, 14) * 0.05;
    emb = Tensor::cat(&[dup, emb.narrow(0, 8, n - 8)], 0);
    let lab: Vec<i64> = (0..n).map(|i| i % 8).collect();
    let l = labels_of(&lab);
    let (num_bins, per_bin) = (10, 7);
    let m = miner(json!({"type": "UniformHistogramMiner", "num_bins": num_bins, "pos_per_bin": per_bin, "neg_per_bin": per_bin}));
    let o = Oracle::new(&Distance::lp(), &emb, &lab, None);
    for pos in [true, false] {
        // Oracle bins of the pair values (equal-width between min and max, last bin closed).
        let values: Vec<(i64, i64, f32)> = (0..o.n())
            .flat_map(|i| (0..o.m()).map(move |j| (i, j)))
            .filter(|&(i, j)| if pos { o.is_pos(i, j) } else { o.is_neg(i, j) })
            .map(|(i, j)| (i as i64, j as i64, o.mat[i][j]))
            .collect();
        let lo = values.iter().map(|v| v.2).fold(f32::MAX, f32::min) as f64;
        let hi = values.iter().map(|v| v.2).fold(f32::MIN, f32::max) as f64;
        let width = (hi - lo) / num_bins as f64;
        let bin_of = |v: f32| (((v as f64 - lo) / width).floor() as i64).clamp(0, num_bins - 1);
        // Values on an interior bin edge may fall on either side in f32; they are not counted.
        let near_edge = |v: f32| {
            let x = (v as f64 - lo) / width;
            let r = x.round();
            r >= 1.0 && r < num_bins as f64 && (x - r).abs() < 1e-4
        };
        let population: HashMap<(i64, i64), f32> = values.iter().map(|&(i, j, v)| ((i, j), v)).collect();
        let mut bin_pop = vec![0usize; num_bins as usize];
        values.iter().for_each(|v| bin_pop[bin_of(v.2) as usize] += 1);
        let nonempty = bin_pop.iter().filter(|&&c| c > 0).count();
        assert!(nonempty >= 4 && bin_pop.iter().max().unwrap() > &(10 * bin_pop.iter().filter(|&&c| c > 0).min().unwrap()), "population should be skewed: {bin_pop:?}");
        let mut hits = vec![0usize; num_bins as usize];
        let mut pair_hits: HashMap<(i64, i64), usize> = HashMap::new();
        let reps = 200;
        for rep in 0..reps {
            tch::manual_seed(rep);
            let Tuples::Pairs(raw) = m.mine(&Batch::new(&emb, &l)).unwrap() else { panic!() };
            let (a, b) = if pos { (raw.pos_anchor, raw.pos_other) } else { (raw.neg_anchor, raw.neg_other) };
            let (a, b) = (Vec::<i64>::try_from(a).unwrap(), Vec::<i64>::try_from(b).unwrap());
            assert_eq!(a.len(), per_bin as usize * nonempty, "one draw takes per_bin pairs from every non-empty bin");
            for (&i, &j) in a.iter().zip(&b) {
                let v = *population.get(&(i, j)).expect("sampled pair is a valid pair of that kind");
                if !near_edge(v) {
                    hits[bin_of(v) as usize] += 1;
                }
                *pair_hits.entry((i, j)).or_default() += 1;
            }
        }
        for (k, (&h, &p)) in hits.iter().zip(&bin_pop).enumerate() {
            if p == 0 {
                assert_eq!(h, 0, "bin {k} is empty but was sampled");
            } else {
                assert!((h as i64 - reps * per_bin).abs() <= per_bin, "bin {k}: {h} draws, expected {}", reps * per_bin);
            }
        }
        // Within the most populated bin the draws are uniform.
        let (big, &size) = bin_pop.iter().enumerate().max_by_key(|x| x.1).unwrap();
        let expected = (reps * per_bin) as f64 / size as f64;
        for (&(i, j), &c) in &pair_hits {
            let v = population[&(i, j)];
            if bin_of(v) as usize == big && !near_edge(v) {
                assert!((c as f64 - expected).abs() < 6.0 * expected.sqrt() + 2.0, "pair ({i},{j}) drawn {c} times, expected ≈{expected}");
            }
        }
    }
}

#[test]
fn uniform_histogram_bins_put_the_maximum_in_the_last_bin() {
    let um = UniformHistogramMiner { params: UniformHistogramMinerParams { num_bins: 4, pos_per_bin: 1, neg_per_bin: 1 }, distance: Distance::lp() };
    let v = Tensor::from_slice(&[0.0f32, 0.24, 0.25, 0.5, 0.99, 1.0]);
    assert_eq!(Vec::<i64>::try_from(um.bins(&v)).unwrap(), vec![0, 0, 1, 2, 3, 3]);
    let same = Tensor::from_slice(&[0.3f32, 0.3, 0.3]);
    assert_eq!(Vec::<i64>::try_from(um.bins(&same)).unwrap(), vec![3, 3, 3]);
}
