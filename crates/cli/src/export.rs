//! `proxima export`: a trained model (and optionally its localiser) as TorchScript or ONNX.
//!
//! Why: teams serve embeddings from PyTorch, ONNX Runtime, browsers and phones; a model directory
//! only Proxima reads locks them in. TorchScript is traced here by libtorch
//! (`proxima_models::export`); ONNX is converted from that trace by PyTorch's exporter in a Python
//! step (`scripts/export_onnx.py`, compiled into this binary), run with the interpreter of
//! `scripts/setup-export-venv.sh`. Every file is checked against the original before it is
//! written, and written atomically: on any error nothing is left at `--out` or beside it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use proxima_models::export as mexport;

/// The Python step of ONNX export (see its docstring).
const EXPORT_ONNX_PY: &str = include_str!("../../../scripts/export_onnx.py");

/// Output formats of `proxima export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// TorchScript (`torch.jit.load`, `torch::jit::load`), traced by libtorch.
    Torchscript,
    /// ONNX (opset 17, dynamic batch axis), converted from the TorchScript trace by PyTorch.
    Onnx,
}

/// Arguments of `proxima export`.
#[derive(Args)]
#[command(after_help = "The exported model takes images float32 [N, 3, S, S], RGB in [0, 1], each whole image squashed to S x S \
(bilinear); the normalisation is inside. It returns the embeddings [N, E]. The file records the model's fingerprint \
(TorchScript extra file / ONNX metadata `proxima.json`), so galleries built with the original accept it.\n\n\
ONNX needs Python with torch, onnx and onnxruntime: scripts/setup-export-venv.sh makes .export-venv/, found \
automatically in the current folder or beside the build; else pass --python or set PROXIMA_PYTHON.")]
pub struct ExportArgs {
    /// Model directory (or the run directory holding it).
    #[arg(long)]
    model: PathBuf,
    /// `torchscript` or `onnx`.
    #[arg(long, value_enum)]
    format: Format,
    /// Output file (e.g. model.pt, model.onnx); its folder must exist.
    #[arg(long)]
    out: PathBuf,
    /// Square input side; default: the size the model was trained at. Another size is another
    /// embedding space: its fingerprint becomes `<fingerprint>@<size>`.
    #[arg(long)]
    image_size: Option<u32>,
    /// Also export this localiser directory (the network of `find`) beside `--out`, as
    /// `<out stem>.localiser.<ext>`.
    #[arg(long)]
    with_localiser: Option<PathBuf>,
    /// Python for the ONNX step (default: $PROXIMA_PYTHON, then .export-venv/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
}

/// Runs `proxima export`.
pub fn run(args: ExportArgs) -> Result<ExitCode> {
    let python = match args.format {
        Format::Onnx => Some(find_python(args.python.as_deref())?),
        Format::Torchscript => None,
    };
    let model = proxima_models::model_dir::load_model_dir(&args.model, tch::Device::Cpu).with_context(|| format!("loading the model {}", args.model.display()))?;
    let size = args.image_size.unwrap_or(model.image_size());
    mexport::check_image_size(size)?;
    let localiser_out = args.with_localiser.as_ref().map(|_| sibling(&args.out, "localiser"));
    let localiser = match &args.with_localiser {
        Some(dir) => Some(proxima_detect::load_localiser(dir, tch::Device::Cpu).with_context(|| format!("loading the localiser {}", dir.display()))?),
        None => None,
    };
    let card = match python.as_deref() {
        None => mexport::save_torchscript(&model, size, &args.out).with_context(|| format!("exporting to {}", args.out.display()))?,
        Some(py) => {
            let tmp = mexport::temp_path(&args.out)?.with_extension("pt");
            let _cleanup = Cleanup(vec![tmp.clone()]);
            let card = mexport::save_torchscript(&model, size, &tmp).with_context(|| format!("tracing the model into {}", tmp.display()))?;
            onnx_from_torchscript(py, &tmp, size, "embeddings", &args.out)?;
            card
        }
    };
    println!(
        "exported {} ({}, {} dimensions, input {}x{}) to {} — fingerprint {}",
        args.model.display(),
        card.backbone,
        card.embedding_size,
        size,
        size,
        args.out.display(),
        card.model_fingerprint
    );
    if let (Some((loc, loc_card)), Some(out)) = (localiser, localiser_out) {
        let result = match python.as_deref() {
            None => proxima_detect::export::save_localiser_torchscript(&loc, &loc_card, &out).map(|_| ()).map_err(anyhow::Error::from),
            Some(py) => {
                let tmp = mexport::temp_path(&out)?.with_extension("pt");
                let _cleanup = Cleanup(vec![tmp.clone()]);
                proxima_detect::export::save_localiser_torchscript(&loc, &loc_card, &tmp)
                    .map_err(anyhow::Error::from)
                    .and_then(|c| onnx_from_torchscript(py, &tmp, c.image_size, "maps", &out))
            }
        };
        if let Err(e) = result {
            // Nothing partial: the model file goes too.
            let _ = std::fs::remove_file(&args.out);
            return Err(e.context(format!("exporting the localiser to {}", out.display())));
        }
        println!("exported the localiser {} to {}", args.with_localiser.as_ref().expect("set").display(), out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `dir/stem.<tag>.<ext>` beside `out`.
fn sibling(out: &Path, tag: &str) -> PathBuf {
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let name = match out.extension().and_then(|e| e.to_str()) {
        Some(ext) => format!("{stem}.{tag}.{ext}"),
        None => format!("{stem}.{tag}"),
    };
    out.with_file_name(name)
}

/// Removes its paths when dropped (temporary files of an export, success or not).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The Python for the ONNX step: `--python`, `$PROXIMA_PYTHON`, then `.export-venv/bin/python` in
/// the current folder or above the running binary (`target/release/proxima` → the checkout).
fn find_python(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("PROXIMA_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = vec![PathBuf::from(".export-venv/bin/python")];
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).take(4).map(|d| d.join(".export-venv/bin/python")));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        anyhow::anyhow!(
            "ONNX export needs Python with torch, onnx and onnxruntime: run scripts/setup-export-venv.sh (makes .export-venv/), \
             or pass --python PATH / set PROXIMA_PYTHON"
        )
    })
}

/// Runs the Python step: TorchScript `ts` → ONNX at `out` (via a temporary file beside it, renamed
/// once onnxruntime agrees with the TorchScript module).
fn onnx_from_torchscript(python: &Path, ts: &Path, size: u32, output_name: &str, out: &Path) -> Result<()> {
    let tmp = mexport::temp_path(out)?.with_extension("onnx");
    let script = mexport::temp_path(out)?.with_extension("py");
    let _cleanup = Cleanup(vec![tmp.clone(), script.clone()]);
    std::fs::write(&script, EXPORT_ONNX_PY).with_context(|| format!("writing {}", script.display()))?;
    let output = Command::new(python)
        .arg(&script)
        .arg("--torchscript")
        .arg(ts)
        .arg("--out")
        .arg(&tmp)
        .arg("--size")
        .arg(size.to_string())
        .arg("--output-name")
        .arg(output_name)
        .output()
        .with_context(|| format!("running {} for the ONNX step", python.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("the ONNX step failed ({}):\n{}", output.status, tail.join("\n"));
    }
    std::fs::rename(&tmp, out).with_context(|| format!("moving the ONNX file to {}", out.display()))?;
    let report = String::from_utf8_lossy(&output.stdout);
    if let Some(line) = report.lines().last() {
        println!("onnx check: {line}");
    }
    Ok(())
}
