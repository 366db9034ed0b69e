#!/usr/bin/env python3
"""Independent float64 reference for the Q8_0 golden check (issue 3).

Runs a tiny Llama GGUF (tests/data/models/tiny-llama{2,3}-q8_0.gguf) in numpy
float64 with its Q8_0 weights dequantised exactly, feeding the golden greedy
tokens (teacher forcing, as tests/check_golden.c does), and counts the steps
whose golden margin exceeds 0.1 where the argmax equals the golden token.
This is the best any implementation of these quantised weights can do; the
tests' own floors are compared against it. Needs numpy and gguf (PyPI).

  python3 contrib/q8_ceiling.py MODEL.gguf golden.json [--llama3-rope]
"""
import json
import sys

import numpy as np
from gguf import GGUFReader

MARGIN = 0.1


def tensors(path):
    r = GGUFReader(path)
    kv = {}
    for f in r.fields.values():
        if f.types and f.types[0].name != "ARRAY" and f.data:
            v = f.parts[f.data[0]]
            kv[f.name] = v.tobytes().decode() if v.dtype == np.uint8 else v[0]
    w = {}
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape.tolist())]  # rows, cols
        if t.tensor_type.name == "Q8_0":
            raw = np.frombuffer(t.data.tobytes(), dtype=np.uint8).reshape(-1, 34)
            d = raw[:, :2].copy().view(np.float16).astype(np.float64)
            q = raw[:, 2:].copy().view(np.int8).astype(np.float64)
            a = (d * q).reshape(shape)
        else:
            a = np.array(t.data, dtype=np.float64).reshape(shape)
        w[t.name] = a
    return kv, w


def inv_freq(hd, base, llama3):
    f = 1.0 / base ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    if llama3:  # factor 8, original context 64, low 1, high 4
        factor, octx, lo, hi = 8.0, 64.0, 1.0, 4.0
        wl = 2 * np.pi / f
        out = np.where(wl > octx / lo, f / factor, f)
        s = (octx / wl - lo) / (hi - lo)
        mid = (wl <= octx / lo) & (wl >= octx / hi)
        out = np.where(mid, (1 - s) * f / factor + s * f, out)
        f = out
    return f


def rope(x, pos, f):  # GGUF rows are permuted for interleaved pairs
    a = np.outer(pos, f)
    c, s = np.cos(a)[:, None, :], np.sin(a)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    y = np.empty_like(x)
    y[..., 0::2] = x0 * c - x1 * s
    y[..., 1::2] = x0 * s + x1 * c
    return y


def rms(x, g, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g


def forward(kv, w, ids, llama3):
    a = kv["general.architecture"]
    nh, nkv = int(kv[a + ".attention.head_count"]), int(kv[a + ".attention.head_count_kv"])
    eps = float(kv[a + ".attention.layer_norm_rms_epsilon"])
    nl = int(kv[a + ".block_count"])
    base = 500000.0 if llama3 else float(kv.get(a + ".rope.freq_base", 10000.0))
    x = w["token_embd.weight"][ids]
    n, dim = x.shape
    hd = dim // nh
    f = inv_freq(hd, base, llama3)
    pos = np.arange(n)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for l in range(nl):
        p = "blk.%d." % l
        h = rms(x, w[p + "attn_norm.weight"], eps)
        q = (h @ w[p + "attn_q.weight"].T).reshape(n, nh, hd)
        k = (h @ w[p + "attn_k.weight"].T).reshape(n, nkv, hd)
        v = (h @ w[p + "attn_v.weight"].T).reshape(n, nkv, hd)
        q, k = rope(q, pos, f), rope(k, pos, f)
        g = nh // nkv
        k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", s, v).reshape(n, dim)
        x = x + o @ w[p + "attn_output.weight"].T
        h = rms(x, w[p + "ffn_norm.weight"], eps)
        gt, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
        x = x + (gt / (1 + np.exp(-gt)) * up) @ w[p + "ffn_down.weight"].T
    h = rms(x, w["output_norm.weight"], eps)
    out = w.get("output.weight", w["token_embd.weight"])
    return h @ out.T


def main():
    model, golden = sys.argv[1], sys.argv[2]
    llama3 = "--llama3-rope" in sys.argv
    kv, w = tensors(model)
    gold = json.load(open(golden))
    agreed = compared = 0
    for pr in gold["prompts"]:
        ids = list(pr["ids"]) + list(pr["greedy"])
        logits = forward(kv, w, np.array(ids), llama3)
        base = len(pr["ids"]) - 1
        for i, (tok, m) in enumerate(zip(pr["greedy"], pr["margins"])):
            if m > MARGIN:
                compared += 1
                agreed += int(np.argmax(logits[base + i]) == tok)
    print("%s: float64 on the dequantised weights agrees on %d of %d steps "
          "with margin > %g (%.1f%%)" % (model, agreed, compared, MARGIN,
                                         100.0 * agreed / max(compared, 1)))


if __name__ == "__main__":
    main()
