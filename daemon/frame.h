/*
 * frame.h - building the daemon's reply frames (protocol.h describes the
 * wire format: a 4-byte big-endian length, then one msgpack map).
 *
 * A frame is packed straight into a msgpack_sbuffer whose first PROTO_HDR
 * bytes are reserved for the length, so it never has to be copied to put
 * the prefix in front: frame_begin (or frame_reply) starts it, the caller
 * packs the fields, frame_end patches the length and hands the malloc'd
 * bytes over. The loop (server.c), the model workers (worker.c) and the
 * database thread (db.c) all reply this way, so every frame has the same
 * shape. libinfer packs its requests itself (libclient/infer.c).
 */
#ifndef INFERD_FRAME_H
#define INFERD_FRAME_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

/* Start a frame in sb (initialised here, owned by the caller until
 * frame_end) with pk packing into it; the length prefix is reserved. */
void frame_begin(msgpack_sbuffer *sb, msgpack_packer *pk);
/* frame_begin, then the map every reply is: {"id": id, "type": type} and
 * fields more entries, which the caller packs. type is copied. */
void frame_reply(msgpack_sbuffer *sb, msgpack_packer *pk, uint32_t id,
		 const char *type, int fields);
/* Patch the length prefix and return the frame (malloc'd: the caller, or
 * whoever it is handed to, frees it) with its byte count in *len. sb is
 * left empty. NULL with *len 0 when msgpack-c could not allocate. */
uint8_t *frame_end(msgpack_sbuffer *sb, size_t *len);
/* Pack the NUL-terminated string s (copied; NULL packs as ""). */
void frame_str(msgpack_packer *pk, const char *s);
/* A whole error frame for request id: {id, type "error", code, message,
 * and position when >= 0 (where a "busy" request would have queued)}.
 * Returned as frame_end does; code and msg are copied. */
uint8_t *frame_error(uint32_t id, const char *code, const char *msg,
		     long position, size_t *len);
/* A whole "queued" event frame: position requests start before id's.
 * Returned as frame_end does. */
uint8_t *frame_queued(uint32_t id, int position, size_t *len);

#endif
