"""The weight-diff statistics of `mdiff compare --methods weights`, written the way one would in PyTorch.

Same work per tensor: ‖W‖, ‖W'‖, ⟨W, W'⟩, ‖ΔW‖, max|Δ|, mean|Δ|, changed fraction (accumulated in float64),
and for matrices the top-8 singular values of ΔW by torch.svd_lowrank (q = 16, niter = 3), the same subspace
size and power iterations as mdiff. Used as the reference in docs/benchmarks.md:
    python3 docs/bench/reference.py bench-data/f32-base bench-data/f32-tuned [--no-svd]
"""

import sys

import torch
from safetensors import safe_open


def main(base_dir, tuned_dir, svd):
    torch.manual_seed(0)
    out = {}
    with safe_open(f"{base_dir}/model.safetensors", "pt") as fb, safe_open(f"{tuned_dir}/model.safetensors", "pt") as ft:
        for name in fb.keys():
            b = fb.get_tensor(name).float()
            t = ft.get_tensor(name).float()
            d = t - b
            stats = {
                "base_norm": torch.linalg.vector_norm(b, dtype=torch.float64).item(),
                "tuned_norm": torch.linalg.vector_norm(t, dtype=torch.float64).item(),
                "dot": torch.dot(b.flatten().double(), t.flatten().double()).item(),
                "delta_norm": torch.linalg.vector_norm(d, dtype=torch.float64).item(),
                "max_abs_delta": d.abs().max().item(),
                "mean_abs_delta": d.abs().double().mean().item(),
                "changed": (d != 0).double().mean().item(),
            }
            if svd and d.dim() == 2 and stats["delta_norm"] > 0:
                _, s, _ = torch.svd_lowrank(d, q=16, niter=3)
                stats["singular_values"] = s[:8].tolist()
            out[name] = stats
    print(len(out), "tensors")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(args[0], args[1], "--no-svd" not in sys.argv)
