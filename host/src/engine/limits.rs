//! The store's resource limiter: caps linear memory and remembers what it refused, so a trap
//! that follows a refused growth is reported as the memory limit.

use wasmtime::ResourceLimiter;

/// Linear-memory limiter that also records the largest memory size seen and the last growth it
/// refused since `refused_bytes` was cleared (before every call).
pub struct Limiter {
    pub max_bytes: usize,
    pub peak_bytes: usize,
    pub refused_bytes: Option<usize>,
}

impl Limiter {
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes, peak_bytes: 0, refused_bytes: None }
    }

    /// "the host refused to grow linear memory to ..." when a growth was refused.
    pub fn refusal_note(&self) -> Option<String> {
        self.refused_bytes.map(|b| {
            format!(
                "the host refused to grow linear memory to {:.1} MiB (memory limit {} MiB)",
                b as f64 / (1 << 20) as f64,
                self.max_bytes >> 20
            )
        })
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            // `memory.grow` returns -1: a guest may handle that; most abort (then a trap).
            self.refused_bytes = Some(desired);
            return Ok(false);
        }
        self.peak_bytes = self.peak_bytes.max(desired);
        Ok(true)
    }
    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
