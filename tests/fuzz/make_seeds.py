#!/usr/bin/env python3
"""Write the committed seed corpora of the fuzz targets (tests/fuzz/corpus/).

Each seed is small and named for what it is. Besides a few well-formed
inputs, they hold the known attack shapes: msgpack "dd ff 00 00 00" (an
array of 4 G elements; msgpack-c #1013), deep nesting, GGUF counts and
dims whose products overflow (llama.cpp GHSA-vgg9-87g3-85w8), safetensors
offsets that overlap, run backwards or pass the end. Run from the repo root:
python3 tests/fuzz/make_seeds.py
"""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- msgpack (just what the seeds need) ----
def mp(v):
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if v >= 0:
            return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        return (bytes([0xa0 | len(b)]) if len(b) < 32 else b"\xda" + struct.pack(">H", len(b))) + b
    if isinstance(v, bytes):
        return b"\xc4" + bytes([len(v)]) + v
    if isinstance(v, list):
        return b"\xdc" + struct.pack(">H", len(v)) + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        return b"\xde" + struct.pack(">H", len(v)) + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(v)


def frame(b):
    return struct.pack(">I", len(b)) + b


proto = {
    "ping": mp({"op": "ping", "id": 1}),
    "hello": mp({"op": "hello", "id": 2, "version": 1, "client": "fuzz"}),
    "generate_messages": mp({"op": "generate", "id": 3, "model": "tiny-llama2",
                             "messages": [{"role": "user", "content": "hi"}],
                             "max_tokens": 4, "temperature": 0.5, "stop": ["x", "y"]}),
    "tokenize": mp({"op": "tokenize", "id": 4, "model": "m", "text": "abc", "add_bos": True}),
    "detokenize": mp({"op": "detokenize", "id": 5, "model": "m", "tokens": [1, 2, -3]}),
    "msgpack_c_1013_array32": b"\xdd\xff\x00\x00\x00",
    "map32_huge": b"\xdf\xff\xff\xff\xff",
    "str32_huge": b"\x81\xdb\xff\xff\xff\xf0",
    "bin32_huge": b"\x81\xa1k\xc6\x7f\xff\xff\xff",
    "ext32_huge": b"\x81\xa1k\xc9\xff\xff\xff\xff\x01",
    "deep_arrays": b"\x81\xa1k" + b"\x91" * 200 + b"\xc0",
    "deep_maps": b"\x81\xa1k" + b"\x81\xa1k" * 200 + b"\xc0",
    "trailing_bytes": mp({"op": "ping", "id": 1}) + b"\xc0",
    "not_a_map": mp([1, 2, 3]),
    "truncated": mp({"op": "generate", "id": 3, "model": "tiny"})[:-3],
    "stream_two_frames": frame(mp({"op": "ping", "id": 1})) + frame(b"\xdd\xff\x00\x00\x00"),
    "stream_len_zero_and_huge": b"\x00\x00\x00\x00" + b"\xff\xff\xff\xff",
}
for k, v in proto.items():
    put("fuzz_protocol", k, v)
    # the daemon target reads a connection's byte stream: framed requests
    put("fuzz_daemon", k, v if k.startswith("stream") else frame(v))
put("fuzz_daemon", "many_ops", b"".join(frame(mp(x)) for x in [
    {"op": "hello", "id": 1, "version": 1},
    {"op": "status", "id": 2}, {"op": "models", "id": 3},
    {"op": "load", "id": 4, "model": "l2"},
    {"op": "generate", "id": 5, "model": "l2", "prompt": "Once upon", "max_tokens": 3, "stop": ["a"]},
    {"op": "generate", "id": 6, "model": "l2", "messages": [{"role": "system", "content": "s"},
                                                            {"role": "user", "content": "u"}], "template": "chatml"},
    {"op": "cancel", "id": 7, "target": 5},
    {"op": "detokenize", "id": 8, "model": "l2", "tokens": [1, 2, 3]},
    {"op": "log", "id": 9, "limit": 5, "all": True},
    {"op": "unload", "id": 10, "model": "l2"},
    {"op": "generate", "id": 5, "model": "../../etc/passwd", "prompt": "x"},
]))


# ---- GGUF ----
def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gguf(kvs, tensors, ntensors=None, nkv=None, data=b"", align=32):
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors) if ntensors is None else ntensors,
                                len(kvs) if nkv is None else nkv)
    for key, typ, val in kvs:
        out += gstr(key) + struct.pack("<I", typ) + val
    for name, dims, typ, off in tensors:
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", typ, off)
    out += b"\0" * ((-len(out)) % align)
    return out + data


U32, F32, STR, ARR = 4, 6, 8, 9
kv_ok = [("general.architecture", STR, gstr("llama")),
         ("llama.block_count", U32, struct.pack("<I", 1)),
         ("tokenizer.ggml.tokens", ARR, struct.pack("<IQ", STR, 2) + gstr("a") + gstr("b"))]
put("fuzz_gguf", "small_ok", gguf(kv_ok, [("t", [32, 2], 0, 0)], data=b"\0" * 256))
put("fuzz_gguf", "tensor_count_huge", gguf(kv_ok, [], ntensors=0xFFFFFFFFFFFFFFFF))
put("fuzz_gguf", "kv_count_huge", gguf([], [], nkv=0x7FFFFFFFFFFFFFFF))
put("fuzz_gguf", "string_len_overflow",
    b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 0xFFFFFFFFFFFFFFF0) + b"key")
put("fuzz_gguf", "array_count_overflow",
    gguf([("a", ARR, struct.pack("<IQ", U32, 0x4000000000000001))], []))
put("fuzz_gguf", "array_of_strings_count_overflow",
    gguf([("a", ARR, struct.pack("<IQ", STR, 0x1000000000000001) + gstr("x"))], []))
put("fuzz_gguf", "nested_arrays",
    gguf([("a", ARR, struct.pack("<IQ", ARR, 1) * 8 + struct.pack("<IQ", U32, 1) + b"\0" * 4)], []))
# GHSA-vgg9-87g3-85w8: dims whose product wraps to a small number
put("fuzz_gguf", "dims_product_overflow",
    gguf(kv_ok, [("t", [0x100000000, 0x100000000, 1, 16], 0, 0)], data=b"\0" * 64))
put("fuzz_gguf", "dims_product_wraps_to_32",
    gguf(kv_ok, [("t", [32, 0x8000000000000001 // 1 & 0xFFFFFFFFFFFFFFFF], 0, 0)], data=b"\0" * 256))
put("fuzz_gguf", "n_dims_huge", gguf(kv_ok, [("t", [1] * 4, 0, 0)]).replace(struct.pack("<I", 4) + struct.pack("<Q", 1) * 4, struct.pack("<I", 0xFFFFFFFF), 1))
put("fuzz_gguf", "offset_past_end", gguf(kv_ok, [("t", [32], 0, 0xFFFFFFFFFFFFFFE0)], data=b"\0" * 128))
put("fuzz_gguf", "tensors_overlap", gguf(kv_ok, [("t", [32], 0, 0), ("u", [32], 0, 64)], data=b"\0" * 256))
put("fuzz_gguf", "bad_type_id", gguf(kv_ok, [("t", [32], 0xFFFF, 0)], data=b"\0" * 256))
put("fuzz_gguf", "alignment_zero",
    gguf(kv_ok + [("general.alignment", U32, struct.pack("<I", 0))], [("t", [32], 0, 0)], data=b"\0" * 256))

# ---- safetensors ----
def st(header, data):
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


put("fuzz_safetensors", "ok", st({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                                  "__metadata__": {"format": "pt"}}, b"\0" * 16))
put("fuzz_safetensors", "offsets_backwards", st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, b"\0" * 16))
put("fuzz_safetensors", "offsets_overlap", st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 16))
put("fuzz_safetensors", "offsets_past_end", st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8))
put("fuzz_safetensors", "offset_huge", st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [18446744073709551612, 18446744073709551616]}}, b"\0" * 8))
put("fuzz_safetensors", "shape_overflow", st({"a": {"dtype": "BF16", "shape": [4294967296, 4294967296, 2], "data_offsets": [0, 0]}}, b""))
put("fuzz_safetensors", "shape_negative", st({"a": {"dtype": "F16", "shape": [-1, 2], "data_offsets": [0, 4]}}, b"\0" * 4))
put("fuzz_safetensors", "size_mismatch", st({"a": {"dtype": "F16", "shape": [3], "data_offsets": [0, 4]}}, b"\0" * 4))
# found by fuzz_safetensors: outer dims overflow int64, then a zero dim
put("fuzz_safetensors", "regress_rows_overflow_zero_dim",
    st({"a": {"dtype": "BF16", "shape": [4294967295, 4294967296, 0], "data_offsets": [0, 0]}}, b""))
put("fuzz_safetensors", "header_len_huge", struct.pack("<Q", 0xFFFFFFFFFFFFFFFF) + b"{}")
put("fuzz_safetensors", "deep_json", struct.pack("<Q", 2000) + b"[" * 1000 + b"]" * 1000)
dup = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
put("fuzz_safetensors", "duplicate_names", struct.pack("<Q", len(dup)) + dup + b"\0" * 8)

# ---- config.json ----
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
       "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
       "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 64,
       "rms_norm_eps": 1e-5, "tie_word_embeddings": False}
put("fuzz_config", "llama2", json.dumps(cfg))
c3 = dict(cfg, rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
put("fuzz_config", "llama3", json.dumps(c3))
put("fuzz_config", "rope_parameters", json.dumps(dict(cfg, rope_parameters={"rope_type": "linear", "factor": 1e308})))
put("fuzz_config", "qwen2", json.dumps(dict(cfg, architectures=["Qwen2ForCausalLM"], model_type="qwen2")))
put("fuzz_config", "huge_numbers", json.dumps(dict(cfg, hidden_size=1e300, num_attention_heads=0, head_dim=-5)))
put("fuzz_config", "deep_nesting", "[" * 5000 + "]" * 5000)
put("fuzz_config", "deep_objects", '{"a":' * 3000 + "1" + "}" * 3000)
put("fuzz_config", "bad_escapes", '{"model_type":"\\ud800\\udc00\\u0000\\uZZZZ"}')
put("fuzz_config", "long_number", '{"hidden_size":' + "9" * 4000 + "}")

# ---- tokenizer.json (seeds: the test models' own, trimmed by the fuzzer) ----
tj = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "<s>": 3, "\u2581": 4},
                "merges": ["a b"], "byte_fallback": True, "unk_token": None},
      "added_tokens": [{"id": 3, "content": "<s>", "special": True}],
      "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581"}, "normalizer": None, "decoder": None}
put("fuzz_tokenizer_json", "tiny_bpe", json.dumps(tj) + "\0" + json.dumps({"bos_token": "<s>", "add_bos_token": True}))
tj2 = dict(tj, pre_tokenizer={"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
           model=dict(tj["model"], merges=[["a", "b"]], vocab={"a": 0, "b": 1, "ab": 2, "<s>": 3}))
put("fuzz_tokenizer_json", "tiny_bytelevel", json.dumps(tj2))
put("fuzz_tokenizer_json", "merges_unknown_ids", json.dumps(dict(tj, model=dict(tj["model"], merges=["q r", "a", " "]))))
put("fuzz_tokenizer_json", "added_id_huge", json.dumps(dict(tj, added_tokens=[{"id": 2**31 + 5, "content": "x", "special": True}])))
put("fuzz_tokenizer_json", "vocab_id_dup", json.dumps(dict(tj, model=dict(tj["model"], vocab={"a": 0, "b": 0, "c": -1}))))

# ---- tokenizer encode on bytes ----
for name, text in {"hello": "Hello world", "special": "<s>[INST] hi [/INST]</s><|im_start|>",
                   "invalid_utf8": b"\xff\xfe\xc0\x80\xed\xa0\x80 abc \xf4\x90\x80\x80",
                   "cjk_emoji": "\u4f60\u597d \U0001f600\u200d\U0001f600 \u00e9",
                   "spaces": " " * 300 + "\t\n\r" * 20, "digits": "1234567890" * 30,
                   "long_word": "a" * 3000}.items():
    put("fuzz_tokenize", name, text)

# ---- chat templates ----
for name, text in {
        "chatml": "{% for m in messages %}<|im_start|>{{m.role}}\n{{m.content}}<|im_end|>\n{% endfor %}\0<s></s>\0\x00\0\x01hello\0\x02hi there\0\x01again",
        "llama2_sys": "[INST] <<SYS>>\0<s></s>\0\x00be brief\0\x01q\0\x02a\0\x01q2",
        "llama3": "<|start_header_id|>Cutting Knowledge Date\0\0\x01hi",
        "mistral_v3": "[INST]{{ system }}\0<s></s>\0\x00sys\0\x01u\0\x02a\0\x02a2",
        "unknown_role": "<|im_start|>\0\0\x03tool call",
        "gemma_sys": "<start_of_turn>\0<bos><eos>\0\x00system text\0\x01u",
        "phi3": "<|user|><|end|>\0\0\x01u\0\x02a",
        "zephyr": "<|user|>\0\0\x01u"}.items():
    put("fuzz_chat", name, text)
