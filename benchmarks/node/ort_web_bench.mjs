// Times one ONNX model in onnxruntime-web's WebAssembly backend ("wasm" execution provider)
// under Node.js, for benchmarks/run.py.
//
// Usage: node ort_web_bench.mjs SPEC.json
// SPEC.json: {"model": "m.onnx", "threads": 1, "warmup": 5, "n": 50,
//             "inputs": [{"name": "x", "dtype": "float32", "shape": [1, 3], "file": "x.bin"}]}
// Each input file holds the tensor's raw little-endian bytes (row-major).
// Prints one JSON object on stdout: {"version", "threads", "create_ms", "first_ms", "times_ms": [...]}
// where times_ms are the wall times of the n timed session.run calls after the warm-up, in
// milliseconds (performance.now()).
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import * as ort from 'onnxruntime-web';

const TYPED = {
  float32: Float32Array, float64: Float64Array, int32: Int32Array, int64: BigInt64Array,
  uint8: Uint8Array, int8: Int8Array, float16: Uint16Array,
};

function loadTensor(spec) {
  const Ctor = TYPED[spec.dtype];
  if (!Ctor) throw new Error(`unsupported dtype ${spec.dtype}`);
  const buf = readFileSync(spec.file);
  const copy = new Uint8Array(buf.byteLength);
  copy.set(buf);
  const data = new Ctor(copy.buffer, 0, copy.byteLength / Ctor.BYTES_PER_ELEMENT);
  return new ort.Tensor(spec.dtype, data, spec.shape);
}

async function main() {
  const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'));
  // Must be set before the first session is created (ONNX Runtime Web "env flags" docs).
  ort.env.wasm.numThreads = spec.threads ?? 1;
  ort.env.logLevel = 'error';
  const feeds = {};
  for (const input of spec.inputs) feeds[input.name] = loadTensor(input);
  const model = new Uint8Array(readFileSync(spec.model));
  let t0 = performance.now();
  const session = await ort.InferenceSession.create(model, {
    executionProviders: ['wasm'],
    graphOptimizationLevel: 'all',
  });
  const createMs = performance.now() - t0;
  t0 = performance.now();
  await session.run(feeds);
  const firstMs = performance.now() - t0;
  for (let i = 0; i < (spec.warmup ?? 5); i++) await session.run(feeds);
  const times = [];
  for (let i = 0; i < spec.n; i++) {
    t0 = performance.now();
    await session.run(feeds);
    times.push(performance.now() - t0);
  }
  await session.release();
  process.stdout.write(JSON.stringify({
    version: ort.env.versions?.web ?? null,
    threads: ort.env.wasm.numThreads,
    create_ms: createMs,
    first_ms: firstMs,
    times_ms: times,
  }) + '\n');
}

main().catch((err) => {
  process.stderr.write(`error: ${err?.message ?? err}\n`);
  process.exit(1);
});
