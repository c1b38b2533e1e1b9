//! `render_pages` in a real headless Chromium on a small catalogue made here: manifests, boxes,
//! the brand and template split, enrolment crops, a brand whose SVG does not render, and a
//! browser that cannot start. Skips (printing SKIPPED) only when no Chromium is installed;
//! scripts/setup-chromium.sh installs it for CI.

use std::collections::BTreeSet;
use std::path::Path;

use proxima_pages::{PagesOptions, find_chromium, render_pages};

const SQUARE: &str = r#"<svg role="img" viewBox="0 0 24 24" xmlns="http://www.w3.org/2000/svg"><title>x</title><path d="M2 2h20v20H2z"/></svg>"#;

/// simple-icons-shaped catalogue: `train` training brands (the first one's SVG is broken) and
/// `heldout` held-out brands, named so that the hash split puts them there.
fn catalogue(root: &Path, train: usize, heldout: usize) -> (Vec<String>, Vec<String>) {
    let si = root.join("simple-icons");
    std::fs::create_dir_all(si.join("data")).unwrap();
    std::fs::create_dir_all(si.join("icons")).unwrap();
    let (mut tr, mut ho) = (Vec::new(), Vec::new());
    let mut i = 0;
    while tr.len() < train || ho.len() < heldout {
        let slug = format!("brand{i}");
        i += 1;
        let held = proxima_data::scenes_synth::is_heldout(&slug);
        if held && ho.len() < heldout {
            ho.push(slug);
        } else if !held && tr.len() < train {
            tr.push(slug);
        }
    }
    let entries: Vec<String> = tr.iter().chain(&ho).map(|s| format!(r#"{{"title":"{s}","hex":"c62828","slug":"{s}"}}"#)).collect();
    std::fs::write(si.join("data/simple-icons.json"), format!("[{}]", entries.join(","))).unwrap();
    for (k, s) in tr.iter().chain(&ho).enumerate() {
        let svg = if k == 0 { "<svg this is not an image" } else { SQUARE };
        std::fs::write(si.join("icons").join(format!("{s}.svg")), svg).unwrap();
    }
    (tr, ho)
}

#[test]
fn pages_render_in_chromium_with_dom_boxes_and_a_clean_split() {
    if find_chromium().is_none() {
        eprintln!("SKIPPED pages_render_in_chromium_with_dom_boxes_and_a_clean_split: no chromium (scripts/setup-chromium.sh or PROXIMA_CHROMIUM)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (train, heldout) = catalogue(dir.path(), 2, 2);
    let out = dir.path().join("pages");
    let opts = PagesOptions { data: dir.path().to_path_buf(), out: out.clone(), train: 14, heldout: 8, mobile: 0.3, ..Default::default() };
    let report = render_pages(&opts).unwrap();
    assert_eq!((report.train_pages, report.heldout_pages), (14, 8));
    assert_eq!(report.skipped_brands.keys().collect::<Vec<_>>(), [&train[0]], "the brand whose SVG does not render is skipped and counted");
    let mut kinds = BTreeSet::new();
    for (part, allowed, templates) in [
        ("train", &train[1..], ["card", "split_hero", "top_nav", "cookie", "webmail", "bank", "social"].as_slice()),
        ("heldout", &heldout[..], ["modal", "parcel", "cloud"].as_slice()),
    ] {
        let scenes = proxima_data::read_scenes(&out.join(part).join("scenes.jsonl")).unwrap();
        for s in &scenes {
            let img = image::open(&s.image).unwrap();
            let (w, h) = (img.width() as f32, img.height() as f32);
            assert!([(1280.0, 800.0), (390.0, 844.0)].contains(&(w, h)), "{}: {w}x{h}", s.image.display());
            let parts: Vec<&str> = s.kind.split('/').collect();
            assert_eq!(parts[0], "browser");
            assert!(templates.contains(&parts[1]), "{part} page from template {}", parts[1]);
            kinds.insert(parts[4].to_string());
            for b in s.boxes.as_ref().unwrap() {
                assert!(allowed.contains(&b.brand), "{part} page shows {}", b.brand);
                let [x0, y0, x1, y1] = b.bbox;
                assert!(x0 >= 0.0 && y0 >= 0.0 && x1 <= w && y1 <= h && x1 - x0 >= 3.0 && y1 - y0 >= 3.0, "{:?}", b.bbox);
                // The box holds the logo: its pixels are not all the page's background.
                let crop = image::imageops::crop_imm(&img.to_rgb8(), x0 as u32, y0 as u32, (x1 - x0) as u32, (y1 - y0) as u32).to_image();
                let first = *crop.get_pixel(0, 0);
                assert!(crop.pixels().any(|p| (0..3).map(|c| (p[c] as i32 - first[c] as i32).abs()).sum::<i32>() > 60), "an empty box on {}", s.image.display());
            }
        }
        let no_logo = scenes.iter().filter(|s| s.brands.is_empty()).count();
        assert!(no_logo > 0 && no_logo < scenes.len(), "{part}: {no_logo} of {} pages without a logo", scenes.len());
    }
    assert!(kinds.contains("mono") || kinds.contains("bar"), "{kinds:?}");
    // Enrolment crops of the held-out brands the held-out pages show, nothing of training brands.
    let enrolled: Vec<String> = std::fs::read_dir(out.join("enrol")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!enrolled.is_empty() && enrolled.iter().all(|b| heldout.contains(b)), "{enrolled:?}");
    assert_eq!(report.enrol_brands, enrolled.len());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.contains(".tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!out.join(".work").exists());
}

#[test]
fn a_browser_that_cannot_start_is_a_clear_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    catalogue(dir.path(), 2, 1);
    let out = dir.path().join("pages");
    let opts = PagesOptions { data: dir.path().to_path_buf(), out: out.clone(), train: 2, heldout: 1, chromium: Some("/bin/false".into()), ..Default::default() };
    let e = render_pages(&opts).unwrap_err().to_string();
    assert!(e.contains("Chromium, while starting Chromium"), "{e}");
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n.to_string_lossy().starts_with('.')).collect();
    assert!(left.is_empty(), "{left:?}");
}
