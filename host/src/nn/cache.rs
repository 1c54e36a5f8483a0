//! Shared graphs: the graphs guests load with `graph.load`, by content, so every instance of a
//! host that loads the same bytes gets the same backend graph (one ONNX Runtime session, one copy
//! of the weights) instead of its own.
//!
//! The key is the SHA-256 of the exact builder bytes (of the one builder's bytes; for several,
//! of each builder's length, then its bytes), the backend's graph encoding and the execution
//! target. The other settings a session depends on
//! (thread pool, arena cap, CPU fallback, the empty external-data folder) are the host's, and the
//! cache is one per host ([`super::WasiNnConfig`]), so they are equal for every entry.
//!
//! Entries are evicted least recently used once the graph bytes they were loaded from exceed the
//! cache's byte budget (the host's `graph-cache-mb`; 0 = no sharing, every load makes its own
//! graph, as before). An evicted graph that an instance still holds stays alive (an `Arc`) until
//! the instance releases it; the next load of those bytes makes a new one.
//!
//! A cached graph can also be had without its bytes: `load-by-name("sha256:<hex>")` answers with
//! the cached graph of those bytes, but only for an instance of a component whose instances loaded
//! them before ([`Digests`], one per loaded component). The bytes of an embedded graph then stay
//! untouched in the component's data segment: lifting them (reading 18 MB of copy-on-write pages)
//! is what made every instance's resident set grow by the graph's size. Scoping the digests to the
//! component that loaded them keeps a digest from being a capability: another component cannot run
//! a graph it does not hold by naming its hash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use super::backend::BackendGraph;
use super::Error;
use crate::bindings::wasi::nn::errors::ErrorCode;
use crate::bindings::wasi::nn::graph::{ExecutionTarget, GraphEncoding};

/// What identifies a shared graph: SHA-256 of the builders (the plain SHA-256 of a single
/// builder, which `sha256sum` prints and [`Digests`] names; `single` keeps it apart from the framed
/// hash of several), graph encoding, execution target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    sha256: [u8; 32],
    single: bool,
    encoding: u8,
    target: u8,
}

impl Key {
    fn new(builders: &[Vec<u8>], encoding: GraphEncoding, target: ExecutionTarget) -> Self {
        let mut hash = Sha256::new();
        if let [one] = builders {
            hash.update(one);
        } else {
            for b in builders {
                hash.update((b.len() as u64).to_le_bytes());
                hash.update(b);
            }
        }
        Self {
            sha256: hash.finalize().into(),
            single: builders.len() == 1,
            encoding: encoding as u8,
            target: target as u8,
        }
    }
}

/// The single-builder graphs the instances of one component loaded, by the SHA-256 of their bytes
/// (the last load's encoding and target): what `load-by-name("sha256:<hex>")` may find for another
/// instance of that component (module docs). At most [`MAX_DIGESTS`] are kept.
#[derive(Default)]
pub struct Digests(Mutex<HashMap<[u8; 32], Key>>);

/// Digests one component keeps: the templates load one to three graphs; a component that loads
/// ever new bytes cannot grow the map past this (later ones are loaded by bytes only).
const MAX_DIGESTS: usize = 256;

impl Digests {
    fn record(&self, key: Key) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if key.single && (map.len() < MAX_DIGESTS || map.contains_key(&key.sha256)) {
            map.insert(key.sha256, key);
        }
    }

    fn key(&self, name: &str) -> Option<Key> {
        let digest = parse_sha256_name(name)?;
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&digest).copied()
    }
}

/// `sha256:<64 lowercase hex digits>` -> the digest; None for any other name.
fn parse_sha256_name(name: &str) -> Option<[u8; 32]> {
    let hex = name.strip_prefix("sha256:")?.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(digest)
}

struct Entry {
    graph: Arc<dyn BackendGraph>,
    /// The graph bytes it was loaded from (what the budget counts).
    bytes: usize,
    /// When it was last loaded (the cache's clock): the smallest is evicted first.
    used: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<Key, Entry>,
    clock: u64,
    bytes: usize,
    hits: u64,
    by_digest: u64,
    misses: u64,
    evictions: u64,
}

impl State {
    /// Advance the LRU clock; the graph cached under `key`, marked used now and counted as a hit.
    fn hit(&mut self, key: &Key) -> Option<Arc<dyn BackendGraph>> {
        self.clock += 1;
        let now = self.clock;
        let entry = self.entries.get_mut(key)?;
        entry.used = now;
        let graph = entry.graph.clone();
        self.hits += 1;
        Some(graph)
    }
}

/// The cache's counters (`Host.graph_cache_stats()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Graphs in the cache now (each one session).
    pub graphs: usize,
    /// Their graph bytes.
    pub bytes: usize,
    /// The byte budget.
    pub max_bytes: usize,
    /// Loads answered with a cached graph.
    pub hits: u64,
    /// Of those, loads by digest name (`load-by-name("sha256:<hex>")`): no graph bytes read.
    pub by_digest: u64,
    /// Loads that made a new graph.
    pub misses: u64,
    /// Graphs evicted to stay within the budget (or to free ONNX Runtime's arena).
    pub evictions: u64,
}

/// Loaded graphs by content, LRU-evicted under a byte budget (module docs).
pub struct GraphCache {
    max_bytes: usize,
    state: Mutex<State>,
}

impl GraphCache {
    /// A cache keeping graphs loaded from at most `max_bytes` graph bytes (0: keeps none).
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes, state: Mutex::new(State::default()) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement that changes it: a panic elsewhere
        // cannot leave it half-updated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The graph of `builders` for `encoding` on `target`: the cached one, or `load()`'s, which
    /// is then cached (when it fits the budget; older graphs are evicted to make room). When
    /// `load` fails with `too-large` (ONNX Runtime's arena is full) while the cache holds graphs
    /// no instance uses, those are evicted and `load` is tried once more. A single builder's
    /// digest is recorded in `digests` (the loading component's). Errors: `load`'s.
    pub fn get_or_load(
        &self,
        builders: &[Vec<u8>],
        encoding: GraphEncoding,
        target: ExecutionTarget,
        digests: &Digests,
        load: impl Fn() -> Result<Arc<dyn BackendGraph>, Error>,
    ) -> Result<Arc<dyn BackendGraph>, Error> {
        if self.max_bytes == 0 {
            return load();
        }
        let key = Key::new(builders, encoding, target);
        let bytes: usize = builders.iter().map(Vec::len).sum();
        if let Some(graph) = self.state().hit(&key) {
            digests.record(key);
            return Ok(graph);
        }
        // Loaded without the lock: other graphs stay available meanwhile. Two instances loading
        // the same new bytes at once both load; the first to finish is cached and shared.
        let graph = match load() {
            Err(e) if matches!(e.code, ErrorCode::TooLarge) && self.evict_idle() > 0 => load()?,
            other => other?,
        };
        digests.record(key);
        let mut state = self.state();
        if let Some(shared) = state.hit(&key) {
            return Ok(shared);
        }
        let now = state.clock;
        state.misses += 1;
        if bytes <= self.max_bytes {
            while state.bytes + bytes > self.max_bytes {
                let Some(oldest) = state.entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| *k) else { break };
                remove(&mut state, &oldest);
            }
            state.bytes += bytes;
            state.entries.insert(key, Entry { graph: graph.clone(), bytes, used: now });
        }
        Ok(graph)
    }

    /// The cached graph named `sha256:<hex>` and the byte length of the graph bytes it was loaded
    /// from, if an instance of the component `digests` belongs to loaded those bytes and the graph
    /// is still cached; None otherwise (the caller then loads the bytes).
    pub fn get_by_digest(&self, name: &str, digests: &Digests) -> Option<(Arc<dyn BackendGraph>, usize)> {
        let key = digests.key(name)?;
        let mut state = self.state();
        let graph = state.hit(&key)?;
        state.by_digest += 1;
        let bytes = state.entries.get(&key).map_or(0, |e| e.bytes);
        Some((graph, bytes))
    }

    /// Evict every cached graph no instance holds; returns how many.
    fn evict_idle(&self) -> usize {
        let mut state = self.state();
        let idle: Vec<Key> =
            state.entries.iter().filter(|(_, e)| Arc::strong_count(&e.graph) == 1).map(|(k, _)| *k).collect();
        for key in &idle {
            remove(&mut state, key);
        }
        idle.len()
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        let state = self.state();
        Stats {
            graphs: state.entries.len(),
            bytes: state.bytes,
            max_bytes: self.max_bytes,
            hits: state.hits,
            by_digest: state.by_digest,
            misses: state.misses,
            evictions: state.evictions,
        }
    }
}

fn remove(state: &mut State, key: &Key) {
    if let Some(entry) = state.entries.remove(key) {
        state.bytes -= entry.bytes;
        state.evictions += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Budget;
    use crate::nn::backend::Computed;
    use crate::nn::quota::Limits;
    use crate::nn::{CheckedInput, IoSpec};
    use std::time::Instant;

    struct Fake;

    impl BackendGraph for Fake {
        fn inputs(&self) -> &[IoSpec] {
            &[]
        }
        fn execution_provider(&self) -> &str {
            "fake"
        }
        fn compute(
            &self,
            _: &[CheckedInput],
            _: &Limits,
            _: &Arc<Budget>,
            _: Option<Instant>,
        ) -> Result<Computed, Error> {
            Err(Error::runtime("fake"))
        }
    }

    fn load() -> Result<Arc<dyn BackendGraph>, Error> {
        Ok(Arc::new(Fake))
    }

    fn get(cache: &GraphCache, bytes: &[u8], target: ExecutionTarget) -> Arc<dyn BackendGraph> {
        cache.get_or_load(&[bytes.to_vec()], GraphEncoding::Onnx, target, &Digests::default(), load).unwrap()
    }

    #[test]
    fn same_bytes_share_and_lru_evicts() {
        let cache = GraphCache::new(10);
        let a = get(&cache, b"aaaa", ExecutionTarget::Cpu);
        assert!(Arc::ptr_eq(&a, &get(&cache, b"aaaa", ExecutionTarget::Cpu)));
        // Another target is another session.
        assert!(!Arc::ptr_eq(&a, &get(&cache, b"aaaa", ExecutionTarget::Gpu)));
        get(&cache, b"bbbb", ExecutionTarget::Cpu); // 12 bytes > 10: evicts the oldest (aaaa/cpu)
        let s = cache.stats();
        assert_eq!((s.graphs, s.bytes, s.hits, s.misses, s.evictions), (2, 8, 1, 3, 1));
        // Evicted but still held: alive, and a new load makes a new graph.
        assert!(!Arc::ptr_eq(&a, &get(&cache, b"aaaa", ExecutionTarget::Cpu)));
        // Larger than the budget: loaded, not cached.
        get(&cache, &[0; 11], ExecutionTarget::Cpu);
        assert_eq!(cache.stats().graphs, 2);
    }

    #[test]
    fn a_full_arena_evicts_idle_graphs_and_retries() {
        let cache = GraphCache::new(100);
        let held = get(&cache, b"held", ExecutionTarget::Cpu);
        get(&cache, b"idle", ExecutionTarget::Cpu);
        let tries = std::cell::Cell::new(0);
        let full_once = || {
            tries.set(tries.get() + 1);
            if tries.get() == 1 {
                Err(Error::new(ErrorCode::TooLarge, "arena full"))
            } else {
                load()
            }
        };
        let digests = Digests::default();
        cache.get_or_load(&[b"new".to_vec()], GraphEncoding::Onnx, ExecutionTarget::Cpu, &digests, full_once).unwrap();
        assert_eq!(tries.get(), 2);
        let s = cache.stats();
        assert_eq!((s.graphs, s.evictions), (2, 1)); // `held` stays, `idle` went
        drop(held);
    }

    #[test]
    fn a_digest_name_finds_the_graph_only_for_the_component_that_loaded_it() {
        let cache = GraphCache::new(100);
        let (mine, other) = (Digests::default(), Digests::default());
        let bytes = b"graph bytes".to_vec();
        let real = format!("sha256:{:x}", Sha256::digest(&bytes));
        assert!(cache.get_by_digest(&real, &mine).is_none()); // nothing loaded yet
        let g = cache
            .get_or_load(std::slice::from_ref(&bytes), GraphEncoding::Onnx, ExecutionTarget::Cpu, &mine, load)
            .unwrap();
        let (found, n) = cache.get_by_digest(&real, &mine).expect("the loading component finds it");
        assert!(Arc::ptr_eq(&g, &found));
        assert_eq!(n, bytes.len());
        assert!(cache.get_by_digest(&real, &other).is_none()); // another component does not
        let unknown = format!("sha256:{:x}", Sha256::digest(b"other bytes"));
        assert!(cache.get_by_digest(&unknown, &mine).is_none());
        assert!(cache.get_by_digest(&real.to_uppercase(), &mine).is_none()); // not the canonical form
        assert_eq!(cache.stats().by_digest, 1);
        // Evicted: not found (the guest then loads its bytes).
        get(&cache, &[0; 95], ExecutionTarget::Cpu);
        assert!(cache.get_by_digest(&real, &mine).is_none());
        // Several builders are keyed apart from one builder of the same bytes, and not recorded.
        let fresh = Digests::default();
        let split = [b"graph ".to_vec(), b"bytes".to_vec()];
        cache.get_or_load(&split, GraphEncoding::Onnx, ExecutionTarget::Cpu, &fresh, load).unwrap();
        assert!(fresh.key(&real).is_none());
        // A failed load records nothing.
        let bad = || Err(Error::runtime("not a graph"));
        assert!(cache.get_or_load(&[b"bad".to_vec()], GraphEncoding::Onnx, ExecutionTarget::Cpu, &fresh, bad).is_err());
        assert!(fresh.key(&format!("sha256:{:x}", Sha256::digest(b"bad"))).is_none());
    }
}
