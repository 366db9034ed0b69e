/*
 * frame.c - building the daemon's reply frames; see frame.h.
 */
#include <string.h>

#include "frame.h"
#include "protocol.h"

void frame_begin(msgpack_sbuffer *sb, msgpack_packer *pk)
{
	msgpack_sbuffer_init(sb);
	msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
	msgpack_sbuffer_write(sb, "\0\0\0\0", PROTO_HDR);
}

void frame_reply(msgpack_sbuffer *sb, msgpack_packer *pk, uint32_t id,
		 const char *type, int fields)
{
	frame_begin(sb, pk);
	msgpack_pack_map(pk, (size_t)fields + 2);
	frame_str(pk, "id");
	msgpack_pack_uint32(pk, id);
	frame_str(pk, "type");
	frame_str(pk, type);
}

uint8_t *frame_end(msgpack_sbuffer *sb, size_t *len)
{
	if (!sb->data) { /* msgpack-c failed to allocate */
		*len = 0;
		return NULL;
	}
	proto_put_len((uint8_t *)sb->data, (uint32_t)(sb->size - PROTO_HDR));
	*len = sb->size;
	return (uint8_t *)msgpack_sbuffer_release(sb);
}

void frame_str(msgpack_packer *pk, const char *s)
{
	/* NULL as "": sqlite3_column_text gives NULL when it runs out of
	 * memory, and an empty string keeps the reply well formed */
	size_t n = s ? strlen(s) : 0;
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s ? s : "", n);
}

uint8_t *frame_error(uint32_t id, const char *code, const char *msg,
		     long position, size_t *len)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	frame_reply(&sb, &pk, id, "error", position >= 0 ? 3 : 2);
	frame_str(&pk, "code");
	frame_str(&pk, code);
	frame_str(&pk, "message");
	frame_str(&pk, msg);
	if (position >= 0) {
		frame_str(&pk, "position");
		msgpack_pack_long(&pk, position);
	}
	return frame_end(&sb, len);
}

uint8_t *frame_queued(uint32_t id, int position, size_t *len)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	frame_reply(&sb, &pk, id, "queued", 1);
	frame_str(&pk, "position");
	msgpack_pack_int(&pk, position);
	return frame_end(&sb, len);
}
