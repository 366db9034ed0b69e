/*
 * infer.c - libinfer: the client side of the inferd protocol.
 *
 * A client keeps an input buffer (bytes read, cut into frames), an output
 * buffer (frames not yet written) and a list of requests in flight. Both
 * the blocking calls and infer_process() go through pump(), which never
 * blocks; the blocking calls add a poll() around it.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <msgpack.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "infer.h"
#include "protocol.h"

/* One request in flight. */
typedef struct Req {
	uint32_t id;            /* request id on this connection */
	int is_gen;             /* a generate: token / done events */
	infer_token_fn on_token; /* generate: pieces of text */
	infer_done_fn on_done;   /* async generate: the end */
	void *ud;               /* for the callbacks */
	int cancelled;          /* on_token asked to stop */
	int finished;           /* a final event arrived */
	int status;             /* 0 or INFER_E* */
	infer_gen_result res;   /* generate totals */
	uint8_t *reply;         /* final frame (simple ops), malloc'd */
	size_t reply_len;       /* its length */
	int blocking;           /* freed by the blocking caller, not pump */
	struct Req *next;       /* list link */
} Req;

struct infer_client {
	int fd;                 /* the socket, non-blocking */
	uint8_t *in;            /* received bytes not yet consumed */
	size_t in_len, in_cap;  /* used / allocated */
	uint8_t *out;           /* frames waiting to be written */
	size_t out_len, out_off, out_cap; /* filled, written, allocated */
	uint32_t next_id;       /* last request id used */
	Req *reqs;              /* requests in flight */
	int npending;           /* length of reqs */
	int proto;              /* daemon's protocol version */
	int closed;             /* the daemon hung up */
	infer_queued_fn on_queued; /* optional queue-position callback */
	char err[512];          /* last failure message */
};

static const char *const version_str = "0.1.0";

const char *infer_version(void) { return version_str; }

const char *infer_strerror(int code)
{
	switch (code) {
	case 0:
		return "success";
#define INFER_X_STR(name, value, text) case value: return text;
		INFER_ERRORS(INFER_X_STR)
#undef INFER_X_STR
	}
	return "unknown error";
}

int infer_default_socket(char *out, size_t cap)
{
	return proto_default_socket(out, cap) < 0 ? INFER_EINVAL : 0;
}

static int fail(infer_client *c, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof c->err, fmt, ap);
	va_end(ap);
	return code;
}

const char *infer_errmsg(const infer_client *c) { return c->err; }
int infer_daemon_protocol(const infer_client *c) { return c->proto; }
int infer_fd(const infer_client *c) { return c->fd; }
int infer_want_write(const infer_client *c) { return c->out_len > c->out_off; }
int infer_pending(const infer_client *c) { return c->npending; }
void infer_on_queued(infer_client *c, infer_queued_fn fn) { c->on_queued = fn; }

/* ---- output ---- */

/* Append sbuf as one frame to the output buffer. */
static int queue_frame(infer_client *c, const msgpack_sbuffer *sb)
{
	if (sb->size > PROTO_MAX_FRAME)
		return fail(c, INFER_ELIMIT, "request of %zu bytes is over the "
			    "%u-byte frame limit", sb->size, PROTO_MAX_FRAME);
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	size_t need = c->out_len + PROTO_HDR + sb->size;
	if (need > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < need)
			cap *= 2;
		uint8_t *p = realloc(c->out, cap);
		if (!p)
			return fail(c, INFER_ENOMEM, "out of memory");
		c->out = p;
		c->out_cap = cap;
	}
	proto_put_len(c->out + c->out_len, (uint32_t)sb->size);
	memcpy(c->out + c->out_len + PROTO_HDR, sb->data, sb->size);
	c->out_len = need;
	return 0;
}

static int flush_out(infer_client *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off,
				 c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return fail(c, INFER_EIO, "send: %s", strerror(errno));
		}
		c->out_off += (size_t)n;
	}
	return 0;
}

/* ---- packing helpers ---- */

static void pk_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pk_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
	pk_str(pk, k);
	pk_str(pk, v);
}

static void pk_kv_int(msgpack_packer *pk, const char *k, int64_t v)
{
	pk_str(pk, k);
	msgpack_pack_int64(pk, v);
}

static void pk_kv_float(msgpack_packer *pk, const char *k, double v)
{
	pk_str(pk, k);
	msgpack_pack_double(pk, v);
}

static Req *req_new(infer_client *c)
{
	Req *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	if (++c->next_id == 0)
		c->next_id = 1;
	r->id = c->next_id;
	r->next = c->reqs;
	c->reqs = r;
	c->npending++;
	return r;
}

static void req_unlink(infer_client *c, Req *r)
{
	for (Req **pp = &c->reqs; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			c->npending--;
			return;
		}
}

static void req_free(Req *r)
{
	if (r) {
		free(r->reply);
		free(r);
	}
}

/* Map the daemon's error code string to an INFER_E* value. */
static int code_of(const msgpack_object *o)
{
	static const struct { const char *s; int code; } tab[] = {
		{ PROTO_E_VERSION, INFER_EVERSION },
		{ PROTO_E_BAD, INFER_EREQUEST },
		{ PROTO_E_OP, INFER_EREQUEST },
		{ PROTO_E_NOTFOUND, INFER_ENOTFOUND },
		{ PROTO_E_BUSY, INFER_EBUSY },
		{ PROTO_E_LIMIT, INFER_ELIMIT },
		{ PROTO_E_DENIED, INFER_EDENIED },
		{ PROTO_E_MEMORY, INFER_EMEMORY },
		{ PROTO_E_LOAD, INFER_ELOAD },
		{ PROTO_E_ENGINE, INFER_EENGINE },
		{ PROTO_E_SHUTDOWN, INFER_ESHUTDOWN },
	};
	if (o && o->type == MSGPACK_OBJECT_STR)
		for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
			if (strlen(tab[i].s) == o->via.str.size &&
			    !memcmp(tab[i].s, o->via.str.ptr, o->via.str.size))
				return tab[i].code;
	return INFER_EREQUEST;
}

static int obj_is(const msgpack_object *o, const char *s)
{
	return o && (o->type == MSGPACK_OBJECT_STR ||
		     o->type == MSGPACK_OBJECT_BIN) &&
	       o->via.str.size == strlen(s) &&
	       !memcmp(o->via.str.ptr, s, o->via.str.size);
}

static double obj_num(const msgpack_object *o)
{
	if (!o)
		return 0;
	switch (o->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER: return (double)o->via.u64;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return (double)o->via.i64;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return o->via.f64;
	default: return 0;
	}
}

/* Copy a str/bin object into buf as a C string (truncating). */
static void obj_cstr(const msgpack_object *o, char *buf, size_t cap)
{
	size_t n = 0;
	if (o && (o->type == MSGPACK_OBJECT_STR || o->type == MSGPACK_OBJECT_BIN)) {
		n = o->via.str.size < cap - 1 ? o->via.str.size : cap - 1;
		memcpy(buf, o->via.str.ptr, n);
	}
	buf[n] = 0;
}

/* Handle one received frame. Returns 1 if it ended a request, 0 if not,
 * negative on a protocol error. */
static int handle_frame(infer_client *c, const uint8_t *buf, size_t len)
{
	char verr[128];
	if (proto_validate(buf, len, PROTO_MAX_DEPTH, verr, sizeof verr) < 0)
		return fail(c, INFER_EPROTO, "bad frame from inferd: %s", verr);
	msgpack_zone zone;
	msgpack_object root;
	if (!msgpack_zone_init(&zone, 2048))
		return fail(c, INFER_ENOMEM, "out of memory");
	size_t off = 0;
	if (msgpack_unpack((const char *)buf, len, &off, &zone, &root) !=
	    MSGPACK_UNPACK_SUCCESS) {
		msgpack_zone_destroy(&zone);
		return fail(c, INFER_EPROTO, "invalid msgpack from inferd");
	}
	const msgpack_object *id = proto_field(&root, "id");
	const msgpack_object *type = proto_field(&root, "type");
	uint32_t rid = id && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER ?
		       (uint32_t)id->via.u64 : 0;
	Req *r = c->reqs;
	while (r && r->id != rid)
		r = r->next;
	int ended = 0;
	if (obj_is(type, "error") && !r) {
		/* about the connection itself (an unreadable frame) */
		char msg[400];
		obj_cstr(proto_field(&root, "message"), msg, sizeof msg);
		fail(c, code_of(proto_field(&root, "code")), "%s", msg);
	} else if (!r) {
		/* a reply for a request we forgot (cancelled): ignore */
	} else if (obj_is(type, "token")) {
		const msgpack_object *t = proto_field(&root, "text");
		const msgpack_object *tk = proto_field(&root, "token");
		if (r->on_token && !r->cancelled && t &&
		    (t->type == MSGPACK_OBJECT_BIN || t->type == MSGPACK_OBJECT_STR)) {
			/* NUL-terminate for callers that print with %s */
			char stackbuf[1024];
			char *s = t->via.bin.size < sizeof stackbuf ? stackbuf :
				  malloc(t->via.bin.size + 1);
			if (s) {
				memcpy(s, t->via.bin.ptr, t->via.bin.size);
				s[t->via.bin.size] = 0;
				if (r->on_token(r->ud, (int32_t)obj_num(tk), s,
						t->via.bin.size)) {
					r->cancelled = 1;
					infer_cancel(c, r->id);
				}
				if (s != stackbuf)
					free(s);
			}
		}
	} else if (obj_is(type, "queued")) {
		if (c->on_queued)
			c->on_queued(r->ud, (int)obj_num(proto_field(&root, "position")));
	} else if (obj_is(type, "loading")) {
		if (c->on_queued)
			c->on_queued(r->ud, -1);
	} else if (obj_is(type, "done") || obj_is(type, "ok") ||
		   obj_is(type, "error")) {
		ended = 1;
		r->finished = 1;
		if (obj_is(type, "error")) {
			char msg[400];
			obj_cstr(proto_field(&root, "message"), msg, sizeof msg);
			r->status = fail(c, code_of(proto_field(&root, "code")),
					 "%s", msg);
		} else if (obj_is(type, "done")) {
			obj_cstr(proto_field(&root, "finish"), r->res.finish,
				 sizeof r->res.finish);
			r->res.prompt_tokens = (int)obj_num(proto_field(&root, "prompt_tokens"));
			r->res.gen_tokens = (int)obj_num(proto_field(&root, "gen_tokens"));
			r->res.ttft_ms = obj_num(proto_field(&root, "ttft_ms"));
			r->res.total_ms = obj_num(proto_field(&root, "total_ms"));
			r->res.tok_s = obj_num(proto_field(&root, "tok_s"));
		}
		if (r->blocking) {
			r->reply = malloc(len ? len : 1);
			if (r->reply) {
				memcpy(r->reply, buf, len);
				r->reply_len = len;
			} else if (!r->status) {
				r->status = fail(c, INFER_ENOMEM, "out of memory");
			}
		}
		req_unlink(c, r);
		if (!r->blocking) {
			if (r->on_done)
				r->on_done(r->ud, r->status, &r->res);
			req_free(r);
		}
	}
	msgpack_zone_destroy(&zone);
	return ended;
}

/* Read, cut frames, write: never blocks. */
static int pump(infer_client *c)
{
	int ended = 0;
	if (c->closed)
		return fail(c, INFER_ECLOSED, "inferd closed the connection");
	if (flush_out(c) < 0)
		return INFER_EIO;
	for (;;) {
		if (c->in_cap - c->in_len < 65536) {
			size_t cap = c->in_cap ? c->in_cap * 2 : 65536;
			if (cap > PROTO_MAX_FRAME * 2u + 65536)
				cap = PROTO_MAX_FRAME * 2u + 65536;
			if (cap > c->in_cap) {
				uint8_t *p = realloc(c->in, cap);
				if (!p)
					return fail(c, INFER_ENOMEM, "out of memory");
				c->in = p;
				c->in_cap = cap;
			}
		}
		if (c->in_len == c->in_cap)
			break;
		ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			return fail(c, INFER_EIO, "recv: %s", strerror(errno));
		}
		if (n == 0) {
			/* replies that came before the close still count */
			c->closed = 1;
			if (ended)
				return ended;
			return fail(c, INFER_ECLOSED, "inferd closed the "
				    "connection");
		}
		c->in_len += (size_t)n;
		/* consume whole frames */
		size_t off = 0;
		while (c->in_len - off >= PROTO_HDR) {
			uint32_t fl = proto_get_len(c->in + off);
			if (fl == 0 || fl > PROTO_MAX_FRAME)
				return fail(c, INFER_EPROTO, "frame length %u "
					    "from inferd", fl);
			if (c->in_len - off - PROTO_HDR < fl)
				break;
			int e = handle_frame(c, c->in + off + PROTO_HDR, fl);
			off += PROTO_HDR + fl;
			if (e < 0)
				return e;
			ended += e;
		}
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
	}
	return ended;
}

int infer_process(infer_client *c)
{
	if (!c)
		return INFER_EINVAL;
	return pump(c);
}

/* Send a request frame and wait for r to finish. */
static int wait_req(infer_client *c, Req *r)
{
	while (!r->finished) {
		struct pollfd pfd = { c->fd, POLLIN, 0 };
		if (infer_want_write(c))
			pfd.events |= POLLOUT;
		int n = poll(&pfd, 1, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return fail(c, INFER_EIO, "poll: %s", strerror(errno));
		}
		int e = pump(c);
		if (e < 0 && !r->finished) {
			req_unlink(c, r);
			return e;
		}
	}
	return r->status;
}

/* Common path of the simple blocking ops: the caller packed a map whose
 * op and id fields come first (id = r->id). */
static int call(infer_client *c, Req *r, msgpack_sbuffer *sb,
		msgpack_zone *zone, msgpack_object *reply)
{
	r->blocking = 1;
	int rc = queue_frame(c, sb);
	msgpack_sbuffer_destroy(sb);
	if (rc < 0) {
		req_unlink(c, r);
		return rc;
	}
	rc = wait_req(c, r);
	if (rc == 0 && reply) {
		size_t off = 0;
		if (msgpack_unpack((const char *)r->reply, r->reply_len, &off,
				   zone, reply) != MSGPACK_UNPACK_SUCCESS)
			rc = fail(c, INFER_EPROTO, "invalid reply");
	}
	return rc;
}

/* Start a request map: {"op": op, "id": id, ...nfields more}. */
static Req *begin(infer_client *c, msgpack_sbuffer *sb, msgpack_packer *pk,
		  const char *op, int nfields)
{
	Req *r = req_new(c);
	if (!r)
		return NULL;
	msgpack_sbuffer_init(sb);
	msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
	msgpack_pack_map(pk, 2 + (size_t)nfields);
	pk_kv_str(pk, "op", op);
	pk_kv_int(pk, "id", r->id);
	return r;
}

/* Simple op without a payload in the reply. */
static int simple(infer_client *c, const char *op, const char *model,
		  int keep_alive)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int nf = (model ? 1 : 0) + (keep_alive != INFER_KEEP_DEFAULT ? 1 : 0);
	Req *r = begin(c, &sb, &pk, op, nf);
	if (!r)
		return fail(c, INFER_ENOMEM, "out of memory");
	if (model)
		pk_kv_str(&pk, "model", model);
	if (keep_alive != INFER_KEEP_DEFAULT)
		pk_kv_int(&pk, "keep_alive", keep_alive);
	int rc = call(c, r, &sb, NULL, NULL);
	req_free(r);
	return rc;
}

int infer_ping(infer_client *c) { return c ? simple(c, "ping", NULL, INFER_KEEP_DEFAULT) : INFER_EINVAL; }
int infer_shutdown(infer_client *c) { return c ? simple(c, "shutdown", NULL, INFER_KEEP_DEFAULT) : INFER_EINVAL; }

int infer_load(infer_client *c, const char *model, int keep_alive)
{
	if (!c || !model)
		return INFER_EINVAL;
	return simple(c, "load", model, keep_alive);
}

int infer_unload(infer_client *c, const char *model)
{
	if (!c || !model)
		return INFER_EINVAL;
	return simple(c, "unload", model, INFER_KEEP_DEFAULT);
}

/* ---- msgpack -> JSON, for status / models / log ---- */

typedef struct Str {
	char *p;       /* text, NUL-terminated */
	size_t len;    /* bytes used */
	size_t cap;    /* allocated */
	int oom;       /* an allocation failed */
} Str;

static void str_add(Str *s, const char *p, size_t n)
{
	if (s->oom)
		return;
	if (s->len + n + 1 > s->cap) {
		size_t cap = s->cap ? s->cap : 256;
		while (cap < s->len + n + 1)
			cap *= 2;
		char *q = realloc(s->p, cap);
		if (!q) {
			s->oom = 1;
			return;
		}
		s->p = q;
		s->cap = cap;
	}
	memcpy(s->p + s->len, p, n);
	s->len += n;
	s->p[s->len] = 0;
}

static void str_fmt(Str *s, const char *fmt, ...)
{
	char buf[64];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n > 0)
		str_add(s, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

static void json_str(Str *s, const char *p, size_t n)
{
	str_add(s, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)p[i];
		if (ch == '"' || ch == '\\') {
			char e[2] = { '\\', (char)ch };
			str_add(s, e, 2);
		} else if (ch == '\n') {
			str_add(s, "\\n", 2);
		} else if (ch < 0x20) {
			str_fmt(s, "\\u%04x", ch);
		} else {
			str_add(s, (const char *)&p[i], 1);
		}
	}
	str_add(s, "\"", 1);
}

static void json_obj(Str *s, const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: str_add(s, "null", 4); break;
	case MSGPACK_OBJECT_BOOLEAN:
		if (o->via.boolean)
			str_add(s, "true", 4);
		else
			str_add(s, "false", 5);
		break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		str_fmt(s, "%llu", (unsigned long long)o->via.u64);
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		str_fmt(s, "%lld", (long long)o->via.i64);
		break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		if (isfinite(o->via.f64))
			str_fmt(s, "%.15g", o->via.f64);
		else
			str_add(s, "null", 4);
		break;
	case MSGPACK_OBJECT_STR:
	case MSGPACK_OBJECT_BIN:
		json_str(s, o->via.str.ptr, o->via.str.size);
		break;
	case MSGPACK_OBJECT_ARRAY:
		str_add(s, "[", 1);
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			if (i)
				str_add(s, ",", 1);
			json_obj(s, &o->via.array.ptr[i]);
		}
		str_add(s, "]", 1);
		break;
	case MSGPACK_OBJECT_MAP:
		str_add(s, "{", 1);
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			if (i)
				str_add(s, ",", 1);
			const msgpack_object *k = &o->via.map.ptr[i].key;
			if (k->type == MSGPACK_OBJECT_STR)
				json_str(s, k->via.str.ptr, k->via.str.size);
			else
				str_add(s, "\"?\"", 3);
			str_add(s, ":", 1);
			json_obj(s, &o->via.map.ptr[i].val);
		}
		str_add(s, "}", 1);
		break;
	default:
		str_add(s, "null", 4);
	}
}

/* Reply as JSON without the id/type bookkeeping fields. */
static int reply_json(infer_client *c, const char *op, int limit, int all,
		      char **json)
{
	if (!c || !json)
		return INFER_EINVAL;
	*json = NULL;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	Req *r = begin(c, &sb, &pk, op, (limit > 0) + (all != 0));
	if (!r)
		return fail(c, INFER_ENOMEM, "out of memory");
	if (limit > 0)
		pk_kv_int(&pk, "limit", limit);
	if (all) {
		pk_str(&pk, "all");
		msgpack_pack_true(&pk);
	}
	msgpack_zone zone;
	msgpack_zone_init(&zone, 4096);
	msgpack_object root;
	int rc = call(c, r, &sb, &zone, &root);
	if (rc == 0) {
		Str s = { 0 };
		str_add(&s, "{", 1);
		int first = 1;
		for (uint32_t i = 0; i < root.via.map.size; i++) {
			const msgpack_object *k = &root.via.map.ptr[i].key;
			if (obj_is(k, "id") || obj_is(k, "type"))
				continue;
			if (!first)
				str_add(&s, ",", 1);
			first = 0;
			json_obj(&s, k);
			str_add(&s, ":", 1);
			json_obj(&s, &root.via.map.ptr[i].val);
		}
		str_add(&s, "}", 1);
		if (s.oom) {
			free(s.p);
			rc = fail(c, INFER_ENOMEM, "out of memory");
		} else {
			*json = s.p;
		}
	}
	msgpack_zone_destroy(&zone);
	req_free(r);
	return rc;
}

int infer_status(infer_client *c, char **json) { return reply_json(c, "status", 0, 0, json); }
int infer_models(infer_client *c, char **json) { return reply_json(c, "models", 0, 0, json); }
int infer_log(infer_client *c, int limit, int all, char **json) { return reply_json(c, "log", limit, all, json); }

void infer_free(void *p)
{
	free(p);
}

int infer_metrics(infer_client *c, char **text)
{
	if (!c || !text)
		return INFER_EINVAL;
	*text = NULL;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	Req *r = begin(c, &sb, &pk, "metrics", 0);
	if (!r)
		return fail(c, INFER_ENOMEM, "out of memory");
	msgpack_zone zone;
	msgpack_zone_init(&zone, 4096);
	msgpack_object root;
	int rc = call(c, r, &sb, &zone, &root);
	if (rc == 0) {
		const msgpack_object *t = proto_field(&root, "prometheus");
		if (!t || t->type != MSGPACK_OBJECT_STR) {
			rc = fail(c, INFER_EPROTO, "metrics reply without text");
		} else if (!(*text = strndup(t->via.str.ptr, t->via.str.size))) {
			rc = fail(c, INFER_ENOMEM, "out of memory");
		}
	}
	msgpack_zone_destroy(&zone);
	req_free(r);
	return rc;
}

int infer_tokenize(infer_client *c, const char *model, const char *text,
		   int add_bos, int special, int32_t **ids)
{
	if (!c || !model || !text || !ids)
		return INFER_EINVAL;
	*ids = NULL;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	Req *r = begin(c, &sb, &pk, "tokenize", 4);
	if (!r)
		return fail(c, INFER_ENOMEM, "out of memory");
	pk_kv_str(&pk, "model", model);
	pk_kv_str(&pk, "text", text);
	pk_str(&pk, "add_bos");
	add_bos ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
	pk_str(&pk, "special");
	special ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
	msgpack_zone zone;
	msgpack_zone_init(&zone, 4096);
	msgpack_object root;
	int rc = call(c, r, &sb, &zone, &root);
	if (rc == 0) {
		const msgpack_object *t = proto_field(&root, "tokens");
		if (!t || t->type != MSGPACK_OBJECT_ARRAY) {
			rc = fail(c, INFER_EPROTO, "tokenize reply without tokens");
		} else {
			uint32_t n = t->via.array.size;
			int32_t *v = malloc((n ? n : 1) * sizeof *v);
			if (!v) {
				rc = fail(c, INFER_ENOMEM, "out of memory");
			} else {
				for (uint32_t i = 0; i < n; i++)
					v[i] = (int32_t)obj_num(&t->via.array.ptr[i]);
				*ids = v;
				rc = (int)n;
			}
		}
	}
	msgpack_zone_destroy(&zone);
	req_free(r);
	return rc;
}

int infer_detokenize(infer_client *c, const char *model, const int32_t *ids,
		     size_t n, char **text)
{
	if (!c || !model || (!ids && n) || !text || n > PROTO_MAX_TOKENS)
		return INFER_EINVAL;
	*text = NULL;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	Req *r = begin(c, &sb, &pk, "detokenize", 2);
	if (!r)
		return fail(c, INFER_ENOMEM, "out of memory");
	pk_kv_str(&pk, "model", model);
	pk_str(&pk, "tokens");
	msgpack_pack_array(&pk, n);
	for (size_t i = 0; i < n; i++)
		msgpack_pack_int32(&pk, ids[i]);
	msgpack_zone zone;
	msgpack_zone_init(&zone, 4096);
	msgpack_object root;
	int rc = call(c, r, &sb, &zone, &root);
	if (rc == 0) {
		const msgpack_object *t = proto_field(&root, "text");
		if (!t || (t->type != MSGPACK_OBJECT_BIN && t->type != MSGPACK_OBJECT_STR)) {
			rc = fail(c, INFER_EPROTO, "detokenize reply without text");
		} else if (!(*text = malloc(t->via.bin.size + 1))) {
			rc = fail(c, INFER_ENOMEM, "out of memory");
		} else {
			memcpy(*text, t->via.bin.ptr, t->via.bin.size);
			(*text)[t->via.bin.size] = 0;
		}
	}
	msgpack_zone_destroy(&zone);
	req_free(r);
	return rc;
}

/* ---- generate ---- */

void infer_gen_params_init(infer_gen_params *p)
{
	memset(p, 0, sizeof *p);
	p->temperature = NAN;
	p->top_k = -1;
	p->top_p = NAN;
	p->min_p = NAN;
	p->repeat_penalty = NAN;
	p->freq_penalty = NAN;
	p->presence_penalty = NAN;
	p->penalty_last_n = -1;
	p->seed = -1;
	p->keep_alive = INFER_KEEP_DEFAULT;
}

static int start_gen(infer_client *c, const infer_gen_params *p,
		     infer_token_fn on_token, infer_done_fn on_done, void *ud,
		     int blocking, Req **out)
{
	if (!c || !p || !p->model || (!p->prompt && !p->n_messages) ||
	    (p->n_messages && !p->messages) || p->n_stop > PROTO_MAX_STOP ||
	    (p->n_stop && !p->stop))
		return c ? fail(c, INFER_EINVAL, "generate needs a model and a "
				"prompt or messages") : INFER_EINVAL;
	int nf = 2; /* model, prompt|messages */
	nf += p->system != NULL;
	nf += p->chat_template != NULL;
	nf += p->max_tokens > 0;
	nf += !isnan(p->temperature) && p->temperature >= 0;
	nf += p->top_k >= 0;
	nf += !isnan(p->top_p) && p->top_p >= 0;
	nf += !isnan(p->min_p) && p->min_p >= 0;
	nf += !isnan(p->repeat_penalty) && p->repeat_penalty >= 0;
	nf += !isnan(p->freq_penalty);
	nf += !isnan(p->presence_penalty);
	nf += p->penalty_last_n >= 0;
	nf += p->seed >= 0;
	nf += p->n_stop > 0;
	nf += p->ignore_eos != 0;
	nf += p->keep_alive != INFER_KEEP_DEFAULT;
	nf += p->priority != 0;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	Req *r = begin(c, &sb, &pk, "generate", nf);
	if (!r)
		return fail(c, INFER_ENOMEM, "out of memory");
	r->is_gen = 1;
	r->on_token = on_token;
	r->on_done = on_done;
	r->ud = ud;
	r->blocking = blocking;
	pk_kv_str(&pk, "model", p->model);
	if (p->n_messages) {
		pk_str(&pk, "messages");
		msgpack_pack_array(&pk, p->n_messages);
		for (size_t i = 0; i < p->n_messages; i++) {
			msgpack_pack_map(&pk, 2);
			pk_kv_str(&pk, "role", p->messages[i].role ? p->messages[i].role : "user");
			pk_kv_str(&pk, "content", p->messages[i].content ? p->messages[i].content : "");
		}
	} else {
		pk_kv_str(&pk, "prompt", p->prompt);
	}
	if (p->system)
		pk_kv_str(&pk, "system", p->system);
	if (p->chat_template)
		pk_kv_str(&pk, "template", p->chat_template);
	if (p->max_tokens > 0)
		pk_kv_int(&pk, "max_tokens", p->max_tokens);
	if (!isnan(p->temperature) && p->temperature >= 0)
		pk_kv_float(&pk, "temperature", p->temperature);
	if (p->top_k >= 0)
		pk_kv_int(&pk, "top_k", p->top_k);
	if (!isnan(p->top_p) && p->top_p >= 0)
		pk_kv_float(&pk, "top_p", p->top_p);
	if (!isnan(p->min_p) && p->min_p >= 0)
		pk_kv_float(&pk, "min_p", p->min_p);
	if (!isnan(p->repeat_penalty) && p->repeat_penalty >= 0)
		pk_kv_float(&pk, "repeat_penalty", p->repeat_penalty);
	if (!isnan(p->freq_penalty))
		pk_kv_float(&pk, "freq_penalty", p->freq_penalty);
	if (!isnan(p->presence_penalty))
		pk_kv_float(&pk, "presence_penalty", p->presence_penalty);
	if (p->penalty_last_n >= 0)
		pk_kv_int(&pk, "penalty_last_n", p->penalty_last_n);
	if (p->seed >= 0)
		pk_kv_int(&pk, "seed", p->seed);
	if (p->n_stop) {
		pk_str(&pk, "stop");
		msgpack_pack_array(&pk, p->n_stop);
		for (size_t i = 0; i < p->n_stop; i++)
			pk_str(&pk, p->stop[i] ? p->stop[i] : "");
	}
	if (p->ignore_eos) {
		pk_str(&pk, "ignore_eos");
		msgpack_pack_true(&pk);
	}
	if (p->keep_alive != INFER_KEEP_DEFAULT)
		pk_kv_int(&pk, "keep_alive", p->keep_alive);
	if (p->priority != 0)
		pk_kv_int(&pk, "priority", p->priority);
	int rc = queue_frame(c, &sb);
	msgpack_sbuffer_destroy(&sb);
	if (rc < 0) {
		req_unlink(c, r);
		req_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

int infer_generate(infer_client *c, const infer_gen_params *p,
		   infer_token_fn on_token, void *ud, infer_gen_result *res)
{
	Req *r;
	int rc = start_gen(c, p, on_token, NULL, ud, 1, &r);
	if (rc < 0)
		return rc;
	rc = wait_req(c, r);
	if (res)
		*res = r->res;
	req_free(r);
	return rc;
}

int infer_generate_async(infer_client *c, const infer_gen_params *p,
			 infer_token_fn on_token, infer_done_fn on_done,
			 void *ud, uint32_t *req_id)
{
	Req *r;
	int rc = start_gen(c, p, on_token, on_done, ud, 0, &r);
	if (rc < 0)
		return rc;
	if (req_id)
		*req_id = r->id;
	/* try to send now; the rest goes out from infer_process() */
	return flush_out(c) < 0 ? INFER_EIO : 0;
}

int infer_cancel(infer_client *c, uint32_t req_id)
{
	if (!c)
		return INFER_EINVAL;
	/* fire and forget: the reply (ok) is for a request id we do not
	 * track, so it is ignored; the generate ends with its own event */
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	pk_kv_str(&pk, "op", "cancel");
	if (++c->next_id == 0)
		c->next_id = 1;
	pk_kv_int(&pk, "id", c->next_id);
	pk_kv_int(&pk, "target", req_id);
	int rc = queue_frame(c, &sb);
	msgpack_sbuffer_destroy(&sb);
	if (rc < 0)
		return rc;
	return flush_out(c) < 0 ? INFER_EIO : 0;
}

/* ---- connect ---- */

int infer_connect(infer_client **out, const char *path, char *errmsg,
		  size_t errlen)
{
	char def[108];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (!out)
		return INFER_EINVAL;
	*out = NULL;
	if (!path) {
		if (proto_default_socket(def, sizeof def) < 0) {
			if (errmsg && errlen)
				snprintf(errmsg, errlen, "default socket path too long");
			return INFER_EINVAL;
		}
		path = def;
	}
	if (strlen(path) >= sizeof sa.sun_path) {
		if (errmsg && errlen)
			snprintf(errmsg, errlen, "socket path too long: %s", path);
		return INFER_EINVAL;
	}
	strcpy(sa.sun_path, path);
	infer_client *c = calloc(1, sizeof *c);
	if (!c)
		return INFER_ENOMEM;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		if (errmsg && errlen)
			snprintf(errmsg, errlen, "cannot connect to %s: %s",
				 path, strerror(errno));
		if (c->fd >= 0)
			close(c->fd);
		free(c);
		return INFER_ECONNECT;
	}
	int fl = fcntl(c->fd, F_GETFL);
	if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		if (errmsg && errlen)
			snprintf(errmsg, errlen, "fcntl: %s", strerror(errno));
		close(c->fd);
		free(c);
		return INFER_EIO;
	}
	/* hello */
	msgpack_sbuffer sb;
	msgpack_packer pk;
	Req *r = begin(c, &sb, &pk, "hello", 2);
	int rc = INFER_ENOMEM;
	if (r) {
		pk_kv_int(&pk, "version", PROTO_VERSION);
		pk_kv_str(&pk, "client", "libinfer/0.1.0");
		msgpack_zone zone;
		msgpack_zone_init(&zone, 1024);
		msgpack_object root;
		rc = call(c, r, &sb, &zone, &root);
		if (rc == 0)
			c->proto = (int)obj_num(proto_field(&root, "version"));
		msgpack_zone_destroy(&zone);
		req_free(r);
	}
	if (rc < 0) {
		if (errmsg && errlen)
			snprintf(errmsg, errlen, "%s: %s", path, c->err);
		infer_close(c);
		return rc;
	}
	*out = c;
	return 0;
}

void infer_close(infer_client *c)
{
	if (!c)
		return;
	while (c->reqs) {
		Req *r = c->reqs;
		c->reqs = r->next;
		req_free(r);
	}
	if (c->fd >= 0)
		close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
}
