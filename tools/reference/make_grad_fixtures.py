#!/usr/bin/env python3
"""Make the training fixtures: loss and gradients of the tiny GPT-2 and LLaMA models.

For tests/testdata/gpt2-tiny-a and llama-tiny-a (weights as stored), this runs the float64
forward passes of gpt2_ref.py / llama_ref.py on a fixed batch (B=2 sequences of T=16 tokens,
random targets, a partial loss mask), takes the masked mean cross-entropy, and lets torch
autograd (float64) produce the gradients the C training code must reproduce:

    tests/testdata/grads/<model>/
      tokens.i32   int32 (B*T)    input ids
      targets.i32  int32 (B*T)    target ids
      mask.f32     float32 (B*T)  1 where the loss counts, 0 elsewhere
      grads.f32    float32        full fine-tuning: loss gradients of every parameter, then
                                  of the residual stream at every layer boundary
      lora.f32     float32        LoRA: the adapters A, B used (inputs), then their gradients
      ref.json     loss values, shapes, offsets (in floats) and meanings of every tensor

Everything is in the engine's layout and under llama.cpp's tensor names, so the C test
compares buffers directly: matrices are (out, in) rows (GPT-2's Conv1D weights are
transposed), LLaMA's q/k rows are in the interleaved-RoPE order the engine loads Hugging
Face checkpoints into (the reference then runs with interleaved RoPE, the same model).

Vocabulary- and position-sized gradients (token_embd, output, position_embd) are stored only
for a subset of rows to keep the fixtures small (< 1 MB): every 16th row plus every row the
batch touches; ref.json lists the rows.

LoRA: rank 4, alpha 8 (scale alpha/rank = 2), no dropout, adapters on every target module
(GPT-2: q, k, v as three row slices of the fused attn_qkv, o, up, down; LLaMA: q, k, v, o,
gate, up, down). y = x W^T + scale * (x A^T) B^T equals x (W + scale B A)^T, which is how the
reference applies them, so autograd differentiates A and B through the effective weight.

Usage: make_grad_fixtures.py [--out DIR]   (default: tests/testdata/grads of this repository)
"""

import argparse
import json
import os
import sys
from collections import OrderedDict

import numpy as np
import torch

import gpt2_ref
import llama_ref
from safetensors_io import read_safetensors

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.join(HERE, "..", "..", "tests", "testdata")

B, T = 2, 16
RANK, ALPHA = 4, 8.0
ROW_STRIDE = 16
DT = torch.float64


def batch(vocab, seed):
    rng = np.random.Generator(np.random.PCG64(seed))
    tokens = rng.integers(0, vocab, size=(B, T)).astype(np.int32)
    targets = rng.integers(0, vocab, size=(B, T)).astype(np.int32)
    mask = np.zeros((B, T), dtype=np.float32)
    mask[0, 4:] = 1          # a prompt of 4 tokens, then the response
    mask[1, 9:] = 1
    mask[1, 12] = 0          # a hole inside the response too
    return tokens, targets, mask


def perm_interleaved(n_heads, hd):
    """Engine row r of a q/k projection is Hugging Face row perm[r] (rotate_half -> pairs)."""
    half = hd // 2
    perm = []
    for h in range(n_heads):
        for r in range(hd):
            j, s = r // 2, r % 2
            perm.append(h * hd + s * half + j)
    return torch.tensor(perm)


def engine_params(name, hf, cfg):
    """OrderedDict engine name -> float64 leaf tensor (engine layout), from HF params."""
    e = OrderedDict()
    if name.startswith("gpt2"):
        e["token_embd.weight"] = hf["wte.weight"]
        e["position_embd.weight"] = hf["wpe.weight"]
        for i in range(cfg.n_layer):
            h = f"h.{i}."
            b = f"blk.{i}."
            e[b + "attn_norm.weight"] = hf[h + "ln_1.weight"]
            e[b + "attn_norm.bias"] = hf[h + "ln_1.bias"]
            e[b + "attn_qkv.weight"] = hf[h + "attn.c_attn.weight"].T
            e[b + "attn_qkv.bias"] = hf[h + "attn.c_attn.bias"]
            e[b + "attn_output.weight"] = hf[h + "attn.c_proj.weight"].T
            e[b + "attn_output.bias"] = hf[h + "attn.c_proj.bias"]
            e[b + "ffn_norm.weight"] = hf[h + "ln_2.weight"]
            e[b + "ffn_norm.bias"] = hf[h + "ln_2.bias"]
            e[b + "ffn_up.weight"] = hf[h + "mlp.c_fc.weight"].T
            e[b + "ffn_up.bias"] = hf[h + "mlp.c_fc.bias"]
            e[b + "ffn_down.weight"] = hf[h + "mlp.c_proj.weight"].T
            e[b + "ffn_down.bias"] = hf[h + "mlp.c_proj.bias"]
        e["output_norm.weight"] = hf["ln_f.weight"]
        e["output_norm.bias"] = hf["ln_f.bias"]
    else:
        pq = perm_interleaved(cfg.n_head, cfg.head_dim)
        pk = perm_interleaved(cfg.n_kv_head, cfg.head_dim)
        e["token_embd.weight"] = hf["model.embed_tokens.weight"]
        for i in range(cfg.n_layer):
            h = f"model.layers.{i}."
            b = f"blk.{i}."
            e[b + "attn_norm.weight"] = hf[h + "input_layernorm.weight"]
            e[b + "attn_q.weight"] = hf[h + "self_attn.q_proj.weight"][pq]
            e[b + "attn_k.weight"] = hf[h + "self_attn.k_proj.weight"][pk]
            e[b + "attn_v.weight"] = hf[h + "self_attn.v_proj.weight"]
            e[b + "attn_output.weight"] = hf[h + "self_attn.o_proj.weight"]
            e[b + "ffn_norm.weight"] = hf[h + "post_attention_layernorm.weight"]
            e[b + "ffn_gate.weight"] = hf[h + "mlp.gate_proj.weight"]
            e[b + "ffn_up.weight"] = hf[h + "mlp.up_proj.weight"]
            e[b + "ffn_down.weight"] = hf[h + "mlp.down_proj.weight"]
        e["output_norm.weight"] = hf["model.norm.weight"]
        e["output.weight"] = hf["lm_head.weight"]
    return OrderedDict((k, v.detach().clone().contiguous().requires_grad_(True)) for k, v in e.items())


def hf_view(name, e, cfg):
    """The reference's parameter dict (HF names) as differentiable functions of e."""
    p = {}
    if name.startswith("gpt2"):
        p["wte.weight"] = e["token_embd.weight"]
        p["wpe.weight"] = e["position_embd.weight"]
        for i in range(cfg.n_layer):
            h, b = f"h.{i}.", f"blk.{i}."
            p[h + "ln_1.weight"] = e[b + "attn_norm.weight"]
            p[h + "ln_1.bias"] = e[b + "attn_norm.bias"]
            p[h + "attn.c_attn.weight"] = e[b + "attn_qkv.weight"].T
            p[h + "attn.c_attn.bias"] = e[b + "attn_qkv.bias"]
            p[h + "attn.c_proj.weight"] = e[b + "attn_output.weight"].T
            p[h + "attn.c_proj.bias"] = e[b + "attn_output.bias"]
            p[h + "ln_2.weight"] = e[b + "ffn_norm.weight"]
            p[h + "ln_2.bias"] = e[b + "ffn_norm.bias"]
            p[h + "mlp.c_fc.weight"] = e[b + "ffn_up.weight"].T
            p[h + "mlp.c_fc.bias"] = e[b + "ffn_up.bias"]
            p[h + "mlp.c_proj.weight"] = e[b + "ffn_down.weight"].T
            p[h + "mlp.c_proj.bias"] = e[b + "ffn_down.bias"]
        p["ln_f.weight"] = e["output_norm.weight"]
        p["ln_f.bias"] = e["output_norm.bias"]
    else:
        p["model.embed_tokens.weight"] = e["token_embd.weight"]
        for i in range(cfg.n_layer):
            h, b = f"model.layers.{i}.", f"blk.{i}."
            p[h + "input_layernorm.weight"] = e[b + "attn_norm.weight"]
            p[h + "self_attn.q_proj.weight"] = e[b + "attn_q.weight"]
            p[h + "self_attn.k_proj.weight"] = e[b + "attn_k.weight"]
            p[h + "self_attn.v_proj.weight"] = e[b + "attn_v.weight"]
            p[h + "self_attn.o_proj.weight"] = e[b + "attn_output.weight"]
            p[h + "post_attention_layernorm.weight"] = e[b + "ffn_norm.weight"]
            p[h + "mlp.gate_proj.weight"] = e[b + "ffn_gate.weight"]
            p[h + "mlp.up_proj.weight"] = e[b + "ffn_up.weight"]
            p[h + "mlp.down_proj.weight"] = e[b + "ffn_down.weight"]
        p["model.norm.weight"] = e["output_norm.weight"]
        p["lm_head.weight"] = e["output.weight"]
    return p


def run(name, p, cfg, tokens, targets, mask):
    """Masked mean cross-entropy over the batch; also the residual stream at every layer
    boundary (B*T, dim) with retained gradients."""
    gpt2 = name.startswith("gpt2")
    seqs, boundaries = [], [[] for _ in range(cfg.n_layer + 1)]
    for b in range(B):
        tok = torch.as_tensor(tokens[b], dtype=torch.long)
        if gpt2:
            h = p["wte.weight"][tok] + p["wpe.weight"][:T]
        else:
            h = p["model.embed_tokens.weight"][tok]
        for i in range(cfg.n_layer + 1):
            if h.requires_grad:
                h.retain_grad()
            boundaries[i].append(h)
            if i == cfg.n_layer:
                break
            if gpt2:
                a = gpt2_ref.layer_norm(h, p[f"h.{i}.ln_1.weight"], p[f"h.{i}.ln_1.bias"], cfg.eps)
                h = h + gpt2_ref._attention(a, p, i, cfg, 0, [])
                m = gpt2_ref.layer_norm(h, p[f"h.{i}.ln_2.weight"], p[f"h.{i}.ln_2.bias"], cfg.eps)
                m = gpt2_ref.gelu_new(m @ p[f"h.{i}.mlp.c_fc.weight"] + p[f"h.{i}.mlp.c_fc.bias"])
                h = h + (m @ p[f"h.{i}.mlp.c_proj.weight"] + p[f"h.{i}.mlp.c_proj.bias"])
            else:
                pre = f"model.layers.{i}."
                a = llama_ref.rms_norm(h, p[pre + "input_layernorm.weight"], cfg.eps)
                h = h + llama_ref._attention(a, p, i, cfg, 0, [])
                m = llama_ref.rms_norm(h, p[pre + "post_attention_layernorm.weight"], cfg.eps)
                h = h + llama_ref._mlp(m, p, i)
        if gpt2:
            h = gpt2_ref.layer_norm(h, p["ln_f.weight"], p["ln_f.bias"], cfg.eps)
            logits = h @ p["wte.weight"].T
        else:
            h = llama_ref.rms_norm(h, p["model.norm.weight"], cfg.eps)
            logits = h @ p["lm_head.weight"].T
        seqs.append(logits)
    logits = torch.stack(seqs)                                            # (B, T, V)
    logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    tgt = torch.as_tensor(targets, dtype=torch.long)
    nll = -logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)                 # (B, T)
    m = torch.as_tensor(mask, dtype=DT)
    loss = (nll * m).sum() / m.sum()
    return loss, boundaries


def lora_targets(name, cfg):
    """(module, weight name, row0, rows) for every adapter of a layer; GPT-2's q/k/v are row
    slices of the fused attn_qkv."""
    if name.startswith("gpt2"):
        C = cfg.n_embd
        return [("q", "attn_qkv", 0, C), ("k", "attn_qkv", C, C), ("v", "attn_qkv", 2 * C, C),
                ("o", "attn_output", 0, C), ("up", "ffn_up", 0, cfg.n_inner),
                ("down", "ffn_down", 0, C)]
    D, KV = cfg.dim, cfg.n_kv_head * cfg.head_dim
    return [("q", "attn_q", 0, D), ("k", "attn_k", 0, KV), ("v", "attn_v", 0, KV),
            ("o", "attn_output", 0, D), ("gate", "ffn_gate", 0, cfg.hidden),
            ("up", "ffn_up", 0, cfg.hidden), ("down", "ffn_down", 0, D)]


def selected_rows(pname, tokens, targets, n_rows):
    rows = set(range(0, n_rows, ROW_STRIDE))
    if pname == "token_embd.weight":
        rows |= set(int(t) for t in tokens.flat)
    elif pname == "output.weight":
        rows |= set(int(t) for t in targets.flat)
    elif pname == "position_embd.weight":
        rows |= set(range(T))
    else:
        return None
    return sorted(rows)


class Blob:
    """Concatenated float32 tensors with a manifest entry each."""

    def __init__(self, fname):
        self.fname, self.parts, self.entries, self.off = fname, [], [], 0

    def add(self, name, arr, meaning, rows=None):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        entry = OrderedDict(name=name, shape=list(arr.shape), offset=self.off, meaning=meaning)
        if rows is not None:
            entry["rows"] = rows
        self.parts.append(arr.ravel())
        self.entries.append(entry)
        self.off += arr.size

    def write(self, d):
        data = np.concatenate(self.parts).astype("<f4")
        data.tofile(os.path.join(d, self.fname))
        return data.nbytes


def make(name, seed, out_root):
    src = os.path.join(TESTDATA, name)
    with open(os.path.join(src, "config.json")) as f:
        cj = json.load(f)
    sd, _ = read_safetensors(os.path.join(src, "model.safetensors"))
    if name.startswith("gpt2"):
        cfg = gpt2_ref.Config.from_json(cj)
        hf = gpt2_ref.load_params(sd, cfg)
        vocab = cfg.vocab_size
    else:
        cfg = llama_ref.Config.from_json(cj)
        hf = llama_ref.load_params(sd, cfg)
        cfg.rope_interleaved = True  # q/k rows are permuted into the engine's order below
        vocab = cfg.vocab_size
    tokens, targets, mask = batch(vocab, seed)

    # full fine-tuning: every parameter
    e = engine_params(name, hf, cfg)
    loss, bounds = run(name, hf_view(name, e, cfg), cfg, tokens, targets, mask)
    loss.backward()
    g = Blob("grads.f32")
    for pname, t in e.items():
        grad = t.grad.numpy()
        rows = selected_rows(pname, tokens, targets, grad.shape[0])
        g.add(pname, grad[rows] if rows is not None else grad,
              "d loss / d parameter, engine layout" + (", listed rows only" if rows else ""), rows)
    for i, hs in enumerate(bounds):
        grad = torch.cat([h.grad for h in hs]).numpy()
        g.add(f"res.{i}", grad, f"d loss / d residual stream entering layer {i}"
              + (" (= final norm input)" if i == cfg.n_layer else "") + ", (B*T, dim)")

    # LoRA on every target, frozen base
    rng = np.random.Generator(np.random.PCG64(seed + 1))
    base = OrderedDict((k, v.detach()) for k, v in e.items())
    adapters = OrderedDict()
    for i in range(cfg.n_layer):
        for mod, wname, row0, rows in lora_targets(name, cfg):
            K = base[f"blk.{i}.{wname}.weight"].shape[1]
            bound = 1.0 / np.sqrt(K)
            A = torch.tensor(rng.uniform(-bound, bound, size=(RANK, K)), dtype=DT, requires_grad=True)
            Bm = torch.tensor(rng.normal(0.0, 0.05, size=(rows, RANK)), dtype=DT, requires_grad=True)
            adapters[(i, mod)] = (wname, row0, rows, A, Bm)
    scale = ALPHA / RANK
    eff = OrderedDict(base)
    for (i, mod), (wname, row0, rows, A, Bm) in adapters.items():
        key = f"blk.{i}.{wname}.weight"
        N, K = base[key].shape
        delta = torch.cat([torch.zeros(row0, K, dtype=DT), scale * (Bm @ A),
                           torch.zeros(N - row0 - rows, K, dtype=DT)])
        eff[key] = eff[key] + delta
    lora_loss, _ = run(name, hf_view(name, eff, cfg), cfg, tokens, targets, mask)
    lora_loss.backward()
    lb = Blob("lora.f32")
    for (i, mod), (_, _, _, A, Bm) in adapters.items():
        lb.add(f"blk.{i}.{mod}.lora_a", A.detach().numpy(), "adapter A (rank, in), input")
        lb.add(f"blk.{i}.{mod}.lora_b", Bm.detach().numpy(), "adapter B (out, rank), input")
    for (i, mod), (_, _, _, A, Bm) in adapters.items():
        lb.add(f"blk.{i}.{mod}.lora_a.grad", A.grad.numpy(), "d loss / d A")
        lb.add(f"blk.{i}.{mod}.lora_b.grad", Bm.grad.numpy(), "d loss / d B")

    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    tokens.ravel().astype("<i4").tofile(os.path.join(d, "tokens.i32"))
    targets.ravel().astype("<i4").tofile(os.path.join(d, "targets.i32"))
    mask.ravel().astype("<f4").tofile(os.path.join(d, "mask.f32"))
    nbytes = g.write(d) + lb.write(d) + tokens.nbytes + targets.nbytes + mask.nbytes
    ref = OrderedDict()
    ref["generator"] = "tools/reference/make_grad_fixtures.py"
    ref["model"] = f"tests/testdata/{name} (weights as stored)"
    ref["batch_seed"] = seed
    ref["B"], ref["T"] = B, T
    ref["loss"] = float(loss)
    ref["loss_meaning"] = "mean over mask==1 positions of -log softmax(logits)[target], float64"
    ref["lora"] = OrderedDict(rank=RANK, alpha=ALPHA, dropout=0.0, loss=float(lora_loss),
                              targets=[t[0] for t in lora_targets(name, cfg)],
                              adapter_seed=seed + 1)
    ref["rope"] = "interleaved pairs; LLaMA q/k rows permuted from HF order as the engine loads them"
    ref["byte_order"] = "little-endian, no header; offsets and shapes in float32 elements"
    ref["grads.f32"] = g.entries
    ref["lora.f32"] = lb.entries
    with open(os.path.join(d, "ref.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    print(f"{name}: loss {float(loss):.6f}, lora loss {float(lora_loss):.6f}, {nbytes} bytes")
    return nbytes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(TESTDATA, "grads"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    total = make("gpt2-tiny-a", 9000, args.out) + make("llama-tiny-a", 9100, args.out)
    if total >= 1 << 20:
        sys.exit(f"fixtures take {total} bytes, over the 1 MiB budget")


if __name__ == "__main__":
    main()
