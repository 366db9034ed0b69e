#!/usr/bin/env python3
"""Make tests/data/models/tiny-qwen2: a random-weight Qwen2 (q/k/v biases,
rope theta 1e6, rms eps 1e-6) and its golden.json from HF transformers.

Run where torch and transformers are installed (the golden in the repo came
from transformers 5.17.0, torch 2.11.0):

    python3 contrib/gen_tiny_qwen2.py OUTDIR

then gzip OUTDIR/model.safetensors into tests/data/models/tiny-qwen2/ and
copy config.json, generation_config.json and golden.json beside it; the
tokenizer files are tiny-llama2's (same 32000-token vocabulary).

The golden logits are computed from a model re-loaded from the saved bf16
file with dtype float32: converting a live model with .to(bfloat16) would
also round the rotary inv_freq buffer to bf16, and HF's logits would then
drift from the exact math by ~1e-3 with the position.
"""
import json
import sys

import torch
import transformers
from transformers import Qwen2Config, Qwen2ForCausalLM

PROMPTS = [  # tiny-llama2 tokenizer ids, BOS first
    [1, 9038, 2501, 263, 931],
    [1, 450, 7483, 310, 3444, 338],
    [1],
    [1, 29871, 29896, 29871, 29906, 29871, 29941, 29871, 29946, 29871,
     29945, 29871, 29953],
]
STEPS = 16


def main(out):
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=32000, hidden_size=64, intermediate_size=192,
                      num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512,
                      rope_theta=1e6, rms_norm_eps=1e-6,
                      tie_word_embeddings=False, bos_token_id=1,
                      eos_token_id=2)
    m = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.5 if "bias" in name else 0.2))
    m.to(torch.bfloat16).save_pretrained(out)
    del m
    m = Qwen2ForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    prompts = []
    for ids in PROMPTS:
        x, steps, greedy, margins = list(ids), [], [], []
        with torch.no_grad():
            for s in range(STEPS):
                logits = m(torch.tensor([x])).logits[0, -1]
                if s == 0:
                    first = logits.clone()
                v, i = logits.topk(8)
                steps.append({"top_ids": i.tolist(),
                              "top_logits": [round(a, 5) for a in v.tolist()]})
                margins.append(round((v[0] - v[1]).item(), 5))
                greedy.append(i[0].item())
                x.append(i[0].item())
        prompts.append({"ids": ids, "greedy": greedy, "steps": steps,
                        "margins": margins,
                        "last_logits_l2": first.norm().item(),
                        "last_logits_mean": first.mean().item()})
    ref = ("HF transformers %s, float32 compute from the stored bf16 weights "
           "(loaded with dtype float32)" % transformers.__version__)
    with open(out + "/golden.json", "w") as f:
        json.dump({"model": "tiny-qwen2", "reference": ref,
                   "prompts": prompts}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tiny-qwen2")
