/*
 * gguf.c - GGUF v2/v3 reader. See gguf.h for the format and what is
 * validated. The file is mapped read-only; the parsed index (keys, string
 * array offsets, tensor infos, sorted name indexes) lives in malloc'd arrays whose
 * sizes are bounded by the file size.
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mapguard.h"

typedef struct gguf_kv {
	gguf_str key;       /* into the mapping */
	gguf_type type;     /* value type */
	const uint8_t *val; /* scalar bytes, string, or first array element */
	gguf_type arr_type; /* arrays: element type */
	uint64_t arr_n;     /* arrays: element count */
	gguf_str *strs;     /* string arrays: index of arr_n strings */
} gguf_kv;

typedef struct gguf_tinfo {
	char *name;         /* NUL-terminated copy (in g->names) */
	uint32_t n_dims;    /* 1..GGUF_MAX_DIMS */
	int64_t ne[GGUF_MAX_DIMS]; /* dims, ne[0] innermost; unused are 1 */
	uint32_t ggml_type; /* id in the file */
	dtype type;         /* our element type */
	uint64_t offset;    /* from the data section start */
	uint64_t nbytes;    /* bytes of data */
	int64_t rows;       /* ne[1]*ne[2]*ne[3] */
} gguf_tinfo;

/* A name and its index, sorted for binary search: O(n log n) with no
 * worst case an attacker can force (unlike an unkeyed hash table). */
typedef struct name_ref {
	const char *s; /* bytes (not NUL-terminated) */
	uint64_t len;  /* length */
	int64_t i;     /* kv or tensor index */
} name_ref;

struct gguf_file {
	const uint8_t *map; /* whole file, PROT_READ */
	size_t size;        /* its length */
	uint32_t version;   /* 2 or 3 */
	uint64_t alignment; /* general.alignment or 32 */
	uint64_t data_off;  /* start of the data section */
	int64_t n_kv;       /* metadata entries */
	gguf_kv *kv;        /* n_kv */
	int64_t n_t;        /* tensors */
	gguf_tinfo *t;      /* n_t */
	char *names;        /* NUL-terminated tensor names, back to back */
	name_ref *kv_sorted; /* n_kv keys in byte order, for lookup */
	name_ref *t_sorted;  /* n_t tensor names likewise */
};

/* ---- errors and the cursor ---- */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	(void)n;
}

typedef struct cursor {
	const uint8_t *p; /* mapping */
	size_t size;      /* its length */
	size_t pos;       /* next byte to read */
	char *err;        /* caller's message buffer */
	size_t errlen;
	const char *what; /* what is being read, for messages */
} cursor;

static size_t left(const cursor *c)
{
	return c->size - c->pos;
}

static int need(cursor *c, uint64_t n)
{
	if (n > left(c)) {
		seterr(c->err, c->errlen,
		       "gguf: %s: needs %llu bytes at offset %zu, only %zu left "
		       "(truncated or corrupt)",
		       c->what, (unsigned long long)n, c->pos, left(c));
		return 0;
	}
	return 1;
}

static int rd_u32(cursor *c, uint32_t *v)
{
	if (!need(c, 4))
		return 0;
	memcpy(v, c->p + c->pos, 4);
	c->pos += 4;
	return 1;
}

static int rd_u64(cursor *c, uint64_t *v)
{
	if (!need(c, 8))
		return 0;
	memcpy(v, c->p + c->pos, 8);
	c->pos += 8;
	return 1;
}

/* A string whose length is at most maxlen (0 = only bounded by the file). */
static int rd_str(cursor *c, gguf_str *s, uint64_t maxlen, int no_nul)
{
	uint64_t n;
	if (!rd_u64(c, &n))
		return 0;
	if (maxlen && n > maxlen) {
		seterr(c->err, c->errlen,
		       "gguf: %s: string length %llu at offset %zu exceeds the "
		       "limit %llu",
		       c->what, (unsigned long long)n, c->pos - 8,
		       (unsigned long long)maxlen);
		return 0;
	}
	if (!need(c, n))
		return 0;
	s->s = (const char *)c->p + c->pos;
	s->len = n;
	if (no_nul && memchr(s->s, 0, n)) {
		seterr(c->err, c->errlen,
		       "gguf: %s: string at offset %zu contains a NUL byte",
		       c->what, c->pos);
		return 0;
	}
	c->pos += n;
	return 1;
}

/* Bytes of a scalar type, 0 for string/array/unknown. */
static size_t scalar_size(uint32_t t)
{
	switch (t) {
	case GGUF_T_UINT8:
	case GGUF_T_INT8:
	case GGUF_T_BOOL:
		return 1;
	case GGUF_T_UINT16:
	case GGUF_T_INT16:
		return 2;
	case GGUF_T_UINT32:
	case GGUF_T_INT32:
	case GGUF_T_FLOAT32:
		return 4;
	case GGUF_T_UINT64:
	case GGUF_T_INT64:
	case GGUF_T_FLOAT64:
		return 8;
	default:
		return 0;
	}
}

/* Smallest encoding of one value of type t: the count cap for arrays. */
static size_t min_size(uint32_t t)
{
	if (t == GGUF_T_STRING)
		return 8;
	if (t == GGUF_T_ARRAY)
		return 12;
	return scalar_size(t);
}

static int valid_type(uint32_t t)
{
	return t <= GGUF_T_FLOAT64;
}

/* Skip one value of type t (used for nested arrays and to validate). */
static int skip_value(cursor *c, uint32_t t, int depth)
{
	if (!valid_type(t)) {
		seterr(c->err, c->errlen,
		       "gguf: %s: unknown value type %u at offset %zu", c->what,
		       t, c->pos);
		return 0;
	}
	if (t == GGUF_T_STRING) {
		gguf_str s;
		return rd_str(c, &s, 0, 0);
	}
	if (t != GGUF_T_ARRAY)
		return need(c, scalar_size(t)) && (c->pos += scalar_size(t), 1);
	if (depth >= GGUF_MAX_NEST) {
		seterr(c->err, c->errlen,
		       "gguf: %s: arrays nested deeper than %d at offset %zu",
		       c->what, GGUF_MAX_NEST, c->pos);
		return 0;
	}
	uint32_t et;
	uint64_t n;
	if (!rd_u32(c, &et) || !rd_u64(c, &n))
		return 0;
	if (!valid_type(et)) {
		seterr(c->err, c->errlen,
		       "gguf: %s: unknown array element type %u", c->what, et);
		return 0;
	}
	if (n > left(c) / min_size(et)) {
		seterr(c->err, c->errlen,
		       "gguf: %s: array count %llu cannot fit in the %zu bytes "
		       "left",
		       c->what, (unsigned long long)n, left(c));
		return 0;
	}
	if (scalar_size(et)) {
		c->pos += (size_t)n * scalar_size(et); /* fits: checked above */
		return 1;
	}
	for (uint64_t i = 0; i < n; i++)
		if (!skip_value(c, et, depth + 1))
			return 0;
	return 1;
}

/* ---- sorted name indexes for unique keys / names ---- */

static int cmp_name(const char *a, uint64_t al, const char *b, uint64_t bl)
{
	int c = memcmp(a, b, al < bl ? al : bl);
	if (c)
		return c;
	return al < bl ? -1 : al > bl;
}

static int cmp_ref(const void *x, const void *y)
{
	const name_ref *a = x, *b = y;
	return cmp_name(a->s, a->len, b->s, b->len);
}

/* Sort refs; returns the index of a duplicated name or -1. */
static int64_t sort_refs(name_ref *r, int64_t n)
{
	qsort(r, (size_t)n, sizeof *r, cmp_ref);
	for (int64_t i = 1; i < n; i++)
		if (!cmp_ref(&r[i - 1], &r[i]))
			return r[i].i;
	return -1;
}

static int64_t find_ref(const name_ref *r, int64_t n, const char *s,
			size_t len)
{
	int64_t lo = 0, hi = n;
	while (lo < hi) {
		int64_t mid = lo + (hi - lo) / 2;
		int c = cmp_name(r[mid].s, r[mid].len, s, len);
		if (c == 0)
			return r[mid].i;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* ---- ggml types ---- */

static const struct {
	uint32_t id;      /* ggml type id */
	const char *name; /* llama.cpp's name */
	int dt;           /* our dtype, -1 when unsupported */
} ggml_types[] = {
	{0, "f32", DT_F32},     {1, "f16", DT_F16},     {2, "q4_0", DT_Q4_0},
	{3, "q4_1", DT_Q4_1},   {6, "q5_0", -1},        {7, "q5_1", -1},
	{8, "q8_0", DT_Q8_0},   {9, "q8_1", -1},        {10, "q2_k", -1},
	{11, "q3_k", -1},       {12, "q4_k", DT_Q4_K},  {13, "q5_k", DT_Q5_K},
	{14, "q6_k", DT_Q6_K},  {15, "q8_k", -1},       {16, "iq2_xxs", -1},
	{17, "iq2_xs", -1},     {18, "iq3_xxs", -1},    {19, "iq1_s", -1},
	{20, "iq4_nl", -1},     {21, "iq3_s", -1},      {22, "iq2_s", -1},
	{23, "iq4_xs", -1},     {24, "i8", -1},         {25, "i16", -1},
	{26, "i32", -1},        {27, "i64", -1},        {28, "f64", -1},
	{29, "iq1_m", -1},      {30, "bf16", DT_BF16},  {34, "tq1_0", -1},
	{35, "tq2_0", -1},      {39, "mxfp4", -1},
};

const char *gguf_ggml_type_name(uint32_t id)
{
	for (size_t i = 0; i < sizeof ggml_types / sizeof ggml_types[0]; i++)
		if (ggml_types[i].id == id)
			return ggml_types[i].name;
	return "?";
}

static int ggml_to_dtype(uint32_t id)
{
	for (size_t i = 0; i < sizeof ggml_types / sizeof ggml_types[0]; i++)
		if (ggml_types[i].id == id)
			return ggml_types[i].dt;
	return -1;
}

/* ---- open ---- */

void gguf_close(gguf_file *g)
{
	if (!g)
		return;
	if (g->kv)
		for (int64_t i = 0; i < g->n_kv; i++)
			free(g->kv[i].strs);
	free(g->kv);
	free(g->t);
	free(g->names);
	free(g->kv_sorted);
	free(g->t_sorted);
	if (g->map) {
		mapguard_remove(g->map);
		munmap((void *)g->map, g->size);
	}
	free(g);
}

static int read_kvs(gguf_file *g, cursor *c)
{
	char what[96];
	for (int64_t i = 0; i < g->n_kv; i++) {
		gguf_kv *kv = &g->kv[i];
		snprintf(what, sizeof what, "key %lld", (long long)i);
		c->what = what;
		uint32_t t;
		if (!rd_str(c, &kv->key, GGUF_MAX_KEY, 1))
			return 0;
		snprintf(what, sizeof what, "key \"%.*s\"",
			 (int)(kv->key.len > 60 ? 60 : kv->key.len),
			 kv->key.s);
		if (kv->key.len == 0) {
			seterr(c->err, c->errlen, "gguf: key %lld is empty",
			       (long long)i);
			return 0;
		}
		g->kv_sorted[i] = (name_ref){kv->key.s, kv->key.len, i};
		if (!rd_u32(c, &t))
			return 0;
		if (!valid_type(t)) {
			seterr(c->err, c->errlen,
			       "gguf: %s: unknown value type %u", what, t);
			return 0;
		}
		kv->type = (gguf_type)t;
		if (t != GGUF_T_ARRAY) {
			kv->val = c->p + c->pos;
			if (!skip_value(c, t, 0))
				return 0;
			continue;
		}
		uint32_t et;
		uint64_t n;
		if (!rd_u32(c, &et) || !rd_u64(c, &n))
			return 0;
		if (!valid_type(et)) {
			seterr(c->err, c->errlen,
			       "gguf: %s: unknown array element type %u", what,
			       et);
			return 0;
		}
		if (n > left(c) / min_size(et)) {
			seterr(c->err, c->errlen,
			       "gguf: %s: array count %llu cannot fit in the %zu "
			       "bytes left",
			       what, (unsigned long long)n, left(c));
			return 0;
		}
		kv->arr_type = (gguf_type)et;
		kv->arr_n = n;
		kv->val = c->p + c->pos;
		if (et == GGUF_T_STRING) {
			/* n <= left/8, so this cannot overflow size_t */
			kv->strs = malloc((n ? n : 1) * sizeof *kv->strs);
			if (!kv->strs) {
				seterr(c->err, c->errlen,
				       "gguf: %s: out of memory indexing %llu "
				       "strings",
				       what, (unsigned long long)n);
				return 0;
			}
			for (uint64_t j = 0; j < n; j++)
				if (!rd_str(c, &kv->strs[j], 0, 0))
					return 0;
		} else if (et == GGUF_T_ARRAY) {
			for (uint64_t j = 0; j < n; j++)
				if (!skip_value(c, et, 1))
					return 0;
		} else {
			c->pos += (size_t)n * scalar_size(et);
		}
	}
	return 1;
}

static int read_tinfos(gguf_file *g, cursor *c)
{
	char what[96];
	size_t names_len = 0;
	gguf_str *nm = malloc((g->n_t ? (size_t)g->n_t : 1) * sizeof *nm);
	if (!nm) {
		seterr(c->err, c->errlen, "gguf: out of memory");
		return 0;
	}
	for (int64_t i = 0; i < g->n_t; i++) {
		gguf_tinfo *ti = &g->t[i];
		snprintf(what, sizeof what, "tensor %lld", (long long)i);
		c->what = what;
		if (!rd_str(c, &nm[i], GGUF_MAX_NAME, 1))
			goto fail;
		if (nm[i].len == 0) {
			seterr(c->err, c->errlen,
			       "gguf: tensor %lld has an empty name",
			       (long long)i);
			goto fail;
		}
		names_len += nm[i].len + 1; /* <= file size: no overflow */
		snprintf(what, sizeof what, "tensor \"%.*s\"",
			 (int)nm[i].len, nm[i].s);
		if (!rd_u32(c, &ti->n_dims))
			goto fail;
		if (ti->n_dims < 1 || ti->n_dims > GGUF_MAX_DIMS) {
			seterr(c->err, c->errlen,
			       "gguf: %s: %u dimensions (1..%d allowed)", what,
			       ti->n_dims, GGUF_MAX_DIMS);
			goto fail;
		}
		int64_t total = 1, rows = 1;
		for (int d = 0; d < GGUF_MAX_DIMS; d++)
			ti->ne[d] = 1;
		for (uint32_t d = 0; d < ti->n_dims; d++) {
			uint64_t v;
			if (!rd_u64(c, &v))
				goto fail;
			if (v == 0 || v > (uint64_t)INT64_MAX) {
				seterr(c->err, c->errlen,
				       "gguf: %s: dimension %u is %llu", what,
				       d, (unsigned long long)v);
				goto fail;
			}
			ti->ne[d] = (int64_t)v;
			if (__builtin_mul_overflow(total, ti->ne[d], &total) ||
			    (d > 0 &&
			     __builtin_mul_overflow(rows, ti->ne[d], &rows))) {
				seterr(c->err, c->errlen,
				       "gguf: %s: element count overflows",
				       what);
				goto fail;
			}
		}
		ti->rows = rows;
		if (!rd_u32(c, &ti->ggml_type) || !rd_u64(c, &ti->offset))
			goto fail;
		int dt = ggml_to_dtype(ti->ggml_type);
		if (dt < 0) {
			seterr(c->err, c->errlen,
			       "gguf: %s: ggml type %u (%s) is not supported",
			       what, ti->ggml_type,
			       gguf_ggml_type_name(ti->ggml_type));
			goto fail;
		}
		ti->type = (dtype)dt;
		if (ti->ne[0] % dtype_block_elems(ti->type)) {
			seterr(c->err, c->errlen,
			       "gguf: %s: row of %lld elements is not a "
			       "multiple of the %s block (%d)",
			       what, (long long)ti->ne[0],
			       dtype_name(ti->type),
			       dtype_block_elems(ti->type));
			goto fail;
		}
		uint64_t rb = (uint64_t)(ti->ne[0] /
					 dtype_block_elems(ti->type));
		if (__builtin_mul_overflow(rb, dtype_block_bytes(ti->type),
					   &rb) ||
		    __builtin_mul_overflow(rb, (uint64_t)rows, &ti->nbytes)) {
			seterr(c->err, c->errlen,
			       "gguf: %s: byte size overflows", what);
			goto fail;
		}
	}
	g->names = malloc(names_len ? names_len : 1);
	if (!g->names) {
		seterr(c->err, c->errlen, "gguf: out of memory");
		goto fail;
	}
	char *p = g->names;
	for (int64_t i = 0; i < g->n_t; i++) {
		memcpy(p, nm[i].s, nm[i].len);
		p[nm[i].len] = 0;
		g->t[i].name = p;
		p += nm[i].len + 1;
		g->t_sorted[i] = (name_ref){g->t[i].name, nm[i].len, i};
	}
	free(nm);
	return 1;
fail:
	free(nm);
	return 0;
}

typedef struct span {
	uint64_t off, end; /* [off, end) inside the data section */
	int64_t i;         /* tensor index */
} span;

static int cmp_span(const void *a, const void *b)
{
	uint64_t x = ((const span *)a)->off, y = ((const span *)b)->off;
	return x < y ? -1 : x > y;
}

/* Offsets aligned, data inside the file, no overlap. */
static int check_data(gguf_file *g, char *err, size_t errlen)
{
	if (g->n_t == 0)
		return 1;
	if (g->data_off > g->size) {
		seterr(err, errlen,
		       "gguf: data section would start at %llu, past the end "
		       "of the %zu-byte file",
		       (unsigned long long)g->data_off, g->size);
		return 0;
	}
	uint64_t avail = g->size - g->data_off;
	for (int64_t i = 0; i < g->n_t; i++) {
		const gguf_tinfo *t = &g->t[i];
		if (t->offset % g->alignment) {
			seterr(err, errlen,
			       "gguf: tensor \"%s\": offset %llu is not a "
			       "multiple of the alignment %llu",
			       t->name, (unsigned long long)t->offset,
			       (unsigned long long)g->alignment);
			return 0;
		}
		if (t->offset > avail || t->nbytes > avail - t->offset) {
			seterr(err, errlen,
			       "gguf: tensor \"%s\": data [%llu, +%llu) lies "
			       "outside the %llu-byte data section",
			       t->name, (unsigned long long)t->offset,
			       (unsigned long long)t->nbytes,
			       (unsigned long long)avail);
			return 0;
		}
	}
	span *sp = malloc((size_t)g->n_t * sizeof *sp);
	if (!sp) {
		seterr(err, errlen, "gguf: out of memory");
		return 0;
	}
	for (int64_t i = 0; i < g->n_t; i++) {
		sp[i].off = g->t[i].offset;
		sp[i].end = g->t[i].offset + g->t[i].nbytes; /* checked above */
		sp[i].i = i;
	}
	qsort(sp, (size_t)g->n_t, sizeof *sp, cmp_span);
	for (int64_t i = 1; i < g->n_t; i++) {
		if (sp[i - 1].end > sp[i].off) {
			seterr(err, errlen,
			       "gguf: tensors \"%s\" and \"%s\" overlap",
			       g->t[sp[i - 1].i].name, g->t[sp[i].i].name);
			free(sp);
			return 0;
		}
	}
	free(sp);
	return 1;
}

gguf_file *gguf_open(const char *path, char *err, size_t errlen)
{
	gguf_file *g = calloc(1, sizeof *g);
	if (!g) {
		seterr(err, errlen, "gguf: out of memory");
		return NULL;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		seterr(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	struct stat st;
	if (fstat(fd, &st) != 0) {
		seterr(err, errlen, "%s: %s", path, strerror(errno));
		close(fd);
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		seterr(err, errlen, "%s: not a regular file", path);
		close(fd);
		goto fail;
	}
	if (st.st_size < 24) {
		seterr(err, errlen,
		       "%s: %lld bytes is too short for a GGUF header", path,
		       (long long)st.st_size);
		close(fd);
		goto fail;
	}
	g->size = (size_t)st.st_size;
	void *m = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (m == MAP_FAILED) {
		seterr(err, errlen, "%s: mmap: %s", path, strerror(errno));
		goto fail;
	}
	g->map = m;
	mapguard_add(m, g->size, path, &st, g); /* unguarded if full */

	cursor c = {g->map, g->size, 0, err, errlen, "header"};
	uint32_t magic;
	uint64_t nt, nkv;
	rd_u32(&c, &magic);
	rd_u32(&c, &g->version);
	if (magic != GGUF_MAGIC) {
		seterr(err, errlen, "%s: not a GGUF file (bad magic)", path);
		goto fail;
	}
	if (g->version == 0x02000000u || g->version == 0x03000000u) {
		seterr(err, errlen, "%s: big-endian GGUF is not supported",
		       path);
		goto fail;
	}
	if (g->version != 2 && g->version != 3) {
		seterr(err, errlen,
		       "%s: GGUF version %u is not supported (2 or 3)", path,
		       g->version);
		goto fail;
	}
	rd_u64(&c, &nt);
	rd_u64(&c, &nkv);
	/* A kv is at least 8 (key len) + 1 (key) + 4 (type) + 1 bytes; a
	 * tensor info at least 8 + 1 + 4 + 8 + 4 + 8. */
	if (nkv > left(&c) / 14 || nt > left(&c) / 33 ||
	    nkv * 14 + nt * 33 > left(&c)) {
		seterr(err, errlen,
		       "gguf: %llu keys and %llu tensors cannot fit in %zu "
		       "bytes",
		       (unsigned long long)nkv, (unsigned long long)nt,
		       left(&c));
		goto fail;
	}
	g->n_kv = (int64_t)nkv;
	g->n_t = (int64_t)nt;
	g->kv = calloc(nkv ? nkv : 1, sizeof *g->kv);
	g->t = calloc(nt ? nt : 1, sizeof *g->t);
	g->kv_sorted = malloc((nkv ? nkv : 1) * sizeof *g->kv_sorted);
	g->t_sorted = malloc((nt ? nt : 1) * sizeof *g->t_sorted);
	if (!g->kv || !g->t || !g->kv_sorted || !g->t_sorted) {
		seterr(err, errlen, "gguf: out of memory");
		goto fail;
	}
	if (!read_kvs(g, &c) || !read_tinfos(g, &c))
		goto fail;
	int64_t dup = sort_refs(g->kv_sorted, g->n_kv);
	if (dup >= 0) {
		gguf_str k = g->kv[dup].key;
		seterr(err, errlen, "gguf: duplicate key \"%.*s\"",
		       (int)(k.len > 60 ? 60 : k.len), k.s);
		goto fail;
	}
	dup = sort_refs(g->t_sorted, g->n_t);
	if (dup >= 0) {
		seterr(err, errlen, "gguf: duplicate tensor name \"%s\"",
		       g->t[dup].name);
		goto fail;
	}

	g->alignment = GGUF_DEFAULT_ALIGNMENT;
	int64_t ai = gguf_find(g, "general.alignment");
	if (ai >= 0) {
		uint32_t a;
		if (g->kv[ai].type != GGUF_T_UINT32) {
			seterr(err, errlen,
			       "gguf: general.alignment must be a uint32");
			goto fail;
		}
		memcpy(&a, g->kv[ai].val, 4);
		if (a == 0 || (a & (a - 1))) {
			seterr(err, errlen,
			       "gguf: general.alignment %u is not a power of two",
			       a);
			goto fail;
		}
		g->alignment = a;
	}
	/* pos <= size < 2^63 and alignment <= 2^31: no overflow */
	g->data_off = ((uint64_t)c.pos + g->alignment - 1) &
		      ~(g->alignment - 1);
	if (!check_data(g, err, errlen))
		goto fail;
	return g;
fail:
	gguf_close(g);
	return NULL;
}

/* ---- accessors ---- */

uint32_t gguf_version(const gguf_file *g)
{
	return g->version;
}

uint64_t gguf_alignment(const gguf_file *g)
{
	return g->alignment;
}

uint64_t gguf_data_offset(const gguf_file *g)
{
	return g->data_off;
}

uint64_t gguf_file_size(const gguf_file *g)
{
	return g->size;
}

int64_t gguf_find(const gguf_file *g, const char *key)
{
	return find_ref(g->kv_sorted, g->n_kv, key, strlen(key));
}

gguf_type gguf_kv_type(const gguf_file *g, int64_t i)
{
	return i >= 0 && i < g->n_kv ? g->kv[i].type : (gguf_type)-1;
}

gguf_str gguf_kv_key(const gguf_file *g, int64_t i)
{
	gguf_str none = {NULL, 0};
	return i >= 0 && i < g->n_kv ? g->kv[i].key : none;
}

int64_t gguf_kv_count(const gguf_file *g)
{
	return g->n_kv;
}

/* Integer value at p of type t. Returns 1 for integer types. is_neg set
 * when a signed value is negative (then *s holds it). */
static int read_int(uint32_t t, const uint8_t *p, uint64_t *u, int64_t *s,
		    int *is_neg)
{
	*is_neg = 0;
	switch (t) {
	case GGUF_T_UINT8:
		*u = p[0];
		break;
	case GGUF_T_UINT16: {
		uint16_t v;
		memcpy(&v, p, 2);
		*u = v;
		break;
	}
	case GGUF_T_UINT32: {
		uint32_t v;
		memcpy(&v, p, 4);
		*u = v;
		break;
	}
	case GGUF_T_UINT64:
		memcpy(u, p, 8);
		break;
	case GGUF_T_INT8:
	case GGUF_T_INT16:
	case GGUF_T_INT32:
	case GGUF_T_INT64: {
		int64_t v;
		if (t == GGUF_T_INT8) {
			v = (int8_t)p[0];
		} else if (t == GGUF_T_INT16) {
			int16_t x;
			memcpy(&x, p, 2);
			v = x;
		} else if (t == GGUF_T_INT32) {
			int32_t x;
			memcpy(&x, p, 4);
			v = x;
		} else {
			memcpy(&v, p, 8);
		}
		*s = v;
		if (v < 0)
			*is_neg = 1;
		else
			*u = (uint64_t)v;
		break;
	}
	default:
		return 0;
	}
	return 1;
}

static int read_float(uint32_t t, const uint8_t *p, double *out)
{
	if (t == GGUF_T_FLOAT32) {
		float f;
		memcpy(&f, p, 4);
		*out = f;
		return 1;
	}
	if (t == GGUF_T_FLOAT64) {
		memcpy(out, p, 8);
		return 1;
	}
	uint64_t u;
	int64_t s;
	int neg;
	if (!read_int(t, p, &u, &s, &neg))
		return 0;
	*out = neg ? (double)s : (double)u;
	return 1;
}

static const gguf_kv *kv_by_key(const gguf_file *g, const char *key)
{
	int64_t i = gguf_find(g, key);
	return i < 0 ? NULL : &g->kv[i];
}

int gguf_get_u64(const gguf_file *g, const char *key, uint64_t *out)
{
	const gguf_kv *kv = kv_by_key(g, key);
	uint64_t u;
	int64_t s;
	int neg;
	if (!kv || !read_int(kv->type, kv->val, &u, &s, &neg) || neg)
		return 0;
	*out = u;
	return 1;
}

int gguf_get_i64(const gguf_file *g, const char *key, int64_t *out)
{
	const gguf_kv *kv = kv_by_key(g, key);
	uint64_t u;
	int64_t s;
	int neg;
	if (!kv || !read_int(kv->type, kv->val, &u, &s, &neg))
		return 0;
	if (!neg && u > (uint64_t)INT64_MAX)
		return 0;
	*out = neg ? s : (int64_t)u;
	return 1;
}

int gguf_get_f32(const gguf_file *g, const char *key, float *out)
{
	const gguf_kv *kv = kv_by_key(g, key);
	double d;
	if (!kv || !read_float(kv->type, kv->val, &d))
		return 0;
	*out = (float)d;
	return 1;
}

int gguf_get_bool(const gguf_file *g, const char *key, int *out)
{
	const gguf_kv *kv = kv_by_key(g, key);
	if (!kv || kv->type != GGUF_T_BOOL)
		return 0;
	*out = kv->val[0] != 0;
	return 1;
}

int gguf_get_str(const gguf_file *g, const char *key, gguf_str *out)
{
	const gguf_kv *kv = kv_by_key(g, key);
	if (!kv || kv->type != GGUF_T_STRING)
		return 0;
	uint64_t n;
	memcpy(&n, kv->val, 8);
	out->s = (const char *)kv->val + 8;
	out->len = n;
	return 1;
}

int gguf_get_arr(const gguf_file *g, const char *key, gguf_type *elem_type,
		 uint64_t *count)
{
	const gguf_kv *kv = kv_by_key(g, key);
	if (!kv || kv->type != GGUF_T_ARRAY)
		return 0;
	if (elem_type)
		*elem_type = kv->arr_type;
	if (count)
		*count = kv->arr_n;
	return 1;
}

int gguf_arr_str(const gguf_file *g, const char *key, uint64_t i,
		 gguf_str *out)
{
	const gguf_kv *kv = kv_by_key(g, key);
	if (!kv || kv->type != GGUF_T_ARRAY || kv->arr_type != GGUF_T_STRING ||
	    i >= kv->arr_n)
		return 0;
	*out = kv->strs[i];
	return 1;
}

static const uint8_t *arr_elem(const gguf_file *g, const char *key,
			       uint64_t i, uint32_t *t)
{
	const gguf_kv *kv = kv_by_key(g, key);
	if (!kv || kv->type != GGUF_T_ARRAY || i >= kv->arr_n ||
	    !scalar_size(kv->arr_type))
		return NULL;
	*t = kv->arr_type;
	return kv->val + i * scalar_size(kv->arr_type);
}

int gguf_arr_f32(const gguf_file *g, const char *key, uint64_t i, float *out)
{
	uint32_t t;
	const uint8_t *p = arr_elem(g, key, i, &t);
	double d;
	if (!p || t == GGUF_T_BOOL || !read_float(t, p, &d))
		return 0;
	*out = (float)d;
	return 1;
}

int gguf_arr_i64(const gguf_file *g, const char *key, uint64_t i,
		 int64_t *out)
{
	uint32_t t;
	const uint8_t *p = arr_elem(g, key, i, &t);
	uint64_t u;
	int64_t s;
	int neg;
	if (!p)
		return 0;
	if (t == GGUF_T_BOOL) {
		*out = p[0] != 0;
		return 1;
	}
	if (!read_int(t, p, &u, &s, &neg) || (!neg && u > (uint64_t)INT64_MAX))
		return 0;
	*out = neg ? s : (int64_t)u;
	return 1;
}

int64_t gguf_tensor_count(const gguf_file *g)
{
	return g->n_t;
}

int64_t gguf_tensor_find(const gguf_file *g, const char *name)
{
	return find_ref(g->t_sorted, g->n_t, name, strlen(name));
}

int gguf_tensor_at(const gguf_file *g, int64_t i, Tensor *t)
{
	if (i < 0 || i >= g->n_t)
		return 0;
	const gguf_tinfo *ti = &g->t[i];
	memset(t, 0, sizeof *t);
	t->name = ti->name;
	t->type = ti->type;
	t->rows = ti->rows;
	t->cols = ti->ne[0];
	t->data = g->map + g->data_off + ti->offset;
	t->nbytes = (size_t)ti->nbytes;
	return 1;
}

int gguf_tensor(const gguf_file *g, const char *name, Tensor *t)
{
	return gguf_tensor_at(g, gguf_tensor_find(g, name), t);
}

int gguf_tensor_dims(const gguf_file *g, int64_t i, int64_t ne[4])
{
	if (i < 0 || i >= g->n_t)
		return 0;
	for (int d = 0; d < GGUF_MAX_DIMS; d++)
		ne[d] = g->t[i].ne[d];
	return (int)g->t[i].n_dims;
}

int gguf_tensor_ggml_type(const gguf_file *g, int64_t i)
{
	return i >= 0 && i < g->n_t ? (int)g->t[i].ggml_type : -1;
}
