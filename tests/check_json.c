/*
 * check_json.c - the JSON reader: RFC 8259 values, escapes, limits and
 * malformed input. Expected values follow the RFC and Python's json module.
 */
#include <check.h>
#include <string.h>

#include "json.h"
#include "testutil.h"

static json_doc *parse(const char *s, char *err, size_t errlen)
{
	return json_parse(s, strlen(s), err, errlen);
}

START_TEST(values)
{
	char err[256];
	json_doc *d = parse(" {\"a\": [1, -2.5e3, true, false, null], "
			    "\"b\": {\"c\": \"x\"}, \"a\": 7} ",
			    err, sizeof err);
	ck_assert_msg(d, "%s", err);
	const json_value *r = json_root(d);
	ck_assert_int_eq(json_count(r), 3);
	const json_value *a = json_get(r, "a"); /* first of duplicates */
	ck_assert_int_eq(a->type, JSON_ARRAY);
	ck_assert_int_eq(json_count(a), 5);
	ck_assert(json_num(json_at(a, 0), 0) == 1.0);
	ck_assert(json_num(json_at(a, 1), 0) == -2500.0);
	ck_assert_int_eq(json_bool(json_at(a, 2), -1), 1);
	ck_assert_int_eq(json_bool(json_at(a, 3), -1), 0);
	ck_assert(!json_present(json_at(a, 4)));
	ck_assert_ptr_null(json_at(a, 5));
	ck_assert_str_eq(json_str(json_get(json_get(r, "b"), "c"), ""), "x");
	ck_assert_ptr_null(json_get(r, "zz"));
	int64_t v;
	ck_assert(json_int(json_at(a, 0), 0, 10, &v) && v == 1);
	ck_assert(!json_int(json_at(a, 1), 0, 10, &v));
	json_free(d);
}
END_TEST

START_TEST(escapes)
{
	char err[256];
	/* \u00e9 = é (C3 A9); the surrogate pair is U+1F600 (F0 9F 98 80);
	 * an escaped NUL is kept inside the string. */
	json_doc *d = parse("[\"a\\n\\t\\\"\\\\\\/\\u00e9\\ud83d\\ude00\\u0000z\"]",
			    err, sizeof err);
	ck_assert_msg(d, "%s", err);
	const json_value *s = json_at(json_root(d), 0);
	const char want[] = "a\n\t\"\\/\xC3\xA9\xF0\x9F\x98\x80\0z";
	ck_assert_uint_eq(s->u.str.len, sizeof want - 1);
	ck_assert(memcmp(s->u.str.s, want, sizeof want - 1) == 0);
	json_free(d);
}
END_TEST

START_TEST(malformed)
{
	static const char *bad[] = {
		"",          "[1,]",        "{\"a\" 1}",  "[1 2]",
		"\"abc",     "[\"\\x\"]",   "01",         "1.",
		"-",         "[1e]",        "tru",        "{1:2}",
		"[\"\\u12\"]", "\"\x01\"",   "[1] x",      "\"\xC3\x28\"",
		"\"\xED\xA0\x80\"", /* UTF-8 encoded surrogate */
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		char err[256] = "";
		json_doc *d = parse(bad[i], err, sizeof err);
		ck_assert_msg(d == NULL, "accepted %s", bad[i]);
		ck_assert_msg(strstr(err, "JSON error at byte"), "msg: %s", err);
	}
}
END_TEST

START_TEST(depth_limit)
{
	char buf[2 * (JSON_MAX_DEPTH + 2) + 1];
	int n = JSON_MAX_DEPTH + 2;
	for (int i = 0; i < n; i++)
		buf[i] = '[';
	for (int i = 0; i < n; i++)
		buf[n + i] = ']';
	buf[2 * n] = 0;
	char err[256];
	ck_assert_ptr_null(parse(buf, err, sizeof err));
	ck_assert(strstr(err, "nesting"));
	/* Exactly at the limit is fine. */
	n = JSON_MAX_DEPTH + 1;
	for (int i = 0; i < n; i++)
		buf[i] = '[';
	for (int i = 0; i < n; i++)
		buf[n + i] = ']';
	buf[2 * n] = 0;
	json_doc *d = parse(buf, err, sizeof err);
	ck_assert_msg(d, "%s", err);
	json_free(d);
}
END_TEST

START_TEST(real_files)
{
	char err[256];
	json_doc *d = json_parse_file(
		test_data("models/tiny-llama3/tokenizer.json"), 0, err,
		sizeof err);
	ck_assert_msg(d, "%s", err);
	const json_value *m = json_get(json_root(d), "model");
	ck_assert_str_eq(json_str(json_get(m, "type"), ""), "BPE");
	ck_assert_uint_eq(json_count(json_get(m, "vocab")), 50257);
	json_free(d);
	ck_assert_ptr_null(json_parse_file("/nonexistent.json", 0, err, sizeof err));
	ck_assert(strstr(err, "/nonexistent.json"));
	ck_assert_ptr_null(json_parse_file(
		test_data("models/tiny-llama3/config.json"), 10, err, sizeof err));
	ck_assert(strstr(err, "allowed"));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("json");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, values);
	tcase_add_test(tc, escapes);
	tcase_add_test(tc, malformed);
	tcase_add_test(tc, depth_limit);
	tcase_add_test(tc, real_files);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
