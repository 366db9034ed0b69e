/*
 * json.c - recursive-descent JSON reader into an arena. See json.h.
 */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#define ARENA_CHUNK (256u * 1024u) /* default arena block size */

typedef struct chunk {
	struct chunk *next; /* older chunk */
	size_t used, cap;   /* bytes used / available in data */
	_Alignas(16) unsigned char data[];
} chunk;

struct json_doc {
	chunk *arena;     /* newest chunk first */
	json_value *root; /* top-level value */
};

typedef struct {
	const char *p, *end, *start; /* cursor, end, beginning (for offsets) */
	json_doc *doc;
	char *err;
	size_t errlen;
	int failed; /* set once; the first error wins */
} parser;

static void *arena_alloc(json_doc *d, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (!d->arena || d->arena->cap - d->arena->used < n) {
		size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
		chunk *c = malloc(sizeof(chunk) + cap);
		if (!c)
			return NULL;
		c->next = d->arena;
		c->used = 0;
		c->cap = cap;
		d->arena = c;
	}
	void *r = d->arena->data + d->arena->used;
	d->arena->used += n;
	return r;
}

static void fail(parser *ps, const char *fmt, ...)
{
	if (ps->failed)
		return;
	ps->failed = 1;
	if (!ps->err || !ps->errlen)
		return;
	char msg[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	snprintf(ps->err, ps->errlen, "JSON error at byte %zu: %s",
		 (size_t)(ps->p - ps->start), msg);
}

static void skip_ws(parser *ps)
{
	while (ps->p < ps->end &&
	       (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' ||
		*ps->p == '\r'))
		ps->p++;
}

static json_value *new_value(parser *ps, json_type t)
{
	json_value *v = arena_alloc(ps->doc, sizeof *v);
	if (!v) {
		fail(ps, "out of memory");
		return NULL;
	}
	memset(v, 0, sizeof *v);
	v->type = t;
	return v;
}

static int hex4(const char *p, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return 0;
	}
	*out = v;
	return 1;
}

static size_t put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xC0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xE0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (char)(0xF0 | (cp >> 18));
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	o[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/* Length of a valid UTF-8 sequence starting at p (max n bytes), 0 if bad. */
static size_t utf8_valid_len(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];
	if (c < 0x80)
		return 1;
	size_t len;
	unsigned cp, min;
	if ((c & 0xE0) == 0xC0) {
		len = 2;
		cp = c & 0x1F;
		min = 0x80;
	} else if ((c & 0xF0) == 0xE0) {
		len = 3;
		cp = c & 0x0F;
		min = 0x800;
	} else if ((c & 0xF8) == 0xF0) {
		len = 4;
		cp = c & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3F);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return len;
}

static json_value *parse_string(parser *ps)
{
	/* ps->p is at the opening quote. First pass: find the end and an upper
	 * bound of the decoded size (escapes never grow the text). */
	const char *s = ps->p + 1, *q = s;
	while (q < ps->end && *q != '"') {
		if (*q == '\\')
			q++;
		q++;
	}
	if (q >= ps->end) {
		fail(ps, "unterminated string");
		return NULL;
	}
	json_value *v = new_value(ps, JSON_STRING);
	if (!v)
		return NULL;
	char *out = arena_alloc(ps->doc, (size_t)(q - s) + 1);
	if (!out) {
		fail(ps, "out of memory");
		return NULL;
	}
	size_t o = 0;
	const char *p = s;
	while (p < q) {
		unsigned char c = (unsigned char)*p;
		if (c < 0x20) {
			ps->p = p;
			fail(ps, "control character in string");
			return NULL;
		}
		if (c != '\\') {
			size_t l = utf8_valid_len((const unsigned char *)p,
						  (size_t)(q - p));
			if (!l) {
				ps->p = p;
				fail(ps, "invalid UTF-8 in string");
				return NULL;
			}
			memcpy(out + o, p, l);
			o += l;
			p += l;
			continue;
		}
		p++;
		char e = *p++;
		switch (e) {
		case '"': out[o++] = '"'; break;
		case '\\': out[o++] = '\\'; break;
		case '/': out[o++] = '/'; break;
		case 'b': out[o++] = '\b'; break;
		case 'f': out[o++] = '\f'; break;
		case 'n': out[o++] = '\n'; break;
		case 'r': out[o++] = '\r'; break;
		case 't': out[o++] = '\t'; break;
		case 'u': {
			unsigned cp;
			if (q - p < 4 || !hex4(p, &cp)) {
				ps->p = p;
				fail(ps, "bad \\u escape");
				return NULL;
			}
			p += 4;
			if (cp >= 0xD800 && cp <= 0xDBFF) {
				unsigned lo;
				if (q - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
				    hex4(p + 2, &lo) && lo >= 0xDC00 &&
				    lo <= 0xDFFF) {
					p += 6;
					cp = 0x10000 + ((cp - 0xD800) << 10) +
					     (lo - 0xDC00);
				} else {
					cp = 0xFFFD; /* lone high surrogate */
				}
			} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
				cp = 0xFFFD; /* lone low surrogate */
			}
			/* \uXXXX is 6 source bytes, at most 4 out; a pair is
			 * 12 source bytes for 4 out: the bound holds. */
			o += put_utf8(out + o, cp);
			break;
		}
		default:
			ps->p = p - 1;
			fail(ps, "bad escape '\\%c'", e);
			return NULL;
		}
	}
	out[o] = 0;
	v->u.str.s = out;
	v->u.str.len = o;
	ps->p = q + 1;
	return v;
}

static json_value *parse_number(parser *ps)
{
	const char *p = ps->p, *b = p;
	if (p < ps->end && *p == '-')
		p++;
	if (p >= ps->end) {
		fail(ps, "bad number");
		return NULL;
	}
	if (*p == '0') {
		p++;
	} else if (*p >= '1' && *p <= '9') {
		while (p < ps->end && *p >= '0' && *p <= '9')
			p++;
	} else {
		fail(ps, "bad number");
		return NULL;
	}
	if (p < ps->end && *p == '.') {
		p++;
		if (p >= ps->end || *p < '0' || *p > '9') {
			fail(ps, "bad number");
			return NULL;
		}
		while (p < ps->end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < ps->end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < ps->end && (*p == '+' || *p == '-'))
			p++;
		if (p >= ps->end || *p < '0' || *p > '9') {
			fail(ps, "bad number");
			return NULL;
		}
		while (p < ps->end && *p >= '0' && *p <= '9')
			p++;
	}
	size_t n = (size_t)(p - b);
	char buf[64];
	char *tmp = n < sizeof buf ? buf : malloc(n + 1);
	if (!tmp) {
		fail(ps, "out of memory");
		return NULL;
	}
	memcpy(tmp, b, n);
	tmp[n] = 0;
	json_value *v = new_value(ps, JSON_NUMBER);
	if (v) {
		v->u.num = strtod(tmp, NULL); /* C locale: '.' decimal point */
	}
	if (tmp != buf)
		free(tmp);
	ps->p = p;
	return v;
}

static json_value *parse_value(parser *ps, int depth);

/* Growable temporary list of pointers, copied into the arena when done. */
typedef struct {
	json_value **v;
	size_t n, cap;
} plist;

static int plist_push(plist *l, json_value *x)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		json_value **nv = realloc(l->v, cap * sizeof *nv);
		if (!nv)
			return 0;
		l->v = nv;
		l->cap = cap;
	}
	l->v[l->n++] = x;
	return 1;
}

static json_value **plist_freeze(parser *ps, plist *l)
{
	json_value **r = arena_alloc(ps->doc, (l->n ? l->n : 1) * sizeof *r);
	if (!r) {
		fail(ps, "out of memory");
		return NULL;
	}
	if (l->n)
		memcpy(r, l->v, l->n * sizeof *r);
	return r;
}

static json_value *parse_array(parser *ps, int depth)
{
	json_value *v = new_value(ps, JSON_ARRAY);
	if (!v)
		return NULL;
	ps->p++; /* [ */
	plist items = {0};
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == ']') {
		ps->p++;
	} else {
		for (;;) {
			json_value *x = parse_value(ps, depth + 1);
			if (!x)
				goto bad;
			if (!plist_push(&items, x)) {
				fail(ps, "out of memory");
				goto bad;
			}
			skip_ws(ps);
			if (ps->p < ps->end && *ps->p == ',') {
				ps->p++;
				continue;
			}
			if (ps->p < ps->end && *ps->p == ']') {
				ps->p++;
				break;
			}
			fail(ps, "expected ',' or ']' in array");
			goto bad;
		}
	}
	v->u.arr.items = plist_freeze(ps, &items);
	v->u.arr.n = items.n;
	free(items.v);
	return v->u.arr.items ? v : NULL;
bad:
	free(items.v);
	return NULL;
}

static json_value *parse_object(parser *ps, int depth)
{
	json_value *v = new_value(ps, JSON_OBJECT);
	if (!v)
		return NULL;
	ps->p++; /* { */
	plist keys = {0}, vals = {0};
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == '}') {
		ps->p++;
	} else {
		for (;;) {
			skip_ws(ps);
			if (ps->p >= ps->end || *ps->p != '"') {
				fail(ps, "expected string key in object");
				goto bad;
			}
			json_value *k = parse_string(ps);
			if (!k)
				goto bad;
			skip_ws(ps);
			if (ps->p >= ps->end || *ps->p != ':') {
				fail(ps, "expected ':' after object key");
				goto bad;
			}
			ps->p++;
			json_value *x = parse_value(ps, depth + 1);
			if (!x)
				goto bad;
			if (!plist_push(&keys, k) || !plist_push(&vals, x)) {
				fail(ps, "out of memory");
				goto bad;
			}
			skip_ws(ps);
			if (ps->p < ps->end && *ps->p == ',') {
				ps->p++;
				continue;
			}
			if (ps->p < ps->end && *ps->p == '}') {
				ps->p++;
				break;
			}
			fail(ps, "expected ',' or '}' in object");
			goto bad;
		}
	}
	v->u.obj.keys = plist_freeze(ps, &keys);
	v->u.obj.vals = plist_freeze(ps, &vals);
	v->u.obj.n = keys.n;
	free(keys.v);
	free(vals.v);
	return (v->u.obj.keys && v->u.obj.vals) ? v : NULL;
bad:
	free(keys.v);
	free(vals.v);
	return NULL;
}

static int match_lit(parser *ps, const char *lit)
{
	size_t n = strlen(lit);
	if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, lit, n) != 0)
		return 0;
	ps->p += n;
	return 1;
}

static json_value *parse_value(parser *ps, int depth)
{
	if (depth > JSON_MAX_DEPTH) {
		fail(ps, "nesting deeper than %d", JSON_MAX_DEPTH);
		return NULL;
	}
	skip_ws(ps);
	if (ps->p >= ps->end) {
		fail(ps, "unexpected end of input");
		return NULL;
	}
	switch (*ps->p) {
	case '{': return parse_object(ps, depth);
	case '[': return parse_array(ps, depth);
	case '"': return parse_string(ps);
	case 't':
		if (match_lit(ps, "true"))
			return new_value(ps, JSON_TRUE);
		break;
	case 'f':
		if (match_lit(ps, "false"))
			return new_value(ps, JSON_FALSE);
		break;
	case 'n':
		if (match_lit(ps, "null"))
			return new_value(ps, JSON_NULL);
		break;
	default:
		if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
			return parse_number(ps);
	}
	fail(ps, "unexpected character '%c'", *ps->p);
	return NULL;
}

json_doc *json_parse(const char *text, size_t len, char *err, size_t errlen)
{
	if (err && errlen)
		err[0] = 0;
	json_doc *d = calloc(1, sizeof *d);
	if (!d) {
		if (err && errlen)
			snprintf(err, errlen, "JSON error: out of memory");
		return NULL;
	}
	parser ps = {text, text + len, text, d, err, errlen, 0};
	/* Skip a UTF-8 byte order mark: some tools write one. */
	if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
		ps.p += 3;
	d->root = parse_value(&ps, 0);
	if (d->root) {
		skip_ws(&ps);
		if (ps.p != ps.end)
			fail(&ps, "trailing characters after the value");
	}
	if (ps.failed || !d->root) {
		if (!ps.failed)
			fail(&ps, "parse failed");
		json_free(d);
		return NULL;
	}
	return d;
}

json_doc *json_parse_file(const char *path, size_t max_bytes, char *err,
			  size_t errlen)
{
	if (!max_bytes)
		max_bytes = 256u << 20;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		close(fd);
		return NULL;
	}
	if ((uint64_t)st.st_size > max_bytes) {
		snprintf(err, errlen, "%s: %lld bytes, more than the %zu allowed",
			 path, (long long)st.st_size, max_bytes);
		close(fd);
		return NULL;
	}
	size_t n = (size_t)st.st_size;
	char *buf = malloc(n ? n : 1);
	if (!buf) {
		snprintf(err, errlen, "%s: out of memory", path);
		close(fd);
		return NULL;
	}
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			snprintf(err, errlen, "%s: read failed: %s", path,
				 r < 0 ? strerror(errno) : "short read");
			free(buf);
			close(fd);
			return NULL;
		}
		got += (size_t)r;
	}
	close(fd);
	char inner[256];
	json_doc *d = json_parse(buf, n, inner, sizeof inner);
	if (!d)
		snprintf(err, errlen, "%s: %s", path, inner);
	free(buf);
	return d;
}

void json_free(json_doc *doc)
{
	if (!doc)
		return;
	chunk *c = doc->arena;
	while (c) {
		chunk *n = c->next;
		free(c);
		c = n;
	}
	free(doc);
}

const json_value *json_root(const json_doc *doc)
{
	return doc ? doc->root : NULL;
}

const json_value *json_get(const json_value *v, const char *key)
{
	if (!v || v->type != JSON_OBJECT)
		return NULL;
	size_t kl = strlen(key);
	for (size_t i = 0; i < v->u.obj.n; i++) {
		const json_value *k = v->u.obj.keys[i];
		if (k->u.str.len == kl && memcmp(k->u.str.s, key, kl) == 0)
			return v->u.obj.vals[i];
	}
	return NULL;
}

const json_value *json_at(const json_value *v, size_t i)
{
	if (!v || v->type != JSON_ARRAY || i >= v->u.arr.n)
		return NULL;
	return v->u.arr.items[i];
}

size_t json_count(const json_value *v)
{
	if (!v)
		return 0;
	if (v->type == JSON_ARRAY)
		return v->u.arr.n;
	if (v->type == JSON_OBJECT)
		return v->u.obj.n;
	return 0;
}

double json_num(const json_value *v, double def)
{
	return (v && v->type == JSON_NUMBER) ? v->u.num : def;
}

int json_bool(const json_value *v, int def)
{
	if (!v)
		return def;
	if (v->type == JSON_TRUE)
		return 1;
	if (v->type == JSON_FALSE)
		return 0;
	return def;
}

const char *json_str(const json_value *v, const char *def)
{
	return (v && v->type == JSON_STRING) ? v->u.str.s : def;
}

int json_int(const json_value *v, int64_t lo, int64_t hi, int64_t *out)
{
	if (!v || v->type != JSON_NUMBER)
		return 0;
	double d = v->u.num;
	if (!(d >= (double)lo && d <= (double)hi) || d != floor(d))
		return 0;
	if (fabs(d) > 9007199254740992.0) /* 2^53: beyond exact doubles */
		return 0;
	*out = (int64_t)d;
	return 1;
}

int json_present(const json_value *v)
{
	return v && v->type != JSON_NULL;
}
