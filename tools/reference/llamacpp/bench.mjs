// llama.cpp's speed on a GGUF file, for tools/bench_llamacpp.sh (netgpt beside llama.cpp on the
// same file, the same machine, the same run).
//
//   node bench.mjs MODEL.gguf PROMPT_TEXT N_GEN THREADS
//
// Prefill: the tokens of PROMPT_TEXT in one batch into an empty context. Decode: N_GEN tokens
// generated greedily one at a time after a 1-token prompt (the time from the first generated
// token to the last, over N_GEN - 1 steps). llama.cpp's defaults otherwise (f16 KV cache).
// Each is run twice and the faster run counts. Prints one JSON line {"prompt_tokens", "prefill_tok_s",
// "decode_tok_s"}.
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [model, text] = process.argv.slice(2, 4), [nGen, threads] = process.argv.slice(4).map(Number);
if (!threads) {
    console.error("usage: node bench.mjs MODEL.gguf PROMPT_TEXT N_GEN THREADS");
    process.exit(2);
}
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: threads});
const m = await llama.loadModel({modelPath: model});
const prompt = m.tokenize(text), nPrompt = prompt.length;

const now = () => Number(process.hrtime.bigint()) / 1e9;
let prefill = 0, decode = 0;
for (let rep = 0; rep < 2; rep++) {
    const ctx = await m.createContext({contextSize: nPrompt + nGen + 16, batchSize: nPrompt, threads});
    const seq = ctx.getSequence();
    let t0 = now();
    await seq.evaluateWithoutGeneratingNewTokens(prompt);
    prefill = Math.max(prefill, nPrompt / (now() - t0));
    await seq.clearHistory();
    let n = 0, first = 0;
    for await (const tok of seq.evaluate([prompt[0]], {temperature: 0})) {
        void tok;
        if (n++ === 0) first = now();
        if (n === nGen) break;
    }
    decode = Math.max(decode, (nGen - 1) / (now() - first));
    await ctx.dispose();
}
console.log(JSON.stringify({prompt_tokens: nPrompt, prefill_tok_s: prefill, decode_tok_s: decode}));
await m.dispose();
await llama.dispose();
