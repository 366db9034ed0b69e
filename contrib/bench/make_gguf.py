#!/usr/bin/env python3
"""Write a random-weight Llama GGUF of a given shape, for benchmarks.

The tokenizer metadata (tokenizer.ggml.*) is copied from an existing GGUF
(default: the tiny-llama2 test model, which carries the 32000-token Llama-2
vocabulary), so llama.cpp and inferd can both load the file and tokenize.
Weights are drawn from a seeded normal distribution (std 0.02, norms ~1.0),
stored as F16, Q8_0, Q4_0 or Q4_1 (quantised here with round-to-nearest;
the values are random anyway, what matters is the real block layout).

Shapes:   tinyllama-1.1b  dim 2048, 22 layers, 32 heads, 4 KV heads, ffn 5632
          llama2-7b       dim 4096, 32 layers, 32 heads, 32 KV heads, ffn 11008
          smol-100m       dim 768, 12 layers, 12 heads, 4 KV heads, ffn 2048

Usage: make_gguf.py OUT.gguf --shape tinyllama-1.1b [--type f16] [--vocab-from X.gguf]
Needs numpy (fast) and only the standard library otherwise.
"""
import argparse
import struct
import sys

try:
    import numpy as np
except ImportError:  # pragma: no cover
    sys.exit("make_gguf.py needs numpy (pip install numpy)")

SHAPES = {
    "tinyllama-1.1b": dict(dim=2048, layers=22, heads=32, kv=4, ffn=5632, ctx=2048),
    "llama2-7b": dict(dim=4096, layers=32, heads=32, kv=32, ffn=11008, ctx=4096),
    "smol-100m": dict(dim=768, layers=12, heads=12, kv=4, ffn=2048, ctx=2048),
    "llama-1b": dict(dim=2048, layers=16, heads=32, kv=8, ffn=8192, ctx=4096),
}
GGML = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 8}
ALIGN = 32

# --- minimal GGUF reader (metadata only) -----------------------------------


def _rd(f, fmt):
    return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]


def _rd_str(f):
    n = _rd(f, "Q")
    return f.read(n)


SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _rd_val(f, t):
    if t in SCALAR:
        return _rd(f, SCALAR[t])
    if t == 8:
        return _rd_str(f)
    if t == 9:
        et = _rd(f, "I")
        n = _rd(f, "Q")
        return (et, [_rd_val(f, et) for _ in range(n)])
    raise ValueError("bad gguf type %d" % t)


def read_kv(path):
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(path + ": not GGUF")
        _rd(f, "I")
        _rd(f, "Q")  # tensors
        nkv = _rd(f, "Q")
        out = []
        for _ in range(nkv):
            k = _rd_str(f).decode()
            t = _rd(f, "I")
            out.append((k, t, _rd_val(f, t)))
        return out


# --- writer -----------------------------------------------------------------


def w_str(buf, s):
    if isinstance(s, str):
        s = s.encode()
    buf += struct.pack("<Q", len(s)) + s


def w_val(buf, t, v):
    if t in SCALAR:
        buf += struct.pack("<" + SCALAR[t], v)
    elif t == 8:
        w_str(buf, v)
    elif t == 9:
        et, items = v
        buf += struct.pack("<IQ", et, len(items))
        for x in items:
            w_val(buf, et, x)


def quantize(a, typ):
    """a: float32 [rows, cols] -> bytes in ggml block layout."""
    rows, cols = a.shape
    if typ == "f32":
        return a.astype("<f4").tobytes()
    if typ == "f16":
        return a.astype("<f2").tobytes()
    b = a.reshape(rows, cols // 32, 32)
    if typ == "q8_0":
        amax = np.abs(b).max(axis=2, keepdims=True)
        d = amax / 127.0
        q = np.where(d > 0, np.round(b / np.where(d > 0, d, 1)), 0).astype(np.int8)
        out = np.zeros((rows, cols // 32), dtype=[("d", "<f2"), ("q", "i1", 32)])
        out["d"] = d[..., 0]
        out["q"] = q
        return out.tobytes()
    if typ == "q4_0":
        idx = np.abs(b).argmax(axis=2)
        mx = np.take_along_axis(b, idx[..., None], axis=2)
        d = mx / -8.0
        inv = np.where(d != 0, 1.0 / np.where(d != 0, d, 1), 0)
        q = np.clip(np.floor(b * inv + 8.5), 0, 15).astype(np.uint8)
        packed = q[..., :16] | (q[..., 16:] << 4)
        out = np.zeros((rows, cols // 32), dtype=[("d", "<f2"), ("q", "u1", 16)])
        out["d"] = d[..., 0]
        out["q"] = packed
        return out.tobytes()
    if typ == "q4_1":
        mn = b.min(axis=2, keepdims=True)
        mx = b.max(axis=2, keepdims=True)
        d = (mx - mn) / 15.0
        inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1), 0)
        q = np.clip(np.floor((b - mn) * inv + 0.5), 0, 15).astype(np.uint8)
        packed = q[..., :16] | (q[..., 16:] << 4)
        out = np.zeros((rows, cols // 32), dtype=[("d", "<f2"), ("m", "<f2"), ("q", "u1", 16)])
        out["d"] = d[..., 0]
        out["m"] = mn[..., 0]
        out["q"] = packed
        return out.tobytes()
    raise ValueError(typ)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--shape", default="tinyllama-1.1b", choices=sorted(SHAPES))
    ap.add_argument("--type", default="f16", choices=sorted(GGML))
    ap.add_argument("--vocab-from", default="build/testdata/models/tiny-llama2-f16.gguf")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--fast", action="store_true",
                    help="draw each layer tensor shape once and repeat its bytes in every layer "
                         "(a 7B file in seconds, not minutes; speed is the same, since every layer "
                         "is still read from memory: a layer is far larger than any cache)")
    a = ap.parse_args()
    s = SHAPES[a.shape]
    kv_src = [x for x in read_kv(a.vocab_from) if x[0].startswith("tokenizer.")]
    vocab = len(next(v for k, t, v in kv_src if k == "tokenizer.ggml.tokens")[1])
    dim, L, H, KV, F = s["dim"], s["layers"], s["heads"], s["kv"], s["ffn"]
    hd = dim // H
    meta = [
        ("general.architecture", 8, "llama"),
        ("general.name", 8, "random-%s-%s" % (a.shape, a.type)),
        ("llama.context_length", 4, s["ctx"]),
        ("llama.embedding_length", 4, dim),
        ("llama.block_count", 4, L),
        ("llama.feed_forward_length", 4, F),
        ("llama.attention.head_count", 4, H),
        ("llama.attention.head_count_kv", 4, KV),
        ("llama.attention.layer_norm_rms_epsilon", 6, 1e-5),
        ("llama.rope.freq_base", 6, 10000.0),
        ("llama.rope.dimension_count", 4, hd),
        ("llama.vocab_size", 4, vocab),
        ("general.alignment", 4, ALIGN),
    ] + kv_src
    # (name, rows, cols, is_norm)
    tensors = [("token_embd.weight", vocab, dim, False)]
    for i in range(L):
        p = "blk.%d." % i
        tensors += [
            (p + "attn_norm.weight", 1, dim, True),
            (p + "attn_q.weight", H * hd, dim, False),
            (p + "attn_k.weight", KV * hd, dim, False),
            (p + "attn_v.weight", KV * hd, dim, False),
            (p + "attn_output.weight", dim, H * hd, False),
            (p + "ffn_norm.weight", 1, dim, True),
            (p + "ffn_gate.weight", F, dim, False),
            (p + "ffn_up.weight", F, dim, False),
            (p + "ffn_down.weight", dim, F, False),
        ]
    tensors += [("output_norm.weight", 1, dim, True), ("output.weight", vocab, dim, False)]

    def ttype(name, norm):
        if norm:
            return "f32"
        if a.type in ("q4_0", "q4_1") and name in ("output.weight", "token_embd.weight"):
            return "q8_0" if name == "output.weight" else a.type  # llama.cpp's usual choice: a bigger head
        return a.type

    def nbytes(t, rows, cols):
        per = {"f32": 4 * 32, "f16": 2 * 32, "q8_0": 34, "q4_0": 18, "q4_1": 20}[t]
        return rows * cols // 32 * per

    hdr = bytearray(b"GGUF") + struct.pack("<IQQ", 3, len(tensors), len(meta))
    for k, t, v in meta:
        w_str(hdr, k)
        hdr += struct.pack("<I", t)
        w_val(hdr, t, v)
    off = 0
    plan = []
    for name, rows, cols, norm in tensors:
        t = ttype(name, norm)
        w_str(hdr, name)
        if rows == 1:
            hdr += struct.pack("<I", 1) + struct.pack("<Q", cols)
        else:
            hdr += struct.pack("<I", 2) + struct.pack("<QQ", cols, rows)
        hdr += struct.pack("<IQ", GGML[t], off)
        plan.append((name, rows, cols, norm, t, off))
        off += nbytes(t, rows, cols)
        off = (off + ALIGN - 1) // ALIGN * ALIGN
    pad = (-len(hdr)) % ALIGN
    rng = np.random.default_rng(a.seed)
    reuse = {}  # --fast: the bytes of each layer tensor kind
    with open(a.out, "wb") as f:
        f.write(hdr + b"\0" * pad)
        base = f.tell()
        for name, rows, cols, norm, t, o in plan:
            f.seek(base + o)
            if norm:
                w = (1.0 + 0.1 * rng.standard_normal((1, cols))).astype(np.float32)
                f.write(quantize(w, t))
                continue
            key = (rows, cols, t, name.split(".")[-2])
            if a.fast and key in reuse:
                f.write(reuse[key])
                continue
            parts = []
            step = max(1, (64 << 20) // (cols * 4))  # 64 MB of f32 at a time
            for r0 in range(0, rows, step):
                r1 = min(rows, r0 + step)
                w = (0.02 * rng.standard_normal((r1 - r0, cols), dtype=np.float32))
                parts.append(quantize(w, t))
                f.write(parts[-1])
            if a.fast and name.startswith("blk."):
                reuse[key] = b"".join(parts)
        f.truncate(base + off)
    print("%s: %s %s, %d tensors, %.2f GB" % (a.out, a.shape, a.type, len(tensors), (base + off) / 1e9))


if __name__ == "__main__":
    main()
