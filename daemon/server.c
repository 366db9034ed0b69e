/*
 * server.c - inferd's event loop: the listening socket (own or handed over
 * by systemd), connections and their frames, request admission (limits,
 * queue, memory budget), replies coming back from the workers and the
 * database thread, idle unloading, signals and the drain on shutdown.
 *
 * Nothing here blocks: model loads, tokenization and generation run on the
 * workers (worker.c), the log on the database thread (db.c). The loop
 * only parses, checks, queues and copies ready-made frames to sockets.
 */
#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "frame.h"
#include "metrics.h"
#include "gguf.h"
#include "json.h"
#include "protocol.h"

const char *const op_names[OP_COUNT] = {
	"hello", "ping", "status", "models", "load", "unload", "generate",
	"tokenize", "detokenize", "cancel", "log", "shutdown", "metrics",
};

const DaemonConfig *daemon_cfg; /* read-only after start (workers use it) */
Db *daemon_db;                  /* the log (workers record models) */

/* A frame from a worker or the db thread on its way to a socket. */
typedef struct Event {
	Request *r;          /* whose */
	uint8_t *frame;      /* with its length prefix; may be NULL */
	size_t len;          /* bytes */
	int final;           /* the request's last event */
	struct Event *next;  /* queue link */
} Event;

/* In-flight requests per user, for --max-uid-requests. */
typedef struct UidCount {
	uid_t uid;           /* the user */
	int n;               /* requests in flight; 0 = free slot */
} UidCount;

typedef struct Conn {
	struct Daemon *d;        /* owner */
	struct bufferevent *bev; /* the socket and its buffers */
	uid_t uid;               /* SO_PEERCRED at accept */
	gid_t gid;               /* its group */
	pid_t pid;               /* its process */
	char exe[256];           /* /proc/<pid>/exe, "" if unreadable */
	Request *reqs;           /* requests in flight */
	int nreq;                /* their count */
	int closing;             /* close once the output is flushed */
	int free_scheduled;      /* conn_free queued on the loop */
	struct Conn *prev, *next; /* list of connections */
} Conn;

typedef struct Daemon {
	const DaemonConfig *cfg;    /* options */
	struct event_base *base;    /* the loop */
	struct evconnlistener *lis; /* accepting connections */
	struct event *ev_wake;      /* the eventfd is readable */
	struct event *ev_tick;      /* once a second: idle unloads */
	struct event *ev_drain;     /* shutdown timeout, then exit deadline */
	struct event *ev_sig[4];    /* TERM, INT, HUP, (unused) */
	int efd;                    /* eventfd: workers wake the loop */
	pthread_mutex_t qmu;        /* guards the event queue */
	Event *qhead, *qtail;       /* events from workers / db */
	Slot *slots[INFERD_MAX_MODELS]; /* known models */
	int nslots;                 /* how many */
	Conn *conns;                /* open connections */
	int nconns;                 /* their count */
	int inflight;               /* requests queued or running */
	UidCount uids[256];         /* per-user in-flight counts */
	int draining;               /* shutting down: accept nothing new */
	int closing_all;            /* drained: flushing and closing conns */
	int drain_stage;            /* drain timer firings so far */
	double t_start;             /* monotonic start time */
	char sock_path[108];        /* our socket (not with systemd) */
	char lock_path[120];        /* lock file beside it */
	int lock_fd;                /* held flock */
	int systemd;                /* socket came from LISTEN_FDS */
	double last_busy;           /* monotonic: last time a client was here */
	Metrics *metrics;           /* counters for the metrics op (NULL: none) */
	uid_t self_uid;             /* admin: this uid and root */
	char models_root[PATH_MAX]; /* realpath of --models-dir, "" without */
	char refused[INFERD_MAX_MODELS][PROTO_MAX_NAME + 1]; /* models-dir
				     * entries linking out of it */
	int n_refused;              /* how many */
} Daemon;

/* 1 when real (a resolved path) lies inside the resolved folder root. */
static int path_inside(const char *root, const char *real)
{
	size_t n = strlen(root);
	if (n == 1 && root[0] == '/')
		return real[0] == '/';
	return n > 0 && !strncmp(real, root, n) && real[n] == '/';
}

static void dlog(const char *fmt, ...)
{
	char ts[32];
	time_t t = time(NULL);
	struct tm tm;
	localtime_r(&t, &tm);
	strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "%s inferd: ", ts);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

void daemon_config_default(DaemonConfig *c)
{
	memset(c, 0, sizeof *c);
	c->socket_mode = 0600;
	c->keep_alive = 300;
	c->shutdown_timeout = 30;
	c->max_queue = 32;
	c->max_batch = 16;
	c->max_conn_requests = 16;
	c->max_uid_requests = 64;
	c->max_connections = 1024;
	c->max_tokens = 256;
	c->eng.backend = "auto";
	c->eng.quiet = 1;
}

/* ---- the event queue (any thread -> loop) ---- */

void daemon_post(Daemon *d, Request *r, uint8_t *frame, size_t len, int final)
{
	Event *e = malloc(sizeof *e);
	if (!e) {
		/* out of memory: a token can be dropped, a final cannot */
		free(frame);
		if (!final)
			return;
		for (;;) {
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
			if ((e = malloc(sizeof *e)))
				break;
		}
		frame = NULL;
		len = 0;
	}
	e->r = r;
	e->frame = frame;
	e->len = len;
	e->final = final;
	e->next = NULL;
	pthread_mutex_lock(&d->qmu);
	int was_empty = d->qhead == NULL;
	if (d->qtail)
		d->qtail->next = e;
	else
		d->qhead = e;
	d->qtail = e;
	pthread_mutex_unlock(&d->qmu);
	if (was_empty) {
		uint64_t one = 1;
		while (write(d->efd, &one, sizeof one) < 0 && errno == EINTR)
			;
	}
}

static void db_deliver(void *ctx, uint8_t *frame, size_t len)
{
	Request *r = ctx;
	daemon_post(r->d, r, frame, len, 1);
}

/* ---- requests ---- */

static UidCount *uid_slot(Daemon *d, uid_t uid, int create)
{
	UidCount *free_slot = NULL;
	for (size_t i = 0; i < sizeof d->uids / sizeof d->uids[0]; i++) {
		if (d->uids[i].n > 0 && d->uids[i].uid == uid)
			return &d->uids[i];
		if (!free_slot && d->uids[i].n == 0)
			free_slot = &d->uids[i];
	}
	if (create && free_slot)
		free_slot->uid = uid;
	return create ? free_slot : NULL;
}

static void request_free(Request *r)
{
	free(r->text);
	free(r->ids);
	for (int i = 0; i < ENGINE_MAX_STOP; i++)
		free(r->stop[i]);
	for (int i = 0; i < r->n_msgs; i++) {
		free(r->roles[i]);
		free(r->contents[i]);
	}
	free(r->roles);
	free(r->contents);
	free(r->system);
	free(r->tmpl);
	free(r);
}

static void conn_close(struct Conn *c);

/* Drained: let every connection flush what it was sent (the last "done"
 * or the shutdown's "ok"), then leave the loop when the last one closed
 * (or after 5 s for clients that do not read). */
static void maybe_exit(Daemon *d)
{
	if (!d->draining || d->inflight != 0 || d->closing_all)
		return;
	d->closing_all = 1;
	d->drain_stage = 1;
	struct timeval tv = { 5, 0 };
	event_add(d->ev_drain, &tv);
	for (struct Conn *c = d->conns, *next; c; c = next) {
		next = c->next;
		conn_close(c);
	}
	if (!d->conns)
		event_base_loopexit(d->base, NULL);
}

static void log_row(Daemon *d, const Request *r, const char *model)
{
	if (!daemon_db || r->op == OP_PING || r->op == OP_HELLO ||
	    r->op == OP_LOG || r->internal)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	DbRequest row = {
		.t_start = r->t_start_unix,
		.t_end = (double)ts.tv_sec + ts.tv_nsec * 1e-9,
		.uid = r->uid, .pid = r->pid, .exe = r->exe,
		.model = model, .op = r->op >= 0 && r->op < OP_COUNT ? op_names[r->op] : "?",
		.prompt_tokens = r->n_prompt, .gen_tokens = r->n_gen,
		.ttft_ms = r->ttft * 1e3,
		.total_ms = (mono_now() - r->t_start) * 1e3,
		.tok_s = r->tok_s, .finish = r->finish,
		.status = r->error[0] ? "error" : "ok", .error = r->error,
		.prompt = d->cfg->log_prompts && r->op == OP_GENERATE ? r->text : NULL,
	};
	db_log_request(daemon_db, &row);
}

/* The request's last event arrived (or it never left the loop). */
static void request_finish(Daemon *d, Request *r)
{
	Conn *c = r->conn;
	if (r->internal) {
		request_free(r);
		return;
	}
	log_row(d, r, r->model ? r->model->name : "");
	if (r->op != OP_HELLO && r->op >= 0 && r->op < OP_COUNT) {
		int gen = r->op == OP_GENERATE && r->n_gen > 0;
		metrics_request(d->metrics, r->model ? r->model->name : "",
				op_names[r->op], r->uid, !r->error[0], r->n_prompt,
				r->n_gen, gen ? r->ttft : -1, gen ? r->tok_s : 0);
	}
	if (c) {
		for (Request **pp = &c->reqs; *pp; pp = &(*pp)->cnext)
			if (*pp == r) {
				*pp = r->cnext;
				c->nreq--;
				break;
			}
	}
	UidCount *u = uid_slot(d, r->uid, 0);
	if (u)
		u->n--;
	d->inflight--;
	request_free(r);
	maybe_exit(d);
}

static void send_frame(Conn *c, const uint8_t *f, size_t len)
{
	if (!c || !f || c->closing)
		return;
	bufferevent_write(c->bev, f, len);
	/* a client that stops reading must not grow our memory forever */
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) >
	    (size_t)PROTO_MAX_FRAME * 16) {
		dlog("pid %d is not reading its replies; closing", (int)c->pid);
		conn_close(c);
	}
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	Daemon *d = arg;
	uint64_t v;
	if (read(d->efd, &v, sizeof v) < 0 && errno != EAGAIN)
		dlog("eventfd read: %s", strerror(errno));
	pthread_mutex_lock(&d->qmu);
	Event *e = d->qhead;
	d->qhead = d->qtail = NULL;
	pthread_mutex_unlock(&d->qmu);
	while (e) {
		Event *next = e->next;
		if (e->frame && e->r->conn)
			send_frame(e->r->conn, e->frame, e->len);
		free(e->frame);
		if (e->final) {
			if (e->r->internal && e->r->model)
				e->r->model->unload_pending = 0;
			request_finish(d, e->r);
		}
		free(e);
		e = next;
	}
}

/* Immediate reply helpers. */
static void reply_error(Conn *c, uint32_t id, const char *code,
			const char *msg, long position)
{
	size_t len;
	uint8_t *f = frame_error(id, code, msg, position, &len);
	send_frame(c, f, len);
	free(f);
}

/* End a Request that never reached a worker with an error. */
static void request_reject(Daemon *d, Request *r, const char *code,
			   const char *msg, long position)
{
	snprintf(r->error, sizeof r->error, "%s", msg);
	reply_error(r->conn, r->id, code, msg, position);
	request_finish(d, r);
}

/* ---- field access with clear errors ---- */

typedef struct Fields {
	const msgpack_object *map; /* the request */
	char err[256];             /* first problem found */
} Fields;

static int fail(Fields *f, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->err, sizeof f->err, fmt, ap);
	va_end(ap);
	return -1;
}

/* String field: 1 present (ptr/len set), 0 absent, -1 bad. */
static int f_str(Fields *f, const char *key, int required, size_t max,
		 const char **p, size_t *len)
{
	const msgpack_object *o = proto_field(f->map, key);
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return required ? fail(f, "missing field '%s'", key) : 0;
	if (o->type != MSGPACK_OBJECT_STR && o->type != MSGPACK_OBJECT_BIN)
		return fail(f, "field '%s' must be a string", key);
	if (o->via.str.size > max)
		return fail(f, "field '%s' is %u bytes, over the limit of %zu",
			    key, o->via.str.size, max);
	*p = o->via.str.ptr;
	*len = o->via.str.size;
	return 1;
}

static int f_int(Fields *f, const char *key, int64_t lo, int64_t hi,
		 int64_t *v)
{
	const msgpack_object *o = proto_field(f->map, key);
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return 0;
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		if (o->via.u64 > (uint64_t)INT64_MAX || (int64_t)o->via.u64 > hi)
			return fail(f, "field '%s' must be at most %lld", key,
				    (long long)hi);
		*v = (int64_t)o->via.u64;
	} else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		*v = o->via.i64;
	} else {
		return fail(f, "field '%s' must be an integer", key);
	}
	if (*v < lo || *v > hi)
		return fail(f, "field '%s' must be in %lld..%lld", key,
			    (long long)lo, (long long)hi);
	return 1;
}

static int f_float(Fields *f, const char *key, double lo, double hi,
		   float *v)
{
	const msgpack_object *o = proto_field(f->map, key);
	double x;
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return 0;
	if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
		x = o->via.f64;
	else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		x = (double)o->via.u64;
	else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		x = (double)o->via.i64;
	else
		return fail(f, "field '%s' must be a number", key);
	if (!(x >= lo && x <= hi))
		return fail(f, "field '%s' must be in %g..%g", key, lo, hi);
	*v = (float)x;
	return 1;
}

static int f_bool(Fields *f, const char *key, int *v)
{
	const msgpack_object *o = proto_field(f->map, key);
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return 0;
	if (o->type != MSGPACK_OBJECT_BOOLEAN)
		return fail(f, "field '%s' must be a boolean", key);
	*v = o->via.boolean;
	return 1;
}

static char *dup_mem(const char *p, size_t n)
{
	char *s = malloc(n + 1);
	if (s) {
		memcpy(s, p, n);
		s[n] = 0;
	}
	return s;
}

/* ---- models ---- */

static Slot *find_slot(Daemon *d, const char *p, size_t n)
{
	for (int i = 0; i < d->nslots; i++)
		if (strlen(d->slots[i]->name) == n && !memcmp(d->slots[i]->name, p, n))
			return d->slots[i];
	return NULL;
}

static const char *state_name(int s)
{
	return s == MS_LOADED ? "loaded" : s == MS_LOADING ? "loading" : "unloaded";
}

uint64_t daemon_mem_used(Daemon *d)
{
	uint64_t used = 0;
	for (int i = 0; i < d->nslots; i++) {
		pthread_mutex_lock(&d->slots[i]->mu);
		if (d->slots[i]->state != MS_UNLOADED)
			used += d->slots[i]->est_bytes;
		pthread_mutex_unlock(&d->slots[i]->mu);
	}
	return used;
}

/* ---- admission ---- */

static Request *request_new(Conn *c, uint32_t id, int op)
{
	Request *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	r->id = id;
	r->d = c->d;
	r->op = op;
	r->conn = c;
	r->uid = c->uid;
	r->pid = c->pid;
	r->keep_alive = -2;
	snprintf(r->exe, sizeof r->exe, "%s", c->exe);
	r->t_start = mono_now();
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	r->t_start_unix = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
	/* tracked from now on: finish/reject undo these */
	r->cnext = c->reqs;
	c->reqs = r;
	c->nreq++;
	UidCount *u = uid_slot(c->d, c->uid, 1);
	if (u)
		u->n++;
	c->d->inflight++;
	return r;
}

/* Checks every request that will queue passes; 0 or rejected. */
static int admit(Daemon *d, Conn *c, Request *r)
{
	char msg[256];
	UidCount *u = uid_slot(d, c->uid, 0);
	if (d->draining) {
		request_reject(d, r, PROTO_E_SHUTDOWN, "inferd is shutting down", -1);
		return -1;
	}
	if (c->nreq > d->cfg->max_conn_requests) {
		snprintf(msg, sizeof msg, "%d requests in flight on this "
			 "connection, the limit is %d", c->nreq - 1,
			 d->cfg->max_conn_requests);
		request_reject(d, r, PROTO_E_BUSY, msg, -1);
		return -1;
	}
	if (u && u->n > d->cfg->max_uid_requests) {
		snprintf(msg, sizeof msg, "uid %u has %d requests in flight, the "
			 "limit is %d", (unsigned)c->uid, u->n - 1,
			 d->cfg->max_uid_requests);
		request_reject(d, r, PROTO_E_BUSY, msg, -1);
		return -1;
	}
	return 0;
}

/* Queue r on slot m (after the budget check for an unloaded model). */
static void enqueue(Daemon *d, Slot *m, Request *r)
{
	char msg[320];
	pthread_mutex_lock(&m->mu);
	int ahead = m->qlen + (m->running != NULL);
	int qlen = m->qlen;
	int state = m->state;
	int batching = m->batching;
	pthread_mutex_unlock(&m->mu);
	r->model = m;
	if (qlen >= d->cfg->max_queue) {
		snprintf(msg, sizeof msg, "model %s has %d requests waiting (limit "
			 "%d); this one would be number %d", m->name, qlen,
			 d->cfg->max_queue, ahead + 1);
		request_reject(d, r, PROTO_E_BUSY, msg, ahead);
		return;
	}
	if (r->op != OP_UNLOAD && state == MS_UNLOADED && d->cfg->mem_budget) {
		uint64_t used = daemon_mem_used(d);
		if (used + m->est_bytes > d->cfg->mem_budget) {
			snprintf(msg, sizeof msg, "model %s needs %.1f MiB but %.1f "
				 "MiB of the %.1f MiB budget are in use (%.1f MiB "
				 "free)", m->name, m->est_bytes / 1048576.0,
				 used / 1048576.0, d->cfg->mem_budget / 1048576.0,
				 (d->cfg->mem_budget - used) / 1048576.0);
			request_reject(d, r, PROTO_E_MEMORY, msg, -1);
			return;
		}
		/* reserve it now so the next admission counts it */
		pthread_mutex_lock(&m->mu);
		if (m->state == MS_UNLOADED)
			m->state = MS_LOADING;
		pthread_mutex_unlock(&m->mu);
	}
	if (ahead > 0 && r->op == OP_GENERATE && !batching) {
		/* one at a time: behind everything; a batching worker tells
		 * fair positions itself */
		r->qpos_told = ahead + 1;
		size_t len;
		uint8_t *f = frame_queued(r->id, ahead, &len);
		send_frame(r->conn, f, len);
		free(f);
	}
	worker_push(m, r);
}

/* Parse the fields of generate into r. 0 or -1 (f->err). */
/* A chat template file a request names: inferd reads it with its own
 * rights, so only a file name (no '/', no leading '.') in the models
 * directory is accepted, resolved there with realpath and kept only when
 * the result (links followed) is still inside. The resolved path goes to
 * *out. 0, or -1 with a message. */
static int template_file(Daemon *d, const char *p, size_t n, char **out,
			 Fields *f)
{
	int k = n > 200 ? 200 : (int)n;
	if (!d->models_root[0])
		return fail(f, "chat template '%.*s': inferd reads template files "
			    "only from its --models-dir, and it has none; name a "
			    "family (chatml, llama2, llama3, mistral, zephyr, "
			    "gemma, phi3)", k, p);
	if (memchr(p, '/', n) || p[0] == '.')
		return fail(f, "chat template '%.*s': name a .jinja file in the "
			    "models directory (no '/', no leading '.'); paths "
			    "are not accepted", k, p);
	char path[PATH_MAX], real[PATH_MAX];
	struct stat st;
	if (snprintf(path, sizeof path, "%s/%.*s", d->models_root, (int)n, p) >=
	    (int)sizeof path)
		return fail(f, "chat template name too long");
	if (!realpath(path, real))
		return fail(f, "chat template '%.*s' is not in the models "
			    "directory (%s)", k, p, strerror(errno));
	if (!path_inside(d->models_root, real))
		return fail(f, "chat template '%.*s' links outside the models "
			    "directory; refused", k, p);
	if (stat(real, &st) < 0 || !S_ISREG(st.st_mode))
		return fail(f, "chat template '%.*s' is not a regular file", k, p);
	if (!(*out = strdup(real)))
		return fail(f, "out of memory");
	return 0;
}

static int parse_generate(Daemon *d, Fields *f, Request *r)
{
	const char *p;
	size_t n;
	int64_t iv;
	int b = 0;
	gen_params_default(&r->gp);
	r->gp.max_tokens = d->cfg->max_tokens;
	const msgpack_object *msgs = proto_field(f->map, "messages");
	int hp = f_str(f, "prompt", 0, PROTO_MAX_PROMPT, &p, &n);
	if (hp < 0)
		return -1;
	if (hp && msgs)
		return fail(f, "give either 'prompt' or 'messages', not both");
	if (hp) {
		if (!(r->text = dup_mem(p, n)))
			return fail(f, "out of memory");
		r->text_len = n;
	} else if (msgs) {
		if (msgs->type != MSGPACK_OBJECT_ARRAY)
			return fail(f, "field 'messages' must be an array");
		uint32_t nm = msgs->via.array.size;
		if (nm == 0 || nm > PROTO_MAX_MESSAGES)
			return fail(f, "'messages' must hold 1..%d messages",
				    PROTO_MAX_MESSAGES);
		r->roles = calloc(nm, sizeof *r->roles);
		r->contents = calloc(nm, sizeof *r->contents);
		if (!r->roles || !r->contents)
			return fail(f, "out of memory");
		size_t total = 0;
		for (uint32_t i = 0; i < nm; i++) {
			Fields mf = { &msgs->via.array.ptr[i], "" };
			const char *rp, *cp;
			size_t rl, cl;
			if (mf.map->type != MSGPACK_OBJECT_MAP)
				return fail(f, "message %u is not a map", i);
			if (f_str(&mf, "role", 1, 32, &rp, &rl) < 0 ||
			    f_str(&mf, "content", 1, PROTO_MAX_PROMPT, &cp, &cl) < 0)
				return fail(f, "message %u: %s", i, mf.err);
			total += cl;
			if (total > PROTO_MAX_PROMPT)
				return fail(f, "messages hold more than %u bytes",
					    PROTO_MAX_PROMPT);
			r->roles[i] = dup_mem(rp, rl);
			r->contents[i] = dup_mem(cp, cl);
			r->n_msgs = (int)i + 1;
			if (!r->roles[i] || !r->contents[i])
				return fail(f, "out of memory");
		}
	} else {
		return fail(f, "generate needs 'prompt' or 'messages'");
	}
	int hs = f_str(f, "system", 0, PROTO_MAX_PROMPT, &p, &n);
	if (hs < 0)
		return -1;
	if (hs && !(r->system = dup_mem(p, n)))
		return fail(f, "out of memory");
	if ((hs = f_str(f, "template", 0, 4096, &p, &n)) < 0)
		return -1;
	if (hs && memchr(p, 0, n))
		return fail(f, "'template' contains a NUL byte");
	if (hs && (memchr(p, '/', n) || (n > 6 && !memcmp(p + n - 6, ".jinja", 6)))) {
		/* a file: the engine reads any path it is given */
		if (template_file(d, p, n, &r->tmpl, f) < 0)
			return -1;
	} else if (hs && !(r->tmpl = dup_mem(p, n))) {
		return fail(f, "out of memory");
	}
	SamplerParams *s = &r->gp.sampling;
	if (f_int(f, "max_tokens", 1, PROTO_MAX_TOKENS, &iv) < 0)
		return -1;
	else if (proto_field(f->map, "max_tokens"))
		r->gp.max_tokens = (int)iv;
	if (f_float(f, "temperature", 0, 100, &s->temperature) < 0 ||
	    f_float(f, "top_p", 0, 1, &s->top_p) < 0 ||
	    f_float(f, "min_p", 0, 1, &s->min_p) < 0 ||
	    f_float(f, "repeat_penalty", 0.01, 100, &s->repeat_penalty) < 0 ||
	    f_float(f, "freq_penalty", -100, 100, &s->freq_penalty) < 0 ||
	    f_float(f, "presence_penalty", -100, 100, &s->presence_penalty) < 0)
		return -1;
	int r1 = f_int(f, "top_k", 0, 1 << 20, &iv);
	if (r1 < 0)
		return -1;
	if (r1)
		s->top_k = (int)iv;
	if ((r1 = f_int(f, "penalty_last_n", 0, PROTO_MAX_TOKENS, &iv)) < 0)
		return -1;
	if (r1)
		s->penalty_last_n = (int)iv;
	if ((r1 = f_int(f, "seed", 0, INT64_MAX, &iv)) < 0)
		return -1;
	if (r1)
		s->seed = (uint64_t)iv;
	if ((r1 = f_bool(f, "ignore_eos", &b)) < 0)
		return -1;
	if (r1)
		r->gp.ignore_eos = b;
	if ((r1 = f_int(f, "keep_alive", -1, 365 * 86400, &iv)) < 0)
		return -1;
	if (r1)
		r->keep_alive = (int)iv;
	if ((r1 = f_int(f, "priority", -PRIO_MAX_ABS, PRIO_MAX_ABS, &iv)) < 0)
		return -1;
	/* per-uid policy: anyone may lower their own priority, only the
	 * daemon's uid and root may raise one above the default 0 */
	if (r1)
		r->priority = iv > 0 && r->uid != 0 && r->uid != d->self_uid
				      ? 0 : (int)iv;
	const msgpack_object *st = proto_field(f->map, "stop");
	if (st && st->type != MSGPACK_OBJECT_NIL) {
		if (st->type != MSGPACK_OBJECT_ARRAY)
			return fail(f, "field 'stop' must be an array of strings");
		if (st->via.array.size > PROTO_MAX_STOP)
			return fail(f, "at most %d stop strings", PROTO_MAX_STOP);
		for (uint32_t i = 0; i < st->via.array.size; i++) {
			const msgpack_object *o = &st->via.array.ptr[i];
			if (o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0 ||
			    o->via.str.size > 256)
				return fail(f, "stop string %u must be a string of "
					    "1..256 bytes", i);
			if (!(r->stop[i] = dup_mem(o->via.str.ptr, o->via.str.size)))
				return fail(f, "out of memory");
			r->gp.stop[i] = r->stop[i];
			r->gp.n_stop = (int)i + 1;
		}
	}
	return 0;
}

/* ---- status / models replies (built on the loop: small) ---- */

static void reply_ok_empty(Conn *c, uint32_t id)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t len;
	frame_reply(&sb, &pk, id, "ok", 0);
	uint8_t *f = frame_end(&sb, &len);
	send_frame(c, f, len);
	free(f);
}

/* ps order: by model, running before queued, then queue position. */
static int ps_cmp(const void *pa, const void *pb)
{
	const Request *a = *(Request *const *)pa, *b = *(Request *const *)pb;
	if (a->model != b->model)
		return strcmp(a->model->name, b->model->name);
	int sa = atomic_load(&a->sched_state), sb = atomic_load(&b->sched_state);
	if (sa != sb)
		return sb - sa;
	if (sa == REQ_QUEUED) {
		int pa_ = atomic_load(&a->sched_pos), pb_ = atomic_load(&b->sched_pos);
		if (pa_ != pb_)
			return pa_ - pb_;
	}
	return a->t_start < b->t_start ? -1 : a->t_start > b->t_start;
}

/* The generates in flight, for ps: who, which model, running or where
 * in the queue. */
static void pack_requests(Daemon *d, msgpack_packer *pk)
{
	int n = 0;
	for (Conn *c = d->conns; c; c = c->next)
		for (Request *r = c->reqs; r; r = r->cnext)
			n += r->op == OP_GENERATE && r->model != NULL;
	Request **v = n ? malloc(sizeof *v * (size_t)n) : NULL;
	if (!v)
		n = 0;
	int k = 0;
	for (Conn *c = d->conns; c && k < n; c = c->next)
		for (Request *r = c->reqs; r && k < n; r = r->cnext)
			if (r->op == OP_GENERATE && r->model)
				v[k++] = r;
	if (k > 1)
		qsort(v, (size_t)k, sizeof *v, ps_cmp);
	double t = mono_now();
	msgpack_pack_array(pk, (size_t)k);
	for (int i = 0; i < k; i++) {
		Request *r = v[i];
		int st = atomic_load(&r->sched_state);
		msgpack_pack_map(pk, 9);
		frame_str(pk, "id");
		msgpack_pack_uint32(pk, r->id);
		frame_str(pk, "priority");
		msgpack_pack_int(pk, r->priority);
		frame_str(pk, "uid");
		msgpack_pack_uint32(pk, (uint32_t)r->uid);
		frame_str(pk, "pid");
		msgpack_pack_int(pk, (int)r->pid);
		frame_str(pk, "model");
		frame_str(pk, r->model->name);
		frame_str(pk, "state");
		frame_str(pk, st == REQ_RUNNING ? "running" : "queued");
		frame_str(pk, "position");
		msgpack_pack_int(pk, st == REQ_RUNNING ? 0 :
				 atomic_load(&r->sched_pos));
		frame_str(pk, "gen_tokens");
		msgpack_pack_int(pk, atomic_load(&r->live_gen));
		frame_str(pk, "age");
		msgpack_pack_double(pk, t - r->t_start);
	}
	free(v);
}

static void reply_status(Daemon *d, Conn *c, uint32_t id)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t len;
	/* device memory: the latest sample of any loaded model's backend */
	uint64_t dtotal = 0, dfree = 0;
	for (int i = 0; i < d->nslots; i++) {
		pthread_mutex_lock(&d->slots[i]->mu);
		if (d->slots[i]->dev_total && d->slots[i]->state == MS_LOADED) {
			dtotal = d->slots[i]->dev_total;
			dfree = d->slots[i]->dev_free;
		}
		pthread_mutex_unlock(&d->slots[i]->mu);
	}
	frame_reply(&sb, &pk, id, "ok", 13);
	frame_str(&pk, "log_dropped");
	msgpack_pack_uint64(&pk, daemon_db ? db_dropped(daemon_db) : 0);
	frame_str(&pk, "requests");
	pack_requests(d, &pk);
	frame_str(&pk, "version");
	frame_str(&pk, INFERD_VERSION);
	frame_str(&pk, "pid");
	msgpack_pack_int(&pk, (int)getpid());
	frame_str(&pk, "uptime");
	msgpack_pack_double(&pk, mono_now() - d->t_start);
	frame_str(&pk, "backend");
	frame_str(&pk, d->cfg->eng.backend ? d->cfg->eng.backend : "auto");
	frame_str(&pk, "mem_budget");
	msgpack_pack_uint64(&pk, d->cfg->mem_budget);
	frame_str(&pk, "mem_used");
	msgpack_pack_uint64(&pk, daemon_mem_used(d));
	frame_str(&pk, "device_total");
	msgpack_pack_uint64(&pk, dtotal);
	frame_str(&pk, "device_free");
	msgpack_pack_uint64(&pk, dfree);
	frame_str(&pk, "connections");
	msgpack_pack_int(&pk, d->nconns);
	frame_str(&pk, "inflight");
	msgpack_pack_int(&pk, d->inflight);
	frame_str(&pk, "models");
	msgpack_pack_array(&pk, (size_t)d->nslots);
	for (int i = 0; i < d->nslots; i++) {
		Slot *m = d->slots[i];
		pthread_mutex_lock(&m->mu);
		/* like ollama ps: when an idle loaded model will be unloaded;
		 * -1 never (keep_alive -1), -2 busy or not loaded */
		double left = -2;
		if (m->state == MS_LOADED && !m->qhead && !m->running)
			left = m->keep_alive < 0 ? -1 :
			       fmax(0, m->keep_alive - (mono_now() - m->last_used));
		msgpack_pack_map(&pk, 8);
		frame_str(&pk, "name");
		frame_str(&pk, m->name);
		frame_str(&pk, "state");
		frame_str(&pk, state_name(m->state));
		frame_str(&pk, "device");
		frame_str(&pk, m->device);
		frame_str(&pk, "keep_alive");
		msgpack_pack_int(&pk, m->keep_alive);
		frame_str(&pk, "unload_in");
		msgpack_pack_double(&pk, left);
		frame_str(&pk, "queue");
		msgpack_pack_int(&pk, m->qlen);
		frame_str(&pk, "active");
		msgpack_pack_int(&pk, m->n_active);
		frame_str(&pk, "bytes");
		msgpack_pack_uint64(&pk, m->est_bytes);
		pthread_mutex_unlock(&m->mu);
	}
	uint8_t *f = frame_end(&sb, &len);
	send_frame(c, f, len);
	free(f);
}

/* Add one to uid's count in uids/counts (at most 64 users listed). */
static void count_uid(uid_t *uids, int *counts, int *nu, uid_t uid)
{
	int k = 0;
	while (k < *nu && uids[k] != uid)
		k++;
	if (k == *nu) {
		if (*nu == 64)
			return; /* more users than that: not listed */
		uids[k] = uid;
		counts[(*nu)++] = 0;
	}
	counts[k]++;
}

/* Prometheus text: gauges of the present state, then metrics.c's
 * counters and histograms of finished requests. */
static void reply_metrics(Daemon *d, Conn *c, uint32_t id)
{
	char *text = NULL;
	size_t tlen = 0;
	FILE *out = open_memstream(&text, &tlen);
	if (!out) {
		reply_error(c, id, PROTO_E_INTERNAL, "out of memory", -1);
		return;
	}
	fprintf(out, "# HELP inferd_up_seconds Time since inferd started.\n"
		"# TYPE inferd_up_seconds gauge\ninferd_up_seconds %.3f\n",
		mono_now() - d->t_start);
	fprintf(out, "# HELP inferd_connections Open client connections.\n"
		"# TYPE inferd_connections gauge\ninferd_connections %d\n"
		"# HELP inferd_requests_in_flight Requests queued or running.\n"
		"# TYPE inferd_requests_in_flight gauge\n"
		"inferd_requests_in_flight %d\n", d->nconns, d->inflight);
	fputs("# HELP inferd_user_requests_in_flight Requests queued or "
	      "running, by user.\n# TYPE inferd_user_requests_in_flight gauge\n",
	      out);
	for (size_t i = 0; i < sizeof d->uids / sizeof d->uids[0]; i++)
		if (d->uids[i].n > 0)
			fprintf(out, "inferd_user_requests_in_flight{uid=\"%u\"} %d\n",
				(unsigned)d->uids[i].uid, d->uids[i].n);
	fprintf(out, "# HELP inferd_models_memory_bytes Bytes charged to the "
		"memory budget by loaded models.\n"
		"# TYPE inferd_models_memory_bytes gauge\n"
		"inferd_models_memory_bytes %llu\n"
		"# HELP inferd_memory_budget_bytes --mem-budget (0: none).\n"
		"# TYPE inferd_memory_budget_bytes gauge\n"
		"inferd_memory_budget_bytes %llu\n",
		(unsigned long long)daemon_mem_used(d),
		(unsigned long long)d->cfg->mem_budget);
	static const char *const gauges[][2] = {
		{ "inferd_model_loaded", "1 when the model is loaded." },
		{ "inferd_model_queue_depth", "Requests waiting for the model." },
		{ "inferd_model_running", "Requests the model is running." },
		{ "inferd_model_bytes", "Bytes the model is charged." },
		{ "inferd_device_memory_total_bytes",
		  "Device memory of the model's backend (0: CPU)." },
		{ "inferd_device_memory_free_bytes",
		  "Free device memory after the model's last job." },
	};
	for (size_t g = 0; g < sizeof gauges / sizeof gauges[0]; g++) {
		fprintf(out, "# HELP %s %s\n# TYPE %s gauge\n", gauges[g][0],
			gauges[g][1], gauges[g][0]);
		for (int i = 0; i < d->nslots; i++) {
			Slot *m = d->slots[i];
			pthread_mutex_lock(&m->mu);
			unsigned long long v =
				g == 0 ? m->state == MS_LOADED :
				g == 1 ? (unsigned long long)m->qlen :
				g == 2 ? m->running != NULL :
				g == 3 ? m->est_bytes :
				m->state != MS_LOADED ? 0 :
				g == 4 ? m->dev_total : m->dev_free;
			pthread_mutex_unlock(&m->mu);
			fprintf(out, "%s{model=\"", gauges[g][0]);
			metrics_label(out, m->name);
			fprintf(out, "\"} %llu\n", v);
		}
	}
	/* waiting requests per model and user (the queues are short) */
	fputs("# HELP inferd_model_user_queue_depth Requests waiting for the "
	      "model, by user.\n# TYPE inferd_model_user_queue_depth gauge\n", out);
	for (int i = 0; i < d->nslots; i++) {
		Slot *m = d->slots[i];
		uid_t uids[64];
		int counts[64], nu = 0;
		pthread_mutex_lock(&m->mu);
		/* waiting = still in the arrival queue, or taken by the
		 * worker's scheduler but not started (wait[], counted in
		 * qlen too) */
		for (Request *r = m->qhead; r; r = r->qnext)
			if (!r->internal)
				count_uid(uids, counts, &nu, r->uid);
		for (int w = 0; w < m->n_wait; w++)
			if (!m->wait[w]->internal)
				count_uid(uids, counts, &nu, m->wait[w]->uid);
		pthread_mutex_unlock(&m->mu);
		for (int k = 0; k < nu; k++) {
			fputs("inferd_model_user_queue_depth{model=\"", out);
			metrics_label(out, m->name);
			fprintf(out, "\",uid=\"%u\"} %d\n", (unsigned)uids[k], counts[k]);
		}
	}
	if (d->metrics)
		metrics_render(d->metrics, out);
	if (fclose(out) != 0 || tlen > PROTO_MAX_FRAME - 64) {
		free(text);
		reply_error(c, id, PROTO_E_INTERNAL, "metrics text too large", -1);
		return;
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t len;
	frame_reply(&sb, &pk, id, "ok", 1);
	frame_str(&pk, "prometheus");
	msgpack_pack_str(&pk, tlen);
	msgpack_pack_str_body(&pk, text, tlen);
	free(text);
	uint8_t *f = frame_end(&sb, &len);
	send_frame(c, f, len);
	free(f);
}

static void reply_models(Daemon *d, Conn *c, uint32_t id)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t len;
	frame_reply(&sb, &pk, id, "ok", 1);
	frame_str(&pk, "models");
	msgpack_pack_array(&pk, (size_t)d->nslots);
	for (int i = 0; i < d->nslots; i++) {
		Slot *m = d->slots[i];
		pthread_mutex_lock(&m->mu);
		msgpack_pack_map(&pk, 10);
		frame_str(&pk, "name");
		frame_str(&pk, m->name);
		frame_str(&pk, "path");
		frame_str(&pk, m->path);
		frame_str(&pk, "format");
		frame_str(&pk, m->format);
		frame_str(&pk, "state");
		frame_str(&pk, state_name(m->state));
		frame_str(&pk, "bytes");
		msgpack_pack_uint64(&pk, m->est_bytes);
		frame_str(&pk, "arch");
		frame_str(&pk, m->arch);
		frame_str(&pk, "quant");
		frame_str(&pk, m->quant);
		frame_str(&pk, "ctx");
		msgpack_pack_int(&pk, m->ctx);
		frame_str(&pk, "params");
		msgpack_pack_uint64(&pk, m->params);
		frame_str(&pk, "keep_alive");
		msgpack_pack_int(&pk, m->keep_alive);
		pthread_mutex_unlock(&m->mu);
	}
	uint8_t *f = frame_end(&sb, &len);
	send_frame(c, f, len);
	free(f);
}

static void begin_drain(Daemon *d, const char *why);

static int is_admin(const Daemon *d, const Conn *c)
{
	return c->uid == 0 || c->uid == d->self_uid;
}

/* ---- one frame ---- */

static void handle_request(Conn *c, const msgpack_object *root)
{
	Daemon *d = c->d;
	Fields f = { root, "" };
	char msg[320];
	const msgpack_object *ido = proto_field(root, "id");
	const msgpack_object *opo = proto_field(root, "op");
	if (!ido || ido->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
	    ido->via.u64 == 0 || ido->via.u64 > UINT32_MAX) {
		reply_error(c, 0, PROTO_E_BAD, "missing or invalid 'id' (an "
			    "unsigned integer 1..4294967295)", -1);
		return;
	}
	uint32_t id = (uint32_t)ido->via.u64;
	if (!opo || opo->type != MSGPACK_OBJECT_STR) {
		reply_error(c, id, PROTO_E_BAD, "missing or invalid 'op' (a string)", -1);
		return;
	}
	int op = -1;
	for (int i = 0; i < OP_COUNT; i++)
		if (strlen(op_names[i]) == opo->via.str.size &&
		    !memcmp(op_names[i], opo->via.str.ptr, opo->via.str.size))
			op = i;
	if (op < 0) {
		snprintf(msg, sizeof msg, "unknown op '%.*s'",
			 (int)(opo->via.str.size > 64 ? 64 : opo->via.str.size),
			 opo->via.str.ptr);
		reply_error(c, id, PROTO_E_OP, msg, -1);
		return;
	}
	switch (op) {
	case OP_HELLO: {
		int64_t v;
		int hv = f_int(&f, "version", 0, UINT32_MAX, &v);
		if (hv <= 0) {
			reply_error(c, id, PROTO_E_BAD, hv < 0 ? f.err :
				    "hello needs 'version'", -1);
			return;
		}
		if (v != PROTO_VERSION) {
			snprintf(msg, sizeof msg, "protocol version mismatch: "
				 "client speaks version %lld, inferd %s speaks "
				 "version %d", (long long)v, INFERD_VERSION,
				 PROTO_VERSION);
			reply_error(c, id, PROTO_E_VERSION, msg, -1);
			return;
		}
		msgpack_sbuffer sb;
		msgpack_packer pk;
		size_t len;
		frame_reply(&sb, &pk, id, "ok", 3);
		frame_str(&pk, "version");
		msgpack_pack_int(&pk, PROTO_VERSION);
		frame_str(&pk, "daemon");
		frame_str(&pk, INFERD_VERSION);
		frame_str(&pk, "pid");
		msgpack_pack_int(&pk, (int)getpid());
		uint8_t *fr = frame_end(&sb, &len);
		send_frame(c, fr, len);
		free(fr);
		return;
	}
	case OP_PING:
		reply_ok_empty(c, id);
		return;
	case OP_STATUS:
		reply_status(d, c, id);
		return;
	case OP_MODELS:
		reply_models(d, c, id);
		return;
	case OP_METRICS:
		reply_metrics(d, c, id);
		return;
	case OP_CANCEL: {
		int64_t t;
		int ht = f_int(&f, "target", 1, UINT32_MAX, &t);
		if (ht <= 0) {
			reply_error(c, id, PROTO_E_BAD, ht < 0 ? f.err :
				    "cancel needs 'target'", -1);
			return;
		}
		int found = 0;
		for (Request *r = c->reqs; r; r = r->cnext)
			if (r->id == (uint32_t)t) {
				atomic_store(&r->cancel, 1);
				found = 1;
			}
		msgpack_sbuffer sb;
		msgpack_packer pk;
		size_t len;
		frame_reply(&sb, &pk, id, "ok", 1);
		frame_str(&pk, "cancelled");
		found ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
		uint8_t *fr = frame_end(&sb, &len);
		send_frame(c, fr, len);
		free(fr);
		return;
	}
	case OP_SHUTDOWN:
		if (!is_admin(d, c)) {
			snprintf(msg, sizeof msg, "shutdown is for uid %u or root; "
				 "you are uid %u", (unsigned)d->self_uid,
				 (unsigned)c->uid);
			reply_error(c, id, PROTO_E_DENIED, msg, -1);
			return;
		}
		reply_ok_empty(c, id);
		dlog("shutdown requested by uid %u pid %d", (unsigned)c->uid,
		     (int)c->pid);
		begin_drain(d, "shutdown op");
		return;
	}
	/* the rest become tracked requests; their ids must be unique */
	for (Request *q = c->reqs; q; q = q->cnext)
		if (q->id == id) {
			snprintf(msg, sizeof msg, "request id %u is already in flight "
				 "on this connection", id);
			reply_error(c, id, PROTO_E_BAD, msg, -1);
			return;
		}
	Request *r = request_new(c, id, op);
	if (!r) {
		reply_error(c, id, PROTO_E_INTERNAL, "out of memory", -1);
		return;
	}
	if (admit(d, c, r) < 0)
		return;
	if (op == OP_LOG) {
		int64_t lim = 50;
		int all = 0;
		if (f_int(&f, "limit", 1, 10000, &lim) < 0 || f_bool(&f, "all", &all) < 0) {
			request_reject(d, r, PROTO_E_BAD, f.err, -1);
			return;
		}
		if (all && !is_admin(d, c)) {
			request_reject(d, r, PROTO_E_DENIED, "only the daemon's user "
				       "or root may read every user's log", -1);
			return;
		}
		if (!daemon_db) {
			request_reject(d, r, PROTO_E_INTERNAL, "no database", -1);
			return;
		}
		if (db_query_log(daemon_db, id, c->uid, all, (int)lim, db_deliver, r) < 0) {
			request_reject(d, r, PROTO_E_INTERNAL, "out of memory", -1);
		}
		return;
	}
	const char *mp;
	size_t ml;
	if (f_str(&f, "model", 1, PROTO_MAX_NAME, &mp, &ml) < 0) {
		request_reject(d, r, PROTO_E_BAD, f.err, -1);
		return;
	}
	Slot *m = find_slot(d, mp, ml);
	for (int i = 0; !m && i < d->n_refused; i++)
		if (strlen(d->refused[i]) == ml && !memcmp(d->refused[i], mp, ml)) {
			snprintf(msg, sizeof msg, "model '%.*s' is a link out of "
				 "the models directory; inferd does not follow "
				 "it", (int)ml, mp);
			request_reject(d, r, PROTO_E_DENIED, msg, -1);
			return;
		}
	if (!m) {
		/* names only: a path ("../x", "/etc/passwd") is no name */
		snprintf(msg, sizeof msg, "no model named '%.*s' (see the "
			 "models op)", (int)ml, mp);
		request_reject(d, r, PROTO_E_NOTFOUND, msg, -1);
		return;
	}
	int64_t iv;
	int b = 0, rc = 0;
	switch (op) {
	case OP_LOAD:
		if ((rc = f_int(&f, "keep_alive", -1, 365 * 86400, &iv)) > 0)
			r->keep_alive = (int)iv;
		break;
	case OP_UNLOAD:
		break;
	case OP_GENERATE:
		rc = parse_generate(d, &f, r);
		break;
	case OP_TOKENIZE: {
		const char *p;
		size_t n;
		r->add_bos = 1;
		if ((rc = f_str(&f, "text", 1, PROTO_MAX_PROMPT, &p, &n)) > 0) {
			if (!(r->text = dup_mem(p, n)))
				rc = fail(&f, "out of memory");
			r->text_len = n;
		}
		if (rc >= 0 && f_bool(&f, "add_bos", &b) > 0)
			r->add_bos = b;
		if (rc >= 0 && f_bool(&f, "special", &b) > 0)
			r->special = b;
		if (rc >= 0 && f.err[0])
			rc = -1;
		break;
	}
	case OP_DETOKENIZE: {
		const msgpack_object *t = proto_field(root, "tokens");
		if (!t || t->type != MSGPACK_OBJECT_ARRAY) {
			rc = fail(&f, "detokenize needs 'tokens' (an array of "
				  "integers)");
			break;
		}
		if (t->via.array.size > PROTO_MAX_TOKENS) {
			rc = fail(&f, "%u tokens, over the limit of %d",
				  t->via.array.size, PROTO_MAX_TOKENS);
			break;
		}
		r->ids = malloc((t->via.array.size + 1) * sizeof *r->ids);
		if (!r->ids) {
			rc = fail(&f, "out of memory");
			break;
		}
		for (uint32_t i = 0; i < t->via.array.size; i++) {
			const msgpack_object *o = &t->via.array.ptr[i];
			if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
			    o->via.u64 > INT32_MAX) {
				rc = fail(&f, "token %u is not a non-negative "
					  "integer", i);
				break;
			}
			r->ids[i] = (int32_t)o->via.u64;
		}
		r->n_ids = (int)t->via.array.size;
		break;
	}
	}
	if (rc < 0) {
		r->model = m;
		request_reject(d, r, PROTO_E_BAD, f.err, -1);
		return;
	}
	enqueue(d, m, r);
}

static void handle_frame(Conn *c, const uint8_t *buf, size_t len)
{
	char err[256];
	if (proto_validate(buf, len, PROTO_MAX_DEPTH, err, sizeof err) < 0) {
		reply_error(c, 0, PROTO_E_BAD, err, -1);
		return;
	}
	msgpack_zone zone;
	msgpack_object root;
	/* the validator bounded every count by len: the zone stays small */
	if (!msgpack_zone_init(&zone, len < 1024 ? 1024 : len)) {
		reply_error(c, 0, PROTO_E_INTERNAL, "out of memory", -1);
		return;
	}
	size_t off = 0;
	if (msgpack_unpack((const char *)buf, len, &off, &zone, &root) !=
	    MSGPACK_UNPACK_SUCCESS || root.type != MSGPACK_OBJECT_MAP) {
		reply_error(c, 0, PROTO_E_BAD, "invalid msgpack", -1);
	} else {
		handle_request(c, &root);
	}
	msgpack_zone_destroy(&zone);
}

/* ---- connections ---- */

static void conn_free(Conn *c)
{
	Daemon *d = c->d;
	Request *gone = NULL;
	/* cancel at once: queued jobs leave their queue, running ones stop
	 * at their next token */
	for (Request *r = c->reqs, *next; r; r = next) {
		next = r->cnext;
		r->conn = NULL;
		atomic_store(&r->cancel, 1);
		Slot *m = r->model;
		int removed = 0;
		if (m && r->op != OP_LOG) {
			pthread_mutex_lock(&m->mu);
			for (Request **pp = &m->qhead, *prev = NULL; *pp;
			     prev = *pp, pp = &(*pp)->qnext)
				if (*pp == r) {
					*pp = r->qnext;
					if (m->qtail == r)
						m->qtail = prev;
					m->qlen--;
					removed = 1;
					break;
				}
			if (removed && m->state == MS_LOADING && !m->eng &&
			    !m->running && !m->qhead)
				m->state = MS_UNLOADED;
			pthread_mutex_unlock(&m->mu);
		}
		if (removed) {
			r->cnext = gone;
			gone = r;
		}
	}
	c->reqs = NULL;
	while (gone) {
		Request *r = gone;
		gone = r->cnext;
		snprintf(r->finish, sizeof r->finish, "cancel");
		snprintf(r->error, sizeof r->error, "client disconnected");
		request_finish(d, r);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		d->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	d->nconns--;
	d->last_busy = mono_now();
	bufferevent_free(c->bev);
	free(c);
	if (d->closing_all && !d->conns)
		event_base_loopexit(d->base, NULL);
}

static void deferred_free(evutil_socket_t fd, short what, void *arg)
{
	conn_free(arg);
}

/* Free c from the loop, never from under a callback that still uses it. */
static void schedule_free(Conn *c)
{
	static const struct timeval zero = { 0, 0 };
	if (c->free_scheduled)
		return;
	c->free_scheduled = 1;
	if (event_base_once(c->d->base, -1, EV_TIMEOUT, deferred_free, c, &zero) < 0)
		dlog("cannot schedule a connection close");
}

static void on_flushed_close(struct bufferevent *bev, void *arg)
{
	schedule_free(arg);
}

static void on_closing_event(struct bufferevent *bev, short what, void *arg)
{
	schedule_free(arg);
}

/* Close after what is queued has been written. */
static void conn_close(Conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_setcb(c->bev, NULL, on_flushed_close, on_closing_event, c);
	size_t out = evbuffer_get_length(bufferevent_get_output(c->bev));
	/* nothing to flush, or a client that does not read: go now */
	if (out == 0 || out > (size_t)PROTO_MAX_FRAME * 16)
		schedule_free(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	Conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	while (!c->closing) {
		uint8_t hdr[PROTO_HDR];
		size_t have = evbuffer_get_length(in);
		if (have < PROTO_HDR)
			break;
		evbuffer_copyout(in, hdr, PROTO_HDR);
		uint32_t n = proto_get_len(hdr);
		if (n > PROTO_MAX_FRAME) {
			char msg[128];
			snprintf(msg, sizeof msg, "frame of %u bytes is over the "
				 "limit of %u; closing", n, PROTO_MAX_FRAME);
			reply_error(c, 0, PROTO_E_LIMIT, msg, -1);
			conn_close(c);
			return;
		}
		if (n == 0) {
			evbuffer_drain(in, PROTO_HDR);
			reply_error(c, 0, PROTO_E_BAD, "empty frame", -1);
			continue;
		}
		if (have < PROTO_HDR + (size_t)n)
			break;
		const uint8_t *p = evbuffer_pullup(in, PROTO_HDR + (ssize_t)n);
		if (!p) {
			reply_error(c, 0, PROTO_E_INTERNAL, "out of memory", -1);
			conn_close(c);
			return;
		}
		handle_frame(c, p + PROTO_HDR, n);
		evbuffer_drain(in, PROTO_HDR + (size_t)n);
	}
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		conn_free(arg);
}

static void on_accept(struct evconnlistener *lis, evutil_socket_t fd,
		      struct sockaddr *sa, int salen, void *arg)
{
	Daemon *d = arg;
	struct ucred cr;
	socklen_t cl = sizeof cr;
	if (d->nconns >= d->cfg->max_connections) {
		/* tell it why in one frame (a fresh socket buffer takes it
		 * without blocking), then hang up */
		char msg[96];
		size_t len;
		snprintf(msg, sizeof msg, "inferd has %d connections, the limit",
			 d->nconns);
		uint8_t *f = frame_error(0, PROTO_E_BUSY, msg, -1, &len);
		if (f && send(fd, f, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			dlog("refusing a connection: %s", strerror(errno));
		free(f);
		close(fd);
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0) {
		dlog("SO_PEERCRED: %s", strerror(errno));
		close(fd);
		return;
	}
	Conn *c = calloc(1, sizeof *c);
	if (!c) {
		close(fd);
		return;
	}
	c->d = d;
	c->uid = cr.uid;
	c->gid = cr.gid;
	c->pid = cr.pid;
	char link[64];
	snprintf(link, sizeof link, "/proc/%d/exe", (int)cr.pid);
	ssize_t n = readlink(link, c->exe, sizeof c->exe - 1);
	c->exe[n > 0 ? n : 0] = 0;
	c->bev = bufferevent_socket_new(d->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!c->bev) {
		close(fd);
		free(c);
		return;
	}
	bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	c->next = d->conns;
	if (d->conns)
		d->conns->prev = c;
	d->conns = c;
	d->nconns++;
}

/* accept() failed (out of fds): pause accepting for a second instead of
 * spinning on the readable listener. */
static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	Daemon *d = arg;
	if (!d->draining)
		evconnlistener_enable(d->lis);
}

static void on_accept_error(struct evconnlistener *lis, void *arg)
{
	Daemon *d = arg;
	static const struct timeval one = { 1, 0 };
	dlog("accept: %s; pausing for 1 s", strerror(errno));
	evconnlistener_disable(lis);
	if (event_base_once(d->base, -1, EV_TIMEOUT, on_accept_resume, d, &one) < 0)
		evconnlistener_enable(lis);
}

/* ---- timers, signals, drain ---- */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	Daemon *d = arg;
	double now = mono_now();
	for (int i = 0; i < d->nslots; i++) {
		Slot *m = d->slots[i];
		pthread_mutex_lock(&m->mu);
		int idle = m->state == MS_LOADED && !m->qhead && !m->running &&
			   m->keep_alive >= 0 && now - m->last_used >= m->keep_alive;
		pthread_mutex_unlock(&m->mu);
		if (idle && !m->unload_pending && !d->draining) {
			Request *r = calloc(1, sizeof *r);
			if (!r)
				continue;
			r->op = OP_UNLOAD;
			r->internal = 1;
			r->keep_alive = -2;
			m->unload_pending = 1;
			worker_push(m, r);
		}
	}
	/* --exit-idle: with socket activation the next client's connect
	 * waits in the listening socket (kept by systemd) and starts us
	 * again, so an idle daemon can give its memory back. */
	if (d->nconns || d->inflight)
		d->last_busy = now;
	else if (d->cfg->exit_idle > 0 && !d->draining &&
		 now - d->last_busy >= d->cfg->exit_idle)
		begin_drain(d, "idle");
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	Daemon *d = arg;
	if (d->drain_stage++) {
		dlog("requests still running after cancelling; exiting anyway");
		event_base_loopexit(d->base, NULL);
		return;
	}
	dlog("shutdown timeout: cancelling %d requests", d->inflight);
	for (Conn *c = d->conns; c; c = c->next)
		for (Request *r = c->reqs; r; r = r->cnext)
			atomic_store(&r->cancel, 1);
	struct timeval tv = { 5, 0 };
	event_add(d->ev_drain, &tv);
}

static void begin_drain(Daemon *d, const char *why)
{
	if (d->draining)
		return;
	d->draining = 1;
	dlog("%s: draining %d requests (at most %d s)", why, d->inflight,
	     d->cfg->shutdown_timeout);
	if (d->lis)
		evconnlistener_disable(d->lis);
	struct timeval tv = { d->cfg->shutdown_timeout, 0 };
	event_add(d->ev_drain, &tv);
	maybe_exit(d);
}

static int reopen_log(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	if (dup2(fd, 2) < 0) {
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	Daemon *d = arg;
	if (sig == SIGHUP) {
		if (d->cfg->log_file && reopen_log(d->cfg->log_file) < 0)
			dlog("cannot reopen %s: %s", d->cfg->log_file, strerror(errno));
		dlog("SIGHUP: log reopened");
		return;
	}
	begin_drain(d, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- the socket ---- */

static int make_listener(Daemon *d, char *err, size_t errlen)
{
	const DaemonConfig *cfg = d->cfg;
	const char *lp = getenv("LISTEN_PID"), *lf = getenv("LISTEN_FDS");
	if (lp && lf && atol(lp) == (long)getpid() && atoi(lf) >= 1) {
		/* systemd socket activation: the socket is fd 3 */
		unsetenv("LISTEN_PID");
		unsetenv("LISTEN_FDS");
		unsetenv("LISTEN_FDNAMES");
		int fd = 3;
		int type = 0;
		socklen_t tl = sizeof type;
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 ||
		    type != SOCK_STREAM) {
			snprintf(err, errlen, "LISTEN_FDS: fd 3 is not a stream socket");
			return -1;
		}
		evutil_make_socket_nonblocking(fd);
		evutil_make_socket_closeonexec(fd);
		d->systemd = 1;
		dlog("using the socket passed by systemd (fd 3)");
		return fd;
	}
	if (cfg->socket_path) {
		if (snprintf(d->sock_path, sizeof d->sock_path, "%s",
			     cfg->socket_path) >= (int)sizeof d->sock_path) {
			snprintf(err, errlen, "socket path too long: %s", cfg->socket_path);
			return -1;
		}
	} else if (proto_default_socket(d->sock_path, sizeof d->sock_path) < 0) {
		snprintf(err, errlen, "default socket path too long");
		return -1;
	}
	if (!cfg->socket_path && !getenv("XDG_RUNTIME_DIR")) {
		char dir[108];
		snprintf(dir, sizeof dir, "/tmp/inferd-%u", (unsigned)getuid());
		if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "mkdir %s: %s", dir, strerror(errno));
			return -1;
		}
	}
	snprintf(d->lock_path, sizeof d->lock_path, "%s.lock", d->sock_path);
	d->lock_fd = open(d->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (d->lock_fd < 0) {
		snprintf(err, errlen, "open %s: %s", d->lock_path, strerror(errno));
		return -1;
	}
	if (flock(d->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		char pid[32] = "";
		ssize_t n = pread(d->lock_fd, pid, sizeof pid - 1, 0);
		pid[n > 0 ? n : 0] = 0;
		pid[strcspn(pid, "\n")] = 0;
		snprintf(err, errlen, "another inferd (pid %s) is serving %s",
			 pid[0] ? pid : "?", d->sock_path);
		close(d->lock_fd);
		d->lock_fd = -1;
		return -1;
	}
	char pid[32];
	int pl = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
	if (ftruncate(d->lock_fd, 0) < 0 || pwrite(d->lock_fd, pid, (size_t)pl, 0) != pl)
		dlog("cannot write %s: %s", d->lock_path, strerror(errno));
	/* we hold the lock: whatever socket is there is stale */
	struct stat st;
	if (lstat(d->sock_path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "%s exists and is not a socket", d->sock_path);
			return -1;
		}
		unlink(d->sock_path);
		dlog("removed stale socket %s", d->sock_path);
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", d->sock_path);
	mode_t old = umask(0177); /* never world-accessible, even briefly */
	int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
	umask(old);
	if (rc < 0) {
		snprintf(err, errlen, "bind %s: %s", d->sock_path, strerror(errno));
		close(fd);
		return -1;
	}
	if (cfg->socket_group) {
		struct group *g = getgrnam(cfg->socket_group);
		if (!g || chown(d->sock_path, (uid_t)-1, g->gr_gid) < 0) {
			snprintf(err, errlen, "socket group %s: %s", cfg->socket_group,
				 g ? strerror(errno) : "no such group");
			close(fd);
			unlink(d->sock_path);
			return -1;
		}
	}
	if (chmod(d->sock_path, (mode_t)cfg->socket_mode) < 0 || listen(fd, 128) < 0) {
		snprintf(err, errlen, "%s: %s", d->sock_path, strerror(errno));
		close(fd);
		unlink(d->sock_path);
		return -1;
	}
	return fd;
}

/* ---- models from the command line and the models directory ---- */

static uint64_t path_bytes(const char *path, const char **format)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return 0;
	if (!S_ISDIR(st.st_mode)) {
		*format = "gguf";
		return (uint64_t)st.st_size;
	}
	*format = "hf";
	uint64_t total = 0;
	DIR *dir = opendir(path);
	if (!dir)
		return 0;
	struct dirent *e;
	while ((e = readdir(dir))) {
		size_t n = strlen(e->d_name);
		if (n > 12 && !strcmp(e->d_name + n - 12, ".safetensors")) {
			char p[PATH_MAX];
			if (snprintf(p, sizeof p, "%s/%s", path, e->d_name) < (int)sizeof p &&
			    stat(p, &st) == 0)
				total += (uint64_t)st.st_size;
		}
	}
	closedir(dir);
	return total;
}

/* Bytes of the f32 K and V caches a model will allocate: 2 x layers x
 * ctx x kv_heads x head_dim x 4, with ctx as engine_open picks it. Read
 * from config.json or the GGUF metadata without loading; 0 if unknown. */
static uint64_t kv_cache_bytes(const char *path, const char *format, int ctx_opt)
{
	uint64_t layers = 0, heads = 0, kv = 0, dim = 0, hd = 0, maxpos = 0;
	if (!strcmp(format, "hf")) {
		char cp[PATH_MAX + 16], err[256];
		snprintf(cp, sizeof cp, "%s/config.json", path);
		json_doc *doc = json_parse_file(cp, 1 << 20, err, sizeof err);
		if (!doc)
			return 0;
		const json_value *r = json_root(doc);
		layers = (uint64_t)json_num(json_get(r, "num_hidden_layers"), 0);
		heads = (uint64_t)json_num(json_get(r, "num_attention_heads"), 0);
		kv = (uint64_t)json_num(json_get(r, "num_key_value_heads"), (double)heads);
		dim = (uint64_t)json_num(json_get(r, "hidden_size"), 0);
		hd = (uint64_t)json_num(json_get(r, "head_dim"), 0);
		maxpos = (uint64_t)json_num(json_get(r, "max_position_embeddings"), 0);
		json_free(doc);
	} else {
		char err[256], key[160];
		gguf_file *g = gguf_open(path, err, sizeof err);
		gguf_str arch;
		if (!g)
			return 0;
		if (gguf_get_str(g, "general.architecture", &arch) && arch.len < 64) {
			char a[64];
			memcpy(a, arch.s, arch.len);
			a[arch.len] = 0;
#define GET(name, var) (snprintf(key, sizeof key, "%s." name, a), gguf_get_u64(g, key, &var))
			GET("block_count", layers);
			GET("attention.head_count", heads);
			kv = heads;
			GET("attention.head_count_kv", kv);
			GET("embedding_length", dim);
			GET("attention.key_length", hd);
			GET("context_length", maxpos);
#undef GET
		}
		gguf_close(g);
	}
	if (!hd && heads)
		hd = dim / heads;
	uint64_t ctx = ctx_opt > 0 ? (uint64_t)ctx_opt : maxpos < 4096 ? maxpos : 4096;
	if (!layers || !kv || !hd || !ctx || layers > 1024 || kv * hd > (1u << 20) ||
	    ctx > (1u << 24))
		return 0;
	return 2 * layers * ctx * kv * hd * sizeof(float);
}

static int add_slot(Daemon *d, const char *name, size_t nlen, const char *path,
		    char *err, size_t errlen)
{
	if (nlen == 0 || nlen > PROTO_MAX_NAME) {
		snprintf(err, errlen, "model name '%.*s' must be 1..%d bytes",
			 (int)(nlen > 200 ? 200 : nlen), name, PROTO_MAX_NAME);
		return -1;
	}
	if (find_slot(d, name, nlen))
		return 0; /* --model wins over the directory */
	if (d->nslots == INFERD_MAX_MODELS) {
		snprintf(err, errlen, "more than %d models", INFERD_MAX_MODELS);
		return -1;
	}
	Slot *m = calloc(1, sizeof *m);
	if (!m) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	memcpy(m->name, name, nlen);
	if (!realpath(path, m->path)) {
		snprintf(err, errlen, "model %s: %s: %s", m->name, path, strerror(errno));
		free(m);
		return -1;
	}
	m->d = d;
	m->format = "?";
	/* the budget's charge: weights as on disk plus the KV cache */
	m->est_bytes = path_bytes(m->path, &m->format) +
		       kv_cache_bytes(m->path, m->format, d->cfg->eng.ctx);
	m->keep_alive = d->cfg->keep_alive;
	if (worker_start(m, err, errlen) < 0) {
		free(m);
		return -1;
	}
	d->slots[d->nslots++] = m;
	DbModel dm = { m->name, m->path, m->format, NULL, NULL, 0, m->est_bytes, 0, 0 };
	if (daemon_db)
		db_log_model(daemon_db, &dm);
	return 0;
}

/* The first entry of folder dir (an HF model) that resolves out of root,
 * in out; 0 when none does. */
static int links_out(const char *root, const char *dir, char *out,
		     size_t outlen)
{
	DIR *dp = opendir(dir);
	if (!dp)
		return 0;
	struct dirent *e;
	int found = 0;
	while (!found && (e = readdir(dp))) {
		char p[PATH_MAX], real[PATH_MAX];
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
		    snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p)
			continue;
		if (realpath(p, real) && !path_inside(root, real)) {
			snprintf(out, outlen, "%s", e->d_name);
			found = 1;
		}
	}
	closedir(dp);
	return found;
}

int slot_confined(const Slot *m, char *err, size_t errlen)
{
	const Daemon *d = m->d;
	char real[PATH_MAX], name[256];
	if (!m->confined)
		return 0;
	/* the scan resolved m->path: a link put in since shows as a
	 * different realpath */
	if (!realpath(m->path, real) || strcmp(real, m->path) ||
	    !path_inside(d->models_root, real)) {
		snprintf(err, errlen, "model %s: %s is no longer a file inside "
			 "the models directory (a link was put in); refused",
			 m->name, m->path);
		return -1;
	}
	if (!strcmp(m->format, "hf") &&
	    links_out(d->models_root, m->path, name, sizeof name)) {
		snprintf(err, errlen, "model %s: %s/%s links out of the models "
			 "directory; refused", m->name, m->path, name);
		return -1;
	}
	return 0;
}

/* Every *.gguf file and HF folder in dir is a model named after it. An
 * entry that is a link is followed only when its target (realpath) stays
 * inside dir: a link out is refused (logged, and a request naming it is
 * told why), so whoever can write to the folder cannot make inferd read
 * files elsewhere with its rights. Links inside (aliases) are models. */
static int scan_models_dir(Daemon *d, const char *dir, char *err, size_t errlen)
{
	if (!realpath(dir, d->models_root)) {
		snprintf(err, errlen, "models dir %s: %s", dir, strerror(errno));
		d->models_root[0] = 0;
		return -1;
	}
	DIR *dp = opendir(d->models_root);
	if (!dp) {
		snprintf(err, errlen, "models dir %s: %s", dir, strerror(errno));
		return -1;
	}
	struct dirent *e;
	int rc = 0;
	while (rc == 0 && (e = readdir(dp))) {
		if (e->d_name[0] == '.')
			continue;
		char p[PATH_MAX], cfgp[PATH_MAX + 16], real[PATH_MAX];
		struct stat st;
		if (snprintf(p, sizeof p, "%s/%s", d->models_root, e->d_name) >=
		    (int)sizeof p || lstat(p, &st) < 0)
			continue;
		size_t n = strlen(e->d_name);
		if (S_ISLNK(st.st_mode)) {
			if (!realpath(p, real) || stat(real, &st) < 0)
				continue; /* dangling */
			if (!path_inside(d->models_root, real)) {
				size_t k = n > 5 && !strcmp(e->d_name + n - 5,
							     ".gguf") ? n - 5 : n;
				dlog("models dir: %s links out of %s (to %s): "
				     "refused", e->d_name, d->models_root, real);
				if (k <= PROTO_MAX_NAME &&
				    d->n_refused < INFERD_MAX_MODELS) {
					memcpy(d->refused[d->n_refused], e->d_name, k);
					d->refused[d->n_refused++][k] = 0;
				}
				continue;
			}
		}
		char bad[256];
		if (S_ISDIR(st.st_mode) &&
		    links_out(d->models_root, p, bad, sizeof bad)) {
			dlog("models dir: %s/%s links out of %s: refused",
			     e->d_name, bad, d->models_root);
			if (n <= PROTO_MAX_NAME && d->n_refused < INFERD_MAX_MODELS)
				memcpy(d->refused[d->n_refused++], e->d_name, n + 1);
			continue;
		}
		int before = d->nslots;
		if (S_ISREG(st.st_mode) && n > 5 && !strcmp(e->d_name + n - 5, ".gguf"))
			rc = add_slot(d, e->d_name, n - 5, p, err, errlen);
		else if (S_ISDIR(st.st_mode) &&
			 snprintf(cfgp, sizeof cfgp, "%s/config.json", p) < (int)sizeof cfgp &&
			 access(cfgp, R_OK) == 0)
			rc = add_slot(d, e->d_name, n, p, err, errlen);
		if (d->nslots > before) /* not a --model of the same name */
			d->slots[d->nslots - 1]->confined = 1;
	}
	closedir(dp);
	return rc;
}

/* ---- run ---- */

static void free_events(Daemon *d)
{
	Event *e = d->qhead;
	d->qhead = d->qtail = NULL;
	while (e) {
		Event *next = e->next;
		free(e->frame);
		if (e->final)
			request_free(e->r);
		free(e);
		e = next;
	}
}

int daemon_run(const DaemonConfig *cfg, char *err, size_t errlen)
{
	static Daemon dd;
	Daemon *d = &dd;
	int rc = -1, fd = -1;
	memset(d, 0, sizeof *d);
	d->cfg = cfg;
	d->lock_fd = -1;
	d->efd = -1;
	d->self_uid = geteuid();
	d->t_start = mono_now();
	d->last_busy = d->t_start;
	d->metrics = metrics_new(); /* NULL: the metrics op reports gauges only */
	daemon_cfg = cfg;
	pthread_mutex_init(&d->qmu, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (cfg->log_file && reopen_log(cfg->log_file) < 0) {
		snprintf(err, errlen, "log file %s: %s", cfg->log_file, strerror(errno));
		return -1;
	}
	char dbp[PATH_MAX];
	if (cfg->db_path) {
		snprintf(dbp, sizeof dbp, "%s", cfg->db_path);
	} else {
		const char *st = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
		if (st && *st == '/')
			snprintf(dbp, sizeof dbp, "%s/inferd/inferd.db", st);
		else
			snprintf(dbp, sizeof dbp, "%s/.local/state/inferd/inferd.db",
				 home ? home : "/tmp");
	}
	/* the socket first: a second daemon must not touch the database */
	d->base = event_base_new();
	if (!d->base) {
		snprintf(err, errlen, "event_base_new failed");
		return -1;
	}
	/* signals before the socket: once it listens, clients (and test
	 * harnesses) see us as up, and a SIGTERM then must drain, not kill
	 * us by its default action with the socket and lock left behind */
	int sigs[3] = { SIGTERM, SIGINT, SIGHUP };
	for (int i = 0; i < 3; i++) {
		d->ev_sig[i] = evsignal_new(d->base, sigs[i], on_signal, d);
		if (!d->ev_sig[i] || event_add(d->ev_sig[i], NULL) < 0) {
			snprintf(err, errlen, "cannot watch signals");
			goto out;
		}
	}
	fd = make_listener(d, err, errlen);
	if (fd < 0)
		goto out;
	if (!(daemon_db = db_open(dbp, err, errlen)))
		goto out;
	for (int i = 0; i < cfg->n_models; i++)
		if (add_slot(d, cfg->models[i].name, strlen(cfg->models[i].name),
			     cfg->models[i].path, err, errlen) < 0)
			goto out;
	if (cfg->models_dir && scan_models_dir(d, cfg->models_dir, err, errlen) < 0)
		goto out;
	d->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (d->efd < 0) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		goto out;
	}
	d->ev_wake = event_new(d->base, d->efd, EV_READ | EV_PERSIST, on_wake, d);
	d->ev_tick = event_new(d->base, -1, EV_PERSIST, on_tick, d);
	d->ev_drain = evtimer_new(d->base, on_drain_timeout, d);
	struct timeval one = { 1, 0 };
	if (!d->ev_wake || !d->ev_tick || !d->ev_drain ||
	    event_add(d->ev_wake, NULL) < 0 || event_add(d->ev_tick, &one) < 0) {
		snprintf(err, errlen, "cannot set up events");
		goto out;
	}
	d->lis = evconnlistener_new(d->base, on_accept, d, LEV_OPT_CLOSE_ON_FREE |
				    LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (!d->lis) {
		snprintf(err, errlen, "evconnlistener_new failed");
		goto out;
	}
	evconnlistener_set_error_cb(d->lis, on_accept_error);
	fd = -1;
	dlog("serving %s: %d models, pid %d, db %s",
	     d->systemd ? "systemd socket" : d->sock_path, d->nslots,
	     (int)getpid(), dbp);
	event_base_dispatch(d->base);
	dlog("stopping");
	rc = 0;
out:
	if (d->lis)
		evconnlistener_free(d->lis);
	else if (fd >= 0)
		close(fd);
	/* workers first (they post into the queue), then what they posted */
	for (int i = 0; i < d->nslots; i++)
		worker_stop(d->slots[i]);
	pthread_mutex_lock(&d->qmu);
	pthread_mutex_unlock(&d->qmu);
	while (d->conns)
		conn_free(d->conns);
	free_events(d);
	metrics_free(d->metrics);
	d->metrics = NULL;
	for (int i = 0; i < d->nslots; i++)
		free(d->slots[i]);
	if (daemon_db)
		db_close(daemon_db); /* after conn_free: their rows are queued */
	daemon_db = NULL;
	if (d->efd >= 0)
		close(d->efd);
	for (int i = 0; i < 3; i++)
		if (d->ev_sig[i])
			event_free(d->ev_sig[i]);
	if (d->ev_wake)
		event_free(d->ev_wake);
	if (d->ev_tick)
		event_free(d->ev_tick);
	if (d->ev_drain)
		event_free(d->ev_drain);
	event_base_free(d->base);
	if (d->lock_fd >= 0) {
		if (!d->systemd && d->sock_path[0])
			unlink(d->sock_path);
		unlink(d->lock_path);
		close(d->lock_fd);
	}
	return rc;
}
