#!/usr/bin/env python3
"""GPT-2 forward pass in PyTorch, float64, written from scratch.

This is the reference the C engine is tested against, so it deliberately shares nothing
with it and uses no model library: every operation (LayerNorm, softmax, GELU, attention) is
spelled out with plain tensor arithmetic, and everything runs in float64 so that the
reference's own rounding error is far below the float32 engine's.

Weights use Hugging Face GPT-2 names and layout. HF's Conv1D stores a linear layer's weight
as (in, out), so a projection is y = x @ W + b (no transpose):

    wte.weight              (vocab, n_embd)        token embeddings, also the tied LM head
    wpe.weight              (n_positions, n_embd)  learned position embeddings
    h.{i}.ln_1.weight/bias  (n_embd,)
    h.{i}.attn.c_attn.*     (n_embd, 3*n_embd), (3*n_embd,)   fused q|k|v
    h.{i}.attn.c_proj.*     (n_embd, n_embd), (n_embd,)
    h.{i}.ln_2.weight/bias  (n_embd,)
    h.{i}.mlp.c_fc.*        (n_embd, n_inner), (n_inner,)
    h.{i}.mlp.c_proj.*      (n_inner, n_embd), (n_embd,)
    ln_f.weight/bias        (n_embd,)

Use:  cfg = Config.from_json(d);  p = load_params(state_dict, cfg);  forward(p, cfg, ids)
"""

import math

import torch

from rounding import linear

_DT = torch.float64


class Config:
    """The GPT-2 hyper-parameters the forward pass needs, read from HF config.json keys."""

    def __init__(self, vocab_size, n_positions, n_embd, n_head, n_layer, n_inner=None,
                 layer_norm_epsilon=1e-5):
        if n_embd % n_head:
            raise ValueError(f"n_embd {n_embd} is not a multiple of n_head {n_head}")
        self.vocab_size = vocab_size
        self.n_positions = n_positions
        self.n_embd = n_embd
        self.n_head = n_head
        self.n_layer = n_layer
        # HF writes n_inner: null to mean the GPT-2 default of 4 * n_embd.
        self.n_inner = n_inner if n_inner is not None else 4 * n_embd
        self.eps = layer_norm_epsilon
        self.head_dim = n_embd // n_head

    @classmethod
    def from_json(cls, d):
        return cls(d["vocab_size"], d["n_positions"], d["n_embd"], d["n_head"], d["n_layer"],
                   d.get("n_inner"), d.get("layer_norm_epsilon", 1e-5))


def load_params(state_dict, cfg):
    """Turn a GPT-2 state dict (numpy or torch tensors) into float64 torch parameters.

    Accepts names with or without the "transformer." prefix that GPT2LMHeadModel adds. The
    causal-mask buffers (h.{i}.attn.bias / masked_bias) that some checkpoints carry are not
    weights and are skipped. An explicit lm_head.weight must equal wte: this reference, like
    GPT-2, only knows the tied head.
    """
    sd = {}
    for name, t in state_dict.items():
        if name.startswith("transformer."):
            name = name[len("transformer."):]
        sd[name] = torch.as_tensor(t)

    params = {}
    expected = ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"]
    for i in range(cfg.n_layer):
        for sub in ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                    "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                    "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"):
            expected.append(f"h.{i}.{sub}")
    for name in expected:
        if name not in sd:
            raise KeyError(f"missing weight {name}")
        params[name] = sd[name].to(_DT)

    if "lm_head.weight" in sd and not torch.equal(sd["lm_head.weight"].to(_DT), params["wte.weight"]):
        raise ValueError("lm_head.weight differs from wte.weight; only tied heads are supported")

    C, F, V = cfg.n_embd, cfg.n_inner, cfg.vocab_size
    shapes = {"wte.weight": (V, C), "wpe.weight": (cfg.n_positions, C)}
    for i in range(cfg.n_layer):
        shapes[f"h.{i}.attn.c_attn.weight"] = (C, 3 * C)
        shapes[f"h.{i}.attn.c_proj.weight"] = (C, C)
        shapes[f"h.{i}.mlp.c_fc.weight"] = (C, F)
        shapes[f"h.{i}.mlp.c_proj.weight"] = (F, C)
    for name, shape in shapes.items():
        if tuple(params[name].shape) != shape:
            raise ValueError(f"{name}: shape {tuple(params[name].shape)}, expected {shape}")
    return params


def layer_norm(x, w, b, eps):
    # Biased variance, eps inside the square root: what GPT-2 (and torch LayerNorm) use.
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def gelu_new(x):
    # The tanh approximation GPT-2 was trained with ("gelu_new" in HF), not the erf GELU.
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def softmax(x):
    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def _attention(x, p, i, cfg, pos0, cache):
    """Causal self-attention of layer i for rows x (T, C) at positions pos0 .. pos0+T-1.

    `cache` holds this layer's keys and values for positions 0 .. pos0-1 (a list, so the
    caller sees it grow); the same code serves the full recompute (pos0 = 0, empty cache)
    and one-token-at-a-time decoding, which is what lets the self-check compare the two.
    """
    T, C = x.shape
    H, D = cfg.n_head, cfg.head_dim
    qkv = linear(x, p[f"h.{i}.attn.c_attn.weight"]) + p[f"h.{i}.attn.c_attn.bias"]  # (T, 3C)
    q, k, v = qkv.split(C, dim=1)                                             # (T, C) each
    cache.append((k, v))
    k = torch.cat([kk for kk, _ in cache], dim=0)                            # (S, C)
    v = torch.cat([vv for _, vv in cache], dim=0)
    S = k.shape[0]
    q = q.view(T, H, D).transpose(0, 1)                                       # (H, T, D)
    k = k.view(S, H, D).transpose(0, 1)                                       # (H, S, D)
    v = v.view(S, H, D).transpose(0, 1)
    scores = (q @ k.transpose(1, 2)) / math.sqrt(D)                           # (H, T, S)
    # Query at absolute position pos0+t may see keys 0 .. pos0+t only.
    qpos = torch.arange(pos0, pos0 + T).view(T, 1)
    kpos = torch.arange(S).view(1, S)
    scores = scores.masked_fill(kpos > qpos, float("-inf"))
    y = softmax(scores) @ v                                                   # (H, T, D)
    y = y.transpose(0, 1).reshape(T, C)
    return linear(y, p[f"h.{i}.attn.c_proj.weight"]) + p[f"h.{i}.attn.c_proj.bias"]


def _run(p, cfg, tokens, pos0, caches):
    """Logits (T, vocab) for `tokens` placed at positions pos0 ..; caches: one list per layer."""
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    T = tokens.shape[0]
    if pos0 + T > cfg.n_positions:
        raise ValueError(f"sequence of {pos0 + T} exceeds n_positions {cfg.n_positions}")
    if int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size:
        raise ValueError("token id out of range")
    h = p["wte.weight"][tokens] + p["wpe.weight"][pos0:pos0 + T]              # (T, C)
    for i in range(cfg.n_layer):
        a = layer_norm(h, p[f"h.{i}.ln_1.weight"], p[f"h.{i}.ln_1.bias"], cfg.eps)
        h = h + _attention(a, p, i, cfg, pos0, caches[i])
        m = layer_norm(h, p[f"h.{i}.ln_2.weight"], p[f"h.{i}.ln_2.bias"], cfg.eps)
        m = gelu_new(linear(m, p[f"h.{i}.mlp.c_fc.weight"]) + p[f"h.{i}.mlp.c_fc.bias"])  # (T, F)
        h = h + (linear(m, p[f"h.{i}.mlp.c_proj.weight"]) + p[f"h.{i}.mlp.c_proj.bias"])
    h = layer_norm(h, p["ln_f.weight"], p["ln_f.bias"], cfg.eps)
    return linear(h, p["wte.weight"].T)                                             # (T, vocab)


def forward(p, cfg, tokens):
    """Logits (T, vocab) for every position of `tokens`, recomputed from scratch."""
    return _run(p, cfg, tokens, 0, [[] for _ in range(cfg.n_layer)])


def forward_incremental(p, cfg, tokens):
    """Same result as forward(), one token at a time through a key/value cache."""
    caches = [[] for _ in range(cfg.n_layer)]
    rows = [_run(p, cfg, [t], pos, caches) for pos, t in enumerate(tokens)]
    return torch.cat(rows, dim=0)


def top2_margin(logits):
    """Gap between the largest and second-largest logit of a 1-D tensor."""
    top = torch.topk(logits, 2).values
    return float(top[0] - top[1])


def greedy(p, cfg, prompt, n_new):
    """Greedy decoding with a full recompute per step (no cache, so nothing cached can err).

    Returns (generated ids, per-step top1-top2 margins). Ties break to the lowest id, as
    torch.argmax does, but the fixtures insist on margins far from any tie.
    """
    ids = list(prompt)
    out, margins = [], []
    for _ in range(n_new):
        last = forward(p, cfg, ids)[-1]
        nxt = int(torch.argmax(last))
        margins.append(top2_margin(last))
        out.append(nxt)
        ids.append(nxt)
    return out, margins
