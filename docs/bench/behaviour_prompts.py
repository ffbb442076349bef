"""Writes the behaviour-benchmark prompt file: N lines of about T tokens each, cut from fixtures/corpus/*.txt.

Lines are cut by token count (not characters) under the benchmark tokenizer, so every prompt costs the same
forward pass and the tokens/s figure does not depend on where a line happens to break. Newlines in the corpus
become spaces, since a .txt prompt file holds one prompt per line. A cut made at token offsets can re-tokenize to
a token or two more or less at the edges; the script prints the range it got. Run by hand:
    python3 docs/bench/behaviour_prompts.py bench-data/smol/prompts.txt [--n 64] [--tokens 128]
"""

import argparse
import glob
import os

from tokenizers import Tokenizer

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
TOKENIZER = os.path.join(ROOT, "fixtures", "tiny-llama", "base", "tokenizer.json")  # same file make_smol.py copies


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_file")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()

    tok = Tokenizer.from_file(TOKENIZER)
    files = sorted(glob.glob(os.path.join(ROOT, "fixtures", "corpus", "*.txt")))
    text = " ".join(" ".join(open(f, encoding="utf-8").read().split()) for f in files)  # one line, single spaces
    enc = tok.encode(text, add_special_tokens=False)
    offsets, per = enc.offsets, args.tokens
    if len(offsets) < args.n * per:
        raise SystemExit(f"corpus has {len(offsets)} tokens, fewer than --n × --tokens = {args.n * per}")

    lines = []
    for i in range(args.n):
        # Characters from the first to the last token of the i-th window of `per` consecutive tokens.
        start, end = offsets[i * per][0], offsets[(i + 1) * per - 1][1]
        lines.append(text[start:end].strip())
    os.makedirs(os.path.dirname(os.path.abspath(args.out_file)), exist_ok=True)
    with open(args.out_file, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    counts = [len(tok.encode(line).ids) for line in lines]
    print(f"{args.out_file}: {len(lines)} prompts, {min(counts)}-{max(counts)} tokens each, {sum(counts)} in all "
          f"(corpus: {len(offsets)} tokens)")


if __name__ == "__main__":
    main()
