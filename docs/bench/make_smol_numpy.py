"""Writes the SmolLM2-135M-shaped benchmark pair with numpy only (no torch, no transformers).

Same layout as make_smol.py (30 layers, hidden 576, GQA 9/3 heads, ffn 1536, 49152-token tied vocabulary, the
fixture's 512-token tokenizer, config.json as transformers writes it, float32 safetensors with tensors sorted by
name), and the same recipe: normal(0, 0.02) weights, RMSNorm weights 1 + 0.1·noise, and the tuned copy's attention
and MLP matrices of a few blocks changed by relative 1e-2. The draws come from numpy's generator, so the numbers
differ from make_smol.py's; only the shapes and the size of the change matter for timing. The safetensors file is
written directly (8-byte header length, JSON header, raw little-endian data). Needs numpy only:
    python3 docs/bench/make_smol_numpy.py bench-data/smol [--seed 0] [--tuned-layers all]
"""

import argparse
import json
import os
import shutil
import struct
import time

import numpy as np

TOKENIZER_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "tiny-llama", "base")
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
TUNED_LAYERS = [3, 14, 25]  # as make_smol.py: early, middle and late blocks
RELATIVE_CHANGE = 1e-2
LAYERS, HIDDEN, FFN, HEADS, KV_HEADS, VOCAB = 30, 576, 1536, 9, 3, 49152
HEAD_DIM = HIDDEN // HEADS
MATRICES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    # Ids of the fixture tokenizer's <|bos|>, <|eos|>, <|pad|> (SmolLM2's own are different).
    "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2, "dtype": "float32", "head_dim": HEAD_DIM,
    "hidden_act": "silu", "hidden_size": HIDDEN, "initializer_range": 0.02, "intermediate_size": FFN,
    "max_position_embeddings": 2048, "mlp_bias": False, "model_type": "llama", "num_attention_heads": HEADS,
    "num_hidden_layers": LAYERS, "num_key_value_heads": KV_HEADS, "pretraining_tp": 1, "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}, "rope_theta": 100000.0,
    "tie_word_embeddings": True, "use_cache": True, "vocab_size": VOCAB,
}


def shapes():
    """Every tensor's name and shape, as LlamaForCausalLM.save_pretrained writes them (lm_head tied, not stored)."""
    out = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,)}
    kv = KV_HEADS * HEAD_DIM
    dims = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (kv, HIDDEN), "self_attn.v_proj": (kv, HIDDEN),
            "self_attn.o_proj": (HIDDEN, HIDDEN), "mlp.gate_proj": (FFN, HIDDEN), "mlp.up_proj": (FFN, HIDDEN),
            "mlp.down_proj": (HIDDEN, FFN)}
    for i in range(LAYERS):
        for name, shape in dims.items():
            out[f"model.layers.{i}.{name}.weight"] = shape
        out[f"model.layers.{i}.input_layernorm.weight"] = (HIDDEN,)
        out[f"model.layers.{i}.post_attention_layernorm.weight"] = (HIDDEN,)
    return out


def write_safetensors(path, tensors):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    names = sorted(tensors)
    for name in names:
        size = tensors[name].nbytes
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # safetensors pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in names:
            f.write(np.ascontiguousarray(tensors[name], dtype="<f4").tobytes())


def save(tensors, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
    for name in TOKENIZER_FILES:
        src = os.path.join(TOKENIZER_DIR, name)
        if os.path.exists(src):
            shutil.copy(src, out_dir)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
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
                    help="comma-separated blocks to change, or 'all'")
    args = ap.parse_args()
    tuned_layers = range(LAYERS) if args.tuned_layers == "all" else [int(x) for x in args.tuned_layers.split(",")]
    start = time.time()
    rng = np.random.default_rng(args.seed)
    tensors = {}
    for name, shape in shapes().items():
        if name.endswith("norm.weight"):
            tensors[name] = (1 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
        else:
            tensors[name] = (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    save(tensors, os.path.join(args.out_dir, "base"))
    for i in tuned_layers:
        for m in MATRICES:
            name = f"model.layers.{i}.{m}.weight"
            w = tensors[name]
            # Noise with ‖ΔW‖_F ≈ RELATIVE_CHANGE · ‖W‖_F.
            tensors[name] = w + rng.standard_normal(w.shape, dtype=np.float32) * (RELATIVE_CHANGE * w.std())
    save(tensors, os.path.join(args.out_dir, "tuned"))
    print(f"done in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
