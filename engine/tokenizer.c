/*
 * tokenizer.c - vocab tables, BPE encoding (both flavours), the regex-free
 * pre-tokenizers, decoding and the tokenizer.json loader. See tokenizer.h;
 * GGUF loading is in tokenizer_gguf.c.
 */
#include "tokenizer.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_int.h"
#include "unicode.h"

void tok_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---- vocab tables ---------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ull;
	return k ^ (k >> 33);
}

Tokenizer *tok_new(int n_vocab, char *err, size_t errlen)
{
	if (n_vocab <= 0 || n_vocab > (1 << 24)) {
		tok_seterr(err, errlen, "tokenizer: vocab size %d out of range",
		       n_vocab);
		return NULL;
	}
	Tokenizer *t = calloc(1, sizeof *t);
	if (!t)
		goto oom;
	size_t n = (size_t)n_vocab;
	t->n_vocab = n_vocab;
	t->text_off = calloc(n, sizeof *t->text_off);
	t->text_n = calloc(n, sizeof *t->text_n);
	t->type = calloc(n, 1);
	t->text_cap = n * 8 + 64;
	t->text = malloc(t->text_cap);
	if (!t->text_off || !t->text_n || !t->type || !t->text)
		goto oom;
	t->bos = t->eos = t->unk = -1;
	for (int i = 0; i < 256; i++)
		t->byte_id[i] = -1;
	return t;
oom:
	tokenizer_free(t);
	tok_seterr(err, errlen, "tokenizer: out of memory");
	return NULL;
}

void tokenizer_free(Tokenizer *t)
{
	if (!t)
		return;
	free(t->text);
	free(t->text_off);
	free(t->text_n);
	free(t->type);
	free(t->score);
	free(t->piece);
	free(t->piece_off);
	free(t->vhash);
	free(t->merges);
	free(t->special);
	free(t->astrip);
	free(t);
}

int tok_set_text(Tokenizer *t, int32_t id, const char *s, size_t len,
		 char *err, size_t errlen)
{
	if (id < 0 || id >= t->n_vocab) {
		tok_seterr(err, errlen, "tokenizer: token id %d out of range", id);
		return -1;
	}
	if (len > TOK_MAX_TEXT || t->text_len + len > UINT32_MAX - 1) {
		tok_seterr(err, errlen, "tokenizer: token %d text too long", id);
		return -1;
	}
	if (t->text_len + len + 1 > t->text_cap) {
		size_t cap = t->text_cap * 2;
		while (cap < t->text_len + len + 1)
			cap *= 2;
		char *p = realloc(t->text, cap);
		if (!p) {
			tok_seterr(err, errlen, "tokenizer: out of memory");
			return -1;
		}
		t->text = p;
		t->text_cap = cap;
	}
	memcpy(t->text + t->text_len, s, len);
	t->text[t->text_len + len] = 0; /* texts stay NUL-terminated */
	t->text_off[id] = (uint32_t)t->text_len;
	t->text_n[id] = (uint32_t)len;
	t->text_len += len + 1;
	if (t->type[id] == TT_UNDEFINED)
		t->type[id] = TT_NORMAL;
	return 0;
}

static const char *id_text(const Tokenizer *t, int32_t id, size_t *n)
{
	*n = t->text_n[id];
	return t->text + t->text_off[id];
}

int tok_index(Tokenizer *t, char *err, size_t errlen)
{
	size_t cap = 16;
	while (cap < (size_t)t->n_vocab * 2)
		cap *= 2;
	free(t->vhash);
	t->vhash = calloc(cap, sizeof *t->vhash);
	if (!t->vhash) {
		tok_seterr(err, errlen, "tokenizer: out of memory");
		return -1;
	}
	t->vcap = cap;
	for (int32_t id = 0; id < t->n_vocab; id++) {
		if (t->type[id] == TT_UNDEFINED)
			continue;
		size_t n;
		const char *s = id_text(t, id, &n);
		size_t h = hash_bytes(s, n) & (cap - 1);
		for (;;) {
			uint32_t v = t->vhash[h];
			if (!v) {
				t->vhash[h] = (uint32_t)id + 1;
				break;
			}
			size_t m;
			const char *o = id_text(t, (int32_t)v - 1, &m);
			if (m == n && !memcmp(o, s, n)) {
				/* duplicate text: the later id wins, as in
				 * llama.cpp's token_to_id map */
				t->vhash[h] = (uint32_t)id + 1;
				break;
			}
			h = (h + 1) & (cap - 1);
		}
	}
	return 0;
}

int32_t tok_lookup(const Tokenizer *t, const char *s, size_t len)
{
	size_t h = hash_bytes(s, len) & (t->vcap - 1);
	for (;;) {
		uint32_t v = t->vhash[h];
		if (!v)
			return -1;
		size_t m;
		const char *o = id_text(t, (int32_t)v - 1, &m);
		if (m == len && !memcmp(o, s, len))
			return (int32_t)v - 1;
		h = (h + 1) & (t->vcap - 1);
	}
}

int tok_reserve_merges(Tokenizer *t, size_t n, char *err, size_t errlen)
{
	size_t cap = 16;
	while (cap < n * 2 + 16) {
		if (cap > ((size_t)1 << 40)) {
			tok_seterr(err, errlen, "tokenizer: too many merges");
			return -1;
		}
		cap *= 2;
	}
	free(t->merges);
	t->merges = malloc(cap * sizeof *t->merges);
	if (!t->merges) {
		tok_seterr(err, errlen, "tokenizer: out of memory");
		return -1;
	}
	for (size_t i = 0; i < cap; i++)
		t->merges[i].key = UINT64_MAX;
	t->mcap = cap;
	t->nmerges = 0;
	return 0;
}

static const TokMerge *merge_find(const Tokenizer *t, int32_t a, int32_t b)
{
	uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	size_t h = hash_pair(key) & (t->mcap - 1);
	for (;;) {
		const TokMerge *m = &t->merges[h];
		if (m->key == key)
			return m;
		if (m->key == UINT64_MAX)
			return NULL;
		h = (h + 1) & (t->mcap - 1);
	}
}

int tok_add_merge(Tokenizer *t, int32_t a, int32_t b, int32_t rank,
		  char *err, size_t errlen)
{
	if (!t->merges || (t->nmerges + 1) * 2 > t->mcap) {
		tok_seterr(err, errlen, "tokenizer: merge table full");
		return -1;
	}
	size_t na, nb;
	const char *sa = id_text(t, a, &na), *sb = id_text(t, b, &nb);
	char buf[2 * TOK_MAX_TEXT];
	if (na + nb > sizeof buf) {
		tok_seterr(err, errlen, "tokenizer: merge %d too long", rank);
		return -1;
	}
	memcpy(buf, sa, na);
	memcpy(buf + na, sb, nb);
	int32_t r = tok_lookup(t, buf, na + nb);
	if (r < 0) {
		tok_seterr(err, errlen,
		       "tokenizer: merge %d (%.*s %.*s) is not in the vocab",
		       rank, (int)na, sa, (int)nb, sb);
		return -1;
	}
	uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	size_t h = hash_pair(key) & (t->mcap - 1);
	for (;;) {
		TokMerge *m = &t->merges[h];
		if (m->key == key)
			return 0; /* first rank wins */
		if (m->key == UINT64_MAX) {
			m->key = key;
			m->rank = rank;
			m->result = r;
			t->nmerges++;
			return 0;
		}
		h = (h + 1) & (t->mcap - 1);
	}
}

void tok_add_eog(Tokenizer *t, int32_t id)
{
	if (id < 0 || id >= t->n_vocab)
		return;
	for (int i = 0; i < t->neog; i++)
		if (t->eog[i] == id)
			return;
	if (t->neog < TOK_MAX_EOG)
		t->eog[t->neog++] = id;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* "<0xNN>" -> NN, else -1. */
static int byte_token(const char *s, size_t n)
{
	if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>')
		return -1;
	int hi = hexval(s[3]), lo = hexval(s[4]);
	return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static int cmp_special(const void *a, const void *b, void *arg);

/* Decoded bytes of a token, written to out (never more than its text). */
static size_t make_piece(const Tokenizer *t, int32_t id, unsigned char *out)
{
	size_t n;
	const char *s = id_text(t, id, &n);
	if (t->kind == TOK_SPM) {
		int b = t->type[id] == TT_BYTE ? byte_token(s, n) : -1;
		if (b >= 0) {
			out[0] = (unsigned char)b;
			return 1;
		}
		size_t o = 0;
		for (size_t i = 0; i < n; i++) {
			if (i + 2 < n && !memcmp(s + i, "\xe2\x96\x81", 3)) {
				out[o++] = ' ';
				i += 2;
			} else {
				out[o++] = (unsigned char)s[i];
			}
		}
		return o;
	}
	/* byte-level: every char must be a byte image, else the raw text */
	size_t o = 0, i = 0;
	while (i < n) {
		uint32_t cp;
		size_t l = utf8_next((const unsigned char *)s + i, n - i, &cp);
		int b = unicode_cp_to_byte(cp);
		if (b < 0) {
			memcpy(out, s, n);
			return n;
		}
		out[o++] = (unsigned char)b;
		i += l;
	}
	return o;
}

/* Named end-of-generation tokens of the common chat formats. */
static const char *const eog_names[] = {
	"</s>",         "<|eot_id|>",    "<|eom_id|>",   "<|im_end|>",
	"<|end|>",      "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
	"<|return|>",   "<EOT>",         "<|EOT|>",       "<|end▁of▁sentence|>",
	"<|eot|>",      "<｜end▁of▁sentence｜>",
};

static int matchable(const Tokenizer *t, size_t i)
{
	return (t->type[i] == TT_CONTROL || t->type[i] == TT_USER ||
		t->type[i] == TT_UNKNOWN) && t->text_n[i] > 0;
}

int tok_finish(Tokenizer *t, char *err, size_t errlen)
{
	size_t nv = (size_t)t->n_vocab;
	size_t total = 0;
	for (size_t i = 0; i < nv; i++)
		total += t->text_n[i];

	/* byte ids (SPM: <0xNN> tokens become TT_BYTE) */
	for (int b = 0; b < 256; b++) {
		char buf[8];
		size_t n;
		if (t->kind == TOK_SPM) {
			snprintf(buf, sizeof buf, "<0x%02X>", (unsigned)b);
			n = 6;
		} else {
			n = utf8_put(unicode_byte_to_cp((uint8_t)b),
				     (unsigned char *)buf);
		}
		int32_t id = tok_lookup(t, buf, n);
		if (id < 0)
			continue;
		if (t->kind == TOK_SPM) {
			if (t->type[id] == TT_NORMAL)
				t->type[id] = TT_BYTE;
			if (t->type[id] != TT_BYTE)
				continue;
		}
		t->byte_id[b] = id;
	}

	t->piece = malloc(total + 1);
	t->piece_off = malloc((nv + 1) * sizeof *t->piece_off);
	if (!t->piece || !t->piece_off) {
		tok_seterr(err, errlen, "tokenizer: out of memory");
		return -1;
	}
	size_t off = 0;
	for (size_t i = 0; i < nv; i++) {
		t->piece_off[i] = (uint32_t)off;
		size_t n = t->type[i] != TT_UNDEFINED
			? make_piece(t, (int32_t)i, t->piece + off) : 0;
		if (n > TOK_MAX_PIECE) {
			/* a streaming push must fit TOKSTREAM_MAX_PIECE */
			tok_seterr(err, errlen, "tokenizer: token %zu decodes to "
			       "%zu bytes (max %d)", i, n, TOK_MAX_PIECE);
			return -1;
		}
		off += n;
	}
	t->piece_off[nv] = (uint32_t)off;

	if (t->kind == TOK_SPM) {
		t->spm_word_safe = 1;
		for (size_t i = 0; i < nv && t->spm_word_safe; i++) {
			const char *x = t->text + t->text_off[i];
			size_t n = t->text_n[i], k = 0;
			while (k + 3 <= n && !memcmp(x + k, "\xe2\x96\x81", 3))
				k += 3;
			if (k < n && memmem(x + k, n - k, "\xe2\x96\x81", 3))
				t->spm_word_safe = 0;
		}
	}

	/* texts matched before the model runs: control, user-defined and
	 * (GGUF) unknown tokens, as llama.cpp; HF added tokens are control
	 * or user-defined */
	int ns = 0;
	for (size_t i = 0; i < nv; i++)
		if (matchable(t, i))
			ns++;
	t->special = malloc((size_t)(ns ? ns : 1) * sizeof *t->special);
	if (!t->special) {
		tok_seterr(err, errlen, "tokenizer: out of memory");
		return -1;
	}
	t->nspecial = 0;
	for (size_t i = 0; i < nv; i++)
		if (matchable(t, i))
			t->special[t->nspecial++] = (int32_t)i;
	qsort_r(t->special, (size_t)t->nspecial, sizeof *t->special,
		cmp_special, t);

	if (t->bos >= t->n_vocab)
		t->bos = -1;
	if (t->eos >= t->n_vocab)
		t->eos = -1;
	if (t->bos < 0)
		t->add_bos = 0;
	if (t->eos < 0) {
		/* no config named one: the first conventional end token */
		for (size_t k = 0; k < sizeof eog_names / sizeof *eog_names &&
				   t->eos < 0; k++) {
			int32_t id = tok_lookup(t, eog_names[k],
						strlen(eog_names[k]));
			if (id >= 0 && t->type[id] == TT_CONTROL)
				t->eos = id;
		}
	}
	tok_add_eog(t, t->eos);
	for (size_t k = 0; k < sizeof eog_names / sizeof *eog_names; k++) {
		int32_t id = tok_lookup(t, eog_names[k], strlen(eog_names[k]));
		if (id >= 0 && (t->type[id] == TT_CONTROL ||
				t->type[id] == TT_USER))
			tok_add_eog(t, id);
	}
	return 0;
}

static int cmp_special(const void *a, const void *b, void *arg)
{
	const Tokenizer *t = arg;
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	if (t->text_n[x] != t->text_n[y])
		return t->text_n[x] > t->text_n[y] ? -1 : 1;
	return x < y ? -1 : x > y;
}

/* ---- queries --------------------------------------------------------- */

int tokenizer_n_vocab(const Tokenizer *t) { return t->n_vocab; }
int32_t tokenizer_bos(const Tokenizer *t) { return t->bos; }
int32_t tokenizer_eos(const Tokenizer *t) { return t->eos; }
int tokenizer_adds_bos(const Tokenizer *t) { return t->add_bos; }

int tokenizer_is_eog(const Tokenizer *t, int32_t id)
{
	for (int i = 0; i < t->neog; i++)
		if (t->eog[i] == id)
			return 1;
	return 0;
}

int32_t tokenizer_find(const Tokenizer *t, const char *text)
{
	return tok_lookup(t, text, strlen(text));
}

const char *tokenizer_id_text(const Tokenizer *t, int32_t id)
{
	if (id < 0 || id >= t->n_vocab)
		return NULL;
	return t->text + t->text_off[id];
}

const unsigned char *tokenizer_piece(const Tokenizer *t, int32_t id,
				     size_t *len)
{
	if (id < 0 || id >= t->n_vocab)
		return NULL;
	*len = t->piece_off[id + 1] - t->piece_off[id];
	return t->piece + t->piece_off[id];
}

int tokenizer_is_special(const Tokenizer *t, int32_t id)
{
	return id >= 0 && id < t->n_vocab &&
	       (t->type[id] == TT_CONTROL || t->type[id] == TT_USER);
}

/* ---- pre-tokenizer matchers ------------------------------------------ */

/* Each matcher returns the length in code points of its match at p inside
 * the fragment cp[s..e) (0 = no match there); code points outside read as
 * OOR, which is in no class, so lookaheads see the fragment's end. */
#define OOR 0xFFFFFFFFu

static inline uint32_t at(const uint32_t *cp, size_t e, size_t i)
{
	return i < e ? cp[i] : OOR;
}

static inline int c_L(uint32_t c) { return c != OOR && unicode_cat(c) == UCAT_L; }
static inline int c_N(uint32_t c) { return c != OOR && unicode_cat(c) == UCAT_N; }
static inline int c_P(uint32_t c) { return c != OOR && unicode_cat(c) == UCAT_P; }
static inline int c_S(uint32_t c) { return c != OOR && unicode_is_space(c); }
static inline int c_O(uint32_t c)
{
	return c != OOR && !c_S(c) && !c_L(c) && !c_N(c);
}
static inline int c_NL(uint32_t c) { return c == '\r' || c == '\n'; }
static inline uint32_t lower(uint32_t c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* 's 't 're 've 'm 'll 'd, optionally ASCII case-insensitive. */
static size_t m_contraction(const uint32_t *cp, size_t e, size_t p, int ci)
{
	if (cp[p] != '\'')
		return 0;
	uint32_t a = at(cp, e, p + 1), b = at(cp, e, p + 2);
	if (ci) {
		a = lower(a);
		b = lower(b);
	}
	if (a == 's' || a == 't' || a == 'm' || a == 'd')
		return 2;
	if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') ||
	    (a == 'l' && b == 'l'))
		return 3;
	return 0;
}

typedef int (*cls_fn)(uint32_t);

static size_t run(const uint32_t *cp, size_t e, size_t q, cls_fn f)
{
	while (q < e && f(cp[q]))
		q++;
	return q;
}

/* \s+(?!\S)|\s+ at a whitespace code point. */
static size_t m_spaces(const uint32_t *cp, size_t e, size_t p)
{
	size_t q = run(cp, e, p, c_S);
	if (q == e || q - p == 1)
		return q - p;
	return q - p - 1;
}

static size_t m_gpt2(const uint32_t *cp, size_t e, size_t p)
{
	size_t n = m_contraction(cp, e, p, 0);
	if (n)
		return n;
	size_t q = p + (cp[p] == ' ');
	uint32_t c = at(cp, e, q);
	if (c_L(c))
		return run(cp, e, q, c_L) - p;
	if (c_N(c))
		return run(cp, e, q, c_N) - p;
	if (c_O(c))
		return run(cp, e, q, c_O) - p;
	if (c_S(cp[p]))
		return m_spaces(cp, e, p);
	return 0;
}

static size_t m_llama3(const uint32_t *cp, size_t e, size_t p, size_t maxd)
{
	size_t n = m_contraction(cp, e, p, 1);
	if (n)
		return n;
	uint32_t c = cp[p];
	if (!c_NL(c) && !c_L(c) && !c_N(c) && c_L(at(cp, e, p + 1)))
		return run(cp, e, p + 1, c_L) - p;
	if (c_L(c))
		return run(cp, e, p, c_L) - p;
	if (c_N(c)) {
		size_t q = p;
		while (q < e && q - p < maxd && c_N(cp[q]))
			q++;
		return q - p;
	}
	size_t q = p + (c == ' ');
	if (c_O(at(cp, e, q))) {
		q = run(cp, e, q, c_O);
		while (q < e && c_NL(cp[q]))
			q++;
		return q - p;
	}
	if (c_S(c)) {
		size_t end = run(cp, e, p, c_S), nl = 0;
		for (size_t i = p; i < end; i++)
			if (c_NL(cp[i]))
				nl = i + 1;
		if (nl)
			return nl - p;
		return m_spaces(cp, e, p);
	}
	return 0;
}

static int c_punct_run(uint32_t c)
{
	return c_P(c) || (c < 128 && c && strchr("$+<=>^~|`", (int)c));
}
static int c_dsl_letter(uint32_t c)
{
	return c != OOR && unicode_in_ranges(c, unicode_dsl_letter_ranges,
					     unicode_dsl_letter_ranges_n);
}
static int c_dsl_punct(uint32_t c)
{
	return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x7E) ||
	       (c >= 0xFF01 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF5E) ||
	       (c >= 0x2018 && c <= 0x201F) || (c >= 0x3000 && c <= 0x3002);
}
static int c_cjk(uint32_t c)
{
	return (c >= 0x4E00 && c <= 0x9FA5) || (c >= 0x0800 && c <= 0x4E00) ||
	       (c >= 0xAC00 && c <= 0xD7FF);
}
static int c_ascii_digit(uint32_t c) { return c >= '0' && c <= '9'; }

/* \s?X+ */
static size_t m_opt_space_run(const uint32_t *cp, size_t e, size_t p,
			      cls_fn f)
{
	size_t q = p + (c_S(cp[p]) && f(at(cp, e, p + 1)));
	if (!f(at(cp, e, q)))
		return 0;
	return run(cp, e, q, f) - p;
}

static size_t stage_match(int st, const uint32_t *cp, size_t e, size_t p)
{
	uint32_t c = cp[p];
	switch (st) {
	case ST_GPT2:
		return m_gpt2(cp, e, p);
	case ST_LLAMA3:
		return m_llama3(cp, e, p, 3);
	case ST_QWEN2:
		return m_llama3(cp, e, p, 1);
	case ST_DIGIT1:
		return c_N(c) ? 1 : 0;
	case ST_DIGITS:
		return run(cp, e, p, c_N) - p;
	case ST_DIGITS3:
		return c_ascii_digit(c) && c_ascii_digit(at(cp, e, p + 1)) &&
		       c_ascii_digit(at(cp, e, p + 2)) ? 3 : 0;
	case ST_PUNCT_RUN:
		return run(cp, e, p, c_punct_run) - p;
	case ST_NL1:
		return c_NL(c) ? 1 : 0;
	case ST_DSL_LETTERS:
		return m_opt_space_run(cp, e, p, c_dsl_letter);
	case ST_DSL_PUNCT:
		return m_opt_space_run(cp, e, p, c_dsl_punct);
	case ST_WS_END: {
		size_t q = run(cp, e, p, c_S);
		return q == e ? q - p : 0;
	}
	case ST_CJK:
		return run(cp, e, p, c_cjk) - p;
	case ST_SP_LETTERS:
		return m_opt_space_run(cp, e, p, c_L);
	case ST_SP_PUNCT:
		return m_opt_space_run(cp, e, p, c_P);
	}
	return 0;
}

void tok_set_pre(Tokenizer *t, int pre)
{
	static const uint8_t lists[][TOK_MAX_STAGES] = {
		[PRE_NONE] = {0},
		[PRE_GPT2] = {ST_GPT2},
		[PRE_LLAMA3] = {ST_LLAMA3},
		[PRE_QWEN2] = {ST_QWEN2},
		[PRE_STARCODER] = {ST_DIGIT1, ST_GPT2},
		[PRE_FALCON] = {ST_PUNCT_RUN, ST_GPT2, ST_DIGITS3},
		[PRE_DEFAULT] = {ST_PUNCT_RUN, ST_GPT2, ST_DIGITS, ST_DIGITS3},
		[PRE_DEEPSEEK_LLM] = {ST_NL1, ST_DSL_LETTERS, ST_DSL_PUNCT,
				      ST_WS_END, ST_CJK, ST_DIGITS},
		[PRE_DEEPSEEK_CODER] = {ST_NL1, ST_SP_LETTERS, ST_SP_PUNCT,
					ST_CJK, ST_DIGIT1},
	};
	t->pre = pre;
	t->nstage = 0;
	for (int i = 0; i < TOK_MAX_STAGES && lists[pre][i]; i++)
		t->stage[t->nstage++] = lists[pre][i];
}

/* ---- BPE ------------------------------------------------------------- */

typedef struct {
	int32_t *v;     /* ids */
	size_t n, cap;  /* used / allocated */
} IdVec;

static int iv_push(IdVec *v, int32_t id)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 64;
		int32_t *p = realloc(v->v, cap * sizeof *p);
		if (!p)
			return -1;
		v->v = p;
		v->cap = cap;
	}
	v->v[v->n++] = id;
	return 0;
}

typedef struct {
	int32_t id;          /* token, -1 when the text is not in the vocab */
	int prev, next;      /* neighbours, -1 at the ends */
	uint32_t start, len; /* bytes of the word; len 0 once merged away */
} Sym;

typedef struct {
	float key;      /* higher merges first: score, or -rank */
	int left, right; /* symbol indices */
	uint32_t size;  /* left.len + right.len when queued (staleness) */
	int32_t result; /* merged token */
} Cand;

typedef struct {
	Sym *sym;
	Cand *heap;
	size_t nheap, capheap, capsym;
} BpeWork;

static int cand_better(const Cand *a, const Cand *b)
{
	return a->key > b->key || (a->key == b->key && a->left < b->left);
}

static int heap_push(BpeWork *w, Cand c)
{
	if (w->nheap == w->capheap) {
		size_t cap = w->capheap ? w->capheap * 2 : 64;
		Cand *p = realloc(w->heap, cap * sizeof *p);
		if (!p)
			return -1;
		w->heap = p;
		w->capheap = cap;
	}
	size_t i = w->nheap++;
	while (i > 0) {
		size_t up = (i - 1) / 2;
		if (!cand_better(&c, &w->heap[up]))
			break;
		w->heap[i] = w->heap[up];
		i = up;
	}
	w->heap[i] = c;
	return 0;
}

static Cand heap_pop(BpeWork *w)
{
	Cand top = w->heap[0], last = w->heap[--w->nheap];
	size_t i = 0, n = w->nheap;
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, best = i;
		const Cand *bc = &last;
		if (l < n && cand_better(&w->heap[l], bc)) {
			best = l;
			bc = &w->heap[l];
		}
		if (r < n && cand_better(&w->heap[r], bc))
			best = r;
		if (best == i)
			break;
		w->heap[i] = w->heap[best];
		i = best;
	}
	if (n)
		w->heap[i] = last;
	return top;
}

static int try_pair(const Tokenizer *t, BpeWork *w, const char *s, int l,
		    int r)
{
	if (l < 0 || r < 0)
		return 0;
	const Sym *a = &w->sym[l], *b = &w->sym[r];
	Cand c = {0, l, r, a->len + b->len, -1};
	if (t->merges) {
		if (a->id < 0 || b->id < 0)
			return 0;
		const TokMerge *m = merge_find(t, a->id, b->id);
		if (!m)
			return 0;
		c.key = -(float)m->rank;
		c.result = m->result;
	} else {
		int32_t id = tok_lookup(t, s + a->start, c.size);
		if (id < 0)
			return 0;
		c.key = t->score ? t->score[id] : 0.0f;
		c.result = id;
	}
	return heap_push(w, c);
}

static int add_sym(BpeWork *w, size_t *n, int32_t id, uint32_t start,
		   uint32_t len)
{
	if (*n == w->capsym) {
		size_t cap = w->capsym ? w->capsym * 2 : 64;
		Sym *p = realloc(w->sym, cap * sizeof *p);
		if (!p)
			return -1;
		w->sym = p;
		w->capsym = cap;
	}
	Sym *y = &w->sym[*n];
	y->id = id;
	y->start = start;
	y->len = len;
	y->prev = (int)*n - 1;
	y->next = (int)*n + 1;
	(*n)++;
	return 0;
}

/* Byte fallback for bytes s[0..n): <0xNN> tokens, else <unk>. */
static int push_bytes(const Tokenizer *t, const char *s, size_t n, IdVec *out)
{
	for (size_t i = 0; i < n; i++) {
		int32_t id = t->byte_id[(unsigned char)s[i]];
		if (id < 0)
			id = t->unk;
		if (id >= 0 && iv_push(out, id))
			return -1;
	}
	return 0;
}

/* BPE over one word s[0..n) (byte-level: raw bytes; SPM: normalized). */
static int bpe_word(const Tokenizer *t, BpeWork *w, const char *s, size_t n,
		    IdVec *out)
{
	if (n == 0)
		return 0;
	size_t ns = 0;
	w->nheap = 0;
	if (t->kind == TOK_BPE) {
		if (t->ignore_merges) {
			/* the vocab holds byte-level images of the bytes */
			char img[4 * 256];
			if (n <= 256) {
				size_t m = 0;
				for (size_t i = 0; i < n; i++)
					m += utf8_put(unicode_byte_to_cp(
							      (uint8_t)s[i]),
						      (unsigned char *)img + m);
				int32_t id = tok_lookup(t, img, m);
				if (id >= 0)
					return iv_push(out, id);
			}
		}
		for (size_t i = 0; i < n; i++) {
			int32_t id = t->byte_id[(unsigned char)s[i]];
			if (id < 0)
				id = t->unk;
			if (id < 0)
				continue; /* vocab without this byte */
			if (add_sym(w, &ns, id, (uint32_t)i, 1))
				return -1;
		}
	} else {
		size_t i = 0;
		while (i < n) {
			uint32_t cp;
			size_t l = utf8_next((const unsigned char *)s + i,
					     n - i, &cp);
			int32_t id = tok_lookup(t, s + i, l);
			if (id < 0 && t->merges) {
				/* HF BPE: an unknown char becomes its byte
				 * tokens, else one <unk> (fused with a
				 * preceding one) */
				int all = t->byte_fallback;
				for (size_t k = 0; k < l && all; k++)
					all = t->byte_id[(unsigned char)s[i + k]] >= 0;
				if (all) {
					for (size_t k = 0; k < l; k++)
						if (add_sym(w, &ns,
							    t->byte_id[(unsigned char)s[i + k]],
							    (uint32_t)(i + k), 1))
							return -1;
				} else if (t->unk >= 0) {
					if (ns && w->sym[ns - 1].id == t->unk)
						w->sym[ns - 1].len += (uint32_t)l;
					else if (add_sym(w, &ns, t->unk,
							 (uint32_t)i, (uint32_t)l))
						return -1;
				}
			} else if (add_sym(w, &ns, id, (uint32_t)i,
					   (uint32_t)l)) {
				return -1;
			}
			i += l;
		}
	}
	if (ns == 0)
		return 0;
	w->sym[0].prev = -1;
	w->sym[ns - 1].next = -1;
	for (size_t i = 0; i + 1 < ns; i++)
		if (try_pair(t, w, s, (int)i, (int)i + 1))
			return -1;
	while (w->nheap) {
		Cand c = heap_pop(w);
		Sym *a = &w->sym[c.left], *b = &w->sym[c.right];
		if (!a->len || !b->len || a->next != c.right ||
		    a->len + b->len != c.size)
			continue;
		a->len += b->len;
		a->id = c.result;
		a->next = b->next;
		if (b->next >= 0)
			w->sym[b->next].prev = c.left;
		b->len = 0;
		if (try_pair(t, w, s, a->prev, c.left) ||
		    try_pair(t, w, s, c.left, a->next))
			return -1;
	}
	for (int i = 0; i >= 0; i = w->sym[i].next) {
		const Sym *y = &w->sym[i];
		if (y->id >= 0) {
			if (iv_push(out, y->id))
				return -1;
		} else if (push_bytes(t, s + y->start, y->len, out)) {
			return -1;
		}
	}
	return 0;
}

/* ---- encoding -------------------------------------------------------- */

typedef struct {
	BpeWork w;
	uint32_t *cp;   /* code points of the segment */
	uint32_t *off;  /* byte offset of each code point, ncp + 1 */
	uint32_t *cut, *cut2; /* piece ends (code point indices) */
	char *norm;     /* SPM normalized text */
	size_t capcp, capnorm;
} EncWork;

static void enc_free(EncWork *e)
{
	free(e->w.sym);
	free(e->w.heap);
	free(e->cp);
	free(e->off);
	free(e->cut);
	free(e->cut2);
	free(e->norm);
}

static int encode_spm(const Tokenizer *t, EncWork *e, const char *s,
		      size_t n, int at_start, IdVec *out)
{
	if (n == 0)
		return 0;
	size_t need = 3 * n + 3;
	if (need > e->capnorm) {
		char *p = realloc(e->norm, need);
		if (!p)
			return -1;
		e->norm = p;
		e->capnorm = need;
	}
	size_t m = 0;
	if (t->add_space_prefix && (at_start || !t->prefix_first_only) &&
	    !(t->prefix_unless_space && s[0] == ' ')) {
		memcpy(e->norm, "\xe2\x96\x81", 3);
		m = 3;
	}
	for (size_t i = 0; i < n; i++) {
		if (s[i] == ' ') {
			memcpy(e->norm + m, "\xe2\x96\x81", 3);
			m += 3;
		} else {
			e->norm[m++] = s[i];
		}
	}
	if (!t->split_words && !t->spm_word_safe)
		return bpe_word(t, &e->w, e->norm, m, out);
	/* HF Metaspace(split): each U+2581 starts a new word; word-safe
	 * vocab: each run of U+2581 does */
	size_t a = 0;
	for (size_t i = 1; i <= m; i++) {
		if (i < m && !(m - i >= 3 &&
			       !memcmp(e->norm + i, "\xe2\x96\x81", 3)))
			continue;
		if (i < m && !t->split_words && i >= 3 &&
		    !memcmp(e->norm + i - 3, "\xe2\x96\x81", 3))
			continue;
		if (bpe_word(t, &e->w, e->norm + a, i - a, out))
			return -1;
		a = i;
	}
	return 0;
}

/* Run the split stages over s[0..n): leaves the piece ends (code point
 * indices) in e->cut and returns their count, -1 when out of memory. */
static long pre_split(const uint8_t *stage, int nstage, EncWork *e,
		      const char *s, size_t n)
{
	if (n + 1 > e->capcp) {
		size_t cap = n + 1;
		uint32_t *a = realloc(e->cp, cap * sizeof *a);
		if (a)
			e->cp = a;
		uint32_t *b = realloc(e->off, cap * sizeof *b);
		if (b)
			e->off = b;
		uint32_t *c = realloc(e->cut, cap * sizeof *c);
		if (c)
			e->cut = c;
		uint32_t *d = realloc(e->cut2, cap * sizeof *d);
		if (d)
			e->cut2 = d;
		if (!a || !b || !c || !d)
			return -1;
		e->capcp = cap;
	}
	size_t ncp = 0, i = 0;
	while (i < n) {
		uint32_t c;
		size_t l = utf8_next((const unsigned char *)s + i, n - i, &c);
		e->cp[ncp] = c;
		e->off[ncp++] = (uint32_t)i;
		i += l;
	}
	e->off[ncp] = (uint32_t)n;
	size_t ncut = 1;
	e->cut[0] = (uint32_t)ncp;
	for (int st = 0; st < nstage; st++) {
		size_t nc2 = 0, a = 0;
		for (size_t k = 0; k < ncut; k++) {
			size_t end = e->cut[k], p = a, gap = a;
			while (p < end) {
				size_t m = stage_match(stage[st], e->cp,
						       end, p);
				if (!m) {
					p++;
					continue;
				}
				if (gap < p)
					e->cut2[nc2++] = (uint32_t)p;
				p += m;
				e->cut2[nc2++] = (uint32_t)p;
				gap = p;
			}
			if (gap < end)
				e->cut2[nc2++] = (uint32_t)end;
			a = end;
		}
		uint32_t *tmp = e->cut;
		e->cut = e->cut2;
		e->cut2 = tmp;
		ncut = nc2;
	}
	return (long)ncut;
}

static int encode_bpe(const Tokenizer *t, EncWork *e, const char *s,
		      size_t n, IdVec *out)
{
	if (n == 0)
		return 0;
	if (t->bpe_prefix_space && s[0] != ' ') {
		/* ByteLevel(add_prefix_space): encode " " + text */
		char *p = malloc(n + 1);
		if (!p)
			return -1;
		p[0] = ' ';
		memcpy(p + 1, s, n);
		Tokenizer tmp = *t;
		tmp.bpe_prefix_space = 0;
		int rc = encode_bpe(&tmp, e, p, n + 1, out);
		free(p);
		return rc;
	}
	long ncut = pre_split(t->stage, t->nstage, e, s, n);
	if (ncut < 0)
		return -1;
	size_t a = 0;
	for (size_t k = 0; k < (size_t)ncut; k++) {
		size_t b0 = e->off[a], b1 = e->off[e->cut[k]];
		if (bpe_word(t, &e->w, s + b0, b1 - b0, out))
			return -1;
		a = e->cut[k];
	}
	return 0;
}

static int encode_segment(const Tokenizer *t, EncWork *e, const char *s,
			  size_t n, int at_start, IdVec *out)
{
	if (t->nfc && n) {
		char *norm = NULL;
		size_t nn;
		if (unicode_nfc(s, n, &norm, &nn))
			return -1;
		if (norm) {
			Tokenizer tmp = *t;
			tmp.nfc = 0;
			int rc = encode_segment(&tmp, e, norm, nn, at_start, out);
			free(norm);
			return rc;
		}
	}
	if (t->kind == TOK_SPM)
		return encode_spm(t, e, s, n, at_start, out);
	return encode_bpe(t, e, s, n, out);
}

/* Longest added token matching at s[0..n), -1 if none. */
static int32_t match_special(const Tokenizer *t, const char *s, size_t n,
			     int parse_special)
{
	for (int k = 0; k < t->nspecial; k++) {
		int32_t id = t->special[k];
		size_t m = t->text_n[id];
		if (m > n || (unsigned char)s[0] !=
				     (unsigned char)t->text[t->text_off[id]])
			continue;
		if (!parse_special && t->type[id] != TT_USER)
			continue;
		if (!memcmp(s, t->text + t->text_off[id], m))
			return id;
	}
	return -1;
}

int tokenizer_encode(const Tokenizer *t, const char *text, size_t len,
		     int add_bos, int parse_special, int32_t **ids, char *err,
		     size_t errlen)
{
	IdVec out = {0};
	EncWork e = {0};
	*ids = NULL;
	if (!text && len) {
		tok_seterr(err, errlen, "tokenizer: NULL text");
		return -1;
	}
	if (len > (size_t)INT32_MAX / 4) {
		/* offsets are 32-bit and SPM text grows up to 3x */
		tok_seterr(err, errlen, "tokenizer: text of %zu bytes too long",
		       len);
		return -1;
	}
	if (add_bos && t->add_bos && t->bos >= 0 && iv_push(&out, t->bos))
		goto oom;
	/* first bytes of added tokens, to skip most positions fast */
	uint8_t first[256] = {0};
	for (int k = 0; k < t->nspecial; k++)
		first[(unsigned char)t->text[t->text_off[t->special[k]]]] = 1;
	size_t seg = 0;
	for (size_t i = 0; i < len; i++) {
		if (!first[(unsigned char)text[i]])
			continue;
		int32_t id = match_special(t, text + i, len - i, parse_special);
		if (id < 0)
			continue;
		size_t end = i; /* end of the text before the token */
		if (t->astrip && (t->astrip[id] & 1))
			while (end > seg) {
				size_t k = end - 1;
				while (k > seg && ((unsigned char)text[k] & 0xC0) == 0x80)
					k--;
				uint32_t c;
				utf8_next((const unsigned char *)text + k, end - k, &c);
				if (!unicode_is_space(c))
					break;
				end = k;
			}
		if (encode_segment(t, &e, text + seg, end - seg, seg == 0, &out) ||
		    iv_push(&out, id))
			goto oom;
		i += t->text_n[id];
		if (t->astrip && (t->astrip[id] & 2))
			while (i < len) {
				uint32_t c;
				size_t l = utf8_next((const unsigned char *)text + i,
						     len - i, &c);
				if (!unicode_is_space(c))
					break;
				i += l;
			}
		seg = i;
		i--; /* the loop's i++ */
	}
	if (encode_segment(t, &e, text + seg, len - seg, seg == 0, &out))
		goto oom;
	enc_free(&e);
	if (out.n > INT32_MAX) {
		free(out.v);
		tok_seterr(err, errlen, "tokenizer: text too long");
		return -1;
	}
	if (!out.v && !(out.v = malloc(sizeof *out.v)))
		goto oom;
	*ids = out.v;
	return (int)out.n;
oom:
	enc_free(&e);
	free(out.v);
	tok_seterr(err, errlen, "tokenizer: out of memory");
	return -1;
}

long tok_pre_split(int pre, const char *s, size_t n, size_t *ends)
{
	Tokenizer t;
	memset(&t, 0, sizeof t);
	tok_set_pre(&t, pre);
	EncWork e = {0};
	long k = n ? pre_split(t.stage, t.nstage, &e, s, n) : 0;
	for (long i = 0; i < k; i++)
		ends[i] = e.off[e.cut[i]];
	enc_free(&e);
	return k;
}

/* ---- decoding -------------------------------------------------------- */

static size_t emit_char(TokenStream *s, const unsigned char *c, size_t n,
			unsigned char *out)
{
	if (s->first) {
		s->first = 0;
		if (n == 1 && c[0] == ' ')
			return 0;
	}
	memcpy(out, c, n);
	return n;
}

static const unsigned char REPL[3] = {0xEF, 0xBF, 0xBD}; /* U+FFFD */

/* Expected length of a sequence led by b, 0 if b cannot lead one. */
static int lead_len(unsigned b)
{
	if (b < 0x80)
		return 1;
	if (b >= 0xC2 && b <= 0xDF)
		return 2;
	if (b >= 0xE0 && b <= 0xEF)
		return 3;
	if (b >= 0xF0 && b <= 0xF4)
		return 4;
	return 0;
}

/* Whether b may follow the held bytes (the second byte has narrower
 * ranges after E0, ED, F0, F4: no overlongs, surrogates, > U+10FFFF). */
static int cont_ok(const TokenStream *s, unsigned b)
{
	if (s->npend == 1) {
		switch (s->pend[0]) {
		case 0xE0: return b >= 0xA0 && b <= 0xBF;
		case 0xED: return b >= 0x80 && b <= 0x9F;
		case 0xF0: return b >= 0x90 && b <= 0xBF;
		case 0xF4: return b >= 0x80 && b <= 0x8F;
		}
	}
	return b >= 0x80 && b <= 0xBF;
}

/* UTF-8 with invalid parts replaced as Rust's from_utf8_lossy and Python's
 * errors="replace" do (one U+FFFD per maximal invalid subpart). out needs
 * room for 3 * (n + npend) bytes. */
static size_t feed(TokenStream *s, const unsigned char *in, size_t n,
		   unsigned char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned b = in[i];
		if (s->npend) {
			if (cont_ok(s, b)) {
				s->pend[s->npend++] = (unsigned char)b;
				if (s->npend == lead_len(s->pend[0])) {
					o += emit_char(s, s->pend,
						       (size_t)s->npend, out + o);
					s->npend = 0;
				}
				continue;
			}
			o += emit_char(s, REPL, 3, out + o);
			s->npend = 0;
		}
		int l = lead_len(b);
		if (l == 1) {
			unsigned char c = (unsigned char)b;
			o += emit_char(s, &c, 1, out + o);
		} else if (l == 0) {
			o += emit_char(s, REPL, 3, out + o);
		} else {
			s->pend[0] = (unsigned char)b;
			s->npend = 1;
		}
	}
	return o;
}

void tokstream_init(TokenStream *s, const Tokenizer *t)
{
	memset(s, 0, sizeof *s);
	s->t = t;
	s->first = t->strip_space;
}

int tokstream_push(TokenStream *s, int32_t id, char *out, size_t cap)
{
	const Tokenizer *t = s->t;
	if (id < 0 || id >= t->n_vocab)
		return -1;
	size_t n = t->piece_off[id + 1] - t->piece_off[id];
	if (3 * (n + (size_t)s->npend) > cap)
		return -1;
	return (int)feed(s, t->piece + t->piece_off[id], n,
			 (unsigned char *)out);
}

int tokstream_flush(TokenStream *s, char *out, size_t cap)
{
	if (!s->npend)
		return 0;
	if (cap < 3)
		return -1;
	s->npend = 0;
	return (int)emit_char(s, REPL, 3, (unsigned char *)out);
}

char *tokenizer_decode(const Tokenizer *t, const int32_t *ids, int n,
		       size_t *len, char *err, size_t errlen)
{
	size_t total = 0;
	for (int i = 0; i < n; i++) {
		if (ids[i] < 0 || ids[i] >= t->n_vocab) {
			tok_seterr(err, errlen, "tokenizer: invalid id %d",
			       (int)ids[i]);
			return NULL;
		}
		total += t->piece_off[ids[i] + 1] - t->piece_off[ids[i]];
	}
	if (total > SIZE_MAX / 4) {
		tok_seterr(err, errlen, "tokenizer: decode too long");
		return NULL;
	}
	unsigned char *buf = malloc(3 * total + 8);
	if (!buf) {
		tok_seterr(err, errlen, "tokenizer: out of memory");
		return NULL;
	}
	TokenStream s;
	tokstream_init(&s, t);
	size_t o = 0;
	for (int i = 0; i < n; i++) {
		int32_t id = ids[i];
		o += feed(&s, t->piece + t->piece_off[id],
			  t->piece_off[id + 1] - t->piece_off[id], buf + o);
	}
	if (s.npend)
		o += emit_char(&s, REPL, 3, buf + o);
	buf[o] = 0;
	if (len)
		*len = o;
	return (char *)buf;
}
