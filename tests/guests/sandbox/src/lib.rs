//! Sandbox probe for the wasmai host tests: a trivial `tensor-model` (metadata and a model with
//! no graph, whose `infer` sleeps `nap-ms` milliseconds in the host) plus exports that try the file system, the environment, stdout, CPU time, memory,
//! wasi-nn graph loading (by name, or from bytes the test crafts) and TCP connections, so the
//! tests can check what the host allows.
#[allow(warnings)]
mod bindings;

use bindings::exports::wasmai::inference::{metadata, model};
use bindings::wasi::nn::errors::ErrorCode;
use bindings::wasi::nn::graph::{self, ExecutionTarget, GraphEncoding};
use bindings::wasi::nn::tensor::{Tensor as NnTensor, TensorType};
use bindings::wasmai::inference::types::{Dim, Error, ModelInfo, Tensor, TensorSpec};

struct Probe;

/// A wasi-nn tensor as `compute-tensors` takes and returns it: (name, dimensions, type, bytes).
type NamedTensor = (String, Vec<u32>, TensorType, Vec<u8>);

impl bindings::Guest for Probe {
    fn read_file(path: String) -> Result<String, String> {
        std::fs::read_to_string(&path).map_err(|e| e.to_string())
    }

    fn write_file(path: String, text: String) -> Result<(), String> {
        std::fs::write(&path, text).map_err(|e| e.to_string())
    }

    fn get_env(key: String) -> Option<String> {
        std::env::var(&key).ok()
    }

    fn spin() {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    fn nap(ms: u32) {
        std::thread::sleep(std::time::Duration::from_millis(ms.into()));
    }

    fn hog(mib: u32) -> u32 {
        let len = mib as usize * (1 << 20);
        let mut block: Vec<u8> = Vec::with_capacity(len);
        block.resize(len, 0);
        for page in block.chunks_mut(64 * 1024) {
            page[0] = 1;
        }
        let touched = block.iter().step_by(64 * 1024).filter(|&&b| b == 1).count();
        (touched / 16) as u32
    }

    fn say(text: String) {
        println!("{text}");
    }

    fn load_graphs(name: String, count: u32) -> Result<u32, String> {
        let mut graphs = Vec::new();
        for _ in 0..count {
            match graph::load_by_name(&name) {
                Ok(g) => graphs.push(g),
                Err(e) => return Err(format!("{}: {}", code_name(e.code()), e.data())),
            }
        }
        Ok(graphs.len() as u32)
    }

    fn load_graph_bytes(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        let failed = |e: bindings::wasi::nn::errors::Error| format!("{}: {}", code_name(e.code()), e.data());
        let g = graph::load(&[bytes], GraphEncoding::Onnx, ExecutionTarget::Cpu).map_err(failed)?;
        let ctx = g.init_execution_context().map_err(failed)?;
        let outputs = ctx.compute(Vec::new()).map_err(failed)?;
        let (_, first) = outputs.into_iter().next().ok_or_else(|| "the graph has no output".to_string())?;
        Ok(first.data())
    }

    fn compute_tensors(graph: Vec<u8>, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, String> {
        let failed = |e: bindings::wasi::nn::errors::Error| format!("{}: {}", code_name(e.code()), e.data());
        let g = graph::load(&[graph], GraphEncoding::Onnx, ExecutionTarget::Cpu).map_err(failed)?;
        let ctx = g.init_execution_context().map_err(failed)?;
        let tensors =
            inputs.into_iter().map(|(name, dims, ty, data)| (name, NnTensor::new(&dims, ty, &data))).collect();
        let outputs = ctx.compute(tensors).map_err(failed)?;
        Ok(outputs.into_iter().map(|(name, t)| (name, t.dimensions(), t.ty(), t.data())).collect())
    }

    fn connect_tcp(address: String) -> Result<(), String> {
        // wasi:sockets directly: Rust's std::net is not available on wasm32-wasip1.
        use wasi::sockets::network::{ErrorCode as NetError, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
        let addr: std::net::SocketAddrV4 = address.parse().map_err(|e| format!("{address}: {e}"))?;
        let [a, b, c, d] = addr.ip().octets();
        let socket = wasi::sockets::tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4)
            .map_err(|e| format!("create-tcp-socket: {}", e.name()))?;
        let network = wasi::sockets::instance_network::instance_network();
        let remote = IpSocketAddress::Ipv4(Ipv4SocketAddress { port: addr.port(), address: (a, b, c, d) });
        socket.start_connect(&network, remote).map_err(|e| format!("start-connect: {}", e.name()))?;
        let ready = socket.subscribe();
        loop {
            match socket.finish_connect() {
                Ok(_) => return Ok(()),
                Err(NetError::WouldBlock) => ready.block(),
                Err(e) => return Err(format!("finish-connect: {}", e.name())),
            }
        }
    }
}

const NAP_INPUT: &str = "nap-ms";
const NAP_OUTPUT: &str = "slept-ms";

fn nap_spec(name: &str) -> TensorSpec {
    TensorSpec { name: name.to_string(), dtype: TensorType::I32, shape: vec![Dim::Fixed(1)] }
}

fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidArgument => "invalid-argument",
        ErrorCode::InvalidEncoding => "invalid-encoding",
        ErrorCode::Timeout => "timeout",
        ErrorCode::RuntimeError => "runtime-error",
        ErrorCode::UnsupportedOperation => "unsupported-operation",
        ErrorCode::TooLarge => "too-large",
        ErrorCode::NotFound => "not-found",
        ErrorCode::Security => "security",
        ErrorCode::Unknown => "unknown",
    }
}

impl metadata::Guest for Probe {
    fn info() -> ModelInfo {
        // A build with WASMAI_PROBE_INFO_NAP_MS set sleeps in wasi:io/poll first (the inspect test).
        if let Some(ms) = option_env!("WASMAI_PROBE_INFO_NAP_MS") {
            std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0)));
        }
        ModelInfo {
            name: "sandbox-probe".to_string(),
            version: "0.1.0".to_string(),
            task: "sandbox-probe".to_string(),
            inputs: vec![nap_spec(NAP_INPUT)],
            outputs: vec![nap_spec(NAP_OUTPUT)],
            labels: Vec::new(),
            model_sha256: String::new(),
            placement: "none".to_string(),
            wasmai_version: String::new(),
            toolchain: Vec::new(),
            preprocess: None,
        }
    }
}

impl model::Guest for Probe {
    fn load() -> Result<(), Error> {
        Ok(())
    }

    /// Sleep as long as the i32 input `nap-ms` says (wasi:io/poll, like `nap`), then answer it
    /// as `slept-ms`: a model call that blocks in the host (tests/test_serve_isolation.py). A
    /// negative `nap-ms` -N instead fills N MiB of linear memory first (like `hog`): under a
    /// smaller memory budget the call traps (tests/test_serve_soak.py).
    fn infer(inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Error> {
        let nap = inputs.into_iter().find(|t| t.name == NAP_INPUT && t.dtype == TensorType::I32);
        let data = match nap {
            Some(t) if t.data.len() == 4 => t.data,
            _ => return Err(Error::BadInput(format!("the sandbox probe takes one i32 [1] input {NAP_INPUT}"))),
        };
        let ms = i32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        if ms < 0 {
            <Probe as bindings::Guest>::hog(ms.unsigned_abs());
        }
        <Probe as bindings::Guest>::nap(ms.max(0) as u32);
        Ok(vec![Tensor { name: NAP_OUTPUT.to_string(), dtype: TensorType::I32, shape: vec![1], data }])
    }

    fn release() {}
}

bindings::export!(Probe with_types_in bindings);
