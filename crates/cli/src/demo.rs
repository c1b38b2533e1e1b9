//! `proxima demo`: the whole path on built-in data, for a newcomer, in a few minutes.
//!
//! It renders synthetic brand logos, trains a small CNN on some brands, measures retrieval on
//! brands never seen in training before and after, enrols unseen brands in a gallery, calibrates
//! the "unknown" threshold, identifies held-out photos (of enrolled and of never-enrolled brands)
//! and writes `report.md` beside the model and the gallery.
//!
//! Then it finds logos in whole web-page screenshots (`proxima find`): it trains the
//! class-agnostic localiser briefly on synthetic sign-in pages carrying the *training* brands'
//! marks (or takes `--localiser DIR`), renders a few pages carrying enrolled brands, a
//! never-enrolled brand and no logo, runs the find pipeline on them against the gallery and
//! draws what it returned (the boxes drawn are find's answer; the true boxes are framed in blue
//! underneath) into `find/*.find.png`, shown in the report.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use image::RgbImage;
use proxima_data::{Dataset, ScanOptions, SceneOptions, ScreenMark, Split, SynthMark, render_screenshot, synth_scenes_with};
use proxima_detect::{CheckAnswer, FindOptions, Finder, Localiser, LocaliserConfig, TrainLocaliserOptions, check_answer, draw_check, load_localiser, train_localiser};
use proxima_domain::PageHost;
use proxima_eval::OpenSetCounts;
use proxima_index::{Calibration, Decision, Domain, Gallery, ImpostorScores, calibrate_scores};
use proxima_models::model_dir::{TrainedModel, load_model_dir};
use proxima_train::experiment::{self, RunSummary};

const EXPERIMENT: &str = include_str!("../../../examples/experiments/synth_small_cnn.toml");
/// Images per brand enrolled in the gallery, used to calibrate, and kept for identification.
const ENROL: usize = 8;
const CALIBRATE: usize = 8;
/// Of the unseen brands, this many are never enrolled (they must come out "unknown").
const NEVER_ENROLLED: usize = 3;
const TARGET_FMR: f64 = 0.1;

/// Synthetic sign-in pages the demo's localiser trains on (training brands; a few without a logo).
const FIND_TRAIN_PAGES: usize = 150;
/// Pages shown in the report: enrolled brands, then a never-enrolled brand, then one without a logo.
const FIND_SHOWN_ENROLLED: usize = 3;
/// Further pages whose answers are only counted: three of four carry an enrolled brand, the
/// fourth a never-enrolled brand or no logo.
const FIND_TALLY_PAGES: usize = 40;
/// Seeds of the rendered pages (training and shown pages never share one).
const FIND_TRAIN_SEED: u64 = 11;
const FIND_SHOWN_SEED: u64 = 12;
/// Seed of the built-in synthetic brands (`proxima_data::synth` above).
const SYNTH_SEED: u64 = 0;
/// Pages find's threshold is calibrated on (none of them shown or tallied), and the share of
/// them allowed to name a wrong brand or a brand on a page without an enrolled one.
const FIND_CALIBRATION_PAGES: usize = 64;
/// Pages of each enrolled brand's own site whose logo crops are enrolled beside its photos.
const ENROL_PAGES: usize = 4;
const PAGE_TARGET_FMR: f64 = 0.05;

/// Arguments of `proxima demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Output directory: data/, model/, gallery, localiser/, find/, report.md, plots, run files.
    #[arg(long, default_value = "proxima-demo")]
    out: PathBuf,
    /// Training epochs (the default finishes in a few minutes on 2 cores).
    #[arg(long, default_value_t = 25)]
    epochs: usize,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Find logos in screenshots with this localiser directory instead of training one.
    #[arg(long)]
    localiser: Option<PathBuf>,
    /// EfficientNet-Lite0 ImageNet weights for the localiser's trunk (scripts/fetch-weights.sh);
    /// when the file is absent (and no localiser is given or left by an earlier run) the find
    /// step is skipped: on a random trunk the localiser finds next to nothing.
    #[arg(long, default_value = ".weights/efficientnet-lite0-57934424.pth")]
    pretrained: PathBuf,
    /// Localiser training epochs (head only, on cached trunk features).
    #[arg(long, default_value_t = 30)]
    localiser_epochs: usize,
    /// Skip finding logos in screenshots.
    #[arg(long)]
    no_find: bool,
}

/// The find step: skipped (why), or what it showed.
enum FindStep {
    Skipped(String),
    Shown(FindShown),
}

/// What the find step showed.
struct FindShown {
    /// How the localiser came to be.
    localiser: String,
    threshold: f32,
    /// The page calibration behind `threshold`.
    calibration: Calibration,
    /// The check of a few pages: drawing, URL, expected verdict, answer.
    checks: Vec<(String, String, &'static str, CheckAnswer)>,
    /// Per page: drawing (relative to the demo folder), truth, answer.
    pages: Vec<(String, String, String)>,
    tally: FindTally,
}

struct OpenSet {
    counts: OpenSetCounts,
    examples: Vec<(String, String, String)>,
}

/// Runs `proxima demo`.
pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let out = &args.out;
    let data_dir = out.join("data");
    if !data_dir.is_dir() {
        eprintln!("rendering 40 synthetic brands × 32 photos into {}", data_dir.display());
        proxima_data::synth(40, 32, 64, 0, 0.5, &data_dir).context("rendering synthetic logos")?;
    }
    let overrides = [format!("data.root={}", toml_string(&data_dir)), format!("train.epochs={}", args.epochs)];
    let cfg = experiment::load(EXPERIMENT, &overrides).context("the built-in experiment")?;
    let resume = out.join("last.safetensors").exists();
    let mut progress = crate::train::Progress::new(args.quiet);
    let summary = experiment::run(&cfg, out, resume, &mut |e| progress.on_event(e)).context("training")?;
    crate::train::print_summary(&summary);

    let model = load_model_dir(out, experiment::parse_device(&cfg.device)?).context("loading the trained model")?;
    let scan = Dataset::scan_folder(&data_dir, &ScanOptions::default()).context("reading the synthetic data")?;
    let split = Split::load(&out.join("split.json")).context("reading the split")?;
    let (train, _, test) = split.apply(&scan.dataset).context("applying the split")?;
    let gallery_path = out.join("gallery");
    let open_set = enrol_and_identify(&model, &test, &gallery_path)?;
    let find = if args.no_find {
        FindStep::Skipped("skipped (--no-find)".into())
    } else if args.localiser.is_none() && !out.join("localiser").join("localiser.json").is_file() && !args.pretrained.is_file() {
        // A localiser on a random trunk finds next to nothing (validation AP ≈ 0.01 measured).
        let why = format!(
            "skipped: the localiser needs the pretrained EfficientNet-Lite0 trunk, and {} is absent (scripts/fetch-weights.sh fetches it; or pass --localiser DIR)",
            args.pretrained.display()
        );
        eprintln!("finding logos in screenshots {why}");
        FindStep::Skipped(why)
    } else {
        FindStep::Shown(find_in_screenshots(&args, &model, &gallery_path, &train.classes, &test.classes).context("finding logos in screenshots")?)
    };
    let report = write_report(out, &summary, &open_set, &find, started.elapsed().as_secs_f64())?;
    println!(
        "open set: {}/{} photos of enrolled brands identified, {}/{} photos of never-enrolled brands answered \"unknown\"",
        open_set.counts.known_correct, open_set.counts.known, open_set.counts.unknown_rejected, open_set.counts.unknown
    );
    for (photo, truth, answer) in open_set.examples.iter().take(6) {
        println!("  {photo:<28} truth {truth:<12} → {answer}");
    }
    if let FindStep::Shown(f) = &find {
        let t = &f.tally;
        println!(
            "find ({}; threshold {:.4}): on {FIND_TALLY_PAGES} more pages, the enrolled brand named on its logo for {}/{}, a brand named on {}/{} pages without an enrolled one",
            f.localiser,
            f.threshold,
            t.right_on_logo,
            t.pos(),
            t.false_alarms,
            t.false_alarms + t.quiet
        );
        for (drawing, truth, answer) in &f.pages {
            println!("  {drawing:<34} truth {truth:<26} → {answer}");
        }
        println!(
            "check: impersonation flagged on {}/{} pages of enrolled brands on a foreign domain, {}/{} of the same pages on their own domain, {}/{} pages without an enrolled brand",
            t.check_foreign_flagged,
            t.pos(),
            t.check_own_flagged,
            t.pos(),
            t.check_negative_flagged,
            t.false_alarms + t.quiet
        );
        for (drawing, url, expected, a) in &f.checks {
            println!("  {drawing:<30} {url:<52} → {} (expected {expected}){}", a.verdict.as_str(), a.brand.as_ref().map_or(String::new(), |b| format!(", {b}")));
        }
    }
    println!("report: {}  gallery: {}  model: {}", report.display(), gallery_path.display(), out.join("model").display());
    Ok(ExitCode::SUCCESS)
}

fn toml_string(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

fn enrol_and_identify(model: &TrainedModel, test: &Dataset, gallery_path: &Path) -> Result<OpenSet> {
    let dim = model.dim();
    let emb = model.embed_dataset(test)?;
    let by_class = test.indices_by_class();
    let row = |i: usize| &emb[i * dim..(i + 1) * dim];
    let mut gallery = Gallery::new(dim, model.fingerprint().to_string())?;
    let (mut cal_q, mut cal_truth) = (Vec::new(), Vec::new());
    let mut eval: Vec<(usize, String, bool)> = Vec::new();
    let classes = test.num_classes();
    for (c, idx) in by_class.iter().enumerate() {
        let brand = &test.classes[c];
        let enrolled = c < classes.saturating_sub(NEVER_ENROLLED);
        if enrolled {
            let take: Vec<usize> = idx.iter().copied().take(ENROL).collect();
            let vecs: Vec<f32> = take.iter().flat_map(|&i| row(i).to_vec()).collect();
            let paths: Vec<&Path> = take.iter().map(|&i| test.samples[i].path.as_path()).collect();
            gallery.add(brand, &vecs, &paths)?;
        }
        let rest: Vec<usize> = if enrolled { idx.iter().copied().skip(ENROL).collect() } else { idx.clone() };
        let (cal, held) = rest.split_at(CALIBRATE.min(rest.len()));
        for &i in cal {
            cal_q.extend_from_slice(row(i));
            cal_truth.push(brand.clone());
        }
        eval.extend(held.iter().map(|&i| (i, brand.clone(), enrolled)));
    }
    let cal = gallery.calibrate(&cal_q, &cal_truth, TARGET_FMR, ImpostorScores::BestWrongBrand)?.clone();
    eprintln!(
        "calibrated threshold {:.4} for a false-match rate ≤ {TARGET_FMR} (achieved {:.3} on {} impostor scores)",
        cal.threshold, cal.achieved_fmr, cal.num_impostor
    );
    gallery.save(gallery_path).with_context(|| format!("writing {}", gallery_path.display()))?;
    let mut r = OpenSet { counts: OpenSetCounts::default(), examples: Vec::new() };
    for (n, (i, truth, enrolled)) in eval.iter().enumerate() {
        let id = gallery.identify(row(*i), 3)?;
        let answer = match &id.decision {
            Decision::Known { brand, similarity } => format!("{brand} (similarity {similarity:.3})"),
            Decision::Unknown { best_similarity, .. } => format!("unknown (best similarity {best_similarity:.3})"),
        };
        let accepted = matches!(id.decision, Decision::Known { .. });
        r.counts.add(*enrolled, accepted, matches!(&id.decision, Decision::Known { brand, .. } if brand == truth));
        if n % 7 == 0 {
            let photo = test.samples[*i].path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            let truth = if *enrolled { truth.clone() } else { format!("{truth} (never enrolled)") };
            r.examples.push((photo, truth, answer));
        }
    }
    Ok(r)
}

/// The synthetic brand behind a class folder name (`brand_0012` → 12).
fn synth_mark(class: &str) -> Result<SynthMark> {
    let b = class.strip_prefix("brand_").and_then(|n| n.parse::<usize>().ok()).with_context(|| format!("{class:?} is not a built-in synthetic brand"))?;
    Ok(SynthMark::new(SYNTH_SEED, b))
}

/// Trains (or loads) a localiser, renders a few screenshots of enrolled brands and finds them.
fn find_in_screenshots(args: &DemoArgs, model: &TrainedModel, gallery_path: &Path, train_classes: &[String], test_classes: &[String]) -> Result<FindShown> {
    let out = &args.out;
    let device = model.device;
    let own = out.join("localiser");
    let dir = args.localiser.clone().unwrap_or_else(|| own.clone());
    let how = if args.localiser.is_some() {
        format!("localiser {}", dir.display())
    } else if own.join("localiser.json").is_file() {
        format!("localiser {} from an earlier run", own.display())
    } else {
        let marks = train_classes.iter().map(|c| synth_mark(c)).collect::<Result<Vec<_>>>()?;
        let pages = out.join("find").join("train");
        let opts = SceneOptions { screenshots: FIND_TRAIN_PAGES, photos: 0, no_logo_fraction: 0.1, seed: FIND_TRAIN_SEED, ..Default::default() };
        eprintln!("rendering {FIND_TRAIN_PAGES} sign-in pages with the {} training brands' marks into {}", marks.len(), pages.display());
        let rep = synth_scenes_with(&marks, &opts, &pages).context("rendering the localiser's training pages")?;
        let scenes = proxima_data::read_scenes(&rep.manifest).with_context(|| format!("reading {}", rep.manifest.display()))?;
        let opts = TrainLocaliserOptions {
            config: LocaliserConfig { input_size: 384, ..Default::default() },
            pretrained: Some(args.pretrained.clone()),
            views_per_scene: 1,
            epochs: args.localiser_epochs,
            batch_size: 16,
            lr: 2e-3,
            val_fraction: 0.15,
            seed: 0,
            feature_cache: None,
            ..Default::default()
        };
        let t = Instant::now();
        let report = train_localiser(&scenes, &opts, device, &own, &mut |m| {
            if !args.quiet {
                eprintln!("{m}")
            }
        })
        .with_context(|| format!("training the localiser into {}", own.display()))?;
        let ap = report.val_ap50.get("all").map_or("-".to_string(), |a| format!("{:.3}", a.ap));
        format!(
            "localiser trained here in {:.0} s on {} pages of training brands (frozen ImageNet-pretrained EfficientNet-Lite0 trunk), validation box AP@0.5 {ap}",
            t.elapsed().as_secs_f64(),
            report.train_scenes
        )
    };
    let (localiser, _) = load_localiser(&dir, device).with_context(|| format!("loading the localiser {}", dir.display()))?;

    // Pages to show: enrolled brands, one never-enrolled brand, one without a logo.
    let enrolled = &test_classes[..test_classes.len().saturating_sub(NEVER_ENROLLED)];
    let never = &test_classes[test_classes.len().saturating_sub(NEVER_ENROLLED)..];
    if enrolled.is_empty() {
        anyhow::bail!("no enrolled brand to find ({} test brands)", test_classes.len());
    }
    let mut shown: Vec<(Option<SynthMark>, String)> = Vec::new();
    for c in enrolled.iter().take(FIND_SHOWN_ENROLLED) {
        shown.push((Some(synth_mark(c)?), c.clone()));
    }
    if let Some(c) = never.first() {
        shown.push((Some(synth_mark(c)?), format!("{c} (never enrolled)")));
    }
    shown.push((None, "no logo".to_string()));

    // A brand is enrolled for pages as an analyst would: beside its photos, the logo as its own
    // site shows it (crops of the logo boxes of a few of its pages, cut as find cuts regions).
    // And each enrolled brand owns a domain, so `proxima check` can tell its own pages from others'.
    let mut gallery = Gallery::load(gallery_path).with_context(|| format!("opening the gallery {}", gallery_path.display()))?;
    let padding = FindOptions::default().padding;
    for (k, c) in enrolled.iter().enumerate() {
        let mark = synth_mark(c)?;
        let (mut crops, mut names) = (Vec::new(), Vec::new());
        for j in 0..ENROL_PAGES {
            let (img, boxes) = render_screenshot(FIND_SHOWN_SEED + 4000 + (k * ENROL_PAGES + j) as u64, Some(&mark as &dyn ScreenMark))?;
            for (n, b) in boxes.iter().enumerate() {
                crops.push(proxima_data::scene::crop(&img, *b, padding));
                names.push(format!("pages/{c}/page_{j}_{n}.png"));
            }
        }
        if !crops.is_empty() {
            gallery.add(c, &model.embed_images(&crops)?, &names)?;
        }
        gallery.set_domains(c, &[own_domain(c)?])?;
    }
    gallery.save(gallery_path).with_context(|| format!("writing {}", gallery_path.display()))?;
    // The gallery's threshold was calibrated on cropped photos; regions of pages score
    // otherwise, so find's threshold is calibrated on pages of their own.
    let calibration = calibrate_on_pages(&localiser, model, &gallery, enrolled, never)?;
    eprintln!(
        "find threshold {:.4} calibrated on {FIND_CALIBRATION_PAGES} pages for ≤ {PAGE_TARGET_FMR} of pages naming a wrong brand (achieved {:.3}; FNMR {})",
        calibration.threshold,
        calibration.achieved_fmr,
        calibration.fnmr.map_or("-".into(), |f| format!("{f:.3}"))
    );
    let finder = Finder::new(&localiser, model, &gallery, FindOptions { threshold: Some(calibration.threshold), ..Default::default() })?;
    let dir = out.join("find");
    let mut files = Vec::new();
    let mut pages = Vec::new();
    for (i, (mark, truth)) in shown.iter().enumerate() {
        let (img, boxes) = render_screenshot(FIND_SHOWN_SEED + i as u64, mark.as_ref().map(|m| m as &dyn ScreenMark))?;
        let name = format!("screenshot_{i}");
        let page = dir.join(format!("{name}.png"));
        let ans = finder.find(&page.to_string_lossy(), &img)?;
        let drawing = dir.join(format!("{name}.find.png"));
        files.push((page.clone(), proxima_detect::draw::encode_png(&img, &page)?));
        let drawn = proxima_detect::draw_answer_with_truth(&img, &ans, &boxes)?;
        files.push((drawing.clone(), proxima_detect::draw::encode_png(&drawn, &drawing)?));
        let answer = match (&ans.brand, ans.regions.first()) {
            (Some(b), Some(r)) => format!("{b} (similarity {:.3}, {})", r.similarity, if on_logo(&r.bbox, &boxes) { "on the logo" } else { "region not on the logo" }),
            (None, Some(r)) => format!("no known brand (best region {:.3})", r.similarity),
            _ => "no region".to_string(),
        };
        let rel = drawing.strip_prefix(out).unwrap_or(&drawing).display().to_string();
        pages.push((rel, truth.clone(), format!("{answer}; {} region(s)", ans.regions.len())));
    }
    // The check: one enrolled brand's page on its own domain and on two look-alikes, a
    // never-enrolled brand's page and a page without a logo.
    let brand = &enrolled[0];
    let own = own_domain(brand)?;
    let (page, _) = render_screenshot(FIND_SHOWN_SEED + 3000, Some(&synth_mark(brand)? as &dyn ScreenMark))?;
    let mut check_pages: Vec<(RgbImage, String, &'static str)> = vec![
        (page.clone(), format!("https://login.{own}/signin"), "consistent"),
        (page.clone(), format!("https://{own}.account-verify.net/signin"), "impersonation"),
        (page, format!("http://{}/signin", own.as_str().replace("brand", "brand-secure-")), "impersonation"),
    ];
    if let Some(c) = never.first() {
        let (img, _) = render_screenshot(FIND_SHOWN_SEED + 3001, Some(&synth_mark(c)? as &dyn ScreenMark))?;
        check_pages.push((img, format!("https://{}/", own_domain(c)?), "no_brand"));
    }
    let (img, _) = render_screenshot(FIND_SHOWN_SEED + 3002, None)?;
    check_pages.push((img, "https://example.org/login".into(), "no_brand"));
    let mut checks = Vec::new();
    let mut check_files = Vec::new();
    for (i, (img, url, expected)) in check_pages.iter().enumerate() {
        let shot = dir.join(format!("check_{i}.png"));
        let ans = check_answer(finder.find(&shot.to_string_lossy(), img)?, &PageHost::from_url(url)?, &gallery);
        let drawing = dir.join(format!("check_{i}.check.png"));
        check_files.push((shot, proxima_detect::draw::encode_png(img, &drawing)?));
        check_files.push((drawing.clone(), proxima_detect::draw::encode_png(&draw_check(img, &ans)?, &drawing)?));
        let rel = drawing.strip_prefix(out).unwrap_or(&drawing).display().to_string();
        checks.push((rel, url.clone(), *expected, ans));
    }
    proxima_detect::draw::write_all(&files)?;
    proxima_detect::draw::write_all(&check_files)?;

    // A tally over more pages (not drawn), so the pages above can be read as typical or not.
    let tally = find_tally(&finder, &gallery, enrolled, never)?;
    Ok(FindShown { localiser: how, threshold: finder.threshold(), calibration, checks, pages, tally })
}

/// The synthetic brand's own domain (`brand_0012` → `brand0012.com`).
fn own_domain(class: &str) -> Result<Domain> {
    Ok(Domain::parse(&format!("{}.com", class.replace('_', "")))?)
}

/// Find's threshold for pages: each calibration page's genuine score is its most confident
/// region naming its brand, its impostor score its most confident region naming another brand
/// (every region of a page without an enrolled brand).
fn calibrate_on_pages(localiser: &Localiser, model: &TrainedModel, gallery: &Gallery, enrolled: &[String], never: &[String]) -> Result<Calibration> {
    let all = Finder::new(localiser, model, gallery, FindOptions { threshold: Some(-10.0), ..Default::default() })?;
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for i in 0..FIND_CALIBRATION_PAGES {
        let (mark, truth) = page_brand(i, enrolled, never)?;
        let (img, _) = render_screenshot(FIND_SHOWN_SEED + 2000 + i as u64, mark.as_ref().map(|m| m as &dyn ScreenMark))?;
        let ans = all.find(&format!("calibration page {i}"), &img)?;
        let best = |right: bool| ans.regions.iter().filter(|r| (Some(r.best_brand.as_str()) == truth) == right).map(|r| r.confidence as f64).reduce(f64::max);
        if truth.is_some()
            && let Some(g) = best(true)
        {
            genuine.push(g);
        }
        if let Some(w) = best(false) {
            impostor.push(w);
        }
    }
    Ok(calibrate_scores(&genuine, &impostor, PAGE_TARGET_FMR)?)
}

/// The mark and true brand of tally or calibration page `i`: three of four pages carry an
/// enrolled brand; every fourth a never-enrolled brand or no logo (no brand must be named).
fn page_brand<'a>(i: usize, enrolled: &'a [String], never: &[String]) -> Result<(Option<SynthMark>, Option<&'a str>)> {
    Ok(if i % 4 == 3 {
        (if i % 8 == 3 { never.get(i / 8 % never.len().max(1)).map(|c| synth_mark(c)).transpose()? } else { None }, None)
    } else {
        let c = &enrolled[i % enrolled.len()];
        (Some(synth_mark(c)?), Some(c.as_str()))
    })
}

/// True when at least half of `region` lies within one of the true logo boxes: the answer was
/// read from the logo (a part of it counts), not from an icon or a button that happened to match.
fn on_logo(region: &[f32; 4], truth: &[[f32; 4]]) -> bool {
    let area = (region[2] - region[0]).max(0.0) * (region[3] - region[1]).max(0.0);
    area > 0.0
        && truth.iter().any(|b| {
            let (w, h) = (region[2].min(b[2]) - region[0].max(b[0]), region[3].min(b[3]) - region[1].max(b[1]));
            w > 0.0 && h > 0.0 && w * h >= 0.5 * area
        })
}

/// Find's answers on [`FIND_TALLY_PAGES`] pages that are not drawn, and the check's verdicts
/// with each page on its brand's own domain and on a foreign one.
fn find_tally(finder: &Finder, gallery: &Gallery, enrolled: &[String], never: &[String]) -> Result<FindTally> {
    let mut tally = FindTally::default();
    let foreign = PageHost::from_url("https://secure-login.example-verify.net/")?;
    for i in 0..FIND_TALLY_PAGES {
        let seed = FIND_SHOWN_SEED + 1000 + i as u64;
        let (mark, truth) = page_brand(i, enrolled, never)?;
        let (img, boxes) = render_screenshot(seed, mark.as_ref().map(|m| m as &dyn ScreenMark))?;
        let ans = finder.find(&format!("page {i}"), &img)?;
        let flagged = |host: &PageHost| check_answer(ans.clone(), host, gallery).verdict.is_impersonation();
        match truth {
            Some(t) => {
                let own = PageHost::from_url(&format!("https://www.{}/", own_domain(t)?))?;
                tally.check_own_flagged += usize::from(flagged(&own));
                tally.check_foreign_flagged += usize::from(flagged(&foreign));
            }
            None => tally.check_negative_flagged += usize::from(flagged(&foreign)),
        }
        let answered_on_logo = ans.regions.first().is_some_and(|r| on_logo(&r.bbox, &boxes));
        match (truth, ans.brand.as_deref()) {
            (Some(t), Some(b)) if t == b && answered_on_logo => tally.right_on_logo += 1,
            (Some(t), Some(b)) if t == b => tally.right_elsewhere += 1,
            (Some(_), Some(_)) => tally.wrong += 1,
            (Some(t), None) => {
                tally.missed += 1;
                let near_miss = ans.regions.iter().any(|r| r.best_brand == t && on_logo(&r.bbox, &boxes));
                tally.missed_below_threshold += usize::from(near_miss);
            }
            (None, Some(_)) => tally.false_alarms += 1,
            (None, None) => tally.quiet += 1,
        }
    }
    Ok(tally)
}

/// Find's answers on the tally pages.
#[derive(Default)]
struct FindTally {
    /// Pages of enrolled brands: the brand named on a true logo box, named elsewhere, another brand, none.
    right_on_logo: usize,
    right_elsewhere: usize,
    wrong: usize,
    missed: usize,
    /// Of the missed ones: a region on the logo had the right best brand, below the threshold.
    missed_below_threshold: usize,
    /// Pages without an enrolled brand: a brand named, or none.
    false_alarms: usize,
    quiet: usize,
    /// Check verdicts "impersonation": pages of enrolled brands on a foreign domain, the same
    /// pages on their brand's own domain, pages without an enrolled brand on a foreign domain.
    check_foreign_flagged: usize,
    check_own_flagged: usize,
    check_negative_flagged: usize,
}

impl FindTally {
    /// Pages of enrolled brands.
    fn pos(&self) -> usize {
        self.right_on_logo + self.right_elsewhere + self.wrong + self.missed
    }
}

fn write_report(out: &Path, s: &RunSummary, open_set: &OpenSet, find: &FindStep, seconds: f64) -> Result<PathBuf> {
    let o = &open_set.counts;
    let pct = |a: usize, b: usize| if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 };
    let mut md = String::new();
    writeln!(md, "# Proxima demo\n")?;
    writeln!(
        md,
        "Synthetic brand logos; a small CNN trained with the multi-similarity loss and miner on {} brands; evaluated on {} brands **never seen in training**. Total time {seconds:.0} s.\n",
        s.train_classes, s.test_classes
    )?;
    writeln!(md, "## Retrieval on unseen brands\n")?;
    if let (Some(b), Some(a)) = (s.test_before, s.test_after) {
        let rows = vec![
            vec!["MAP@R".to_string(), format!("{:.4}", b.map_at_r), format!("{:.4}", a.map_at_r)],
            vec!["R-Precision".to_string(), format!("{:.4}", b.r_precision), format!("{:.4}", a.r_precision)],
            vec!["Precision@1".to_string(), format!("{:.4}", b.precision_at_1), format!("{:.4}", a.precision_at_1)],
        ];
        md.push_str(&proxima_report::markdown_table(&["metric", "untrained", "trained"], &rows)?);
    }
    writeln!(md, "\n![training loss](loss.png)\n\n![validation metrics](validation.png)\n")?;
    writeln!(md, "## Open-set identification\n")?;
    writeln!(
        md,
        "{} unseen brands were enrolled from {ENROL} photos each, {NEVER_ENROLLED} were never enrolled; the decision threshold was calibrated for a false-match rate of {TARGET_FMR} on separate photos.\n",
        s.test_classes.saturating_sub(NEVER_ENROLLED)
    )?;
    let rows = vec![
        vec!["photos of enrolled brands identified correctly".to_string(), format!("{}/{} ({:.1}%)", o.known_correct, o.known, pct(o.known_correct, o.known))],
        vec!["photos of enrolled brands answered unknown".to_string(), format!("{}/{} ({:.1}%)", o.known_rejected, o.known, pct(o.known_rejected, o.known))],
        vec![
            "photos of never-enrolled brands answered unknown".to_string(),
            format!("{}/{} ({:.1}%)", o.unknown_rejected, o.unknown, pct(o.unknown_rejected, o.unknown)),
        ],
    ];
    md.push_str(&proxima_report::markdown_table(&["", "result"], &rows)?);
    writeln!(md, "\n### Examples\n")?;
    let rows: Vec<Vec<String>> = open_set.examples.iter().map(|(p, t, a)| vec![p.clone(), t.clone(), a.clone()]).collect();
    md.push_str(&proxima_report::markdown_table(&["photo", "truth", "answer"], &rows)?);
    if let FindStep::Skipped(why) = find {
        writeln!(md, "\n## Finding logos in web-page screenshots\n\n{why}.")?;
    }
    if let FindStep::Shown(f) = find {
        writeln!(md, "\n## Finding logos in web-page screenshots\n")?;
        writeln!(
            md,
            "`proxima find` on synthetic sign-in pages: a class-agnostic localiser says where logos are, each region is embedded and searched in the gallery above (threshold {:.4}). {}. The pages carry enrolled brands (never seen by the model or the localiser in training), a never-enrolled brand and no logo. Frames are what find returned: **green** a known brand (name and similarity above it), **grey** a region below the threshold; **blue** underneath marks the true logo boxes. \"On the logo\": at least half of the answer's region lies within a true logo box (a part of the logo counts).\n",
            f.threshold, f.localiser
        )?;
        let rows: Vec<Vec<String>> = f.pages.iter().map(|(d, t, a)| vec![format!("[{d}]({d})"), t.clone(), a.clone()]).collect();
        md.push_str(&proxima_report::markdown_table(&["page", "truth", "find answer"], &rows)?);
        let t = &f.tally;
        let neg = t.false_alarms + t.quiet;
        writeln!(
            md,
            "\nOn {FIND_TALLY_PAGES} more pages (not drawn): of {} pages of enrolled brands, find named the page's brand on its logo for {} ({:.0}%), named it from another region for {}, named another brand for {} and nothing for {} (for {} of these a region on the logo had the right brand as its best match, below the threshold); of {neg} pages with a never-enrolled brand or no logo, it named a brand for {}.\n",
            t.pos(),
            t.right_on_logo,
            pct(t.right_on_logo, t.pos()),
            t.right_elsewhere,
            t.wrong,
            t.missed,
            t.missed_below_threshold,
            t.false_alarms,
        )?;
        for (d, t, _) in &f.pages {
            writeln!(md, "![{t}]({d})\n")?;
        }
        writeln!(md, "Try it: `proxima find --model {0} --gallery {0}/gallery --threshold {1:.4} {0}/find/screenshot_0.png --draw out/`.", out.display(), f.threshold)?;
        let c = &f.calibration;
        writeln!(
            md,
            "\nFind's threshold {:.4} was calibrated on {FIND_CALIBRATION_PAGES} further pages (not shown or tallied) so that at most {:.0} % of them name a wrong brand or a brand where none is enrolled (achieved {:.1} % of {} such scores; {} of {} genuine scores fell below it). The gallery's own threshold was calibrated on cropped photos, where scores run otherwise.\n",
            c.threshold,
            100.0 * PAGE_TARGET_FMR,
            100.0 * c.achieved_fmr,
            c.num_impostor,
            c.fnmr.map_or("-".into(), |f| format!("{:.0}", f * c.num_genuine as f64)),
            c.num_genuine
        )?;
        writeln!(md, "\n## Is the page the brand's own? (`proxima check`)\n")?;
        writeln!(
            md,
            "Each enrolled brand owns one domain here (`brand_0012` → `brand0012.com`, stored in the gallery: `proxima gallery domains --gallery {}/gallery`). `proxima check` runs find on the screenshot and compares the page's registrable domain with the domains of the brand found: **red** frame, impersonation; **green**, the brand's own page; no frame, no known brand.\n",
            out.display()
        )?;
        let rows: Vec<Vec<String>> = f
            .checks
            .iter()
            .map(|(d, url, expected, a)| {
                let verdict =
                    if a.verdict.as_str() == *expected { format!("**{}**", a.verdict.as_str()) } else { format!("**{}** (expected {expected})", a.verdict.as_str()) };
                vec![
                    format!("[{d}]({d})"),
                    format!("`{url}`"),
                    verdict,
                    a.brand.clone().map_or("-".into(), |b| format!("{b} ({:.3})", a.similarity.unwrap_or(f32::NAN))),
                    a.reason.clone(),
                ]
            })
            .collect();
        md.push_str(&proxima_report::markdown_table(&["page", "URL", "verdict", "brand (similarity)", "why"], &rows)?);
        writeln!(
            md,
            "\nOn the {FIND_TALLY_PAGES} tally pages above, each page of an enrolled brand checked once on a foreign domain and once on its own: impersonation flagged on {} of {} foreign-domain pages ({:.0}%; a miss is a page where find named no brand, or named another brand that was then judged on its own domains) and on {} of {} own-domain pages (find naming another brand there); {} of {neg} pages without an enrolled brand were flagged.\n",
            t.check_foreign_flagged,
            t.pos(),
            pct(t.check_foreign_flagged, t.pos()),
            t.check_own_flagged,
            t.pos(),
            t.check_negative_flagged,
        )?;
        for (d, url, _, _) in &f.checks {
            writeln!(md, "![{url}]({d})\n")?;
        }
        writeln!(
            md,
            "Try it: `proxima check --model {0} --gallery {0}/gallery --threshold {1:.4} --url https://example.com/ {0}/find/check_0.png --draw out/`.",
            out.display(),
            f.threshold
        )?;
    }
    writeln!(md, "\nTry it: `proxima query --gallery {0}/gallery --model {0} <image>`.", out.display())?;
    let path = out.join("report.md");
    proxima_report::write_atomic(&path, md.as_bytes())?;
    Ok(path)
}
