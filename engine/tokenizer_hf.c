/*
 * tokenizer_hf.c - Tokenizer from a Hugging Face model directory:
 * tokenizer.json (model BPE: vocab, merges, byte_fallback, unk_token,
 * ignore_merges; added_tokens; normalizer / pre_tokenizer / decoder /
 * post_processor, of which the kinds Llama-2, Llama-3, Qwen2, GPT-2,
 * SmolLM and Metaspace files use), tokenizer_config.json (bos_token,
 * eos_token, add_bos_token) and generation_config.json (bos_token_id,
 * eos_token_id, a number or a list: every one ends generation).
 * Anything else is refused with a message rather than approximated.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "tokenizer.h"
#include "tokenizer_int.h"

static const char RE_GPT2[] =
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|"
	"\\s+(?!\\S)|\\s+";
static const char RE_LLAMA3[] =
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
	"\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|"
	"\\s+";
static const char RE_QWEN2[] =
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
	"\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static int streq(const json_value *v, const char *s)
{
	const char *x = json_str(v, NULL);
	return x && !strcmp(x, s);
}

/* Items of a "Sequence" member (key) or the value itself. */
static size_t seq_items(const json_value *v, const char *key,
			const json_value ***items)
{
	if (streq(json_get(v, "type"), "Sequence")) {
		const json_value *a = json_get(v, key);
		if (a && a->type == JSON_ARRAY) {
			*items = (const json_value **)a->u.arr.items;
			return a->u.arr.n;
		}
		return 0;
	}
	return 0;
}

static int add_stage(Tokenizer *t, int st, char *err, size_t errlen)
{
	if (t->nstage >= TOK_MAX_STAGES) {
		tok_seterr(err, errlen, "tokenizer.json: too many pre-tokenizers");
		return -1;
	}
	t->stage[t->nstage++] = (uint8_t)st;
	return 0;
}

/* One pre_tokenizer entry; sets *bytelevel / *metaspace when seen. */
static int hf_pre_one(Tokenizer *t, const json_value *p, int *bytelevel,
		      int *metaspace, char *err, size_t errlen)
{
	const char *type = json_str(json_get(p, "type"), "");
	if (!strcmp(type, "ByteLevel")) {
		*bytelevel = 1;
		if (json_bool(json_get(p, "add_prefix_space"), 0))
			t->bpe_prefix_space = 1;
		if (json_bool(json_get(p, "use_regex"), 1))
			return add_stage(t, ST_GPT2, err, errlen);
		return 0;
	}
	if (!strcmp(type, "Digits"))
		return add_stage(t, json_bool(json_get(p, "individual_digits"), 0)
				 ? ST_DIGIT1 : ST_DIGITS, err, errlen);
	if (!strcmp(type, "Metaspace")) {
		*metaspace = 1;
		t->prefix_unless_space = 1;
		t->split_words = json_bool(json_get(p, "split"), 1);
		const char *rep = json_str(json_get(p, "replacement"), "");
		if (strcmp(rep, "\xe2\x96\x81")) {
			tok_seterr(err, errlen, "tokenizer.json: Metaspace "
			       "replacement must be U+2581");
			return -1;
		}
		const char *scheme = json_str(json_get(p, "prepend_scheme"),
					      NULL);
		if (scheme) {
			t->add_space_prefix = strcmp(scheme, "never") != 0;
			t->prefix_first_only = !strcmp(scheme, "first");
		} else {
			t->add_space_prefix =
				json_bool(json_get(p, "add_prefix_space"), 1);
		}
		return 0;
	}
	if (!strcmp(type, "Split")) {
		const char *re = json_str(json_get(json_get(p, "pattern"),
						   "Regex"), NULL);
		if (re && !strcmp(re, RE_LLAMA3))
			return add_stage(t, ST_LLAMA3, err, errlen);
		if (re && !strcmp(re, RE_QWEN2))
			return add_stage(t, ST_QWEN2, err, errlen);
		if (re && !strcmp(re, RE_GPT2))
			return add_stage(t, ST_GPT2, err, errlen);
		tok_seterr(err, errlen,
		       "tokenizer.json: unsupported Split pre-tokenizer %.80s",
		       re ? re : "(not a regex)");
		return -1;
	}
	tok_seterr(err, errlen, "tokenizer.json: unsupported pre-tokenizer %.40s",
	       type);
	return -1;
}

static int32_t hf_token_id(const Tokenizer *t, const json_value *v)
{
	/* "<s>" or {"content": "<s>", ...} */
	const char *s = json_str(v, NULL);
	if (!s)
		s = json_str(json_get(v, "content"), NULL);
	return s ? tokenizer_find(t, s) : -1;
}

static int hf_configs(Tokenizer *t, const char *dir, const json_value *root)
{
	char path[4096];
	char e2[256];
	/* post_processor: TemplateProcessing single = [SpecialToken, A] */
	const json_value *pp = json_get(root, "post_processor");
	const json_value **items = NULL;
	size_t nitems = seq_items(pp, "processors", &items);
	const json_value *one = pp;
	for (size_t k = 0; k <= nitems; k++) {
		if (nitems)
			one = k < nitems ? items[k] : NULL;
		if (!one)
			break;
		if (!streq(json_get(one, "type"), "TemplateProcessing"))
			continue;
		const json_value *first = json_at(json_get(one, "single"), 0);
		const json_value *sp = json_get(first, "SpecialToken");
		if (sp) {
			int32_t id = hf_token_id(t, json_get(sp, "id"));
			if (id >= 0) {
				t->bos = id;
				t->add_bos = 1;
			}
		}
	}
	snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
	json_doc *tc = json_parse_file(path, 0, e2, sizeof e2);
	if (tc) {
		const json_value *r = json_root(tc);
		int32_t id = hf_token_id(t, json_get(r, "bos_token"));
		if (id >= 0)
			t->bos = id;
		id = hf_token_id(t, json_get(r, "eos_token"));
		if (id >= 0)
			t->eos = id;
		const json_value *ab = json_get(r, "add_bos_token");
		if (ab && (ab->type == JSON_TRUE || ab->type == JSON_FALSE)) {
			t->add_bos = ab->type == JSON_TRUE;
		}
		json_free(tc);
	}
	snprintf(path, sizeof path, "%s/generation_config.json", dir);
	json_doc *gc = json_parse_file(path, 0, e2, sizeof e2);
	if (gc) {
		const json_value *r = json_root(gc);
		int64_t v;
		if (t->bos < 0 && json_int(json_get(r, "bos_token_id"), 0,
					   t->n_vocab - 1, &v))
			t->bos = (int32_t)v;
		const json_value *eos = json_get(r, "eos_token_id");
		if (json_int(eos, 0, t->n_vocab - 1, &v)) {
			if (t->eos < 0)
				t->eos = (int32_t)v;
			tok_add_eog(t, (int32_t)v);
		} else if (eos && eos->type == JSON_ARRAY) {
			for (size_t k = 0; k < eos->u.arr.n; k++) {
				if (!json_int(eos->u.arr.items[k], 0,
					      t->n_vocab - 1, &v))
					continue;
				if (t->eos < 0)
					t->eos = (int32_t)v;
				tok_add_eog(t, (int32_t)v);
			}
		}
		json_free(gc);
	}
	return 0;
}

static int hf_build(Tokenizer **out, const char *dir, const json_value *root,
		    char *err, size_t errlen)
{
	Tokenizer *t = NULL;
	const json_value *model = json_get(root, "model");
	if (!model || model->type != JSON_OBJECT) {
		tok_seterr(err, errlen, "tokenizer.json: no model object");
		return -1;
	}
	const char *mtype = json_str(json_get(model, "type"), "BPE");
	if (strcmp(mtype, "BPE")) {
		tok_seterr(err, errlen, "tokenizer.json: model type %.40s "
		       "unsupported (only BPE)", mtype);
		return -1;
	}
	const json_value *vocab = json_get(model, "vocab");
	const json_value *merges = json_get(model, "merges");
	const json_value *added = json_get(root, "added_tokens");
	if (!vocab || vocab->type != JSON_OBJECT || !merges ||
	    merges->type != JSON_ARRAY) {
		tok_seterr(err, errlen, "tokenizer.json: model.vocab must be an "
		       "object and model.merges an array");
		return -1;
	}
	if (added && added->type != JSON_ARRAY) {
		tok_seterr(err, errlen, "tokenizer.json: added_tokens not an array");
		return -1;
	}
	/* ids may leave holes; size by the largest */
	int64_t maxid = -1, id;
	for (size_t k = 0; k < vocab->u.obj.n; k++) {
		if (!json_int(vocab->u.obj.vals[k], 0, (1 << 24) - 1, &id)) {
			tok_seterr(err, errlen, "tokenizer.json: vocab entry %zu "
			       "has a bad id", k);
			return -1;
		}
		if (id > maxid)
			maxid = id;
	}
	size_t nadded = added ? added->u.arr.n : 0;
	for (size_t k = 0; k < nadded; k++) {
		const json_value *a = added->u.arr.items[k];
		if (!json_int(json_get(a, "id"), 0, (1 << 24) - 1, &id) ||
		    !json_str(json_get(a, "content"), NULL)) {
			tok_seterr(err, errlen, "tokenizer.json: added token %zu "
			       "needs an id and a content", k);
			return -1;
		}
		if (id > maxid)
			maxid = id;
	}
	if (maxid < 0) {
		tok_seterr(err, errlen, "tokenizer.json: empty vocab");
		return -1;
	}
	t = tok_new((int)maxid + 1, err, errlen);
	if (!t)
		return -1;
	for (size_t k = 0; k < vocab->u.obj.n; k++) {
		const json_value *key = vocab->u.obj.keys[k];
		json_int(vocab->u.obj.vals[k], 0, (1 << 24) - 1, &id);
		if (tok_set_text(t, (int32_t)id, key->u.str.s, key->u.str.len,
				 err, errlen))
			goto fail;
	}
	for (size_t k = 0; k < nadded; k++) {
		const json_value *a = added->u.arr.items[k];
		const json_value *c = json_get(a, "content");
		json_int(json_get(a, "id"), 0, (1 << 24) - 1, &id);
		if (tok_set_text(t, (int32_t)id, c->u.str.s, c->u.str.len, err,
				 errlen))
			goto fail;
		t->type[id] = json_bool(json_get(a, "special"), 0) ? TT_CONTROL
								   : TT_USER;
		int strip = json_bool(json_get(a, "lstrip"), 0) |
			    json_bool(json_get(a, "rstrip"), 0) << 1;
		if (strip && !t->astrip &&
		    !(t->astrip = calloc((size_t)t->n_vocab, 1))) {
			tok_seterr(err, errlen, "tokenizer: out of memory");
			goto fail;
		}
		if (t->astrip)
			t->astrip[id] = (uint8_t)strip;
	}

	/* flavour: SPM (U+2581 normalizer or Metaspace) or byte-level */
	int bytelevel = 0, metaspace = 0, spm_norm = 0;
	const json_value *norm = json_get(root, "normalizer");
	const json_value **items = NULL;
	size_t nitems = seq_items(norm, "normalizers", &items);
	const json_value *single[1] = {norm};
	if (!nitems && json_present(norm)) {
		items = single;
		nitems = 1;
	}
	for (size_t k = 0; k < nitems; k++) {
		const char *ty = json_str(json_get(items[k], "type"), "");
		if (!strcmp(ty, "Prepend") &&
		    streq(json_get(items[k], "prepend"), "\xe2\x96\x81")) {
			t->add_space_prefix = 1;
			spm_norm = 1;
		} else if (!strcmp(ty, "Replace") &&
			   streq(json_get(json_get(items[k], "pattern"),
					  "String"), " ") &&
			   streq(json_get(items[k], "content"),
				 "\xe2\x96\x81")) {
			spm_norm = 1;
		} else if (!strcmp(ty, "NFC")) {
			t->nfc = 1;
		} else {
			tok_seterr(err, errlen, "tokenizer.json: unsupported "
			       "normalizer %.40s", ty);
			goto fail;
		}
	}
	const json_value *pre = json_get(root, "pre_tokenizer");
	nitems = seq_items(pre, "pretokenizers", &items);
	single[0] = pre;
	if (!nitems && json_present(pre)) {
		items = single;
		nitems = 1;
	}
	for (size_t k = 0; k < nitems; k++)
		if (hf_pre_one(t, items[k], &bytelevel, &metaspace, err,
			       errlen))
			goto fail;
	if (bytelevel && (spm_norm || metaspace)) {
		tok_seterr(err, errlen, "tokenizer.json: mixes byte-level and "
		       "sentencepiece conventions");
		goto fail;
	}
	if (bytelevel) {
		t->kind = TOK_BPE;
		t->pre = PRE_GPT2;
	} else if (spm_norm || metaspace) {
		t->kind = TOK_SPM;
		if (t->nstage) {
			tok_seterr(err, errlen, "tokenizer.json: split stages with "
			       "a sentencepiece model are unsupported");
			goto fail;
		}
	} else {
		tok_seterr(err, errlen, "tokenizer.json: neither byte-level nor "
		       "sentencepiece BPE");
		goto fail;
	}
	/* decoder: SPM strips the prefix space of the first piece */
	const json_value *dec = json_get(root, "decoder");
	nitems = seq_items(dec, "decoders", &items);
	single[0] = dec;
	if (!nitems && json_present(dec)) {
		items = single;
		nitems = 1;
	}
	for (size_t k = 0; k < nitems; k++) {
		const char *ty = json_str(json_get(items[k], "type"), "");
		int64_t st;
		if (!strcmp(ty, "Strip") &&
		    streq(json_get(items[k], "content"), " ") &&
		    json_int(json_get(items[k], "start"), 1, 1000, &st))
			t->strip_space = 1;
		if (!strcmp(ty, "Metaspace") && t->add_space_prefix)
			t->strip_space = 1;
	}

	t->byte_fallback = json_bool(json_get(model, "byte_fallback"), 0);
	t->ignore_merges = json_bool(json_get(model, "ignore_merges"), 0);
	if (tok_index(t, err, errlen))
		goto fail;
	const char *unk = json_str(json_get(model, "unk_token"), NULL);
	if (unk)
		t->unk = tokenizer_find(t, unk);

	if (tok_reserve_merges(t, merges->u.arr.n, err, errlen))
		goto fail;
	for (size_t k = 0; k < merges->u.arr.n; k++) {
		const json_value *m = merges->u.arr.items[k];
		int32_t a, b;
		if (m->type == JSON_STRING) {
			const char *sp = memchr(m->u.str.s, ' ', m->u.str.len);
			if (!sp)
				goto badmerge;
			size_t la = (size_t)(sp - m->u.str.s);
			a = tok_lookup(t, m->u.str.s, la);
			b = tok_lookup(t, sp + 1, m->u.str.len - la - 1);
		} else if (m->type == JSON_ARRAY && m->u.arr.n == 2 &&
			   m->u.arr.items[0]->type == JSON_STRING &&
			   m->u.arr.items[1]->type == JSON_STRING) {
			const json_value *x = m->u.arr.items[0];
			const json_value *y = m->u.arr.items[1];
			a = tok_lookup(t, x->u.str.s, x->u.str.len);
			b = tok_lookup(t, y->u.str.s, y->u.str.len);
		} else {
			goto badmerge;
		}
		if (a < 0 || b < 0)
			goto badmerge;
		if (tok_add_merge(t, a, b, (int32_t)k, err, errlen))
			goto fail;
		continue;
badmerge:
		tok_seterr(err, errlen, "tokenizer.json: merge %zu is malformed or "
		       "names a token not in the vocab", k);
		goto fail;
	}
	hf_configs(t, dir, root);
	if (tok_finish(t, err, errlen))
		goto fail;
	*out = t;
	return 0;
fail:
	tokenizer_free(t);
	return -1;
}

int tokenizer_load_hf(const char *dir, Tokenizer **out, char *err,
		      size_t errlen)
{
	char path[4096];
	*out = NULL;
	int n = snprintf(path, sizeof path, "%s/tokenizer.json", dir);
	if (n < 0 || (size_t)n >= sizeof path) {
		tok_seterr(err, errlen, "tokenizer: path too long");
		return -1;
	}
	char e2[256];
	json_doc *doc = json_parse_file(path, 0, e2, sizeof e2);
	if (!doc) {
		tok_seterr(err, errlen, "%s: %s", path, e2);
		return -1;
	}
	int rc = hf_build(out, dir, json_root(doc), err, errlen);
	json_free(doc);
	return rc;
}
