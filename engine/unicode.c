/* unicode.c - see unicode.h. */
#include "unicode.h"

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

/* ASCII is by far the most common input: answer it from a small table
 * filled on first use from the ranges. */
static uint8_t ascii_cat[128];
static int ascii_ready;

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
	if (cp < 128) {
		/* Benign race: every thread writes the same values. */
		if (!__atomic_load_n(&ascii_ready, __ATOMIC_ACQUIRE)) {
			for (uint32_t i = 0; i < 128; i++)
				ascii_cat[i] = (uint8_t)cat_search(i);
			__atomic_store_n(&ascii_ready, 1, __ATOMIC_RELEASE);
		}
		return (UnicodeCat)ascii_cat[cp];
	}
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
