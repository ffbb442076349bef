"""Writes the benchmark pair for docs/benchmarks.md: a Llama-7B-shaped checkpoint trimmed to one block.

One block at Llama-2-7B width (hidden 4096, MLP 11008, 32 heads) plus a 16000-token tied embedding:
268M parameters, 1.07 GB in F32 and 0.54 GB in BF16 per model. The tuned copy gets a rank-16 update on every
attention projection (what a LoRA does) and a small dense change on the MLP, so every matrix goes through the
singular value path. Run by hand: python3 docs/bench/make_pair.py bench-data
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file

HIDDEN, MLP, VOCAB, HEADS = 4096, 11008, 16000, 32


def shapes():
    p = "model.layers.0."
    return {
        "model.embed_tokens.weight": (VOCAB, HIDDEN),
        p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN),
        p + "self_attn.k_proj.weight": (HIDDEN, HIDDEN),
        p + "self_attn.v_proj.weight": (HIDDEN, HIDDEN),
        p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
        p + "mlp.gate_proj.weight": (MLP, HIDDEN),
        p + "mlp.up_proj.weight": (MLP, HIDDEN),
        p + "mlp.down_proj.weight": (HIDDEN, MLP),
        p + "input_layernorm.weight": (HIDDEN,),
        p + "post_attention_layernorm.weight": (HIDDEN,),
        "model.norm.weight": (HIDDEN,),
    }


def main(out_dir):
    gen = torch.Generator().manual_seed(0)
    base, tuned = {}, {}
    for name, shape in shapes().items():
        w = torch.ones(shape) if len(shape) == 1 else torch.randn(shape, generator=gen) * 0.02
        base[name] = w
        if "self_attn" in name:
            b = torch.randn(shape[0], 16, generator=gen) * 0.01
            a = torch.randn(16, shape[1], generator=gen) * 0.01
            tuned[name] = w + b @ a
        elif "mlp" in name:
            tuned[name] = w + torch.randn(shape, generator=gen) * 1e-4
        else:
            tuned[name] = w.clone()
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": MLP, "num_hidden_layers": 1, "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS, "vocab_size": VOCAB, "tie_word_embeddings": True,
    }
    for dtype, tag in [(torch.float32, "f32"), (torch.bfloat16, "bf16")]:
        for side, tensors in [("base", base), ("tuned", tuned)]:
            d = os.path.join(out_dir, f"{tag}-{side}")
            os.makedirs(d, exist_ok=True)
            save_file({k: v.to(dtype).contiguous() for k, v in tensors.items()}, os.path.join(d, "model.safetensors"))
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(config, f, indent=2)
            print(d, os.path.getsize(os.path.join(d, "model.safetensors")))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench-data")
