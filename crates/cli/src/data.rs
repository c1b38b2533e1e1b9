//! `proxima data …`: import, synthesise, check and benchmark image data sets.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use proxima_data::{BrandPart, ImportOptions, SceneOptions, SynthOptions};

/// `proxima data` subcommands.
#[derive(Subcommand)]
pub enum DataCommand {
    /// Import a public data set into a class-per-folder tree of crops plus a manifest.
    Import(ImportArgs),
    /// Render built-in synthetic brand logos (deterministic by seed; no download needed).
    Synth(SynthArgs),
    /// Render whole scenes (sign-in-page screenshots, cluttered photos) carrying simple-icons logos, with boxes.
    Scenes(ScenesArgs),
    /// Render simple-icons logos as class-per-folder crops (enrolment sets, embedding training).
    Icons(IconsArgs),
    /// Cut training crops of the logo boxes of scene manifests, jittered like a localiser's boxes, into class folders.
    Crops(CropsArgs),
    /// Paste the logos of many brands (simple-icons, gilbarbara-logos) into windows of real photos: training crops in the photo domain.
    Composites(CompositesArgs),
    /// Count images and classes, list undecodable files with the reason, show class sizes.
    Check(CheckArgs),
    /// Measure loader throughput (decode + augment + batch, images/s) on a class-per-folder tree.
    Bench(BenchArgs),
    /// Build the brand catalogue (brand → legitimate domains, aliases) from gilbarbara-logos and simple-icons metadata.
    Catalogue(CatalogueArgs),
    /// Render sign-in pages in headless Chromium (real fonts, colour logos, wordmarks) with logo boxes from the DOM.
    Pages(PagesArgs),
}

/// Arguments of `proxima data pages`.
#[derive(Args)]
#[command(after_help = "Writes OUT/train/scenes.jsonl and OUT/heldout/scenes.jsonl (screenshots under pages/), OUT/enrol/<brand>/ \
(the held-out brands' logos rendered alone, to build a gallery) and OUT/report.json. Held-out pages use brands and templates \
(modal, parcel, cloud) that training pages never use. Needs Chromium (scripts/setup-chromium.sh).")]
pub struct PagesArgs {
    /// The shared data folder (gilbarbara-logos/, simple-icons/, flickrlogos27/ for hero photos).
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// Output folder (replaced only when the run succeeds).
    #[arg(long)]
    out: PathBuf,
    /// Training pages.
    #[arg(long, default_value_t = 1000)]
    train: usize,
    /// Held-out pages.
    #[arg(long, default_value_t = 200)]
    heldout: usize,
    /// Share of held-out pages without a logo.
    #[arg(long, default_value_t = 0.5)]
    heldout_no_logo: f64,
    /// Share of training pages without a logo.
    #[arg(long, default_value_t = 0.25)]
    train_no_logo: f64,
    /// Share of pages at mobile width (390 × 844).
    #[arg(long, default_value_t = 0.25)]
    mobile: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Chromium binary (default: $PROXIMA_CHROMIUM, then chromium on PATH).
    #[arg(long)]
    chromium: Option<PathBuf>,
}

/// Arguments of `proxima data catalogue`.
#[derive(Args)]
pub struct CatalogueArgs {
    /// The shared data folder holding `gilbarbara-logos/logos.json` and `simple-icons/data/simple-icons.json`.
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// Catalogue file to write (`.json`, or `.toml`), atomically.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ImportFormat {
    /// FlickrLogos-27: annotation files + images folder (or the official .tar.gz archives).
    Flickrlogos27,
}

/// Arguments of `proxima data import`.
#[derive(Args)]
pub struct ImportArgs {
    /// Which data set layout to read.
    format: ImportFormat,
    /// The data set's folder (or archive).
    #[arg(long)]
    source: PathBuf,
    /// Output folder: `<out>/<brand>/<crop>.png`, `manifest.jsonl`, `import_report.json`.
    #[arg(long)]
    out: PathBuf,
    /// Grow every box by this fraction of its size on each side before cropping.
    #[arg(long, default_value_t = 0.0)]
    padding: f32,
}

/// Which simple-icons brands to use.
#[derive(Clone, Copy, ValueEnum)]
pub enum PartArg {
    /// The training brands (85 %, fixed by a hash of the slug).
    Train,
    /// The held-out brands (15 %), never trained on.
    Heldout,
    /// Every brand.
    All,
}

impl From<PartArg> for BrandPart {
    fn from(p: PartArg) -> Self {
        match p {
            PartArg::Train => BrandPart::Train,
            PartArg::Heldout => BrandPart::Heldout,
            PartArg::All => BrandPart::All,
        }
    }
}

/// Arguments of `proxima data scenes`.
#[derive(Args)]
pub struct ScenesArgs {
    /// The simple-icons folder (`data/simple-icons.json` + `icons/*.svg`).
    #[arg(long, default_value = "../shared/data/simple-icons")]
    icons: PathBuf,
    /// Screenshots to render.
    #[arg(long, default_value_t = 200)]
    screenshots: usize,
    /// Photos to render.
    #[arg(long, default_value_t = 100)]
    photos: usize,
    /// Share of scenes with no logo.
    #[arg(long, default_value_t = 0.15)]
    no_logo_fraction: f32,
    /// Which brands the logos come from.
    #[arg(long, value_enum, default_value = "train")]
    part: PartArg,
    /// Seed (same seed, same scenes).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder: `images/` and `scenes.jsonl`.
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `proxima data icons`.
#[derive(Args)]
pub struct IconsArgs {
    /// The simple-icons folder.
    #[arg(long, default_value = "../shared/data/simple-icons")]
    icons: PathBuf,
    /// Which brands.
    #[arg(long, value_enum, default_value = "heldout")]
    part: PartArg,
    /// Crops per brand (the first is the clean mark on white).
    #[arg(long, default_value_t = 6)]
    per_brand: usize,
    /// Crop side in pixels.
    #[arg(long, default_value_t = 128)]
    size: u32,
    /// At most this many brands (a seeded sample).
    #[arg(long)]
    max_brands: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (class-per-folder tree).
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `proxima data composites`.
#[derive(Args)]
pub struct CompositesArgs {
    /// The shared data folder (simple-icons/ and gilbarbara-logos/; either may be absent, not both).
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// Scene manifests of the background photos, with their logo boxes (windows keep away from
    /// them), e.g. `data/fl27/scenes_train.jsonl`; repeatable. Never the photos you evaluate on.
    /// Photos of `--exclude-like` brands are left out; scenes without boxes are not used.
    #[arg(long, required = true)]
    backgrounds: Vec<PathBuf>,
    /// Leave out every brand whose id or name contains one of these (letters and digits compared,
    /// case ignored): the brands an open-set evaluation must never have trained on. Repeatable.
    #[arg(long = "exclude-like", value_delimiter = ',')]
    exclude_like: Vec<String>,
    /// Crops per brand.
    #[arg(long, default_value_t = 8)]
    per_brand: usize,
    /// Side of the photo window the logo is pasted into, in pixels.
    #[arg(long, default_value_t = 160)]
    window: u32,
    /// Seed (same seed, same crops).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (class-per-folder tree; may already hold other crops of the same brands).
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `proxima data crops`.
#[derive(Args)]
pub struct CropsArgs {
    /// Scene manifests with boxes (training scenes only); repeatable. Scenes without boxes are left out.
    #[arg(long, required = true)]
    scenes: Vec<PathBuf>,
    /// Crops per box: the box itself, then jittered ones.
    #[arg(long, default_value_t = 4)]
    per_box: usize,
    /// A jittered box overlaps the true one by at least this IoU.
    #[arg(long, default_value_t = 0.5)]
    min_iou: f32,
    /// Context added on each side, as a share of the box size (`find` pads its regions by 0.1).
    #[arg(long, default_value_t = 0.1)]
    padding: f32,
    /// Crops are shrunk to at most this longer side.
    #[arg(long, default_value_t = 256)]
    max_side: u32,
    /// Seed of the jitter.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (class-per-folder tree; may already hold other crops of the same brands).
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `proxima data synth`.
#[derive(Args)]
pub struct SynthArgs {
    /// Number of brands (classes).
    #[arg(long, default_value_t = 40)]
    brands: usize,
    /// Images per brand.
    #[arg(long, default_value_t = 30)]
    per_brand: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Seed (same seed, same images).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Photographic difficulty in [0, 1]: scale, rotation, perspective, occlusion, clutter, noise.
    #[arg(long, default_value_t = 0.5)]
    difficulty: f32,
    /// Output folder (class-per-folder tree).
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `proxima data check`.
#[derive(Args)]
pub struct CheckArgs {
    /// Class-per-folder tree to check.
    dir: PathBuf,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
}

/// Arguments of `proxima data bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Class-per-folder tree of images.
    dir: PathBuf,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Number of batches.
    #[arg(long, default_value_t = 30)]
    batches: usize,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

/// Runs a `proxima data` subcommand.
pub fn run(cmd: DataCommand) -> Result<ExitCode> {
    match cmd {
        DataCommand::Catalogue(a) => {
            let (g, s) = (a.data.join("gilbarbara-logos/logos.json"), a.data.join("simple-icons/data/simple-icons.json"));
            let (catalogue, skipped) = proxima_domain::Catalogue::from_sources(&g, &s).with_context(|| format!("building the catalogue from {}", a.data.display()))?;
            catalogue.save(&a.out).with_context(|| format!("writing {}", a.out.display()))?;
            let domains: usize = catalogue.brands.iter().map(|b| b.domains.len()).sum();
            let from = |src: &str| catalogue.brands.iter().filter(|b| b.sources.iter().any(|s| s == src)).count();
            println!(
                "wrote {} brands with {domains} domains to {} ({} from gilbarbara-logos, {} from simple-icons, {} entries skipped)",
                catalogue.brands.len(),
                a.out.display(),
                from("gilbarbara-logos"),
                from("simple-icons"),
                skipped.len()
            );
            let mut reasons = std::collections::BTreeMap::<&str, usize>::new();
            for s in &skipped {
                *reasons.entry(if s.reason.starts_with("its website is a page on") { "website on a shared platform" } else { s.reason.as_str() }).or_default() += 1;
            }
            for (reason, n) in reasons.iter().filter(|(_, n)| **n > 1) {
                println!("  skipped {n}: {reason}");
            }
        }
        DataCommand::Import(a) => {
            let ImportFormat::Flickrlogos27 = a.format;
            let opts = ImportOptions { padding: a.padding, ..Default::default() };
            let report = proxima_data::import_flickrlogos27(&a.source, &a.out, &opts).with_context(|| format!("importing FlickrLogos-27 from {}", a.source.display()))?;
            println!(
                "imported {} crops of {} brands from {} photos into {}/crops ({} degenerate boxes skipped; query/ and no_brand/ beside it)",
                report.crops,
                report.crops_per_class.len(),
                report.source_images,
                a.out.display(),
                report.degenerate_skipped
            );
        }
        DataCommand::Pages(a) => {
            let opts = proxima_pages::PagesOptions {
                data: a.data.clone(),
                out: a.out.clone(),
                train: a.train,
                heldout: a.heldout,
                train_no_logo: a.train_no_logo,
                heldout_no_logo: a.heldout_no_logo,
                mobile: a.mobile,
                seed: a.seed,
                chromium: a.chromium.clone(),
            };
            let r = proxima_pages::render_pages(&opts).with_context(|| format!("rendering pages into {}", a.out.display()))?;
            println!(
                "rendered {} training pages ({} logo boxes) and {} held-out pages ({} boxes) in {:.0} s ({:.1} pages/s); {} held-out brands enrolled ({} images); {} brands skipped (SVG does not render); report {}/report.json",
                r.train_pages,
                r.train_boxes,
                r.heldout_pages,
                r.heldout_boxes,
                r.seconds,
                r.pages_per_second,
                r.enrol_brands,
                r.enrol_images,
                r.skipped_brands.len(),
                a.out.display()
            );
        }
        DataCommand::Synth(a) => {
            let opts = SynthOptions { brands: a.brands, per_brand: a.per_brand, size: a.size, seed: a.seed, difficulty: a.difficulty };
            let report = proxima_data::synth::synth_with(&opts, &a.out).with_context(|| format!("writing synthetic logos to {}", a.out.display()))?;
            println!("wrote {} images of {} brands to {}", report.images, report.classes.len(), report.out_dir.display());
        }
        DataCommand::Scenes(a) => {
            let opts = SceneOptions {
                screenshots: a.screenshots,
                photos: a.photos,
                no_logo_fraction: a.no_logo_fraction,
                part: a.part.into(),
                seed: a.seed,
                ..Default::default()
            };
            let r = proxima_data::synth_scenes(&a.icons, &opts, &a.out).with_context(|| format!("rendering scenes into {}", a.out.display()))?;
            println!("wrote {} scenes with {} logo boxes of {} brands; manifest {}", r.scenes, r.boxes, r.brands, r.manifest.display());
        }
        DataCommand::Icons(a) => {
            let n = proxima_data::render_icon_crops(&a.icons, a.part.into(), a.per_brand, a.size, a.seed, a.max_brands, &a.out)
                .with_context(|| format!("rendering icon crops into {}", a.out.display()))?;
            println!("wrote {n} logo crops to {}", a.out.display());
        }
        DataCommand::Composites(a) => composites(a)?,
        DataCommand::Crops(a) => {
            let mut scenes = Vec::new();
            for m in &a.scenes {
                scenes.extend(proxima_data::read_scenes(m).with_context(|| format!("reading the scene manifest {}", m.display()))?);
            }
            let opts = proxima_data::CropOptions { per_box: a.per_box, min_iou: a.min_iou, padding: a.padding, max_side: a.max_side, seed: a.seed };
            let r = proxima_data::cut_scene_crops(&scenes, &opts, &a.out).with_context(|| format!("cutting scene crops into {}", a.out.display()))?;
            println!(
                "wrote {} crops of {} boxes ({} brands) from {} scenes to {}{}",
                r.crops,
                r.boxes,
                r.brands,
                r.scenes,
                a.out.display(),
                if r.without_boxes > 0 { format!("; left out {} scenes without boxes", r.without_boxes) } else { String::new() }
            );
        }
        DataCommand::Check(a) => {
            if !a.dir.is_dir() {
                bail!("{} is not a folder", a.dir.display());
            }
            let report = proxima_data::check(&a.dir);
            if a.json {
                let out = serde_json::json!({"images": report.images, "classes": report.classes, "unreadable": report.unreadable, "empty_classes": report.empty_classes, "histogram": report.histogram});
                println!("{out}");
            } else {
                println!("{}: {} decodable images in {} classes", a.dir.display(), report.images, report.classes);
                for bin in &report.histogram {
                    println!("  classes with {:>5}–{:<5} images: {}", bin.lo, bin.hi, bin.count);
                }
                for issue in &report.unreadable {
                    println!("  unreadable: {}", serde_json::to_string(issue)?);
                }
                for c in &report.empty_classes {
                    println!("  empty class: {c}");
                }
            }
            if !report.unreadable.is_empty() || !report.empty_classes.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
        DataCommand::Bench(a) => {
            let r = proxima_data::loader::bench_loader_dir(&a.dir, a.batch_size, a.batches, a.workers)
                .with_context(|| format!("benchmarking the loader on {}", a.dir.display()))?;
            println!("{}", serde_json::to_string(&r)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `proxima data composites`: the training brands of both catalogues (the icon hash split's
/// held-out brands and `--exclude-like` left out), pasted into the background photos.
fn composites(a: CompositesArgs) -> Result<()> {
    let mut backgrounds = Vec::new();
    for m in &a.backgrounds {
        backgrounds.extend(proxima_data::read_scenes(m).with_context(|| format!("reading the scene manifest {}", m.display()))?);
    }
    // A photo of an excluded brand is no background either: its logo may show outside the boxes.
    let before = backgrounds.len();
    backgrounds.retain(|s| !s.brands.iter().any(|b| proxima_data::composites::names_any(b, &a.exclude_like)));
    let dropped_backgrounds = before - backgrounds.len();
    let brands = proxima_pages::load_brands(&a.data).with_context(|| format!("reading the logo catalogues under {}", a.data.display()))?;
    let mut excluded = Vec::new();
    let mut marks = Vec::new();
    for b in brands.iter().filter(|b| !b.heldout) {
        if proxima_data::composites::names_any(&b.id, &a.exclude_like) || proxima_data::composites::names_any(&b.name, &a.exclude_like) {
            excluded.push(b.id.clone());
            continue;
        }
        for l in &b.logos {
            let icon = proxima_data::Icon { slug: b.id.clone(), title: b.name.clone(), rgb: b.colour, svg: l.svg.clone() };
            marks.push(proxima_data::CompositeMark { brand: b.id.clone(), icon, mono: l.kind == proxima_pages::LogoKind::Mono });
        }
    }
    if marks.is_empty() {
        bail!("no brand left to composite in {}", a.data.display());
    }
    let opts = proxima_data::CompositeOptions { per_brand: a.per_brand, window: a.window, seed: a.seed };
    let r = proxima_data::composite_into_photos(&marks, &backgrounds, &opts, &a.out).with_context(|| format!("compositing logos into {}", a.out.display()))?;
    println!(
        "wrote {} crops of {} brands into {} background photos to {}; left out {} held-out brands, {} brands like {:?} and {dropped_backgrounds} photos of them{}",
        r.crops,
        r.brands,
        r.backgrounds,
        a.out.display(),
        brands.iter().filter(|b| b.heldout).count(),
        excluded.len(),
        a.exclude_like,
        if r.unrenderable.is_empty() { String::new() } else { format!("; {} logo files did not render and were skipped", r.unrenderable.len()) }
    );
    if !excluded.is_empty() {
        eprintln!("excluded brands: {}", excluded.join(", "));
    }
    Ok(())
}
