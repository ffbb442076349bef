"""The per-token KL of `mdiff compare --methods kl`, written the way one would in PyTorch.

Same work: both models in float32, prompts tokenized one by one (tokenizer(text), default special tokens), batched
in file order and right-padded with an attention mask; per batch one forward of each model, log_softmax of the
logits in float32, then at every real (non-pad) position KL(P_tuned‖P_base), KL(P_base‖P_tuned), both entropies
and top-1 agreement, summed in float64. tokens/s = scored tokens / wall time of that loop (model loading and
tokenization excluded), median over --repeat runs after one untimed warm-up batch. Prints one JSON line.
    python3 docs/bench/behaviour_reference.py bench-data/smol/base bench-data/smol/tuned bench-data/smol/prompts.txt
"""

import argparse
import json
import resource
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def load(path):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    return model.eval()


def batches(ids, size, pad_id):
    """Yields (input_ids, attention_mask) for consecutive groups of `size` prompts, right-padded."""
    for i in range(0, len(ids), size):
        group = ids[i:i + size]
        width = max(len(x) for x in group)
        input_ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, x in enumerate(group):
            input_ids[row, :len(x)] = torch.tensor(x)
            mask[row, :len(x)] = 1
        yield input_ids, mask


def score(base, tuned, input_ids, mask, sums):
    """Adds this batch's per-position statistics, over real positions only, to `sums` (float64 totals)."""
    lb = base(input_ids=input_ids, attention_mask=mask).logits.float().log_softmax(-1)
    lt = tuned(input_ids=input_ids, attention_mask=mask).logits.float().log_softmax(-1)
    pb, pt = lb.exp(), lt.exp()
    real = mask.bool()
    per_pos = {
        "kl": (pt * (lt - lb)).sum(-1),          # KL(P_tuned ‖ P_base)
        "kl_reverse": (pb * (lb - lt)).sum(-1),  # KL(P_base ‖ P_tuned)
        "entropy_base": -(pb * lb).sum(-1),
        "entropy_tuned": -(pt * lt).sum(-1),
        "top1_agreement": (lb.argmax(-1) == lt.argmax(-1)).float(),
    }
    for k, v in per_pos.items():
        sums[k] = sums.get(k, 0.0) + v[real].double().sum().item()
    sums["tokens"] = sums.get("tokens", 0) + int(real.sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("tuned")
    ap.add_argument("prompts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(args.base)
    base, tuned = load(args.base), load(args.tuned)
    load_s = time.perf_counter() - t0
    with open(args.prompts, encoding="utf-8") as f:
        prompts = [line.rstrip("\n") for line in f if line.strip()]
    ids = [tok(text)["input_ids"] for text in prompts]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0  # padded positions are masked out anyway

    with torch.inference_mode():
        score(base, tuned, *next(batches(ids, args.batch_size, pad_id)), {})  # warm-up: allocator, kernels
        times = []
        for _ in range(args.repeat):
            sums = {}
            start = time.perf_counter()
            for input_ids, mask in batches(ids, args.batch_size, pad_id):
                score(base, tuned, input_ids, mask, sums)
            times.append(time.perf_counter() - start)

    n = sums["tokens"]
    wall = statistics.median(times)
    print(json.dumps({
        "impl": "pytorch", "torch": torch.__version__, "threads": args.threads, "batch_size": args.batch_size,
        "prompts": len(prompts), "tokens": n, "repeat": args.repeat,
        "tokens_per_s": round(n / wall, 1), "wall_s_median": round(wall, 3), "wall_s": [round(t, 3) for t in times],
        "load_s": round(load_s, 2),
        **{f"mean_{k}": sums[k] / n for k in ["kl", "kl_reverse", "entropy_base", "entropy_tuned"]},
        "top1_agreement": sums["top1_agreement"] / n,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # Linux: KiB
    }))


if __name__ == "__main__":
    main()
