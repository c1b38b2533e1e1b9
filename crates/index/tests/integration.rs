//! End-to-end gallery behaviour through the public API: files on disk, corruption,
//! model fingerprints, HNSW recall and the calibrated open-set decision.

use std::path::{Path, PathBuf};

use proxima_index::{BackendConfig, Decision, FORMAT_VERSION, Gallery, HnswConfig, ImpostorScores, IndexError, MAGIC, Metric, bench_index, clustered_data};

/// A gallery of `brands` brands with `per` rows each, from clustered unit vectors.
fn brand_gallery(brands: usize, per: usize, d: usize, seed: u64) -> (Gallery, Vec<f32>) {
    // Brands are consecutive blocks of rows (not clusters): enough for storage and
    // search tests, where a query's true brand is that of the row it was made from.
    let (rows, q) = clustered_data(brands * per, d, 8, seed);
    let mut g = Gallery::new(d, "model-v1").unwrap();
    for b in 0..brands {
        let paths: Vec<PathBuf> = (0..per).map(|i| PathBuf::from(format!("logos/brand{b}/{i}.png"))).collect();
        g.add(&format!("brand{b}"), &rows[b * per * d..(b + 1) * per * d], &paths).unwrap();
    }
    (g, q)
}

fn saved(g: &Gallery) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("brands.pxg");
    g.save(&p).unwrap();
    (dir, p)
}

#[test]
fn save_load_round_trip_preserves_everything() {
    let (mut g, q) = brand_gallery(5, 7, 16, 1);
    g.calibrate_from_scores(&[0.9, 0.8], &[0.1, 0.3, 0.2, 0.6], 0.3).unwrap();
    g.set_backend(BackendConfig::Hnsw(HnswConfig { ef_search: 99, ..Default::default() })).unwrap();
    let (dir, p) = saved(&g);
    let back = Gallery::load(&p).unwrap();
    assert_eq!(back.data(), g.data());
    assert_eq!(back.labels(), g.labels());
    assert_eq!(back.paths(), g.paths());
    assert_eq!(back.brands(), g.brands());
    assert_eq!(back.dim(), 16);
    assert_eq!(back.metric(), Metric::Cosine);
    assert_eq!(back.model_fingerprint(), "model-v1");
    assert_eq!(back.calibration(), g.calibration());
    assert_eq!(back.backend(), g.backend());
    assert_eq!(back.search(&q[..16], 5).unwrap(), g.search(&q[..16], 5).unwrap());
    // Only the target file is left in the directory: no temp files.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("brands.pxg")]);
}

#[test]
fn saving_replaces_an_existing_file_atomically() {
    let (g, _) = brand_gallery(3, 2, 4, 2);
    let (dir, p) = saved(&g);
    let mut g2 = g.clone();
    g2.remove("brand1").unwrap();
    g2.save(&p).unwrap();
    assert_eq!(Gallery::load(&p).unwrap().list().len(), 2);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // A directory that does not exist is an I/O error naming it.
    let missing = dir.path().join("no/such/dir/g.pxg");
    let e = g.save(&missing).unwrap_err();
    assert!(matches!(e, IndexError::Io { .. }));
    assert!(e.to_string().contains("no/such/dir"), "{e}");
}

#[test]
fn corrupted_files_are_clear_errors_naming_the_path() {
    let (g, _) = brand_gallery(3, 4, 8, 3);
    let (dir, p) = saved(&g);
    let good = std::fs::read(&p).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let q = dir.path().join(name);
        std::fs::write(&q, bytes).unwrap();
        q
    };
    let check = |q: &Path, pred: &dyn Fn(&IndexError) -> bool| {
        let e = Gallery::load(q).unwrap_err();
        assert!(pred(&e), "unexpected error {e:?}");
        assert!(e.to_string().contains(q.file_name().unwrap().to_str().unwrap()), "{e}");
    };

    let mut b = good.clone();
    b[1] = b'Q';
    check(&write("magic.pxg", &b), &|e| matches!(e, IndexError::BadMagic { .. }));
    check(&write("tiny.pxg", &good[..5]), &|e| matches!(e, IndexError::BadMagic { .. }));
    check(&write("empty.pxg", &[]), &|e| matches!(e, IndexError::BadMagic { .. }));

    let mut b = good.clone();
    b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    check(&write("version.pxg", &b), &|e| matches!(e, IndexError::UnsupportedVersion { found: 2, supported: 1, .. }));

    // Truncated in the rows, in the header, and right after the prefix.
    let n = good.len() as u64;
    check(
        &write("trunc_rows.pxg", &good[..good.len() - 10]),
        &|e| matches!(e, IndexError::LengthMismatch { expected, actual, .. } if *expected == n && *actual == n - 10),
    );
    check(&write("trunc_header.pxg", &good[..60]), &|e| matches!(e, IndexError::LengthMismatch { .. }));
    check(&write("trunc_prefix.pxg", &good[..22]), &|e| matches!(e, IndexError::LengthMismatch { .. }));
    let mut b = good.clone();
    b.extend_from_slice(&[0, 0, 0, 0]);
    check(&write("padded.pxg", &b), &|e| matches!(e, IndexError::LengthMismatch { .. }));

    // One flipped bit in the rows, in the header, in the checksum itself.
    for (name, at) in [("bit_rows.pxg", good.len() - 20), ("bit_header.pxg", 40), ("bit_crc.pxg", good.len() - 1)] {
        let mut b = good.clone();
        b[at] ^= 0x04;
        check(&write(name, &b), &|e| matches!(e, IndexError::ChecksumMismatch { .. }));
    }
    // A corrupted header length field: a length error, not a huge allocation or a panic.
    for bad in [u64::MAX, good.len() as u64] {
        let mut b = good.clone();
        b[12..20].copy_from_slice(&bad.to_le_bytes());
        check(&write("hlen.pxg", &b), &|e| matches!(e, IndexError::LengthMismatch { .. }));
    }
    // A header length that still fits but cuts the JSON short: the checksum catches it.
    let mut b = good.clone();
    b[12] = b[12].wrapping_sub(1);
    check(&write("hlen_short.pxg", &b), &|e| matches!(e, IndexError::ChecksumMismatch { .. }));

    let e = Gallery::load(dir.path().join("absent.pxg")).unwrap_err();
    assert!(matches!(e, IndexError::Io { .. }) && e.to_string().contains("absent.pxg"));
    assert_eq!(&good[..8], &MAGIC);
}

#[test]
fn fingerprint_mismatch_is_refused() {
    let (g, _) = brand_gallery(2, 3, 4, 4);
    let (_dir, p) = saved(&g);
    assert!(Gallery::load_for_model(&p, "model-v1").is_ok());
    let e = Gallery::load_for_model(&p, "model-v2").unwrap_err();
    assert!(matches!(e, IndexError::FingerprintMismatch { .. }));
    let msg = e.to_string();
    assert!(msg.contains("was built with model model-v1, you are using model model-v2"), "{msg}");
    assert!(msg.contains("brands.pxg"), "{msg}");
}

#[test]
fn hnsw_recall_at_10_is_at_least_0_9_on_5000_vectors() {
    let r = bench_index(5_000, 128, 200, 42).unwrap();
    assert_eq!((r.n, r.d, r.queries, r.k), (5_000, 128, 200, 10));
    assert!(r.recall_at_k >= 0.9, "recall@10 = {}", r.recall_at_k);
    assert!(r.recall_at_k <= 1.0);
}

#[test]
fn hnsw_gallery_identifies_like_the_exact_one() {
    // 60 brands × 100 rows: large enough for the graph (exact_below lowered to 0).
    let (mut exact, _) = brand_gallery(60, 100, 32, 5);
    let mut approx = exact.clone();
    approx.set_backend(BackendConfig::Hnsw(HnswConfig { exact_below: 0, ..Default::default() })).unwrap();
    assert!(approx.build_index().unwrap().is_approximate());
    // Query with enrolled rows perturbed slightly: the true brand must come first in both.
    let mut agree = 0;
    for r in (0..6000).step_by(97) {
        let q: Vec<f32> = exact.row(r).iter().enumerate().map(|(i, v)| v + 0.01 * ((i % 3) as f32 - 1.0)).collect();
        let e = exact.rank_brands(&q, 3).unwrap();
        let a = approx.rank_brands(&q, 3).unwrap();
        assert_eq!(e[0].brand, format!("brand{}", r / 100));
        if a[0].brand == e[0].brand && (a[0].similarity - e[0].similarity).abs() < 1e-5 {
            agree += 1;
        }
    }
    assert!(agree >= 60, "{agree}/62 agree");
    exact.remove("brand0").unwrap();
    assert_eq!(exact.len(), 5900);
}

#[test]
fn calibrated_gallery_answers_unknown_for_unenrolled_brands() {
    // 20 brands in 24-D; brands 0..10 enrolled, 10..20 never enrolled. Calibration and
    // test queries are fresh draws, so genuine scores are not self-matches.
    let d = 24;
    let mut s = 7u64;
    let mut rnd = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let centres: Vec<Vec<f32>> = (0..20).map(|_| (0..d).map(|_| rnd()).collect()).collect();
    let mut sample = |c: usize, n: usize| -> Vec<f32> { (0..n).flat_map(|_| centres[c].iter().map(|&x| x + 0.15 * rnd()).collect::<Vec<_>>()).collect() };
    let mut g = Gallery::new(d, "m").unwrap();
    for b in 0..10 {
        let p: Vec<String> = (0..20).map(|i| format!("b{b}/{i}")).collect();
        g.add(&format!("b{b}"), &sample(b, 20), &p).unwrap();
    }
    // Calibration: 10 queries of each enrolled brand and 10 of each of brands 10..15.
    let (mut cq, mut ct) = (Vec::new(), Vec::new());
    for b in 0..15 {
        cq.extend(sample(b, 10));
        ct.extend(std::iter::repeat_n(format!("b{b}"), 10));
    }
    let c = g.calibrate(&cq, &ct, 0.01, ImpostorScores::BestWrongBrand).unwrap().clone();
    assert_eq!((c.num_genuine, c.num_impostor), (100, 150));
    assert!(c.achieved_fmr <= 0.01);
    // Test: enrolled brands are recognised, brands 15..20 (never seen) are rejected.
    let (mut known_ok, mut unknown_ok) = (0, 0);
    for b in 0..20 {
        let q = sample(b, 1);
        let id = g.identify(&q, 3).unwrap();
        assert_eq!(id.threshold, c.threshold);
        match (&id.decision, b < 10) {
            (Decision::Known { brand, .. }, true) if *brand == format!("b{b}") => known_ok += 1,
            (Decision::Unknown { .. }, false) => unknown_ok += 1,
            _ => {}
        }
    }
    assert!(known_ok >= 9, "known {known_ok}/10");
    assert!(unknown_ok >= 9, "unknown {unknown_ok}/10");
}

/// 10 000 generated names (path tricks, control characters, long runs, other normal forms) through
/// `Gallery::add`: each is refused or stored exactly as its NFC form, the saved file holds the
/// same names, and nothing but the gallery file is written.
#[test]
fn fuzzed_brand_names_are_refused_or_stored_exactly() {
    use proxima_index::brand_name::{normalize, tricky_names};
    let names = tricky_names(29, 10_000);
    let mut g = Gallery::new(2, "model-v1").unwrap();
    let (mut refused, mut stored) = (0, std::collections::BTreeSet::new());
    for n in &names {
        match g.add(n, &[1.0, 0.5], &["x.png"]) {
            Ok(_) => {
                let nfc = normalize(n).unwrap();
                assert!(g.brand_id(&nfc).is_some(), "{n:?} stored as {nfc:?}");
                assert!(!nfc.contains(['/', '\\']) && !nfc.starts_with('.') && !nfc.chars().any(char::is_control), "{nfc:?}");
                assert!(nfc.chars().count() <= proxima_index::brand_name::MAX_CHARS);
                stored.insert(nfc);
            }
            Err(IndexError::InvalidBrand { .. }) => refused += 1,
            Err(e) => panic!("{n:?}: unexpected error {e}"),
        }
    }
    assert!(refused > 1000 && stored.len() > 1000, "{refused} refused, {} stored", stored.len());
    assert_eq!(g.num_brands(), stored.len());
    let (dir, p) = saved(&g);
    let back = Gallery::load(&p).unwrap();
    assert_eq!(back.brands().iter().cloned().collect::<std::collections::BTreeSet<_>>(), stored);
    let files: Vec<_> = walk(dir.path());
    assert_eq!(files, vec![p], "only the gallery file is written");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}
