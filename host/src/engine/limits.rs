//! The store's resource limiter: charges every linear memory's and table's growth to the
//! instance's [`Budget`] and remembers what it refused, so a trap that follows a refused growth
//! is reported as the memory limit.

use std::sync::Arc;

use wasmtime::ResourceLimiter;

use crate::budget::{Budget, Kind};

/// Bytes charged per table element (a pointer-sized slot in wasmtime's tables).
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// Memory and table limiter over the instance's budget; also records the largest single linear
/// memory seen and the last refusal since `refusal` was cleared (before every call).
pub struct Limiter {
    pub budget: Arc<Budget>,
    pub peak_bytes: usize,
    pub refusal: Option<String>,
}

impl Limiter {
    pub fn new(budget: Arc<Budget>) -> Self {
        Self { budget, peak_bytes: 0, refusal: None }
    }

    /// "the host refused to grow a linear memory by X MiB: over the instance's memory budget ..."
    /// when a growth was refused.
    pub fn refusal_note(&self) -> Option<String> {
        self.refusal.clone()
    }

    fn grow(&mut self, kind: Kind, what: &str, current: usize, desired: usize) -> bool {
        match self.budget.try_add(kind, desired.saturating_sub(current), what) {
            Ok(()) => true,
            Err(message) => {
                // `memory.grow` / `table.grow` return -1: a guest may handle that; most abort (a trap).
                self.refusal = Some(message);
                false
            }
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let ok = self.grow(Kind::LinearMemory, "the host refused to grow a linear memory by", current, desired);
        if ok {
            self.peak_bytes = self.peak_bytes.max(desired);
        }
        Ok(ok)
    }
    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let bytes = |n: usize| n.saturating_mul(TABLE_ELEMENT_BYTES);
        Ok(self.grow(Kind::Table, "the host refused to grow a table by", bytes(current), bytes(desired)))
    }
}
