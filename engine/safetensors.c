/*
 * safetensors.c - safetensors reader. See safetensors.h for the format and
 * what is validated. Each shard is mapped read-only; its parsed JSON header
 * stays alive because tensor names point into it.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "mapguard.h"

typedef struct st_shard {
	char *path;         /* file path (malloc'd) */
	const uint8_t *map; /* whole file, PROT_READ */
	size_t size;        /* its length */
	uint64_t data_off;  /* 8 + header length */
	json_doc *doc;      /* parsed header; names point into it */
} st_shard;

typedef struct st_entry {
	const char *name;   /* in the shard's json_doc */
	dtype type;         /* element type */
	int ndims;          /* 0..ST_MAX_DIMS */
	int64_t shape[ST_MAX_DIMS]; /* outermost first */
	int shard;          /* index in f->shards */
	uint64_t begin, end; /* byte range inside the shard's data section */
} st_entry;

/* A name and its entry, sorted for binary search: O(n log n) with no
 * worst case an attacker can force (unlike an unkeyed hash table). */
typedef struct st_ref {
	const char *name; /* entry's name */
	int64_t i;        /* entry index */
} st_ref;

struct st_file {
	st_shard *shards; /* n_shards */
	int n_shards;
	st_entry *t;      /* n_t entries (capacity cap_t) */
	int64_t n_t, cap_t;
	struct st_ref *sorted; /* n_t names in strcmp order, for lookup */
};

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

static int cmp_ref(const void *a, const void *b)
{
	return strcmp(((const st_ref *)a)->name, ((const st_ref *)b)->name);
}

static int64_t find_ref(const st_file *f, const char *name)
{
	int64_t lo = 0, hi = f->sorted ? f->n_t : 0;
	while (lo < hi) {
		int64_t mid = lo + (hi - lo) / 2;
		int c = strcmp(f->sorted[mid].name, name);
		if (c == 0)
			return f->sorted[mid].i;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

void st_close(st_file *f)
{
	if (!f)
		return;
	for (int i = 0; i < f->n_shards; i++) {
		st_shard *s = &f->shards[i];
		if (s->map) {
			mapguard_remove(s->map);
			munmap((void *)s->map, s->size);
		}
		json_free(s->doc);
		free(s->path);
	}
	free(f->shards);
	free(f->t);
	free(f->sorted);
	free(f);
}

static int parse_dtype(const char *s, dtype *out)
{
	if (!strcmp(s, "F32"))
		*out = DT_F32;
	else if (!strcmp(s, "F16"))
		*out = DT_F16;
	else if (!strcmp(s, "BF16"))
		*out = DT_BF16;
	else
		return 0;
	return 1;
}

typedef struct span {
	uint64_t begin, end; /* byte range */
	int64_t i;           /* entry */
} span;

static int cmp_span(const void *a, const void *b)
{
	uint64_t x = ((const span *)a)->begin, y = ((const span *)b)->begin;
	return x < y ? -1 : x > y;
}

/* Map one shard file and append its tensors. */
static int load_shard(st_file *f, const char *path, char *err, size_t errlen)
{
	st_shard *s = &f->shards[f->n_shards];
	memset(s, 0, sizeof *s);
	s->path = strdup(path);
	if (!s->path) {
		seterr(err, errlen, "out of memory");
		return 0;
	}
	f->n_shards++; /* owned from here on, freed by st_close */
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		seterr(err, errlen, "%s: %s", path, strerror(errno));
		return 0;
	}
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		seterr(err, errlen, "%s: not a regular file", path);
		close(fd);
		return 0;
	}
	if (st.st_size < 8) {
		seterr(err, errlen,
		       "%s: %lld bytes is too short for a safetensors header",
		       path, (long long)st.st_size);
		close(fd);
		return 0;
	}
	s->size = (size_t)st.st_size;
	void *m = mmap(NULL, s->size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (m == MAP_FAILED) {
		seterr(err, errlen, "%s: mmap: %s", path, strerror(errno));
		return 0;
	}
	s->map = m;
	mapguard_add(m, s->size, path, &st, f); /* unguarded if full */
	uint64_t hlen;
	memcpy(&hlen, s->map, 8);
	if (hlen > ST_MAX_HEADER || hlen > s->size - 8) {
		seterr(err, errlen,
		       "%s: header length %llu exceeds the file (%zu bytes) or "
		       "the %u-byte limit",
		       path, (unsigned long long)hlen, s->size, ST_MAX_HEADER);
		return 0;
	}
	s->data_off = 8 + hlen;
	uint64_t avail = s->size - s->data_off;
	char jerr[200];
	s->doc = json_parse((const char *)s->map + 8, (size_t)hlen, jerr,
			    sizeof jerr);
	if (!s->doc) {
		seterr(err, errlen, "%s: header: %s", path, jerr);
		return 0;
	}
	const json_value *root = json_root(s->doc);
	if (root->type != JSON_OBJECT) {
		seterr(err, errlen, "%s: header is not a JSON object", path);
		return 0;
	}
	size_t n = root->u.obj.n;
	if ((uint64_t)f->n_t + n > (uint64_t)f->cap_t) {
		int64_t cap = f->n_t + (int64_t)n + 16;
		st_entry *t = realloc(f->t, (size_t)cap * sizeof *t);
		if (!t) {
			seterr(err, errlen, "%s: out of memory", path);
			return 0;
		}
		f->t = t;
		f->cap_t = cap;
	}
	int64_t first = f->n_t;
	for (size_t k = 0; k < n; k++) {
		const json_value *key = root->u.obj.keys[k];
		const json_value *v = root->u.obj.vals[k];
		const char *name = key->u.str.s;
		if (!strcmp(name, "__metadata__"))
			continue;
		if (strlen(name) != key->u.str.len || !name[0]) {
			seterr(err, errlen,
			       "%s: tensor name empty or with a NUL byte", path);
			return 0;
		}
		st_entry *e = &f->t[f->n_t];
		memset(e, 0, sizeof *e);
		e->name = name;
		e->shard = f->n_shards - 1;
		const json_value *dt = json_get(v, "dtype");
		const json_value *shape = json_get(v, "shape");
		const json_value *offs = json_get(v, "data_offsets");
		if (v->type != JSON_OBJECT || !dt || dt->type != JSON_STRING ||
		    !shape || shape->type != JSON_ARRAY || !offs ||
		    offs->type != JSON_ARRAY || json_count(offs) != 2) {
			seterr(err, errlen,
			       "%s: %s: needs dtype, shape and data_offsets "
			       "[begin, end]",
			       path, name);
			return 0;
		}
		if (!parse_dtype(dt->u.str.s, &e->type)) {
			seterr(err, errlen,
			       "%s: %s: dtype %.20s is not supported (F32, F16, "
			       "BF16)",
			       path, name, dt->u.str.s);
			return 0;
		}
		if (json_count(shape) > ST_MAX_DIMS) {
			seterr(err, errlen, "%s: %s: %zu dimensions (max %d)",
			       path, name, json_count(shape), ST_MAX_DIMS);
			return 0;
		}
		e->ndims = (int)json_count(shape);
		uint64_t elems = 1, nbytes;
		for (int d = 0; d < e->ndims; d++) {
			int64_t x;
			if (!json_int(json_at(shape, (size_t)d), 0,
				      (int64_t)1 << 53, &x)) {
				seterr(err, errlen,
				       "%s: %s: dimension %d is not an integer "
				       "in [0, 2^53]",
				       path, name, d);
				return 0;
			}
			e->shape[d] = x;
			/* every partial product must fit int64: rows is the
			 * product of the outer dims, and a zero dim further
			 * on must not hide an overflow (found by fuzzing:
			 * [2^32-1, 2^32, 0]) */
			if (__builtin_mul_overflow(elems, (uint64_t)x, &elems) ||
			    elems > (uint64_t)INT64_MAX) {
				seterr(err, errlen,
				       "%s: %s: element count overflows", path,
				       name);
				return 0;
			}
		}
		if (elems > (uint64_t)INT64_MAX ||
		    __builtin_mul_overflow(elems, dtype_block_bytes(e->type),
					   &nbytes)) {
			seterr(err, errlen, "%s: %s: byte size overflows", path,
			       name);
			return 0;
		}
		int64_t b, en;
		if (!json_int(json_at(offs, 0), 0, (int64_t)1 << 53, &b) ||
		    !json_int(json_at(offs, 1), 0, (int64_t)1 << 53, &en) ||
		    b > en) {
			seterr(err, errlen,
			       "%s: %s: data_offsets must be integers with "
			       "0 <= begin <= end",
			       path, name);
			return 0;
		}
		e->begin = (uint64_t)b;
		e->end = (uint64_t)en;
		if (e->end > avail) {
			seterr(err, errlen,
			       "%s: %s: data [%llu, %llu) lies outside the "
			       "%llu-byte data section",
			       path, name, (unsigned long long)e->begin,
			       (unsigned long long)e->end,
			       (unsigned long long)avail);
			return 0;
		}
		if (e->end - e->begin != nbytes) {
			seterr(err, errlen,
			       "%s: %s: data_offsets span %llu bytes, shape "
			       "and dtype need %llu",
			       path, name,
			       (unsigned long long)(e->end - e->begin),
			       (unsigned long long)nbytes);
			return 0;
		}
		f->n_t++;
	}
	/* overlap within this shard */
	int64_t cnt = f->n_t - first;
	span *sp = malloc((size_t)(cnt ? cnt : 1) * sizeof *sp);
	if (!sp) {
		seterr(err, errlen, "out of memory");
		return 0;
	}
	int64_t ns = 0;
	for (int64_t i = first; i < f->n_t; i++)
		if (f->t[i].end > f->t[i].begin) /* empty tensors own nothing */
			sp[ns++] = (span){f->t[i].begin, f->t[i].end, i};
	qsort(sp, (size_t)ns, sizeof *sp, cmp_span);
	for (int64_t i = 1; i < ns; i++) {
		if (sp[i - 1].end > sp[i].begin) {
			seterr(err, errlen, "%s: tensors %s and %s overlap",
			       path, f->t[sp[i - 1].i].name,
			       f->t[sp[i].i].name);
			free(sp);
			return 0;
		}
	}
	free(sp);
	return 1;
}

static int build_index(st_file *f, char *err, size_t errlen)
{
	f->sorted = malloc((size_t)(f->n_t ? f->n_t : 1) * sizeof *f->sorted);
	if (!f->sorted) {
		seterr(err, errlen, "out of memory");
		return 0;
	}
	for (int64_t i = 0; i < f->n_t; i++)
		f->sorted[i] = (st_ref){f->t[i].name, i};
	qsort(f->sorted, (size_t)f->n_t, sizeof *f->sorted, cmp_ref);
	for (int64_t i = 1; i < f->n_t; i++) {
		if (!strcmp(f->sorted[i - 1].name, f->sorted[i].name)) {
			seterr(err, errlen, "duplicate tensor name %s",
			       f->sorted[i].name);
			return 0;
		}
	}
	return 1;
}

static int ends_with(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && !strcmp(s + a - b, suf);
}

/* Open the shards an index names. */
static int load_index(st_file *f, const char *path, char *err, size_t errlen)
{
	char jerr[200];
	json_doc *doc = json_parse_file(path, 64u << 20, jerr, sizeof jerr);
	if (!doc) {
		seterr(err, errlen, "%s", jerr);
		return 0;
	}
	int ok = 0;
	char *dir = NULL, *full = NULL;
	const char **files = NULL;
	const json_value *wm = json_get(json_root(doc), "weight_map");
	if (!wm || wm->type != JSON_OBJECT) {
		seterr(err, errlen, "%s: no weight_map object", path);
		goto out;
	}
	size_t n = wm->u.obj.n;
	files = calloc(n ? n : 1, sizeof *files);
	dir = strdup(path);
	if (!files || !dir) {
		seterr(err, errlen, "out of memory");
		goto out;
	}
	char *slash = strrchr(dir, '/');
	if (slash)
		slash[1] = 0;
	else
		dir[0] = 0;
	/* distinct shard names, in first-seen order (n is small: linear) */
	size_t nf = 0;
	for (size_t i = 0; i < n; i++) {
		const json_value *v = wm->u.obj.vals[i];
		if (v->type != JSON_STRING || !v->u.str.len ||
		    strlen(v->u.str.s) != v->u.str.len ||
		    strchr(v->u.str.s, '/') || !strcmp(v->u.str.s, ".") ||
		    !strcmp(v->u.str.s, "..")) {
			seterr(err, errlen,
			       "%s: weight_map entry %zu is not a plain file "
			       "name",
			       path, i);
			goto out;
		}
		size_t j;
		for (j = 0; j < nf; j++)
			if (!strcmp(files[j], v->u.str.s))
				break;
		if (j == nf) {
			if (nf == ST_MAX_SHARDS) {
				seterr(err, errlen, "%s: more than %d shards",
				       path, ST_MAX_SHARDS);
				goto out;
			}
			files[nf++] = v->u.str.s;
		}
	}
	f->shards = calloc(nf ? nf : 1, sizeof *f->shards);
	if (!f->shards) {
		seterr(err, errlen, "out of memory");
		goto out;
	}
	size_t dl = strlen(dir);
	for (size_t j = 0; j < nf; j++) {
		size_t fl = strlen(files[j]);
		full = malloc(dl + fl + 1);
		if (!full) {
			seterr(err, errlen, "out of memory");
			goto out;
		}
		memcpy(full, dir, dl);
		memcpy(full + dl, files[j], fl + 1);
		if (!load_shard(f, full, err, errlen))
			goto out;
		free(full);
		full = NULL;
	}
	if (!build_index(f, err, errlen))
		goto out;
	for (size_t i = 0; i < n; i++) {
		const char *name = wm->u.obj.keys[i]->u.str.s;
		int64_t t = find_ref(f, name);
		if (t < 0 || strcmp(f->shards[f->t[t].shard].path + dl,
				    wm->u.obj.vals[i]->u.str.s)) {
			seterr(err, errlen,
			       "%s: weight_map puts %s in %s, which does not "
			       "hold it",
			       path, name, wm->u.obj.vals[i]->u.str.s);
			goto out;
		}
	}
	ok = 1;
out:
	free(full);
	free(dir);
	free(files);
	json_free(doc);
	return ok;
}

st_file *st_open(const char *path, char *err, size_t errlen)
{
	st_file *f = calloc(1, sizeof *f);
	if (!f) {
		seterr(err, errlen, "out of memory");
		return NULL;
	}
	if (ends_with(path, ".json")) {
		if (!load_index(f, path, err, errlen))
			goto fail;
	} else {
		f->shards = calloc(1, sizeof *f->shards);
		if (!f->shards) {
			seterr(err, errlen, "out of memory");
			goto fail;
		}
		if (!load_shard(f, path, err, errlen) ||
		    !build_index(f, err, errlen))
			goto fail;
	}
	return f;
fail:
	st_close(f);
	return NULL;
}

int64_t st_tensor_count(const st_file *f)
{
	return f->n_t;
}

int64_t st_find(const st_file *f, const char *name)
{
	return find_ref(f, name);
}

int st_tensor_at(const st_file *f, int64_t i, Tensor *t)
{
	if (i < 0 || i >= f->n_t)
		return 0;
	const st_entry *e = &f->t[i];
	const st_shard *s = &f->shards[e->shard];
	memset(t, 0, sizeof *t);
	t->name = e->name;
	t->type = e->type;
	t->cols = e->ndims ? e->shape[e->ndims - 1] : 1;
	t->rows = 1;
	for (int d = 0; d + 1 < e->ndims; d++)
		t->rows *= e->shape[d]; /* product checked at open */
	t->data = s->map + s->data_off + e->begin;
	t->nbytes = (size_t)(e->end - e->begin);
	return 1;
}

int st_tensor(const st_file *f, const char *name, Tensor *t)
{
	return st_tensor_at(f, st_find(f, name), t);
}

int st_shape(const st_file *f, int64_t i, int64_t shape[ST_MAX_DIMS])
{
	if (i < 0 || i >= f->n_t)
		return -1;
	for (int d = 0; d < f->t[i].ndims; d++)
		shape[d] = f->t[i].shape[d];
	return f->t[i].ndims;
}

int st_shard_count(const st_file *f)
{
	return f->n_shards;
}

uint64_t st_file_bytes(const st_file *f)
{
	uint64_t n = 0;
	for (int i = 0; i < f->n_shards; i++)
		n += f->shards[i].size;
	return n;
}
