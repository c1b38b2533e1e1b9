//! Image preprocessing for models exported by `proxima export`: the very decoder and resizer that
//! `proxima embed` uses (`proxima-data`), so an ONNX model run from Python sees the same pixels.

use std::path::PathBuf;

use numpy::ndarray::Array4;
use numpy::{IntoPyArray, PyArray4};
use proxima_data::{DataError, DecodeOptions, Normalize, Pipeline, PipelineConfig};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

fn data_err(e: DataError) -> PyErr {
    match e {
        DataError::Io { .. } => PyOSError::new_err(e.to_string()),
        other => PyValueError::new_err(other.to_string()),
    }
}

/// Decodes image files and resizes each whole image to `size` × `size` (bilinear, alpha onto
/// white): float32 `[N, 3, size, size]`, RGB in [0, 1] — the input of an exported model.
#[pyfunction]
#[pyo3(signature = (paths, size))]
fn load_images<'py>(py: Python<'py>, paths: Vec<PathBuf>, size: u32) -> PyResult<Bound<'py, PyArray4<f32>>> {
    if !(1..=4096).contains(&size) {
        return Err(PyValueError::new_err(format!("size: must be between 1 and 4096 pixels, got {size}")));
    }
    let n = paths.len();
    let s = size as usize;
    let buf = py
        .detach(|| -> Result<Vec<f32>, DataError> {
            let mut cfg = PipelineConfig::eval(size);
            cfg.normalize = Normalize { mean: [0.0; 3], std: [1.0; 3] };
            let pipe = Pipeline::new(cfg, 0)?;
            let opts = DecodeOptions::default();
            let per = 3 * s * s;
            let mut buf = vec![0f32; per * n];
            for (i, p) in paths.iter().enumerate() {
                let img = proxima_data::decode_file(p, &opts)?;
                pipe.run_into(&img, 0, i as u64, [size, size], &mut buf[i * per..(i + 1) * per]);
            }
            Ok(buf)
        })
        .map_err(data_err)?;
    let arr = Array4::from_shape_vec((n, 3, s, s), buf).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(arr.into_pyarray(py))
}

/// Adds this module's functions to the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(load_images, m)?)
}
