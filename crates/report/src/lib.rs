//! Plots and tables for Proxima's reports: evaluation (PR/ROC curves, score histograms,
//! PCA maps), training (loss and metric curves) and benchmarks (bars with error bars).
//!
//! Why a separate, torch-free crate: the same few chart kinds are needed by the `proxima`
//! command, by training runs and by benchmark summaries; keeping them here gives every report
//! one look, one set of tested edge cases, and no libtorch link for tools that only plot.
//!
//! Design choices:
//! * Every chart is written twice, as `<name>.png` (for a quick look, and for markdown
//!   viewers) and `<name>.svg` (for papers and zooming), from the same drawing code.
//! * Files are written atomically (temporary file in the same folder, then rename), so a
//!   crash or a concurrent reader never sees half a plot; every error names the path.
//! * Text is rendered with a bundled DejaVu Sans (see `NOTICE`) through plotters'
//!   `ab_glyph` backend: no fontconfig/freetype is needed, and plots look the same on every
//!   machine. PNGs are encoded with the `png` crate directly, so plotters does not pull a
//!   second version of `image`.
//! * [`draw_label`] writes text onto an existing RGB image (brand names beside the boxes of
//!   `proxima find --draw`), with the same bundled font.
//! * Inputs are validated (non-finite values, empty series, mismatched lengths) and
//!   rejected with a [`ReportError`] instead of producing an empty or broken picture.

mod chart;
mod error;
mod label;
mod output;
mod table;

pub use chart::{Bar, BarChart, Corner, Distribution, HistogramOverlay, LineChart, Scatter, Series, bar_chart, decimate, histogram_overlay, line_chart, scatter};
pub use error::{ReportError, Result};
pub use label::draw_label;
pub use output::{PlotFiles, write_atomic};
pub use table::markdown_table;
