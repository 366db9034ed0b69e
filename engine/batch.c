/*
 * batch.c - continuous batching over a paged KV cache. See batch.h for the
 * model; forward_batch() below is forward() (model.c) with rows from many
 * sequences: the same ops in the same order, K/V stored through slot ids
 * and attention read through block tables.
 */
#include "batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEF_BLOCK 16    /* tokens per block: small enough to waste little
			 * of a short request, big enough for short tables */
#define DEF_SEQS 16     /* sequences at once */
#define DEF_BUDGET 512  /* rows per forward: the engine's prefill chunk */

struct BatchSeq {
	GenRun g;          /* sampling and text of this generation */
	GenParams p;       /* copy of the caller's parameters (g uses it) */
	GenResult res;     /* outcome */
	void *ud;          /* caller's pointer */
	int32_t *toks;     /* [seq_ctx] prompt, then generated tokens */
	int n_toks;        /* tokens in toks: all need K/V */
	int n_prompt;      /* of those, the prompt's (then generated ones) */
	int n_kv;          /* leading tokens whose K/V are in the cache */
	int32_t *blocks;   /* [max_blk] block table */
	int n_blk;         /* blocks held */
	uint64_t order;    /* admission number: lower = older = first */
	int done;          /* finished (in the done list) */
	int preempted;     /* times its blocks were taken */
	int busy;          /* scheduled or preempted in the current step */
	int shared;        /* prompt tokens whose K/V came from another
			    * sequence's blocks (prefix sharing) */
	double t_first;    /* monotonic time of the first token, 0 before */
	BatchSeq *next;    /* done list */
};

/* Full blocks of a finished sequence, kept for prefix sharing (a chat's
 * next turn, a shared system prompt arriving later) until the pool needs
 * them back. */
typedef struct Cached {
	int32_t *toks;    /* [n_blk*bs] the tokens they hold K/V for */
	int32_t *blocks;  /* [n_blk] block ids (one reference each) */
	int n_blk;        /* blocks */
	uint64_t used;    /* last use (admission counter): LRU eviction */
} Cached;

#define CACHE_MAX 8 /* finished sequences' prefixes kept at most */

/* One sequence's rows in a step. */
typedef struct Item {
	BatchSeq *s;  /* the sequence */
	int row0;     /* its first row in the batch */
	int n;        /* rows (tokens) */
	int pos0;     /* position of the first */
	int logit;    /* 1: the chunk ends the sequence's tokens: sample */
} Item;

struct Batcher {
	Engine *e;           /* engine (weights, backend, rope table) */
	const Model *m;      /* its model */
	Backend *be;         /* its backend */
	int bs;              /* tokens per block */
	int n_blocks;        /* blocks in the pool */
	int max_seqs;        /* active sequences at most */
	int budget;          /* rows per step at most */
	int seq_ctx;         /* tokens per sequence at most */
	int max_blk;         /* blocks per sequence at most */
	int q_dim, kv_dim;   /* widths */
	float *kpool, *vpool; /* [n_layers][n_blocks*bs][kv_dim] device */
	int32_t *free_ids;   /* [n_blocks] stack of free block ids */
	int n_free;          /* entries in free_ids */
	int32_t *ref;        /* [n_blocks] sequences holding each block: a
			      * full block of a common prefix is shared */
	int32_t *cref;       /* [n_blocks] of those, prefix cache entries */
	/* device scratch, [budget] rows each */
	float *x, *xb, *q, *k, *v, *att, *hb, *hb2;
	float *logits_dev;   /* [max_seqs][vocab] */
	int32_t *d_next, *h_next; /* [max_seqs] argmax of each logits row */
	float *d_tkv, *h_tkv;     /* [max_seqs][TOPK_MAX] best logits ... */
	int32_t *d_tki, *h_tki;   /* ... and their ids, per logits row */
	int tk;              /* candidates per row topk_rows gives (0: none) */
	float *d_temp, *h_temp; /* [max_seqs] temperature of each row ... */
	double *d_sum, *h_sum;  /* ... and its softmax sum (expsum_rows) */
	int es;              /* 1: expsum_rows runs with topk_rows */
	int next_copied;     /* the step brought h_next back */
	int topk_copied;     /* ... h_tkv/h_tki */
	int sum_copied;      /* ... h_sum */
	char row_err[256];   /* a row's own fetch failed in this step */
	int logits_copied;   /* ... the logits rows */
	int32_t *d_pos, *d_tab, *d_slots; /* [budget] per-row metadata */
	int32_t *d_tables;   /* [max_seqs*max_blk] block tables of a step */
	/* host mirrors */
	int32_t *h_tok, *h_pos, *h_tab, *h_slots, *h_tables;
	float *logits;       /* [max_seqs][vocab] host copy */
	BatchSeq **act;      /* [max_seqs] active, in admission order */
	int n_act;           /* entries in act */
	Item *items;         /* [max_seqs] the step being built */
	int n_items;         /* entries in items */
	BatchSeq *done_head, *done_tail; /* finished, not yet collected */
	uint64_t next_order; /* next admission number */
	Cached cache[CACHE_MAX]; /* prefixes of finished sequences */
	int n_cache;         /* entries in cache */
	int fatal;           /* backend lost: every step fails */
	/* INFERD_BATCH_STATS=1: a line on stderr every STATS_STEPS steps
	 * with where a step's time went (the forward pass, waited for, and
	 * the host's sampling after it), to find the next bottleneck */
	int stats;           /* on */
	long st_steps, st_rows; /* in this window */
	double st_fwd, st_host; /* seconds */
};

#define STATS_STEPS 128 /* steps per INFERD_BATCH_STATS line */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* bytes = a * b * c * elt, or 0 on overflow. */
static size_t nbytes(size_t a, size_t b, size_t c, size_t elt)
{
	size_t r;
	if (__builtin_mul_overflow(a, b, &r) ||
	    __builtin_mul_overflow(r, c, &r) ||
	    __builtin_mul_overflow(r, elt, &r))
		return 0;
	return r;
}

static void cache_drop(Batcher *b, int i);

int batcher_supported(Engine *e)
{
	const BackendOps *op = engine_backend(e)->ops;
	return op->kv_store && op->attention_paged && op->rope_rows;
}

void batcher_free(Batcher *b)
{
	if (!b)
		return;
	while (b->n_act > 0) {
		BatchSeq *s = b->act[--b->n_act];
		s->done = 1;
		batchseq_free(s);
	}
	while (b->done_head) {
		BatchSeq *s = b->done_head;
		b->done_head = s->next;
		batchseq_free(s);
	}
	while (b->n_cache > 0)
		cache_drop(b, b->n_cache - 1);
	if (b->be) {
		void *dev[] = {b->kpool, b->vpool, b->x, b->xb, b->q, b->k,
			       b->v, b->att, b->hb, b->hb2, b->logits_dev,
			       b->d_pos, b->d_tab, b->d_slots, b->d_tables,
			       b->d_next, b->d_tkv, b->d_tki, b->d_temp,
			       b->d_sum};
		for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
			if (dev[i])
				b->be->ops->free(b->be, dev[i]);
	}
	free(b->free_ids);
	free(b->ref);
	free(b->cref);
	free(b->h_tok);
	free(b->h_pos);
	free(b->h_tab);
	free(b->h_slots);
	free(b->h_tables);
	free(b->logits);
	free(b->h_next);
	free(b->h_tkv);
	free(b->h_tki);
	free(b->h_temp);
	free(b->h_sum);
	free(b->act);
	free(b->items);
	free(b);
}

int batcher_create(Engine *e, const BatchOptions *o, Batcher **out,
		   char *err, size_t errlen)
{
	BatchOptions def = {0};
	if (!o)
		o = &def;
	*out = NULL;
	if (!batcher_supported(e)) {
		snprintf(err, errlen, "the %s backend has no paged KV cache "
			 "ops", engine_backend(e)->ops->name);
		return -1;
	}
	Batcher *b = calloc(1, sizeof *b);
	if (!b) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	b->e = e;
	const char *st = getenv("INFERD_BATCH_STATS");
	b->stats = st && st[0] == '1';
	b->m = engine_model(e);
	b->be = engine_backend(e);
	const Config *c = &b->m->cfg;
	const BackendOps *op = b->be->ops;
	b->bs = o->block_size > 0 ? o->block_size : DEF_BLOCK;
	b->max_seqs = o->max_seqs > 0 ? o->max_seqs : DEF_SEQS;
	b->budget = o->token_budget > 0 ? o->token_budget : DEF_BUDGET;
	if (b->budget < b->max_seqs)
		b->budget = b->max_seqs; /* every sequence decodes each step */
	b->q_dim = c->n_heads * c->head_dim;
	b->kv_dim = c->n_kv_heads * c->head_dim;
	int ctx = engine_ctx(e);
	if (b->bs > 4096 || b->max_seqs > 4096 || b->budget > 65536) {
		snprintf(err, errlen, "batch options out of range (block %d, "
			 "sequences %d, budget %d)", b->bs, b->max_seqs,
			 b->budget);
		goto fail;
	}
	int64_t blk_per_ctx = ((int64_t)ctx + b->bs - 1) / b->bs;
	size_t block_bytes = nbytes((size_t)c->n_layers, (size_t)b->bs,
				    (size_t)b->kv_dim, 2 * sizeof(float));
	int64_t nb = o->n_blocks > 0 ? o->n_blocks
				     : blk_per_ctx * b->max_seqs;
	if (o->n_blocks <= 0 && block_bytes) {
		/* sized from free memory: a quarter of it at most */
		uint64_t total = 0, avail = 0;
		op->memory(b->be, &total, &avail);
		int64_t cap = (int64_t)(avail / 4 / block_bytes);
		if (cap < nb)
			nb = cap > blk_per_ctx ? cap : blk_per_ctx;
	}
	if (o->n_blocks <= 0 && o->max_pool_bytes && block_bytes) {
		int64_t cap = (int64_t)(o->max_pool_bytes / block_bytes);
		if (cap < nb)
			nb = cap > blk_per_ctx ? cap : blk_per_ctx;
	}
	if (nb < 1 || nb > INT32_MAX / b->bs || !block_bytes) {
		snprintf(err, errlen, "KV pool of %lld blocks is out of range",
			 (long long)nb);
		goto fail;
	}
	b->n_blocks = (int)nb;
	b->seq_ctx = ctx < b->n_blocks * b->bs ? ctx : b->n_blocks * b->bs;
	b->max_blk = (b->seq_ctx + b->bs - 1) / b->bs;
	size_t slots = (size_t)b->n_blocks * (size_t)b->bs;
	size_t tabn = (size_t)b->max_seqs * (size_t)b->max_blk;
	struct {
		void **p;
		size_t bytes;
		const char *what;
	} bufs[] = {
		{(void **)&b->kpool, nbytes(c->n_layers, slots, b->kv_dim, 4),
		 "K pool"},
		{(void **)&b->vpool, nbytes(c->n_layers, slots, b->kv_dim, 4),
		 "V pool"},
		{(void **)&b->x, nbytes(b->budget, c->dim, 1, 4), "residual"},
		{(void **)&b->xb, nbytes(b->budget, c->dim, 1, 4), "normed"},
		{(void **)&b->q, nbytes(b->budget, b->q_dim, 1, 4), "queries"},
		{(void **)&b->k, nbytes(b->budget, b->kv_dim, 1, 4), "keys"},
		{(void **)&b->v, nbytes(b->budget, b->kv_dim, 1, 4), "values"},
		{(void **)&b->att, nbytes(b->budget, b->q_dim, 1, 4),
		 "attention output"},
		{(void **)&b->hb, nbytes(b->budget, c->hidden_dim, 1, 4),
		 "ffn gate"},
		{(void **)&b->hb2, nbytes(b->budget, c->hidden_dim, 1, 4),
		 "ffn up"},
		{(void **)&b->logits_dev,
		 nbytes(b->max_seqs, c->vocab_size, 1, 4), "logits"},
		{(void **)&b->d_next, nbytes(b->max_seqs, 1, 1, 4), "argmax"},
		{(void **)&b->d_tkv, nbytes(b->max_seqs, TOPK_MAX, 1, 4),
		 "top-k values"},
		{(void **)&b->d_tki, nbytes(b->max_seqs, TOPK_MAX, 1, 4),
		 "top-k ids"},
		{(void **)&b->d_temp, nbytes(b->max_seqs, 1, 1, 4),
		 "temperatures"},
		{(void **)&b->d_sum, nbytes(b->max_seqs, 1, 1, 8),
		 "softmax sums"},
		{(void **)&b->d_pos, nbytes(b->budget, 1, 1, 4), "positions"},
		{(void **)&b->d_tab, nbytes(b->budget, 1, 1, 4), "row tables"},
		{(void **)&b->d_slots, nbytes(b->budget, 1, 1, 4), "slots"},
		{(void **)&b->d_tables, nbytes(tabn, 1, 1, 4), "block tables"},
	};
	for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
		if (!bufs[i].bytes || !(*bufs[i].p = op->alloc(b->be,
							       bufs[i].bytes))) {
			snprintf(err, errlen, "out of %s memory allocating the "
				 "%s (%zu bytes, %d blocks of %d tokens)",
				 op->name, bufs[i].what, bufs[i].bytes,
				 b->n_blocks, b->bs);
			goto fail;
		}
	}
	b->free_ids = malloc(sizeof(int32_t) * (size_t)b->n_blocks);
	b->ref = calloc((size_t)b->n_blocks, sizeof(int32_t));
	b->cref = calloc((size_t)b->n_blocks, sizeof(int32_t));
	b->h_tok = malloc(sizeof(int32_t) * (size_t)b->budget);
	b->h_pos = malloc(sizeof(int32_t) * (size_t)b->budget);
	b->h_tab = malloc(sizeof(int32_t) * (size_t)b->budget);
	b->h_slots = malloc(sizeof(int32_t) * (size_t)b->budget);
	b->h_tables = malloc(sizeof(int32_t) * tabn);
	b->logits = malloc(nbytes(b->max_seqs, c->vocab_size, 1, 4));
	b->h_next = malloc(sizeof(int32_t) * (size_t)b->max_seqs);
	b->h_tkv = malloc(nbytes(b->max_seqs, TOPK_MAX, 1, 4));
	b->h_tki = malloc(nbytes(b->max_seqs, TOPK_MAX, 1, 4));
	b->h_temp = malloc(nbytes(b->max_seqs, 1, 1, 4));
	b->h_sum = malloc(nbytes(b->max_seqs, 1, 1, 8));
	b->tk = op->topk_rows && c->vocab_size >= TOPK_MAX ? TOPK_MAX : 0;
	b->es = b->tk && op->expsum_rows;
	b->act = calloc((size_t)b->max_seqs, sizeof *b->act);
	b->items = calloc((size_t)b->max_seqs, sizeof *b->items);
	if (!b->free_ids || !b->ref || !b->cref || !b->h_tok || !b->h_pos || !b->h_tab ||
	    !b->h_slots || !b->h_tables || !b->logits || !b->act ||
	    !b->h_next || !b->h_tkv || !b->h_tki || !b->h_temp || !b->h_sum ||
	    !b->items) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	/* low ids on top of the stack: the first sequence gets 0, 1, ... */
	for (int i = 0; i < b->n_blocks; i++)
		b->free_ids[i] = b->n_blocks - 1 - i;
	b->n_free = b->n_blocks;
	*out = b;
	return 0;
fail:
	batcher_free(b);
	return -1;
}

int batcher_active(const Batcher *b) { return b->n_act; }
int batcher_free_blocks(const Batcher *b)
{
	int n = b->n_free;
	if (b->n_cache > 0)
		for (int i = 0; i < b->n_blocks; i++)
			n += b->ref[i] > 0 && b->ref[i] == b->cref[i];
	return n;
}
int batcher_n_blocks(const Batcher *b) { return b->n_blocks; }
size_t batcher_pool_bytes(const Batcher *b)
{
	return nbytes((size_t)b->m->cfg.n_layers, (size_t)b->n_blocks * b->bs,
		      (size_t)b->kv_dim, 2 * sizeof(float));
}
int batcher_block_size(const Batcher *b) { return b->bs; }
int batcher_seq_ctx(const Batcher *b) { return b->seq_ctx; }
void *batchseq_ud(const BatchSeq *s) { return s->ud; }
const GenResult *batchseq_result(const BatchSeq *s) { return &s->res; }
int batchseq_preempted(const BatchSeq *s) { return s->preempted; }
int batchseq_shared(const BatchSeq *s) { return s->shared; }

void batchseq_free(BatchSeq *s)
{
	if (!s)
		return;
	genrun_free(&s->g);
	free(s->res.ids);
	free(s->toks);
	free(s->blocks);
	free(s);
}

static void share_prefix(Batcher *b, BatchSeq *s);

BatchSeq *batcher_add(Batcher *b, const int32_t *prompt, int n_prompt,
		      const GenParams *p, engine_text_fn cb, void *ud,
		      char *err, size_t errlen)
{
	int vocab = b->m->cfg.vocab_size;
	if (b->n_act >= b->max_seqs) {
		snprintf(err, errlen, "batch is full (%d sequences)",
			 b->max_seqs);
		return NULL;
	}
	if (n_prompt > b->seq_ctx) {
		snprintf(err, errlen, "prompt of %d tokens does not fit the "
			 "context of %d", n_prompt, b->seq_ctx);
		return NULL;
	}
	for (int i = 0; i < n_prompt; i++)
		if (prompt[i] < 0 || prompt[i] >= vocab) {
			snprintf(err, errlen, "token id %d out of range "
				 "(vocab %d)", prompt[i], vocab);
			return NULL;
		}
	BatchSeq *s = calloc(1, sizeof *s);
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->p = *p;
	s->ud = ud;
	if (genrun_init(&s->g, b->m->tok, vocab, b->seq_ctx, prompt, n_prompt,
			&s->p, cb, ud, &s->res, err, errlen) != 0) {
		free(s);
		return NULL;
	}
	s->toks = malloc(sizeof(int32_t) * (size_t)b->seq_ctx);
	s->blocks = malloc(sizeof(int32_t) * (size_t)b->max_blk);
	if (!s->toks || !s->blocks) {
		batchseq_free(s);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	memcpy(s->toks, prompt, sizeof(int32_t) * (size_t)n_prompt);
	s->n_toks = n_prompt;
	s->n_prompt = n_prompt;
	s->order = b->next_order++;
	b->act[b->n_act++] = s;
	share_prefix(b, s);
	s->res.n_reused = s->shared;
	return s;
}

int batcher_can_admit(const Batcher *b, int n_prompt)
{
	if (b->n_act >= b->max_seqs)
		return 0;
	/* keep a block of headroom per running sequence, so a newcomer
	 * does not at once force a preemption */
	int need = (n_prompt + 1 + b->bs - 1) / b->bs;
	return batcher_free_blocks(b) - b->n_act >= need;
}

static void release_blocks(Batcher *b, BatchSeq *s)
{
	while (s->n_blk > 0) {
		int32_t id = s->blocks[--s->n_blk];
		if (--b->ref[id] == 0)
			b->free_ids[b->n_free++] = id;
	}
	s->n_kv = 0;
}

static void cache_drop(Batcher *b, int i)
{
	Cached *c = &b->cache[i];
	for (int j = 0; j < c->n_blk; j++) {
		b->cref[c->blocks[j]]--;
		if (--b->ref[c->blocks[j]] == 0)
			b->free_ids[b->n_free++] = c->blocks[j];
	}
	free(c->toks);
	free(c->blocks);
	b->cache[i] = b->cache[--b->n_cache];
}

/* Give cached prefixes back to the pool (least recently used first)
 * until need blocks are free or the cache is empty. */
static void reclaim(Batcher *b, int need)
{
	while (b->n_free < need && b->n_cache > 0) {
		int lru = 0;
		for (int i = 1; i < b->n_cache; i++)
			if (b->cache[i].used < b->cache[lru].used)
				lru = i;
		cache_drop(b, lru);
	}
}

/* Keep the full blocks of finished s in the cache (taking its tokens). */
static void cache_keep(Batcher *b, BatchSeq *s)
{
	int nf = s->n_kv / b->bs;
	if (nf <= 0)
		return;
	int32_t *blk = malloc(sizeof(int32_t) * (size_t)nf);
	if (!blk)
		return;
	if (b->n_cache == CACHE_MAX) {
		int lru = 0;
		for (int i = 1; i < b->n_cache; i++)
			if (b->cache[i].used < b->cache[lru].used)
				lru = i;
		cache_drop(b, lru);
	}
	Cached *c = &b->cache[b->n_cache++];
	memcpy(blk, s->blocks, sizeof(int32_t) * (size_t)nf);
	for (int j = 0; j < nf; j++) {
		b->ref[blk[j]]++;
		b->cref[blk[j]]++;
	}
	c->toks = s->toks;
	c->blocks = blk;
	c->n_blk = nf;
	c->used = b->next_order;
	s->toks = NULL;
}

/* Prefix sharing: s (holding no blocks) takes the full blocks of another
 * active sequence whose computed tokens start with the same tokens, up to
 * but not including s's last token (its logits are needed). A full block
 * is never written again, and K/V at a position depend only on the tokens
 * up to it, so the shared rows are exactly what s would compute. */
static void share_prefix(Batcher *b, BatchSeq *s)
{
	const int32_t *src = NULL;
	Cached *from = NULL;
	int best_n = 0;
	for (int i = 0; i < b->n_act + b->n_cache; i++) {
		const int32_t *toks, *blocks;
		int have;
		Cached *c = NULL;
		if (i < b->n_act) {
			BatchSeq *t = b->act[i];
			if (t == s)
				continue;
			toks = t->toks;
			blocks = t->blocks;
			have = t->n_kv / b->bs * b->bs; /* full, computed */
		} else {
			c = &b->cache[i - b->n_act];
			toks = c->toks;
			blocks = c->blocks;
			have = c->n_blk * b->bs;
		}
		int lim = have < s->n_toks - 1 ? have : s->n_toks - 1;
		int k = 0;
		while (k < lim && toks[k] == s->toks[k])
			k++;
		k = k / b->bs * b->bs;
		if (k > best_n) {
			src = blocks;
			from = c;
			best_n = k;
		}
	}
	if (!src)
		return;
	for (int j = 0; j < best_n / b->bs; j++) {
		s->blocks[j] = src[j];
		b->ref[s->blocks[j]]++;
	}
	if (from)
		from->used = b->next_order;
	s->n_blk = best_n / b->bs;
	s->n_kv = best_n;
	s->shared += best_n;
}

/* Take blocks until s has room for upto tokens. 0, or -1 when the pool
 * ran dry (what was taken stays with s). */
static int grow(Batcher *b, BatchSeq *s, int upto)
{
	while (s->n_blk * b->bs < upto) {
		if (b->n_free == 0)
			reclaim(b, 1);
		if (b->n_free == 0 || s->n_blk >= b->max_blk)
			return -1;
		int32_t id = b->free_ids[--b->n_free];
		b->ref[id] = 1;
		s->blocks[s->n_blk++] = id;
	}
	return 0;
}

/* Take every block of s; it restarts from its first token later. */
static void preempt(Batcher *b, BatchSeq *s)
{
	release_blocks(b, s);
	s->preempted++;
	s->busy = 1;
}

/* The youngest active sequence other than s that holds blocks and is not
 * part of this step, or NULL. */
static BatchSeq *victim(Batcher *b, const BatchSeq *s)
{
	for (int i = b->n_act - 1; i >= 0; i--) {
		BatchSeq *v = b->act[i];
		if (v != s && v->n_blk > 0 && !v->busy)
			return v;
	}
	return NULL;
}

/* Take s out of the active list, keeping the admission order. */
static void act_remove(Batcher *b, BatchSeq *s)
{
	for (int i = 0; i < b->n_act; i++)
		if (b->act[i] == s) {
			memmove(b->act + i, b->act + i + 1,
				sizeof *b->act * (size_t)(b->n_act - i - 1));
			b->n_act--;
			return;
		}
}

/* End s: flush its text, give back its blocks, move it to the done list. */
static void finish(Batcher *b, BatchSeq *s, finish_reason fin)
{
	if (s->done)
		return;
	genrun_end(&s->g, fin);
	double t = now();
	if (s->t_first) {
		s->res.t_prefill = s->t_first - s->g.t0;
		s->res.t_decode = t - s->t_first;
	} else {
		s->res.t_prefill = t - s->g.t0;
	}
	if (fin != FINISH_ERROR)
		cache_keep(b, s);
	release_blocks(b, s);
	act_remove(b, s);
	s->done = 1;
	s->next = NULL;
	if (b->done_tail)
		b->done_tail->next = s;
	else
		b->done_head = s;
	b->done_tail = s;
}

void batcher_suspend(Batcher *b, BatchSeq *s)
{
	if (s->done)
		return;
	release_blocks(b, s);
	s->preempted++;
	act_remove(b, s);
}

int batcher_resume(Batcher *b, BatchSeq *s, char *err, size_t errlen)
{
	if (b->n_act >= b->max_seqs) {
		snprintf(err, errlen, "batch is full (%d sequences)",
			 b->max_seqs);
		return -1;
	}
	for (int i = 0; i < b->n_act; i++)
		if (b->act[i] == s)
			return 0;
	s->order = b->next_order++;
	b->act[b->n_act++] = s;
	return 0;
}

void batcher_cancel(Batcher *b, BatchSeq *s)
{
	finish(b, s, FINISH_CANCEL);
}

BatchSeq *batcher_done(Batcher *b)
{
	BatchSeq *s = b->done_head;
	if (s) {
		b->done_head = s->next;
		if (!b->done_head)
			b->done_tail = NULL;
		s->next = NULL;
	}
	return s;
}

static void add_item(Batcher *b, BatchSeq *s, int n, int *rows)
{
	Item *it = &b->items[b->n_items++];
	it->s = s;
	it->row0 = *rows;
	it->n = n;
	it->pos0 = s->n_kv;
	it->logit = s->n_kv + n == s->n_toks;
	s->busy = 1;
	*rows += n;
}

/* Choose the rows of this step: decode rows first (every running
 * sequence moves each step), then prompt chunks, oldest first. */
static int plan(Batcher *b)
{
	int rows = 0;
	b->n_items = 0;
	for (int i = 0; i < b->n_act; i++)
		b->act[i]->busy = 0;
	for (int i = 0; i < b->n_act && rows < b->budget; i++) {
		BatchSeq *s = b->act[i];
		if (s->busy || s->n_kv == 0 || s->n_toks - s->n_kv != 1)
			continue;
		while (grow(b, s, s->n_kv + 1) != 0) {
			BatchSeq *v = victim(b, s);
			if (!v || v->order < s->order) {
				/* nobody younger to take from: s waits */
				preempt(b, s);
				break;
			}
			preempt(b, v);
		}
		if (!s->busy)
			add_item(b, s, 1, &rows);
	}
	for (int i = 0; i < b->n_act && rows < b->budget; i++) {
		BatchSeq *s = b->act[i];
		if (s->busy)
			continue;
		if (s->n_blk == 0)
			share_prefix(b, s); /* a preempted one starts over */
		int want = s->n_toks - s->n_kv;
		if (want > b->budget - rows)
			want = b->budget - rows;
		reclaim(b, (s->n_kv + want + b->bs - 1) / b->bs - s->n_blk);
		int room = s->n_blk * b->bs - s->n_kv + b->n_free * b->bs;
		while (room <= 0 && b->n_items == 0) {
			/* nothing moves this step otherwise: the oldest
			 * waiting sequence takes from the youngest */
			BatchSeq *v = victim(b, s);
			if (!v || v->order < s->order)
				break;
			preempt(b, v);
			room = s->n_blk * b->bs - s->n_kv + b->n_free * b->bs;
		}
		int n = want < room ? want : room;
		if (n <= 0 || grow(b, s, s->n_kv + n) != 0)
			continue;
		add_item(b, s, n, &rows);
	}
	return rows;
}

/* Rows at the start of it that hold prompt tokens: they go to the
 * backend's attention_chunk where it has one (the rest to
 * attention_paged), so that a prompt row always meets the prefill kernel
 * (CUDA: tensor cores, f16 operands) and a generated row the decode
 * kernel, whatever shares its step; a batched request then differs from
 * itself alone by f32 rounding only (the decode kernel's chunk count
 * follows its launch's rows). */
static int prompt_rows(const Batcher *b, const Item *it)
{
	if (!b->be->ops->attention_chunk)
		return 0;
	int np = it->s->n_prompt - it->pos0;
	return np < 0 ? 0 : np > it->n ? it->n : np;
}

/* att = attention of every row of the step over its sequence's cache
 * (kc, vc: one layer of the pool): prompt rows a chunk per item,
 * runs of other rows one attention_paged each. */
static void attend(Batcher *b, const float *kc, const float *vc, int rows)
{
	const Config *c = &b->m->cfg;
	Backend *be = b->be;
	const BackendOps *op = be->ops;
	int hd = c->head_dim, run = 0, tab = 0; /* run: first row not sent */
	for (int i = 0; i <= b->n_items; i++) {
		const Item *it = i < b->n_items ? &b->items[i] : NULL;
		int np = it ? prompt_rows(b, it) : 0;
		int end = it ? it->row0 : rows; /* rows before it need sending */
		if ((np > 0 || !it) && end > run) {
			size_t o = (size_t)run;
			op->attention_paged(be, b->att + o * b->q_dim,
					    b->q + o * b->q_dim, kc, vc,
					    b->d_pos + o, b->d_tab + o,
					    b->d_tables, b->bs, end - run,
					    c->n_heads, c->n_kv_heads, hd);
		}
		if (!it)
			break;
		if (np > 0) {
			size_t o = (size_t)it->row0;
			op->attention_chunk(be, b->att + o * b->q_dim,
					    b->q + o * b->q_dim, kc, vc,
					    b->d_tables, tab, b->bs, np,
					    it->pos0, c->n_heads,
					    c->n_kv_heads, hd);
			run = it->row0 + np;
		}
		tab += it->s->n_blk;
	}
}

/* The batch of b->items (rows tokens) through the model: forward() of
 * model.c, row by row the same math. Leaves the logits of every item with
 * logit set in b->logits, in item order. */
static int forward_batch(Batcher *b, int rows, char *err, size_t errlen)
{
	const Model *m = b->m;
	const Config *c = &m->cfg;
	const Weights *w = &m->w;
	Backend *be = b->be;
	const BackendOps *op = be->ops;
	const float *inv_freq = engine_state(b->e)->inv_freq;
	int dim = c->dim, hd = c->head_dim;
	int q_dim = b->q_dim, kv_dim = b->kv_dim;
	float eps = c->norm_eps;
	size_t slots = (size_t)b->n_blocks * (size_t)b->bs;

	/* per-row metadata: tokens, positions, cache slots, block tables */
	int tab = 0;
	for (int i = 0; i < b->n_items; i++) {
		const Item *it = &b->items[i];
		const BatchSeq *s = it->s;
		memcpy(b->h_tables + tab, s->blocks,
		       sizeof(int32_t) * (size_t)s->n_blk);
		for (int j = 0; j < it->n; j++) {
			int r = it->row0 + j, p = it->pos0 + j;
			b->h_tok[r] = s->toks[p];
			b->h_pos[r] = p;
			b->h_tab[r] = tab;
			b->h_slots[r] = s->blocks[p / b->bs] * b->bs + p % b->bs;
		}
		tab += s->n_blk;
	}
	op->to_dev(be, b->d_pos, b->h_pos, sizeof(int32_t) * (size_t)rows);
	op->to_dev(be, b->d_tab, b->h_tab, sizeof(int32_t) * (size_t)rows);
	op->to_dev(be, b->d_slots, b->h_slots, sizeof(int32_t) * (size_t)rows);
	op->to_dev(be, b->d_tables, b->h_tables, sizeof(int32_t) * (size_t)tab);
	/* each logits row's temperature for expsum_rows (1 where unused) */
	int nlr = 0;
	for (int i = 0; b->es && i < b->n_items; i++) {
		if (!b->items[i].logit)
			continue;
		float t = b->items[i].s->p.sampling.temperature;
		b->h_temp[nlr++] = t > 0.0f ? t : 1.0f;
	}
	if (nlr > 0)
		op->to_dev(be, b->d_temp, b->h_temp,
			   sizeof(float) * (size_t)nlr);

	/* x = embed(tokens) */
	op->embed(be, b->x, &w->tok_embd, b->h_tok, rows);

	/* A step of decode rows only launches the same work whenever it has
	 * as many rows (pointers fixed, positions and tables in device
	 * memory): the backend may replay it from a recording. */
	int all_decode = 1;
	for (int i = 0; i < b->n_items; i++)
		all_decode &= b->items[i].logit && b->items[i].n == 1 &&
			      prompt_rows(b, &b->items[i]) == 0;
	int replayable = all_decode && op->step_begin && op->step_end;
	if (replayable)
		op->step_begin(be, rows);

	for (int l = 0; l < c->n_layers; l++) {
		const LayerWeights *L = &w->layers[l];
		float *kc = b->kpool + (size_t)l * slots * kv_dim;
		float *vc = b->vpool + (size_t)l * slots * kv_dim;

		forward_qkv(be, c, L, b->x, b->xb, b->q, b->k, b->v, rows);

		/* rope(q, k), each row at its own sequence's position */
		op->rope_rows(be, b->q, rows, q_dim, c->n_heads, hd, b->d_pos,
			      inv_freq, c->rope_layout);
		op->rope_rows(be, b->k, rows, kv_dim, c->n_kv_heads, hd,
			      b->d_pos, inv_freq, c->rope_layout);

		/* K, V into their cache slots; x += attention(q, cache) Wo */
		op->kv_store(be, kc, vc, b->k, b->v, b->d_slots, rows, kv_dim);
		attend(b, kc, vc, rows);
		residual_matmul(be, b->x, b->xb, b->att, &L->wo, rows);

		forward_ffn(be, c, L, b->x, b->xb, b->hb, b->hb2, rows);
	}

	/* logits = rmsnorm(x) Wout, for the last row of each finished chunk */
	int nl = 0;
	if (all_decode) { /* every row, in order: one launch */
		nl = b->n_items;
		op->rmsnorm(be, b->xb, b->x, &w->out_norm, nl, dim, eps);
	}
	for (int i = 0; i < b->n_items && !all_decode; i++) {
		const Item *it = &b->items[i];
		if (!it->logit)
			continue;
		op->rmsnorm(be, b->xb + (size_t)nl * dim,
			    b->x + (size_t)(it->row0 + it->n - 1) * dim,
			    &w->out_norm, 1, dim, eps);
		nl++;
	}
	if (nl > 0) {
		op->matmul(be, b->logits_dev, b->xb, &w->output, NULL, nl);
		/* always, so that a replayed step holds the same work */
		if (op->argmax_rows)
			op->argmax_rows(be, b->d_next, b->logits_dev, nl,
					c->vocab_size);
		if (b->tk)
			op->topk_rows(be, b->d_tkv, b->d_tki, b->logits_dev,
				      nl, c->vocab_size, b->tk);
		/* always as well: a few us a step (a block a row) */
		if (b->es)
			op->expsum_rows(be, b->d_sum, b->logits_dev, b->d_temp,
					nl, c->vocab_size);
	}
	if (replayable)
		op->step_end(be);
	/* A greedy row needs its argmax, a top-k row its candidates; the
	 * logits come back only for a row that needs more (8 MB for 64 rows
	 * of a 32000 vocabulary). */
	int full = 0, topk = 0, sum = 0;
	for (int i = 0; i < b->n_items; i++) {
		const GenRun *g = &b->items[i].s->g;
		if (!b->items[i].logit ||
		    (op->argmax_rows && genrun_plain_greedy(g)))
			continue;
		if (b->tk && genrun_topk(g))
			topk = 1;
		else if (b->es && genrun_top(g))
			topk = sum = 1;
		else
			full = 1;
	}
	b->next_copied = nl > 0 && op->argmax_rows;
	b->topk_copied = nl > 0 && topk;
	b->sum_copied = nl > 0 && sum;
	b->logits_copied = nl > 0 && full;
	if (b->next_copied)
		op->to_host(be, b->h_next, b->d_next,
			    sizeof(int32_t) * (size_t)nl);
	if (b->topk_copied) {
		op->to_host(be, b->h_tkv, b->d_tkv,
			    sizeof(float) * (size_t)nl * b->tk);
		op->to_host(be, b->h_tki, b->d_tki,
			    sizeof(int32_t) * (size_t)nl * b->tk);
	}
	if (b->sum_copied)
		op->to_host(be, b->h_sum, b->d_sum, sizeof(double) * (size_t)nl);
	if (b->logits_copied)
		op->to_host(be, b->logits, b->logits_dev,
			    sizeof(float) * (size_t)nl * c->vocab_size);
	int fatal;
	if (backend_sync(be, &fatal, err, errlen) != 0) {
		b->fatal = fatal != 0;
		return -1;
	}
	if (model_files_changed(b->m, 0, err, errlen)) {
		b->fatal = 1; /* a truncated model file: see forward() */
		return -1;
	}
	return 0;
}

/* A top-p / min-p row without top-k: its candidates and softmax sum
 * settle the draw, or (a flat distribution) its logits row comes back. */
static finish_reason step_top(Batcher *b, BatchSeq *s, int row,
			      int32_t *next)
{
	int vocab = b->m->cfg.vocab_size;
	int32_t id = genrun_pick_top(&s->g, b->h_tkv + (size_t)row * b->tk,
				     b->h_tki + (size_t)row * b->tk,
				     b->h_sum[row]);
	if (id >= 0)
		return genrun_step_id(&s->g, id, next);
	float *lg = b->logits + (size_t)row * vocab;
	if (!b->logits_copied) {
		int fatal;
		b->be->ops->to_host(b->be, lg,
				    b->logits_dev + (size_t)row * vocab,
				    sizeof(float) * (size_t)vocab);
		if (backend_sync(b->be, &fatal, b->row_err,
				 sizeof b->row_err) != 0) {
			b->fatal |= fatal != 0;
			return FINISH_ERROR;
		}
	}
	return genrun_step(&s->g, lg, next);
}

int batcher_step(Batcher *b, char *err, size_t errlen)
{
	if (b->fatal) {
		while (b->n_act > 0)
			finish(b, b->act[0], FINISH_ERROR);
		if (!model_files_changed(b->m, 0, err, errlen))
			snprintf(err, errlen, "backend unusable after an "
				 "earlier fatal error");
		return -1;
	}
	int rows = plan(b);
	if (rows == 0)
		return 0;
	double t0 = b->stats ? now() : 0;
	if (forward_batch(b, rows, err, errlen) != 0) {
		for (int i = 0; i < b->n_items; i++)
			finish(b, b->items[i].s, FINISH_ERROR);
		while (b->fatal && b->n_act > 0)
			finish(b, b->act[0], FINISH_ERROR);
		return -1;
	}
	double t1 = b->stats ? now() : 0;
	int nl = 0;
	int vocab = b->m->cfg.vocab_size;
	for (int i = 0; i < b->n_items; i++) {
		Item *it = &b->items[i];
		BatchSeq *s = it->s;
		s->n_kv += it->n;
		if (!it->logit)
			continue;
		float *lg = b->logits + (size_t)nl * vocab;
		int32_t next = 0;
		finish_reason fin;
		if (b->next_copied && genrun_plain_greedy(&s->g))
			fin = genrun_step_id(&s->g, b->h_next[nl], &next);
		else if (b->topk_copied && genrun_topk(&s->g))
			fin = genrun_step_topk(&s->g,
					       b->h_tkv + (size_t)nl * b->tk,
					       b->h_tki + (size_t)nl * b->tk,
					       &next);
		else if (b->sum_copied && genrun_top(&s->g))
			fin = step_top(b, s, nl, &next);
		else
			fin = genrun_step(&s->g, lg, &next);
		nl++;
		if (!s->t_first)
			s->t_first = now();
		if (fin == FINISH_NONE)
			s->toks[s->n_toks++] = next;
		else
			finish(b, s, fin);
	}
	if (b->stats) {
		double t2 = now();
		b->st_steps++;
		b->st_rows += rows;
		b->st_fwd += t1 - t0;
		b->st_host += t2 - t1;
		if (b->st_steps == STATS_STEPS) {
			fprintf(stderr, "batch: %ld steps, %.1f rows/step, "
				"%d running: forward %.2f ms/step, sampling "
				"%.2f ms/step\n", b->st_steps,
				(double)b->st_rows / b->st_steps, b->n_act,
				b->st_fwd * 1e3 / b->st_steps,
				b->st_host * 1e3 / b->st_steps);
			b->st_steps = b->st_rows = 0;
			b->st_fwd = b->st_host = 0;
		}
	}
	if (b->row_err[0]) { /* that row's sequence ended with the error */
		snprintf(err, errlen, "%s", b->row_err);
		b->row_err[0] = 0;
		return -1;
	}
	return rows;
}
