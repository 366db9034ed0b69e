#!/usr/bin/env python3
"""gen_pretok_vectors.py - reference pre-tokenizer splits for
tests/check_tokenizer.c, written to tests/data/pretok.json.

References:
  - gpt2, llama3, qwen2: HF `tokenizers` itself (Split with the model's
    regex, behavior "isolated": what the ByteLevel / Split pre-tokenizers of
    GPT-2, Llama-3 and Qwen2 tokenizer.json files run).
  - starcoder, falcon, default, deepseek-llm, deepseek-coder: llama.cpp's
    staged split (each regex splits every piece of the previous stage into
    matches and gaps), emulated with the Python `regex` module; `$` is taken
    as end of piece (ECMAScript, as llama.cpp's std::regex).
Test strings avoid code points newer than Unicode 14 and \\x1c-\\x1f
(where the engines' ideas of \\s differ).

Usage: python3 contrib/gen_pretok_vectors.py > tests/data/pretok.json
"""
import json
import sys

import regex
from tokenizers import Regex, pre_tokenizers

GPT2 = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"
        r"|\s+(?!\S)|\s+")
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+"
          r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+"
         r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2_NOTAIL = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+"
               r"| ?[^\s\p{L}\p{N}]+|\s+(?!\S)")
PUNCT = r"[\p{P}\$\+<=>\^~\|`]+"
DSL_LETTERS = (
    "A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf"
    "\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d"
    "\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5"
    "\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77"
    "\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d"
    "\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4"
    "\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3"
    "\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107"
    "\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d"
    "\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184"
    "\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d"
    "\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf"
    "\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a"
    "\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb"
    "\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
    "\U0001e900-\U0001e943")
CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"

STAGED = {
    "starcoder": [r"\p{N}", GPT2_NOTAIL],
    "falcon": [PUNCT, GPT2_NOTAIL, r"[0-9][0-9][0-9]"],
    "default": [PUNCT, GPT2_NOTAIL, r"\p{N}+", r"[0-9][0-9][0-9]"],
    "deepseek-llm": [r"[\r\n]", r"\s?[" + DSL_LETTERS + r"]+",
                     "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f"
                     "\u3000-\u3002]+", r"\s+\Z", CJK, r"\p{N}+"],
    "deepseek-coder": [r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK,
                       r"\p{N}"],
}

EXTRA = [
    "I'M HERE, you're 'S 'll' 'Ll 'VE",
    "a\r\n\r\nb  \n  c\t\n",
    "123456789 12.5% \u0661\u0662\u0663\u0664",
    "\uff48\uff45\uff4c\uff4c\uff4f\uff01\u3000\u4e16\u754c\u3002",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "x^2+y|z<=>w~`$ {a: [1, 2]}",
    "\u03b1\u03b2\u03b3 \u0394\u0395 \u2126\u212a",
    "  \n\n  trailing  ",
    "\u216b \u00bd \u00b2",
    "emoji \U0001f999\U0001f999 mixed123abc",
    "\u00bbquote\u00ab \u00bfqu\u00e9? \u00a1s\u00ed!",
    "tab\tsep\u00a0nbsp\u3000ideo",
    "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u0928\u092e\u0938\u094d\u0924\u0947",
    "...!!!???\n\n\n",
    "  ",
    "a",
]


def staged(text, stages):
    pieces = [text]
    for rx in stages:
        out = []
        r = regex.compile(rx)
        for p in pieces:
            last = 0
            for m in r.finditer(p):
                if m.end() == m.start():
                    continue
                if m.start() > last:
                    out.append(p[last:m.start()])
                out.append(m.group())
                last = m.end()
            if last < len(p):
                out.append(p[last:])
        pieces = out
    return pieces


def hf(text, rx):
    pt = pre_tokenizers.Split(Regex(rx), behavior="isolated")
    return [p for p, _ in pt.pre_tokenize_str(text)]


# Pieces for NFC cases: starters, precomposed letters, marks of several
# classes (in and out of canonical order), singletons, composition
# exclusions, Hangul syllables and jamo, a non-starter decomposition.
NFC_ALPHABET = [
    "a", "e", "A", "o", " ", "\u00e9", "\u00c5", "\u0301", "\u0300",
    "\u0323", "\u0308", "\u030a", "\u0327", "\u0345", "\u05b0",
    "\u0591", "\u212b", "\u2126", "\u212a", "\u0958", "\u0344",
    "\u1e9b", "\u1100", "\u1161", "\u11a8", "\uac00", "\ud55c",
    "\u0f73", "\u0374", "\u037e", "\u1f80", "\u03b1", "\u0313",
    "\u0342", "\u3099", "\u304b", "\u30cf", "\u309a", "\u00ff",
    "\u017f", "\U0001d15e", "\U0001d165", "x",
]


def nfc_cases():
    import random
    import unicodedata
    rng = random.Random(5)
    out = []
    for _ in range(300):
        s = "".join(rng.choice(NFC_ALPHABET)
                    for _ in range(rng.randint(1, 12)))
        out.append([s, unicodedata.normalize("NFC", s)])
    return out


def main():
    inp = open("tests/data/vocab/ggml-vocab-llama-spm.gguf.inp",
               encoding="utf-8").read()
    texts = inp.split("\n__ggml_vocab_test__\n")[:-1] + EXTRA
    texts = [t for t in texts if t]
    cases = []
    for kind, rx in (("gpt-2", GPT2), ("llama3", LLAMA3), ("qwen2", QWEN2)):
        for t in texts:
            cases.append({"pre": kind, "text": t, "pieces": hf(t, rx)})
    for kind, stages in STAGED.items():
        for t in texts:
            cases.append({"pre": kind, "text": t,
                          "pieces": staged(t, stages)})
    json.dump({"source": "contrib/gen_pretok_vectors.py",
               "cases": cases, "nfc": nfc_cases()}, sys.stdout,
              ensure_ascii=False, indent=0)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
