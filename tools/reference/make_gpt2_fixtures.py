#!/usr/bin/env python3
"""Make the GPT-2 test fixtures: two tiny random GPT-2 models and their reference outputs.

For each model, tests/testdata/<name>/ gets a Hugging Face-style model folder
(config.json + model.safetensors, float32) and the outputs of gpt2_ref.py on it:

    tokens.i32         int32 (64,)          input ids (random, fixed seed)
    logits_f32.f32     float32 (64, vocab)  logits at every position, float32 weights
    logits_f16w.f32    float32 (64, vocab)  same, every weight matrix first rounded to float16
    logits_bf16w.f32   float32 (64, vocab)  same, every weight matrix first rounded to bfloat16
    logits_bf16x.f32   float32 (64, vocab)  as bf16w, every weight product's input rounded to
                                            bfloat16 too (netgpt's AVX512-BF16 prefill)
    greedy_prompt.i32  int32 (8,)           prompt for greedy decoding
    greedy_ids.i32     int32 (64,)          ids generated greedily after the prompt
    ref.json           manifest: shape, dtype, meaning and seed of each file, margins

All binaries are little-endian and headerless. The reference runs in float64; the f16w/bf16w
logits exist because the C engine keeps weights in f16/bf16 and computes in f32, so it should
match those much more tightly than it can match the float32-weight logits.

The two models differ on purpose, each proving a loader path:
  gpt2-tiny-a  bare names (wte.weight, h.0...), n_inner null, plus the causal-mask buffers
               h.{i}.attn.bias that old checkpoints carry and a loader must ignore.
  gpt2-tiny-b  "transformer." prefixed names plus an explicit lm_head.weight (as a
               GPT2LMHeadModel state dict has), n_inner 256 != 4*n_embd.

Everything is deterministic: weights from fixed seeds with numpy's PCG64, single-threaded
float64 math. A weight seed is accepted only if greedy decoding is far from ties (top1-top2
logit gap >= MIN_MARGIN at every step, for f32, f16 and bf16 weights alike, and all three
give the same ids); otherwise the next seed is tried and the one used is recorded.

Usage: make_gpt2_fixtures.py [--out DIR]   (default: tests/testdata of this repository)
"""

import argparse
import json
import os
import sys
from collections import OrderedDict

import numpy as np
import torch

from gpt2_ref import Config, forward, forward_incremental, greedy, load_params
from rounding import input_rounding
from safetensors_io import read_safetensors, write_safetensors

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "..", "tests", "testdata")

N_TOKENS = 64        # length of the logits sequence
N_PROMPT = 8         # greedy prompt length
N_GREEDY = 64        # greedily generated ids
MIN_MARGIN = 1e-3    # smallest acceptable top1-top2 logit gap during greedy decoding
MAX_SEED_TRIES = 100

MODELS = [
    {
        "name": "gpt2-tiny-a",
        "config": dict(vocab_size=320, n_positions=96, n_embd=64, n_head=4, n_layer=2,
                       n_inner=None, layer_norm_epsilon=1e-5),
        "prefix": "",
        "mask_buffers": True,
        "lm_head": False,
        "weight_seed": 1000,
        "token_seed": 2000,
    },
    {
        "name": "gpt2-tiny-b",
        "config": dict(vocab_size=500, n_positions=128, n_embd=96, n_head=6, n_layer=3,
                       n_inner=256, layer_norm_epsilon=1e-5),
        "prefix": "transformer.",
        "mask_buffers": False,
        "lm_head": True,
        "weight_seed": 3000,
        "token_seed": 4000,
    },
]

# Standard deviations of the random init. Larger than GPT-2's 0.02 so the logits spread
# over several units (greedy picks are then robust to float32 rounding) while attention
# stays soft; LayerNorm gains near 1 and all biases non-zero so that a loader dropping or
# misplacing any of them changes the logits visibly.
STD_EMB = 0.2
STD_POS = 0.1
STD_IN = 0.15    # c_attn, c_fc
STD_OUT = 0.1    # attn.c_proj, mlp.c_proj
STD_BIAS = 0.1
STD_LN = 0.1     # spread of LayerNorm gains around 1 and of LayerNorm biases around 0


def hf_config(c):
    """config.json with the keys Hugging Face GPT-2 checkpoints use."""
    return OrderedDict([
        ("architectures", ["GPT2LMHeadModel"]),
        ("model_type", "gpt2"),
        ("vocab_size", c["vocab_size"]),
        ("n_positions", c["n_positions"]),
        ("n_ctx", c["n_positions"]),
        ("n_embd", c["n_embd"]),
        ("n_head", c["n_head"]),
        ("n_layer", c["n_layer"]),
        ("n_inner", c["n_inner"]),
        ("layer_norm_epsilon", c["layer_norm_epsilon"]),
        ("activation_function", "gelu_new"),
        ("bos_token_id", c["vocab_size"] - 1),
        ("eos_token_id", c["vocab_size"] - 1),
    ])


def make_weights(cfg, seed):
    """Random float32 GPT-2 weights, unprefixed HF names, drawn in a fixed order."""
    rng = np.random.Generator(np.random.PCG64(seed))

    def normal(shape, std, mean=0.0):
        return (mean + std * rng.standard_normal(shape)).astype(np.float32)

    C, F = cfg.n_embd, cfg.n_inner
    w = OrderedDict()
    w["wte.weight"] = normal((cfg.vocab_size, C), STD_EMB)
    w["wpe.weight"] = normal((cfg.n_positions, C), STD_POS)
    for i in range(cfg.n_layer):
        w[f"h.{i}.ln_1.weight"] = normal((C,), STD_LN, 1.0)
        w[f"h.{i}.ln_1.bias"] = normal((C,), STD_LN)
        w[f"h.{i}.attn.c_attn.weight"] = normal((C, 3 * C), STD_IN)
        w[f"h.{i}.attn.c_attn.bias"] = normal((3 * C,), STD_BIAS)
        w[f"h.{i}.attn.c_proj.weight"] = normal((C, C), STD_OUT)
        w[f"h.{i}.attn.c_proj.bias"] = normal((C,), STD_BIAS)
        w[f"h.{i}.ln_2.weight"] = normal((C,), STD_LN, 1.0)
        w[f"h.{i}.ln_2.bias"] = normal((C,), STD_LN)
        w[f"h.{i}.mlp.c_fc.weight"] = normal((C, F), STD_IN)
        w[f"h.{i}.mlp.c_fc.bias"] = normal((F,), STD_BIAS)
        w[f"h.{i}.mlp.c_proj.weight"] = normal((F, C), STD_OUT)
        w[f"h.{i}.mlp.c_proj.bias"] = normal((C,), STD_BIAS)
    w["ln_f.weight"] = normal((C,), STD_LN, 1.0)
    w["ln_f.bias"] = normal((C,), STD_LN)
    return w


def checkpoint_tensors(weights, cfg, spec):
    """The tensors as a checkpoint of this style stores them, in safetensors' name order."""
    t = {spec["prefix"] + name: arr for name, arr in weights.items()}
    if spec["mask_buffers"]:
        n = cfg.n_positions
        mask = np.tril(np.ones((n, n), dtype=np.float32)).reshape(1, 1, n, n)
        for i in range(cfg.n_layer):
            t[f"{spec['prefix']}h.{i}.attn.bias"] = mask
    if spec["lm_head"]:
        t["lm_head.weight"] = weights["wte.weight"].copy()
    return OrderedDict(sorted(t.items()))


def rounded(params, dtype):
    """Every matrix (2-D parameter: embeddings and projections) rounded to `dtype`
    (round-to-nearest-even) and widened back to f64; vectors (LayerNorm gains and biases)
    stay float32, as in GGUF files, where norms and biases are kept in f32.

    params hold float32 values, so going through float32 first is exact."""
    return {k: (v.to(torch.float32).to(dtype).to(torch.float64) if v.dim() == 2 else v) for k, v in params.items()}


def variants(params):
    return {"f32": params, "f16": rounded(params, torch.float16), "bf16": rounded(params, torch.bfloat16)}


def greedy_all(params, cfg, prompt):
    """Greedy ids and minimum margins for the f32, f16 and bf16 weight variants."""
    return {k: greedy(p, cfg, prompt, N_GREEDY) for k, p in variants(params).items()}


def pick_seed(spec, cfg, prompt):
    """First weight seed from spec's whose greedy run is unambiguous for every weight dtype."""
    for seed in range(spec["weight_seed"], spec["weight_seed"] + MAX_SEED_TRIES):
        weights = make_weights(cfg, seed)
        runs = greedy_all(load_params(weights, cfg), cfg, prompt)
        ids = runs["f32"][0]
        margins = {k: min(m) for k, (_, m) in runs.items()}
        same = all(r[0] == ids for r in runs.values())
        ok = same and min(margins.values()) >= MIN_MARGIN
        print(f"  {spec['name']}: weight seed {seed}: min margins "
              + ", ".join(f"{k} {v:.4g}" for k, v in margins.items())
              + ("" if same else ", ids differ between dtypes")
              + (" -> ok" if ok else " -> rejected"))
        if ok:
            return seed, weights
    sys.exit(f"{spec['name']}: no weight seed in {MAX_SEED_TRIES} tries gives margins >= {MIN_MARGIN}")


def write_bin(path, arr, dtype):
    np.ascontiguousarray(arr, dtype=np.dtype(dtype).newbyteorder("<")).tofile(path)


def sig(x):
    """A float rounded for the manifest: readable, and the same bytes on every run."""
    return float(f"{x:.6g}")


def make_model(spec, out_root):
    cfg_dict = spec["config"]
    cfg = Config(**cfg_dict)
    out = os.path.join(out_root, spec["name"])
    os.makedirs(out, exist_ok=True)

    # Inputs come from their own seed, independent of the weight seed search.
    rng = np.random.Generator(np.random.PCG64(spec["token_seed"]))
    tokens = rng.integers(0, cfg.vocab_size, size=N_TOKENS).astype(np.int32)
    prompt = rng.integers(0, cfg.vocab_size, size=N_PROMPT).astype(np.int32)

    seed, weights = pick_seed(spec, cfg, prompt.tolist())

    # Write the checkpoint, then compute every reference from what the file holds, so the
    # fixtures describe the bytes on disk and not an in-memory copy.
    ckpt = checkpoint_tensors(weights, cfg, spec)
    st_path = os.path.join(out, "model.safetensors")
    write_safetensors(st_path, ckpt, metadata={"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf_config(cfg_dict), f, indent=2)
        f.write("\n")

    back, meta = read_safetensors(st_path)
    assert meta == {"format": "pt"}, meta
    assert list(back) == list(ckpt), "tensor names or order changed on read-back"
    for name, arr in ckpt.items():
        got = back[name]
        assert got.dtype == arr.dtype and got.shape == arr.shape, name
        assert np.array_equal(got.view(np.uint32), arr.view(np.uint32)), f"{name} not bit-exact"

    params = load_params(back, cfg)
    ids = tokens.tolist()
    logits = {k: forward(p, cfg, ids) for k, p in variants(params).items()}
    # The bf16 weights again, every weight product's input rounded to bfloat16 as well: what
    # netgpt's prefill computes on CPUs with AVX512-BF16 (rounding.py).
    input_rounding(True)
    logits["bf16x"] = forward(variants(params)["bf16"], cfg, ids)
    input_rounding(False)

    # Self-check: cached one-token-at-a-time decoding must reproduce the full recompute.
    inc = forward_incremental(params, cfg, ids)
    inc_diff = float((inc - logits["f32"]).abs().max())
    assert inc_diff < 1e-9, f"incremental vs full forward differ by {inc_diff}"

    runs = greedy_all(params, cfg, prompt.tolist())
    greedy_ids = runs["f32"][0]
    margins = {k: min(m) for k, (_, m) in runs.items()}
    assert all(r[0] == greedy_ids for r in runs.values()) and min(margins.values()) >= MIN_MARGIN

    write_bin(os.path.join(out, "tokens.i32"), tokens, np.int32)
    write_bin(os.path.join(out, "logits_f32.f32"), logits["f32"].numpy(), np.float32)
    write_bin(os.path.join(out, "logits_f16w.f32"), logits["f16"].numpy(), np.float32)
    write_bin(os.path.join(out, "logits_bf16w.f32"), logits["bf16"].numpy(), np.float32)
    write_bin(os.path.join(out, "logits_bf16x.f32"), logits["bf16x"].numpy(), np.float32)
    write_bin(os.path.join(out, "greedy_prompt.i32"), prompt, np.int32)
    write_bin(os.path.join(out, "greedy_ids.i32"), np.array(greedy_ids), np.int32)

    V = cfg.vocab_size
    full = "computed in float64 by tools/reference/gpt2_ref.py (full recompute)"
    manifest = OrderedDict([
        ("generator", "tools/reference/make_gpt2_fixtures.py"),
        ("model", "config.json + model.safetensors (float32 weights)"),
        ("weight_seed", seed),
        ("token_seed", spec["token_seed"]),
        ("byte_order", "little-endian, no header"),
        ("files", OrderedDict([
            ("tokens.i32", {"dtype": "int32", "shape": [N_TOKENS], "seed": spec["token_seed"],
                            "meaning": "input token ids, uniform random"}),
            ("logits_f32.f32", {"dtype": "float32", "shape": [N_TOKENS, V], "seed": seed,
                                "meaning": "logits at every position of tokens.i32, float32 weights, " + full}),
            ("logits_f16w.f32", {"dtype": "float32", "shape": [N_TOKENS, V], "seed": seed,
                                 "meaning": "as logits_f32.f32 with every weight matrix (not the "
                                            "vectors) first rounded to float16 (round-to-nearest-even)"}),
            ("logits_bf16w.f32", {"dtype": "float32", "shape": [N_TOKENS, V], "seed": seed,
                                  "meaning": "as logits_f32.f32 with every weight matrix (not the "
                                             "vectors) first rounded to bfloat16 (round-to-nearest-even)"}),
            ("logits_bf16x.f32", {"dtype": "float32", "shape": [N_TOKENS, V], "seed": seed,
                                  "meaning": "as logits_bf16w.f32 with the input of every product with a "
                                             "weight matrix first rounded to bfloat16 through float32 "
                                             "(round-to-nearest-even), as netgpt's prefill computes bf16 "
                                             "weights with AVX512-BF16 (tools/reference/rounding.py)"}),
            ("greedy_prompt.i32", {"dtype": "int32", "shape": [N_PROMPT], "seed": spec["token_seed"],
                                   "meaning": "prompt for greedy decoding, uniform random"}),
            ("greedy_ids.i32", {"dtype": "int32", "shape": [N_GREEDY], "seed": seed,
                                "meaning": "ids generated greedily (argmax of the last logits, appended, "
                                           "repeated) after greedy_prompt.i32, prompt not included; "
                                           "float32 weights, " + full + "; f16- and bf16-rounded "
                                           "weights give the same ids"}),
        ])),
        ("greedy_min_margin", OrderedDict((k, sig(v)) for k, v in margins.items())),
        ("greedy_min_margin_required", MIN_MARGIN),
        ("max_abs_diff_vs_logits_f32", OrderedDict([
            ("logits_f16w", sig(float((logits["f16"] - logits["f32"]).abs().max()))),
            ("logits_bf16w", sig(float((logits["bf16"] - logits["f32"]).abs().max()))),
            ("logits_bf16x", sig(float((logits["bf16x"] - logits["f32"]).abs().max()))),
        ])),
        ("max_abs_diff_bf16x_vs_bf16w", sig(float((logits["bf16x"] - logits["bf16"]).abs().max()))),
        ("logits_f32_std", sig(float(logits["f32"].std()))),
        ("incremental_vs_full_max_abs_diff", sig(inc_diff)),
    ])
    with open(os.path.join(out, "ref.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")

    print(f"  {spec['name']}: seed {seed}, min greedy margin f32 {margins['f32']:.4g} "
          f"(f16w {margins['f16']:.4g}, bf16w {margins['bf16']:.4g}), "
          f"incremental/full diff {inc_diff:.2g}, greedy ids {greedy_ids[:8]}...")
    for fn in sorted(os.listdir(out)):
        print(f"    {fn:20s} {os.path.getsize(os.path.join(out, fn)):8d} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="fixture root (default: tests/testdata)")
    args = ap.parse_args()
    # One thread: float64 reductions then happen in a fixed order, so the float32 fixtures
    # come out bit-identical on every run.
    torch.set_num_threads(1)
    for spec in MODELS:
        make_model(spec, args.out)


if __name__ == "__main__":
    main()
