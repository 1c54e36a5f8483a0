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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Budget;
    use wasmtime::{Engine, Instance, Module, Store};

    /// A core module declaring `count` linear memories of `pages` 64 KiB pages each (binary
    /// format, WebAssembly core spec 5.5.8: the memory section, id 5; limits flag 0x00 = min only).
    fn memories_module(count: u8, pages: u16) -> Vec<u8> {
        let mut limits = Vec::new();
        let mut n = pages;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                limits.push(byte);
                break;
            }
            limits.push(byte | 0x80);
        }
        let mut section = vec![count];
        for _ in 0..count {
            section.push(0x00);
            section.extend_from_slice(&limits);
        }
        let mut module = b"\0asm\x01\0\0\0\x05".to_vec();
        module.push(section.len() as u8);
        module.extend(section);
        module
    }

    fn instantiate(budget_bytes: usize, module: &Module) -> (wasmtime::Result<Instance>, Store<Limiter>) {
        let mut store = Store::new(module.engine(), Limiter::new(Budget::new(budget_bytes)));
        store.limiter(|l| l);
        (Instance::new(&mut store, module, &[]), store)
    }

    #[test]
    fn every_linear_memory_counts_against_one_budget() {
        // Issue 12, finding 3: 16 memories of 62.5 MiB each, under a 64 MiB budget per instance.
        let engine = Engine::default();
        let module = Module::new(&engine, memories_module(16, 1000)).unwrap();
        let (result, store) = instantiate(64 << 20, &module);
        assert!(result.is_err());
        let refusal = store.data().refusal.clone().unwrap();
        assert!(refusal.starts_with("the host refused to grow a linear memory by 62.5 MiB: over the instance's memory budget (max-memory 64 MiB; in use: linear memories 62.5 MiB)"), "{refusal}");
        // The same module fits a budget of 1 GiB, and all 16 memories are charged.
        let (result, store) = instantiate(1 << 30, &module);
        assert!(result.is_ok());
        assert_eq!(store.data().budget.total(), 16 * 1000 * 65536);
    }
}
