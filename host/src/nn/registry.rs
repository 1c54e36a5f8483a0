//! Graphs the host registers by name for wasi-nn `load-by-name` (`--graph NAME=FILE`). Each is
//! loaded from its own file on first use, once, and shared by every instance of the host.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::backend::{Backend, BackendGraph, Options};
use super::Error;
use crate::bindings::wasi::nn::errors::ErrorCode;

struct Entry {
    path: PathBuf,
    loaded: Mutex<Option<Arc<dyn BackendGraph>>>,
}

/// name -> file, and the graph once loaded.
pub struct Registry {
    entries: HashMap<String, Entry>,
}

impl Registry {
    pub fn new(graphs: Vec<(String, PathBuf)>) -> Self {
        let entries = graphs.into_iter().map(|(name, path)| (name, Entry { path, loaded: Mutex::new(None) })).collect();
        Self { entries }
    }

    /// The graph registered as `name`, loading it with `backend` the first time.
    /// Errors: `not-found` for an unknown name (listing the registered ones), else the backend's.
    pub fn get(&self, name: &str, backend: &dyn Backend, options: &Options) -> Result<Arc<dyn BackendGraph>, Error> {
        let entry = self.entries.get(name).ok_or_else(|| {
            let mut known: Vec<&str> = self.entries.keys().map(String::as_str).collect();
            known.sort_unstable();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            Error::new(ErrorCode::NotFound, format!("no graph named '{name}' is registered (registered: {known})"))
        })?;
        let mut loaded = entry.loaded.lock().map_err(|_| Error::runtime("graph registry poisoned"))?;
        if let Some(g) = loaded.as_ref() {
            return Ok(g.clone());
        }
        let g = backend
            .load_file(&entry.path, options)
            .map_err(|e| Error::new(e.code, format!("graph '{name}': {}", e.data)))?;
        *loaded = Some(g.clone());
        Ok(g)
    }
}
