//! `proxima gallery build|add|remove|list|domains`: the brand gallery a model recognises against.
//!
//! Why apart from training: enrolling a new brand is a gallery edit, not a training run. Every
//! command that embeds checks that the gallery was built with the same model (the fingerprint in
//! the gallery file), because vectors of two models are not comparable and a mix gives confident
//! nonsense. A file gallery's changes are appended to its audit log (as `proxima serve` keeps it)
//! before the gallery is saved.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use proxima_data::{Dataset, EnrolView, ScanOptions};
use proxima_gallery_db::{GalleryDb, redact};
use proxima_index::{BACKGROUND_BRAND, Domain, Gallery, ImpostorScores, is_background};

use crate::common::{block_on, embed_files, embed_views, expand_images, load_gallery_for, load_model, parse_view};

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
    /// Enrol at most this many images per brand, drawn at random by `--seed` (few-shot galleries:
    /// 1 is one-shot).
    #[arg(long)]
    per_brand: Option<usize>,
    /// Seed of the `--per-brand` draw.
    #[arg(long, default_value_t = 0, requires = "per_brand")]
    seed: u64,
    /// Also enrol these views of each image, comma-separated: `small` (scaled to 24 px, as
    /// navigation bars and footers draw logos), `dark` (its light background made dark grey).
    #[arg(long, value_delimiter = ',', value_parser = parse_view)]
    views: Vec<EnrolView>,
    /// Replace `--out` (or the database's gallery) if it exists.
    #[arg(long)]
    force: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// `data` with at most `n` samples per class, drawn by a shuffle seeded by `seed` and the class
/// name (the same seed draws the same images of a brand whatever other brands are enrolled).
fn few_per_class(mut data: Dataset, n: usize, seed: u64) -> Dataset {
    let mut keep = vec![false; data.samples.len()];
    for (c, idx) in data.indices_by_class().iter().enumerate() {
        let mut idx = idx.clone();
        proxima_data::rng::Rng::from_parts(&[seed, proxima_data::rng::fnv1a64(0, data.classes[c].as_bytes())]).shuffle(&mut idx);
        for &i in idx.iter().take(n) {
            keep[i] = true;
        }
    }
    let mut k = keep.into_iter();
    data.samples.retain(|_| k.next().unwrap_or(false));
    data
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
    /// Also enrol these views of each image, as `gallery build --views`.
    #[arg(long, value_delimiter = ',', value_parser = parse_view)]
    views: Vec<EnrolView>,
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

/// Runs `proxima gallery …`.
pub fn run(cmd: GalleryCommand) -> Result<ExitCode> {
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
    if a.per_brand == Some(0) {
        bail!("--per-brand must be at least 1");
    }
    let model = load_model(&a.model, &a.device)?;
    let mut data = read_dataset(&a.data)?;
    if data.is_empty() {
        bail!("no images in {}", a.data.display());
    }
    if let Some(n) = a.per_brand {
        data = few_per_class(data, n, a.seed);
    }
    let dim = model.dim();
    let emb = model.embed_dataset(&data).with_context(|| format!("embedding {}", a.data.display()))?;
    let sample_paths: Vec<&Path> = data.samples.iter().map(|s| s.path.as_path()).collect();
    let views = embed_views(&model, &sample_paths, &a.views)?;
    let mut g = Gallery::new(dim, model.fingerprint().to_string())?;
    for (c, idx) in data.indices_by_class().iter().enumerate() {
        if idx.is_empty() {
            continue;
        }
        let mut rows: Vec<f32> = idx.iter().flat_map(|&i| emb[i * dim..(i + 1) * dim].iter().copied()).collect();
        let mut paths: Vec<PathBuf> = idx.iter().map(|&i| data.samples[i].path.clone()).collect();
        for (path, row) in idx.iter().flat_map(|&i| &views[i]) {
            rows.extend_from_slice(row);
            paths.push(path.clone());
        }
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
    let mut paths = expand_images(&a.inputs)?;
    let mut emb = embed_files(&model, &paths)?;
    let originals: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let views: Vec<(PathBuf, Vec<f32>)> = embed_views(&model, &originals, &a.views)?.into_iter().flatten().collect();
    for (path, row) in views {
        emb.extend_from_slice(&row);
        paths.push(path);
    }
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
                let (g, v) = db.load_for_model(model.fingerprint()).await?;
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
