#!/usr/bin/env python3
"""LLaMA forward pass in PyTorch, float64, written from scratch.

Like gpt2_ref.py, this is the reference the C engine is tested against, so it shares
nothing with it and uses no model library: RMSNorm, rotary embeddings, grouped-query
attention, softmax and the SwiGLU MLP are spelled out with plain tensor arithmetic, all in
float64 so the reference's own rounding error is far below the float32 engine's.

Weights use Hugging Face LlamaForCausalLM names and layout. nn.Linear stores a weight as
(out, in), so a projection is y = x @ W^T (no biases anywhere in LLaMA):

    model.embed_tokens.weight                      (vocab, dim)
    model.layers.{i}.input_layernorm.weight        (dim,)
    model.layers.{i}.self_attn.q_proj.weight       (n_head * head_dim, dim)
    model.layers.{i}.self_attn.k_proj.weight       (n_kv_head * head_dim, dim)
    model.layers.{i}.self_attn.v_proj.weight       (n_kv_head * head_dim, dim)
    model.layers.{i}.self_attn.o_proj.weight       (dim, n_head * head_dim)
    model.layers.{i}.post_attention_layernorm.weight (dim,)
    model.layers.{i}.mlp.gate_proj.weight          (hidden, dim)
    model.layers.{i}.mlp.up_proj.weight            (hidden, dim)
    model.layers.{i}.mlp.down_proj.weight          (dim, hidden)
    model.norm.weight                              (dim,)
    lm_head.weight                                 (vocab, dim), absent when tied

Rotary embeddings come in two conventions that differ only in which components of a head
form a rotated pair:

  - Hugging Face ("rotate_half"): the head is split into halves, pair i is
    (x[i], x[i + head_dim/2]).  HF checkpoints' q_proj/k_proj rows are ordered for this.
  - Meta / llama2.c ("interleaved"): pair i is (x[2i], x[2i+1]).

In both, pair i turns by the angle pos * theta^(-2i/head_dim). The two are the same model
up to a permutation of the q/k rows of every head (llama2c_rows_to_hf); the llama2.c loader
here keeps its checkpoint's row order and sets Config.rope_interleaved instead, so that
the stories260K fixture exercises the interleaved rotation the C engine must use for
llama2.c files, while make_stories_fixture.py checks the permutation route agrees.

Use:  cfg = Config.from_json(d);  p = load_params(state_dict, cfg);  forward(p, cfg, ids)
      cfg, p = load_llama2c(path)                       (llama2.c checkpoint)
"""

import math
import struct

import numpy as np
import torch

from rounding import linear

_DT = torch.float64


class Config:
    """The LLaMA hyper-parameters the forward pass needs, read from HF config.json keys."""

    def __init__(self, vocab_size, hidden_size, intermediate_size, num_hidden_layers,
                 num_attention_heads, num_key_value_heads=None, max_position_embeddings=2048,
                 rms_norm_eps=1e-6, rope_theta=10000.0, rope_scaling=None,
                 tie_word_embeddings=False, head_dim=None, rope_interleaved=False):
        n_kv = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        if num_attention_heads % n_kv:
            raise ValueError(f"num_attention_heads {num_attention_heads} is not a multiple "
                             f"of num_key_value_heads {n_kv}")
        if head_dim is None:
            if hidden_size % num_attention_heads:
                raise ValueError(f"hidden_size {hidden_size} is not a multiple of "
                                 f"num_attention_heads {num_attention_heads}")
            head_dim = hidden_size // num_attention_heads
        if head_dim % 2:
            raise ValueError(f"head_dim {head_dim} is odd; rotary embeddings rotate pairs")
        self.vocab_size = vocab_size
        self.dim = hidden_size
        self.hidden = intermediate_size
        self.n_layer = num_hidden_layers
        self.n_head = num_attention_heads
        self.n_kv_head = n_kv
        self.head_dim = head_dim
        self.max_pos = max_position_embeddings
        self.eps = rms_norm_eps
        self.rope_theta = float(rope_theta)
        self.rope_factor = _linear_rope_factor(rope_scaling)
        self.tie = bool(tie_word_embeddings)
        self.rope_interleaved = rope_interleaved

    @classmethod
    def from_json(cls, d):
        return cls(d["vocab_size"], d["hidden_size"], d["intermediate_size"],
                   d["num_hidden_layers"], d["num_attention_heads"],
                   d.get("num_key_value_heads"), d.get("max_position_embeddings", 2048),
                   d.get("rms_norm_eps", 1e-6), d.get("rope_theta", 10000.0),
                   d.get("rope_scaling"), d.get("tie_word_embeddings", False),
                   d.get("head_dim"))


def _linear_rope_factor(rope_scaling):
    """Position divisor from HF's rope_scaling: 1 when absent, f for {"type": "linear"}.

    Newer HF configs spell the key "rope_type". Other kinds (dynamic NTK, llama3, yarn)
    change the frequencies in ways this reference does not model, so they are refused
    rather than silently ignored.
    """
    if rope_scaling is None:
        return 1.0
    kind = rope_scaling.get("type", rope_scaling.get("rope_type"))
    if kind != "linear":
        raise ValueError(f"unsupported rope_scaling type {kind!r}")
    factor = float(rope_scaling["factor"])
    if factor <= 0:
        raise ValueError(f"rope_scaling factor {factor} must be positive")
    return factor


def param_shapes(cfg):
    """Every weight the model needs, HF name -> shape, in a fixed order."""
    D, F, V = cfg.dim, cfg.hidden, cfg.vocab_size
    Q, KV = cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim
    shapes = {"model.embed_tokens.weight": (V, D)}
    for i in range(cfg.n_layer):
        pre = f"model.layers.{i}."
        shapes[pre + "input_layernorm.weight"] = (D,)
        shapes[pre + "self_attn.q_proj.weight"] = (Q, D)
        shapes[pre + "self_attn.k_proj.weight"] = (KV, D)
        shapes[pre + "self_attn.v_proj.weight"] = (KV, D)
        shapes[pre + "self_attn.o_proj.weight"] = (D, Q)
        shapes[pre + "post_attention_layernorm.weight"] = (D,)
        shapes[pre + "mlp.gate_proj.weight"] = (F, D)
        shapes[pre + "mlp.up_proj.weight"] = (F, D)
        shapes[pre + "mlp.down_proj.weight"] = (D, F)
    shapes["model.norm.weight"] = (D,)
    if not cfg.tie:
        shapes["lm_head.weight"] = (V, D)
    return shapes


def load_params(state_dict, cfg):
    """Turn a LLaMA state dict (numpy or torch tensors) into float64 torch parameters.

    Every expected weight must be present with its exact shape. With tied embeddings an
    lm_head.weight may still be present (some exporters write it) but must then equal the
    embedding; the returned dict always has "lm_head.weight", aliasing the embedding when
    tied, so the forward pass has one code path.
    """
    sd = {name: torch.as_tensor(t) for name, t in state_dict.items()}
    params = {}
    for name, shape in param_shapes(cfg).items():
        if name not in sd:
            raise KeyError(f"missing weight {name}")
        if tuple(sd[name].shape) != shape:
            raise ValueError(f"{name}: shape {tuple(sd[name].shape)}, expected {shape}")
        params[name] = sd[name].to(_DT)
    if cfg.tie:
        emb = params["model.embed_tokens.weight"]
        if "lm_head.weight" in sd and not torch.equal(sd["lm_head.weight"].to(_DT), emb):
            raise ValueError("tie_word_embeddings is set but lm_head.weight differs")
        params["lm_head.weight"] = emb
    return params


def rms_norm(x, w, eps):
    # No mean subtraction and no bias: x / sqrt(mean(x^2) + eps), then the per-channel gain.
    return x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + eps) * w


def silu(x):
    return x / (1.0 + torch.exp(-x))


def softmax(x):
    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def rope_angles(cfg, positions):
    """Rotation angles (T, head_dim/2): position / factor * theta^(-2i/head_dim).

    Linear rope_scaling divides the position (equivalently every frequency) by the factor,
    stretching the trained context. Computed in float64; HF and llama2.c use float32
    here, which moves angles by far less than the engine's own float32 error.
    """
    i = torch.arange(cfg.head_dim // 2, dtype=_DT)
    inv_freq = cfg.rope_theta ** (-2.0 * i / cfg.head_dim)
    pos = torch.as_tensor(positions, dtype=_DT) / cfg.rope_factor
    return pos.view(-1, 1) * inv_freq.view(1, -1)


def apply_rope(x, angles, interleaved):
    """Rotate pairs of x (T, heads, head_dim) by angles (T, head_dim/2), one angle per pair.

    A pair (a, b) becomes (a cos - b sin, a sin + b cos). Only which components make a
    pair differs between the conventions (see the module docstring).
    """
    T, H, D = x.shape
    cos = torch.cos(angles).view(T, 1, D // 2)
    sin = torch.sin(angles).view(T, 1, D // 2)
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
        out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1)  # (T, H, D/2, 2)
        return out.reshape(T, H, D)
    a, b = x[..., : D // 2], x[..., D // 2 :]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def _attention(x, p, i, cfg, pos0, cache):
    """Causal grouped-query self-attention of layer i for rows x (T, dim) at positions
    pos0 .. pos0+T-1.

    `cache` holds this layer's rotated keys and values for positions 0 .. pos0-1 (a list,
    so the caller sees it grow); the same code serves the full recompute and
    one-token-at-a-time decoding, which is what lets the self-check compare the two.
    """
    T = x.shape[0]
    H, KV, D = cfg.n_head, cfg.n_kv_head, cfg.head_dim
    pre = f"model.layers.{i}.self_attn."
    q = linear(x, p[pre + "q_proj.weight"].T).view(T, H, D)
    k = linear(x, p[pre + "k_proj.weight"].T).view(T, KV, D)
    v = linear(x, p[pre + "v_proj.weight"].T).view(T, KV, D)
    ang = rope_angles(cfg, range(pos0, pos0 + T))
    q = apply_rope(q, ang, cfg.rope_interleaved)
    k = apply_rope(k, ang, cfg.rope_interleaved)
    cache.append((k, v))
    k = torch.cat([kk for kk, _ in cache], dim=0)                 # (S, KV, D)
    v = torch.cat([vv for _, vv in cache], dim=0)
    S = k.shape[0]
    # Grouped-query attention: query heads come in KV consecutive groups of H/KV, and every
    # head of group g reads key/value head g (HF's repeat_kv, llama2.c's h / kv_mul).
    kv_of_head = torch.arange(H) // (H // KV)
    k = k[:, kv_of_head].transpose(0, 1)                          # (H, S, D)
    v = v[:, kv_of_head].transpose(0, 1)
    q = q.transpose(0, 1)                                         # (H, T, D)
    scores = (q @ k.transpose(1, 2)) / math.sqrt(D)               # (H, T, S)
    # Query at absolute position pos0+t may see keys 0 .. pos0+t only.
    qpos = torch.arange(pos0, pos0 + T).view(T, 1)
    kpos = torch.arange(S).view(1, S)
    scores = scores.masked_fill(kpos > qpos, float("-inf"))
    y = (softmax(scores) @ v).transpose(0, 1).reshape(T, H * D)   # (T, H*D)
    return linear(y, p[pre + "o_proj.weight"].T)


def _mlp(x, p, i):
    pre = f"model.layers.{i}.mlp."
    gate = linear(x, p[pre + "gate_proj.weight"].T)                     # (T, hidden)
    up = linear(x, p[pre + "up_proj.weight"].T)
    return linear(silu(gate) * up, p[pre + "down_proj.weight"].T)     # (T, dim)


def _run(p, cfg, tokens, pos0, caches):
    """Logits (T, vocab) for `tokens` placed at positions pos0 ..; caches: one list per layer."""
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    T = tokens.shape[0]
    if pos0 + T > cfg.max_pos:
        raise ValueError(f"sequence of {pos0 + T} exceeds max_position_embeddings {cfg.max_pos}")
    if int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size:
        raise ValueError("token id out of range")
    h = p["model.embed_tokens.weight"][tokens]                    # (T, dim)
    for i in range(cfg.n_layer):
        pre = f"model.layers.{i}."
        a = rms_norm(h, p[pre + "input_layernorm.weight"], cfg.eps)
        h = h + _attention(a, p, i, cfg, pos0, caches[i])
        m = rms_norm(h, p[pre + "post_attention_layernorm.weight"], cfg.eps)
        h = h + _mlp(m, p, i)
    h = rms_norm(h, p["model.norm.weight"], cfg.eps)
    return linear(h, p["lm_head.weight"].T)                             # (T, vocab)


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


# ---------------------------------------------------------------------------------------
# llama2.c checkpoints
#
#   int32 x 7   dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
#               (vocab_size < 0: the output matrix is stored separately, not shared)
#   float32     token_embedding (vocab, dim)
#               rms_att (n_layers, dim)
#               wq (n_layers, dim, dim)      wk, wv (n_layers, kv_dim, dim)
#               wo (n_layers, dim, dim)
#               rms_ffn (n_layers, dim)
#               w1 (n_layers, hidden, dim)   w2 (n_layers, dim, hidden)
#               w3 (n_layers, hidden, dim)
#               rms_final (dim,)
#               freq_cis_real, freq_cis_imag (seq_len * head_size/2 each; legacy, unused)
#               wcls (vocab, dim), only when vocab_size < 0
#
# Matrices are (out, in) like nn.Linear, so they map onto HF names unchanged:
# w1 = gate_proj, w3 = up_proj, w2 = down_proj. Rows of wq/wk are in the interleaved RoPE
# order. llama2.c's eps is 1e-5 and theta 10000, neither stored in the file.
# ---------------------------------------------------------------------------------------

LLAMA2C_EPS = 1e-5
LLAMA2C_THETA = 10000.0


def load_llama2c(path):
    """Read a llama2.c checkpoint into (Config, float64 params under HF names).

    The Config has rope_interleaved set, since the file's q/k rows are in that order. The
    file size must match the header exactly, so a truncated or mis-parsed file fails here.
    """
    with open(path, "rb") as f:
        buf = f.read()
    dim, hidden, n_layer, n_head, n_kv, vocab, seq_len = struct.unpack_from("<7i", buf, 0)
    shared = vocab > 0
    vocab = abs(vocab)
    cfg = Config(vocab, dim, hidden, n_layer, n_head, n_kv, seq_len, LLAMA2C_EPS,
                 LLAMA2C_THETA, None, shared, rope_interleaved=True)
    head = dim // n_head
    kv_dim = n_kv * head
    L = n_layer
    layout = [
        ("tok", (vocab, dim)), ("rms_att", (L, dim)), ("wq", (L, dim, dim)),
        ("wk", (L, kv_dim, dim)), ("wv", (L, kv_dim, dim)), ("wo", (L, dim, dim)),
        ("rms_ffn", (L, dim)), ("w1", (L, hidden, dim)), ("w2", (L, dim, hidden)),
        ("w3", (L, hidden, dim)), ("rms_final", (dim,)),
        ("freq_cis", (2, seq_len, head // 2)),
    ]
    if not shared:
        layout.append(("wcls", (vocab, dim)))
    n_floats = sum(int(np.prod(s)) for _, s in layout)
    if 28 + 4 * n_floats != len(buf):
        raise ValueError(f"{path}: {len(buf)} bytes, header implies {28 + 4 * n_floats}")
    flat = np.frombuffer(buf, dtype="<f4", offset=28).copy()  # writable, as torch wants
    w, off = {}, 0
    for name, shape in layout:
        n = int(np.prod(shape))
        w[name] = flat[off : off + n].reshape(shape)
        off += n

    sd = {"model.embed_tokens.weight": w["tok"], "model.norm.weight": w["rms_final"]}
    if not shared:
        sd["lm_head.weight"] = w["wcls"]
    hf_of = {"rms_att": "input_layernorm", "wq": "self_attn.q_proj", "wk": "self_attn.k_proj",
             "wv": "self_attn.v_proj", "wo": "self_attn.o_proj",
             "rms_ffn": "post_attention_layernorm", "w1": "mlp.gate_proj",
             "w3": "mlp.up_proj", "w2": "mlp.down_proj"}
    for i in range(L):
        for src, dst in hf_of.items():
            sd[f"model.layers.{i}.{dst}.weight"] = w[src][i]
    return cfg, load_params(sd, cfg)


def llama2c_rows_to_hf(w, n_heads, head_dim):
    """Reorder the rows of an interleaved-RoPE q/k projection (n_heads*head_dim, in) for
    the rotate_half convention: within each head, rows 0,2,4,.. then 1,3,5,..

    Interleaved pair i is rows (2i, 2i+1); after this it sits at rows (i, i + head_dim/2),
    which is rotate_half's pair i, with the same frequency. This is the inverse of the
    permutation HF's convert_llama_weights_to_hf.py applies to Meta checkpoints.
    """
    order = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])
    return w.view(n_heads, head_dim, -1)[:, order].reshape(n_heads * head_dim, -1)
