/*
 * tokenizer.h - text <-> token ids for Llama-family models.
 *
 * Two BPE flavours, as Hugging Face `tokenizers` and llama.cpp run them:
 *  - SPM: sentencepiece-style BPE over Unicode characters with byte
 *    fallback (<0xNN> tokens), the Llama-2 normalizer (prepend U+2581 and
 *    replace ' ' by U+2581); merges ranked by tokenizer.json's merges list
 *    or by GGUF scores.
 *  - BPE: byte-level BPE (GPT-2 byte-to-unicode map) after a regex
 *    pre-tokenizer (GPT-2, Llama-3, Qwen2 and the other GGUF `pre` kinds),
 *    written as hand-coded matchers over Unicode categories (unicode.h).
 * Added/special tokens are matched before the model runs, longest first
 * (HF lstrip/rstrip honoured). tokenizer.json normalizers: the Llama-2
 * Prepend/Replace pair, Metaspace (prepend_scheme, split) and NFC.
 *
 * Sources: tokenizer.json (+ tokenizer_config.json, generation_config.json)
 * in an HF directory, or the tokenizer.ggml.* metadata of a GGUF file.
 *
 * A Tokenizer is immutable after loading: safe to share across threads.
 */
#ifndef INFERD_TOKENIZER_H
#define INFERD_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct Tokenizer Tokenizer;
struct gguf_file;

#define TOK_MAX_EOG 8 /* most end-of-generation ids a model may have */

/* Load from a Hugging Face model directory. Returns 0 or -1 with a
 * message. The caller frees *out with tokenizer_free(). */
int tokenizer_load_hf(const char *dir, Tokenizer **out, char *err,
		      size_t errlen);
/* Load from an open GGUF file (vocab-only files too). */
int tokenizer_load_gguf(const struct gguf_file *g, Tokenizer **out, char *err,
			size_t errlen);
void tokenizer_free(Tokenizer *t);

int tokenizer_n_vocab(const Tokenizer *t);
int32_t tokenizer_bos(const Tokenizer *t); /* -1 when none */
int32_t tokenizer_eos(const Tokenizer *t); /* -1 when none */
/* Whether encode with add_special adds BOS (tokenizer config / GGUF
 * tokenizer.ggml.add_bos_token). */
int tokenizer_adds_bos(const Tokenizer *t);
/* 1 when id ends generation (EOS, EOT, <|im_end|>, <|eot_id|>, ...). */
int tokenizer_is_eog(const Tokenizer *t, int32_t id);
/* Id of a token by its exact text (e.g. "<|im_end|>"), -1 if absent. */
int32_t tokenizer_find(const Tokenizer *t, const char *text);
/* Raw vocab text of id as stored in the file (byte-level images such as
 * "\u0120the", U+2581 for SPM spaces, "<0x0A>"), NUL-terminated; NULL for
 * an id out of range. Valid until tokenizer_free(). */
const char *tokenizer_id_text(const Tokenizer *t, int32_t id);
/* Decoded bytes of one token (U+2581 as space, <0xNN> as the byte,
 * byte-level images as their bytes; may be partial UTF-8), *len set; NULL
 * for an id out of range. No leading-space strip. */
const unsigned char *tokenizer_piece(const Tokenizer *t, int32_t id,
				     size_t *len);
/* 1 when id is an added/special token (control or user-defined): the
 * tokens that encode with parse_special matches in text. */
int tokenizer_is_special(const Tokenizer *t, int32_t id);

/* Encode len bytes of UTF-8 text. add_bos: prepend BOS when the tokenizer
 * adds one (tokenizer_adds_bos(); HF add_special_tokens, llama.cpp
 * add_special). parse_special: match added/special tokens in the text
 * (chat templates), longest first; when 0 only user-defined (non-special)
 * added tokens are matched and special texts are encoded as plain text.
 * On success returns the count and sets *ids to a malloc'd array the caller
 * frees; returns -1 with a message on error (invalid UTF-8 is encoded
 * byte-wise, never an error). */
int tokenizer_encode(const Tokenizer *t, const char *text, size_t len,
		     int add_bos, int parse_special, int32_t **ids, char *err,
		     size_t errlen);

/* Decode ids to UTF-8 as HF `decode(ids)` does (special tokens included,
 * SPM leading space of the first piece stripped). Byte runs that are not
 * valid UTF-8 become one U+FFFD per maximal invalid part (Rust
 * from_utf8_lossy; HF's SPM ByteFallback would give one per byte). Returns a malloc'd,
 * NUL-terminated string (length in *len when non-NULL), NULL on an invalid
 * id (message in err). */
char *tokenizer_decode(const Tokenizer *t, const int32_t *ids, int n,
		       size_t *len, char *err, size_t errlen);

/* Streaming decoder (TOKSTREAM_MAX_PIECE was 512; raised to 2048 so a
 * whole token of up to 677 bytes, each possibly U+FFFD, fits): feed ids one by one, get the text that is complete.
 * Bytes of a UTF-8 sequence split across tokens are held back until the
 * sequence is complete; the concatenation of all pushes and the final
 * flush equals tokenizer_decode() of all ids. */
typedef struct TokenStream {
	const Tokenizer *t;     /* tokenizer in use */
	unsigned char pend[8];  /* held-back bytes of an incomplete sequence */
	int npend;              /* how many */
	int first;              /* 1 until the first char is out (SPM strip);
				   set 0 after init to continue text already
				   shown (a prompt) with its leading space */
} TokenStream;

void tokstream_init(TokenStream *s, const Tokenizer *t);
/* Append the text made complete by id to out (capacity cap, which must be
 * at least TOKSTREAM_MAX_PIECE). Returns bytes written, or -1 for an invalid
 * id. Never writes a partial UTF-8 sequence; invalid bytes that cannot
 * start or continue a sequence come out as U+FFFD as HF does. */
#define TOKSTREAM_MAX_PIECE 2048
int tokstream_push(TokenStream *s, int32_t id, char *out, size_t cap);
/* Emit what is still held (as U+FFFD for an incomplete sequence). */
int tokstream_flush(TokenStream *s, char *out, size_t cap);

#endif
