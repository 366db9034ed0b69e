/*
 * unicode.h - the little Unicode the tokenizer needs: UTF-8 decoding that
 * never fails (bad bytes come back one at a time, flagged), general-category
 * classes for the pre-tokenizer matchers (\p{L}, \p{N}, \p{P}, \s) and the
 * GPT-2 byte <-> code point map.
 *
 * Category tables are generated from Python's unicodedata by
 * contrib/gen_unicode.py into unicode_data.c as sorted range lists.
 */
#ifndef INFERD_UNICODE_H
#define INFERD_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* General-category major classes (first letter of the category). */
typedef enum {
	UCAT_C = 0, /* control, format, unassigned, private use, surrogate */
	UCAT_L,     /* letters */
	UCAT_M,     /* marks */
	UCAT_N,     /* numbers */
	UCAT_P,     /* punctuation */
	UCAT_S,     /* symbols */
	UCAT_Z,     /* separators */
} UnicodeCat;

/* One run of code points of one class, from lo to the next entry's lo. */
typedef struct {
	uint32_t lo;  /* first code point of the run */
	uint8_t cat;  /* UnicodeCat of every code point in the run */
} UnicodeCatRange;

/* Inclusive code point range. */
typedef struct {
	uint32_t lo; /* first */
	uint32_t hi; /* last */
} UnicodeRange;

/* Code points lo..hi share canonical combining class ccc (nonzero). */
typedef struct {
	uint32_t lo, hi; /* inclusive range */
	uint8_t ccc;     /* canonical combining class */
} UnicodeCccRange;

/* Canonical decomposition cp -> a (+ b when b != 0). */
typedef struct {
	uint32_t cp;   /* decomposable code point */
	uint32_t a, b; /* its decomposition; b = 0 for a singleton */
} UnicodeDecomp;

/* Primary composite: NFC composes a + b into c. */
typedef struct {
	uint32_t a, b; /* starter and following code point */
	uint32_t c;    /* composite */
} UnicodeComp;

extern const UnicodeCatRange unicode_cat_ranges[];
extern const size_t unicode_cat_nranges;
extern const uint8_t unicode_ascii_cat[128]; /* UnicodeCat of 0..127 */
extern const UnicodeRange unicode_ws_ranges[];
extern const size_t unicode_ws_ranges_n;
extern const UnicodeCccRange unicode_ccc_ranges[];
extern const size_t unicode_ccc_ranges_n;
extern const UnicodeDecomp unicode_decomp[];
extern const size_t unicode_decomp_n;
extern const UnicodeComp unicode_comp[];
extern const size_t unicode_comp_n;
extern const UnicodeRange unicode_dsl_letter_ranges[];
extern const size_t unicode_dsl_letter_ranges_n;

#define UNICODE_BAD 0x80000000u /* flag: an invalid byte, value = byte */

/* Decode one code point at s[0..n) (n >= 1). Returns its byte length and
 * stores the code point; an invalid or truncated sequence yields length 1
 * and UNICODE_BAD | byte. Overlongs and surrogates count as invalid. */
size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp);
/* Encode cp (< 0x110000) into out (4 bytes room); returns the length. */
size_t utf8_put(uint32_t cp, unsigned char *out);

UnicodeCat unicode_cat(uint32_t cp);
int unicode_is_space(uint32_t cp);  /* White_Space property */
static inline int unicode_is_letter(uint32_t cp) { return unicode_cat(cp) == UCAT_L; }
static inline int unicode_is_number(uint32_t cp) { return unicode_cat(cp) == UCAT_N; }
static inline int unicode_is_punct(uint32_t cp) { return unicode_cat(cp) == UCAT_P; }
int unicode_in_ranges(uint32_t cp, const UnicodeRange *r, size_t n);

/* Canonical combining class of cp (0 for starters). */
int unicode_ccc(uint32_t cp);
/* NFC (Unicode normalization form C) of UTF-8 s[0..n): a malloc'd copy in
 * *out (length *outn, NUL-terminated), or NULL with *out untouched when s is
 * already NFC by a quick check; -1 on allocation failure. Invalid bytes
 * pass through unchanged and act as starters. */
int unicode_nfc(const char *s, size_t n, char **out, size_t *outn);

/* GPT-2 byte-level map: byte -> printable code point, and back (-1 when cp
 * is not the image of a byte). */
uint32_t unicode_byte_to_cp(uint8_t b);
int unicode_cp_to_byte(uint32_t cp);

#endif
