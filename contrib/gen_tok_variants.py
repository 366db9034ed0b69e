#!/usr/bin/env python3
"""gen_tok_variants.py - tokenizer.json variants of the two tiny models with
the pre-tokenizer / normalizer / special-token setups of Llama-3, Qwen2 and
newer sentencepiece (Metaspace) files, and HF `tokenizers`' encode/decode of
test strings through each: tests/data/tok_variants.json.

Each variant keeps the base model's "model" section (vocab, merges) and
replaces every other top-level key with "head"; the test splices head and
the base file's model section back together (model is the last key).

Usage: python3 contrib/gen_tok_variants.py > tests/data/tok_variants.json
"""
import copy
import gzip
import json
import sys

from tokenizers import Tokenizer

import gen_pretok_vectors as pv

BASE = "tests/data/models/%s/tokenizer.json.gz"

SPECIAL_TEXTS = [
    "<|begin_of_text|>Hi there<|eot_id|>\n",
    "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n",
    "x <tool_call>{}</tool_call> y",
    "<s> literal</s> more",
    "</s>",
    "<|endoftext|><|endoftext|>a",
    "<|eot_id|",
    "a  <mask>  b x<|tool|>  \n y",
    " <mask><|tool|> ",
    "\u3000<mask>\u00a0",
    "e\u0301cole A\u030a \u212b\u2126 \u1100\u1161\u11a8 \u0958",
]


def added(i, content, special):
    return {"id": i, "content": content, "single_word": False,
            "lstrip": False, "rstrip": False, "normalized": not special,
            "special": special}


def variants():
    l3 = json.loads(gzip.open(BASE % "tiny-llama3").read())
    l2 = json.loads(gzip.open(BASE % "tiny-llama2").read())
    out = []

    v = copy.deepcopy(l3)
    v["added_tokens"] += [added(50257, "<|begin_of_text|>", True),
                          added(50258, "<|eot_id|>", True),
                          added(50259, "<tool_call>", False),
                          added(50260, "</tool_call>", False),
                          dict(added(50261, "<mask>", True), lstrip=True),
                          dict(added(50262, "<|tool|>", True), rstrip=True)]
    v["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pv.LLAMA3},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False,
         "trim_offsets": True, "use_regex": False}]}
    v["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True,
         "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|begin_of_text|>",
                                      "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                  {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<|begin_of_text|>": {
             "id": "<|begin_of_text|>", "ids": [50257],
             "tokens": ["<|begin_of_text|>"]}}}]}
    v["model"]["ignore_merges"] = True
    out.append(("llama3", "tiny-llama3", v,
                {"tokenizer_config.json": {"bos_token": "<|begin_of_text|>",
                                           "eos_token": "<|eot_id|>"},
                 "generation_config.json": {"bos_token_id": 50257,
                                            "eos_token_id": [50256, 50258]}},
                {"bos": 50257, "eos": 50258, "adds_bos": 1,
                 "eog": [50256, 50258], "not_eog": [50257, 50259]}))

    v = copy.deepcopy(l3)
    v["added_tokens"] += [added(50257, "<|im_start|>", True),
                          added(50258, "<|im_end|>", True)]
    v["normalizer"] = {"type": "NFC"}
    v["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pv.QWEN2},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False,
         "trim_offsets": False, "use_regex": False}]}
    out.append(("qwen2", "tiny-llama3", v,
                 {"tokenizer_config.json": {"bos_token": None,
                                            "eos_token": "<|im_end|>",
                                            "add_bos_token": False},
                  "generation_config.json": {"eos_token_id": [50258, 50256]}},
                 {"bos": -1, "eos": 50258, "adds_bos": 0,
                  "eog": [50256, 50258], "not_eog": [50257]}))

    for scheme, split in (("first", False), ("always", True)):
        v = copy.deepcopy(l2)
        v["normalizer"] = None
        v["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581",
                              "prepend_scheme": scheme, "split": split}
        out.append(("metaspace-%s%s" % (scheme, "-split" if split else ""),
                    "tiny-llama2", v, {},
                    {"bos": 1, "eos": 2, "adds_bos": 1, "eog": [2],
                     "not_eog": [0, 1]}))
    return out


def main():
    inp = open("tests/data/vocab/ggml-vocab-llama-spm.gguf.inp",
               encoding="utf-8").read()
    texts = inp.split("\n__ggml_vocab_test__\n")[:-1] + pv.EXTRA
    texts += SPECIAL_TEXTS
    res = []
    for name, base, tj, files, props in variants():
        tok = Tokenizer.from_str(json.dumps(tj))
        head = {k: x for k, x in tj.items() if k != "model"}
        cases = []
        for t in texts:
            ids = tok.encode(t, add_special_tokens=True).ids
            dec = tok.decode(ids, skip_special_tokens=False)
            cases.append({"text": t, "ids": ids, "decoded": dec})
        res.append({"name": name, "base": base,
                    "head": json.dumps(head, ensure_ascii=False)[1:-1],
                    "ignore_merges": tj["model"]["ignore_merges"],
                    "files": {k: json.dumps(x) for k, x in files.items()},
                    **props, "cases": cases})
    json.dump({"source": "contrib/gen_tok_variants.py (tokenizers %s)"
               % __import__("tokenizers").__version__, "variants": res},
              sys.stdout, ensure_ascii=False, indent=0)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
