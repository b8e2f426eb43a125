#!/usr/bin/env python3
"""Make the LLaMA test fixtures: two tiny random LLaMA models and their reference outputs.

For each model, tests/testdata/<name>/ gets a Hugging Face-style model folder (config.json
plus safetensors weights) and the outputs of llama_ref.py on it, with the same files and
meanings as the GPT-2 fixtures (see make_gpt2_fixtures.py):

    tokens.i32         int32 (64,)          input ids (random, fixed seed)
    logits_f32.f32     float32 (64, vocab)  logits at every position, weights as stored
    logits_f16w.f32    float32 (64, vocab)  same, every weight matrix first rounded to float16
    logits_bf16w.f32   float32 (64, vocab)  same, every weight matrix first rounded to bfloat16
    logits_bf16x.f32   float32 (64, vocab)  as bf16w, every weight product's input rounded to
                                            bfloat16 too (netgpt's AVX512-BF16 prefill)
    greedy_prompt.i32  int32 (8,)           prompt for greedy decoding
    greedy_ids.i32     int32 (64,)          ids generated greedily after the prompt
    ref.json           manifest: shape, dtype, meaning and seed of each file, margins

The two models differ on purpose, each proving a loader or model path:
  llama-tiny-a  grouped-query attention (8 query heads on 4 KV heads, head_dim 8), rope_theta
                10000, an explicit lm_head.weight, one float32 model.safetensors.
  llama-tiny-b  6 query heads on 2 KV heads, rope_theta 500000 with linear rope_scaling
                (factor 2), tied embeddings (no lm_head tensor), bfloat16 weights as real
                LLaMA checkpoints ship, written as two shards plus
                model.safetensors.index.json. A layer is split across the two shards, as
                Hugging Face's size-based sharding does.

Everything is deterministic: weights from fixed seeds with numpy's PCG64, single-threaded
float64 math. A weight seed is accepted only if greedy decoding is far from ties (top1-top2
logit gap >= MIN_MARGIN at every step, for f32, f16 and bf16 weights alike, and all three
give the same ids); otherwise the next seed is tried and the one used is recorded.

Self-checks on every run: every safetensors file is read back bit-exact and the references
are computed from the read-back tensors; the key/value-cache forward equals the full
recompute; swapping the RoPE convention (or, for tiny-b, ignoring rope_scaling) must change
the logits clearly, so the fixtures would catch an engine that got either wrong.

Usage: make_llama_fixtures.py [--out DIR]   (default: tests/testdata of this repository)
"""

import argparse
import copy
import json
import os
import sys
from collections import OrderedDict

import numpy as np
import torch

from llama_ref import Config, forward, forward_incremental, greedy, load_params, param_shapes
from rounding import input_rounding
from make_gpt2_fixtures import (MAX_SEED_TRIES, MIN_MARGIN, N_GREEDY, N_PROMPT, N_TOKENS,
                                sig, variants, write_bin)
from safetensors_io import bf16_bits_to_f32, read_safetensors, write_safetensors

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "..", "tests", "testdata")

# A wrong RoPE convention or a dropped rope_scaling must move the logits by at least this
# much, or the fixture could not tell the engine's mistake from float32 rounding.
MIN_SENSITIVITY = 0.1

MODELS = [
    {
        "name": "llama-tiny-a",
        "config": dict(vocab_size=384, hidden_size=64, intermediate_size=172,
                       num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=4,
                       max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
                       rope_scaling=None, tie_word_embeddings=False),
        "dtype": "F32",
        "shards": 1,
        "weight_seed": 5000,
        "token_seed": 6000,
    },
    {
        "name": "llama-tiny-b",
        "config": dict(vocab_size=512, hidden_size=96, intermediate_size=256,
                       num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                       max_position_embeddings=160, rms_norm_eps=1e-6, rope_theta=500000.0,
                       rope_scaling={"type": "linear", "factor": 2.0},
                       tie_word_embeddings=True),
        "dtype": "BF16",
        "shards": 2,
        "weight_seed": 7000,
        "token_seed": 8000,
    },
]

# Standard deviations of the random init, as for the GPT-2 fixtures: large enough that the
# logits spread over a few units (greedy picks are then robust to float32 rounding) while
# attention stays soft; RMSNorm gains near 1 but not equal, so a loader that drops or
# swaps a norm changes the logits visibly.
STD_EMB = 0.2    # embed_tokens, and lm_head when untied
STD_IN = 0.15    # q, k, v, gate, up
STD_OUT = 0.1    # o, down
STD_NORM = 0.1   # spread of RMSNorm gains around 1


def hf_config(c):
    """config.json with the keys Hugging Face LLaMA checkpoints use."""
    return OrderedDict([
        ("architectures", ["LlamaForCausalLM"]),
        ("model_type", "llama"),
        ("vocab_size", c["vocab_size"]),
        ("hidden_size", c["hidden_size"]),
        ("intermediate_size", c["intermediate_size"]),
        ("num_hidden_layers", c["num_hidden_layers"]),
        ("num_attention_heads", c["num_attention_heads"]),
        ("num_key_value_heads", c["num_key_value_heads"]),
        ("max_position_embeddings", c["max_position_embeddings"]),
        ("rms_norm_eps", c["rms_norm_eps"]),
        ("rope_theta", c["rope_theta"]),
        ("rope_scaling", c["rope_scaling"]),
        ("tie_word_embeddings", c["tie_word_embeddings"]),
        ("bos_token_id", 1),
        ("eos_token_id", 2),
        ("hidden_act", "silu"),
    ])


def to_bf16_bits(arr):
    """float32 array -> uint16 bfloat16 bit patterns, rounded to nearest even."""
    return torch.from_numpy(arr).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def make_weights(cfg, seed, dtype):
    """Random LLaMA weights under HF names, drawn in a fixed order.

    Returns name -> array as the checkpoint stores it: float32, or uint16 bfloat16 bits
    when dtype is "BF16" (then the gains are bfloat16 too, as in real bf16 checkpoints).
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    std_of = {"embed_tokens": STD_EMB, "lm_head": STD_EMB, "q_proj": STD_IN, "k_proj": STD_IN,
              "v_proj": STD_IN, "gate_proj": STD_IN, "up_proj": STD_IN, "o_proj": STD_OUT,
              "down_proj": STD_OUT}
    w = OrderedDict()
    for name, shape in param_shapes(cfg).items():
        if len(shape) == 1:
            arr = 1.0 + STD_NORM * rng.standard_normal(shape)
        else:
            arr = std_of[name.split(".")[-2]] * rng.standard_normal(shape)
        arr = arr.astype(np.float32)
        w[name] = to_bf16_bits(arr) if dtype == "BF16" else arr
    return w


def as_f32(weights, dtype):
    """The stored weights widened to float32 (exact for bfloat16)."""
    return {k: (bf16_bits_to_f32(v) if dtype == "BF16" else v) for k, v in weights.items()}


def greedy_all(params, cfg, prompt):
    """Greedy ids and per-step margins for the f32, f16 and bf16 weight variants."""
    return {k: greedy(p, cfg, prompt, N_GREEDY) for k, p in variants(params).items()}


def pick_seed(spec, cfg, prompt):
    """First weight seed from spec's whose greedy run is unambiguous for every weight dtype."""
    for seed in range(spec["weight_seed"], spec["weight_seed"] + MAX_SEED_TRIES):
        weights = make_weights(cfg, seed, spec["dtype"])
        runs = greedy_all(load_params(as_f32(weights, spec["dtype"]), cfg), cfg, prompt)
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


def shard_names(weights, n_shards):
    """Split the names into n_shards runs, in state-dict order, by size, the way Hugging
    Face's max_shard_size does: a new shard starts once the current one holds its share.
    This lands the cut inside a layer, so a loader must really use the weight_map."""
    total = sum(a.nbytes for a in weights.values())
    shards, acc = [[]], 0
    for name, arr in weights.items():
        if acc >= total * len(shards) / n_shards:
            shards.append([])
        shards[-1].append(name)
        acc += arr.nbytes
    assert len(shards) == n_shards, "shard split failed"
    return shards


def write_checkpoint(out, weights, spec):
    """Write the safetensors file(s) and, when sharded, the index. Returns the file names."""
    bf16 = set(weights) if spec["dtype"] == "BF16" else set()
    n = spec["shards"]
    if n == 1:
        files = {"model.safetensors": sorted(weights)}
    else:
        files = {f"model-{k + 1:05d}-of-{n:05d}.safetensors": sorted(names)
                 for k, names in enumerate(shard_names(weights, n))}
    for fn, names in files.items():
        write_safetensors(os.path.join(out, fn), OrderedDict((k, weights[k]) for k in names),
                          metadata={"format": "pt"}, bf16_names=bf16)
    if n > 1:
        index = OrderedDict([
            ("metadata", {"total_size": int(sum(a.nbytes for a in weights.values()))}),
            ("weight_map", OrderedDict(sorted((k, fn) for fn, names in files.items() for k in names))),
        ])
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
            f.write("\n")
    return files


def read_back(out, files, weights):
    """Read every file back; each tensor must be where it was written, bit for bit.
    Returns the tensors as float32 (bfloat16 widened exactly)."""
    if len(files) > 1:
        with open(os.path.join(out, "model.safetensors.index.json")) as f:
            index = json.load(f)
        assert set(index["weight_map"]) == set(weights), "index does not name every weight"
        assert index["metadata"]["total_size"] == sum(a.nbytes for a in weights.values())
    got = {}
    for fn, names in files.items():
        back, meta = read_safetensors(os.path.join(out, fn))
        assert meta == {"format": "pt"}, meta
        assert list(back) == names, f"{fn}: tensor names or order changed on read-back"
        if len(files) > 1:
            assert all(index["weight_map"][k] == fn for k in names), f"{fn}: index disagrees"
        got.update(back)
    assert set(got) == set(weights)
    for name, arr in weights.items():
        b = got[name]
        assert b.dtype == arr.dtype and b.shape == arr.shape, name
        assert b.tobytes() == arr.tobytes(), f"{name} not bit-exact"
    return {k: (bf16_bits_to_f32(v) if v.dtype == np.uint16 else v) for k, v in got.items()}


def sensitivity(params, cfg, ids, ref, spec):
    """How much the logits move under the RoPE mistakes an engine is likely to make."""
    changes = OrderedDict()
    wrong = copy.copy(cfg)
    wrong.rope_interleaved = not cfg.rope_interleaved
    changes["interleaved_rope_instead_of_rotate_half"] = wrong
    if cfg.rope_factor != 1.0:
        wrong = copy.copy(cfg)
        wrong.rope_factor = 1.0
        changes["rope_scaling_ignored"] = wrong
    result = OrderedDict()
    for what, c in changes.items():
        d = float((forward(params, c, ids) - ref).abs().max())
        assert d >= MIN_SENSITIVITY, f"{spec['name']}: {what} changes logits by only {d}"
        result[what] = sig(d)
    return result


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

    # Write the checkpoint, then compute every reference from what the files hold, so the
    # fixtures describe the bytes on disk and not an in-memory copy.
    files = write_checkpoint(out, weights, spec)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf_config(cfg_dict), f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "config.json")) as f:
        assert vars(Config.from_json(json.load(f))) == vars(cfg), "config.json does not round-trip"

    params = load_params(read_back(out, files, weights), cfg)
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
    sens = sensitivity(params, cfg, ids, logits["f32"], spec)

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
    stored = "float32" if spec["dtype"] == "F32" else "bfloat16 (every tensor, gains included)"
    weights_as_stored = ("weights as stored" if spec["dtype"] == "F32" else
                         "weights as stored (bfloat16 values, exact in float32; so "
                         "logits_bf16w.f32 is identical)")
    full = "computed in float64 by tools/reference/llama_ref.py (full recompute)"
    manifest = OrderedDict([
        ("generator", "tools/reference/make_llama_fixtures.py"),
        ("model", "config.json + " + " + ".join(
            list(files) + (["model.safetensors.index.json"] if len(files) > 1 else []))
            + f", {stored} weights"),
        ("weight_seed", seed),
        ("token_seed", spec["token_seed"]),
        ("byte_order", "little-endian, no header"),
        ("rope", f"rotate_half (Hugging Face) convention, theta {cfg.rope_theta:g}, positions "
                 f"divided by {cfg.rope_factor:g}"),
        ("files", OrderedDict([
            ("tokens.i32", {"dtype": "int32", "shape": [N_TOKENS], "seed": spec["token_seed"],
                            "meaning": "input token ids, uniform random"}),
            ("logits_f32.f32", {"dtype": "float32", "shape": [N_TOKENS, V], "seed": seed,
                                "meaning": "logits at every position of tokens.i32, "
                                           + weights_as_stored + ", " + full}),
            ("logits_f16w.f32", {"dtype": "float32", "shape": [N_TOKENS, V], "seed": seed,
                                 "meaning": "as logits_f32.f32 with every weight matrix (not the "
                                            "RMSNorm gains) first rounded to float16 "
                                            "(round-to-nearest-even)"}),
            ("logits_bf16w.f32", {"dtype": "float32", "shape": [N_TOKENS, V], "seed": seed,
                                  "meaning": "as logits_f32.f32 with every weight matrix (not the "
                                             "RMSNorm gains) first rounded to bfloat16 "
                                             "(round-to-nearest-even)"}),
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
                                           + weights_as_stored + ", " + full + "; f16- and "
                                           "bf16-rounded weights give the same ids"}),
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
        ("max_abs_logit_change_if_wrong", sens),
    ])
    with open(os.path.join(out, "ref.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")

    print(f"  {spec['name']}: seed {seed}, min greedy margin f32 {margins['f32']:.4g} "
          f"(f16w {margins['f16']:.4g}, bf16w {margins['bf16']:.4g}), "
          f"incremental/full diff {inc_diff:.2g}, greedy ids {greedy_ids[:8]}...")
    for fn in sorted(os.listdir(out)):
        print(f"    {fn:32s} {os.path.getsize(os.path.join(out, fn)):8d} bytes")


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
