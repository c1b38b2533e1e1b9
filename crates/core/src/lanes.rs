//! Lane-wise building blocks of the fused row passes ([`crate::fused`]).
//!
//! Why: the build targets baseline x86-64 (SSE2, 4 lanes, no FMA), and float max and sum
//! reductions never vectorise when written as one running value (IEEE order). The passes are
//! therefore written over fixed-size chunks ([`LANES`] independent accumulators, no bounds
//! checks inside a chunk), and each pass body is `#[inline(always)]` and instantiated twice by
//! [`avx2_dispatch!`]: as it is, and inside a `#[target_feature(enable = "avx2,fma")]` wrapper
//! chosen at run time.

/// Independent accumulators (and elements per chunk) of a row pass.
pub(crate) const LANES: usize = 16;

/// The label a row pass gives the row's own column: neither a positive nor a negative.
pub(crate) const NO_LABEL: u32 = u32::MAX;

/// The label of the padding lanes of a partial chunk (see [`chunks`]).
pub(crate) const PAD: u32 = u32::MAX - 1;

/// Whether `l` is a real label (not [`NO_LABEL`] or [`PAD`]). Two equality tests, not
/// `l < PAD`: AVX2 has no unsigned compare, and the compiler widens one to 64-bit lanes.
#[inline(always)]
pub(crate) fn is_label(l: u32) -> bool {
    (l != NO_LABEL) & (l != PAD)
}

/// Whether the AVX2 + FMA builds of the passes can run on this CPU.
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `fn $name(args) -> ret` that runs `$imp` (an `#[inline(always)]` function with the
/// same arguments) compiled for AVX2 + FMA when the CPU has them, else as it is.
macro_rules! avx2_dispatch {
    ($vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty => $imp:ident) => {
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) -> $ret {
                    $imp($($arg),*)
                }
                if $crate::lanes::has_avx2_fma() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $imp($($arg),*)
        }
    };
}
pub(crate) use avx2_dispatch;

/// `e^x`, 0 below −87 (Cephes `expf`'s polynomial, relative error about 2e-7), without calls or
/// branches so that a pass using it vectorises.
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    // Adding 1.5·2²³ rounds to an integer k (ties to even) held in the low mantissa bits, so
    // k is read back as an integer difference of bit patterns (an `as i32` cast would add a
    // scalar saturation check per lane).
    const SHIFT: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let shifted = xc * std::f32::consts::LOG2_E + SHIFT;
    let k = shifted - SHIFT;
    let r = xc - k * 0.693_359_4 - k * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 0.5;
    let y = p * r * r + r + 1.0;
    let k_bits = shifted.to_bits().wrapping_sub(SHIFT.to_bits());
    let scale = f32::from_bits(k_bits.wrapping_add(127) << 23);
    if x < -87.0 { 0.0 } else { y * scale }
}

/// Calls `f` on consecutive chunks of `row`, `labels` and `out` as [`LANES`]-element arrays;
/// the last, partial chunk is padded (value 0, label [`PAD`]) and only its real elements
/// are written back to `out`.
#[inline(always)]
pub(crate) fn chunks(row: &[f32], labels: &[u32], out: &mut [f32], mut f: impl FnMut(&[f32; LANES], &[u32; LANES], &mut [f32; LANES])) {
    let n = row.len();
    assert!(labels.len() == n && out.len() == n, "chunks: lengths differ");
    let full = n / LANES * LANES;
    for ((r, l), o) in row[..full].chunks_exact(LANES).zip(labels[..full].chunks_exact(LANES)).zip(out[..full].chunks_exact_mut(LANES)) {
        f(r.try_into().expect("LANES"), l.try_into().expect("LANES"), o.try_into().expect("LANES"));
    }
    if full < n {
        let rest = n - full;
        let (mut r, mut l, mut o) = ([0f32; LANES], [PAD; LANES], [0f32; LANES]);
        r[..rest].copy_from_slice(&row[full..]);
        l[..rest].copy_from_slice(&labels[full..]);
        o[..rest].copy_from_slice(&out[full..]);
        f(&r, &l, &mut o);
        out[full..].copy_from_slice(&o[..rest]);
    }
}

/// Calls `f(j0, values, labels)` on consecutive chunks of `row` and `labels` starting at
/// index `j0`, as [`LANES`]-element arrays; the last, partial chunk is padded as in [`chunks`].
#[inline(always)]
pub(crate) fn chunks_indexed(row: &[f32], labels: &[u32], mut f: impl FnMut(usize, &[f32; LANES], &[u32; LANES])) {
    let n = row.len();
    assert!(labels.len() == n, "chunks_indexed: lengths differ");
    let full = n / LANES * LANES;
    for (c, (r, l)) in row[..full].chunks_exact(LANES).zip(labels[..full].chunks_exact(LANES)).enumerate() {
        f(c * LANES, r.try_into().expect("LANES"), l.try_into().expect("LANES"));
    }
    if full < n {
        let rest = n - full;
        let (mut r, mut l) = ([0f32; LANES], [PAD; LANES]);
        r[..rest].copy_from_slice(&row[full..]);
        l[..rest].copy_from_slice(&labels[full..]);
        f(full, &r, &l);
    }
}

/// `a` where `a > b`, else `b` (maps to one max instruction; not `f32::max`, whose NaN rule
/// costs extra instructions).
#[inline(always)]
pub(crate) fn max(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// Largest lane of a lane-wise max.
pub(crate) fn lanes_max(acc: &[f32; LANES]) -> f32 {
    acc.iter().fold(f32::NEG_INFINITY, |m, &v| max(v, m))
}

/// Sum of a lane-wise sum, in f64.
pub(crate) fn lanes_sum(acc: &[f32; LANES]) -> f64 {
    acc.iter().map(|&v| v as f64).sum()
}

/// The labels as dense `u32` ids (in order of first appearance) and each id's number of rows:
/// passes compare 32-bit ids, twice the lanes of `i64`s.
pub(crate) fn dense_labels(labels: &[i64]) -> (Vec<u32>, Vec<usize>) {
    let mut ids = std::collections::HashMap::<i64, u32>::new();
    let mut counts = Vec::new();
    let dense = labels
        .iter()
        .map(|l| {
            let id = *ids.entry(*l).or_insert_with(|| {
                counts.push(0);
                (counts.len() - 1) as u32
            });
            counts[id as usize] += 1;
            id
        })
        .collect();
    (dense, counts)
}

/// A zeroed `f32` buffer for the B×B matrices of the fused passes, taken from and given back to
/// a small process-wide pool.
///
/// Why: a B = 1024 matrix is 4 MiB, above glibc's mmap threshold, so each fresh one is mapped,
/// faulted in page by page and unmapped again: measured, about a sixth of a fused loss call.
pub(crate) struct Scratch(Vec<f32>);

/// Buffers kept for reuse (at most [`POOL_KEEP`]; only buffers of at least [`POOL_MIN`] values).
static POOL: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());
const POOL_KEEP: usize = 6;
const POOL_MIN: usize = 1 << 16;

impl Scratch {
    /// `len` zeros.
    pub(crate) fn zeroed(len: usize) -> Scratch {
        let reused = if len >= POOL_MIN {
            let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
            // The smallest buffer that fits.
            let best = pool.iter().enumerate().filter(|(_, v)| v.capacity() >= len).min_by_key(|(_, v)| v.capacity()).map(|(i, _)| i);
            best.map(|i| pool.swap_remove(i))
        } else {
            None
        };
        let mut v = reused.unwrap_or_default();
        v.clear();
        v.resize(len, 0.0);
        Scratch(v)
    }
}

impl std::ops::Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.0.capacity() < POOL_MIN {
            return;
        }
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_KEEP {
            pool.push(std::mem::take(&mut self.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_exp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let rel = ((fast_exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(fast_exp(-100.0), 0.0);
        assert_eq!(fast_exp(0.0), 1.0);
        assert!(fast_exp(f32::NAN).is_nan());
    }

    #[test]
    fn chunks_cover_every_element_once_with_padding() {
        for n in [0usize, 1, 15, 16, 17, 40] {
            let row: Vec<f32> = (0..n).map(|v| v as f32).collect();
            let labels: Vec<u32> = (0..n as u32).collect();
            let mut out = vec![0f32; n];
            let mut seen = 0;
            chunks(&row, &labels, &mut out, |r, l, o| {
                for k in 0..LANES {
                    if l[k] != PAD {
                        seen += 1;
                        o[k] = r[k] * 2.0;
                    }
                }
            });
            assert_eq!(seen, n);
            assert!(out.iter().enumerate().all(|(j, &v)| v == 2.0 * j as f32));
        }
    }

    #[test]
    fn scratch_is_zeroed_when_reused() {
        let len = POOL_MIN + 3;
        let mut a = Scratch::zeroed(len);
        a.iter_mut().for_each(|v| *v = 7.0);
        drop(a);
        let b = Scratch::zeroed(len - 1);
        assert_eq!(b.len(), len - 1);
        assert!(b.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn dense_labels_number_by_first_appearance() {
        let (ids, counts) = dense_labels(&[7, -1, 7, 3, -1, 7]);
        assert_eq!(ids, vec![0, 1, 0, 2, 1, 0]);
        assert_eq!(counts, vec![3, 2, 1]);
    }
}
