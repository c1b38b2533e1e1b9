//! The single integration-test binary of `proxima-data`: end-to-end behaviour on real files.

use std::path::{Path, PathBuf};

/// `PROXIMA_DATA_DIR`, else `<repo>/../shared/data`; `None` (with a printed reason) if absent.
fn shared_data(sub: &str) -> Option<PathBuf> {
    let base = std::env::var_os("PROXIMA_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let p = base.join(sub);
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIPPED: shared data folder {} is absent (set PROXIMA_DATA_DIR to run this test)", p.display());
        None
    }
}

fn png(img: image::DynamicImage) -> Vec<u8> {
    let mut b = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Png).unwrap();
    b
}

fn jpeg(img: &image::RgbImage) -> Vec<u8> {
    let mut b = Vec::new();
    image::DynamicImage::ImageRgb8(img.clone()).write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Jpeg).unwrap();
    b
}

fn gradient(w: u32, h: u32, seed: u8) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 5) as u8 ^ seed, (y * 3) as u8, seed.wrapping_mul(7)]))
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    c.extend_from_slice(&body);
    c.extend_from_slice(&crc32(&body).to_be_bytes());
    c
}

/// A PNG whose header declares `w × h` RGB pixels but carries almost no data.
fn bomb_png(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut f = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    f.extend(chunk(b"IHDR", &ihdr));
    f.extend(chunk(b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    f.extend(chunk(b"IEND", &[]));
    f
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

mod robust_inputs {
    use super::*;
    use proxima_data::{DataError, Dataset, DecodeOptions, ScanOptions, check, decode_file};
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn bad_inputs_are_listed_with_reasons_and_good_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let good = root.join("good");
        let mixed = root.join("mixed");
        let doomed = root.join("doomed");
        for d in [&good, &mixed, &doomed] {
            std::fs::create_dir_all(d).unwrap();
        }
        // Good: RGB PNG, RGBA PNG, 16-bit PNG, grey JPEG-in-PNG, CMYK JPEG.
        std::fs::write(good.join("rgb.png"), png(image::DynamicImage::ImageRgb8(gradient(20, 10, 1)))).unwrap();
        std::fs::write(good.join("rgba.png"), png(image::DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(5, 5, image::Rgba([9, 9, 9, 0]))))).unwrap();
        std::fs::write(good.join("deep.png"), png(image::DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(4, 4, image::Rgb([1000u16, 50000, 65535]))))).unwrap();
        std::fs::write(good.join("grey.png"), png(image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(6, 6, image::Luma([200]))))).unwrap();
        let mut cmyk = Vec::new();
        let (cw, ch) = (16u16, 16u16);
        let mut ink = Vec::new();
        for y in 0..ch {
            for _ in 0..cw {
                ink.extend_from_slice(if y < 8 { &[255u8, 0, 0, 0] } else { &[0u8, 0, 0, 0] });
            }
        }
        jpeg_encoder::Encoder::new(&mut cmyk, 95).encode(&ink, cw, ch, jpeg_encoder::ColorType::Cmyk).unwrap();
        std::fs::write(good.join("cmyk.jpg"), &cmyk).unwrap();
        std::fs::write(mixed.join("fine.jpg"), jpeg(&gradient(32, 32, 3))).unwrap();

        // Bad ones.
        let full = jpeg(&gradient(64, 64, 5));
        std::fs::write(mixed.join("truncated.jpg"), &full[..full.len() / 2]).unwrap();
        std::fs::write(mixed.join("zero.jpg"), b"").unwrap();
        std::fs::write(mixed.join("text.jpg"), b"<html>this is not a jpeg</html>\n").unwrap();
        std::fs::write(mixed.join("bomb.png"), bomb_png(100_000, 100_000)).unwrap();
        std::os::unix::fs::symlink(mixed.join("loop_b.jpg"), mixed.join("loop_a.jpg")).unwrap();
        std::os::unix::fs::symlink(mixed.join("loop_a.jpg"), mixed.join("loop_b.jpg")).unwrap();
        std::os::unix::fs::symlink(mixed.join("gone.jpg"), mixed.join("dangling.jpg")).unwrap();
        let non_utf8 = mixed.join(std::ffi::OsStr::from_bytes(b"caf\xe9.jpg"));
        std::fs::write(&non_utf8, jpeg(&gradient(8, 8, 1))).unwrap();
        std::fs::write(mixed.join("notes.txt"), b"hello").unwrap();
        let locked = mixed.join("locked.jpg");
        std::fs::write(&locked, jpeg(&gradient(8, 8, 2))).unwrap();
        std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        let root_can_read = std::fs::read(&locked).is_ok();
        if root_can_read {
            eprintln!(
                "NOTE: running as root (uid 0: {}), so chmod 000 does not block reading; locked.jpg is \
                 expected to decode. Unreadable-file handling is covered by dangling.jpg (open fails) instead.",
                is_root()
            );
        }
        std::fs::write(doomed.join("only.jpg"), b"GIF89a but truncated").unwrap();
        std::fs::write(root.join("stray.jpg"), b"x").unwrap();

        let report = Dataset::scan_folder(root, &ScanOptions::default()).unwrap();
        let reason = |name: &str| -> String {
            let hits: Vec<_> = report.issues.iter().filter(|i| i.path.ends_with(name)).collect();
            assert_eq!(hits.len(), 1, "expected one issue for {name}, issues: {:#?}", report.issues);
            hits[0].reason.to_lowercase()
        };
        assert!(
            reason("truncated.jpg").contains("truncat") || reason("truncated.jpg").contains("eof") || reason("truncated.jpg").contains("end"),
            "{}",
            reason("truncated.jpg")
        );
        assert!(reason("zero.jpg").contains("empty"));
        assert!(reason("text.jpg").contains("not a recognised image format"));
        assert!(reason("bomb.png").contains("100000x100000"), "{}", reason("bomb.png"));
        assert!(reason("loop_a.jpg").contains("symbolic links"), "{}", reason("loop_a.jpg"));
        assert!(reason("loop_b.jpg").contains("symbolic links"));
        assert!(reason("dangling.jpg").contains("no such file"));
        assert!(reason("caf\u{fffd}.jpg").contains("utf-8"));
        assert!(reason("notes.txt").contains("extension"));
        assert!(reason("only.jpg").len() > 3);
        assert!(reason("stray.jpg").contains("top level"));
        if !root_can_read {
            assert!(reason("locked.jpg").contains("permission"));
        }
        assert_eq!(report.empty_classes, vec!["doomed".to_string()]);
        let ds = &report.dataset;
        assert_eq!(ds.classes, vec!["good".to_string(), "mixed".to_string()]);
        let mut names: Vec<String> = ds.samples.iter().map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
        names.sort();
        let mut expect = vec!["cmyk.jpg", "deep.png", "fine.jpg", "grey.png", "rgb.png", "rgba.png"];
        if root_can_read {
            expect.push("locked.jpg");
        }
        expect.sort();
        assert_eq!(names, expect);
        // Nothing silently dropped: every directory entry is either a sample or an issue.
        let entries = std::fs::read_dir(&good).unwrap().count() + std::fs::read_dir(&mixed).unwrap().count() + std::fs::read_dir(&doomed).unwrap().count() + 1;
        assert_eq!(ds.len() + report.issues.len(), entries);

        // CMYK content is converted, not garbage: the two ink halves differ strongly.
        let c = decode_file(&good.join("cmyk.jpg"), &DecodeOptions::default()).unwrap();
        let (top, bottom) = (c.get_pixel(8, 2).0, c.get_pixel(8, 13).0);
        let dist: i32 = top.iter().zip(bottom).map(|(a, b)| (*a as i32 - b as i32).abs()).sum();
        assert!(dist > 150, "cyan vs no-ink halves decode to {top:?} / {bottom:?}");
        // A smaller pixel limit refuses the (legit) 20x10 PNG with a typed error.
        assert!(matches!(
            decode_file(&good.join("rgb.png"), &DecodeOptions { max_pixels: 199, ..Default::default() }),
            Err(DataError::TooLarge { width: 20, height: 10, .. })
        ));

        // `check` reports the same, and serialises to the documented shape.
        let r = check(root);
        assert_eq!(r.images, ds.len());
        assert_eq!(r.classes, 2);
        assert_eq!(r.unreadable.len(), report.issues.len());
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["images"], serde_json::json!(ds.len()));
        assert_eq!(v["classes"], serde_json::json!(2));
        assert!(v["unreadable"].as_array().unwrap().iter().all(|e| e["path"].is_string() && e["reason"].is_string()));
        assert_eq!(v["empty_classes"], serde_json::json!(["doomed"]));
    }

    #[test]
    fn manifest_round_trip_and_verify() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("img")).unwrap();
        std::fs::write(d.join("img/a.png"), png(image::DynamicImage::ImageRgb8(gradient(10, 10, 1)))).unwrap();
        std::fs::write(d.join("img/b.png"), b"broken").unwrap();
        std::fs::write(d.join("m.csv"), "path,label,x1,y1,x2,y2\nimg/a.png,nike,1,1,5,5\nimg/b.png,puma,,,,\n").unwrap();
        let ds = Dataset::from_manifest(&d.join("m.csv")).unwrap();
        assert_eq!(ds.classes, vec!["nike", "puma"]);
        assert_eq!(ds.samples[0].path, d.join("img/a.png"));
        assert!(ds.samples[0].bbox.is_some());
        ds.write_manifest(&d.join("m.jsonl")).unwrap();
        let back = Dataset::from_manifest(&d.join("m.jsonl")).unwrap();
        assert_eq!(back, ds);
        let v = ds.verify(&ScanOptions::default());
        assert_eq!(v.dataset.len(), 1);
        assert_eq!(v.issues.len(), 1);
        assert_eq!(v.empty_classes, vec!["puma"]);
        let r = check(&d.join("m.csv"));
        assert_eq!((r.images, r.classes, r.unreadable.len()), (1, 1, 1));
    }
}

mod flickrlogos {
    use super::*;
    use proxima_data::{Dataset, ImportOptions, ScanOptions, import_flickrlogos27};
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn imports_the_official_folder() {
        let Some(src) = shared_data("flickrlogos27") else { return };
        let ann = std::fs::read_to_string(src.join("flickr_logos_27_dataset_training_set_annotation.txt")).unwrap();
        let lines: Vec<Vec<&str>> = ann.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).filter(|f| !f.is_empty()).collect();
        let distinct: BTreeSet<(&str, &str, &str, &str, &str, &str)> = lines.iter().map(|f| (f[0], f[1], f[3], f[4], f[5], f[6])).collect();
        let degenerate = distinct.iter().filter(|d| d.2 == d.4 || d.3 == d.5).count();
        let mut per_class: BTreeMap<String, usize> = BTreeMap::new();
        for d in distinct.iter().filter(|d| !(d.2 == d.4 || d.3 == d.5)) {
            *per_class.entry(d.1.to_string()).or_default() += 1;
        }

        let out = tempfile::tempdir().unwrap();
        let r = import_flickrlogos27(&src, out.path(), &ImportOptions::default()).unwrap();
        assert_eq!(r.annotation_lines, 4536);
        assert_eq!(r.distinct_boxes, distinct.len());
        assert_eq!(r.distinct_boxes, 1261);
        assert_eq!(r.degenerate_skipped, degenerate);
        assert_eq!(r.crops, r.distinct_boxes - r.degenerate_skipped);
        assert_eq!(r.crops_per_class.len(), 27);
        assert_eq!(r.crops_per_class, per_class);
        assert_eq!(r.source_images, 809);
        assert_eq!(r.query_images, 135);
        assert_eq!(r.no_brand_images, 135);
        assert_eq!(r.issues.len(), r.degenerate_skipped, "only the degenerate boxes are issues: {:?}", r.issues);

        let tree = Dataset::scan_folder(&r.crops_dir, &ScanOptions::default()).unwrap();
        assert_eq!(tree.dataset.num_classes(), 27);
        assert_eq!(tree.dataset.len(), r.crops);
        assert!(tree.issues.is_empty(), "{:?}", tree.issues);
        let man = Dataset::from_manifest(&r.manifest).unwrap();
        assert_eq!(man.len(), r.crops);
        assert!(man.samples.iter().all(|s| s.group.is_some() && s.bbox.is_some() && s.path.is_file()));
        let photo = man.samples.iter().filter(|s| s.group.as_deref() == Some("3759339764.jpg")).map(|s| man.classes[s.label].clone()).collect::<BTreeSet<_>>();
        assert!(photo.contains("Cocacola") && photo.contains("Pepsi"), "{photo:?}");
        let none = Dataset::from_manifest(&r.no_brand_manifest).unwrap();
        assert_eq!((none.len(), none.classes.clone()), (135, vec!["none".to_string()]));
        assert!(out.path().join("import_report.json").is_file());

        // Whole photos with every (non-degenerate) box, for the localiser; query scenes for find.
        let scenes = proxima_data::read_scenes(&r.train_scenes).unwrap();
        assert_eq!(scenes.len(), 809);
        assert_eq!(scenes.iter().map(|s| s.boxes.as_ref().unwrap().len()).sum::<usize>(), r.crops);
        let both = scenes.iter().find(|s| s.image.ends_with("3759339764.jpg")).unwrap();
        assert_eq!(both.brands, ["Cocacola", "Pepsi"]);
        assert!(scenes.iter().all(|s| s.image.is_file()));
        let q = proxima_data::read_scenes(&r.query_scenes).unwrap();
        assert_eq!(q.len(), 270);
        assert_eq!(q.iter().filter(|s| s.brands.is_empty()).count(), 135);
        assert!(q.iter().filter(|s| !s.brands.is_empty()).all(|s| s.boxes.is_none()), "query photos have no boxes");
    }

    #[test]
    fn imports_a_tar_gz_with_nested_images_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let stage = tmp.path().join("stage");
        let imgs = stage.join("flickr_logos_27_dataset_images");
        std::fs::create_dir_all(&imgs).unwrap();
        std::fs::write(imgs.join("1.jpg"), jpeg(&gradient(60, 40, 1))).unwrap();
        std::fs::write(imgs.join("2.jpg"), jpeg(&gradient(50, 50, 2))).unwrap();
        std::fs::write(imgs.join("3.jpg"), jpeg(&gradient(30, 30, 3))).unwrap();
        // Inner archive of the images, as in the official distribution.
        let inner = stage.join("flickr_logos_27_dataset_images.tar.gz");
        {
            let f = std::fs::File::create(&inner).unwrap();
            let mut b = tar::Builder::new(flate2::write::GzEncoder::new(f, flate2::Compression::fast()));
            b.append_dir_all("flickr_logos_27_dataset_images", &imgs).unwrap();
            b.into_inner().unwrap().finish().unwrap();
        }
        std::fs::remove_dir_all(&imgs).unwrap();
        let ann = "1.jpg A 1 5 5 30 30\n1.jpg A 2 5 5 30 30\n2.jpg B 1 -10 -10 20 70\n2.jpg B 1 7 7 7 20\n1.jpg B 1 40 10 80 30\n";
        std::fs::write(stage.join("flickr_logos_27_dataset_training_set_annotation.txt"), ann).unwrap();
        std::fs::write(stage.join("flickr_logos_27_dataset_query_set_annotation.txt"), "3.jpg\tnone\n2.jpg\tB\n").unwrap();
        let outer = tmp.path().join("flickr_logos_27_dataset.tar.gz");
        {
            let f = std::fs::File::create(&outer).unwrap();
            let mut b = tar::Builder::new(flate2::write::GzEncoder::new(f, flate2::Compression::fast()));
            b.append_dir_all("flickr_logos_27_dataset", &stage).unwrap();
            b.into_inner().unwrap().finish().unwrap();
        }
        let out = tmp.path().join("out");
        let r = import_flickrlogos27(&outer, &out, &ImportOptions { padding: 0.1, ..Default::default() }).unwrap();
        assert_eq!(r.annotation_lines, 5);
        assert_eq!(r.distinct_boxes, 4);
        assert_eq!(r.degenerate_skipped, 1);
        assert_eq!(r.crops, 3);
        assert_eq!(r.crops_per_class.get("A"), Some(&1));
        assert_eq!((r.query_images, r.no_brand_images), (1, 1));
        let man = Dataset::from_manifest(&r.manifest).unwrap();
        // Clamped box: (-10,-10,20,70) padded by 10% then clamped to the 50x50 photo.
        let b = man.samples.iter().find(|s| s.group.as_deref() == Some("2.jpg")).unwrap().bbox.unwrap();
        assert_eq!((b.x1, b.y1, b.x2, b.y2), (0.0, 0.0, 23.0, 50.0));
        let crop = image::open(&man.samples.iter().find(|s| s.group.as_deref() == Some("2.jpg")).unwrap().path).unwrap();
        assert_eq!((crop.width(), crop.height()), (23, 50));
    }
}

mod synthetic {
    use proxima_data::{Dataset, ScanOptions, synth};

    fn files(root: &std::path::Path) -> Vec<(String, Vec<u8>)> {
        let ds = Dataset::scan_folder(root, &ScanOptions::default()).unwrap();
        assert!(ds.issues.is_empty());
        ds.dataset.samples.iter().map(|s| (s.path.strip_prefix(root).unwrap().to_string_lossy().into_owned(), std::fs::read(&s.path).unwrap())).collect()
    }

    #[test]
    fn same_seed_gives_byte_identical_pngs() {
        let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ra = synth(6, 5, 48, 42, 0.7, a.path()).unwrap();
        synth(6, 5, 48, 42, 0.7, b.path()).unwrap();
        synth(6, 5, 48, 43, 0.7, c.path()).unwrap();
        assert_eq!(ra.images, 30);
        assert_eq!(ra.classes.len(), 6);
        let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
        assert_eq!(fa.len(), 30);
        assert_eq!(fa, fb);
        assert_eq!(fa.iter().map(|f| &f.0).collect::<Vec<_>>(), fc.iter().map(|f| &f.0).collect::<Vec<_>>());
        assert!(fa.iter().zip(&fc).all(|(x, y)| x.1 != y.1), "another seed changes every image");
        let img = image::open(a.path().join(&fa[0].0)).unwrap();
        assert_eq!((img.width(), img.height()), (48, 48));
        // Images within a brand differ (augmentation is on).
        assert_ne!(fa[0].1, fa[1].1);
    }
}

mod splits_and_samplers {
    use proptest::prelude::*;
    use proxima_data::{Split, SplitConfig, make_split};
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn ratio_and_kfold_splits_are_disjoint_and_cover(n in 3usize..60, seed in 0u64..500, k in 2usize..5) {
            let classes: Vec<String> = (0..n).map(|i| format!("class{i}")).collect();
            let all: BTreeSet<&String> = classes.iter().collect();
            let cfgs = [SplitConfig::Ratio { train: 0.5, val: 0.25, test: 0.25 }, SplitConfig::KFold { k: k.min(n - 1).max(2), fold: 1, test_ratio: 0.2 }];
            for cfg in cfgs {
                let Ok(s) = make_split(&classes, &cfg, seed) else { continue };
                let (tr, va, te): (BTreeSet<_>, BTreeSet<_>, BTreeSet<_>) = (s.train.iter().collect(), s.val.iter().collect(), s.test.iter().collect());
                prop_assert!(tr.is_disjoint(&va) && tr.is_disjoint(&te) && va.is_disjoint(&te));
                let union: BTreeSet<&String> = tr.union(&va).chain(te.iter()).copied().collect();
                prop_assert_eq!(&union, &all);
                prop_assert!(!s.train.is_empty());
                prop_assert_eq!(&s, &make_split(&classes, &cfg, seed).unwrap());
            }
        }
    }

    #[test]
    fn split_file_round_trip() {
        let classes: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
        let s = make_split(&classes, &SplitConfig::Ratio { train: 0.7, val: 0.1, test: 0.2 }, 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("split.json");
        s.save(&p).unwrap();
        assert_eq!(Split::load(&p).unwrap(), s);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"type\": \"ratio\""), "{text}");
        std::fs::write(&p, text.replacen(&s.val[0], &s.train[0], 1)).unwrap();
        assert!(Split::load(&p).is_err(), "overlapping split must be refused on load");
    }
}

mod loading {
    use proxima_data::loader::bench_loader_dir;
    use proxima_data::{Dataset, Loader, LoaderConfig, MPerClassConfig, MPerClassSampler, Pipeline, PipelineConfig, SamplerState, ScanOptions, SmallClassPolicy, synth};
    use std::sync::Arc;

    #[test]
    fn batches_are_shaped_labelled_and_independent_of_workers_and_cache() {
        let dir = tempfile::tempdir().unwrap();
        synth(5, 6, 40, 1, 0.5, dir.path()).unwrap();
        let ds = Arc::new(Dataset::scan_folder(dir.path(), &ScanOptions::default()).unwrap().dataset);
        let sampler =
            MPerClassSampler::new(&ds.labels(), MPerClassConfig { m: 2, batch_size: 6, small_classes: SmallClassPolicy::Error, batches_per_epoch: None }, 9).unwrap();
        let run = |workers: usize, cache: bool| -> Vec<proxima_data::Batch> {
            let cfg = LoaderConfig { image_size: [24, 32], workers, cache, prefetch: 2, ..Default::default() };
            let l = Loader::new(ds.clone(), Pipeline::new(PipelineConfig::train(32), 5).unwrap(), cfg).unwrap();
            let plan: Vec<(u64, Vec<usize>)> = sampler.iter_from(SamplerState::default()).take(7).collect();
            let mut out: Vec<_> = l.iter(plan.clone()).map(|b| b.unwrap()).collect();
            if cache {
                // Second pass served from the cache must be identical.
                let again: Vec<_> = l.iter(plan).map(|b| b.unwrap()).collect();
                assert_eq!(again, out);
                out = again;
            }
            out
        };
        let a = run(1, false);
        assert_eq!(a.len(), 7);
        for b in &a {
            assert_eq!(b.shape, [6, 3, 24, 32]);
            assert_eq!(b.images.len(), 6 * 3 * 24 * 32);
            assert_eq!(b.labels, b.indices.iter().map(|&i| ds.samples[i].label as i64).collect::<Vec<_>>());
            assert!(b.images.iter().all(|v| v.is_finite() && v.abs() < 3.0));
        }
        assert_eq!(a, run(2, false));
        assert_eq!(a, run(2, true));
        assert!(a[0].epoch == 0 && a.iter().any(|b| b.epoch == 1), "5 batches per epoch then epoch 1");
    }

    #[test]
    fn bad_file_yields_an_error_naming_it_and_dropping_iterator_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        synth(2, 3, 16, 1, 0.2, dir.path()).unwrap();
        let ds = Dataset::scan_folder(dir.path(), &ScanOptions::default()).unwrap().dataset;
        let victim = ds.samples[1].path.clone();
        std::fs::write(&victim, b"corrupted later").unwrap();
        let l = Loader::new(Arc::new(ds), Pipeline::new(PipelineConfig::eval(16), 0).unwrap(), LoaderConfig { image_size: [16, 16], ..Default::default() }).unwrap();
        let results: Vec<_> = l.iter_epoch(vec![vec![0, 2], vec![0, 1], vec![3, 4]], 0).collect();
        assert!(results[0].is_ok() && results[2].is_ok());
        let err = results[1].as_ref().unwrap_err().to_string();
        assert!(err.contains(&victim.display().to_string()), "{err}");
        // An endless plan: dropping the iterator early must stop the producer.
        let endless = l.iter((0u64..).map(|e| (e, vec![0, 2])));
        assert_eq!(endless.take(3).count(), 3);
    }

    #[test]
    fn bench_loader_reports_throughput() {
        let dir = tempfile::tempdir().unwrap();
        synth(4, 4, 64, 2, 0.5, dir.path()).unwrap();
        let r = bench_loader_dir(dir.path(), 8, 3, 2).unwrap();
        assert_eq!(r.images, 24);
        assert!(r.images_per_sec > 0.0 && r.seconds > 0.0);
    }
}
