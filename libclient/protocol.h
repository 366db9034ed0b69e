/*
 * protocol.h - the wire protocol between inferd and its clients, shared by
 * the daemon (daemon/) and libinfer (libclient/), as tmux-protocol.h is.
 *
 * Transport: a Unix stream socket. Each message is a frame:
 *
 *     +----------------------+-------------------------------+
 *     | length (4 bytes, BE) | one msgpack map (length bytes)|
 *     +----------------------+-------------------------------+
 *
 * length is 1..PROTO_MAX_FRAME. A length over the limit cannot be skipped
 * safely, so the daemon answers it with an error frame and closes. Every
 * other malformed frame (invalid msgpack, not a map, nesting too deep,
 * wrong field types, unknown op, missing fields) gets an error frame and
 * the connection goes on.
 *
 * Before msgpack-c unpacks a frame, proto_validate() scans the bytes with
 * our own bounded reader: msgpack-c trusts declared sizes (msgpack-c issue
 * #1013: the 5 bytes "dd ff 00 00 00", an array of 4 G elements, make it
 * allocate ~96 GB). The scanner checks that every declared length and count
 * fits in the bytes that remain (each element needs at least one byte),
 * that nesting stays within PROTO_MAX_DEPTH and that exactly one object
 * fills the frame. After that msgpack-c's allocation is bounded by a small
 * multiple of the frame size.
 *
 * Requests (client -> daemon) are maps with string keys:
 *   "op"   str   operation name (below)                      required
 *   "id"   uint  1..2^32-1, chosen by the client, echoed back  required
 * plus the op's fields. A connection may have many requests in flight
 * (ids unique among them); every reply names its request id. Unknown
 * fields are ignored, so later versions can add optional ones.
 *
 * Replies (daemon -> client) are maps:
 *   "id"   uint  the request id (0 for errors about an unreadable frame)
 *   "type" str   "ok" | "error" | "token" | "queued" | "loading" | "done"
 * "ok" and "error" end a request; a generate sends "loading" (when its
 * model loads first), "queued" (when it waits behind others), one "token"
 * event per generated token (text may be empty while it is held back: a
 * stop-string prefix or a split UTF-8 character; token -1 carries text
 * released at the end), and ends with "done" (or "error"). A connection
 * over --max-connections gets one "busy" error with id 0 and is closed.
 *
 * Operations and their fields (type in msgpack terms; [opt] = optional):
 *   hello      version uint, client str [opt]
 *              -> ok: version uint, daemon str (daemon version), pid uint
 *              A different version -> error "version" naming both.
 *   ping       -> ok
 *   status     -> ok: version str, pid uint, uptime float (s), backend str,
 *              mem_budget uint, mem_used uint, device_total uint,
 *              device_free uint (bytes), connections uint, inflight uint,
 *              log_dropped uint (request log rows lost: disk full...),
 *              models array of {name, state, device, queue, active, bytes},
 *              requests array of {id, priority, uid, pid, model, state ("running" |
 *              "queued"), position (queue position, 0 when running),
 *              gen_tokens, age (s)}: the generates in flight, by model,
 *              running first, then in queue order
 *   models     -> ok: models array of {name str, path str, format str,
 *              state str, bytes uint, arch str, quant str, ctx uint,
 *              params uint, keep_alive int}
 *   load       model str, keep_alive int [opt] -> ok: model, load_ms float
 *   unload     model str -> ok
 *   generate   model str; prompt str OR messages array of {role str,
 *              content str}; system str [opt]; template str [opt]
 *              (chat template family or Jinja file; default the model's);
 *              max_tokens int [opt];
 *              temperature float, top_k int, top_p float, min_p float,
 *              repeat_penalty float, freq_penalty float, presence_penalty
 *              float, penalty_last_n int, seed uint, stop array of str,
 *              ignore_eos bool, keep_alive int (seconds; -1 = never
 *              unload; 0 = unload when done), priority int (-10..10,
 *              default 0: higher starts first and may suspend a lower
 *              one; above 0 only for the daemon's uid and root, others
 *              get 0) [all opt]
 *              -> loading: model str (the model is being loaded first)
 *              -> queued: position uint (1: starts when the next place
 *                 in the model's batch frees; sent again when it changes:
 *                 the queue is fair between uids, then first come first
 *                 served, so a newcomer of a quieter uid may go ahead)
 *              -> token: token int, text bin (UTF-8, whole characters)
 *              -> done: finish str, prompt_tokens uint, gen_tokens uint,
 *                 ttft_ms float, total_ms float, tok_s float
 *   tokenize   model str, text str, add_bos bool [opt], special bool [opt]
 *              -> ok: tokens array of int
 *   detokenize model str, tokens array of int -> ok: text bin
 *   cancel     target uint (a request id of this connection)
 *              -> ok: cancelled bool
 *   log        limit uint [opt], all bool [opt] (admin: every user's)
 *              -> ok: rows array of maps (see daemon/db.h)
 *   metrics    -> prometheus str (the Prometheus text exposition format:
 *              counters per model/op/uid, histograms, queue and memory gauges)
 *   shutdown   (admin: the daemon's uid or root) -> ok, then drains
 * Errors: type "error", code str (PROTO_E_* below), message str, and for
 * "busy" position uint (where the request would have queued).
 */
#ifndef INFERD_PROTOCOL_H
#define INFERD_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 1 /* bumped on any incompatible change */

#define PROTO_HDR 4                       /* frame length prefix bytes */
#define PROTO_MAX_FRAME (4u << 20)        /* largest frame, either way */
#define PROTO_MAX_DEPTH 8                 /* deepest nesting of arrays/maps */
#define PROTO_MAX_PROMPT (1u << 20)       /* prompt / text bytes */
#define PROTO_MAX_TOKENS 65536            /* max_tokens and token arrays */
#define PROTO_MAX_MESSAGES 256            /* chat messages per generate */
#define PROTO_MAX_STOP 8                  /* stop strings (ENGINE_MAX_STOP) */
#define PROTO_MAX_NAME 128                /* model names */

/* Error codes carried in the "code" field. */
#define PROTO_E_VERSION "version"     /* protocol version mismatch */
#define PROTO_E_BAD "bad_request"     /* malformed frame or fields */
#define PROTO_E_OP "unknown_op"       /* op not known */
#define PROTO_E_NOTFOUND "not_found"  /* no such model / request */
#define PROTO_E_BUSY "busy"           /* queue or concurrency limit */
#define PROTO_E_LIMIT "limit"         /* a size limit exceeded */
#define PROTO_E_DENIED "denied"       /* admin op by a non-admin */
#define PROTO_E_MEMORY "no_memory"    /* model does not fit the budget */
#define PROTO_E_LOAD "load_failed"    /* engine_open failed */
#define PROTO_E_ENGINE "engine"       /* generation failed */
#define PROTO_E_SHUTDOWN "shutting_down" /* daemon is draining */
#define PROTO_E_INTERNAL "internal"   /* out of memory etc. */

/* Scan len bytes: exactly one msgpack object that is a map, nesting at
 * most max_depth, every declared size within the bytes left. Returns 0 or
 * -1 with a message. Never reads past buf + len. */
int proto_validate(const uint8_t *buf, size_t len, int max_depth, char *err,
		   size_t errlen);

/* Big-endian frame length helpers. */
static inline uint32_t proto_get_len(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static inline void proto_put_len(uint8_t *p, uint32_t n)
{
	p[0] = (uint8_t)(n >> 24);
	p[1] = (uint8_t)(n >> 16);
	p[2] = (uint8_t)(n >> 8);
	p[3] = (uint8_t)n;
}

/* Default socket path: $XDG_RUNTIME_DIR/inferd.sock, else
 * /tmp/inferd-<uid>/inferd.sock. Returns 0 or -1 if it does not fit. */
int proto_default_socket(char *out, size_t cap);

/* The value of key in an unpacked msgpack map, NULL when absent. */
struct msgpack_object;
const struct msgpack_object *proto_field(const struct msgpack_object *map,
					 const char *key);

#endif
