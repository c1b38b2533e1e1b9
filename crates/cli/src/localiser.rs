//! `proxima localiser train|eval|negatives|ensemble`: the class-agnostic logo localiser behind
//! `find` (training on scene manifests, box AP on held-out scenes, background crops for the
//! gallery, and ensembles of localisers whose maps are averaged).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use proxima_data::composites::brand_key;
use proxima_data::{DecodeOptions, Scene, decode_file, read_scenes};
use proxima_detect::{FindOptions, Finder, LocaliserConfig, TrainLocaliserOptions, load_localiser, train_localiser};
use proxima_eval::{ImageAnswer, identification_report};
use proxima_train::experiment;
use serde::Serialize;

use crate::common::{load_gallery_for, load_model};

/// `proxima localiser …`.
#[derive(Subcommand)]
pub enum LocaliserCommand {
    /// Train the class-agnostic logo localiser on scene manifests (boxes): frozen trunk with cached features, or fine-tuned (--fine-tune-from).
    Train(LocaliserTrainArgs),
    /// Box AP@0.5 on scenes it did not train on; with --model and --gallery also image-level identification.
    Eval(LocaliserEvalArgs),
    /// Crops of what the localiser finds that is not a logo (detections away from every box of
    /// training scenes), as a folder to enrol under the gallery's background brand.
    Negatives(LocaliserNegativesArgs),
    /// Combine trained localisers into one whose maps are the members' averaged (a folder with
    /// `localisers.json`; it is a `--localiser` like any other).
    Ensemble(LocaliserEnsembleArgs),
}

/// Arguments of `proxima localiser ensemble`.
#[derive(Args)]
pub struct LocaliserEnsembleArgs {
    /// Member localiser directories (or model directories holding `localiser/`), at least two,
    /// of one input size.
    #[arg(required = true, num_args = 2..)]
    members: Vec<PathBuf>,
    /// Folder to write `localisers.json` to (created; members are stored relative to it).
    #[arg(long)]
    out: PathBuf,
    /// `cpu`, `cuda` or `cuda:N` (to load the members once as a check).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Arguments of `proxima localiser negatives`.
#[derive(Args)]
pub struct LocaliserNegativesArgs {
    /// Localiser directory (or a model directory holding `localiser/`).
    #[arg(long)]
    localiser: PathBuf,
    /// Scene manifests with boxes (training scenes, never the ones evaluated on); repeatable.
    #[arg(long, required = true)]
    scenes: Vec<PathBuf>,
    /// Folder to write the crops to (PNG).
    #[arg(long)]
    out: PathBuf,
    /// Keep detections scoring at least this.
    #[arg(long, default_value_t = 0.1)]
    min_score: f32,
    /// A detection overlapping a logo box by more than this IoU is not a negative.
    #[arg(long, default_value_t = 0.1)]
    max_iou: f32,
    /// Most crops per scene (the highest-scoring ones).
    #[arg(long, default_value_t = 4)]
    per_scene: usize,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Arguments of `proxima localiser train`.
#[derive(Args)]
pub struct LocaliserTrainArgs {
    /// Scene manifests (JSONL from `proxima data scenes` or `data import`'s scenes_train.jsonl); repeatable.
    #[arg(long, required = true)]
    scenes: Vec<PathBuf>,
    /// Output localiser directory (e.g. `<model dir>/localiser`, where `find` looks by default).
    #[arg(long)]
    out: PathBuf,
    /// EfficientNet-Lite0 ImageNet weights for the trunk.
    #[arg(long, default_value = ".weights/efficientnet-lite0-57934424.pth")]
    pretrained: PathBuf,
    /// Square input side (multiple of 32).
    #[arg(long, default_value_t = 512)]
    input_size: u32,
    /// Augmented views cached per scene.
    #[arg(long, default_value_t = 2)]
    views: usize,
    #[arg(long, default_value_t = 12)]
    epochs: usize,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Share of scenes held out for validation AP.
    #[arg(long, default_value_t = 0.15)]
    val_fraction: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep the trunk features in this file and reuse them on a rerun with the same scenes and views.
    #[arg(long)]
    feature_cache: Option<PathBuf>,
    /// Fine-tune the trunk from this EfficientNet-Lite0 block on (0–16; 5 = the stride-16 and
    /// stride-32 stages), with a fresh augmented view of each scene every epoch (no feature cache).
    #[arg(long)]
    fine_tune_from: Option<usize>,
    /// Learning rate of the fine-tuned trunk blocks relative to --lr.
    #[arg(long, default_value_t = 0.1)]
    trunk_lr_factor: f64,
    /// Continue the unfinished training in --out from its last epoch checkpoint (same scenes and
    /// options); it ends where an uninterrupted run would.
    #[arg(long)]
    resume: bool,
    /// Run the trunk and head under bfloat16 autocast, the loss in float32 (meant for GPUs: on an
    /// AMX CPU it made the step slower than fp32, docs/benchmarks.md).
    #[arg(long)]
    bf16: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Arguments of `proxima localiser eval`.
#[derive(Args)]
pub struct LocaliserEvalArgs {
    /// Localiser directory (or a model directory holding `localiser/`).
    #[arg(long)]
    localiser: PathBuf,
    /// Scene manifest; scenes the localiser trained on are left out.
    #[arg(long, required = true)]
    scenes: Vec<PathBuf>,
    /// Embedding model for identification (needs --gallery).
    #[arg(long, requires = "gallery")]
    model: Option<PathBuf>,
    /// Gallery for identification.
    #[arg(long, requires = "model")]
    gallery: Option<PathBuf>,
    /// Also identify the whole image as a region.
    #[arg(long)]
    whole_image: bool,
    /// Regions identified per image at most (best localiser scores first).
    #[arg(long, default_value_t = FindOptions::default().max_regions)]
    max_regions: usize,
    /// Identify only regions whose localiser score reaches this.
    #[arg(long, default_value_t = FindOptions::default().min_score)]
    min_score: f32,
    /// Weight of the localiser score in a region's confidence, `similarity + w·ln(score)`, which
    /// ranks the regions and meets the threshold (0: similarity alone).
    #[arg(long, default_value_t = FindOptions::default().score_weight)]
    score_weight: f32,
    /// Also embed each region with this much context and average the views (test-time
    /// augmentation; repeatable).
    #[arg(long = "tta-padding")]
    tta_paddings: Vec<f32>,
    /// Write the report as JSON to this file (atomically).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write every image's find answer with its true brands, one JSON object per line
    /// (for choosing a decision rule offline).
    #[arg(long, requires = "gallery")]
    answers: Option<PathBuf>,
    /// Brands the embedding was trained on, for separate rows of trained and never-trained brands
    /// (open set): a run's `split.json` (its `train` list) or a text file of one brand per line.
    /// Default: the `split.json` beside `--model` when there is one (for an ensemble, the union
    /// of its members' when every member has one). Names are compared on lower-case letters and
    /// digits.
    #[arg(long, requires = "gallery")]
    trained_brands: Option<PathBuf>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn read_all_scenes(paths: &[PathBuf]) -> Result<Vec<Scene>> {
    let mut all = Vec::new();
    for p in paths {
        all.extend(read_scenes(p).with_context(|| format!("reading the scene manifest {}", p.display()))?);
    }
    Ok(all)
}

/// Runs `proxima localiser …`.
pub fn run(cmd: LocaliserCommand) -> Result<ExitCode> {
    match cmd {
        LocaliserCommand::Negatives(a) => negatives(a),
        LocaliserCommand::Train(a) => {
            let device = experiment::available_device(&a.device)?;
            let scenes = read_all_scenes(&a.scenes)?;
            if !a.pretrained.is_file() {
                bail!("{}: pretrained EfficientNet-Lite0 weights not found (scripts/fetch-weights.sh fetches them)", a.pretrained.display());
            }
            let opts = TrainLocaliserOptions {
                config: LocaliserConfig { input_size: a.input_size, ..Default::default() },
                pretrained: Some(a.pretrained.clone()),
                views_per_scene: a.views,
                epochs: a.epochs,
                batch_size: a.batch_size,
                lr: a.lr,
                val_fraction: a.val_fraction,
                seed: a.seed,
                feature_cache: a.feature_cache.clone(),
                fine_tune_from: a.fine_tune_from,
                trunk_lr_factor: a.trunk_lr_factor,
                resume: a.resume,
                bf16: a.bf16,
            };
            let t = Instant::now();
            let report =
                train_localiser(&scenes, &opts, device, &a.out, &mut |m| eprintln!("{m}")).with_context(|| format!("training the localiser into {}", a.out.display()))?;
            println!(
                "trained on {} scenes ({} views) in {:.0} s (features {:.0} s, head {:.0} s); validation AP@0.5 {}; wrote {}",
                report.train_scenes,
                report.views,
                t.elapsed().as_secs_f64(),
                report.feature_seconds,
                report.head_seconds,
                report.val_ap50.iter().map(|(k, v)| format!("{k} {:.3}", v.ap)).collect::<Vec<_>>().join(", "),
                a.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        LocaliserCommand::Eval(a) => eval(a),
        LocaliserCommand::Ensemble(a) => {
            let device = experiment::available_device(&a.device)?;
            let (loc, card) =
                proxima_detect::save_localiser_ensemble(&a.members, &a.out, device).with_context(|| format!("writing the localiser ensemble {}", a.out.display()))?;
            println!(
                "wrote {} ({} members, {} px input, fingerprint {}); use it as `--localiser {}`",
                a.out.join(proxima_detect::LOCALISER_ENSEMBLE_FILE).display(),
                loc.members(),
                card.config.input_size,
                card.fingerprint,
                a.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Serialize)]
struct EvalReport {
    scenes: usize,
    left_out_trained_on: usize,
    ap50: std::collections::BTreeMap<String, proxima_eval::ApResult>,
    identification: Option<proxima_eval::IdentificationReport>,
    /// The same on images of brands the embedding trained on, and of brands it never saw (each
    /// with every no-logo image), when the trained brands are known.
    identification_by_training: Option<std::collections::BTreeMap<&'static str, proxima_eval::IdentificationReport>>,
    /// Where the trained brands were read from.
    trained_brands_from: Vec<PathBuf>,
    find_seconds_median: Option<f64>,
    find_seconds_mean: Option<f64>,
}

fn negatives(a: LocaliserNegativesArgs) -> Result<ExitCode> {
    // The manifests first: a wrong one fails before the localiser is loaded.
    let scenes: Vec<Scene> = read_all_scenes(&a.scenes)?.into_iter().filter(|s| s.boxes.is_some()).collect();
    if scenes.is_empty() {
        bail!("no scene with boxes in the manifests: negatives need to know where the logos are");
    }
    let device = experiment::available_device(&a.device)?;
    let (loc, _) = load_localiser(&a.localiser, device).with_context(|| format!("loading the localiser {}", a.localiser.display()))?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let opts = FindOptions::default();
    let mut written = 0usize;
    for (i, s) in scenes.iter().enumerate() {
        let img = decode_file(&s.image, &DecodeOptions::default()).with_context(|| format!("decoding {}", s.image.display()))?;
        let (img, scale) = proxima_detect::find::downscale(&img, &opts)?;
        let (dets, _) = loc.detect(&img)?;
        let boxes: Vec<[f32; 4]> = s.boxes.iter().flatten().map(|b| b.bbox.map(|v| v * scale)).collect();
        let far = dets.iter().filter(|d| d.score >= a.min_score && boxes.iter().all(|b| proxima_eval::box_iou(&d.bbox, b) <= a.max_iou));
        for (k, d) in far.take(a.per_scene).enumerate() {
            let crop = proxima_detect::find::crop(&img, d.bbox, opts.padding);
            let path = a.out.join(format!("{i:05}_{k}.png"));
            crop.save(&path).with_context(|| format!("writing {}", path.display()))?;
            written += 1;
        }
    }
    println!(
        "wrote {written} non-logo crops from {} scenes to {} (enrol them with `proxima gallery add --brand {:?}`)",
        scenes.len(),
        a.out.display(),
        proxima_index::BACKGROUND_BRAND
    );
    Ok(ExitCode::SUCCESS)
}

/// The trained brands of `path`: the `train` list of a run's `split.json`, or one brand per line.
fn read_trained_brands(path: &Path) -> Result<std::collections::BTreeSet<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the trained brands {}", path.display()))?;
    let names: Vec<String> = if path.extension().is_some_and(|e| e == "json") {
        #[derive(serde::Deserialize)]
        struct Split {
            train: Vec<String>,
        }
        serde_json::from_str::<Split>(&text).with_context(|| format!("{}: not a split.json with a train list", path.display()))?.train
    } else {
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
    };
    if names.is_empty() {
        bail!("{}: no trained brand listed", path.display());
    }
    Ok(names.iter().map(|n| brand_key(n)).collect())
}

fn eval(a: LocaliserEvalArgs) -> Result<ExitCode> {
    let device = experiment::available_device(&a.device)?;
    let (loc, card) = load_localiser(&a.localiser, device).with_context(|| format!("loading the localiser {}", a.localiser.display()))?;
    let all = read_all_scenes(&a.scenes)?;
    let n_all = all.len();
    // Compared as canonical paths, so `data/x.png` and `./data/x.png` (or an absolute spelling of
    // it) are the same scene; paths that no longer exist are compared as written.
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let trained: std::collections::BTreeSet<PathBuf> = card.trained_on.iter().map(|p| canonical(p)).collect();
    let scenes: Vec<Scene> = all.into_iter().filter(|s| !trained.contains(&canonical(&s.image))).collect();
    if scenes.is_empty() {
        bail!("every scene of the manifest was used to train this localiser; nothing left to evaluate");
    }
    let with_boxes: Vec<&Scene> = scenes.iter().filter(|s| s.boxes.is_some()).collect();
    // Sets whose scenes carry no box at all (no-logo photos) have no AP to report (evaluate_ap leaves them out).
    let ap50 = if with_boxes.is_empty() { Default::default() } else { proxima_detect::train::evaluate_ap(&loc, &with_boxes, 0.5)? };
    let mut report = EvalReport {
        scenes: scenes.len(),
        left_out_trained_on: n_all - scenes.len(),
        ap50,
        identification: None,
        identification_by_training: None,
        trained_brands_from: Vec::new(),
        find_seconds_median: None,
        find_seconds_mean: None,
    };
    for (k, v) in &report.ap50 {
        println!("AP@0.5 [{k}]: {:.4} (recall {:.4}; {} boxes, {} detections)", v.ap, v.recall, v.num_gt, v.num_det);
    }
    if let (Some(model_path), Some(gallery_path)) = (&a.model, &a.gallery) {
        let model = load_model(model_path, &a.device)?;
        let gallery = load_gallery_for(gallery_path, &model)?;
        // The evaluation sweeps thresholds itself; the gallery's own one (or 0) only fills the answers.
        let opts = FindOptions {
            whole_image: a.whole_image,
            max_regions: a.max_regions,
            min_score: a.min_score,
            score_weight: a.score_weight,
            tta_paddings: a.tta_paddings.clone(),
            threshold: Some(gallery.decision_threshold(None).unwrap_or(0.0)),
            ..Default::default()
        };
        // The brands the embedding trained on, read before any image is searched: a run directory
        // holds split.json, and a model directory inside it has it one level up. An ensemble
        // trained on the union of its members' brands.
        let beside =
            |m: &proxima_models::Member| [Some(m.dir.join("split.json")), m.dir.parent().map(|p| p.join("split.json"))].into_iter().flatten().find(|p| p.is_file());
        let sources: Option<Vec<PathBuf>> = a.trained_brands.clone().map(|f| vec![f]).or_else(|| model.members().iter().map(beside).collect());
        let trained = match sources {
            Some(from) => {
                let mut union = std::collections::BTreeSet::new();
                for f in &from {
                    union.extend(read_trained_brands(f)?);
                }
                Some((from, union))
            }
            None => None,
        };
        let finder = Finder::new(&loc, &model, &gallery, opts)?;
        let mut answers = Vec::new();
        let mut lines = String::new();
        let mut times = Vec::new();
        for s in &scenes {
            let t = Instant::now();
            let img = decode_file(&s.image, &DecodeOptions::default()).with_context(|| format!("decoding {}", s.image.display()))?;
            let ans = finder.find(&s.image.to_string_lossy(), &img)?;
            times.push(t.elapsed().as_secs_f64());
            if a.answers.is_some() {
                lines.push_str(&serde_json::to_string(&serde_json::json!({ "truth": s.brands, "answer": ans }))?);
                lines.push('\n');
            }
            let best = ans.regions.first();
            answers.push(ImageAnswer {
                brand: best.map(|r| r.best_brand.clone()),
                similarity: best.map_or(f32::NEG_INFINITY, |r| r.confidence),
                truth: s.brands.clone(),
            });
        }
        let id = identification_report(&answers, &[0.01, 0.05])?;
        println!("image-level top-1: {:.4} of {} logo images ({} without a logo)", id.top1, id.num_logo_images, id.num_no_logo_images);
        for f in &id.at_false_alarm {
            let threshold = if f.threshold > f32::MIN { format!("threshold {:.4}", f.threshold) } else { "any threshold: no region of a no-logo image was left".into() };
            println!("identified at ≤{:.0}% false alarms: {:.4} ({threshold}, false alarms {:.4})", f.target * 100.0, f.identified, f.false_alarm_rate);
        }
        if let Some((from, trained)) = &trained {
            let mut rows = std::collections::BTreeMap::new();
            for (name, want) in [("trained_brands", true), ("never_trained_brands", false)] {
                let part: Vec<ImageAnswer> =
                    answers.iter().filter(|x| x.truth.is_empty() || x.truth.iter().all(|b| trained.contains(&brand_key(b)) == want)).cloned().collect();
                if !part.iter().any(|x| !x.truth.is_empty()) {
                    continue;
                }
                let r = identification_report(&part, &[0.01, 0.05])?;
                println!(
                    "  {}: top-1 {:.4} of {} logo images; identified at ≤1% {:.4}, at ≤5% {:.4}",
                    name.replace('_', " "),
                    r.top1,
                    r.num_logo_images,
                    r.at_false_alarm[0].identified,
                    r.at_false_alarm[1].identified
                );
                rows.insert(name, r);
            }
            report.identification_by_training = Some(rows);
            report.trained_brands_from = from.clone();
        }
        times.sort_by(f64::total_cmp);
        report.find_seconds_median = Some(times[times.len() / 2]);
        report.find_seconds_mean = Some(times.iter().sum::<f64>() / times.len() as f64);
        println!("find latency per image (decode included): median {:.3} s, mean {:.3} s", times[times.len() / 2], report.find_seconds_mean.unwrap_or(0.0));
        report.identification = Some(id);
        if let Some(path) = &a.answers {
            proxima_train::checkpoint::write_atomic(path, lines.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some(out) = &a.out {
        let text = serde_json::to_string_pretty(&report)?;
        proxima_models::tensor_file::write_atomic(out, text.as_bytes()).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
