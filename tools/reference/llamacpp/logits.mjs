// llama.cpp's view of a GGUF file, for netgpt's compatibility test (tests/test_llamacpp.c).
//
//   node logits.mjs MODEL.gguf TEXT IDS OUT [LORA.gguf]
//
// Loads MODEL with llama.cpp (the CPU build that the npm package node-llama-cpp ships; nothing
// is compiled or downloaded), then writes
//   OUT.ids.i32     llama.cpp's tokenization of TEXT (no BOS, special tokens not parsed), int32
//   OUT.logits.f32  llama.cpp's logits after each token of IDS (comma-separated ids, evaluated
//                   from an empty context), n_ids x n_vocab float32 in vocabulary order, with
//                   the GGUF LoRA adapter LORA applied at scale 1 when it is given
// and prints one JSON line {"n_vocab", "n_ids", "n_text_ids"}. The KV cache is kept in f32 and
// flash attention off, so the logits differ from netgpt's by the order of floating-point
// operations and by how llama.cpp's CPU backend rounds activations for the weight type: to
// f16 for f16 weights, to bf16 for bf16 weights, to 8-bit blocks for q8_0/q4_0 (as netgpt
// does for these two).
import {getLlama, LlamaLogLevel} from "node-llama-cpp";
import fs from "node:fs";

const [model, text, idsArg, out, lora] = process.argv.slice(2);
if (!out) {
    console.error("usage: node logits.mjs MODEL.gguf TEXT IDS OUT [LORA.gguf]");
    process.exit(2);
}
const ids = idsArg.split(",").map(Number);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const m = await llama.loadModel({modelPath: model});
const textIds = m.tokenize(text, false);
fs.writeFileSync(out + ".ids.i32", Buffer.from(Int32Array.from(textIds).buffer));

const ctx = await m.createContext({
    contextSize: Math.max(64, ids.length + 8),
    batchSize: Math.max(64, ids.length + 8),
    threads: 1,
    flashAttention: false,
    experimentalKvCacheKeyType: "F32",
    experimentalKvCacheValueType: "F32",
    ...(lora ? {lora: {adapters: [{filePath: lora, scale: 1}]}} : {}),
});
const seq = ctx.getSequence();
const res = await seq.controlledEvaluate(ids.map((t) => [t, {generateNext: {logits: true}}]));
let V = 0;
for (const r of res) for (const [t] of r.next.logits) V = Math.max(V, t + 1);
const logits = new Float32Array(ids.length * V);
res.forEach((r, i) => {
    for (const [t, v] of r.next.logits) logits[i * V + t] = v;
});
fs.writeFileSync(out + ".logits.f32", Buffer.from(logits.buffer));
console.log(JSON.stringify({n_vocab: V, n_ids: ids.length, n_text_ids: textIds.length}));
await ctx.dispose();
await m.dispose();
await llama.dispose();
