/*
 * tokenizer_int.h - the Tokenizer struct and the builder steps shared by
 * the two loaders (tokenizer.c for tokenizer.json, tokenizer_gguf.c for
 * GGUF metadata). Private to the tokenizer module.
 *
 * A loader allocates with tok_new(), sets every id's text with
 * tok_set_text() (and type/score), calls tok_index() to build the text ->
 * id hash, adds merges with tok_add_merge() when the model has a merges
 * list, sets the flags below, and ends with tok_finish().
 */
#ifndef INFERD_TOKENIZER_INT_H
#define INFERD_TOKENIZER_INT_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* Token types, numbered as GGUF's tokenizer.ggml.token_type. */
enum {
	TT_UNDEFINED = 0, /* hole in the id space (no text) */
	TT_NORMAL = 1,    /* ordinary vocab entry */
	TT_UNKNOWN = 2,   /* <unk> */
	TT_CONTROL = 3,   /* special token (<s>, <|im_end|>) */
	TT_USER = 4,      /* user-defined added token, matched in text */
	TT_UNUSED = 5,    /* reserved id the vocab does not use (GGUF type 5) */
	TT_BYTE = 6,      /* SPM byte fallback <0xNN> */
};

/* Model flavour. */
enum { TOK_SPM = 0, TOK_BPE = 1 };

/* Pre-tokenizer (BPE only): which regex split runs before the merges.
 * Names follow GGUF tokenizer.ggml.pre. */
enum {
	PRE_NONE = 0,      /* SPM: the whole segment is one word */
	PRE_GPT2,          /* gpt-2, mpt, olmo, HF ByteLevel(use_regex) */
	PRE_LLAMA3,        /* llama3 / llama-bpe / dbrx / smaug */
	PRE_QWEN2,         /* like llama3 but one digit per piece */
	PRE_STARCODER,     /* digits split, then GPT-2 (smollm, refact) */
	PRE_FALCON,        /* punctuation runs, GPT-2, 3-digit groups */
	PRE_DEFAULT,       /* llama.cpp's default BPE pre-tokenizer */
	PRE_DEEPSEEK_LLM,  /* deepseek-llm's explicit classes */
	PRE_DEEPSEEK_CODER,/* deepseek-coder */
};

/* One pre-tokenizer split stage: a regex written as a matcher. Stages run
 * in order, each splitting every piece of the previous one into its matches
 * and the gaps between them (llama.cpp's unicode_regex_split). */
enum {
	ST_GPT2 = 1,    /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
			   ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
	ST_LLAMA3,      /* (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
			   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
	ST_QWEN2,       /* the same with \p{N} (one digit) */
	ST_DIGIT1,      /* \p{N} */
	ST_DIGITS,      /* \p{N}+ */
	ST_DIGITS3,     /* [0-9][0-9][0-9] */
	ST_PUNCT_RUN,   /* [\p{P}\$\+<=>\^~\|`]+ */
	ST_NL1,         /* [\r\n] */
	ST_DSL_LETTERS, /* \s?[A-Za-z...]+ (deepseek-llm letter class) */
	ST_DSL_PUNCT,   /* \s?[!-/:-~！-／：-～‘-‟　-。]+ */
	ST_WS_END,      /* \s+$ */
	ST_CJK,         /* [一-龥ࠀ-一가-퟿]+ */
	ST_SP_LETTERS,  /* \s?\p{L}+ */
	ST_SP_PUNCT,    /* \s?\p{P}+ */
};
#define TOK_MAX_STAGES 8 /* most split stages a pre-tokenizer has */

/* Largest decoded piece of one token accepted at load, so a streaming push
 * (worst case 3 output bytes per input byte) fits TOKSTREAM_MAX_PIECE. */
#define TOK_MAX_PIECE ((TOKSTREAM_MAX_PIECE - 16) / 3)
#define TOK_MAX_TEXT 4096 /* longest raw token text accepted */

/* Merge table entry (open addressing on key = left << 32 | right). */
typedef struct {
	uint64_t key;   /* left id << 32 | right id; UINT64_MAX = empty */
	int32_t rank;   /* position in the merges list (lower merges first) */
	int32_t result; /* id of the merged token */
} TokMerge;

struct Tokenizer {
	int kind;               /* TOK_SPM or TOK_BPE */
	int pre;                /* PRE_* (BPE) */
	uint8_t stage[TOK_MAX_STAGES]; /* ST_* split stages, in order */
	int nstage;             /* count (0: the segment is one word) */
	int n_vocab;            /* ids are 0..n_vocab-1 */

	char *text;             /* arena of raw vocab texts (file form) */
	size_t text_len, text_cap; /* bytes used / allocated */
	uint32_t *text_off;     /* [n_vocab] start of id's text in the arena */
	uint32_t *text_n;       /* [n_vocab] its length */
	uint8_t *type;          /* [n_vocab] TT_* */
	float *score;           /* [n_vocab] SPM scores (GGUF), or NULL */

	unsigned char *piece;   /* arena of decoded bytes per id */
	uint32_t *piece_off;    /* [n_vocab + 1] id's piece is [off[i], off[i+1]) */

	uint32_t *vhash;        /* text -> id + 1 (0 = empty), vcap slots */
	size_t vcap;            /* power of two */

	TokMerge *merges;       /* merge pairs, mcap slots, or NULL (by score) */
	size_t mcap, nmerges;   /* slots (power of two) / used */

	int32_t byte_id[256];   /* token of each raw byte (-1 if none): SPM
				   <0xNN> fallback, BPE byte-level symbol */
	int byte_fallback;      /* SPM: unknown chars become byte tokens */
	int32_t unk;            /* <unk> id or -1 */
	int add_space_prefix;   /* SPM: prepend U+2581 to a text segment */
	int prefix_first_only;  /* ... only to the segment at text start */
	int prefix_unless_space; /* ... unless it starts with a space
				    (HF Metaspace) */
	int split_words;        /* SPM: BPE each U+2581-led word apart
				   (HF Metaspace split) */
	int spm_word_safe;      /* SPM: no token has U+2581 after another
				   char, so no merge crosses a boundary
				   before a run of U+2581: BPE words apart
				   (same result, smaller heaps) */
	int strip_space;        /* decode drops one leading space (SPM) */
	int ignore_merges;      /* BPE: a whole pre-token in vocab is kept */
	int bpe_prefix_space;   /* BPE ByteLevel add_prefix_space */
	int nfc;                /* NFC-normalize each text segment first */

	uint8_t *astrip;        /* [n_vocab] or NULL: added token eats the
				   whitespace on its left (bit 0, HF lstrip)
				   / right (bit 1, rstrip) */
	int32_t *special;       /* ids matched in text, longest text first */
	int nspecial;           /* count */

	int32_t bos, eos;       /* -1 when none */
	int add_bos;            /* encode(add_bos=1) prepends bos */
	int32_t eog[TOK_MAX_EOG]; /* end-of-generation ids */
	int neog;               /* count */
};

/* printf into err (errlen bytes, may be 0). */
void tok_seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
Tokenizer *tok_new(int n_vocab, char *err, size_t errlen);
int tok_set_text(Tokenizer *t, int32_t id, const char *s, size_t len,
		 char *err, size_t errlen);
int tok_index(Tokenizer *t, char *err, size_t errlen);
int32_t tok_lookup(const Tokenizer *t, const char *s, size_t len);
/* Add merge (left, right) at rank; the result is the token whose text is
 * the concatenation. Duplicate pairs keep the first rank. */
int tok_add_merge(Tokenizer *t, int32_t left, int32_t right, int32_t rank,
		  char *err, size_t errlen);
int tok_reserve_merges(Tokenizer *t, size_t n, char *err, size_t errlen);
/* Pieces, byte ids, special list, end-of-generation set. */
int tok_finish(Tokenizer *t, char *err, size_t errlen);
void tok_add_eog(Tokenizer *t, int32_t id);
/* Pre-tokenize s[0..n) as kind pre: stores the byte end of each piece in
 * ends (room for n) and returns the count, -1 when out of memory. */
long tok_pre_split(int pre, const char *s, size_t n, size_t *ends);
/* Set pre and the stages for a PRE_* kind. */
void tok_set_pre(Tokenizer *t, int pre);

#endif
