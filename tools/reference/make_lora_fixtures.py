#!/usr/bin/env python3
"""Make the LoRA inference fixtures: a PEFT adapter (adapter_config.json +
adapter_model.safetensors, Hugging Face names and layouts) for gpt2-tiny-a and llama-tiny-a,
and the logits of base + adapter from the references (gpt2_ref.py, llama_ref.py).

The reference applies the adapter by adding s * B @ A (s = lora_alpha / r) to each target
weight in the Hugging Face layout (Linear (out, in); GPT-2's Conv1D (in, out), so the delta is
transposed) and runs the unchanged forward. netgpt instead keeps A and B apart, permutes
LLaMA's q/k rows into its own RoPE layout and adds B (A x) at run time, so matching these
logits checks its names, shapes, permutation and scale independently.

Writes tests/testdata/lora/<model>/ : adapter_config.json, adapter_model.safetensors,
logits_lora.f32 (float32 (64, vocab) for the model's tokens.i32), ref.json.
"""
import json
import os

import numpy as np
import torch

import gpt2_ref
import llama_ref
from safetensors_io import read_safetensors, write_safetensors

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "tests", "testdata")
RANK, ALPHA, STD = 4, 8.0, 0.15


def load_hf(name):
    d = os.path.join(DATA, name)
    with open(os.path.join(d, "config.json")) as f:
        cfg_json = json.load(f)
    tensors, _ = read_safetensors(os.path.join(d, "model.safetensors"))
    tokens = np.fromfile(os.path.join(d, "tokens.i32"), dtype="<i4").tolist()
    return cfg_json, tensors, tokens


def main():
    torch.set_num_threads(1)
    specs = [
        ("gpt2-tiny-a", gpt2_ref, "gpt2",
         [("attn.c_attn", True), ("attn.c_proj", True), ("mlp.c_fc", True), ("mlp.c_proj", True)],
         "base_model.model.transformer.h.{i}.{m}", "h.{i}.{m}.weight"),
        ("llama-tiny-a", llama_ref, "llama",
         [("self_attn.q_proj", False), ("self_attn.k_proj", False), ("self_attn.v_proj", False),
          ("self_attn.o_proj", False), ("mlp.gate_proj", False), ("mlp.up_proj", False),
          ("mlp.down_proj", False)],
         "base_model.model.model.layers.{i}.{m}", "model.layers.{i}.{m}.weight"),
    ]
    for seed, (name, ref, kind, modules, peft_fmt, base_fmt) in enumerate(specs):
        cfg_json, tensors, tokens = load_hf(name)
        cfg = ref.Config.from_json(cfg_json)
        n_layer = cfg_json["n_layer"] if kind == "gpt2" else cfg_json["num_hidden_layers"]
        rng = np.random.default_rng(9000 + seed)
        adapter, merged = {}, dict(tensors)
        for i in range(n_layer):
            for m, conv1d in modules:
                w = tensors[base_fmt.format(i=i, m=m)]
                d_in, d_out = (w.shape[0], w.shape[1]) if conv1d else (w.shape[1], w.shape[0])
                a = (rng.standard_normal((RANK, d_in)) * STD).astype(np.float32)
                b = (rng.standard_normal((d_out, RANK)) * STD).astype(np.float32)
                key = peft_fmt.format(i=i, m=m)
                adapter[key + ".lora_A.weight"] = a
                adapter[key + ".lora_B.weight"] = b
                delta = (ALPHA / RANK) * (b.astype(np.float64) @ a.astype(np.float64))  # (out, in)
                merged[base_fmt.format(i=i, m=m)] = w.astype(np.float64) + (delta.T if conv1d else delta)
        out = os.path.join(DATA, "lora", name)
        os.makedirs(out, exist_ok=True)
        write_safetensors(os.path.join(out, "adapter_model.safetensors"), dict(sorted(adapter.items())))
        config = {"peft_type": "LORA", "r": RANK, "lora_alpha": ALPHA, "lora_dropout": 0.0, "bias": "none",
                  "fan_in_fan_out": kind == "gpt2", "task_type": "CAUSAL_LM",
                  "target_modules": sorted({m.split(".")[-1] for m, _ in modules})}
        with open(os.path.join(out, "adapter_config.json"), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        params = ref.load_params(merged, cfg)
        logits = ref.forward(params, cfg, tokens).numpy().astype("<f4")
        logits.tofile(os.path.join(out, "logits_lora.f32"))
        manifest = {"generator": "tools/reference/make_lora_fixtures.py", "base": f"tests/testdata/{name}",
                    "rank": RANK, "lora_alpha": ALPHA, "seed": 9000 + seed,
                    "logits_lora.f32": {"dtype": "float32", "shape": list(logits.shape),
                                        "meaning": "logits of the base model's tokens.i32 with the adapter merged "
                                                   "in float64 (W + alpha/r * B @ A)"}}
        with open(os.path.join(out, "ref.json"), "w") as f:
            json.dump(manifest, f, indent=2)
        print(f"{name}: adapter on {len(modules)} modules x {n_layer} layers, logits {logits.shape}")


if __name__ == "__main__":
    main()
