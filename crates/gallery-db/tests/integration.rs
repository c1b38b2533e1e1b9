//! The database gallery against a real PostgreSQL + pgvector (started by
//! scripts/with-postgres.sh, which scripts/test.sh runs). Without PROXIMA_TEST_PG_URL the test
//! prints why and returns. One test function: the scenarios share one server, and one of them
//! stops it.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use proxima_gallery_db::{DbError, GalleryDb, follow};
use proxima_index::{Calibration, Domain, Gallery, IndexError};

/// Deterministic pseudo-random rows (SplitMix64), `n × d`.
fn rows(seed: u64, n: usize, d: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n * d)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn paths(brand: &str, n: usize) -> Vec<PathBuf> {
    (0..n).map(|i| PathBuf::from(format!("enrol/{brand}/{i}.png"))).collect()
}

fn sample_gallery(d: usize) -> Gallery {
    let mut g = Gallery::new(d, "model-a").unwrap();
    for (i, brand) in ["acme", "globex", "initech"].iter().enumerate() {
        g.add(brand, &rows(i as u64 + 1, 5, d), &paths(brand, 5)).unwrap();
    }
    // An existing brand gaining rows after others: row order is not brand order.
    g.add("acme", &rows(9, 2, d), &paths("acme-extra", 2)).unwrap();
    g.set_calibration(Some(Calibration { threshold: 0.42, target_fmr: 0.01, achieved_fmr: 0.009, fnmr: Some(0.1), num_genuine: 10, num_impostor: 200 }));
    g.set_domains("acme", &[Domain::parse("acme.com").unwrap(), Domain::parse("acme.co.uk").unwrap()]).unwrap();
    g
}

fn pg_ctl(action: &str) {
    let ctl = std::env::var("PROXIMA_TEST_PG_CTL").expect("PROXIMA_TEST_PG_CTL is set with PROXIMA_TEST_PG_URL");
    let status = Command::new(&ctl).arg(action).status().unwrap_or_else(|e| panic!("running {ctl} {action}: {e}"));
    assert!(status.success(), "{ctl} {action} failed");
}

/// Every row, label and path of two galleries are equal, bit for bit.
fn assert_same(a: &Gallery, b: &Gallery) {
    assert_eq!(a.brands(), b.brands());
    assert_eq!(a.labels(), b.labels());
    assert_eq!(a.paths(), b.paths());
    assert_eq!(a.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>(), b.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    assert_eq!(a.model_fingerprint(), b.model_fingerprint());
    assert_eq!(a.calibration(), b.calibration());
    assert_eq!(a.metric(), b.metric());
    assert_eq!(a.all_domains(), b.all_domains());
}

#[test]
fn database_gallery_matches_the_file_backend_survives_outages_and_is_followed() {
    let Ok(url) = std::env::var("PROXIMA_TEST_PG_URL") else {
        eprintln!(
            "skipped: PROXIMA_TEST_PG_URL is not set (scripts/with-postgres.sh starts a PostgreSQL + pgvector server and sets it; scripts/test.sh runs the tests through it)"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let d = 16;
        let g = sample_gallery(d);
        let mut db = GalleryDb::connect(&url).await.unwrap();

        // Round trip: exactly the file backend's gallery, and the same answers.
        let v1 = db.create(&g, true).await.unwrap();
        let (loaded, v) = db.load().await.unwrap();
        assert_eq!(v, v1);
        let dir = tempfile_dir();
        let file = dir.join("g.pxg");
        g.save(&file).unwrap();
        let from_file = Gallery::load(&file).unwrap();
        assert_same(&loaded, &from_file);
        let queries = rows(77, 20, d);
        for q in queries.chunks(d) {
            assert_eq!(loaded.identify(q, 3).unwrap(), from_file.identify(q, 3).unwrap());
            assert_eq!(loaded.search(q, 5).unwrap(), from_file.search(q, 5).unwrap());
        }
        assert_eq!(loaded.domains("acme").len(), 2, "domains are stored with the gallery");

        // Domains change in one transaction each; an unknown brand is refused and changes nothing.
        let dom = |s: &str| Domain::parse(s).unwrap();
        let set = db.set_domains(&loaded, v1, "globex", &[dom("globex.com")]).await.unwrap();
        assert_eq!((set.rows, set.version), (1, v1 + 1));
        assert!(matches!(db.set_domains(&set.gallery, set.version, "nobody", &[dom("x.com")]).await, Err(DbError::Index(IndexError::UnknownBrand(_)))));
        let cleared = db.set_domains(&set.gallery, set.version, "globex", &[]).await.unwrap();
        assert_eq!((cleared.version, db.load().await.unwrap().0.all_domains()), (v1 + 2, loaded.all_domains()));
        let log = db.audit_log(0, i64::MAX).await.unwrap();
        let got: Vec<_> = log.iter().rev().take(2).map(|(_, e)| (e.action.as_str(), e.brand.as_str(), e.rows, e.brand_rows, e.version)).collect();
        assert_eq!(got, vec![("domains", "globex", 0, 5, v1 + 2), ("domains", "globex", 1, 5, v1 + 1)], "domain changes are audited in their transaction");
        // Back to the gallery as created, at the next version.
        let v1 = cleared.version;
        let (loaded, _) = db.load().await.unwrap();

        // Creating again without replace is refused and changes nothing.
        assert!(matches!(db.create(&g, false).await, Err(DbError::Exists { rows: 17, .. })), "existing gallery must be kept");
        // Another model is refused.
        assert!(matches!(db.load_for_model("model-b").await, Err(DbError::Index(IndexError::FingerprintMismatch { .. }))));

        // The audit table may hold other tests' entries (one server); look at ours only.
        let log0 = db.audit_log(0, i64::MAX).await.unwrap();
        // The gallery created above is in the audit table: one `build` entry per brand.
        let all_builds: Vec<_> = log0.iter().filter(|(_, e)| e.action == "build").map(|(_, e)| (e.brand.as_str(), e.rows, e.brand_rows, e.version)).collect();
        let builds = &all_builds[all_builds.len().saturating_sub(3)..];
        assert_eq!(builds.iter().map(|b| (b.0, b.1, b.2)).collect::<Vec<_>>(), vec![("acme", 7, 7), ("globex", 5, 5), ("initech", 5, 5)]);
        assert!(builds.iter().all(|b| b.3 == builds[0].3 && b.3 <= v1), "one version, the created gallery's: {builds:?}");
        let audit_start = log0.last().map_or(0, |e| e.0);

        // A second replica follows the first one's changes.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let follower = follow(url.clone(), "model-a".into(), v1, Duration::from_millis(100), move |g, v| {
            let _ = tx.send((g, v));
        });
        let added = db.add(&loaded, v1, "umbrella", &rows(5, 3, d), &paths("umbrella", 3)).await.unwrap();
        assert_eq!((added.rows, added.version), (3, v1 + 1));
        let (seen, seen_v) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("the follower sees the change").unwrap();
        assert_eq!(seen_v, v1 + 1);
        assert_same(&seen, &added.gallery);
        let mut expected = from_file.clone();
        expected.add("umbrella", &rows(5, 3, d), &paths("umbrella", 3)).unwrap();
        assert_same(&seen, &expected);

        // Refused changes leave the version alone.
        assert!(matches!(db.remove(&added.gallery, added.version, "nobody").await, Err(DbError::Index(IndexError::UnknownBrand(_)))));
        assert!(matches!(db.add(&added.gallery, added.version, "bad", &rows(1, 1, d + 1), &paths("bad", 1)).await, Err(DbError::Index(_))));
        assert_eq!(db.version().await.unwrap(), Some(added.version));

        // A writer whose copy is stale gets the database's gallery, not its own guess.
        let removed = db.remove(&loaded, v1, "globex").await.unwrap();
        assert_eq!(removed.version, added.version + 1);
        assert!(removed.gallery.brand_id("umbrella").is_some() && removed.gallery.brand_id("globex").is_none());
        let gone = db.remove(&removed.gallery, removed.version, "acme").await.unwrap();
        assert!(db.load().await.unwrap().0.all_domains().is_empty(), "a removed brand's domains go with it");
        let removed = gone;

        // Each committed change is in the audit table, written in its transaction; refused ones are not.
        let log = db.audit_log(audit_start, 100).await.unwrap();
        let got: Vec<_> = log.iter().map(|(_, e)| (e.token.as_str(), e.action.as_str(), e.brand.as_str(), e.rows, e.brand_rows, e.version)).collect();
        assert_eq!(
            got,
            vec![
                ("local", "enrol", "umbrella", 3, 3, v1 + 1),
                ("local", "remove", "globex", 5, 0, added.version + 1),
                ("local", "remove", "acme", 7, 0, added.version + 2)
            ]
        );
        assert!(log[0].1.time.ends_with('Z') && log[0].1.time.len() == 27, "{}", log[0].1.time);
        let audit_start = log.last().unwrap().0;

        // The database goes away: a clear "unavailable", nothing written; back: writes resume.
        pg_ctl("stop");
        let err = db.add(&removed.gallery, removed.version, "during-outage", &rows(6, 2, d), &paths("x", 2)).await.unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        pg_ctl("start");
        let (after, v) = db.load().await.expect("reconnects after the outage");
        assert_eq!(v, removed.version);
        assert!(after.brand_id("during-outage").is_none());
        assert_same(&after, &removed.gallery);

        // Killed in the middle of a large enrolment: the brand is there whole or not at all.
        let big = 200_000;
        let (emb, names) = (rows(8, big, d), paths("big", big));
        let mut db2 = GalleryDb::connect(&url).await.unwrap();
        let base = after.clone();
        let writer = tokio::spawn(async move { db2.add(&base, v, "big", &emb, &names).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        pg_ctl("stop");
        let outcome = writer.await.unwrap();
        pg_ctl("start");
        let (now, _) = db.load().await.unwrap();
        let big_rows = now.list().into_iter().find(|b| b.brand == "big").map_or(0, |b| b.rows);
        eprintln!(
            "stopped in the middle of a {big}-row enrolment: {}",
            match &outcome {
                Ok(_) => "it had committed".to_string(),
                Err(e) => format!("refused ({e})"),
            }
        );
        let big_audited: Vec<_> = db.audit_log(audit_start, 100).await.unwrap().into_iter().filter(|(_, e)| e.brand == "big").collect();
        match outcome {
            Ok(a) => {
                assert_eq!((a.rows, big_rows), (big, big), "committed before the stop: every row");
                assert_eq!(big_audited.len(), 1, "and its audit entry");
            }
            Err(e) => {
                assert!(e.is_unavailable(), "{e}");
                assert_eq!(big_rows, 0, "no half-written brand");
                assert!(big_audited.is_empty(), "no audit entry for a change that did not commit");
            }
        }

        // The follower caught up through the outage.
        let deadline = Instant::now() + Duration::from_secs(10);
        let want = db.version().await.unwrap().unwrap();
        let mut last = 0;
        while last != want && Instant::now() < deadline {
            if let Ok(Some((_, v))) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
                last = v;
            }
        }
        assert_eq!(last, want, "the follower reaches the database's version after the outage");
        follower.abort();

        // The brand-name rule: refused names change nothing; another normal form is stored as NFC
        // and removed by either spelling; the token id is recorded.
        let (cur, cv) = db.load().await.unwrap();
        for bad in ["../../etc", ".hidden", "a\nb", "", &"x".repeat(10_000)] {
            let err = db.add_as("tok-admin", &cur, cv, bad, &rows(3, 1, d), &paths("bad", 1)).await.unwrap_err();
            assert!(matches!(err, DbError::Index(IndexError::InvalidBrand { .. })), "{bad:?}: {err}");
        }
        assert_eq!(db.version().await.unwrap(), Some(cv));
        let a = db.add_as("tok-admin", &cur, cv, "Cafe\u{301}", &rows(3, 1, d), &paths("cafe", 1)).await.unwrap();
        let (stored, _) = db.load().await.unwrap();
        assert!(stored.brand_id("Caf\u{e9}").is_some() && stored.brand_id("Cafe\u{301}").is_none());
        assert_same(&stored, &a.gallery);
        let r = db.remove_as("tok-admin", &a.gallery, a.version, "Cafe\u{301}").await.unwrap();
        assert_eq!(r.rows, 1);
        let last: Vec<_> = db.audit_log(0, i64::MAX).await.unwrap().into_iter().rev().take(2).map(|(_, e)| (e.token, e.action, e.brand)).collect();
        assert_eq!(last, vec![("tok-admin".into(), "remove".into(), "Caf\u{e9}".into()), ("tok-admin".into(), "enrol".into(), "Caf\u{e9}".into())]);

        // Stored metadata that does not parse is a clear error naming the field, never a
        // gallery with a guessed metric.
        let (sql, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        sql.batch_execute("UPDATE proxima_gallery SET metric = '\"manhattan\"'").await.unwrap();
        let err = db.load().await.unwrap_err();
        assert!(matches!(err, DbError::Corrupt { what: "metric", .. }), "{err}");
        assert!(err.to_string().contains("metric") && err.to_string().contains("manhattan"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    });
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("proxima-gallery-db-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
