/* unicode.c - see unicode.h. */
#include "unicode.h"

#include <stdint.h>
#include <stdlib.h>

size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
	unsigned c = s[0];
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	size_t len;
	uint32_t v, min;
	if (c >= 0xC2 && c <= 0xDF) {
		len = 2; v = c & 0x1F; min = 0x80;
	} else if (c >= 0xE0 && c <= 0xEF) {
		len = 3; v = c & 0x0F; min = 0x800;
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4; v = c & 0x07; min = 0x10000;
	} else {
		*cp = UNICODE_BAD | c;
		return 1;
	}
	if (n < len) {
		*cp = UNICODE_BAD | c;
		return 1;
	}
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80) {
			*cp = UNICODE_BAD | c;
			return 1;
		}
		v = (v << 6) | (s[i] & 0x3F);
	}
	if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
		*cp = UNICODE_BAD | c;
		return 1;
	}
	*cp = v;
	return len;
}

size_t utf8_put(uint32_t cp, unsigned char *o)
{
	if (cp < 0x80) {
		o[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (unsigned char)(0xC0 | (cp >> 6));
		o[1] = (unsigned char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (unsigned char)(0xE0 | (cp >> 12));
		o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (unsigned char)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (unsigned char)(0xF0 | (cp >> 18));
	o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
	o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
	o[3] = (unsigned char)(0x80 | (cp & 0x3F));
	return 4;
}

static UnicodeCat cat_search(uint32_t cp)
{
	size_t lo = 0, hi = unicode_cat_nranges;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (unicode_cat_ranges[mid].lo <= cp)
			lo = mid;
		else
			hi = mid;
	}
	return (UnicodeCat)unicode_cat_ranges[lo].cat;
}

UnicodeCat unicode_cat(uint32_t cp)
{
	if (cp & UNICODE_BAD)
		return UCAT_C;
	if (cp < 128)
		return (UnicodeCat)unicode_ascii_cat[cp];
	if (cp > 0x10FFFF)
		return UCAT_C;
	return cat_search(cp);
}

int unicode_in_ranges(uint32_t cp, const UnicodeRange *r, size_t n)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (cp < r[mid].lo)
			hi = mid;
		else if (cp > r[mid].hi)
			lo = mid + 1;
		else
			return 1;
	}
	return 0;
}

int unicode_is_space(uint32_t cp)
{
	if (cp < 128)
		return cp == ' ' || (cp >= 9 && cp <= 13);
	return unicode_in_ranges(cp, unicode_ws_ranges, unicode_ws_ranges_n);
}

/* GPT-2 maps the printable bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) to
 * themselves and the other 68 bytes, in order, to U+0100 onward, so every
 * byte has a visible, non-space code point. */
static int byte_printable(unsigned b)
{
	return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) ||
	       (b >= 0xAE);
}

uint32_t unicode_byte_to_cp(uint8_t b)
{
	if (byte_printable(b))
		return b;
	unsigned k = 0;
	for (unsigned i = 0; i < b; i++)
		k += !byte_printable(i);
	return 0x100 + k;
}

int unicode_cp_to_byte(uint32_t cp)
{
	if (cp < 0x100)
		return byte_printable(cp) ? (int)cp : -1;
	if (cp >= 0x100 + 68)
		return -1;
	unsigned k = cp - 0x100;
	for (unsigned b = 0; b < 256; b++)
		if (!byte_printable(b) && k-- == 0)
			return (int)b;
	return -1;
}

/* ---- NFC (UAX #15): decompose, order marks, compose ------------------- */

int unicode_ccc(uint32_t cp)
{
	if (cp < 0x300 || cp > 0x10FFFF)
		return 0;
	size_t lo = 0, hi = unicode_ccc_ranges_n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const UnicodeCccRange *r = &unicode_ccc_ranges[mid];
		if (cp < r->lo)
			hi = mid;
		else if (cp > r->hi)
			lo = mid + 1;
		else
			return r->ccc;
	}
	return 0;
}

static const UnicodeDecomp *decomp_find(uint32_t cp)
{
	if (cp < 0xC0 || cp > 0x10FFFF)
		return NULL;
	size_t lo = 0, hi = unicode_decomp_n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (unicode_decomp[mid].cp < cp)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < unicode_decomp_n && unicode_decomp[lo].cp == cp
		? &unicode_decomp[lo] : NULL;
}

/* Hangul syllables are composed algorithmically. */
#define H_SBASE 0xAC00u
#define H_LBASE 0x1100u
#define H_VBASE 0x1161u
#define H_TBASE 0x11A7u
#define H_LCOUNT 19u
#define H_VCOUNT 21u
#define H_TCOUNT 28u
#define H_NCOUNT (H_VCOUNT * H_TCOUNT)
#define H_SCOUNT (H_LCOUNT * H_NCOUNT)

static uint32_t compose(uint32_t a, uint32_t b)
{
	if (a >= H_LBASE && a < H_LBASE + H_LCOUNT && b >= H_VBASE &&
	    b < H_VBASE + H_VCOUNT)
		return H_SBASE + ((a - H_LBASE) * H_VCOUNT + (b - H_VBASE)) *
				 H_TCOUNT;
	if (a >= H_SBASE && a < H_SBASE + H_SCOUNT &&
	    (a - H_SBASE) % H_TCOUNT == 0 && b > H_TBASE &&
	    b < H_TBASE + H_TCOUNT)
		return a + (b - H_TBASE);
	size_t lo = 0, hi = unicode_comp_n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const UnicodeComp *c = &unicode_comp[mid];
		if (c->a < a || (c->a == a && c->b < b))
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < unicode_comp_n && unicode_comp[lo].a == a &&
	    unicode_comp[lo].b == b)
		return unicode_comp[lo].c;
	return 0;
}

/* Full canonical decomposition of cp appended at buf[*n] (room checked by
 * the caller: at most 4 code points per input code point). */
static void decompose(uint32_t cp, uint32_t *buf, size_t *n, int depth)
{
	if (cp >= H_SBASE && cp < H_SBASE + H_SCOUNT) {
		uint32_t s = cp - H_SBASE;
		buf[(*n)++] = H_LBASE + s / H_NCOUNT;
		buf[(*n)++] = H_VBASE + s % H_NCOUNT / H_TCOUNT;
		if (s % H_TCOUNT)
			buf[(*n)++] = H_TBASE + s % H_TCOUNT;
		return;
	}
	const UnicodeDecomp *d = depth < 4 ? decomp_find(cp) : NULL;
	if (!d) {
		buf[(*n)++] = cp;
		return;
	}
	decompose(d->a, buf, n, depth + 1);
	if (d->b)
		decompose(d->b, buf, n, depth + 1);
}

int unicode_nfc(const char *s, size_t n, char **out, size_t *outn)
{
	const unsigned char *u = (const unsigned char *)s;
	/* quick check: below U+0300 nothing combines or decomposes into
	 * something that recomposes differently, except Latin-1 letters
	 * that stay as they are under NFC anyway */
	size_t i = 0;
	while (i < n && u[i] < 0xCC)
		i++;
	if (i == n) {
		*out = NULL;
		return 0;
	}
	if (n > SIZE_MAX / 16)
		return -1;
	/* a code point decomposes into at most 4 (generator-checked) */
	uint32_t *cp = malloc((4 * n + 1) * sizeof *cp);
	if (!cp)
		return -1;
	size_t m = 0;
	for (i = 0; i < n;) {
		uint32_t c;
		i += utf8_next(u + i, n - i, &c);
		decompose(c, cp, &m, 0);
	}
	/* canonical order: stable insertion sort of each run of marks */
	for (size_t k = 1; k < m; k++) {
		int cc = unicode_ccc(cp[k]);
		if (!cc)
			continue;
		uint32_t c = cp[k];
		size_t j = k;
		while (j > 0 && unicode_ccc(cp[j - 1]) > cc) {
			cp[j] = cp[j - 1];
			j--;
		}
		cp[j] = c;
	}
	/* compose */
	size_t w = 0;
	long sp = -1;   /* index of the last starter in cp[0..w) */
	int lastcc = 0; /* class of the last code point kept after it */
	for (size_t k = 0; k < m; k++) {
		uint32_t c = cp[k];
		int cc = unicode_ccc(c);
		if (sp >= 0) {
			int adjacent = (size_t)sp == w - 1;
			if (adjacent || (lastcc != 0 && lastcc < cc)) {
				uint32_t x = compose(cp[sp], c);
				if (x) {
					cp[sp] = x;
					continue;
				}
			}
		}
		if (cc == 0)
			sp = (long)w;
		lastcc = cc;
		cp[w++] = c;
	}
	unsigned char *o = malloc(4 * w + 1);
	if (!o) {
		free(cp);
		return -1;
	}
	size_t on = 0;
	for (size_t k = 0; k < w; k++) {
		if (cp[k] & UNICODE_BAD)
			o[on++] = (unsigned char)(cp[k] & 0xFF);
		else
			on += utf8_put(cp[k], o + on);
	}
	o[on] = 0;
	free(cp);
	*out = (char *)o;
	*outn = on;
	return 0;
}
