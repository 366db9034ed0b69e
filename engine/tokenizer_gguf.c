/*
 * tokenizer_gguf.c - Tokenizer from a GGUF file's tokenizer.ggml.* keys:
 *   model          "llama" (SPM: tokens + scores, merged by score with
 *                  byte fallback) or "gpt2" (byte-level BPE: tokens +
 *                  merges "a b", ranked by position)
 *   pre            pre-tokenizer kind for gpt2 (absent: "default")
 *   tokens         string[n]     token texts (the id is the index)
 *   scores         f32[n]        SPM merge priorities (higher first)
 *   token_type     i32[n]        1 normal 2 unknown 3 control 4 user 5 unused
 *                                6 byte
 *   merges         string[m]
 *   bos/eos/eot/eom/unknown_token_id, add_bos_token, add_space_prefix
 * Vocab-only files (no tensors) load the same way.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer.h"
#include "tokenizer_int.h"

#define KEY(k) "tokenizer.ggml." k

static int streqn(gguf_str s, const char *z)
{
	return s.len == strlen(z) && !memcmp(s.s, z, s.len);
}

/* tokenizer.ggml.pre -> PRE_*, -1 when unknown (names as llama.cpp). */
static int pre_kind(gguf_str s)
{
	static const struct {
		const char *name;
		int pre;
	} map[] = {
		{"default", PRE_DEFAULT},
		{"llama3", PRE_LLAMA3},        {"llama-v3", PRE_LLAMA3},
		{"llama-bpe", PRE_LLAMA3},     {"falcon3", PRE_LLAMA3},
		{"dbrx", PRE_LLAMA3},          {"smaug-bpe", PRE_LLAMA3},
		{"deepseek-llm", PRE_DEEPSEEK_LLM},
		{"deepseek-coder", PRE_DEEPSEEK_CODER},
		{"falcon", PRE_FALCON},
		{"gpt-2", PRE_GPT2},           {"mpt", PRE_GPT2},
		{"olmo", PRE_GPT2},            {"jais", PRE_GPT2},
		{"phi-2", PRE_GPT2},           {"trillion", PRE_GPT2},
		{"starcoder", PRE_STARCODER},  {"refact", PRE_STARCODER},
		{"command-r", PRE_STARCODER},  {"smollm", PRE_STARCODER},
		{"codeshell", PRE_STARCODER},  {"exaone", PRE_STARCODER},
		{"minerva-7b", PRE_STARCODER},
		{"qwen2", PRE_QWEN2},          {"stablelm2", PRE_QWEN2},
		{"hunyuan", PRE_QWEN2},        {"deepseek-r1-qwen", PRE_QWEN2},
	};
	for (size_t k = 0; k < sizeof map / sizeof *map; k++)
		if (streqn(s, map[k].name))
			return map[k].pre;
	return -1;
}

static int32_t get_id(const gguf_file *g, const char *key, int n)
{
	int64_t v;
	if (!gguf_get_i64(g, key, &v) || v < 0 || v >= n)
		return -1;
	return (int32_t)v;
}

int tokenizer_load_gguf(const gguf_file *g, Tokenizer **out, char *err,
			size_t errlen)
{
	*out = NULL;
	gguf_str model, pre = {0};
	if (!gguf_get_str(g, KEY("model"), &model)) {
		snprintf(err, errlen, "gguf: no tokenizer.ggml.model");
		return -1;
	}
	int kind;
	if (streqn(model, "llama"))
		kind = TOK_SPM;
	else if (streqn(model, "gpt2"))
		kind = TOK_BPE;
	else {
		snprintf(err, errlen, "gguf: tokenizer model '%.*s' unsupported "
			 "(llama, gpt2)", (int)(model.len > 40 ? 40 : model.len),
			 model.s);
		return -1;
	}
	gguf_type et;
	uint64_t n;
	if (!gguf_get_arr(g, KEY("tokens"), &et, &n) || et != GGUF_T_STRING ||
	    n == 0 || n > (1u << 24)) {
		snprintf(err, errlen, "gguf: tokenizer.ggml.tokens missing, not "
			 "strings or of bad size");
		return -1;
	}
	Tokenizer *t = tok_new((int)n, err, errlen);
	if (!t)
		return -1;
	t->kind = kind;
	for (uint64_t i = 0; i < n; i++) {
		gguf_str s;
		if (!gguf_arr_str(g, KEY("tokens"), i, &s)) {
			snprintf(err, errlen, "gguf: token %llu unreadable",
				 (unsigned long long)i);
			goto fail;
		}
		if (tok_set_text(t, (int32_t)i, s.s, s.len, err, errlen))
			goto fail;
	}
	uint64_t m;
	if (gguf_get_arr(g, KEY("token_type"), &et, &m)) {
		if (m != n) {
			snprintf(err, errlen, "gguf: token_type has %llu entries "
				 "for %llu tokens", (unsigned long long)m,
				 (unsigned long long)n);
			goto fail;
		}
		for (uint64_t i = 0; i < n; i++) {
			int64_t v;
			if (!gguf_arr_i64(g, KEY("token_type"), i, &v)) {
				snprintf(err, errlen, "gguf: token_type not "
					 "integers");
				goto fail;
			}
			t->type[i] = v >= TT_NORMAL && v <= TT_BYTE
				? (uint8_t)v : TT_NORMAL;
		}
	}
	if (tok_index(t, err, errlen))
		goto fail;

	if (kind == TOK_SPM) {
		t->score = calloc(n, sizeof *t->score);
		if (!t->score) {
			snprintf(err, errlen, "gguf: out of memory");
			goto fail;
		}
		if (gguf_get_arr(g, KEY("scores"), &et, &m)) {
			if (m != n) {
				snprintf(err, errlen, "gguf: scores has %llu "
					 "entries for %llu tokens",
					 (unsigned long long)m,
					 (unsigned long long)n);
				goto fail;
			}
			for (uint64_t i = 0; i < n; i++)
				if (!gguf_arr_f32(g, KEY("scores"), i,
						  &t->score[i])) {
					snprintf(err, errlen,
						 "gguf: scores not numbers");
					goto fail;
				}
		}
		int sp = 1;
		gguf_get_bool(g, KEY("add_space_prefix"), &sp);
		t->add_space_prefix = sp != 0;
		t->strip_space = t->add_space_prefix;
		t->byte_fallback = 1;
		t->add_bos = 1;
		tok_set_pre(t, PRE_NONE);
	} else {
		int pk = PRE_DEFAULT;
		if (gguf_get_str(g, KEY("pre"), &pre)) {
			pk = pre_kind(pre);
			if (pk < 0) {
				snprintf(err, errlen, "gguf: pre-tokenizer '%.*s' "
					 "unsupported", (int)(pre.len > 40 ? 40
							      : pre.len), pre.s);
				goto fail;
			}
		}
		tok_set_pre(t, pk);
		t->ignore_merges = pk == PRE_LLAMA3;
		t->add_bos = pk == PRE_LLAMA3;
		if (!gguf_get_arr(g, KEY("merges"), &et, &m) ||
		    et != GGUF_T_STRING) {
			snprintf(err, errlen, "gguf: gpt2 tokenizer without "
				 "string merges");
			goto fail;
		}
		if (tok_reserve_merges(t, m, err, errlen))
			goto fail;
		for (uint64_t i = 0; i < m && i < INT32_MAX; i++) {
			gguf_str s;
			const char *sp = NULL;
			if (gguf_arr_str(g, KEY("merges"), i, &s) && s.len > 1)
				sp = memchr(s.s + 1, ' ', s.len - 1);
			int32_t a = -1, b = -1;
			if (sp) {
				size_t la = (size_t)(sp - s.s);
				a = tok_lookup(t, s.s, la);
				b = tok_lookup(t, sp + 1, s.len - la - 1);
			}
			if (a < 0 || b < 0) {
				snprintf(err, errlen, "gguf: merge %llu is "
					 "malformed or not in the vocab",
					 (unsigned long long)i);
				goto fail;
			}
			if (tok_add_merge(t, a, b, (int32_t)i, err, errlen))
				goto fail;
		}
	}
	int ab;
	if (gguf_get_bool(g, KEY("add_bos_token"), &ab))
		t->add_bos = ab != 0;
	t->bos = get_id(g, KEY("bos_token_id"), (int)n);
	t->eos = get_id(g, KEY("eos_token_id"), (int)n);
	t->unk = get_id(g, KEY("unknown_token_id"), (int)n);
	if (t->unk < 0 && kind == TOK_SPM)
		t->unk = tok_lookup(t, "<unk>", 5);
	tok_add_eog(t, get_id(g, KEY("eot_token_id"), (int)n));
	tok_add_eog(t, get_id(g, KEY("eom_token_id"), (int)n));
	if (tok_finish(t, err, errlen))
		goto fail;
	*out = t;
	return 0;
fail:
	tokenizer_free(t);
	return -1;
}
