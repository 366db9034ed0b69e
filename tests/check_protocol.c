/*
 * check_protocol.c - the frame format and the bounded msgpack
 * pre-validator (libclient/protocol.c): valid frames pass, truncated,
 * oversized, too deep and lying frames are refused before msgpack-c sees
 * them (the msgpack-c #1013 input among them), and on mutated frames the
 * validator never accepts what msgpack-c then fails to unpack.
 */
#include <check.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"
#include "testutil.h"

static char err[256];

static int valid(const void *p, size_t n)
{
	return proto_validate(p, n, PROTO_MAX_DEPTH, err, sizeof err) == 0;
}

/* {"op":"ping","id":1} packed by msgpack-c. */
static size_t ping_frame(uint8_t *out)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	msgpack_pack_str_with_body(&pk, "op", 2);
	msgpack_pack_str_with_body(&pk, "ping", 4);
	msgpack_pack_str_with_body(&pk, "id", 2);
	msgpack_pack_uint32(&pk, 1);
	size_t n = sb.size;
	memcpy(out, sb.data, n);
	msgpack_sbuffer_destroy(&sb);
	return n;
}

START_TEST(test_valid_frames)
{
	uint8_t b[64];
	size_t n = ping_frame(b);
	ck_assert_msg(valid(b, n), "%s", err);
	/* empty map, map16 and map32 headers */
	ck_assert(valid("\x80", 1));
	ck_assert(valid("\xde\x00\x00", 3));
	ck_assert(valid("\xdf\x00\x00\x00\x00", 5));
	/* every scalar type as a value */
	static const uint8_t all[] = {
		0x8f,
		0x01, 0xc0,                         /* nil */
		0x02, 0xc3,                         /* true */
		0x03, 0xcc, 0xff,                   /* uint8 */
		0x04, 0xcf, 1, 2, 3, 4, 5, 6, 7, 8, /* uint64 */
		0x05, 0xd3, 1, 2, 3, 4, 5, 6, 7, 8, /* int64 */
		0x06, 0xca, 0, 0, 0, 0,             /* float32 */
		0x07, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, /* float64 */
		0x08, 0xa3, 'a', 'b', 'c',          /* fixstr */
		0x09, 0xd9, 2, 'h', 'i',            /* str8 */
		0x0a, 0xc4, 1, 0xff,                /* bin8 */
		0x0b, 0xd4, 1, 0x00,                /* fixext1 */
		0x0c, 0xc7, 2, 5, 0, 0,             /* ext8 */
		0x0d, 0x92, 0x01, 0xe0,             /* [1, -32] */
		0x0e, 0xdc, 0, 1, 0x90,             /* array16 [[]] */
		0x0f, 0x81, 0xa1, 'k', 0x80,        /* {"k": {}} */
	};
	ck_assert_msg(valid(all, sizeof all), "%s", err);
}
END_TEST

START_TEST(test_not_a_map)
{
	ck_assert(!valid("", 0));
	ck_assert(!valid("\x90", 1));         /* array */
	ck_assert(!valid("\x01", 1));         /* int */
	ck_assert(!valid("\xa2hi", 3));       /* string */
	ck_assert(strstr(err, "not a msgpack map") != NULL);
}
END_TEST

START_TEST(test_truncated)
{
	uint8_t b[64];
	size_t n = ping_frame(b);
	for (size_t k = 1; k < n; k++)
		ck_assert_msg(!valid(b, k), "prefix of %zu bytes accepted", k);
	/* a str32 whose length field itself is cut */
	ck_assert(!valid("\x81\xa1k\xdb\x00\x00", 6));
}
END_TEST

START_TEST(test_msgpack_c_1013)
{
	/* msgpack-c issue #1013: an array32 of 0xff000000 elements in five
	 * bytes makes msgpack_unpack allocate ~96 GB. Top level and as a
	 * value in a map: refused without allocation. */
	static const uint8_t top[] = { 0xdd, 0xff, 0x00, 0x00, 0x00 };
	ck_assert(!valid(top, sizeof top));
	static const uint8_t in_map[] = { 0x81, 0xa1, 'a', 0xdd, 0xff, 0x00, 0x00, 0x00 };
	ck_assert(!valid(in_map, sizeof in_map));
	ck_assert_msg(strstr(err, "4278190080 elements") != NULL, "%s", err);
	/* the same lie with map32 and str32 / bin32 */
	static const uint8_t map32[] = { 0xdf, 0x7f, 0xff, 0xff, 0xff, 0x01 };
	ck_assert(!valid(map32, sizeof map32));
	static const uint8_t str32[] = { 0x81, 0xa1, 'a', 0xdb, 0x10, 0, 0, 0, 'x' };
	ck_assert(!valid(str32, sizeof str32));
	static const uint8_t bin32[] = { 0x81, 0xa1, 'a', 0xc6, 0xff, 0xff, 0xff, 0xff };
	ck_assert(!valid(bin32, sizeof bin32));
	/* an honest array32: 3 elements */
	static const uint8_t ok[] = { 0x81, 0xa1, 'a', 0xdd, 0, 0, 0, 3, 1, 2, 3 };
	ck_assert_msg(valid(ok, sizeof ok), "%s", err);
}
END_TEST

START_TEST(test_depth)
{
	/* {"a": [[[...]]]} with k nested arrays: 1 + k containers */
	uint8_t b[64];
	for (int k = 0; k < 20; k++) {
		size_t n = 0;
		b[n++] = 0x81;
		b[n++] = 0xa1;
		b[n++] = 'a';
		for (int i = 0; i < k; i++)
			b[n++] = i == k - 1 ? 0x90 : 0x91;
		if (k == 0)
			b[n++] = 0xc0;
		int ok = valid(b, n);
		ck_assert_msg(ok == (1 + k <= PROTO_MAX_DEPTH),
			      "depth %d: %s", 1 + k, ok ? "accepted" : err);
	}
	/* 100000 nested arrays: refused, no recursion blow-up */
	size_t big = 100000;
	uint8_t *deep = malloc(big + 3);
	ck_assert_ptr_nonnull(deep);
	deep[0] = 0x81;
	deep[1] = 0xa1;
	deep[2] = 'a';
	memset(deep + 3, 0x91, big);
	ck_assert(!valid(deep, big + 3));
	ck_assert(strstr(err, "nesting") != NULL);
	free(deep);
}
END_TEST

START_TEST(test_trailing_and_invalid)
{
	ck_assert(!valid("\x80\x80", 2));
	ck_assert(strstr(err, "after") != NULL);
	ck_assert(!valid("\x81\xa1k\xc1", 4)); /* 0xc1 is never used */
	ck_assert(!valid("\x82\xa1k\x01", 4)); /* map of 2 pairs, 1 given */
}
END_TEST

START_TEST(test_len_helpers)
{
	uint8_t h[4];
	uint32_t vals[] = { 0, 1, 255, 256, 65536, PROTO_MAX_FRAME, 0xffffffffu };
	for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
		proto_put_len(h, vals[i]);
		ck_assert_uint_eq(proto_get_len(h), vals[i]);
	}
	proto_put_len(h, 0x01020304);
	ck_assert(h[0] == 1 && h[1] == 2 && h[2] == 3 && h[3] == 4);
}
END_TEST

START_TEST(test_field)
{
	uint8_t b[64];
	size_t n = ping_frame(b);
	msgpack_zone z;
	msgpack_zone_init(&z, 1024);
	msgpack_object o;
	size_t off = 0;
	ck_assert(msgpack_unpack((const char *)b, n, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS);
	const msgpack_object *op = proto_field(&o, "op");
	ck_assert_ptr_nonnull(op);
	ck_assert(op->type == MSGPACK_OBJECT_STR && op->via.str.size == 4);
	ck_assert_ptr_null(proto_field(&o, "o"));
	ck_assert_ptr_null(proto_field(&o, "opx"));
	ck_assert_ptr_null(proto_field(op, "op")); /* not a map */
	msgpack_zone_destroy(&z);
}
END_TEST

/* Mutate valid frames at random: whatever the validator accepts,
 * msgpack-c must unpack completely (the validator is never looser). */
START_TEST(test_mutations_agree_with_msgpack_c)
{
	uint8_t base[64], b[64];
	size_t n = ping_frame(base);
	uint64_t s = 0x9e3779b97f4a7c15ull;
	int accepted = 0;
	for (int it = 0; it < 200000; it++) {
		memcpy(b, base, n);
		size_t len = n;
		for (int k = 0; k < 3; k++) {
			s ^= s << 13, s ^= s >> 7, s ^= s << 17;
			b[s % n] = (uint8_t)(s >> 32);
		}
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		if (s % 4 == 0)
			len = 1 + (s >> 8) % n;
		if (!valid(b, len))
			continue;
		accepted++;
		msgpack_zone z;
		msgpack_zone_init(&z, 1024);
		msgpack_object o;
		size_t off = 0;
		int rc = msgpack_unpack((const char *)b, len, &off, &z, &o);
		ck_assert_msg(rc == MSGPACK_UNPACK_SUCCESS && off == len &&
			      o.type == MSGPACK_OBJECT_MAP, "iteration %d", it);
		msgpack_zone_destroy(&z);
	}
	ck_assert_int_gt(accepted, 100);
}
END_TEST

START_TEST(test_default_socket)
{
	char p[108];
	setenv("XDG_RUNTIME_DIR", "/run/user/1234", 1);
	ck_assert_int_eq(proto_default_socket(p, sizeof p), 0);
	ck_assert_str_eq(p, "/run/user/1234/inferd.sock");
	unsetenv("XDG_RUNTIME_DIR");
	ck_assert_int_eq(proto_default_socket(p, sizeof p), 0);
	ck_assert(strncmp(p, "/tmp/inferd-", 12) == 0);
	ck_assert_int_eq(proto_default_socket(p, 5), -1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("protocol");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_valid_frames);
	tcase_add_test(tc, test_not_a_map);
	tcase_add_test(tc, test_truncated);
	tcase_add_test(tc, test_msgpack_c_1013);
	tcase_add_test(tc, test_depth);
	tcase_add_test(tc, test_trailing_and_invalid);
	tcase_add_test(tc, test_len_helpers);
	tcase_add_test(tc, test_field);
	tcase_add_test(tc, test_mutations_agree_with_msgpack_c);
	tcase_add_test(tc, test_default_socket);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
