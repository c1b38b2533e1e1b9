//! Sign-in pages rendered by a real browser, with the logo boxes read from the DOM.
//!
//! Why: `find` learned its localiser and embedding on pages drawn by our own rasteriser (bars for
//! text, flat one-colour marks) and misses logos on real sign-in pages, which have real fonts and
//! words, colour logos with gradients, wordmarks, favicons, photos, banners and overlays. Here
//! headless Chromium lays out HTML/CSS templates ([`templates`]) with the colour SVGs and wordmarks
//! of gilbarbara-logos and the simple-icons marks ([`brands`]), waits for fonts and images, reads
//! each logo's `getBoundingClientRect()` and takes the screenshot. The output is the scene
//! manifest `proxima localiser train|eval` and `proxima data crops` already read.
//!
//! The held-out part never shares a brand or a template with the training part: brands by the
//! icon hash split (`proxima_data::scenes_synth::is_heldout`), templates by a fixed list
//! ([`templates::Template::is_heldout`]); half of the held-out pages show no logo. Everything is
//! written into a temporary folder beside `out` and renamed into place at the end, so a failed
//! or killed run leaves nothing partial.

pub mod brands;
pub mod cdp;
pub mod error;
pub mod templates;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use base64::Engine;
use proxima_base::SplitMix64;
use proxima_data::scene::{Scene, SceneBox, write_scenes};
use serde::{Deserialize, Serialize};

pub use brands::{Brand, Logo, LogoKind, load_brands};
pub use cdp::{Browser, find_chromium};
pub use error::{PagesError, Result};
use templates::{FONTS, Hero, LANGS, LogoView, PageSpec, Template, Variant};

/// Options of [`render_pages`].
#[derive(Debug, Clone)]
pub struct PagesOptions {
    /// The shared data folder (`gilbarbara-logos/`, `simple-icons/`, `flickrlogos27/`).
    pub data: PathBuf,
    /// Output folder (replaced when the run succeeds).
    pub out: PathBuf,
    /// Training pages (training brands and templates).
    pub train: usize,
    /// Held-out pages (held-out brands and templates).
    pub heldout: usize,
    /// Share of training pages without a logo.
    pub train_no_logo: f64,
    /// Share of held-out pages without a logo.
    pub heldout_no_logo: f64,
    /// Share of pages at mobile width (390 px).
    pub mobile: f64,
    pub seed: u64,
    /// Chromium binary (default: [`find_chromium`]).
    pub chromium: Option<PathBuf>,
}

impl Default for PagesOptions {
    fn default() -> Self {
        PagesOptions {
            data: PathBuf::from("../shared/data"),
            out: PathBuf::from("data/pages"),
            train: 1000,
            heldout: 200,
            train_no_logo: 0.25,
            heldout_no_logo: 0.5,
            mobile: 0.25,
            seed: 0,
            chromium: None,
        }
    }
}

/// What a run wrote.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PagesReport {
    pub train_pages: usize,
    pub heldout_pages: usize,
    pub train_boxes: usize,
    pub heldout_boxes: usize,
    pub train_brands: usize,
    pub heldout_brands: usize,
    /// Held-out brands enrolled under `enrol/` (logos rendered alone).
    pub enrol_brands: usize,
    pub enrol_images: usize,
    /// Brands whose logo did not render (skipped), with the reason.
    pub skipped_brands: BTreeMap<String, String>,
    /// Logo boxes dropped because they were off screen, covered or mostly clipped.
    pub hidden_boxes: usize,
    pub seconds: f64,
    pub pages_per_second: f64,
    pub chromium: String,
}

/// The script that waits for fonts and images, then reads every logo's box (viewport pixels,
/// clipped), and maps hero photos' logo boxes through `object-fit: cover`.
const BOXES_JS: &str = r#"(async () => {
  await document.fonts.ready;
  await Promise.all([...document.images].map(i => i.decode().catch(() => null)));
  const W = innerWidth, H = innerHeight;
  const area = b => Math.max(0, b[2] - b[0]) * Math.max(0, b[3] - b[1]);
  const clip = b => [Math.max(0, b[0]), Math.max(0, b[1]), Math.min(W, b[2]), Math.min(H, b[3])];
  const out = { boxes: [], broken: [], hidden: 0 };
  const keep = (full, brand, variant, el) => {
    const c = clip(full);
    if (area(c) < 0.6 * area(full) || c[2] - c[0] < 3 || c[3] - c[1] < 3) { out.hidden++; return; }
    if (el) {
      const t = document.elementFromPoint((c[0] + c[2]) / 2, (c[1] + c[3]) / 2);
      if (t !== el && !(t && el.contains(t))) { out.hidden++; return; }
    }
    out.boxes.push({ box: c, brand, variant });
  };
  for (const e of document.querySelectorAll('img.logo')) {
    if (!(e.complete && e.naturalWidth > 0)) { out.broken.push(e.dataset.logo); continue; }
    const r = e.getBoundingClientRect();
    keep([r.left, r.top, r.right, r.bottom], e.dataset.logo, e.dataset.variant, e);
  }
  for (const h of document.querySelectorAll('img.hero')) {
    if (!(h.complete && h.naturalWidth > 0)) continue;
    const r = h.getBoundingClientRect();
    const s = Math.max(r.width / h.naturalWidth, r.height / h.naturalHeight);
    const ox = r.left + (r.width - h.naturalWidth * s) / 2, oy = r.top + (r.height - h.naturalHeight * s) / 2;
    for (const [x0, y0, x1, y1, brand] of JSON.parse(h.dataset.boxes || '[]')) {
      const m = [ox + x0 * s, oy + y0 * s, ox + x1 * s, oy + y1 * s];
      const inside = [Math.max(m[0], r.left), Math.max(m[1], r.top), Math.min(m[2], r.right), Math.min(m[3], r.bottom)];
      if (area(inside) < 0.6 * area(m)) { out.hidden++; continue; }
      keep(inside, brand, 'photo', null);
    }
  }
  return out;
})()"#;

#[derive(Deserialize)]
struct DomBox {
    #[serde(rename = "box")]
    bbox: [f32; 4],
    brand: String,
    variant: String,
}

#[derive(Deserialize)]
struct DomRead {
    boxes: Vec<DomBox>,
    broken: Vec<String>,
    hidden: usize,
}

/// A FlickrLogos-27 photo for hero images: file and its logo boxes.
struct Photo {
    path: PathBuf,
    boxes: Vec<([f32; 4], String)>,
}

/// FlickrLogos-27 training photos with their boxes (empty when the set is absent).
fn load_photos(data: &Path) -> Vec<Photo> {
    let root = data.join("flickrlogos27");
    let Ok(text) = std::fs::read_to_string(root.join("flickr_logos_27_dataset_training_set_annotation.txt")) else { return Vec::new() };
    let mut by_file: BTreeMap<String, Vec<([f32; 4], String)>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 7 {
            continue;
        }
        let n: Vec<f32> = f[3..7].iter().filter_map(|v| v.parse().ok()).collect();
        if n.len() == 4 && n[2] > n[0] && n[3] > n[1] {
            by_file.entry(f[0].to_string()).or_default().push(([n[0], n[1], n[2], n[3]], f[1].to_lowercase()));
        }
    }
    let dir = root.join("flickr_logos_27_dataset_images");
    let mut photos = Vec::new();
    for (f, mut boxes) in by_file {
        let path = dir.join(f);
        let Ok((w, h)) = image::image_dimensions(&path) else { continue };
        // The set repeats boxes; and a photo that is mostly logo is no hero photo.
        let mut unique: Vec<([f32; 4], String)> = Vec::new();
        for b in boxes.drain(..) {
            if !unique.iter().any(|u| proxima_base::box_iou(&u.0, &b.0) > 0.9) {
                unique.push(b);
            }
        }
        let boxes = unique;
        let area = (w * h) as f32;
        if boxes.iter().all(|(b, _)| (b[2] - b[0]) * (b[3] - b[1]) < 0.25 * area) {
            photos.push(Photo { path, boxes });
        }
    }
    photos
}

/// The `data:` URL of an SVG file, one-colour marks filled with `fill`.
fn svg_data_url(path: &Path, fill: Option<[u8; 3]>) -> Result<String> {
    let mut text = std::fs::read_to_string(path).map_err(|e| PagesError::io(path, e))?;
    if let Some(c) = fill
        && let Some(at) = text.find("<svg")
    {
        text.insert_str(at + 4, &format!(" fill=\"#{:02x}{:02x}{:02x}\"", c[0], c[1], c[2]));
    }
    Ok(format!("data:image/svg+xml;base64,{}", base64::engine::general_purpose::STANDARD.encode(text.as_bytes())))
}

struct Draw<'a> {
    rng: SplitMix64,
    brands: &'a [&'a Brand],
}

impl Draw<'_> {
    fn f(&mut self) -> f64 {
        self.rng.next_f64()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n.max(1) as u64) as usize
    }
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.rng.next_u64() % (hi - lo + 1) as u64) as u32
    }
}

/// A logo of `brand` as a page shows it: the variant, its source and height.
fn logo_view(d: &mut Draw, brand: &Brand, dark: bool, small: bool, mobile: bool) -> Result<LogoView> {
    let logo = &brand.logos[d.below(brand.logos.len())];
    let (variant, fill) = match logo.kind {
        LogoKind::Colour => (Variant::Colour, None),
        LogoKind::Wordmark => (Variant::Wordmark, None),
        LogoKind::Mono => {
            let lum = proxima_data::views::luminance(brand.colour);
            let unreadable = if dark { lum < 0.2 } else { lum > 0.8 };
            if unreadable || d.f() < 0.3 { (Variant::Bar, Some([255, 255, 255])) } else { (Variant::Mono, Some(brand.colour)) }
        }
    };
    let height = if small {
        d.range(14, 24)
    } else {
        match variant {
            Variant::Wordmark if mobile => d.range(20, 40),
            Variant::Wordmark => d.range(20, 64),
            Variant::Bar => d.range(22, 40),
            _ if d.f() < 0.2 => d.range(16, 31),
            _ => d.range(28, 96),
        }
    };
    Ok(LogoView { brand: brand.id.clone(), name: brand.name.clone(), src: svg_data_url(&logo.svg, fill)?, variant, height })
}

/// Salt of the draw that puts a row of non-logo widgets on 60 % of the training pages.
const WIDGETS_SALT: u64 = 0x5769_6467_6574_7321;

/// Renders the pages, the held-out brands' enrolment images and `report.json` into `opts.out`.
pub fn render_pages(opts: &PagesOptions) -> Result<PagesReport> {
    if !(0.0..=1.0).contains(&opts.train_no_logo) || !(0.0..=1.0).contains(&opts.heldout_no_logo) || !(0.0..=1.0).contains(&opts.mobile) {
        return Err(PagesError::Invalid("the no-logo and mobile shares must be within [0, 1]".into()));
    }
    let chromium = match &opts.chromium {
        Some(p) => p.clone(),
        None => find_chromium().ok_or(PagesError::NoBrowser)?,
    };
    // file:// URLs need absolute paths.
    let data = std::fs::canonicalize(&opts.data).map_err(|e| PagesError::io(&opts.data, e))?;
    let all = load_brands(&data)?;
    let photos = load_photos(&data);
    let parent = match opts.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| PagesError::io(&parent, e))?;
    let name = opts.out.file_name().and_then(|n| n.to_str()).unwrap_or("pages");
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = render_into(opts, &chromium, &all, &photos, &tmp);
    match result {
        Ok(report) => {
            if opts.out.exists() {
                std::fs::remove_dir_all(&opts.out).map_err(|e| PagesError::io(&opts.out, e))?;
            }
            std::fs::rename(&tmp, &opts.out).map_err(|e| PagesError::io(&opts.out, e))?;
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn render_into(opts: &PagesOptions, chromium: &Path, all: &[Brand], photos: &[Photo], out: &Path) -> Result<PagesReport> {
    let start = Instant::now();
    let work = out.join(".work");
    for d in [out.join("train/pages"), out.join("heldout/pages"), work.clone()] {
        std::fs::create_dir_all(&d).map_err(|e| PagesError::io(&d, e))?;
    }
    let mut browser = Browser::launch(chromium)?;
    let mut report = PagesReport { chromium: chromium.display().to_string(), ..Default::default() };
    let mut broken: BTreeSet<String> = BTreeSet::new();
    let mut used_heldout: BTreeSet<String> = BTreeSet::new();
    let train_brands: Vec<&Brand> = all.iter().filter(|b| !b.heldout).collect();
    let heldout_brands: Vec<&Brand> = all.iter().filter(|b| b.heldout).collect();
    // Small marks of other brands (social sign-in, payment cards) come from training brands only.
    let extras: Vec<&Brand> = ["google", "apple", "facebook", "github", "microsoft", "x", "visa", "mastercard", "americanexpress", "paypal"]
        .iter()
        .filter_map(|id| train_brands.iter().find(|b| b.id == *id && b.logos.iter().any(|l| l.kind == LogoKind::Mono)).copied())
        .collect();
    for (part, count, no_logo, brands) in [("train", opts.train, opts.train_no_logo, &train_brands), ("heldout", opts.heldout, opts.heldout_no_logo, &heldout_brands)] {
        if count > 0 && brands.is_empty() {
            return Err(PagesError::Invalid(format!("no {part} brands in {}", opts.data.display())));
        }
        let templates: Vec<Template> = Template::ALL.iter().copied().filter(|t| t.is_heldout() == (part == "heldout")).collect();
        let mut scenes = Vec::with_capacity(count);
        let mut i = 0u64;
        while scenes.len() < count {
            i += 1;
            if i > 4 * count as u64 + 100 {
                return Err(PagesError::Invalid(format!("too many {part} pages failed to render ({} brands skipped)", broken.len())));
            }
            let mut d = Draw { rng: SplitMix64(proxima_base::mix64(opts.seed ^ proxima_base::fnv1a64(i, part.as_bytes()))), brands };
            let template = templates[d.below(templates.len())];
            let dark = d.f() < 0.3;
            let mobile = d.f() < opts.mobile;
            let with_logo = d.f() >= no_logo;
            let brand = if with_logo {
                let b = d.brands[d.below(d.brands.len())];
                if broken.contains(&b.id) {
                    continue;
                }
                Some(b)
            } else {
                None
            };
            let colour =
                brand.map(|b| b.colour).unwrap_or([[0x1a, 0x73, 0xe8], [0x0b, 0x57, 0xd0], [0x2e, 0x7d, 0x32], [0x6a, 0x1b, 0x9a], [0xc6, 0x28, 0x28]][d.below(5)]);
            let logo = match brand {
                Some(b) => Some(logo_view(&mut d, b, dark, false, mobile)?),
                None => None,
            };
            let small_logo = match brand {
                Some(b) if matches!(template, Template::TopNav | Template::Bank | Template::Social) && d.f() < 0.4 => Some(logo_view(&mut d, b, dark, true, mobile)?),
                _ => None,
            };
            let mut extra = Vec::new();
            if part == "train" && (template == Template::Social || (template == Template::Bank && d.f() < 0.5)) && !extras.is_empty() {
                for _ in 0..d.range(2, 3) {
                    let e = extras[d.below(extras.len())];
                    if Some(e.id.as_str()) != brand.map(|b| b.id.as_str()) && !extra.iter().any(|l: &LogoView| l.brand == e.id) {
                        let mut v = logo_view(&mut d, e, dark, true, mobile)?;
                        v.height = d.range(16, 22);
                        extra.push(v);
                    }
                }
            }
            let hero = if template == Template::SplitHero && !photos.is_empty() {
                let p = &photos[d.below(photos.len())];
                Some(Hero { src: format!("file://{}", p.path.display()), boxes: p.boxes.clone() })
            } else {
                None
            };
            let mut spec = PageSpec {
                template,
                dark,
                mobile,
                font: FONTS[d.below(FONTS.len())],
                lang: if d.f() < 0.5 { 0 } else { d.below(LANGS.len()) },
                brand_name: brand.map(|b| b.name.clone()),
                colour,
                logo,
                small_logo,
                extra,
                hero,
                widgets: false,
                seed: d.rng.next_u64(),
            };
            // Distractors on training pages only, decided from the layout seed (the page's last
            // draw), so that every other draw, and every held-out page, stays as it was.
            spec.widgets = part == "train" && proxima_base::mix64(spec.seed ^ WIDGETS_SALT) % 10 < 6;
            let (w, h) = if mobile { (390, 844) } else { (1280, 800) };
            let page = work.join(format!("{part}-{i}.html"));
            std::fs::write(&page, templates::html(&spec)).map_err(|e| PagesError::io(&page, e))?;
            browser.set_viewport(w, h, mobile)?;
            browser.load_file(&page)?;
            let read: DomRead = serde_json::from_value(browser.eval(BOXES_JS)?).map_err(|e| PagesError::Invalid(format!("reading the page's boxes: {e}")))?;
            let _ = std::fs::remove_file(&page);
            if let Some(b) = brand
                && read.broken.contains(&b.id)
            {
                report.skipped_brands.insert(b.id.clone(), "its SVG does not render in Chromium".into());
                broken.insert(b.id.clone());
                continue;
            }
            if let Some(b) = brand
                && !read.boxes.iter().any(|x| x.brand == b.id)
            {
                // The page's own logo ended up hidden (e.g. below the fold on a phone): draw again.
                report.hidden_boxes += read.hidden;
                continue;
            }
            report.hidden_boxes += read.hidden;
            let png = browser.screenshot_png()?;
            let rel = PathBuf::from(format!("pages/{:06}.png", scenes.len()));
            let file = out.join(part).join(&rel);
            std::fs::write(&file, &png).map_err(|e| PagesError::io(&file, e))?;
            let boxes: Vec<SceneBox> = read.boxes.iter().map(|b| SceneBox { bbox: b.bbox, brand: b.brand.clone() }).collect();
            let mut shown: Vec<String> = boxes.iter().map(|b| b.brand.clone()).collect();
            shown.sort();
            shown.dedup();
            let variant = read.boxes.iter().find(|b| Some(b.brand.as_str()) == brand.map(|b| b.id.as_str())).map_or("none", |b| b.variant.as_str());
            let kind = format!("browser/{}/{}/{}/{variant}", template.name(), if dark { "dark" } else { "light" }, if mobile { "mobile" } else { "desktop" });
            if part == "heldout"
                && let Some(b) = brand
            {
                used_heldout.insert(b.id.clone());
            }
            match part {
                "train" => report.train_boxes += boxes.len(),
                _ => report.heldout_boxes += boxes.len(),
            }
            scenes.push(Scene { image: out.join(part).join(&rel), brands: shown, boxes: Some(boxes), kind });
        }
        write_scenes(&out.join(part).join("scenes.jsonl"), &scenes)?;
        match part {
            "train" => report.train_pages = scenes.len(),
            _ => report.heldout_pages = scenes.len(),
        }
    }
    report.train_brands = train_brands.len();
    report.heldout_brands = heldout_brands.len();
    // Enrolment images of the held-out brands the held-out pages show: each logo alone.
    for id in &used_heldout {
        let b = heldout_brands.iter().find(|b| &b.id == id).expect("a held-out brand");
        report.enrol_images += enrol_brand(&mut browser, b, &work, &out.join("enrol").join(&b.id))?;
        report.enrol_brands += 1;
    }
    let _ = std::fs::remove_dir_all(&work);
    report.seconds = start.elapsed().as_secs_f64();
    report.pages_per_second = (report.train_pages + report.heldout_pages) as f64 / report.seconds.max(1e-9);
    let path = out.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report).expect("serialisable")).map_err(|e| PagesError::io(&path, e))?;
    Ok(report)
}

/// Renders each logo of `brand` alone (mono marks in the brand colour and white on it) and saves
/// the crops, padded by 8 px, into `dir`; returns how many.
fn enrol_brand(browser: &mut Browser, brand: &Brand, work: &Path, dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).map_err(|e| PagesError::io(dir, e))?;
    let mut cells = String::new();
    for (k, logo) in brand.logos.iter().enumerate() {
        let brand_bg = format!("#{:02x}{:02x}{:02x}", brand.colour[0], brand.colour[1], brand.colour[2]);
        let white = "#ffffff".to_string();
        let fills: Vec<(Option<[u8; 3]>, &str, String)> = match logo.kind {
            LogoKind::Mono => vec![(Some(brand.colour), "mono", white), (Some([255, 255, 255]), "bar", brand_bg)],
            LogoKind::Colour => vec![(None, "colour", white)],
            LogoKind::Wordmark => vec![(None, "wordmark", white)],
        };
        for (fill, variant, bg) in fills {
            let _ = std::fmt::Write::write_fmt(
                &mut cells,
                format_args!(
                    r#"<div style="background:{bg};padding:24px;display:inline-block;margin:8px"><img class="logo" data-logo="{variant}-{k}" data-variant="{variant}" src="{}" style="height:96px;max-width:560px;object-fit:contain"></div>"#,
                    svg_data_url(&logo.svg, fill)?
                ),
            );
        }
    }
    let page = work.join(format!("enrol-{}.html", brand.id));
    std::fs::write(&page, format!(r#"<!doctype html><html><body style="margin:0;background:#fff">{cells}</body></html>"#)).map_err(|e| PagesError::io(&page, e))?;
    browser.set_viewport(1280, 1600, false)?;
    browser.load_file(&page)?;
    let read: DomRead = serde_json::from_value(browser.eval(BOXES_JS)?).map_err(|e| PagesError::Invalid(format!("reading the enrolment boxes: {e}")))?;
    let png = browser.screenshot_png()?;
    let _ = std::fs::remove_file(&page);
    let img = image::load_from_memory(&png).map_err(|e| PagesError::Invalid(format!("Chromium's screenshot is not a PNG: {e}")))?.to_rgb8();
    let mut n = 0;
    for b in &read.boxes {
        let [x0, y0, x1, y1] = b.bbox;
        let (x0, y0) = ((x0 - 8.0).max(0.0) as u32, (y0 - 8.0).max(0.0) as u32);
        let (x1, y1) = (((x1 + 8.0) as u32).min(img.width()), ((y1 + 8.0) as u32).min(img.height()));
        if x1 <= x0 + 4 || y1 <= y0 + 4 {
            continue;
        }
        let crop = image::imageops::crop_imm(&img, x0, y0, x1 - x0, y1 - y0).to_image();
        let file = dir.join(format!("{}.png", b.brand));
        crop.save(&file).map_err(|e| PagesError::Invalid(format!("{}: {e}", file.display())))?;
        n += 1;
    }
    Ok(n)
}
