"""Writes the behaviour-benchmark pair: two random Llama checkpoints of SmolLM2-135M's exact shape.

A real 135M-parameter forward pass (30 layers, hidden 576, GQA 9/3 heads, 49152-token tied vocabulary) is what the
KL benchmark times; the weights only need to be plausible, so they are drawn from HF's own init (normal, std 0.02)
with a fixed seed instead of downloaded. RMSNorm weights get 1 + 0.1·noise so the norms are not no-ops. The tuned
copy changes a few layers' attention and MLP matrices by relative 1e-2, so KL is non-zero but small, as after a
light fine-tune. The tokenizer is the 512-token one from fixtures/tiny-llama: ids stay < 512, which a 49152-row
embedding accepts. Run by hand: python3 docs/bench/make_smol.py bench-data/smol [--seed 0] [--tuned-layers all]
"""

import argparse
import json
import os
import shutil
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

TOKENIZER_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "tiny-llama", "base")
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
TUNED_LAYERS = [3, 14, 25]  # early, middle and late blocks, so the change propagates through most of the stack
RELATIVE_CHANGE = 1e-2


def config():
    return LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, rms_norm_eps=1e-5,
        rope_theta=100000.0, tie_word_embeddings=True, initializer_range=0.02, hidden_act="silu",
        # Ids of the fixture tokenizer's <|bos|>, <|eos|>, <|pad|> (SmolLM2's own are different).
        bos_token_id=0, eos_token_id=1, pad_token_id=2, dtype="float32",
    )


def save(model, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    for name in TOKENIZER_FILES:
        src = os.path.join(TOKENIZER_DIR, name)
        if os.path.exists(src):  # the fixture has no special_tokens_map.json; tokenizer_config.json carries them
            shutil.copy(src, out_dir)
    # transformers 5 writes rope_theta only inside rope_parameters; SmolLM2's own config.json (and older readers)
    # have it at the top level. Write both so any config reader sees 100000, not a 10000 default.
    path = os.path.join(out_dir, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["rope_theta"] = cfg["rope_parameters"]["rope_theta"]
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    # The fixture caps model_max_length at its own 256 positions; this model takes 2048.
    path = os.path.join(out_dir, "tokenizer_config.json")
    with open(path) as f:
        tok_cfg = json.load(f)
    tok_cfg["model_max_length"] = 2048
    with open(path, "w") as f:
        json.dump(tok_cfg, f, indent=2)
    size = os.path.getsize(os.path.join(out_dir, "model.safetensors"))
    print(f"{out_dir}: model.safetensors {size} bytes ({size / 2**20:.1f} MiB)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tuned-layers", default=",".join(map(str, TUNED_LAYERS)),
                    help="comma-separated blocks to change, or 'all' (the patching benchmark: no block is "
                         "identical, so no patch is skipped as a no-op)")
    args = ap.parse_args()
    tuned_layers = (range(config().num_hidden_layers) if args.tuned_layers == "all"
                    else [int(x) for x in args.tuned_layers.split(",")])
    start = time.time()

    torch.manual_seed(args.seed)  # HF's init draws from the global generator
    model = LlamaForCausalLM(config()).float().eval()  # ~0.54 GB in float32; built directly, no meta device needed
    gen = torch.Generator().manual_seed(args.seed + 1)  # our own draws, independent of HF's init order
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
    save(model, os.path.join(args.out_dir, "base"))

    with torch.no_grad():
        for i in tuned_layers:
            layer = model.model.layers[i]
            for lin in [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                        layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj]:
                w = lin.weight
                # Noise with ‖ΔW‖_F ≈ RELATIVE_CHANGE · ‖W‖_F.
                w.add_(torch.randn(w.shape, generator=gen) * (RELATIVE_CHANGE * w.std()))
    save(model, os.path.join(args.out_dir, "tuned"))
    print(f"done in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
