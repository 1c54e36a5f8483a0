//! The sandbox's wasi-nn limits: bytes per tensor (host-wide) and live graphs per instance.
//!
//! The tensor constructor cannot return an error in this wasi-nn version, so an oversized
//! tensor is kept without its bytes and `compute` answers `too-large`; outputs over the limit
//! are refused by `compute` before they are copied. A graph stays live while its handle or any
//! of its execution contexts exist; `load` / `load-by-name` beyond the limit answer `security`
//! (a policy refusal: the graph itself is not too large, the sandbox denies another one).

use std::sync::{Arc, Weak};

use super::Error;
use crate::bindings::wasi::nn::errors::ErrorCode;

/// Host-wide limits, set once when the host is created (None = unbounded).
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Largest wasi-nn tensor (input or output), bytes.
    pub max_tensor_bytes: Option<usize>,
    /// Most live graphs per instance.
    pub max_graphs: Option<usize>,
}

impl Limits {
    /// The `too-large` error for a tensor (`what`) of `bytes` bytes, if it is over the limit.
    pub fn tensor_too_large(&self, what: &str, bytes: usize) -> Option<Error> {
        let max = self.max_tensor_bytes?;
        (bytes > max).then(|| {
            Error::new(
                ErrorCode::TooLarge,
                format!("{what} is {bytes} bytes, over the host's limit of {max} bytes (max-tensor-bytes)"),
            )
        })
    }
}

/// Held by a graph and its execution contexts; the graph is live while one exists.
pub type LiveToken = Arc<()>;

/// Per-instance bookkeeping: one weak token per graph loaded (dead tokens = graphs dropped).
#[derive(Debug, Default)]
pub struct Quota {
    graphs: Vec<Weak<()>>,
}

impl Quota {
    /// Refuse a new graph (`security`) when `max` graphs are live; otherwise count it and return
    /// its token.
    pub fn admit(&mut self, max: Option<usize>) -> Result<LiveToken, Error> {
        self.graphs.retain(|w| w.strong_count() > 0);
        if let Some(max) = max {
            if self.graphs.len() >= max {
                return Err(Error::new(
                    ErrorCode::Security,
                    format!(
                        "this instance already holds {} live graph(s), the host's limit (max-graphs {max}); \
                         drop a graph and its execution contexts first",
                        self.graphs.len()
                    ),
                ));
            }
        }
        let token = Arc::new(());
        self.graphs.push(Arc::downgrade(&token));
        Ok(token)
    }
}
