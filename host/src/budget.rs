//! One memory budget per instance (the sandbox's `max-memory`): every linear memory and table of
//! the instance, the wasi-nn tensors the host holds for it (inputs the guest created, outputs of
//! `compute` not yet dropped) and the bytes of the graphs it loaded are charged to it, so a guest
//! cannot grow past it with several memories, a pile of tensors or graphs. A graph shared with
//! other instances (`nn::cache`) is charged in full to each instance that loads it. ONNX Runtime's own
//! allocations (weights after load, intermediate and output tensors during a run) are bounded
//! host-wide by the arena cap in `nn::onnx` (`max-ort-memory`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What a charge is for, in the budget's breakdown and its error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    LinearMemory = 0,
    Table = 1,
    Tensor = 2,
    Graph = 3,
}

const KIND_NAMES: [&str; 4] = ["linear memories", "tables", "tensors", "graphs"];

/// Bytes charged so far, by kind, against `max` bytes.
#[derive(Debug)]
pub struct Budget {
    max: usize,
    used: [AtomicUsize; 4],
    total: AtomicUsize,
    peak: AtomicUsize,
}

impl Budget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, used: Default::default(), total: AtomicUsize::new(0), peak: AtomicUsize::new(0) })
    }

    /// The budget, bytes.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Bytes charged now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// The most bytes charged at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Charge `bytes` for `kind` if they fit; otherwise charge nothing and return the message
    /// naming the limit and what holds the budget (`what` says what was refused, e.g. "the host
    /// refused a tensor of").
    pub fn try_add(&self, kind: Kind, bytes: usize, what: &str) -> Result<(), String> {
        let mut current = self.total.load(Ordering::Relaxed);
        loop {
            let next =
                current.checked_add(bytes).filter(|&n| n <= self.max).ok_or_else(|| self.refusal(what, bytes))?;
            match self.total.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.used[kind as usize].fetch_add(bytes, Ordering::Relaxed);
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    return Ok(());
                }
                Err(now) => current = now,
            }
        }
    }

    /// Give back `bytes` charged for `kind`.
    pub fn sub(&self, kind: Kind, bytes: usize) {
        self.used[kind as usize].fetch_sub(bytes, Ordering::Relaxed);
        self.total.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Charge `bytes` for `kind` and return the charge that gives them back when dropped.
    pub fn charge(self: &Arc<Self>, kind: Kind, bytes: usize, what: &str) -> Result<Charge, String> {
        self.try_add(kind, bytes, what)?;
        Ok(Charge { budget: self.clone(), kind, bytes })
    }

    /// "<what> X MiB: over the instance's memory budget (max-memory N MiB; in use: ...)".
    pub fn refusal(&self, what: &str, bytes: usize) -> String {
        let mib = |b: usize| b as f64 / (1u64 << 20) as f64;
        let parts: Vec<String> = KIND_NAMES
            .iter()
            .zip(&self.used)
            .map(|(name, used)| (name, used.load(Ordering::Relaxed)))
            .filter(|(_, used)| *used >= 1 << 16)
            .map(|(name, used)| format!("{name} {:.1} MiB", mib(used)))
            .collect();
        format!(
            "{what} {:.1} MiB: over the instance's memory budget (max-memory {} MiB; in use: {})",
            mib(bytes),
            self.max >> 20,
            if parts.is_empty() { "nothing".to_string() } else { parts.join(", ") }
        )
    }
}

/// Bytes charged to a budget until this is dropped (held by a tensor or a graph).
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    kind: Kind,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.sub(self.kind, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_bounded_and_given_back() {
        let b = Budget::new(100 << 20);
        let a = b.charge(Kind::Tensor, 60 << 20, "a tensor of").unwrap();
        let err = b.charge(Kind::Graph, 50 << 20, "the host refused a graph of").unwrap_err();
        assert_eq!(
            err,
            "the host refused a graph of 50.0 MiB: over the instance's memory budget \
             (max-memory 100 MiB; in use: tensors 60.0 MiB)"
        );
        drop(a);
        assert_eq!(b.total(), 0);
        let _c = b.charge(Kind::Graph, 100 << 20, "a graph of").unwrap();
        assert_eq!(b.peak(), 100 << 20);
    }
}
