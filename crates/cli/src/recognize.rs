//! Recognition commands: `proxima gallery build|add|remove|list`, `query`, `match` and `serve`.
//!
//! Why these live apart from training: recognising a brand needs only a trained model and a
//! gallery of enrolled embeddings, and enrolling a new brand is a gallery edit, not a training
//! run. Every command that embeds checks that the gallery was built with the same model (the
//! fingerprint in the gallery file), because vectors of two models are not comparable and a
//! mix gives confident nonsense. `query` and `match` answer through their exit status (0 known /
//! same, 1 unknown / different, 2 error) so that scripts can use them without parsing output.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use proxima_data::{Dataset, ScanOptions};
use proxima_gallery_db::{GalleryDb, redact};
use proxima_index::{BACKGROUND_BRAND, Decision, Domain, Gallery, ImpostorScores, cosine, is_background};
use proxima_models::model_dir::{TrainedModel, load_model_dir};
use proxima_server::api::{CompareAnswer, IdentifyAnswer};
use proxima_server::{BatchConfig, GallerySource, ServerConfig};
use proxima_train::experiment;
use serde::Serialize;

/// `proxima gallery …`.
#[derive(Subcommand)]
pub enum GalleryCommand {
    /// Build a gallery from class folders (or a manifest): one brand per class, optionally calibrated.
    Build(BuildArgs),
    /// Enrol images of a brand (new or existing) — no retraining; the gallery's model must be `--model`.
    Add(AddArgs),
    /// Remove a brand and all its images.
    Remove(RemoveArgs),
    /// List brands with their image counts, the model fingerprint and the threshold.
    List(ListArgs),
    /// Show or change the brands' legitimate domains (what `proxima check` compares a page's domain with), or import a catalogue.
    Domains(DomainsArgs),
}

/// Arguments of `proxima gallery domains`.
#[derive(Args)]
#[command(
    after_help = "Domains are stored as registrable domains: www.paypal.com is stored as paypal.com, bücher.de as xn--bcher-kva.de; public suffixes (com, co.uk, github.io) and IP addresses are refused.\n\nExamples:\n  proxima gallery domains --gallery G                                  # list\n  proxima gallery domains --gallery G --brand paypal --add paypal.me\n  proxima gallery domains --gallery G --import catalogue/brands.json      # every brand the catalogue names"
)]
pub struct DomainsArgs {
    /// Gallery file (rewritten atomically when something changes).
    #[arg(long, required_unless_present = "db", conflicts_with = "db")]
    gallery: Option<PathBuf>,
    /// Gallery database instead (one transaction per brand changed).
    #[arg(long)]
    db: Option<String>,
    /// The brand to show or change.
    #[arg(long, conflicts_with = "import")]
    brand: Option<String>,
    /// Replace the brand's domains with these (repeatable).
    #[arg(long, requires = "brand", conflicts_with_all = ["add", "remove", "clear"])]
    set: Vec<String>,
    /// Add these domains to the brand's (repeatable).
    #[arg(long, requires = "brand")]
    add: Vec<String>,
    /// Remove these domains from the brand's (repeatable).
    #[arg(long, requires = "brand")]
    remove: Vec<String>,
    /// Remove all the brand's domains.
    #[arg(long, requires = "brand", conflicts_with_all = ["add", "remove"])]
    clear: bool,
    /// Import a brand catalogue (JSON or TOML: brand → domains, aliases; `proxima data catalogue`
    /// writes one): each gallery brand it names, by name or alias, gains its domains.
    #[arg(long)]
    import: Option<PathBuf>,
    /// With --import: replace the matched brands' domains instead of adding to them.
    #[arg(long, requires = "import")]
    replace: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `proxima gallery build`.
#[derive(Args)]
pub struct BuildArgs {
    /// Model directory (or the run directory holding it).
    #[arg(long)]
    model: PathBuf,
    /// Class-per-folder tree `<dir>/<brand>/<image>`, or a manifest (.csv or .jsonl).
    #[arg(long)]
    data: PathBuf,
    /// Gallery file to write.
    #[arg(long, required_unless_present = "db", conflicts_with = "db")]
    out: Option<PathBuf>,
    /// Store the gallery in this PostgreSQL + pgvector database instead (a libpq URL, e.g.
    /// `postgres://user@host/db`); replicas of `proxima serve --gallery-db` share it.
    #[arg(long)]
    db: Option<String>,
    /// Class folders of *other* photos (not the enrolled ones) to calibrate the "unknown" threshold;
    /// brands not in the gallery count as unknowns.
    #[arg(long)]
    calibrate: Option<PathBuf>,
    /// False-match rate the threshold is calibrated for.
    #[arg(long, default_value_t = 0.01)]
    target_fmr: f64,
    /// Replace `--out` (or the database's gallery) if it exists.
    #[arg(long)]
    force: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Arguments of `proxima gallery add`.
#[derive(Args)]
pub struct AddArgs {
    /// Gallery file to change (rewritten atomically).
    #[arg(long, required_unless_present = "db", conflicts_with = "db")]
    gallery: Option<PathBuf>,
    /// Gallery database to change instead (one transaction).
    #[arg(long)]
    db: Option<String>,
    /// Model directory; must be the model the gallery was built with.
    #[arg(long)]
    model: PathBuf,
    /// Brand name.
    #[arg(long)]
    brand: String,
    /// A legitimate domain of the brand (repeatable), added to those it has: what `proxima check`
    /// compares a page's domain with.
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// Images, or folders of images (not recursive).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Arguments of `proxima gallery remove`.
#[derive(Args)]
pub struct RemoveArgs {
    /// Gallery file to change (rewritten atomically).
    #[arg(long, required_unless_present = "db", conflicts_with = "db")]
    gallery: Option<PathBuf>,
    /// Gallery database to change instead (one transaction).
    #[arg(long)]
    db: Option<String>,
    /// Brand name.
    #[arg(long)]
    brand: String,
}

/// Arguments of `proxima gallery list`.
#[derive(Args)]
pub struct ListArgs {
    /// Gallery file.
    #[arg(long, required_unless_present = "db", conflicts_with = "db")]
    gallery: Option<PathBuf>,
    /// Gallery database instead.
    #[arg(long)]
    db: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `proxima query`.
#[derive(Args)]
#[command(after_help = "Exit status: 0 every image is a known brand, 1 at least one is unknown, 2 error.")]
pub struct QueryArgs {
    /// Gallery file.
    #[arg(long)]
    gallery: PathBuf,
    /// Model directory; must be the model the gallery was built with.
    #[arg(long)]
    model: PathBuf,
    /// Images to identify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Brands to show per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Decision threshold (cosine similarity); default: the gallery's calibrated one.
    #[arg(long)]
    threshold: Option<f32>,
    /// Print JSON (an array, one object per image) instead of text.
    #[arg(long)]
    json: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Arguments of `proxima match`.
#[derive(Args)]
#[command(after_help = "Exit status: 0 same brand, 1 different, 2 error.")]
pub struct MatchArgs {
    /// First image.
    a: PathBuf,
    /// Second image.
    b: PathBuf,
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// Decision threshold (cosine similarity).
    #[arg(long, conflicts_with = "gallery", required_unless_present = "gallery")]
    threshold: Option<f32>,
    /// Take the threshold calibrated in this gallery (built with the same model).
    #[arg(long)]
    gallery: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Arguments of `proxima serve`.
#[derive(Args)]
#[command(
    after_help = "Routes: POST /v1/identify (raw image or multipart `image`, ?top_k=N), POST /v1/compare (multipart `a`, `b`), GET /v1/gallery, POST|DELETE /v1/gallery/{brand} (multipart files), GET /healthz, GET /metrics. Stops on Ctrl-C or SIGTERM."
)]
pub struct ServeArgs {
    /// Model directory; must be the model the gallery was built with.
    #[arg(long)]
    model: PathBuf,
    /// Localiser directory for `POST /v1/find`; default: `localiser/` in the model directory if there is one.
    #[arg(long)]
    localiser: Option<PathBuf>,
    /// Gallery file (enrolment and deletion rewrite it atomically).
    #[arg(long, required_unless_present = "gallery_db", conflicts_with = "gallery_db")]
    gallery: Option<PathBuf>,
    /// Gallery database (PostgreSQL + pgvector) shared by several replicas: enrolment and
    /// deletion write it in one transaction (503 while it is unreachable), and every replica
    /// follows the others' changes.
    #[arg(long)]
    gallery_db: Option<String>,
    /// With --gallery-db: how often, in milliseconds, the database is checked for changes.
    #[arg(long, default_value_t = 1000)]
    follow_ms: u64,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Largest request body in bytes (larger → 413).
    #[arg(long, default_value_t = 8 << 20)]
    max_body_bytes: usize,
    /// Largest image in pixels (width × height, read from the header; larger → 413).
    #[arg(long, default_value_t = 4096 * 4096)]
    max_pixels: u64,
    /// Per-request deadline in milliseconds (later → 503).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Requests waiting for the model before new ones get 429.
    #[arg(long, default_value_t = 256)]
    queue: usize,
    /// Most images per forward pass.
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// Longest wait in milliseconds for more requests to fill a batch.
    #[arg(long, default_value_t = 2)]
    batch_wait_ms: u64,
    /// Decision threshold; default: the gallery's calibrated one.
    #[arg(long)]
    threshold: Option<f32>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Tokens file (`proxima token new`): every request but /healthz and the console's files
    /// needs `Authorization: Bearer <token>`; `read` tokens identify, `admin` tokens also change
    /// the gallery and read the audit log.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Serve without tokens on an address other than loopback (anyone who reaches it can change
    /// the gallery). Without tokens, only loopback addresses are served unless this is given.
    #[arg(long, conflicts_with = "tokens")]
    no_auth: bool,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Requests per second per client (per token, else per address), with bursts of twice as
    /// many; more → 429 with Retry-After. 0: no limit.
    #[arg(long, default_value_t = 100.0)]
    rate_limit: f64,
    /// Audit log of a file gallery (JSON lines); default: `<gallery>.audit.jsonl` beside it.
    /// (A database gallery keeps its log in the database.)
    #[arg(long, conflicts_with = "gallery_db")]
    audit_log: Option<PathBuf>,
}

pub(crate) fn load_model(path: &Path, device: &str) -> Result<TrainedModel> {
    let device = experiment::available_device(device)?;
    load_model_dir(path, device).with_context(|| format!("loading the model {}", path.display()))
}

pub(crate) fn load_gallery_for(path: &Path, model: &TrainedModel) -> Result<Gallery> {
    Gallery::load_for_model(path, &model.card.fingerprint).with_context(|| format!("opening the gallery {}", path.display()))
}

fn save_gallery(g: &Gallery, path: &Path) -> Result<()> {
    g.save(path).with_context(|| format!("writing the gallery {}", path.display()))
}

/// A class-folder tree or a manifest.
fn read_dataset(path: &Path) -> Result<Dataset> {
    if path.is_dir() {
        let scan = Dataset::scan_folder(path, &ScanOptions::default()).with_context(|| format!("reading {}", path.display()))?;
        for issue in &scan.issues {
            eprintln!("skipped {}: {}", issue.path, issue.reason);
        }
        Ok(scan.dataset)
    } else {
        Dataset::from_manifest(path).with_context(|| format!("reading the manifest {}", path.display()))
    }
}

/// Image files of `inputs`: files as given, folders expanded to their image files (sorted).
pub(crate) fn expand_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("listing {}", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && proxima_data::decode::has_image_extension(p))
                .collect();
            if files.is_empty() {
                bail!("{} holds no image files", input.display());
            }
            files.sort();
            out.extend(files);
        } else if input.is_file() {
            out.push(input.clone());
        } else {
            bail!("{} is neither an image file nor a folder", input.display());
        }
    }
    Ok(out)
}

fn embed_files(model: &TrainedModel, paths: &[PathBuf]) -> Result<Vec<f32>> {
    let mut emb = Vec::new();
    for chunk in paths.chunks(64) {
        emb.extend(model.embed_files(chunk).context("embedding images")?);
    }
    Ok(emb)
}

/// Runs `proxima gallery …`.
pub fn gallery(cmd: GalleryCommand) -> Result<ExitCode> {
    match cmd {
        GalleryCommand::Build(a) => build(a),
        GalleryCommand::Add(a) => add(a),
        GalleryCommand::Remove(a) => {
            let (g, removed, name) = match (&a.gallery, &a.db) {
                (Some(path), _) => {
                    let mut g = Gallery::load(path).with_context(|| format!("opening the gallery {}", path.display()))?;
                    let stored = g.resolve_brand(&a.brand).map(|id| g.brands()[id as usize].clone());
                    let removed = g.remove(&a.brand).with_context(|| format!("removing from {}", path.display()))?;
                    audit(path, "remove", stored.as_deref().unwrap_or(&a.brand), removed, 0)?;
                    save_gallery(&g, path)?;
                    (g, removed, path.display().to_string())
                }
                (None, Some(url)) => {
                    let applied = block_on(async {
                        let mut db = GalleryDb::connect(url).await?;
                        let (g, v) = db.load().await?;
                        db.remove_as(CLI_ACTOR, &g, v, &a.brand).await
                    })?
                    .with_context(|| format!("removing {:?} from {}", a.brand, redact(url)))?;
                    (applied.gallery, applied.rows, redact(url))
                }
                (None, None) => bail!("give --gallery or --db"),
            };
            println!("removed brand {:?} ({removed} images); {} left in {name}", a.brand, brand_count(&g));
            Ok(ExitCode::SUCCESS)
        }
        GalleryCommand::List(a) => list(a),
        GalleryCommand::Domains(a) => domains(a),
    }
}

/// Parses domains given on the command line, saying when one is stored shorter than given.
fn parse_domains(list: &[String]) -> Result<Vec<Domain>> {
    list.iter()
        .map(|s| {
            let (d, reduced) = Domain::parse_reduced(s)?;
            if reduced {
                eprintln!("note: {s} is stored as its registrable domain {d}");
            }
            Ok(d)
        })
        .collect()
}

/// `existing` plus `add`, less `remove`.
fn edited(existing: &[Domain], add: &[Domain], remove: &[Domain]) -> Vec<Domain> {
    existing.iter().chain(add).filter(|d| !remove.contains(d)).cloned().collect()
}

/// Stores each `(brand, domains)` change: one atomic rewrite of a gallery file (`current`, as
/// just loaded from it) with one audit-log opening, or one transaction per brand in a database;
/// returns the gallery after the changes.
fn store_domains(current: Gallery, gallery: Option<&Path>, db: Option<&str>, changes: &[(String, Vec<Domain>)]) -> Result<Gallery> {
    match (gallery, db) {
        (Some(path), _) => {
            let mut g = current;
            // Domain changes leave every brand's rows as they are.
            let rows: HashMap<String, usize> = g.list().into_iter().map(|b| (b.brand, b.rows)).collect();
            let mut entries = Vec::with_capacity(changes.len());
            for (brand, list) in changes {
                let n = g.set_domains(brand, list).with_context(|| format!("setting the domains of {brand:?}"))?.len();
                entries.push((brand.as_str(), n, rows.get(brand).copied().unwrap_or(0)));
            }
            if !changes.is_empty() {
                audit_all(path, "domains", &entries)?;
                save_gallery(&g, path)?;
            }
            Ok(g)
        }
        (None, Some(url)) => block_on(async {
            let mut db = GalleryDb::connect(url).await?;
            let (mut g, mut v) = db.load().await?;
            for (brand, list) in changes {
                let applied = db.set_domains_as(CLI_ACTOR, &g, v, brand, list).await?;
                (g, v) = (applied.gallery, applied.version);
            }
            Ok::<_, proxima_gallery_db::DbError>(g)
        })?
        .with_context(|| format!("changing domains in {}", redact(url))),
        (None, None) => bail!("give --gallery or --db"),
    }
}

fn domains(a: DomainsArgs) -> Result<ExitCode> {
    // Everything given is parsed before the gallery is touched.
    let (set, add, remove) = (parse_domains(&a.set)?, parse_domains(&a.add)?, parse_domains(&a.remove)?);
    let catalogue = a.import.as_deref().map(|p| proxima_domain::Catalogue::load(p).with_context(|| format!("reading the catalogue {}", p.display()))).transpose()?;
    let current = match (&a.gallery, &a.db) {
        (Some(path), _) => Gallery::load(path).with_context(|| format!("opening the gallery {}", path.display()))?,
        (None, Some(url)) => block_on(async { GalleryDb::connect(url).await?.load().await })?.with_context(|| format!("reading the gallery in {}", redact(url)))?.0,
        (None, None) => bail!("give --gallery or --db"),
    };
    let mut changes: Vec<(String, Vec<Domain>)> = Vec::new();
    let mut shown: Vec<String> = Vec::new();
    if let Some(c) = &catalogue {
        let brands: Vec<&str> = current.brands().iter().map(String::as_str).filter(|b| !is_background(b)).collect();
        let plan = c.plan_import(&brands);
        for (brand, i) in &plan.matched {
            let from = &c.brands[*i].domains;
            let list = if a.replace { from.clone() } else { edited(current.domains(brand), from, &[]) };
            changes.push((brand.clone(), list));
        }
        if !a.json {
            println!(
                "catalogue {}: {} of {} gallery brands matched",
                a.import.as_deref().map_or(String::new(), |p| p.display().to_string()),
                plan.matched.len(),
                brands.len()
            );
            if !plan.unmatched.is_empty() {
                let some: Vec<&str> = plan.unmatched.iter().take(10).map(String::as_str).collect();
                println!("  not in the catalogue ({}): {}{}", plan.unmatched.len(), some.join(", "), if plan.unmatched.len() > 10 { ", …" } else { "" });
            }
        }
        shown = plan.matched.into_iter().map(|(b, _)| b).collect();
    } else if let Some(brand) = &a.brand {
        if current.brand_id(brand).is_none() {
            bail!("brand {brand:?} is not in the gallery");
        }
        let existing = current.domains(brand);
        if a.clear {
            changes.push((brand.clone(), Vec::new()));
        } else if !set.is_empty() {
            changes.push((brand.clone(), set));
        } else if !add.is_empty() || !remove.is_empty() {
            if let Some(d) = remove.iter().find(|d| !existing.contains(d)) {
                bail!("{d} is not one of {brand:?}'s domains");
            }
            changes.push((brand.clone(), edited(existing, &add, &remove)));
        }
        shown.push(brand.clone());
    }
    let g = store_domains(current, a.gallery.as_deref(), a.db.as_deref(), &changes)?;
    if shown.is_empty() {
        shown = g.brands().iter().filter(|b| !is_background(b)).cloned().collect();
    }
    if a.json {
        let list: Vec<serde_json::Value> = shown.iter().map(|b| serde_json::json!({ "brand": b, "domains": g.domains(b) })).collect();
        println!("{}", serde_json::to_string(&serde_json::json!({ "changed": changes.len(), "brands": list }))?);
        return Ok(ExitCode::SUCCESS);
    }
    for b in &shown {
        let ds = g.domains(b);
        let list = if ds.is_empty() { "(none)".to_string() } else { ds.iter().map(Domain::to_string).collect::<Vec<_>>().join(", ") };
        println!("  {b:<24} {list}");
    }
    let with = g.brands().iter().filter(|b| !g.domains(b).is_empty()).count();
    println!("{} brand(s) changed; {with} of {} brands have domains", changes.len(), g.num_brands());
    Ok(ExitCode::SUCCESS)
}

fn build(a: BuildArgs) -> Result<ExitCode> {
    if let Some(out) = &a.out
        && out.exists()
        && !a.force
    {
        bail!("{} exists; pass --force to replace it, or use `proxima gallery add` to extend it", out.display());
    }
    let model = load_model(&a.model, &a.device)?;
    let data = read_dataset(&a.data)?;
    if data.is_empty() {
        bail!("no images in {}", a.data.display());
    }
    let dim = model.card.model.embedding_size as usize;
    let emb = model.embed_dataset(&data).with_context(|| format!("embedding {}", a.data.display()))?;
    let mut g = Gallery::new(dim, model.card.fingerprint.clone())?;
    for (c, idx) in data.indices_by_class().iter().enumerate() {
        if idx.is_empty() {
            continue;
        }
        let rows: Vec<f32> = idx.iter().flat_map(|&i| emb[i * dim..(i + 1) * dim].iter().copied()).collect();
        let paths: Vec<&Path> = idx.iter().map(|&i| data.samples[i].path.as_path()).collect();
        g.add(&data.classes[c], &rows, &paths).with_context(|| format!("enrolling brand {}", data.classes[c]))?;
    }
    if let Some(cal_dir) = &a.calibrate {
        let cal = read_dataset(cal_dir)?;
        let cal_emb = model.embed_dataset(&cal).with_context(|| format!("embedding {}", cal_dir.display()))?;
        let truth: Vec<&str> = cal.samples.iter().map(|s| cal.classes[s.label].as_str()).collect();
        let c = g.calibrate(&cal_emb, &truth, a.target_fmr, ImpostorScores::BestWrongBrand).with_context(|| format!("calibrating on {}", cal_dir.display()))?;
        let fnmr = c.fnmr.map_or("n/a".to_string(), |f| format!("{f:.3}"));
        println!(
            "calibrated threshold {:.4} for FMR ≤ {} (achieved {:.4} on {} impostor scores, FNMR {fnmr})",
            c.threshold, a.target_fmr, c.achieved_fmr, c.num_impostor
        );
    } else {
        eprintln!("note: no --calibrate folder, so the gallery has no threshold; query and serve will need --threshold");
    }
    let name = match (&a.out, &a.db) {
        (Some(out), _) => {
            audit_build(out, &g)?;
            save_gallery(&g, out)?;
            out.display().to_string()
        }
        (None, Some(url)) => {
            block_on(async { GalleryDb::connect(url).await?.create_as(CLI_ACTOR, &g, a.force).await })?
                .with_context(|| format!("storing the gallery in {}", redact(url)))?;
            redact(url)
        }
        (None, None) => bail!("give --out or --db"),
    };
    println!("built {name}: {}, {} images, model {}", brand_count(&g), g.len(), g.model_fingerprint());
    Ok(ExitCode::SUCCESS)
}

fn add(a: AddArgs) -> Result<ExitCode> {
    // The one brand-name rule (proxima_index::brand_name), and the domains, before anything is loaded.
    let brand = proxima_index::brand_name::normalize(&a.brand).context("--brand")?;
    let domains = parse_domains(&a.domains)?;
    let model = load_model(&a.model, &a.device)?;
    let paths = expand_images(&a.inputs)?;
    let emb = embed_files(&model, &paths)?;
    let (g, new, added, name) = match (&a.gallery, &a.db) {
        (Some(path), _) => {
            let mut g = load_gallery_for(path, &model)?;
            let new = g.brand_id(&brand).is_none();
            let added = g.add(&brand, &emb, &paths).with_context(|| format!("enrolling brand {brand:?}"))?;
            let rows = g.list().into_iter().find(|b| b.brand == brand).map_or(0, |b| b.rows);
            audit(path, "enrol", &brand, added, rows)?;
            if !domains.is_empty() {
                let list = edited(g.domains(&brand), &domains, &[]);
                let n = g.set_domains(&brand, &list)?.len();
                audit(path, "domains", &brand, n, rows)?;
            }
            save_gallery(&g, path)?;
            (g, new, added, path.display().to_string())
        }
        (None, Some(url)) => {
            let (applied, new) = block_on(async {
                let mut db = GalleryDb::connect(url).await?;
                let (g, v) = db.load_for_model(&model.card.fingerprint).await?;
                let new = g.brand_id(&brand).is_none();
                let mut applied = db.add_as(CLI_ACTOR, &g, v, &brand, &emb, &paths).await?;
                if !domains.is_empty() {
                    let (rows, list) = (applied.rows, edited(applied.gallery.domains(&brand), &domains, &[]));
                    applied = db.set_domains_as(CLI_ACTOR, &applied.gallery, applied.version, &brand, &list).await?;
                    applied.rows = rows;
                }
                Ok::<_, proxima_gallery_db::DbError>((applied, new))
            })?
            .with_context(|| format!("enrolling brand {brand:?} in {}", redact(url)))?;
            (applied.gallery, new, applied.rows, redact(url))
        }
        (None, None) => bail!("give --gallery or --db"),
    };
    let rows = g.list().into_iter().find(|b| b.brand == brand).map_or(0, |b| b.rows);
    let ds = g.domains(&brand);
    let ds = if ds.is_empty() { String::new() } else { format!(", domains {}", ds.iter().map(Domain::to_string).collect::<Vec<_>>().join(", ")) };
    println!("{} brand {brand:?}: +{added} images ({rows} in all{ds}); {} in {name}", if new { "enrolled new" } else { "extended" }, brand_count(&g));
    Ok(ExitCode::SUCCESS)
}

/// Records a file gallery built (or rebuilt with --force) in its audit log: a `build` entry per
/// brand, and one with 0 rows per brand of the replaced gallery that is gone.
fn audit_build(out: &Path, g: &Gallery) -> Result<()> {
    let log_path = proxima_server::audit::default_path(out);
    let before = match Gallery::load(out) {
        Ok(old) => old,
        // No usable gallery there (new, or replaced because broken): the log's brands are gone.
        Err(_) => Gallery::new(g.dim(), g.model_fingerprint())?,
    };
    let (mut log, _) = proxima_server::audit::AuditLog::open(&log_path, &before).map_err(|e| anyhow!(e))?;
    let logged = proxima_server::audit::replay(log.read(0, usize::MAX).map_err(|e| anyhow!(e))?.iter().map(|n| &n.entry));
    for (brand, rows) in logged {
        if rows > 0 && g.brand_id(&brand).is_none() {
            log.append(CLI_ACTOR, "build", &brand, 0, 0).map_err(|e| anyhow!(e))?;
        }
    }
    for b in g.list() {
        log.append(CLI_ACTOR, "build", &b.brand, b.rows as u64, b.rows as u64).map_err(|e| anyhow!(e))?;
    }
    Ok(())
}

/// The audit-log id of changes made with the CLI.
const CLI_ACTOR: &str = "cli";

/// Appends a file gallery's change to its audit log (`<gallery>.audit.jsonl`, as `proxima serve`
/// keeps it) before the gallery is saved.
fn audit(gallery: &Path, action: &str, brand: &str, rows: usize, brand_rows: usize) -> Result<()> {
    audit_all(gallery, action, &[(brand, rows, brand_rows)])
}

/// As [`audit`] for several brands' changes of one command: the log is opened and reconciled
/// once, then one entry `(brand, rows, brand_rows)` is appended per change.
fn audit_all(gallery: &Path, action: &str, changes: &[(&str, usize, usize)]) -> Result<()> {
    let log_path = proxima_server::audit::default_path(gallery);
    // Reconciled against the gallery on disk (what the log must agree with before this change).
    let on_disk = Gallery::load(gallery).with_context(|| format!("opening the gallery {}", gallery.display()))?;
    let (mut log, _) = proxima_server::audit::AuditLog::open(&log_path, &on_disk).map_err(|e| anyhow!(e))?;
    for (brand, rows, brand_rows) in changes {
        log.append(CLI_ACTOR, action, brand, *rows as u64, *brand_rows as u64).map_err(|e| anyhow!(e))?;
    }
    Ok(())
}

/// "N brands", and the background examples when there are some (they are no brand: never an answer).
fn brand_count(g: &Gallery) -> String {
    let n = g.num_brands();
    if g.has_background() { format!("{n} brands (+ {BACKGROUND_BRAND} examples)") } else { format!("{n} brands") }
}

/// Runs `f` to completion on a one-thread async runtime (the database client is async).
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?.block_on(f))
}

fn list(a: ListArgs) -> Result<ExitCode> {
    let (g, name) = match (&a.gallery, &a.db) {
        (Some(path), _) => (Gallery::load(path).with_context(|| format!("opening the gallery {}", path.display()))?, path.display().to_string()),
        (None, Some(url)) => {
            (block_on(async { GalleryDb::connect(url).await?.load().await })?.with_context(|| format!("reading the gallery in {}", redact(url)))?.0, redact(url))
        }
        (None, None) => bail!("give --gallery or --db"),
    };
    if a.json {
        let v = serde_json::json!({
            "model_fingerprint": g.model_fingerprint(),
            "dim": g.dim(),
            "rows": g.len(),
            "calibration": g.calibration(),
            "brands": g.list(),
        });
        println!("{}", serde_json::to_string(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let threshold = g.calibration().map_or("none (uncalibrated)".to_string(), |c| format!("{:.4} (FMR ≤ {})", c.threshold, c.target_fmr));
    println!("{name}: {}, {} images, dim {}, model {}, threshold {threshold}", brand_count(&g), g.len(), g.dim(), g.model_fingerprint());
    for b in g.list() {
        let note = if is_background(&b.brand) { "  (non-logo examples: nearer to them than to any brand is \"not a logo\")" } else { "" };
        println!("  {:<24} {:>5}{note}", b.brand, b.rows);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct QueryLine<'a> {
    image: &'a Path,
    #[serde(flatten)]
    answer: IdentifyAnswer,
}

/// Runs `proxima query`: exit 0 when every image is a known brand, 1 when any is unknown.
pub fn query(a: QueryArgs) -> Result<ExitCode> {
    if a.top_k == 0 {
        bail!("--top-k must be >= 1");
    }
    let model = load_model(&a.model, &a.device)?;
    let g = load_gallery_for(&a.gallery, &model)?;
    let threshold = g.decision_threshold(a.threshold).map_err(|_| anyhow!("the gallery {} has no calibrated threshold; pass --threshold", a.gallery.display()))?;
    let emb = embed_files(&model, &a.images)?;
    let dim = g.dim();
    let mut all_known = true;
    let mut lines = Vec::new();
    for (i, image) in a.images.iter().enumerate() {
        let id = g.identify_with_threshold(&emb[i * dim..(i + 1) * dim], a.top_k, threshold).with_context(|| format!("identifying {}", image.display()))?;
        all_known &= matches!(id.decision, Decision::Known { .. });
        let answer = IdentifyAnswer { decision: id.decision, threshold: id.threshold, candidates: id.candidates };
        if !a.json {
            match &answer.decision {
                Decision::Known { brand, similarity } => println!("{}: {brand} (similarity {similarity:.4} ≥ threshold {threshold:.4})", image.display()),
                Decision::Unknown { best_similarity, background_similarity: None } => {
                    println!("{}: unknown (best similarity {best_similarity:.4} < threshold {threshold:.4})", image.display())
                }
                Decision::Unknown { best_similarity, background_similarity: Some(bg) } => println!(
                    "{}: unknown, not a logo (nearer to the gallery's {BACKGROUND_BRAND} examples, {bg:.4}, than to any brand, {best_similarity:.4})",
                    image.display()
                ),
            }
            for (r, c) in answer.candidates.iter().enumerate() {
                println!("  {}. {:<24} {:.4}", r + 1, c.brand, c.similarity);
            }
        }
        lines.push(QueryLine { image, answer });
    }
    if a.json {
        println!("{}", serde_json::to_string(&lines)?);
    }
    Ok(if all_known { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Runs `proxima match`: exit 0 when the two images are the same brand, 1 when different.
pub fn matches(a: MatchArgs) -> Result<ExitCode> {
    let model = load_model(&a.model, &a.device)?;
    let threshold = match (&a.gallery, a.threshold) {
        (Some(path), _) => {
            let g = load_gallery_for(path, &model)?;
            g.decision_threshold(None).map_err(|_| anyhow!("the gallery {} has no calibrated threshold; pass --threshold", path.display()))?
        }
        (None, Some(t)) => t,
        (None, None) => bail!("pass --threshold or --gallery"),
    };
    let emb = embed_files(&model, &[a.a.clone(), a.b.clone()])?;
    let d = emb.len() / 2;
    let similarity = cosine(&emb[..d], &emb[d..]);
    let same = similarity >= threshold;
    let answer = CompareAnswer { similarity, threshold, decision: if same { "same" } else { "different" }.into() };
    if a.json {
        println!("{}", serde_json::to_string(&answer)?);
    } else {
        println!("{} vs {}: similarity {similarity:.4} {} threshold {threshold:.4} → {}", a.a.display(), a.b.display(), if same { "≥" } else { "<" }, answer.decision);
    }
    Ok(if same { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Runs `proxima serve` until Ctrl-C or SIGTERM.
pub fn serve(a: ServeArgs) -> Result<ExitCode> {
    let device = experiment::available_device(&a.device)?;
    let cfg = ServerConfig {
        addr: a.addr,
        max_body_bytes: a.max_body_bytes,
        max_pixels: a.max_pixels,
        request_timeout: Duration::from_millis(a.timeout_ms),
        batch: BatchConfig { queue_capacity: a.queue, max_batch: a.max_batch, batch_wait: Duration::from_millis(a.batch_wait_ms) },
        threshold: a.threshold,
        tokens: match &a.tokens {
            Some(p) => Some(std::sync::Arc::new(proxima_server::auth::Tokens::load(p)?)),
            None => None,
        },
        allow_open: a.no_auth,
        rate_limit: Some(a.rate_limit),
        tls: match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => Some(proxima_server::tls::TlsFiles { cert: cert.clone(), key: key.clone() }),
            _ => None,
        },
        audit_log: a.audit_log.clone(),
        ..Default::default()
    };
    let access = match (&cfg.tokens, a.tokens.as_ref()) {
        (Some(t), Some(p)) => format!("{} token(s) from {}", t.len(), p.display()),
        _ if a.no_auth => "NO ACCESS CONTROL (--no-auth)".to_string(),
        _ => "no tokens (loopback only)".to_string(),
    };
    if a.no_auth {
        eprintln!(
            "WARNING: --no-auth: serving {} without access control; anyone who can reach it can enrol and remove brands. Give --tokens FILE (proxima token new) to require tokens.",
            a.addr
        );
    }
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let model = a.model.clone();
    // An explicit --localiser must load; the default one is used only when present.
    let localiser = match &a.localiser {
        Some(p) => Some(proxima_detect::resolve_localiser_dir(p).with_context(|| format!("--localiser {}", p.display()))?),
        None => proxima_detect::resolve_localiser_dir(&a.model).ok(),
    };
    let find_note = localiser.as_ref().map_or("no localiser: /v1/find answers 501".to_string(), |l| format!("localiser {}", l.display()));
    let load_localiser: Option<proxima_server::LocaliserLoader> =
        localiser.map(|l| Box::new(move || proxima_detect::load_localiser(&l, device).map(|(loc, _)| loc)) as proxima_server::LocaliserLoader);
    let source = match (&a.gallery, &a.gallery_db) {
        (Some(path), _) => GallerySource::File(path.clone()),
        (None, Some(url)) => GallerySource::Db { url: url.clone(), poll: Duration::from_millis(a.follow_ms.max(1)) },
        (None, None) => bail!("give --gallery or --gallery-db"),
    };
    let name = source.name();
    proxima_server::run_blocking(cfg, Box::new(move || load_model_dir(&model, device)), load_localiser, source, |addr| {
        eprintln!("serving {name} with model {} ({find_note}; {access}) on {scheme}://{addr} (Ctrl-C to stop)", a.model.display());
    })
    .with_context(|| format!("serving {name} on {}", a.addr))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_images_takes_files_and_the_images_of_folders_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.png", "a.JPG", "notes.txt"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let single = dir.path().join("notes.txt");
        let got = expand_images(&[dir.path().to_path_buf(), single.clone()]).unwrap();
        assert_eq!(got, vec![dir.path().join("a.JPG"), dir.path().join("b.png"), single]);
        let err = expand_images(&[dir.path().join("missing.png")]).unwrap_err().to_string();
        assert!(err.contains("missing.png"), "{err}");
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(expand_images(&[empty]).unwrap_err().to_string().contains("no image files"));
    }
}
