//! A Gloo process group over a c10d TCPStore rendezvous, and the training collectives on it.

use std::ffi::{CString, c_char, c_int, c_void};
use std::time::Duration;

use tch::{Device, Kind, Tensor};

use crate::env::WorldEnv;
use crate::error::{DistError, Result};

/// PyTorch DDP's default gradient bucket size (25 MiB).
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

use crate::ffi::{self, RawGroup};

/// Bytes of the error buffer every shim call may fill (a NUL-terminated message).
const ERR_LEN: usize = 2048;

fn message(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// How gradients are combined over the ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradientReduction {
    /// Each rank holds a part of the gradient (its own samples' contribution): add them.
    Sum,
    /// Each rank holds the whole gradient (e.g. of a loss's proxies, computed from the gathered
    /// batch on every rank): average them, which also keeps the ranks bit-identical.
    Mean,
}

/// Which engine carries the collectives of CUDA tensors (CPU tensors always use Gloo).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CudaCollectives {
    /// c10d's ProcessGroupNCCL, device to device (needs a CUDA build of proxima).
    Nccl,
    /// Gloo on host copies (works with any build, slower).
    HostStaged,
}

impl CudaCollectives {
    /// `PROXIMA_DIST_BACKEND` (`nccl` or `gloo`), else NCCL — PyTorch's default for CUDA.
    pub fn from_env() -> Result<CudaCollectives> {
        Self::parse(std::env::var("PROXIMA_DIST_BACKEND").ok().as_deref())
    }

    /// The choice named by a `PROXIMA_DIST_BACKEND` value (None: unset).
    pub fn parse(value: Option<&str>) -> Result<CudaCollectives> {
        match value.map(str::trim) {
            None | Some("") | Some("nccl") => Ok(CudaCollectives::Nccl),
            Some("gloo") => Ok(CudaCollectives::HostStaged),
            Some(other) => Err(DistError::Env { var: "PROXIMA_DIST_BACKEND", message: format!("'{other}' is neither 'nccl' nor 'gloo'") }),
        }
    }
}

/// One process's membership in a data-parallel job.
pub struct ProcessGroup {
    raw: *mut RawGroup,
    rank: usize,
    world_size: usize,
    nccl: bool,
}

// SAFETY: c10d backends may be used from any thread; this handle issues one collective at a time
// (&self methods are called from the training thread only, and the C++ side queues work
// internally), and the pointer is owned: nothing else frees it.
unsafe impl Send for ProcessGroup {}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `proxima_dist_new` (never null: `connect_with` refuses null), is
        // owned by this handle alone and freed exactly once, here.
        unsafe { ffi::proxima_dist_free(self.raw) }
    }
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProcessGroup(rank {} of {})", self.rank, self.world_size)
    }
}

fn ptr(t: &Tensor) -> *mut c_void {
    t.as_ptr() as *mut c_void
}

impl ProcessGroup {
    /// Joins the job described by `env`: rank 0 hosts the TCPStore on `MASTER_ADDR:MASTER_PORT`
    /// (unless torchrun's agent already does), every rank connects, and a Gloo group is formed.
    /// Blocks until all `world_size` ranks have joined or `timeout` passes.
    pub fn connect(env: &WorldEnv, timeout: Duration) -> Result<ProcessGroup> {
        Self::connect_with(env, timeout, CudaCollectives::HostStaged)
    }

    /// [`ProcessGroup::connect`], with CUDA tensors carried as `cuda` says.
    pub fn connect_with(env: &WorldEnv, timeout: Duration, cuda: CudaCollectives) -> Result<ProcessGroup> {
        let addr = format!("{}:{}", env.master_addr, env.master_port);
        let connect_err = |message: String| DistError::Connect { addr: addr.clone(), rank: env.rank, world_size: env.world_size, message };
        let host = CString::new(env.master_addr.as_str()).map_err(|_| connect_err("MASTER_ADDR contains a NUL byte".into()))?;
        let is_server = env.rank == 0 && !env.agent_store;
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let mut err = [0 as c_char; ERR_LEN];
        // SAFETY: `host` is a NUL-terminated string that outlives the call; `err` is a writable
        // buffer of ERR_LEN bytes that the shim NUL-terminates; the shim catches every C++
        // exception and reports it through `err` and a null result.
        let raw = unsafe {
            ffi::proxima_dist_new(
                host.as_ptr(),
                c_int::from(env.master_port),
                env.rank as c_int,
                env.world_size as c_int,
                c_int::from(is_server),
                c_int::from(cuda == CudaCollectives::Nccl),
                timeout_ms,
                err.as_mut_ptr(),
                ERR_LEN,
            )
        };
        if raw.is_null() {
            return Err(connect_err(message(&err)));
        }
        // SAFETY: `raw` is the non-null group just created.
        let nccl = unsafe { ffi::proxima_dist_has_nccl(raw) } != 0;
        Ok(ProcessGroup { raw, rank: env.rank, world_size: env.world_size, nccl })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// Number of processes.
    pub fn world_size(&self) -> usize {
        self.world_size
    }
    /// True when CUDA tensors go to NCCL (else Gloo on host copies).
    pub fn has_nccl(&self) -> bool {
        self.nccl
    }

    /// A contiguous tensor the engine for `t` can take (a host copy unless `t` is CPU, or CUDA
    /// with NCCL), and whether results must be copied back into `t`.
    fn stage(&self, t: &Tensor) -> (Tensor, bool) {
        let native = t.device() == Device::Cpu || (self.nccl && t.device().is_cuda());
        match (native, t.is_contiguous()) {
            (true, true) => (t.shallow_clone(), false),
            (true, false) => (t.detach().contiguous(), true),
            (false, _) => (t.detach().to_device(Device::Cpu).contiguous(), true),
        }
    }

    /// True on rank 0 (the one that writes checkpoints and logs).
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    fn call(&self, op: &'static str, f: impl FnOnce(*mut c_char) -> c_int) -> Result<()> {
        let mut err = [0 as c_char; ERR_LEN];
        if f(err.as_mut_ptr()) != 0 {
            return Err(DistError::Collective { op, rank: self.rank, message: message(&err) });
        }
        Ok(())
    }

    /// Runs an in-place collective on `tensors`: each is staged where the engine can take it,
    /// `f` gets the staged tensors' pointers and the error buffer, and results are copied back
    /// into the tensors that were staged through a copy.
    fn in_place(&self, op: &'static str, tensors: &[Tensor], f: impl FnOnce(&[*mut c_void], *mut c_char) -> c_int) -> Result<()> {
        let staged: Vec<(Tensor, bool)> = tensors.iter().map(|t| self.stage(t)).collect();
        let ptrs: Vec<*mut c_void> = staged.iter().map(|(t, _)| ptr(t)).collect();
        self.call(op, |err| f(&ptrs, err))?;
        for (t, (h, copy)) in tensors.iter().zip(&staged) {
            if *copy {
                tch::no_grad(|| t.shallow_clone().copy_(h));
            }
        }
        Ok(())
    }

    /// Replaces each tensor by its sum over all ranks (one collective per tensor, in order).
    pub fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<()> {
        // SAFETY: `self.raw` is a live group; `ptrs` holds `ptrs.len()` pointers to the staged
        // tensors (`at::Tensor*`, contiguous), which `in_place` keeps alive across the call; `err`
        // is its ERR_LEN-byte buffer.
        self.in_place("all_reduce", tensors, |ptrs, err| unsafe { ffi::proxima_dist_all_reduce_sum(self.raw, ptrs.as_ptr(), ptrs.len(), err, ERR_LEN) })
    }

    /// Overwrites each tensor with rank `root`'s (initial weights, resumed state).
    pub fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<()> {
        if root >= self.world_size {
            return Err(DistError::Input { op: "broadcast", message: format!("root {root} is not a rank of {}", self.world_size) });
        }
        // SAFETY: as in `all_reduce_sum`; `root` was checked to be a rank of the group.
        self.in_place("broadcast", tensors, |ptrs, err| unsafe { ffi::proxima_dist_broadcast(self.raw, ptrs.as_ptr(), ptrs.len(), root as c_int, err, ERR_LEN) })
    }

    /// Waits until every rank arrives.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: `self.raw` is a live group; `err` is `call`'s ERR_LEN-byte buffer.
        self.call("barrier", |err| unsafe { ffi::proxima_dist_barrier(self.raw, err, ERR_LEN) })
    }

    /// Every rank's `t`, in rank order (no gradient). Ranks may hold different first dimensions
    /// (they are exchanged first); the other dimensions and the kind must agree.
    ///
    /// # Shapes
    /// `t`: `[n_r, …]` on rank r → `world_size` tensors `[n_r, …]`.
    pub fn all_gather(&self, t: &Tensor) -> Result<Vec<Tensor>> {
        let size = t.size();
        let Some((&rows, rest)) = size.split_first() else {
            return Err(DistError::Input { op: "all_gather", message: "a scalar has no rows to gather".into() });
        };
        // Rows and a fingerprint of the rest of the shape, from every rank.
        let fingerprint = [rest.iter().product::<i64>(), rest.len() as i64, kind_code(t.kind())];
        let meta = Tensor::from_slice(&[rows, fingerprint[0], fingerprint[1], fingerprint[2]]);
        let metas = self.gather_same_shape(&meta)?;
        let mut shapes = Vec::with_capacity(self.world_size);
        for (r, m) in metas.iter().enumerate() {
            let m: Vec<i64> = Vec::<i64>::try_from(m).map_err(|e| DistError::Input { op: "all_gather", message: e.to_string() })?;
            if m[1..] != fingerprint {
                return Err(DistError::Input {
                    op: "all_gather",
                    message: format!("rank {r} holds {m:?} (rows, row size, rank, kind), this rank {size:?} of {:?}", t.kind()),
                });
            }
            shapes.push(m[0]);
        }
        let max_rows = *shapes.iter().max().unwrap_or(&0);
        let (local, _) = self.stage(t);
        // Gloo gathers equal shapes: pad to the longest, then cut each back to its own rows.
        let padded = if rows == max_rows {
            local
        } else {
            let mut pad_size = size.clone();
            pad_size[0] = max_rows - rows;
            Tensor::cat(&[local.shallow_clone(), Tensor::zeros(&pad_size, (t.kind(), local.device()))], 0)
        };
        let out = self.gather_same_shape(&padded)?;
        Ok(out.into_iter().zip(shapes).map(|(o, n)| o.narrow(0, 0, n).to_device(t.device())).collect())
    }

    fn gather_same_shape(&self, t: &Tensor) -> Result<Vec<Tensor>> {
        let (local, _) = self.stage(t);
        let outputs: Vec<Tensor> = (0..self.world_size).map(|_| Tensor::empty_like(&local)).collect();
        let ptrs: Vec<*mut c_void> = outputs.iter().map(ptr).collect();
        // SAFETY: `self.raw` is a live group; `local` and the `world_size` outputs (`ptrs`, one
        // per rank, as the shim expects) are contiguous tensors of the same shape, kept alive
        // until after the call; `err` is `call`'s ERR_LEN-byte buffer.
        self.call("all_gather", |err| unsafe { ffi::proxima_dist_all_gather(self.raw, ptr(&local), ptrs.as_ptr(), err, ERR_LEN) })?;
        Ok(outputs)
    }

    /// The global batch: every rank's `local` concatenated in rank order, with this rank's part
    /// being `local` itself, so gradients flow back to it (the other parts are constants). This
    /// is pytorch-metric-learning's `DistributedLossWrapper` gather: a loss on the result sees the
    /// same batch on every rank, and summing each rank's parameter gradients gives the gradient of
    /// that loss for the whole batch.
    ///
    /// # Shapes
    /// `local`: `[n_r, …]` → `[Σ n_r, …]`.
    pub fn gather_with_grad(&self, local: &Tensor) -> Result<Tensor> {
        let mut parts = self.all_gather(&local.detach())?;
        parts[self.rank] = local.shallow_clone();
        Ok(Tensor::cat(&parts, 0))
    }

    /// Combines the gradients of `params` over all ranks in place: flattened into buckets of at
    /// most `bucket_bytes` (one collective per bucket, as PyTorch DDP does), reduced, and
    /// copied back. A parameter without a gradient contributes zeros and is left without one.
    /// Every rank must pass the same parameters in the same order.
    pub fn all_reduce_gradients(&self, params: &[Tensor], reduction: GradientReduction, bucket_bytes: usize) -> Result<()> {
        for bucket in buckets(params, bucket_bytes) {
            let kind = params[bucket[0]].kind();
            let device = params[bucket[0]].device();
            let flat: Vec<Tensor> = bucket
                .iter()
                .map(|&i| {
                    let g = params[i].grad();
                    if g.defined() { g.detach().to_device(device).to_kind(kind).reshape([-1]) } else { Tensor::zeros([params[i].numel() as i64], (kind, device)) }
                })
                .collect();
            let mut flat = Tensor::cat(&flat, 0);
            self.all_reduce_sum(std::slice::from_ref(&flat))?;
            if reduction == GradientReduction::Mean {
                let _ = flat.g_div_scalar_(self.world_size as f64);
            }
            let mut offset = 0i64;
            for &i in &bucket {
                let n = params[i].numel() as i64;
                let mut g = params[i].grad();
                if g.defined() {
                    tch::no_grad(|| g.copy_(&flat.narrow(0, offset, n).view_as(&g)));
                }
                offset += n;
            }
        }
        Ok(())
    }
}

/// Indices of `params` grouped into consecutive buckets of one kind and at most `bucket_bytes`
/// (a parameter larger than that is a bucket of its own).
fn buckets(params: &[Tensor], bucket_bytes: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0usize;
    for (i, p) in params.iter().enumerate() {
        let size = p.numel() * p.kind().elt_size_in_bytes();
        let same_kind = out.last().is_some_and(|b| params[b[0]].kind() == p.kind());
        match out.last_mut() {
            Some(b) if same_kind && bytes + size <= bucket_bytes => {
                b.push(i);
                bytes += size;
            }
            _ => {
                out.push(vec![i]);
                bytes = size;
            }
        }
    }
    out
}

fn kind_code(kind: Kind) -> i64 {
    kind as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cuda_engine_is_nccl_unless_gloo_is_named_and_anything_else_is_refused() {
        assert_eq!(CudaCollectives::parse(None).unwrap(), CudaCollectives::Nccl);
        assert_eq!(CudaCollectives::parse(Some(" nccl")).unwrap(), CudaCollectives::Nccl);
        assert_eq!(CudaCollectives::parse(Some("gloo")).unwrap(), CudaCollectives::HostStaged);
        let err = CudaCollectives::parse(Some("mpi")).unwrap_err().to_string();
        assert!(err.contains("PROXIMA_DIST_BACKEND") && err.contains("'mpi'"), "{err}");
    }

    #[test]
    fn buckets_respect_the_byte_limit_and_the_kind() {
        let t = |n: i64, kind: Kind| Tensor::zeros([n], (kind, Device::Cpu));
        let params = [t(10, Kind::Float), t(10, Kind::Float), t(30, Kind::Float), t(5, Kind::Double), t(5, Kind::Double), t(100, Kind::Float)];
        // 80 bytes per bucket: 40+40 | 120 alone | 40+40 (double) | 400 alone.
        assert_eq!(buckets(&params, 80), vec![vec![0, 1], vec![2], vec![3, 4], vec![5]]);
        assert_eq!(buckets(&params, usize::MAX), vec![vec![0, 1, 2], vec![3, 4], vec![5]]);
        assert!(buckets(&[], 80).is_empty());
    }
}
