#!/usr/bin/env python3
"""Expected SmolLM2 token ids for tests/check_demo.c, from the Hugging Face
`tokenizers` library (the implementation transformers uses).

The tokenizer is rebuilt from the demo GGUF's own vocabulary and merges
(tokenizer.ggml.tokens / merges, read with the `gguf` package) with the
pipeline of SmolLM2's tokenizer.json: no normalizer, pre-tokenizer
Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False,
use_regex=True)], byte-level BPE, ByteLevel decoder, and the control tokens
(token_type 3: <|endoftext|>, <|im_start|>, <|im_end|>, ...) as special
added tokens. (llama.cpp's pre-tokenizer type for this file, "smollm", is
the same split: single digits, then the GPT-2 regex.)

    pip install gguf tokenizers
    python3 contrib/gen_smollm2_tokens.py MODEL.gguf > tests/data/chat/smollm2_tokens.json
"""
import json
import sys

from gguf import GGUFReader
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

TEXTS = [
    "What is the capital of France?",
    "Hello world",
    " Hello  world!\n\nHow are you?",
    "The year 1984 had 365 days; π ≈ 3.14159.",
    "naïve café – 日本語 🙂",
    "def f(x):\n    return x**2  # square",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
]


def main():
    r = GGUFReader(sys.argv[1])
    f = r.fields
    toks = [bytes(f["tokenizer.ggml.tokens"].parts[i]).decode() for i in f["tokenizer.ggml.tokens"].data]
    types = [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data]
    merges = [tuple(bytes(f["tokenizer.ggml.merges"].parts[i]).decode().split(" ", 1))
              for i in f["tokenizer.ggml.merges"].data]
    vocab = {t: i for i, t in enumerate(toks)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False)
                           for t, ty in zip(toks, types) if ty == 3])
    out = {"source": "HF tokenizers from the GGUF vocab/merges with SmolLM2's "
                     "tokenizer.json pipeline (contrib/gen_smollm2_tokens.py)",
           "cases": []}
    for t in TEXTS:
        ids = tk.encode(t, add_special_tokens=False).ids
        out["cases"].append({"text": t, "ids": ids, "decoded": tk.decode(ids, skip_special_tokens=False)})
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
