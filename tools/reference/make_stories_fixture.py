#!/usr/bin/env python3
"""Make the stories260K fixture: reference outputs of the one real pretrained model here.

stories260K is a LLaMA-architecture model from the llama2.c project (dim 64, 5 layers,
8 query heads on 4 KV heads, vocab 512) trained on TinyStories. It lives outside the
repository, at ../shared/models relative to the repository root, and is never copied in;
tests that need it skip when that folder is absent. This script writes only small files to
tests/testdata/stories260K/:

    greedy_prompt.i32  int32 (5,)     BOS then "Once upon a time", tokenized with tok512.bin
    greedy_ids.i32     int32 (64,)    ids generated greedily after the prompt
    tokens.i32         int32 (32,)    BOS then the start of a TinyStories-like text
    logits_f32.f32     float32 (32, 512)  logits at every position of tokens.i32
    ref.json           manifest, the texts, the decoded greedy output and the margins

Random weights can hide a wrong-but-consistent implementation; a trained model cannot: the
decoded greedy output must read as fluent TinyStories English, and it is recorded in
ref.json for a person to see. The checkpoint uses llama2.c's interleaved RoPE, so the
references are computed in that convention, and the script checks that converting the q/k
rows to Hugging Face's rotate_half order gives the same logits.

Usage: make_stories_fixture.py [--out DIR] [--models DIR]
"""

import argparse
import copy
import hashlib
import json
import os
import struct
import sys
from collections import OrderedDict

import numpy as np
import torch

from llama_ref import (forward, forward_incremental, greedy, llama2c_rows_to_hf, load_llama2c,
                       param_shapes)
from make_gpt2_fixtures import sig, variants, write_bin

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "..", "tests", "testdata")
DEFAULT_MODELS = os.path.join(HERE, "..", "..", "..", "shared", "models")

MODEL_FILE = "stories260K.bin"
MODEL_SHA256 = "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696"
TOKENIZER_FILE = "tok512.bin"
TOKENIZER_SHA256 = "037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312"

BOS = 1
PROMPT_TEXT = "Once upon a time"
LOGITS_TEXT = ("Once upon a time, there was a little girl named Lily. She loved to play "
               "outside in the park with her friends.")
N_LOGITS = 32
N_GREEDY = 64


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Tok512:
    """llama2.c tokenizer file: int32 max_token_length, then per piece float32 score,
    int32 byte length, bytes. Pieces 3..258 are the byte-fallback pieces <0x00>..<0xFF>.

    llama2.c's export already turned SentencePiece's '▁' into ' '; a '▁' that remains is
    treated the same, so either spelling decodes to a space.
    """

    def __init__(self, path):
        with open(path, "rb") as f:
            buf = f.read()
        off = 4
        self.pieces, self.scores = [], []
        while off < len(buf):
            score, n = struct.unpack_from("<fi", buf, off)
            off += 8
            self.pieces.append(buf[off : off + n].decode("utf-8").replace("\u2581", " "))
            self.scores.append(score)
            off += n
        self.id_of = {p: i for i, p in enumerate(self.pieces)}

    def encode(self, text):
        """SentencePiece BPE as llama2.c's encoder does it: a dummy-prefix space, one piece
        per character (bytes via <0xNN> when the character has none), then repeatedly merge
        the adjacent pair whose concatenation is the highest-scoring piece (leftmost on a
        tie). BOS is not added."""
        ids = []
        for ch in " " + text:
            if ch in self.id_of:
                ids.append(self.id_of[ch])
            else:
                ids.extend(3 + b for b in ch.encode("utf-8"))
        while True:
            best, best_score = None, None
            for j in range(len(ids) - 1):
                merged = self.id_of.get(self.pieces[ids[j]] + self.pieces[ids[j + 1]])
                if merged is not None and (best is None or self.scores[merged] > best_score):
                    best, best_score = j, self.scores[merged]
            if best is None:
                return ids
            ids[best : best + 2] = [self.id_of[self.pieces[ids[best]] + self.pieces[ids[best + 1]]]]

    def decode(self, ids, prev=BOS):
        """Text of `ids`; as in llama2.c, the space a piece starts with is dropped right
        after BOS (it is SentencePiece's dummy prefix), and <0xNN> pieces are raw bytes."""
        out = bytearray()
        for t in ids:
            p = self.pieces[t]
            if prev == BOS and p.startswith(" "):
                p = p[1:]
            if len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
                out.append(int(p[3:5], 16))
            else:
                out.extend(p.encode("utf-8"))
            prev = t
        return out.decode("utf-8", errors="replace")


def check_hf_route(cfg, p, ids, ref):
    """The same model through Hugging Face's rotate_half RoPE: q/k rows permuted per head,
    everything else unchanged. Must agree with the interleaved computation to rounding."""
    hf = dict(p)
    for i in range(cfg.n_layer):
        for proj, heads in (("q_proj", cfg.n_head), ("k_proj", cfg.n_kv_head)):
            name = f"model.layers.{i}.self_attn.{proj}.weight"
            hf[name] = llama2c_rows_to_hf(p[name], heads, cfg.head_dim)
    hf_cfg = copy.copy(cfg)
    hf_cfg.rope_interleaved = False
    d = float((forward(hf, hf_cfg, ids) - ref).abs().max())
    assert d < 1e-9, f"rotate_half route differs from interleaved by {d}"
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="fixture root (default: tests/testdata)")
    ap.add_argument("--models", default=DEFAULT_MODELS,
                    help="folder with stories260K.bin and tok512.bin (default: ../shared/models "
                         "relative to the repository root)")
    args = ap.parse_args()
    model_path = os.path.join(args.models, MODEL_FILE)
    tok_path = os.path.join(args.models, TOKENIZER_FILE)
    for path in (model_path, tok_path):
        if not os.path.isfile(path):
            sys.exit(f"make_stories_fixture: {path} not found; the stories260K fixture needs "
                     f"the shared models folder (../shared/models); fixture left unchanged")
    for path, want in ((model_path, MODEL_SHA256), (tok_path, TOKENIZER_SHA256)):
        got = sha256_of(path)
        if got != want:
            sys.exit(f"make_stories_fixture: {path}: sha256 {got}, expected {want}; "
                     f"fixture left unchanged")

    torch.set_num_threads(1)  # fixed reduction order: bit-identical output on every run
    cfg, p = load_llama2c(model_path)
    tok = Tok512(tok_path)
    assert len(tok.pieces) == cfg.vocab_size, "tokenizer and model disagree on the vocabulary"

    prompt = [BOS] + tok.encode(PROMPT_TEXT)
    tokens = ([BOS] + tok.encode(LOGITS_TEXT))[:N_LOGITS]
    assert len(tokens) == N_LOGITS, "LOGITS_TEXT is too short"
    assert tok.decode(prompt[1:]) == PROMPT_TEXT, "tokenizer does not round-trip the prompt"

    logits = forward(p, cfg, tokens)
    inc_diff = float((forward_incremental(p, cfg, tokens) - logits).abs().max())
    assert inc_diff < 1e-9, f"incremental vs full forward differ by {inc_diff}"
    hf_diff = check_hf_route(cfg, p, tokens, logits)

    # Greedy runs for the float32 weights (the file's) and, for information, with the
    # matrices rounded to float16 / bfloat16, as a converted GGUF would hold them.
    runs = {k: greedy(v, cfg, prompt, N_GREEDY) for k, v in variants(p).items()}
    greedy_ids, margins = runs["f32"]
    text = tok.decode(greedy_ids, prev=prompt[-1])
    same_as_f32 = OrderedDict()
    for k in ("f16", "bf16"):
        ids = runs[k][0]
        diff = [j for j in range(N_GREEDY) if ids[j] != greedy_ids[j]]
        same_as_f32[k] = "same ids" if not diff else f"first differs at step {diff[0]}"

    out = os.path.join(args.out, "stories260K")
    os.makedirs(out, exist_ok=True)
    write_bin(os.path.join(out, "greedy_prompt.i32"), np.array(prompt), np.int32)
    write_bin(os.path.join(out, "greedy_ids.i32"), np.array(greedy_ids), np.int32)
    write_bin(os.path.join(out, "tokens.i32"), np.array(tokens), np.int32)
    write_bin(os.path.join(out, "logits_f32.f32"), logits.numpy(), np.float32)

    full = "computed in float64 by tools/reference/llama_ref.py (full recompute)"
    manifest = OrderedDict([
        ("generator", "tools/reference/make_stories_fixture.py"),
        ("model", OrderedDict([
            ("file", "../shared/models/" + MODEL_FILE + " (relative to the repository root; "
                     "not in the repository)"),
            ("sha256", MODEL_SHA256),
            ("format", "llama2.c checkpoint: 7 int32 header, float32 weights"),
            ("dim", cfg.dim), ("hidden_dim", cfg.hidden), ("n_layers", cfg.n_layer),
            ("n_heads", cfg.n_head), ("n_kv_heads", cfg.n_kv_head),
            ("vocab_size", cfg.vocab_size), ("seq_len", cfg.max_pos),
            ("shared_output_embedding", cfg.tie),
            ("n_params", int(sum(np.prod(s) for s in param_shapes(cfg).values()))),
            ("rms_norm_eps", cfg.eps),
            ("rope", f"interleaved pairs (x[2i], x[2i+1]) (llama2.c/Meta), theta "
                     f"{cfg.rope_theta:g}"),
        ])),
        ("tokenizer", OrderedDict([
            ("file", "../shared/models/" + TOKENIZER_FILE),
            ("sha256", TOKENIZER_SHA256),
        ])),
        ("byte_order", "little-endian, no header"),
        ("files", OrderedDict([
            ("greedy_prompt.i32", {"dtype": "int32", "shape": [len(prompt)],
                                   "text": PROMPT_TEXT,
                                   "meaning": "BOS (1) then the text, SentencePiece-BPE encoded "
                                              "with tok512.bin (dummy-prefix space)"}),
            ("greedy_ids.i32", {"dtype": "int32", "shape": [N_GREEDY],
                                "meaning": "ids generated greedily (argmax of the last logits, "
                                           "appended, repeated) after greedy_prompt.i32, prompt "
                                           "not included; float32 weights, " + full}),
            ("tokens.i32", {"dtype": "int32", "shape": [N_LOGITS],
                            "text": tok.decode(tokens[1:]),
                            "meaning": f"BOS (1) then the first {N_LOGITS - 1} tokens of the text"}),
            ("logits_f32.f32", {"dtype": "float32", "shape": [N_LOGITS, cfg.vocab_size],
                                "meaning": "logits at every position of tokens.i32, float32 "
                                           "weights, " + full}),
        ])),
        ("greedy_text", PROMPT_TEXT + text),
        ("greedy_min_margin", sig(min(margins))),
        ("greedy_with_rounded_weights", same_as_f32),
        ("greedy_min_margin_rounded_weights", OrderedDict(
            (k, sig(min(runs[k][1]))) for k in ("f16", "bf16"))),
        ("logits_f32_std", sig(float(logits.std()))),
        ("incremental_vs_full_max_abs_diff", sig(inc_diff)),
        ("rotate_half_route_max_abs_diff", sig(hf_diff)),
    ])
    with open(os.path.join(out, "ref.json"), "w") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")

    print(f"  stories260K: prompt {prompt}, min greedy margin {min(margins):.4g}, "
          f"incremental/full diff {inc_diff:.2g}, rotate_half route diff {hf_diff:.2g}, "
          f"f16 {same_as_f32['f16']}, bf16 {same_as_f32['bf16']}")
    print(f"    greedy: {PROMPT_TEXT + text!r}")
    for fn in sorted(os.listdir(out)):
        print(f"    {fn:20s} {os.path.getsize(os.path.join(out, fn)):8d} bytes")


if __name__ == "__main__":
    main()
