/*
 * protocol.c - the bounded msgpack pre-validator and small helpers shared
 * by inferd and libinfer. See protocol.h for the wire format.
 */
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "protocol.h"

/* Scanner state: the bytes and how far we got. */
typedef struct Scan {
	const uint8_t *p;   /* next byte */
	const uint8_t *end; /* one past the last byte */
	char *err;          /* message buffer */
	size_t errlen;      /* its capacity */
} Scan;

static int scan_fail(Scan *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (s->errlen)
		vsnprintf(s->err, s->errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static size_t scan_left(const Scan *s) { return (size_t)(s->end - s->p); }

/* Read an n-byte big-endian unsigned integer (n <= 4) after checking that
 * it is there. */
static int scan_uint(Scan *s, int n, uint32_t *out)
{
	uint32_t v = 0;
	if (scan_left(s) < (size_t)n)
		return scan_fail(s, "truncated msgpack: length field cut off");
	for (int i = 0; i < n; i++)
		v = v << 8 | *s->p++;
	*out = v;
	return 0;
}

/* Skip n payload bytes that must all be present. */
static int scan_skip(Scan *s, uint64_t n)
{
	if (n > scan_left(s))
		return scan_fail(s, "msgpack declares %llu bytes, %zu remain",
				 (unsigned long long)n, scan_left(s));
	s->p += n;
	return 0;
}

static int scan_obj(Scan *s, int depth, int max_depth);

/* A container of count elements (maps pass 2 * pairs): every element takes
 * at least one byte, so a count above the bytes left is a lie we catch
 * before anyone allocates for it. */
static int scan_items(Scan *s, uint64_t count, int depth, int max_depth)
{
	if (depth + 1 > max_depth)
		return scan_fail(s, "msgpack nesting deeper than %d", max_depth);
	if (count > scan_left(s))
		return scan_fail(s, "msgpack declares %llu elements, %zu bytes "
				    "remain", (unsigned long long)count,
				 scan_left(s));
	for (uint64_t i = 0; i < count; i++)
		if (scan_obj(s, depth + 1, max_depth) < 0)
			return -1;
	return 0;
}

static int scan_obj(Scan *s, int depth, int max_depth)
{
	uint32_t n = 0;
	if (scan_left(s) < 1)
		return scan_fail(s, "truncated msgpack");
	uint8_t b = *s->p++;
	if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
		return 0; /* fixint, nil, bool */
	if ((b & 0xf0) == 0x80)
		return scan_items(s, 2u * (b & 0x0f), depth, max_depth);
	if ((b & 0xf0) == 0x90)
		return scan_items(s, b & 0x0f, depth, max_depth);
	if ((b & 0xe0) == 0xa0)
		return scan_skip(s, b & 0x1f);
	switch (b) {
	case 0xc1:
		return scan_fail(s, "invalid msgpack byte 0xc1");
	case 0xc4: case 0xd9: /* bin8, str8 */
		return scan_uint(s, 1, &n) < 0 ? -1 : scan_skip(s, n);
	case 0xc5: case 0xda: /* bin16, str16 */
		return scan_uint(s, 2, &n) < 0 ? -1 : scan_skip(s, n);
	case 0xc6: case 0xdb: /* bin32, str32 */
		return scan_uint(s, 4, &n) < 0 ? -1 : scan_skip(s, n);
	case 0xc7: /* ext8: length, type, data */
		return scan_uint(s, 1, &n) < 0 ? -1 : scan_skip(s, 1ull + n);
	case 0xc8:
		return scan_uint(s, 2, &n) < 0 ? -1 : scan_skip(s, 1ull + n);
	case 0xc9:
		return scan_uint(s, 4, &n) < 0 ? -1 : scan_skip(s, 1ull + n);
	case 0xca: return scan_skip(s, 4);   /* float32 */
	case 0xcb: return scan_skip(s, 8);   /* float64 */
	case 0xcc: case 0xd0: return scan_skip(s, 1);
	case 0xcd: case 0xd1: return scan_skip(s, 2);
	case 0xce: case 0xd2: return scan_skip(s, 4);
	case 0xcf: case 0xd3: return scan_skip(s, 8);
	case 0xd4: return scan_skip(s, 2);   /* fixext1: type + 1 */
	case 0xd5: return scan_skip(s, 3);
	case 0xd6: return scan_skip(s, 5);
	case 0xd7: return scan_skip(s, 9);
	case 0xd8: return scan_skip(s, 17);
	case 0xdc: /* array16 */
		return scan_uint(s, 2, &n) < 0 ? -1 : scan_items(s, n, depth, max_depth);
	case 0xdd: /* array32: the msgpack-c #1013 case */
		return scan_uint(s, 4, &n) < 0 ? -1 : scan_items(s, n, depth, max_depth);
	case 0xde: /* map16 */
		return scan_uint(s, 2, &n) < 0 ? -1 :
		       scan_items(s, 2ull * n, depth, max_depth);
	case 0xdf: /* map32 */
		return scan_uint(s, 4, &n) < 0 ? -1 :
		       scan_items(s, 2ull * n, depth, max_depth);
	}
	return scan_fail(s, "invalid msgpack byte 0x%02x", b);
}

int proto_validate(const uint8_t *buf, size_t len, int max_depth, char *err,
		   size_t errlen)
{
	Scan s = { buf, buf + len, err, errlen };
	if (len == 0)
		return scan_fail(&s, "empty frame");
	uint8_t b = buf[0];
	if (!((b & 0xf0) == 0x80 || b == 0xde || b == 0xdf))
		return scan_fail(&s, "frame is not a msgpack map (first byte "
				     "0x%02x)", b);
	if (scan_obj(&s, 0, max_depth) < 0)
		return -1;
	if (s.p != s.end)
		return scan_fail(&s, "%zu bytes after the msgpack map",
				 scan_left(&s));
	return 0;
}

int proto_default_socket(char *out, size_t cap)
{
	const char *rt = getenv("XDG_RUNTIME_DIR");
	int n;
	if (rt && *rt == '/')
		n = snprintf(out, cap, "%s/inferd.sock", rt);
	else
		n = snprintf(out, cap, "/tmp/inferd-%u/inferd.sock",
			     (unsigned)getuid());
	return n < 0 || (size_t)n >= cap ? -1 : 0;
}

const msgpack_object *proto_field(const msgpack_object *map, const char *key)
{
	size_t kl = strlen(key);
	if (map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;
		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl &&
		    memcmp(k->via.str.ptr, key, kl) == 0)
			return &map->via.map.ptr[i].val;
	}
	return NULL;
}
