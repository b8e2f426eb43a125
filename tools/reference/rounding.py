"""The input rounding netgpt's prefill applies to products with bf16 weights.

On CPUs with AVX512-BF16, netgpt multiplies bf16 weight matrices by many activation rows at
once (a prompt) with vdpbf16ps, which takes both operands as bfloat16: the activations are
rounded to bfloat16 (to nearest even) from the float32 values the engine holds, and the
products are summed in float32. gpt2_ref.py and llama_ref.py call linear() for every product
with a weight matrix; input_rounding(True) makes it round its input the same way, so that
the references can describe that computation too (the weights themselves are rounded by the
fixture scripts, as for logits_bf16w).
"""

import torch

_round = False


def input_rounding(on):
    """Turn the bfloat16 rounding of the weight products' inputs on or off."""
    global _round
    _round = bool(on)


def linear(x, w):
    """x @ w; under input_rounding(True), x rounded to bfloat16 through float32 first."""
    if _round:
        x = x.to(torch.float32).to(torch.bfloat16).to(x.dtype)
    return x @ w
