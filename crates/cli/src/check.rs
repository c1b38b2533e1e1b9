//! `proxima check`: is this page a brand's own, or someone else's page wearing the brand?
//!
//! Why a command of its own: `find` says which brands a screenshot shows; a phishing analyst
//! needs the next step, the page's domain against the domains each shown brand owns
//! (`proxima gallery domains`). Every URL is read before any model is loaded, so a typo in the
//! 500th line of a URL file fails in milliseconds, not after 499 pages. Exit status: 0 no page
//! impersonates a brand, 1 at least one does, 2 error (nothing is written).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use proxima_data::{DecodeOptions, decode_file};
use proxima_detect::{CheckAnswer, Finder, check_answer, draw_check};
use proxima_domain::{PageHost, Verdict};

use crate::common::{load_gallery_for, load_model};
use crate::find::{FindOptionArgs, find_localiser};

/// Arguments of `proxima check`.
#[derive(Args)]
#[command(after_help = "Exit status: 0 no page impersonates a brand, 1 at least one does, 2 error.\n\n\
A URL file holds one page per line, `URL SCREENSHOT` (the screenshot's path is the rest of the line, \
relative to the file's folder); blank lines and lines starting with # are skipped.")]
pub struct CheckArgs {
    /// Model directory; must be the model the gallery was built with.
    #[arg(long)]
    model: PathBuf,
    /// Gallery file whose brands carry their domains (`proxima gallery domains`).
    #[arg(long)]
    gallery: PathBuf,
    /// Localiser directory; default: `localiser/` inside the model or run directory.
    #[arg(long)]
    localiser: Option<PathBuf>,
    /// The page's URL (with one SCREENSHOT); without a scheme it is read as http://.
    #[arg(long, required_unless_present = "url_file", conflicts_with = "url_file", requires = "screenshot")]
    url: Option<String>,
    /// Many pages: a file of `URL SCREENSHOT` lines.
    #[arg(long)]
    url_file: Option<PathBuf>,
    /// The page's screenshot (with --url).
    screenshot: Option<PathBuf>,
    #[command(flatten)]
    find: FindOptionArgs,
    /// Print one JSON object per page, one per line, instead of text.
    #[arg(long)]
    json: bool,
    /// Write each screenshot with the logo that decided its verdict framed (red impersonation,
    /// green consistent, amber no domains on record) as `<DIR>/<stem>.check.png`; written only
    /// once every page succeeded.
    #[arg(long)]
    draw: Option<PathBuf>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// One page to check: its URL (parsed) and screenshot.
struct Page {
    host: PageHost,
    screenshot: PathBuf,
}

/// Reads a URL file: `URL SCREENSHOT` per line, paths relative to the file's folder.
fn read_url_file(path: &Path) -> Result<Vec<Page>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the URL file {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new(""));
    let mut pages = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let Some((url, shot)) = line.split_once(char::is_whitespace) else { bail!("{}: expected `URL SCREENSHOT`, found {line:?}", at()) };
        let host = PageHost::from_url(url).with_context(at)?;
        pages.push(Page { host, screenshot: base.join(shot.trim()) });
    }
    if pages.is_empty() {
        bail!("{} lists no pages", path.display());
    }
    Ok(pages)
}

/// `<dir>/<stem>.check.png` for each screenshot, numbered when stems repeat.
fn drawing_paths(dir: &Path, shots: &[PathBuf]) -> Vec<PathBuf> {
    proxima_detect::draw::drawing_paths(dir, shots)
        .into_iter()
        .map(|p| {
            let name = p.file_name().map_or(String::new(), |n| n.to_string_lossy().replace(".find.png", ".check.png"));
            p.with_file_name(name)
        })
        .collect()
}

/// The one-line text form of an answer.
fn describe(a: &CheckAnswer) -> String {
    let sim = a.similarity.map_or("-".to_string(), |s| format!("{s:.3}"));
    let head = match (&a.brand, a.verdict) {
        (Some(b), Verdict::Impersonation) => format!("IMPERSONATION of {b} (similarity {sim})"),
        (Some(b), Verdict::Consistent) => format!("consistent: {b}'s own page (similarity {sim})"),
        (Some(b), _) => format!("unknown domain: {b} found (similarity {sim}), no domains on record"),
        (None, _) => format!("no known brand (best region {sim})"),
    };
    format!("{} ({}): {head}; {}", a.image, a.url, a.reason)
}

/// Runs `proxima check`.
pub fn run(a: CheckArgs) -> Result<ExitCode> {
    let pages = match (&a.url, &a.url_file) {
        (Some(url), _) => {
            let shot = a.screenshot.clone().context("--url needs the page's SCREENSHOT")?;
            vec![Page { host: PageHost::from_url(url).context("--url")?, screenshot: shot }]
        }
        (None, Some(file)) => read_url_file(file)?,
        (None, None) => bail!("give --url URL SCREENSHOT, or --url-file FILE"),
    };
    if let Some(p) = pages.iter().find(|p| !p.screenshot.is_file()) {
        bail!("{}: no such screenshot", p.screenshot.display());
    }
    let model = load_model(&a.model, &a.device)?;
    let gallery = load_gallery_for(&a.gallery, &model)?;
    if gallery.all_domains().is_empty() {
        eprintln!("note: no brand of {} has domains on record, so every brand found is `unknown_domain`; add them with `proxima gallery domains`", a.gallery.display());
    }
    let loc = find_localiser(a.localiser.as_deref(), &a.model, model.device)?;
    let finder = Finder::new(&loc, &model, &gallery, a.find.options())?;
    let shots: Vec<PathBuf> = pages.iter().map(|p| p.screenshot.clone()).collect();
    let draw_to = a.draw.as_deref().map(|d| drawing_paths(d, &shots));
    let (mut drawings, mut answers) = (Vec::new(), Vec::with_capacity(pages.len()));
    let (mut find_s, mut check_s) = (Vec::new(), Vec::new());
    for (i, page) in pages.iter().enumerate() {
        let path = &page.screenshot;
        let img = decode_file(path, &DecodeOptions::default()).with_context(|| format!("decoding {}", path.display()))?;
        let t = Instant::now();
        let found = finder.find(&path.to_string_lossy(), &img).with_context(|| format!("finding logos in {}", path.display()))?;
        find_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let ans = check_answer(found, &page.host, &gallery);
        check_s.push(t.elapsed().as_secs_f64());
        if a.json {
            println!("{}", serde_json::to_string(&ans)?);
        } else {
            println!("{}", describe(&ans));
        }
        if let Some(paths) = &draw_to {
            let drawn = draw_check(&img, &ans).with_context(|| format!("drawing the verdict on {}", path.display()))?;
            drawings.push((paths[i].clone(), proxima_detect::draw::encode_png(&drawn, &paths[i])?));
        }
        answers.push(ans);
    }
    if !drawings.is_empty() {
        proxima_detect::draw::write_all(&drawings).context("writing the drawings")?;
    }
    let flagged = answers.iter().filter(|a| a.verdict.is_impersonation()).count();
    // On stderr, so that `--json` output stays one object per line.
    {
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        eprintln!(
            "{} page(s), {flagged} impersonation(s); per page median: find {:.1} ms, check {:.3} ms{}",
            answers.len(),
            1e3 * median(&mut find_s),
            1e3 * median(&mut check_s),
            a.draw.as_deref().map_or(String::new(), |d| format!("; drawings in {}", d.display()))
        );
    }
    Ok(if flagged > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
