//! The chart kinds: lines, overlaid histograms, class-coloured scatter, bars with error bars.
//!
//! Why these four: they cover every figure Proxima reports — PR/ROC and learning curves
//! (lines), genuine vs impostor score distributions (histograms), PCA maps of embeddings
//! (scatter), and benchmark timings with spread (bars). Each spec is a plain struct with
//! public fields so callers build it without a builder API; axis ranges are computed from
//! the data unless given.

use std::ops::Range;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Result, invalid};
use crate::output::{Draw, FONT_FAMILY, PlotFiles, save};

/// Default picture size in pixels.
const DEFAULT_SIZE: (u32, u32) = (900, 600);
/// Most classes given their own legend entry in a scatter plot.
const SCATTER_LEGEND_MAX: usize = 12;

/// Where a legend goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Corner {
    /// Top left.
    UpperLeft,
    /// Top right.
    #[default]
    UpperRight,
    /// Bottom left.
    LowerLeft,
    /// Bottom right.
    LowerRight,
}

impl Corner {
    fn position(self) -> SeriesLabelPosition {
        match self {
            Corner::UpperLeft => SeriesLabelPosition::UpperLeft,
            Corner::UpperRight => SeriesLabelPosition::UpperRight,
            Corner::LowerLeft => SeriesLabelPosition::LowerLeft,
            Corner::LowerRight => SeriesLabelPosition::LowerRight,
        }
    }
}

/// One named line of a [`LineChart`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// Several series on common axes (PR curve, ROC curve, learning curves).
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// Caption above the chart.
    pub title: String,
    /// Horizontal axis description.
    pub x_label: String,
    /// Vertical axis description.
    pub y_label: String,
    /// The lines; at least one must have a point.
    pub series: Vec<Series>,
    /// Horizontal range; from the data when `None`.
    pub x_range: Option<Range<f64>>,
    /// Vertical range; from the data when `None`.
    pub y_range: Option<Range<f64>>,
    /// Legend position.
    pub legend: Corner,
    /// Picture size in pixels.
    pub size: (u32, u32),
}

impl Default for LineChart {
    fn default() -> Self {
        Self {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            series: Vec::new(),
            x_range: None,
            y_range: None,
            legend: Corner::default(),
            size: DEFAULT_SIZE,
        }
    }
}

/// One named sample of a [`HistogramOverlay`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Distribution {
    /// Legend text.
    pub name: String,
    /// The sample.
    pub values: Vec<f64>,
}

/// Density histograms of several samples over shared bins (e.g. genuine vs impostor scores).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramOverlay {
    /// Caption above the chart.
    pub title: String,
    /// Horizontal axis description (the value).
    pub x_label: String,
    /// The samples; each must be non-empty.
    pub distributions: Vec<Distribution>,
    /// Number of bins spanning the smallest to the largest value of all samples.
    pub bins: usize,
    /// Legend position.
    pub legend: Corner,
    /// Picture size in pixels.
    pub size: (u32, u32),
}

impl Default for HistogramOverlay {
    fn default() -> Self {
        Self { title: String::new(), x_label: String::new(), distributions: Vec::new(), bins: 50, legend: Corner::default(), size: DEFAULT_SIZE }
    }
}

/// 2-D points coloured by class (e.g. a PCA map of embeddings).
#[derive(Debug, Clone, PartialEq)]
pub struct Scatter {
    /// Caption above the chart.
    pub title: String,
    /// Horizontal axis description.
    pub x_label: String,
    /// Vertical axis description.
    pub y_label: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
    /// Class of each point, an index into `class_names`.
    pub classes: Vec<usize>,
    /// Class names; a legend is drawn when there are at most 12.
    pub class_names: Vec<String>,
    /// Picture size in pixels.
    pub size: (u32, u32),
}

impl Default for Scatter {
    fn default() -> Self {
        Self {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            points: Vec::new(),
            classes: Vec::new(),
            class_names: Vec::new(),
            size: DEFAULT_SIZE,
        }
    }
}

/// One bar of a [`BarChart`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bar {
    /// Category label under the bar.
    pub label: String,
    /// Bar height.
    pub value: f64,
    /// Half-width of the error bar (e.g. a standard deviation); none drawn when `None`.
    pub error: Option<f64>,
}

/// Bars with optional symmetric error bars (e.g. benchmark timings).
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    /// Caption above the chart.
    pub title: String,
    /// Horizontal axis description.
    pub x_label: String,
    /// Vertical axis description.
    pub y_label: String,
    /// The bars, left to right.
    pub bars: Vec<Bar>,
    /// Picture size in pixels.
    pub size: (u32, u32),
}

impl Default for BarChart {
    fn default() -> Self {
        Self { title: String::new(), x_label: String::new(), y_label: String::new(), bars: Vec::new(), size: DEFAULT_SIZE }
    }
}

/// Write a line chart to `<dir>/<name>.png` and `.svg`.
pub fn line_chart(dir: &Path, name: &str, chart: &LineChart) -> Result<PlotFiles> {
    let what = format!("line chart {name:?}");
    let mut n = 0;
    for s in &chart.series {
        check_points(&format!("{what}, series {:?}", s.name), &s.points)?;
        n += s.points.len();
    }
    if n == 0 {
        return Err(invalid(what, "no series has a point"));
    }
    let all = || chart.series.iter().flat_map(|s| s.points.iter().copied());
    let x = resolve_range(&what, "x_range", chart.x_range.clone(), all().map(|p| p.0))?;
    let y = resolve_range(&what, "y_range", chart.y_range.clone(), all().map(|p| p.1))?;
    save(dir, name, &LinePlot { spec: chart, x, y })
}

/// Write density histograms of the distributions to `<dir>/<name>.png` and `.svg`.
pub fn histogram_overlay(dir: &Path, name: &str, chart: &HistogramOverlay) -> Result<PlotFiles> {
    let what = format!("histogram {name:?}");
    if chart.distributions.is_empty() {
        return Err(invalid(what, "no distribution given"));
    }
    if chart.bins == 0 || chart.bins > 10_000 {
        return Err(invalid(what, format!("bins = {} must be in 1..=10000", chart.bins)));
    }
    for d in &chart.distributions {
        if d.values.is_empty() {
            return Err(invalid(&what, format!("distribution {:?} is empty", d.name)));
        }
        if let Some(i) = d.values.iter().position(|v| !v.is_finite()) {
            return Err(invalid(&what, format!("distribution {:?} has non-finite value {} at index {i}", d.name, d.values[i])));
        }
    }
    let all = chart.distributions.iter().flat_map(|d| d.values.iter().copied());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo == hi { (lo - 0.5, hi + 0.5) } else { (lo, hi) };
    let densities: Vec<Vec<f64>> = chart.distributions.iter().map(|d| density(&d.values, lo, hi, chart.bins)).collect();
    let top = densities.iter().flatten().copied().fold(0.0, f64::max);
    save(dir, name, &HistPlot { spec: chart, lo, hi, densities, top: if top > 0.0 { top * 1.08 } else { 1.0 } })
}

/// Write a class-coloured scatter plot to `<dir>/<name>.png` and `.svg`.
pub fn scatter(dir: &Path, name: &str, chart: &Scatter) -> Result<PlotFiles> {
    let what = format!("scatter {name:?}");
    check_points(&what, &chart.points)?;
    if chart.points.is_empty() {
        return Err(invalid(what, "no points"));
    }
    if chart.classes.len() != chart.points.len() {
        return Err(invalid(what, format!("{} points but {} class ids", chart.points.len(), chart.classes.len())));
    }
    if let Some(i) = chart.classes.iter().position(|&c| c >= chart.class_names.len()) {
        return Err(invalid(what, format!("point {i} has class {} but only {} class names are given", chart.classes[i], chart.class_names.len())));
    }
    let x = resolve_range(&what, "x", None, chart.points.iter().map(|p| p.0))?;
    let y = resolve_range(&what, "y", None, chart.points.iter().map(|p| p.1))?;
    save(dir, name, &ScatterPlot { spec: chart, x, y })
}

/// Write a bar chart with error bars to `<dir>/<name>.png` and `.svg`.
pub fn bar_chart(dir: &Path, name: &str, chart: &BarChart) -> Result<PlotFiles> {
    let what = format!("bar chart {name:?}");
    if chart.bars.is_empty() {
        return Err(invalid(what, "no bars"));
    }
    for b in &chart.bars {
        if !b.value.is_finite() {
            return Err(invalid(&what, format!("bar {:?} has non-finite value {}", b.label, b.value)));
        }
        if let Some(e) = b.error
            && !(e.is_finite() && e >= 0.0)
        {
            return Err(invalid(&what, format!("bar {:?} has error {e}; it must be finite and >= 0", b.label)));
        }
    }
    let ends = chart.bars.iter().flat_map(|b| {
        let e = b.error.unwrap_or(0.0);
        [b.value - e, b.value + e]
    });
    let (lo, hi) = ends.fold((0.0f64, 0.0f64), |(a, c), v| (a.min(v), c.max(v)));
    let pad = if lo == hi { 1.0 } else { 0.08 * (hi - lo) };
    let (lo, hi) = (if lo < 0.0 { lo - pad } else { 0.0 }, if hi > 0.0 || lo == hi { hi + pad } else { 0.0 });
    save(dir, name, &BarPlot { spec: chart, y: lo..hi })
}

/// Thin a curve to at most `max_points` points, evenly spaced by index, keeping both ends.
///
/// For plotting long curves (a ROC of millions of pairs) without multi-megabyte SVGs.
pub fn decimate(points: &[(f64, f64)], max_points: usize) -> Vec<(f64, f64)> {
    let n = points.len();
    if n <= max_points.max(2) {
        return points.to_vec();
    }
    let m = max_points.max(2);
    (0..m).map(|i| points[(i * (n - 1)) / (m - 1)]).collect()
}

fn check_points(what: &str, points: &[(f64, f64)]) -> Result<()> {
    if let Some(i) = points.iter().position(|p| !(p.0.is_finite() && p.1.is_finite())) {
        return Err(invalid(what, format!("point {i} = ({}, {}) is not finite", points[i].0, points[i].1)));
    }
    Ok(())
}

/// The given range (validated) or the data's, padded by 3% (or ±0.5 for a single value).
fn resolve_range(what: &str, axis: &str, given: Option<Range<f64>>, values: impl Iterator<Item = f64>) -> Result<Range<f64>> {
    if let Some(r) = given {
        if !(r.start.is_finite() && r.end.is_finite() && r.start < r.end) {
            return Err(invalid(what, format!("{axis} {}..{} must be finite and increasing", r.start, r.end)));
        }
        return Ok(r);
    }
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if lo == hi {
        return Ok(lo - 0.5..hi + 0.5);
    }
    let pad = 0.03 * (hi - lo);
    Ok(lo - pad..hi + pad)
}

/// Density (`count / (n · bin width)`) of `values` in `bins` equal bins over `[lo, hi]`.
fn density(values: &[f64], lo: f64, hi: f64, bins: usize) -> Vec<f64> {
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for &v in values {
        let b = (((v - lo) / width).floor() as isize).clamp(0, bins as isize - 1) as usize;
        counts[b] += 1;
    }
    let scale = 1.0 / (values.len() as f64 * width);
    counts.into_iter().map(|c| c as f64 * scale).collect()
}

/// Colour `i`: the ten "tab10" colours, then golden-ratio hues.
fn color(i: usize) -> RGBAColor {
    const TAB10: [(u8, u8, u8); 10] =
        [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)];
    match TAB10.get(i) {
        Some(&(r, g, b)) => RGBColor(r, g, b).to_rgba(),
        None => HSLColor((i as f64 * 0.618_033_988_75).fract(), 0.65, 0.45).to_rgba(),
    }
}

fn font(size: u32) -> (&'static str, u32) {
    (FONT_FAMILY, size)
}

type DrawResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

struct LinePlot<'a> {
    spec: &'a LineChart,
    x: Range<f64>,
    y: Range<f64>,
}

impl Draw for LinePlot<'_> {
    fn size(&self) -> (u32, u32) {
        self.spec.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let s = self.spec;
        let mut chart = ChartBuilder::on(root)
            .caption(&s.title, font(22))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(self.x.clone(), self.y.clone())?;
        chart.configure_mesh().x_desc(&s.x_label).y_desc(&s.y_label).label_style(font(14)).axis_desc_style(font(16)).light_line_style(RGBColor(235, 235, 235)).draw()?;
        for (i, series) in s.series.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(series.points.iter().copied(), c.stroke_width(2)))?
                .label(series.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        if s.series.iter().any(|x| !x.name.is_empty()) {
            chart.configure_series_labels().position(s.legend.position()).label_font(font(14)).background_style(WHITE.mix(0.85)).border_style(BLACK.mix(0.4)).draw()?;
        }
        Ok(())
    }
}

struct HistPlot<'a> {
    spec: &'a HistogramOverlay,
    lo: f64,
    hi: f64,
    densities: Vec<Vec<f64>>,
    top: f64,
}

impl Draw for HistPlot<'_> {
    fn size(&self) -> (u32, u32) {
        self.spec.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let s = self.spec;
        let width = (self.hi - self.lo) / s.bins as f64;
        let mut chart = ChartBuilder::on(root)
            .caption(&s.title, font(22))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(self.lo..self.hi, 0.0..self.top)?;
        chart.configure_mesh().x_desc(&s.x_label).y_desc("density").label_style(font(14)).axis_desc_style(font(16)).light_line_style(RGBColor(235, 235, 235)).draw()?;
        for (i, (d, dens)) in s.distributions.iter().zip(&self.densities).enumerate() {
            let c = color(i);
            chart.draw_series(dens.iter().enumerate().map(|(b, &v)| {
                let x0 = self.lo + b as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, v)], c.mix(0.3).filled())
            }))?;
            let mut step = Vec::with_capacity(2 * dens.len() + 2);
            step.push((self.lo, 0.0));
            for (b, &v) in dens.iter().enumerate() {
                let x0 = self.lo + b as f64 * width;
                step.push((x0, v));
                step.push((x0 + width, v));
            }
            step.push((self.hi, 0.0));
            chart
                .draw_series(LineSeries::new(step, c.stroke_width(2)))?
                .label(format!("{} (n = {})", d.name, d.values.len()))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], c.mix(0.6).filled()));
        }
        chart.configure_series_labels().position(s.legend.position()).label_font(font(14)).background_style(WHITE.mix(0.85)).border_style(BLACK.mix(0.4)).draw()?;
        Ok(())
    }
}

struct ScatterPlot<'a> {
    spec: &'a Scatter,
    x: Range<f64>,
    y: Range<f64>,
}

impl Draw for ScatterPlot<'_> {
    fn size(&self) -> (u32, u32) {
        self.spec.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let s = self.spec;
        let mut chart = ChartBuilder::on(root)
            .caption(&s.title, font(22))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(self.x.clone(), self.y.clone())?;
        chart.configure_mesh().x_desc(&s.x_label).y_desc(&s.y_label).label_style(font(14)).axis_desc_style(font(16)).light_line_style(RGBColor(235, 235, 235)).draw()?;
        let legend = s.class_names.len() <= SCATTER_LEGEND_MAX;
        for (c, name) in s.class_names.iter().enumerate() {
            let col = color(c);
            let pts = s.points.iter().zip(&s.classes).filter(|(_, k)| **k == c).map(|(p, _)| *p);
            let ann = chart.draw_series(pts.map(|p| Circle::new(p, 3, col.mix(0.75).filled())))?;
            if legend {
                ann.label(name.as_str()).legend(move |(x, y)| Circle::new((x + 10, y), 4, col.filled()));
            }
        }
        if legend {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font(font(14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .draw()?;
        }
        Ok(())
    }
}

struct BarPlot<'a> {
    spec: &'a BarChart,
    y: Range<f64>,
}

impl Draw for BarPlot<'_> {
    fn size(&self) -> (u32, u32) {
        self.spec.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let s = self.spec;
        let n = s.bars.len() as u32;
        let labels = |v: &SegmentValue<u32>| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => s.bars.get(*i as usize).map_or(String::new(), |b| b.label.clone()),
            SegmentValue::Last => String::new(),
        };
        let mut chart = ChartBuilder::on(root)
            .caption(&s.title, font(22))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d((0u32..n).into_segmented(), self.y.clone())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(s.bars.len())
            .x_label_formatter(&labels)
            .x_desc(&s.x_label)
            .y_desc(&s.y_label)
            .label_style(font(14))
            .axis_desc_style(font(16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        chart.draw_series(s.bars.iter().enumerate().map(|(i, b)| {
            let i = i as u32;
            let mut r = Rectangle::new([(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), b.value)], color(0).filled());
            r.set_margin(0, 0, 12, 12);
            r
        }))?;
        chart.draw_series(s.bars.iter().enumerate().filter_map(|(i, b)| {
            b.error.map(|e| ErrorBar::new_vertical(SegmentValue::CenterOf(i as u32), b.value - e, b.value, b.value + e, BLACK.stroke_width(2), 14))
        }))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ReportError;

    fn decode_png(path: &Path) -> image::RgbImage {
        image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
    }

    fn svg(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    /// A picture is not blank when it has many non-white pixels of more than one colour.
    fn assert_drawn(img: &image::RgbImage) {
        let non_white = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        assert!(non_white > 1000, "only {non_white} non-white pixels");
    }

    #[test]
    fn line_chart_writes_png_and_svg_with_text() {
        let dir = tempfile::tempdir().unwrap();
        let chart = LineChart {
            title: "ROC <pairs>".into(),
            x_label: "false match rate".into(),
            y_label: "true match rate".into(),
            series: vec![
                Series { name: "model A".into(), points: vec![(0.0, 0.0), (0.1, 0.7), (1.0, 1.0)] },
                Series { name: "chance".into(), points: vec![(0.0, 0.0), (1.0, 1.0)] },
            ],
            x_range: Some(0.0..1.0),
            y_range: Some(0.0..1.0),
            legend: Corner::LowerRight,
            size: (640, 480),
        };
        let f = line_chart(dir.path(), "roc", &chart).unwrap();
        assert_eq!(f.png, dir.path().join("roc.png"));
        let img = decode_png(&f.png);
        assert_eq!(img.dimensions(), (640, 480));
        assert_drawn(&img);
        // The first series colour (tab10 blue) appears in the bitmap.
        assert!(img.pixels().any(|p| p.0 == [31, 119, 180]));
        let s = svg(&f.svg);
        assert!(s.starts_with("<svg"), "{}", &s[..50]);
        for text in ["ROC &lt;pairs&gt;", "false match rate", "true match rate", "model A", "chance"] {
            assert!(s.contains(text), "SVG lacks {text:?}");
        }
        // Only the two plot files, no temporary leftovers.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn line_chart_rejects_bad_input_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let bad = LineChart { series: vec![Series { name: "s".into(), points: vec![(0.0, f64::NAN)] }], ..Default::default() };
        let e = line_chart(dir.path(), "x", &bad).unwrap_err();
        assert!(e.to_string().contains("point 0"), "{e}");
        let empty = LineChart { series: vec![Series::default()], ..Default::default() };
        assert!(matches!(line_chart(dir.path(), "x", &empty), Err(ReportError::InvalidInput { .. })));
        let rev = LineChart { series: vec![Series { name: "s".into(), points: vec![(0.0, 1.0)] }], x_range: Some(1.0..0.0), ..Default::default() };
        assert!(line_chart(dir.path(), "x", &rev).unwrap_err().to_string().contains("x_range"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn unwritable_folder_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("occupied");
        std::fs::write(&file, b"x").unwrap();
        let chart = LineChart { series: vec![Series { name: "s".into(), points: vec![(0.0, 1.0), (1.0, 2.0)] }], ..Default::default() };
        let e = line_chart(&file, "c", &chart).unwrap_err();
        assert!(matches!(e, ReportError::Io { .. }), "{e}");
        assert!(e.to_string().contains("occupied"), "{e}");
    }

    #[test]
    fn histogram_overlay_draws_both_distributions() {
        let dir = tempfile::tempdir().unwrap();
        let chart = HistogramOverlay {
            title: "pair similarities".into(),
            x_label: "cosine similarity".into(),
            distributions: vec![
                Distribution { name: "positive".into(), values: (0..200).map(|i| 0.5 + i as f64 / 400.0).collect() },
                Distribution { name: "negative".into(), values: (0..300).map(|i| -0.2 + i as f64 / 600.0).collect() },
            ],
            bins: 30,
            ..Default::default()
        };
        let f = histogram_overlay(dir.path(), "scores", &chart).unwrap();
        let img = decode_png(&f.png);
        assert_eq!(img.dimensions(), DEFAULT_SIZE);
        assert_drawn(&img);
        let s = svg(&f.svg);
        for text in ["pair similarities", "cosine similarity", "density", "positive (n = 200)", "negative (n = 300)"] {
            assert!(s.contains(text), "SVG lacks {text:?}");
        }
        let empty = HistogramOverlay { distributions: vec![Distribution { name: "p".into(), values: vec![] }], ..Default::default() };
        assert!(histogram_overlay(dir.path(), "e", &empty).unwrap_err().to_string().contains("\"p\" is empty"));
    }

    #[test]
    fn density_integrates_to_one_and_clamps_the_top_edge() {
        let v = [0.0, 0.1, 0.5, 1.0, 1.0];
        let d = density(&v, 0.0, 1.0, 4);
        let width = 0.25;
        assert!((d.iter().sum::<f64>() * width - 1.0).abs() < 1e-12);
        // 0.0 and 0.1 in bin 0; 0.5 in bin 2; both 1.0 (the upper edge) in the last bin.
        let counts: Vec<f64> = d.iter().map(|x| x * 5.0 * width).collect();
        assert_eq!(counts, vec![2.0, 0.0, 1.0, 2.0]);
    }

    #[test]
    fn scatter_colours_classes_and_checks_ids() {
        let dir = tempfile::tempdir().unwrap();
        let points: Vec<(f64, f64)> = (0..60).map(|i| ((i % 3) as f64 * 5.0 + (i as f64 * 0.37).sin(), (i as f64 * 0.11).cos())).collect();
        let classes: Vec<usize> = (0..60).map(|i| i % 3).collect();
        let chart = Scatter {
            title: "PCA".into(),
            x_label: "PC 1".into(),
            y_label: "PC 2".into(),
            points: points.clone(),
            classes,
            class_names: vec!["nike".into(), "adidas".into(), "puma".into()],
            ..Default::default()
        };
        let f = scatter(dir.path(), "pca", &chart).unwrap();
        let img = decode_png(&f.png);
        assert_drawn(&img);
        let s = svg(&f.svg);
        for text in ["PCA", "PC 1", "PC 2", "nike", "adidas", "puma"] {
            assert!(s.contains(text), "SVG lacks {text:?}");
        }
        assert!(s.matches("<circle").count() >= 60);
        let bad = Scatter { classes: vec![0; 59], ..chart.clone() };
        assert!(scatter(dir.path(), "b", &bad).unwrap_err().to_string().contains("60 points but 59 class ids"));
        let bad = Scatter { classes: vec![3; 60], ..chart };
        assert!(scatter(dir.path(), "b", &bad).unwrap_err().to_string().contains("point 0 has class 3"));
    }

    #[test]
    fn bar_chart_with_error_bars() {
        let dir = tempfile::tempdir().unwrap();
        let chart = BarChart {
            title: "k-NN time".into(),
            x_label: "workload".into(),
            y_label: "seconds".into(),
            bars: vec![
                Bar { label: "N=10k".into(), value: 0.5, error: Some(0.05) },
                Bar { label: "N=50k".into(), value: 4.0, error: Some(0.3) },
                Bar { label: "N=200k".into(), value: 60.0, error: None },
            ],
            ..Default::default()
        };
        let f = bar_chart(dir.path(), "bench", &chart).unwrap();
        let img = decode_png(&f.png);
        assert_drawn(&img);
        assert!(img.pixels().any(|p| p.0 == [31, 119, 180]));
        let s = svg(&f.svg);
        for text in ["k-NN time", "seconds", "N=10k", "N=50k", "N=200k"] {
            assert!(s.contains(text), "SVG lacks {text:?}");
        }
        let bad = BarChart { bars: vec![Bar { label: "x".into(), value: 1.0, error: Some(-1.0) }], ..Default::default() };
        assert!(bar_chart(dir.path(), "b", &bad).unwrap_err().to_string().contains("error -1"));
    }

    #[test]
    fn decimate_keeps_ends_and_bounds_length() {
        let pts: Vec<(f64, f64)> = (0..10_001).map(|i| (i as f64, 0.0)).collect();
        let d = decimate(&pts, 100);
        assert_eq!(d.len(), 100);
        assert_eq!(d[0], pts[0]);
        assert_eq!(*d.last().unwrap(), pts[10_000]);
        assert!(d.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(decimate(&pts[..50], 100).len(), 50);
    }
}
