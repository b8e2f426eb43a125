#!/usr/bin/env python3
"""Writes tests/testdata/gpt2-tiny-a/llamacpp-f16.gguf: the gpt2-tiny-a model as llama.cpp's
Hugging Face converter lays out a GPT-2 (tensor names, Conv1D weights transposed to
(out, in), the tied output head written out, 2-D tensors f16 and 1-D f32, its metadata keys)
with a small byte-level BPE tokenizer (256 byte symbols + 63 merges learned here from a
sentence + <|endoftext|> = 320 tokens). The C tests load it and compare its logits with
logits_f16w.f32, which proves netgpt reads files it did not write itself.
"""
import collections
import os

import numpy as np

from gguf_io import ARR, BOOL, F32, GGML_F16, GGML_F32, I32, STR, U32, write_gguf
from safetensors_io import read_safetensors

HERE = os.path.dirname(os.path.abspath(__file__))
DIR = os.path.join(HERE, "..", "..", "tests", "testdata", "gpt2-tiny-a")
TEXT = ("the edge node knows where the user is and what is near, so the cloud gets a better prompt "
        "and the user gets a better answer; the network learns what will be popular next")


def byte_alphabet():
    """GPT-2's printable stand-ins for the 256 byte values, in byte order."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra, out = 0, []
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def learn_merges(n):
    """Plain BPE training on TEXT split at spaces (a space joins the next word, as GPT-2 does)."""
    alpha = byte_alphabet()
    words = collections.Counter()
    for i, w in enumerate(TEXT.split(" ")):
        words[tuple(alpha[b] for b in ((" " if i else "") + w).encode())] += 1
    merges = []
    for _ in range(n):
        pairs = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        new = collections.Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == (a, b):
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        words = new
    return merges


def main():
    tensors_in, _ = read_safetensors(os.path.join(DIR, "model.safetensors"))
    n_layer, n_embd = 2, 64
    merges = learn_merges(63)
    tokens = byte_alphabet() + [a + b for a, b in merges] + ["<|endoftext|>"]
    assert len(tokens) == 320 and len(set(tokens)) == 320
    types = [1] * 319 + [3]

    def conv(name):  # HF Conv1D (in, out) -> (out, in)
        return np.ascontiguousarray(tensors_in[name].T)

    t = [("token_embd.weight", tensors_in["wte.weight"], GGML_F16),
         ("output.weight", tensors_in["wte.weight"], GGML_F16),
         ("position_embd.weight", tensors_in["wpe.weight"], GGML_F16)]
    for i in range(n_layer):
        h, b = f"h.{i}.", f"blk.{i}."
        t += [(b + "attn_norm.weight", tensors_in[h + "ln_1.weight"], GGML_F32),
              (b + "attn_norm.bias", tensors_in[h + "ln_1.bias"], GGML_F32),
              (b + "attn_qkv.weight", conv(h + "attn.c_attn.weight"), GGML_F16),
              (b + "attn_qkv.bias", tensors_in[h + "attn.c_attn.bias"], GGML_F32),
              (b + "attn_output.weight", conv(h + "attn.c_proj.weight"), GGML_F16),
              (b + "attn_output.bias", tensors_in[h + "attn.c_proj.bias"], GGML_F32),
              (b + "ffn_norm.weight", tensors_in[h + "ln_2.weight"], GGML_F32),
              (b + "ffn_norm.bias", tensors_in[h + "ln_2.bias"], GGML_F32),
              (b + "ffn_up.weight", conv(h + "mlp.c_fc.weight"), GGML_F16),
              (b + "ffn_up.bias", tensors_in[h + "mlp.c_fc.bias"], GGML_F32),
              (b + "ffn_down.weight", conv(h + "mlp.c_proj.weight"), GGML_F16),
              (b + "ffn_down.bias", tensors_in[h + "mlp.c_proj.bias"], GGML_F32)]
    t += [("output_norm.weight", tensors_in["ln_f.weight"], GGML_F32),
          ("output_norm.bias", tensors_in["ln_f.bias"], GGML_F32)]
    kvs = [("general.architecture", STR, "gpt2"),
           ("general.type", STR, "model"),
           ("general.name", STR, "gpt2-tiny-a"),
           ("gpt2.block_count", U32, n_layer),
           ("gpt2.context_length", U32, 96),
           ("gpt2.embedding_length", U32, n_embd),
           ("gpt2.feed_forward_length", U32, 4 * n_embd),
           ("gpt2.attention.head_count", U32, 4),
           ("gpt2.attention.layer_norm_epsilon", F32, 1e-5),
           ("general.file_type", U32, 1),
           ("general.quantization_version", U32, 2),
           ("tokenizer.ggml.model", STR, "gpt2"),
           ("tokenizer.ggml.pre", STR, "gpt-2"),
           ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
           ("tokenizer.ggml.token_type", ARR, (I32, types)),
           ("tokenizer.ggml.merges", ARR, (STR, [a + " " + b for a, b in merges])),
           ("tokenizer.ggml.bos_token_id", U32, 319),
           ("tokenizer.ggml.eos_token_id", U32, 319),
           ("tokenizer.ggml.unknown_token_id", U32, 319),
           ("tokenizer.ggml.add_bos_token", BOOL, False)]
    out = os.path.join(DIR, "llamacpp-f16.gguf")
    write_gguf(out, kvs, t)
    print(f"wrote {os.path.relpath(out, HERE)} ({os.path.getsize(out)} bytes), merges: {merges[:6]}...")


if __name__ == "__main__":
    main()
