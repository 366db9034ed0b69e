/*
 * fuzz_protocol.c - the daemon's frame path on arbitrary bytes.
 *
 * The input is read as the daemon's on_read() reads a connection: a stream
 * of 4-byte big-endian lengths and frames. Each frame goes through
 * proto_validate() and, when accepted, msgpack_unpack() into a zone sized
 * as handle_frame() sizes it, then every request field the daemon reads is
 * looked up with proto_field() and its type checked as server.c's f_*()
 * helpers do. Invariants: the validator never reads past the frame (ASan),
 * msgpack-c never fails on a frame the validator accepted, and the zone
 * never grows past a small multiple of the frame (msgpack-c #1013:
 * "dd ff 00 00 00" must not allocate 96 GB; libFuzzer's -malloc_limit_mb
 * catches that).
 */
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

static const char *const keys[] = {
	"op", "id", "version", "client", "model", "keep_alive", "prompt",
	"messages", "system", "template", "max_tokens", "temperature",
	"top_k", "top_p", "min_p", "repeat_penalty", "freq_penalty",
	"presence_penalty", "penalty_last_n", "seed", "stop", "ignore_eos",
	"text", "add_bos", "special", "tokens", "target", "limit", "all",
};

static size_t walk(const msgpack_object *o, int depth)
{
	size_t n = 1;
	if (depth > PROTO_MAX_DEPTH + 1)
		abort(); /* the validator let too deep a frame through */
	if (o->type == MSGPACK_OBJECT_ARRAY)
		for (uint32_t i = 0; i < o->via.array.size; i++)
			n += walk(&o->via.array.ptr[i], depth + 1);
	else if (o->type == MSGPACK_OBJECT_MAP)
		for (uint32_t i = 0; i < o->via.map.size; i++)
			n += walk(&o->via.map.ptr[i].key, depth + 1) +
			     walk(&o->via.map.ptr[i].val, depth + 1);
	else if (o->type == MSGPACK_OBJECT_STR || o->type == MSGPACK_OBJECT_BIN) {
		volatile uint8_t x = 0;
		for (uint32_t i = 0; i < o->via.str.size; i++)
			x ^= (uint8_t)o->via.str.ptr[i];
		(void)x;
	}
	return n;
}

static void one_frame(const uint8_t *buf, size_t len)
{
	char err[256];
	if (proto_validate(buf, len, PROTO_MAX_DEPTH, err, sizeof err) < 0) {
		if (!memchr(err, 0, sizeof err) || !err[0])
			abort(); /* every refusal carries a message */
		return;
	}
	msgpack_zone zone;
	msgpack_object root;
	if (!msgpack_zone_init(&zone, len < 1024 ? 1024 : len))
		abort();
	size_t off = 0;
	int rc = msgpack_unpack((const char *)buf, len, &off, &zone, &root);
	if (rc != MSGPACK_UNPACK_SUCCESS || off != len ||
	    root.type != MSGPACK_OBJECT_MAP) {
		fprintf(stderr, "validator accepted a frame msgpack-c refuses "
			"(rc %d, off %zu of %zu)\n", rc, off, len);
		abort();
	}
	walk(&root, 0);
	for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
		const msgpack_object *o = proto_field(&root, keys[k]);
		if (!o)
			continue;
		if (o->type == MSGPACK_OBJECT_ARRAY) /* messages, stop, tokens */
			for (uint32_t i = 0; i < o->via.array.size; i++) {
				const msgpack_object *e = &o->via.array.ptr[i];
				if (e->type == MSGPACK_OBJECT_MAP) {
					(void)proto_field(e, "role");
					(void)proto_field(e, "content");
				}
			}
	}
	msgpack_zone_destroy(&zone);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The whole input as one frame (the common case for the corpus)... */
	one_frame(data, size);
	/* ...and as a length-prefixed stream, as on_read() splits it. */
	while (size >= PROTO_HDR) {
		uint32_t n = proto_get_len(data);
		data += PROTO_HDR;
		size -= PROTO_HDR;
		if (n == 0)
			continue;
		if (n > PROTO_MAX_FRAME || n > size)
			break;
		one_frame(data, n);
		data += n;
		size -= n;
	}
	return 0;
}
