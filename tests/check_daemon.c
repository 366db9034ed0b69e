/*
 * check_daemon.c - integration tests of inferd: each test starts the built
 * daemon on a temporary socket and database with the tiny test models and
 * drives it through libinfer, infer-client and raw frames.
 *
 * Reference values: golden.json's greedy ids (HF transformers) and, when
 * it is built, infer-run's output for the same prompt and seed.
 */
#include <check.h>
#include <pthread.h>
#include <sqlite3.h>

#include "daemon_util.h"
#include "infer.h"

static const char *const PROMPT = "Once upon a time"; /* golden prompts[0] */

/* Collects generated ids and text. */
typedef struct Gen {
	int32_t ids[4096];  /* token ids in order */
	int n;              /* how many */
	char text[65536];   /* concatenated text */
	size_t len;         /* its length */
	int cancel_after;   /* > 0: return 1 after this many tokens */
} Gen;

static int collect(void *ud, int32_t token, const char *text, size_t len)
{
	Gen *g = ud;
	if (g->n < 4096)
		g->ids[g->n++] = token;
	if (g->len + len < sizeof g->text) {
		memcpy(g->text + g->len, text, len);
		g->len += len;
		g->text[g->len] = 0;
	}
	return g->cancel_after > 0 && g->n >= g->cancel_after;
}

static infer_client *must_connect(const TDaemon *d)
{
	infer_client *c = NULL;
	char err[256];
	int rc = infer_connect(&c, d->sock, err, sizeof err);
	ck_assert_msg(rc == 0, "connect: %s", err);
	return c;
}

static void greedy_params(infer_gen_params *p, const char *model, int n)
{
	infer_gen_params_init(p);
	p->model = model;
	p->prompt = PROMPT;
	p->temperature = 0;
	p->max_tokens = n;
	p->ignore_eos = 1;
}

/* infer-run's ids for the same request; -1 when infer-run is not built. */
static int infer_run_ids(const char *model, const char *extra, int32_t *out,
			 int cap)
{
	const char *bin = test_build("infer-run");
	if (access(bin, X_OK) != 0)
		return -1;
	char cmd[8192];
	snprintf(cmd, sizeof cmd, "'%s' generate '%s' -p '%s' --ids --ignore-eos "
		 "-t 1 %s 2>/dev/null", bin, test_data(model), PROMPT, extra);
	FILE *f = popen(cmd, "r");
	if (!f)
		return -1;
	int k = 0, v;
	while (k < cap && fscanf(f, "%d", &v) == 1)
		out[k++] = v;
	pclose(f);
	return k;
}

START_TEST(test_hello_version_mismatch)
{
	TDaemon d;
	ck_assert_msg(t_start(&d, NULL) == 0, "inferd did not start");
	int fd = t_connect(d.sock);
	uint8_t b[256];
	size_t n = t_pack(b, sizeof b, 3, "op", "s:hello", "id", "i:7", "version", "i:99");
	ck_assert_int_eq(t_send(fd, b, n), 0);
	static TReply r;
	ck_assert_int_eq(t_recv(fd, &r, 10), 0);
	char s[512];
	ck_assert_str_eq(t_str(&r, "type", s, sizeof s), "error");
	ck_assert_str_eq(t_str(&r, "code", s, sizeof s), "version");
	ck_assert_int_eq(t_int(&r, "id"), 7);
	t_str(&r, "message", s, sizeof s);
	ck_assert_msg(strstr(s, "version 99") && strstr(s, "version 1"), "%s", s);
	msgpack_zone_destroy(&r.zone);
	/* the right version is welcomed on the same connection */
	n = t_pack(b, sizeof b, 3, "op", "s:hello", "id", "i:8", "version", "i:1");
	t_send(fd, b, n);
	ck_assert_int_eq(t_recv(fd, &r, 10), 0);
	ck_assert_str_eq(t_str(&r, "type", s, sizeof s), "ok");
	ck_assert_int_eq(t_int(&r, "version"), PROTO_VERSION);
	msgpack_zone_destroy(&r.zone);
	close(fd);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

START_TEST(test_ping_status_models)
{
	TDaemon d;
	char dir[4200];
	snprintf(dir, sizeof dir, "%s", test_data("models"));
	const char *args[] = { "--models-dir", dir, NULL };
	ck_assert(t_start(&d, args) == 0);
	infer_client *c = must_connect(&d);
	ck_assert_int_eq(infer_ping(c), 0);
	ck_assert_int_eq(infer_daemon_protocol(c), PROTO_VERSION);
	char *js;
	ck_assert_int_eq(infer_status(c, &js), 0);
	ck_assert_msg(strstr(js, "\"name\":\"l2\",\"state\":\"unloaded\"") != NULL, "%s", js);
	ck_assert_msg(strstr(js, "\"version\":\"0.1.0\"") != NULL, "%s", js);
	free(js);
	ck_assert_int_eq(infer_models(c, &js), 0);
	ck_assert_msg(strstr(js, "\"name\":\"l3\"") && strstr(js, "\"format\":\"hf\""), "%s", js);
	/* the models folder: GGUF files by name without .gguf, HF folders */
	ck_assert_msg(strstr(js, "\"name\":\"tiny-llama2-q8_0\"") &&
		      strstr(js, "\"name\":\"tiny-llama3-f16\"") &&
		      strstr(js, "\"name\":\"tiny-llama3\",\"path\""), "%s", js);
	free(js);
	infer_close(c);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

START_TEST(test_generate_matches_reference)
{
	TDaemon d;
	ck_assert(t_start(&d, NULL) == 0);
	infer_client *c = must_connect(&d);
	int32_t gold[64];
	int ng = golden_greedy("tiny-llama2", gold, 64);
	ck_assert_int_ge(ng, 16);
	infer_gen_params p;
	greedy_params(&p, "l2", ng);
	static Gen g;
	memset(&g, 0, sizeof g);
	infer_gen_result res;
	int rc = infer_generate(c, &p, collect, &g, &res);
	ck_assert_msg(rc == 0, "%s", infer_errmsg(c));
	ck_assert_str_eq(res.finish, "length");
	ck_assert_int_eq(res.gen_tokens, ng);
	ck_assert_int_eq(res.prompt_tokens, 5); /* golden ids: BOS + 4 */
	ck_assert(res.ttft_ms > 0 && res.total_ms >= res.ttft_ms);
	/* streamed one event per token (text may be held, never here) */
	ck_assert_int_eq(g.n, ng);
	for (int i = 0; i < ng; i++)
		ck_assert_msg(g.ids[i] == gold[i], "token %d: %d, golden %d", i,
			      g.ids[i], gold[i]);
	/* detokenize of the ids is the streamed text */
	char *text;
	ck_assert_int_eq(infer_detokenize(c, "l2", g.ids, (size_t)g.n, &text), 0);
	ck_assert_str_eq(text, g.text);
	free(text);
	/* infer-run, same prompt: greedy, and sampled with one seed */
	int32_t ref[64];
	int nr = infer_run_ids("models/tiny-llama2", "--temp 0 -n 20", ref, 64);
	if (nr >= 0) {
		ck_assert_int_eq(nr, 20);
		for (int i = 0; i < nr; i++)
			ck_assert_int_eq(g.ids[i], ref[i]);
		nr = infer_run_ids("models/tiny-llama2", "--temp 0.9 --seed 1234 -n 24",
				   ref, 64);
		infer_gen_params_init(&p);
		p.model = "l2";
		p.prompt = PROMPT;
		p.temperature = 0.9f;
		p.seed = 1234;
		p.max_tokens = 24;
		p.ignore_eos = 1;
		memset(&g, 0, sizeof g);
		ck_assert_int_eq(infer_generate(c, &p, collect, &g, &res), 0);
		ck_assert_int_eq(nr, 24);
		ck_assert_int_eq(g.n, 24);
		for (int i = 0; i < nr; i++)
			ck_assert_msg(g.ids[i] == ref[i], "seeded token %d: %d vs infer-run %d",
				      i, g.ids[i], ref[i]);
	} else {
		printf("note: infer-run not built; compared with golden.json only\n");
	}
	infer_close(c);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

/* ---- concurrent clients ---- */

typedef struct Worker {
	const TDaemon *d;   /* daemon */
	const char *model;  /* which model */
	Gen g;              /* what came back */
	int rc;             /* infer_generate's result */
} Worker;

static void *client_thread(void *arg)
{
	Worker *w = arg;
	infer_client *c;
	if ((w->rc = infer_connect(&c, w->d->sock, NULL, 0)) < 0)
		return NULL;
	infer_gen_params p;
	greedy_params(&p, w->model, 20);
	infer_gen_result res;
	w->rc = infer_generate(c, &p, collect, &w->g, &res);
	infer_close(c);
	return NULL;
}

START_TEST(test_concurrent_clients)
{
	TDaemon d;
	ck_assert(t_start(&d, NULL) == 0);
	enum { N = 6 };
	static Worker w[N];
	pthread_t th[N];
	for (int i = 0; i < N; i++) {
		memset(&w[i], 0, sizeof w[i]);
		w[i].d = &d;
		w[i].model = i % 3 == 2 ? "l3" : "l2";
		pthread_create(&th[i], NULL, client_thread, &w[i]);
	}
	for (int i = 0; i < N; i++)
		pthread_join(th[i], NULL);
	int32_t g2[64], g3[64];
	ck_assert_int_ge(golden_greedy("tiny-llama2", g2, 64), 20);
	ck_assert_int_ge(golden_greedy("tiny-llama3", g3, 64), 20);
	for (int i = 0; i < N; i++) {
		ck_assert_msg(w[i].rc == 0, "client %d: %s", i, infer_strerror(w[i].rc));
		ck_assert_int_eq(w[i].g.n, 20);
		const int32_t *gold = i % 3 == 2 ? g3 : g2;
		for (int k = 0; k < 20; k++)
			ck_assert_msg(w[i].g.ids[k] == gold[k], "client %d token %d", i, k);
	}
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

/* The status JSON's inflight count (-1 on error). */
static int inflight(infer_client *c)
{
	char *js;
	if (infer_status(c, &js) < 0)
		return -1;
	char *p = strstr(js, "\"inflight\":");
	int v = p ? atoi(p + 11) : -1;
	free(js);
	return v;
}

/* Rows of the request log (straight from SQLite), by a WHERE clause. */
static int db_count(const char *db, const char *where)
{
	sqlite3 *h;
	if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		return -1;
	sqlite3_busy_timeout(h, 2000);
	char sql[1024];
	snprintf(sql, sizeof sql, "SELECT count(*) FROM requests WHERE %s", where);
	sqlite3_stmt *st;
	int n = -1;
	if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			n = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
	}
	sqlite3_close(h);
	return n;
}

static int db_wait_count(const char *db, const char *where, int want)
{
	double end = t_now() + 10 * t_slow();
	int n;
	while ((n = db_count(db, where)) < want && t_now() < end)
		usleep(20000);
	return n;
}

START_TEST(test_disconnect_cancels)
{
	TDaemon d;
	const char *args[] = { "--ctx", "4096", NULL };
	ck_assert(t_start(&d, args) == 0);
	int fd = t_connect(d.sock);
	uint8_t b[512];
	size_t n = t_pack(b, sizeof b, 7, "op", "s:generate", "id", "i:1", "model",
			  "s:l2", "prompt", "s:Once upon a time", "max_tokens",
			  "i:4000", "ignore_eos", "b:true", "temperature", "f:0");
	t_send(fd, b, n);
	static TReply r;
	char s[64];
	ck_assert_int_eq(t_recv_event(fd, &r, 30), 0);
	ck_assert_str_eq(t_str(&r, "type", s, sizeof s), "token");
	msgpack_zone_destroy(&r.zone);
	double t0 = t_now();
	close(fd);
	/* the daemon notices at once and the worker stops at the next token */
	infer_client *c = must_connect(&d);
	while (inflight(c) != 0 && t_now() - t0 < 10 * t_slow())
		usleep(5000);
	double dt = t_now() - t0;
	ck_assert_int_eq(inflight(c), 0);
	ck_assert_msg(dt < 2.0 * t_slow(), "cancel took %.3f s", dt);
	printf("disconnect -> request gone in %.1f ms\n", dt * 1e3);
	ck_assert_int_eq(db_wait_count(d.db, "op='generate' AND finish='cancel' "
				       "AND gen_tokens < 4000", 1), 1);
	/* and the model serves the next client */
	ck_assert_int_eq(infer_ping(c), 0);
	infer_gen_params p;
	greedy_params(&p, "l2", 4);
	static Gen g;
	memset(&g, 0, sizeof g);
	ck_assert_int_eq(infer_generate(c, &p, collect, &g, NULL), 0);
	ck_assert_int_eq(g.n, 4);
	infer_close(c);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

/* ---- the bad input table ---- */

typedef struct Bad {
	const char *what;     /* description */
	uint8_t body[64];     /* frame body (or the whole stream if raw) */
	size_t len;           /* body length; 0 with pack != NULL */
	const char *code;     /* expected error code */
	int closes;           /* the daemon closes the connection */
	int raw;              /* body is sent without a length prefix */
} Bad;

static size_t packv(uint8_t *out, const char *const *kv, int n)
{
	return t_pack(out, 512, n / 2, kv[0], kv[1], kv[2], kv[3], kv[4], kv[5], kv[6],
		      kv[7], kv[8], kv[9], kv[10], kv[11]);
}

START_TEST(test_bad_inputs)
{
	TDaemon d;
	ck_assert(t_start(&d, NULL) == 0);
	/* packed requests: key/value pairs (t_pack spec) */
	static const struct { const char *what; int n; const char *kv[12];
			      const char *code; } packed[] = {
		{ "no id", 1, { "op", "s:ping" }, "bad_request" },
		{ "id is a string", 2, { "op", "s:ping", "id", "s:1" }, "bad_request" },
		{ "id is 0", 2, { "op", "s:ping", "id", "i:0" }, "bad_request" },
		{ "id is negative", 2, { "op", "s:ping", "id", "i:-4" }, "bad_request" },
		{ "id over 32 bits", 2, { "op", "s:ping", "id", "i:4294967296" }, "bad_request" },
		{ "no op", 1, { "id", "i:1" }, "bad_request" },
		{ "op is an integer", 2, { "op", "i:3", "id", "i:1" }, "bad_request" },
		{ "unknown op", 2, { "op", "s:frobnicate", "id", "i:1" }, "unknown_op" },
		{ "hello without version", 2, { "op", "s:hello", "id", "i:1" }, "bad_request" },
		{ "hello version is a string", 3, { "op", "s:hello", "id", "i:1", "version", "s:1" }, "bad_request" },
		{ "hello version 2", 3, { "op", "s:hello", "id", "i:1", "version", "i:2" }, "version" },
		{ "generate without model", 3, { "op", "s:generate", "id", "i:1", "prompt", "s:hi" }, "bad_request" },
		{ "generate model is an int", 4, { "op", "s:generate", "id", "i:1", "model", "i:2", "prompt", "s:hi" }, "bad_request" },
		{ "generate unknown model", 4, { "op", "s:generate", "id", "i:1", "model", "s:nope", "prompt", "s:hi" }, "not_found" },
		{ "generate without prompt", 3, { "op", "s:generate", "id", "i:1", "model", "s:l2" }, "bad_request" },
		{ "generate prompt is a bool", 4, { "op", "s:generate", "id", "i:1", "model", "s:l2", "prompt", "b:true" }, "bad_request" },
		{ "max_tokens 0", 5, { "op", "s:generate", "id", "i:1", "model", "s:l2", "prompt", "s:hi", "max_tokens", "i:0" }, "bad_request" },
		{ "max_tokens 10^9", 5, { "op", "s:generate", "id", "i:1", "model", "s:l2", "prompt", "s:hi", "max_tokens", "i:1000000000" }, "bad_request" },
		{ "temperature is a string", 5, { "op", "s:generate", "id", "i:1", "model", "s:l2", "prompt", "s:hi", "temperature", "s:hot" }, "bad_request" },
		{ "temperature -1", 5, { "op", "s:generate", "id", "i:1", "model", "s:l2", "prompt", "s:hi", "temperature", "f:-1" }, "bad_request" },
		{ "top_p 2", 5, { "op", "s:generate", "id", "i:1", "model", "s:l2", "prompt", "s:hi", "top_p", "f:2" }, "bad_request" },
		{ "seed negative", 5, { "op", "s:generate", "id", "i:1", "model", "s:l2", "prompt", "s:hi", "seed", "i:-1" }, "bad_request" },
		{ "stop is a string", 5, { "op", "s:generate", "id", "i:1", "model", "s:l2", "prompt", "s:hi", "stop", "s:x" }, "bad_request" },
		{ "messages is a string", 4, { "op", "s:generate", "id", "i:1", "model", "s:l2", "messages", "s:x" }, "bad_request" },
		{ "keep_alive -5", 5, { "op", "s:generate", "id", "i:1", "model", "s:l2", "prompt", "s:hi", "keep_alive", "i:-5" }, "bad_request" },
		{ "tokenize without text", 3, { "op", "s:tokenize", "id", "i:1", "model", "s:l2" }, "bad_request" },
		{ "detokenize tokens is a string", 4, { "op", "s:detokenize", "id", "i:1", "model", "s:l2", "tokens", "s:1 2" }, "bad_request" },
		{ "cancel without target", 2, { "op", "s:cancel", "id", "i:1" }, "bad_request" },
		{ "load unknown model", 3, { "op", "s:load", "id", "i:1", "model", "s:nope" }, "not_found" },
		{ "model name of 200 bytes", 3, { "op", "s:load", "id", "i:1", "model",
			"s:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }, "bad_request" },
	};
	/* raw frame bodies */
	static const Bad raw[] = {
		{ "empty frame", { 0 }, 0, "bad_request", 0, 0 },
		{ "body is an array", { 0x92, 1, 2 }, 3, "bad_request", 0, 0 },
		{ "body is an integer", { 0x05 }, 1, "bad_request", 0, 0 },
		{ "body is a string", { 0xa2, 'h', 'i' }, 3, "bad_request", 0, 0 },
		{ "map declares 2 pairs, has 1", { 0x82, 0xa1, 'k', 1 }, 4, "bad_request", 0, 0 },
		{ "msgpack-c #1013 array32 lie", { 0x81, 0xa1, 'a', 0xdd, 0xff, 0, 0, 0 }, 8, "bad_request", 0, 0 },
		{ "map32 of 2^31 pairs", { 0xdf, 0x80, 0, 0, 0 }, 5, "bad_request", 0, 0 },
		{ "str32 longer than the frame", { 0x81, 0xa1, 'a', 0xdb, 0, 0, 1, 0, 'x' }, 9, "bad_request", 0, 0 },
		{ "nesting 12 deep", { 0x81, 0xa1, 'a', 0x91, 0x91, 0x91, 0x91, 0x91, 0x91,
				       0x91, 0x91, 0x91, 0x91, 0x91, 0x90 }, 15, "bad_request", 0, 0 },
		{ "bytes after the map", { 0x80, 0x80 }, 2, "bad_request", 0, 0 },
		{ "reserved byte 0xc1", { 0x81, 0xa1, 'a', 0xc1 }, 4, "bad_request", 0, 0 },
		{ "non-string keys", { 0x82, 0x01, 0x02, 0x03, 0x04 }, 5, "bad_request", 0, 0 },
		{ "frame length 2^31", { 0x80, 0, 0, 0, 0x80 }, 5, "limit", 1, 1 },
		{ "frame length 4 MiB + 1", { 0x00, 0x40, 0x00, 0x01 }, 4, "limit", 1, 1 },
	};
	int fd = t_connect(d.sock);
	static TReply r;
	uint8_t b[512];
	char code[64], msg[512];
	int kinds = 0;
	printf("%-32s | %-12s | %s\n", "bad input", "reply", "message");
	for (size_t i = 0; i < sizeof packed / sizeof packed[0]; i++) {
		size_t n = packv(b, packed[i].kv, packed[i].n * 2);
		ck_assert_uint_gt(n, 0);
		ck_assert_int_eq(t_send(fd, b, n), 0);
		ck_assert_msg(t_recv(fd, &r, 20) == 0, "%s: no reply", packed[i].what);
		t_str(&r, "code", code, sizeof code);
		t_str(&r, "message", msg, sizeof msg);
		printf("%-32s | %-12s | %s\n", packed[i].what, code, msg);
		ck_assert_str_eq(t_str(&r, "type", msg + 400, 100), "error");
		ck_assert_msg(!strcmp(code, packed[i].code), "%s: got %s", packed[i].what, code);
		msgpack_zone_destroy(&r.zone);
		kinds++;
	}
	/* a prompt over PROTO_MAX_PROMPT */
	{
		size_t big = PROTO_MAX_PROMPT + 1;
		char *p = malloc(big + 1);
		memset(p, 'a', big);
		p[big] = 0;
		msgpack_sbuffer sb;
		msgpack_packer pk;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		msgpack_pack_map(&pk, 4);
		msgpack_pack_str_with_body(&pk, "op", 2);
		msgpack_pack_str_with_body(&pk, "generate", 8);
		msgpack_pack_str_with_body(&pk, "id", 2);
		msgpack_pack_int(&pk, 5);
		msgpack_pack_str_with_body(&pk, "model", 5);
		msgpack_pack_str_with_body(&pk, "l2", 2);
		msgpack_pack_str_with_body(&pk, "prompt", 6);
		msgpack_pack_str_with_body(&pk, p, big);
		ck_assert_int_eq(t_send(fd, sb.data, sb.size), 0);
		msgpack_sbuffer_destroy(&sb);
		free(p);
		ck_assert_int_eq(t_recv(fd, &r, 20), 0);
		t_str(&r, "code", code, sizeof code);
		t_str(&r, "message", msg, sizeof msg);
		printf("%-32s | %-12s | %s\n", "prompt of 1 MiB + 1", code, msg);
		ck_assert_str_eq(code, "bad_request");
		ck_assert(strstr(msg, "over the limit") != NULL);
		msgpack_zone_destroy(&r.zone);
		kinds++;
	}
	/* detokenize an id outside the vocabulary (checked by the worker) */
	{
		msgpack_sbuffer sb;
		msgpack_packer pk;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		msgpack_pack_map(&pk, 4);
		msgpack_pack_str_with_body(&pk, "op", 2);
		msgpack_pack_str_with_body(&pk, "detokenize", 10);
		msgpack_pack_str_with_body(&pk, "id", 2);
		msgpack_pack_int(&pk, 6);
		msgpack_pack_str_with_body(&pk, "model", 5);
		msgpack_pack_str_with_body(&pk, "l2", 2);
		msgpack_pack_str_with_body(&pk, "tokens", 6);
		msgpack_pack_array(&pk, 2);
		msgpack_pack_int(&pk, 1);
		msgpack_pack_int(&pk, 1000000);
		t_send(fd, sb.data, sb.size);
		msgpack_sbuffer_destroy(&sb);
		ck_assert_int_eq(t_recv(fd, &r, 60), 0);
		t_str(&r, "code", code, sizeof code);
		t_str(&r, "message", msg, sizeof msg);
		printf("%-32s | %-12s | %s\n", "token id outside the vocab", code, msg);
		ck_assert_str_eq(code, "bad_request");
		ck_assert_int_eq(t_int(&r, "id"), 6);
		msgpack_zone_destroy(&r.zone);
		kinds++;
	}
	for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
		if (raw[i].closes) {
			close(fd);
			fd = t_connect(d.sock);
		}
		if (raw[i].raw)
			ck_assert_int_eq(t_write_all(fd, raw[i].body, raw[i].len), 0);
		else
			ck_assert_int_eq(t_send(fd, raw[i].body, raw[i].len), 0);
		ck_assert_msg(t_recv(fd, &r, 20) == 0, "%s: no reply", raw[i].what);
		t_str(&r, "code", code, sizeof code);
		t_str(&r, "message", msg, sizeof msg);
		printf("%-32s | %-12s | %s\n", raw[i].what, code, msg);
		ck_assert_msg(!strcmp(code, raw[i].code), "%s: got %s", raw[i].what, code);
		msgpack_zone_destroy(&r.zone);
		if (raw[i].closes) {
			/* then the daemon hangs up: the stream cannot continue */
			ck_assert_int_eq(t_recv(fd, &r, 20), -1);
		}
		kinds++;
	}
	ck_assert_int_ge(kinds, 20);
	close(fd);
	/* the connection that sent the recoverable ones still works, as
	 * does everyone else */
	fd = t_connect(d.sock);
	size_t n = t_pack(b, sizeof b, 2, "op", "s:ping", "id", "i:9");
	t_send(fd, b, n);
	ck_assert_int_eq(t_recv(fd, &r, 10), 0);
	ck_assert_int_eq(t_int(&r, "id"), 9);
	msgpack_zone_destroy(&r.zone);
	close(fd);
	infer_client *c = must_connect(&d);
	ck_assert_int_eq(infer_ping(c), 0);
	infer_close(c);
	ck_assert_int_eq(t_stop(&d), 0); /* and it never crashed */
	t_cleanup(&d);
}
END_TEST

/* Read a whole small file. */
static void slurp(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
	buf[n] = 0;
	if (f)
		fclose(f);
}

START_TEST(test_second_daemon_refused)
{
	TDaemon d;
	ck_assert(t_start(&d, NULL) == 0);
	TDaemon d2 = d;
	snprintf(d2.log, sizeof d2.log, "%s/log2", d.dir);
	pid_t pid = t_spawn(&d2, NULL);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
	char log[4096], want[128];
	slurp(d2.log, log, sizeof log);
	snprintf(want, sizeof want, "another inferd (pid %d) is serving", (int)d.pid);
	ck_assert_msg(strstr(log, want) != NULL, "%s", log);
	/* the first one was not disturbed */
	infer_client *c = must_connect(&d);
	ck_assert_int_eq(infer_ping(c), 0);
	infer_close(c);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

START_TEST(test_stale_socket_recovered)
{
	TDaemon d;
	ck_assert(t_prepare(&d) == 0);
	/* a dead daemon's leftovers: a bound socket nobody listens on and
	 * its lock file (unlocked) */
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa;
	ck_assert_int_eq(t_sun(&sa, d.sock), 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	close(fd);
	char lock[160];
	snprintf(lock, sizeof lock, "%s.lock", d.sock);
	FILE *f = fopen(lock, "w");
	fputs("99999\n", f);
	fclose(f);
	ck_assert_int_eq(t_connect(d.sock), -1); /* stale indeed */
	ck_assert(t_launch(&d, NULL) == 0);
	infer_client *c = must_connect(&d);
	ck_assert_int_eq(infer_ping(c), 0);
	infer_close(c);
	char log[4096];
	slurp(d.log, log, sizeof log);
	ck_assert_msg(strstr(log, "removed stale socket") != NULL, "%s", log);
	ck_assert_int_eq(t_stop(&d), 0);
	/* a clean exit removes socket and lock */
	ck_assert_int_eq(access(d.sock, F_OK), -1);
	ck_assert_int_eq(access(lock, F_OK), -1);
	t_cleanup(&d);
}
END_TEST

START_TEST(test_listen_fds)
{
	TDaemon d;
	ck_assert(t_prepare(&d) == 0);
	char path[160];
	snprintf(path, sizeof path, "%s/activated.sock", d.dir);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa;
	ck_assert_int_eq(t_sun(&sa, path), 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	ck_assert_int_eq(listen(fd, 16), 0);
	d.listen_fd = fd;
	d.pid = t_spawn(&d, NULL);
	close(fd);
	ck_assert_int_eq(t_wait_ready(path, d.pid, 20), 0);
	infer_client *c = NULL;
	ck_assert_int_eq(infer_connect(&c, path, NULL, 0), 0);
	ck_assert_int_eq(infer_ping(c), 0);
	int32_t *ids;
	ck_assert_int_eq(infer_tokenize(c, "l2", PROMPT, 1, 1, &ids), 5);
	ck_assert_int_eq(ids[0], 1);
	ck_assert_int_eq(ids[1], 9038);
	free(ids);
	infer_close(c);
	/* it did not create its own socket */
	ck_assert_int_eq(access(d.sock, F_OK), -1);
	char log[4096];
	slurp(d.log, log, sizeof log);
	ck_assert_msg(strstr(log, "passed by systemd") != NULL, "%s", log);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

/* Socket activation with --exit-idle: the daemon exits once no client is
 * left; a client connecting meanwhile waits in the listening socket's
 * backlog (as systemd keeps it) and is served by the next daemon. */
START_TEST(test_listen_fds_exit_idle)
{
	TDaemon d;
	ck_assert(t_prepare(&d) == 0);
	char path[160];
	snprintf(path, sizeof path, "%s/activated.sock", d.dir);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa;
	ck_assert_int_eq(t_sun(&sa, path), 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	ck_assert_int_eq(listen(fd, 16), 0);
	d.listen_fd = fd;
	const char *extra[] = { "--exit-idle", "1", NULL };
	d.pid = t_spawn(&d, extra);
	ck_assert_int_eq(t_wait_ready(path, d.pid, 20), 0);
	infer_client *c = NULL;
	ck_assert_int_eq(infer_connect(&c, path, NULL, 0), 0);
	ck_assert_int_eq(infer_ping(c), 0);
	/* a connected client keeps it alive past the idle time */
	usleep(2500 * 1000);
	ck_assert_int_eq(waitpid(d.pid, NULL, WNOHANG), 0);
	ck_assert_int_eq(infer_ping(c), 0);
	double t0 = t_now();
	infer_close(c);
	int st = 0;
	while (waitpid(d.pid, &st, WNOHANG) == 0 && t_now() - t0 < 10 * t_slow())
		usleep(20000);
	double dt = t_now() - t0;
	ck_assert_msg(dt >= 0.9 && dt < 4 * t_slow(), "idle exit after %.2f s", dt);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	d.pid = 0;
	char log[8192];
	slurp(d.log, log, sizeof log);
	ck_assert_msg(strstr(log, "idle: draining") != NULL, "%s", log);
	/* the socket is still there (ours, as systemd's would be) */
	ck_assert_int_eq(access(path, F_OK), 0);
	/* a client now waits in the backlog until a daemon is started */
	pid_t cl = fork();
	ck_assert(cl >= 0);
	if (cl == 0) {
		infer_client *k = NULL;
		if (infer_connect(&k, path, NULL, 0) < 0 || infer_ping(k) < 0)
			_exit(1);
		int32_t *ids;
		int n = infer_tokenize(k, "l2", PROMPT, 1, 1, &ids);
		infer_close(k);
		_exit(n == 5 ? 0 : 2);
	}
	usleep(300 * 1000);
	ck_assert_int_eq(waitpid(cl, NULL, WNOHANG), 0); /* still waiting */
	d.pid = t_spawn(&d, extra); /* what systemd does on that connect */
	ck_assert(d.pid > 0);
	double t1 = t_now();
	while (waitpid(cl, &st, WNOHANG) == 0 && t_now() - t1 < 20 * t_slow())
		usleep(20000);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client status %d", st);
	close(fd);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

/* Value of the sample line "name{labels} value" in a Prometheus text,
 * or -1 when absent. */
static double prom_value(const char *text, const char *series)
{
	size_t n = strlen(series);
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p)
		if (!strncmp(p, series, n) && p[n] == ' ')
			return strtod(p + n + 1, NULL);
	return -1;
}

/* Every line is a comment (# HELP / # TYPE name ...) or a sample:
 * name, optional {label="value",...}, one space, a number. */
static int prom_valid(const char *text, char *why, size_t whylen)
{
	int line = 0;
	for (const char *p = text; *p; line++) {
		const char *e = strchr(p, '\n');
		if (!e) {
			snprintf(why, whylen, "last line lacks a newline");
			return 0;
		}
		if (*p == '#') {
			if (strncmp(p, "# HELP inferd_", 14) && strncmp(p, "# TYPE inferd_", 14))
				goto bad;
		} else {
			const char *q = p;
			if (!(*q == '_' || (*q >= 'a' && *q <= 'z')))
				goto bad;
			while (*q == '_' || (*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9'))
				q++;
			if (*q == '{') {
				q++;
				while (*q != '}') {
					while (*q >= 'a' && *q <= 'z')
						q++;
					if (q[0] != '=' || q[1] != '"')
						goto bad;
					q += 2;
					while (*q != '"' && q < e)
						q += *q == '\\' ? 2 : 1;
					if (*q != '"')
						goto bad;
					q++;
					if (*q == ',')
						q++;
					else if (*q != '}')
						goto bad;
				}
				q++;
			}
			if (*q != ' ')
				goto bad;
			char *end;
			strtod(q + 1, &end);
			if (end == q + 1 || end != e)
				goto bad;
		}
		p = e + 1;
		continue;
bad:
		snprintf(why, whylen, "line %d: %.*s", line + 1, (int)(e - p), p);
		return 0;
	}
	return 1;
}

START_TEST(test_metrics)
{
	TDaemon d;
	ck_assert(t_start(&d, NULL) == 0);
	infer_client *c = must_connect(&d);
	infer_gen_params p;
	static Gen g;
	greedy_params(&p, "l2", 12);
	for (int i = 0; i < 2; i++) {
		memset(&g, 0, sizeof g);
		ck_assert_int_eq(infer_generate(c, &p, collect, &g, NULL), 0);
	}
	int32_t *ids;
	ck_assert_int_eq(infer_tokenize(c, "l2", PROMPT, 1, 1, &ids), 5);
	free(ids);
	greedy_params(&p, "no-such-model", 4);
	ck_assert_int_eq(infer_generate(c, &p, collect, &g, NULL), INFER_ENOTFOUND);
	char *text = NULL;
	ck_assert_int_eq(infer_metrics(c, &text), 0);
	char why[512];
	ck_assert_msg(prom_valid(text, why, sizeof why), "%s\n%s", why, text);
	char k[256];
	unsigned uid = (unsigned)getuid();
	snprintf(k, sizeof k, "inferd_requests_total{model=\"l2\",op=\"generate\",uid=\"%u\",status=\"ok\"}", uid);
	ck_assert_msg(prom_value(text, k) == 2, "%s\n%s", k, text);
	snprintf(k, sizeof k, "inferd_requests_total{model=\"l2\",op=\"tokenize\",uid=\"%u\",status=\"ok\"}", uid);
	ck_assert_msg(prom_value(text, k) == 1, "%s", k);
	snprintf(k, sizeof k, "inferd_requests_total{model=\"\",op=\"generate\",uid=\"%u\",status=\"error\"}", uid);
	ck_assert_msg(prom_value(text, k) == 1, "%s\n%s", k, text);
	/* 2 generates of 12 tokens from the 5-token prompt; a tokenize
	 * counts the tokens it made as its prompt tokens (5 more) */
	snprintf(k, sizeof k, "inferd_generated_tokens_total{model=\"l2\",uid=\"%u\"}", uid);
	ck_assert_msg(prom_value(text, k) == 24, "%s\n%s", k, text);
	snprintf(k, sizeof k, "inferd_prompt_tokens_total{model=\"l2\",uid=\"%u\"}", uid);
	ck_assert_msg(prom_value(text, k) == 15, "%s\n%s", k, text);
	ck_assert(prom_value(text, "inferd_time_to_first_token_seconds_count{model=\"l2\"}") == 2);
	ck_assert(prom_value(text, "inferd_time_to_first_token_seconds_bucket{model=\"l2\",le=\"+Inf\"}") == 2);
	ck_assert(prom_value(text, "inferd_decode_tokens_per_second_count{model=\"l2\"}") == 2);
	ck_assert(prom_value(text, "inferd_time_to_first_token_seconds_sum{model=\"l2\"}") > 0);
	/* buckets are cumulative */
	double prev = 0;
	for (const char *q = text; (q = strstr(q, "inferd_decode_tokens_per_second_bucket{model=\"l2\"")); q++) {
		double v = strtod(strchr(q, '}') + 2, NULL);
		ck_assert(v >= prev);
		prev = v;
	}
	ck_assert(prev == 2);
	ck_assert(prom_value(text, "inferd_model_loaded{model=\"l2\"}") == 1);
	ck_assert(prom_value(text, "inferd_model_loaded{model=\"l3\"}") == 0);
	ck_assert(prom_value(text, "inferd_model_queue_depth{model=\"l2\"}") == 0);
	ck_assert(prom_value(text, "inferd_connections") == 1);
	ck_assert(prom_value(text, "inferd_requests_in_flight") == 0);
	free(text);
	infer_close(c);
	/* the CLI prints the same text */
	char cmd[512];
	snprintf(cmd, sizeof cmd, "'%s' --socket '%s' metrics --prometheus",
		 test_build("infer-client"), d.sock);
	FILE *f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	static char out[1 << 16];
	size_t n = fread(out, 1, sizeof out - 1, f);
	out[n] = 0;
	ck_assert_int_eq(pclose(f), 0);
	ck_assert_msg(prom_valid(out, why, sizeof why), "%s", why);
	snprintf(k, sizeof k, "inferd_requests_total{model=\"l2\",op=\"generate\",uid=\"%u\",status=\"ok\"}", uid);
	ck_assert(prom_value(out, k) == 2);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

/* The number after "key": in the status entry of model name. */
static double status_num(const char *json, const char *name, const char *key)
{
	char pat[128];
	snprintf(pat, sizeof pat, "{\"name\":\"%s\"", name);
	const char *m = strstr(json, pat);
	if (!m)
		return -1000;
	snprintf(pat, sizeof pat, "\"%s\":", key);
	const char *k = strstr(m, pat);
	const char *end = strchr(m, '}');
	if (!k || (end && k > end))
		return -1000;
	return strtod(k + strlen(pat), NULL);
}

/* status (infer-client ps): when each idle model will be unloaded. */
/* Queue gauges: one generate running, two waiting from this user. */
START_TEST(test_metrics_queue)
{
	TDaemon d;
	/* one at a time, so two of the three wait in the queue */
	const char *args[] = { "--ctx", "8192", "--max-batch", "1", NULL };
	ck_assert(t_start(&d, args) == 0);
	int fd = t_connect(d.sock);
	uint8_t b[512];
	static TReply r;
	char s[64];
	for (int id = 1; id <= 3; id++) {
		char ids[16];
		snprintf(ids, sizeof ids, "i:%d", id);
		size_t n = t_pack(b, sizeof b, 6, "op", "s:generate", "id", ids,
				  "model", "s:l2", "prompt", "s:Once upon a time",
				  "max_tokens", "i:8000", "ignore_eos", "b:true");
		t_send(fd, b, n);
		if (id == 1) { /* wait until the first one runs */
			ck_assert_int_eq(t_recv_event(fd, &r, 30), 0);
			msgpack_zone_destroy(&r.zone);
		}
	}
	int queued = 0;
	double end = t_now() + 30 * t_slow();
	while (queued < 2 && t_now() < end) {
		ck_assert_int_eq(t_recv(fd, &r, 30), 0);
		if (!strcmp(t_str(&r, "type", s, sizeof s), "queued"))
			queued++;
		msgpack_zone_destroy(&r.zone);
	}
	ck_assert_int_eq(queued, 2);
	infer_client *c = must_connect(&d);
	char *text;
	ck_assert_int_eq(infer_metrics(c, &text), 0);
	char k[160];
	snprintf(k, sizeof k, "inferd_model_user_queue_depth{model=\"l2\",uid=\"%u\"}",
		 (unsigned)getuid());
	ck_assert_msg(prom_value(text, k) == 2, "%s", text);
	ck_assert(prom_value(text, "inferd_model_queue_depth{model=\"l2\"}") == 2);
	ck_assert(prom_value(text, "inferd_model_running{model=\"l2\"}") == 1);
	ck_assert(prom_value(text, "inferd_requests_in_flight") == 3);
	ck_assert(prom_value(text, "inferd_connections") == 2);
	snprintf(k, sizeof k, "inferd_user_requests_in_flight{uid=\"%u\"}", (unsigned)getuid());
	ck_assert(prom_value(text, k) == 3);
	free(text);
	close(fd); /* cancels all three */
	infer_close(c);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

START_TEST(test_status_unload_in)
{
	TDaemon d;
	ck_assert(t_start(&d, NULL) == 0);
	infer_client *c = must_connect(&d);
	ck_assert_int_eq(infer_load(c, "l2", 100), 0);
	double t0 = t_now();
	usleep(1200 * 1000);
	char *json;
	ck_assert_int_eq(infer_status(c, &json), 0);
	double dt = t_now() - t0;
	double left = status_num(json, "l2", "unload_in");
	ck_assert_msg(left <= 100 - 1.0 && left >= 100 - dt - 0.5, "%.3f after %.3f s: %s",
		      left, dt, json);
	ck_assert(status_num(json, "l2", "keep_alive") == 100);
	ck_assert(status_num(json, "l3", "unload_in") == -2); /* not loaded */
	free(json);
	ck_assert_int_eq(infer_load(c, "l3", -1), 0);
	/* the worker may still be finishing the load job ("busy": -2) */
	double v = -2;
	for (int i = 0; i < 100 && v == -2; i++) {
		ck_assert_int_eq(infer_status(c, &json), 0);
		v = status_num(json, "l3", "unload_in");
		if (v == -2)
			usleep(10000);
		ck_assert_msg(v == -1 || v == -2, "%s", json);
		free(json);
	}
	ck_assert(v == -1); /* never */
	infer_close(c);
	char cmd[512];
	snprintf(cmd, sizeof cmd, "'%s' --socket '%s' ps", test_build("infer-client"), d.sock);
	FILE *f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	static char out[8192];
	size_t n = fread(out, 1, sizeof out - 1, f);
	out[n] = 0;
	ck_assert_int_eq(pclose(f), 0);
	/* l2's UNTIL: 100 s from the load less the time since */
	double el = t_now() - t0;
	const char *l2 = strstr(out, "\nl2 ");
	const char *fn = l2 ? strstr(l2, "s from now") : NULL, *q = fn;
	int mm = -1, ss = -1;
	while (q && q > l2 && q[-1] != ' ')
		q--;
	if (q)
		sscanf(q, "%dm%ds", &mm, &ss);
	ck_assert_msg(strstr(out, "UNTIL") && strstr(out, "forever") && mm >= 0 &&
		      mm * 60 + ss <= 99 && mm * 60 + ss >= 100 - el - 1,
		      "%s (%.1f s after the load)", out, el);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

START_TEST(test_log_rows)
{
	TDaemon d;
	ck_assert(t_start(&d, NULL) == 0);
	infer_client *c = must_connect(&d);
	infer_gen_params p;
	greedy_params(&p, "l2", 12);
	static Gen g;
	memset(&g, 0, sizeof g);
	ck_assert_int_eq(infer_generate(c, &p, collect, &g, NULL), 0);
	int32_t *ids;
	ck_assert_int_eq(infer_tokenize(c, "l2", "hello", 1, 1, &ids), 2);
	free(ids);
	ck_assert_int_eq(infer_load(c, "nope", INFER_KEEP_DEFAULT), INFER_ENOTFOUND);
	char exe[512], where[1024];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	exe[n > 0 ? n : 0] = 0;
	/* under valgrind the daemon sees valgrind's tool as our executable
	 * (/proc/<pid>/exe), while readlink of /proc/self/exe is answered
	 * by valgrind with ours */
	const char *pre = getenv("LD_PRELOAD");
	char exe_is[600];
	if (pre && strstr(pre, "vgpreload"))
		snprintf(exe_is, sizeof exe_is, "exe LIKE '%%/memcheck-%%'");
	else
		snprintf(exe_is, sizeof exe_is, "exe='%s'", exe);
	snprintf(where, sizeof where, "op='generate' AND uid=%u AND pid=%d AND "
		 "%s AND model='l2' AND prompt_tokens=5 AND gen_tokens=12 "
		 "AND finish='length' AND status='ok' AND ttft_ms>0 AND "
		 "total_ms>=ttft_ms AND tok_s>0 AND t_end>=t_start AND prompt IS NULL",
		 (unsigned)getuid(), (int)getpid(), exe_is);
	ck_assert_int_eq(db_wait_count(d.db, where, 1), 1);
	ck_assert_int_eq(db_wait_count(d.db, "op='tokenize' AND prompt_tokens=2", 1), 1);
	ck_assert_int_eq(db_wait_count(d.db, "op='load' AND status='error' AND "
				       "error LIKE 'no model named%'", 1), 1);
	/* the log op returns the caller's rows, newest first */
	char *js;
	ck_assert_int_eq(infer_log(c, 2, 0, &js), 0);
	ck_assert_msg(strstr(js, "\"op\":\"load\"") && strstr(js, "\"op\":\"tokenize\"") &&
		      !strstr(js, "\"op\":\"generate\""), "%s", js);
	free(js);
	infer_close(c);
	ck_assert_int_eq(t_stop(&d), 0);
	/* schema version, WAL, models table */
	sqlite3 *h;
	ck_assert_int_eq(sqlite3_open(d.db, &h), SQLITE_OK);
	sqlite3_stmt *st;
	sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &st, NULL);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	ck_assert_int_eq(sqlite3_column_int(st, 0), 2);
	sqlite3_finalize(st);
	sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &st, NULL);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_prepare_v2(h, "SELECT arch, quant, params, last_loaded IS NOT NULL "
			   "FROM models WHERE name='l2'", -1, &st, NULL);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "llama");
	ck_assert_str_eq((const char *)sqlite3_column_text(st, 1), "bf16");
	ck_assert_int_gt(sqlite3_column_int64(st, 2), 0);
	ck_assert_int_eq(sqlite3_column_int(st, 3), 1);
	sqlite3_finalize(st);
	sqlite3_close(h);
	t_cleanup(&d);
}
END_TEST

START_TEST(test_sigterm_drains)
{
	TDaemon d;
	char drain_s[32]; /* the default 30 s, as slow as the run */
	snprintf(drain_s, sizeof drain_s, "%d", (int)(30 * t_slow()));
	const char *args[] = { "--ctx", "2048", "--shutdown-timeout", drain_s,
			       NULL };
	ck_assert(t_start(&d, args) == 0);
	int fd = t_connect(d.sock);
	uint8_t b[512];
	size_t n = t_pack(b, sizeof b, 6, "op", "s:generate", "id", "i:3", "model",
			  "s:l2", "prompt", "s:Once upon a time", "max_tokens",
			  "i:300", "ignore_eos", "b:true");
	t_send(fd, b, n);
	static TReply r;
	char s[64];
	ck_assert_int_eq(t_recv_event(fd, &r, 30), 0);
	msgpack_zone_destroy(&r.zone);
	kill(d.pid, SIGTERM);
	int tokens = 1;
	for (;;) {
		ck_assert_int_eq(t_recv(fd, &r, 60), 0);
		t_str(&r, "type", s, sizeof s);
		if (strcmp(s, "token")) {
			msgpack_zone_destroy(&r.zone);
			break;
		}
		tokens++;
		msgpack_zone_destroy(&r.zone);
	}
	/* the in-flight request finished normally */
	ck_assert_str_eq(s, "done");
	ck_assert_int_eq(tokens, 300);
	int st;
	ck_assert_int_eq(waitpid(d.pid, &st, 0), d.pid);
	d.pid = 0;
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	close(fd);
	ck_assert_int_eq(access(d.sock, F_OK), -1);
	ck_assert_int_eq(db_count(d.db, "op='generate' AND gen_tokens=300"), 1);
	t_cleanup(&d);
}
END_TEST

START_TEST(test_shutdown_timeout_cancels)
{
	TDaemon d;
	const char *args[] = { "--ctx", "8192", "--shutdown-timeout", "1", NULL };
	ck_assert(t_start(&d, args) == 0);
	int fd = t_connect(d.sock);
	uint8_t b[512];
	size_t n = t_pack(b, sizeof b, 6, "op", "s:generate", "id", "i:3", "model",
			  "s:l2", "prompt", "s:Once upon a time", "max_tokens",
			  "i:8000", "ignore_eos", "b:true");
	t_send(fd, b, n);
	static TReply r;
	char s[64];
	ck_assert_int_eq(t_recv_event(fd, &r, 30), 0);
	msgpack_zone_destroy(&r.zone);
	double t0 = t_now();
	kill(d.pid, SIGTERM);
	for (;;) {
		ck_assert_int_eq(t_recv(fd, &r, 60), 0);
		t_str(&r, "type", s, sizeof s);
		if (strcmp(s, "token"))
			break;
		msgpack_zone_destroy(&r.zone);
	}
	ck_assert_str_eq(s, "done");
	ck_assert_str_eq(t_str(&r, "finish", s, sizeof s), "cancel");
	ck_assert_int_lt(t_int(&r, "gen_tokens"), 8000);
	msgpack_zone_destroy(&r.zone);
	int st;
	ck_assert_int_eq(waitpid(d.pid, &st, 0), d.pid);
	d.pid = 0;
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ck_assert_msg(t_now() - t0 < 5 * t_slow(), "drain took %.1f s", t_now() - t0);
	close(fd);
	t_cleanup(&d);
}
END_TEST

/* "state" of model name in the status JSON. */
static int model_state_is(infer_client *c, const char *name, const char *state)
{
	char *js, want[128];
	if (infer_status(c, &js) < 0)
		return 0;
	snprintf(want, sizeof want, "\"name\":\"%s\",\"state\":\"%s\"", name, state);
	int ok = strstr(js, want) != NULL;
	free(js);
	return ok;
}

START_TEST(test_load_unload_idle)
{
	TDaemon d;
	const char *args[] = { "--keep-alive", "1", NULL };
	ck_assert(t_start(&d, args) == 0);
	infer_client *c = must_connect(&d);
	ck_assert_int_eq(infer_load(c, "l2", INFER_KEEP_DEFAULT), 0);
	double t0 = t_now(); /* l2's idle time starts about here */
	ck_assert(model_state_is(c, "l2", "loaded"));
	/* kept forever when asked */
	ck_assert_int_eq(infer_load(c, "l3", -1), 0);
	while (!model_state_is(c, "l2", "unloaded") && t_now() - t0 < 10 * t_slow())
		usleep(50000);
	double dt = t_now() - t0;
	ck_assert_msg(model_state_is(c, "l2", "unloaded"), "l2 still loaded");
	ck_assert_msg(dt >= 0.5 && dt < 5 * t_slow(), "idle unload after %.2f s", dt);
	ck_assert(model_state_is(c, "l3", "loaded"));
	/* explicit unload */
	ck_assert_int_eq(infer_unload(c, "l3"), 0);
	ck_assert(model_state_is(c, "l3", "unloaded"));
	/* load on first use */
	int32_t *ids;
	ck_assert_int_eq(infer_tokenize(c, "l3", "hi", 0, 0, &ids), 1);
	free(ids);
	ck_assert(model_state_is(c, "l3", "loaded"));
	/* keep_alive 0: unloaded as soon as the request is done */
	infer_gen_params p;
	greedy_params(&p, "l3", 2);
	p.keep_alive = 0;
	ck_assert_int_eq(infer_generate(c, &p, NULL, NULL, NULL), 0);
	t0 = t_now();
	while (!model_state_is(c, "l3", "unloaded") && t_now() - t0 < 5 * t_slow())
		usleep(10000);
	ck_assert(model_state_is(c, "l3", "unloaded"));
	infer_close(c);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

/* "bytes" of a model in the models reply (-1 if absent). */
static long long model_bytes(infer_client *c, const char *name)
{
	char *js, key[160];
	if (infer_models(c, &js) < 0)
		return -1;
	snprintf(key, sizeof key, "\"name\":\"%s\"", name);
	char *p = strstr(js, key);
	p = p ? strstr(p, "\"bytes\":") : NULL;
	long long v = p ? atoll(p + 8) : -1;
	free(js);
	return v;
}

START_TEST(test_memory_budget)
{
	TDaemon d;
	/* l2 is 8.3 MiB with its KV cache, l3 10.1 MiB: not both in 12 MiB */
	const char *args[] = { "--mem-budget", "12M", NULL };
	ck_assert(t_start(&d, args) == 0);
	infer_client *c = must_connect(&d);
	/* the charge is the weights on disk plus the f32 KV cache at the
	 * context engine_open will pick (512 here) */
	double w2 = 8391464, w3 = 10243592; /* safetensors bytes */
	double kv2 = 2.0 * 2 * 512 * 2 * 16 * 4, kv3 = 2.0 * 3 * 512 * 2 * 16 * 4;
	ck_assert_int_eq(model_bytes(c, "l2"), (long long)(w2 + kv2));
	ck_assert_int_eq(model_bytes(c, "l3"), (long long)(w3 + kv3));
	ck_assert_int_eq(infer_load(c, "l2", INFER_KEEP_DEFAULT), 0);
	ck_assert_int_eq(infer_load(c, "l3", INFER_KEEP_DEFAULT), INFER_EMEMORY);
	const char *m = infer_errmsg(c);
	char want[128];
	snprintf(want, sizeof want, "l3 needs %.1f MiB but %.1f MiB of the 12.0 MiB "
		 "budget are in use", (w3 + kv3) / 1048576, (w2 + kv2) / 1048576);
	ck_assert_msg(strstr(m, want) != NULL, "%s\nwant: %s", m, want);
	ck_assert_int_eq(infer_unload(c, "l2"), 0);
	ck_assert_int_eq(infer_load(c, "l3", INFER_KEEP_DEFAULT), 0);
	/* The first generate makes the batch's KV pool from what the budget
	 * leaves (16-token blocks of 3 layers x 32 floats x K,V) and charges
	 * it: 158 blocks, then l2 no longer fits. */
	infer_gen_params p;
	infer_gen_params_init(&p);
	p.model = "l3";
	p.prompt = "Once upon a time";
	p.max_tokens = 4;
	infer_gen_result res;
	ck_assert_int_eq(infer_generate(c, &p, NULL, NULL, &res), 0);
	double block = 16.0 * 3 * 32 * 2 * 4;
	long long blocks = (long long)((12.0 * 1048576 - (w3 + kv3)) / block);
	ck_assert_int_eq(blocks, 158);
	ck_assert_int_eq(model_bytes(c, "l3"),
			 (long long)(w3 + kv3 + blocks * block));
	ck_assert_int_eq(infer_load(c, "l2", INFER_KEEP_DEFAULT), INFER_EMEMORY);
	ck_assert_int_eq(infer_unload(c, "l3"), 0); /* the pool goes too */
	ck_assert_int_eq(model_bytes(c, "l3"), (long long)(w3 + kv3));
	ck_assert_int_eq(infer_load(c, "l2", INFER_KEEP_DEFAULT), 0);
	infer_close(c);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

START_TEST(test_queue_limits)
{
	TDaemon d;
	/* one at a time (--max-batch 1), so requests queue */
	const char *args[] = { "--ctx", "8192", "--max-queue", "2",
			       "--max-conn-requests", "3", "--max-batch", "1",
			       NULL };
	ck_assert(t_start(&d, args) == 0);
	int fd = t_connect(d.sock);
	uint8_t b[512];
	static TReply r;
	char s[512];
	for (int id = 1; id <= 5; id++) {
		char ids[16];
		snprintf(ids, sizeof ids, "i:%d", id);
		size_t n = t_pack(b, sizeof b, 6, "op", "s:generate", "id", ids,
				  "model", "s:l2", "prompt", "s:Once upon a time",
				  "max_tokens", "i:8000", "ignore_eos", "b:true");
		t_send(fd, b, n);
		if (id == 1) { /* wait until the first one runs */
			ck_assert_int_eq(t_recv_event(fd, &r, 30), 0);
			msgpack_zone_destroy(&r.zone);
		}
	}
	/* 1 runs, 2 and 3 queue (positions 1 and 2), 4 and 5 are over the
	 * per-connection limit of 3 */
	int seen_queued = 0, seen_busy4 = 0;
	double end = t_now() + 30 * t_slow();
	while (!(seen_queued == 2 && seen_busy4 == 2) && t_now() < end) {
		ck_assert_int_eq(t_recv(fd, &r, 30), 0);
		long long id = t_int(&r, "id");
		t_str(&r, "type", s, sizeof s);
		if ((id == 2 || id == 3) && !strcmp(s, "queued")) {
			ck_assert_int_eq(t_int(&r, "position"), id - 1);
			seen_queued++;
		} else if ((id == 4 || id == 5) && !strcmp(s, "error")) {
			ck_assert_str_eq(t_str(&r, "code", s, 64), "busy");
			t_str(&r, "message", s, sizeof s);
			ck_assert_msg(strstr(s, "this connection"), "%s", s);
			seen_busy4++;
		}
		msgpack_zone_destroy(&r.zone);
	}
	ck_assert(seen_queued == 2 && seen_busy4 == 2);
	/* another connection finds the queue full: busy, with the place it
	 * would have had (2 waiting + 1 running ahead of it) */
	int fd2 = t_connect(d.sock);
	size_t n = t_pack(b, sizeof b, 4, "op", "s:generate", "id", "i:1",
			  "model", "s:l2", "prompt", "s:hi");
	t_send(fd2, b, n);
	ck_assert_int_eq(t_recv(fd2, &r, 30), 0);
	ck_assert_str_eq(t_str(&r, "code", s, sizeof s), "busy");
	ck_assert_int_eq(t_int(&r, "position"), 3);
	t_str(&r, "message", s, sizeof s);
	printf("queue full: %s\n", s);
	msgpack_zone_destroy(&r.zone);
	close(fd2);
	close(fd); /* cancels 1 and 2 */
	infer_client *c = must_connect(&d);
	double t0 = t_now();
	while (inflight(c) != 0 && t_now() - t0 < 10 * t_slow())
		usleep(5000);
	ck_assert_int_eq(inflight(c), 0);
	infer_close(c);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST


START_TEST(test_uid_limit)
{
	TDaemon d;
	const char *args[] = { "--ctx", "8192", "--max-uid-requests", "2", NULL };
	ck_assert(t_start(&d, args) == 0);
	int fd[3];
	uint8_t b[512];
	static TReply r;
	char s[512];
	for (int i = 0; i < 3; i++) {
		fd[i] = t_connect(d.sock);
		size_t n = t_pack(b, sizeof b, 6, "op", "s:generate", "id", "i:1",
				  "model", "s:l2", "prompt", "s:Once upon a time",
				  "max_tokens", "i:8000", "ignore_eos", "b:true");
		t_send(fd[i], b, n);
		/* the first two are accepted (a token or queued), the third of
		 * the same uid is refused */
		ck_assert_int_eq(t_recv(fd[i], &r, 30), 0);
		t_str(&r, "type", s, sizeof s);
		if (i < 2) {
			ck_assert_msg(strcmp(s, "error") != 0, "request %d refused", i);
		} else {
			ck_assert_str_eq(s, "error");
			ck_assert_str_eq(t_str(&r, "code", s, sizeof s), "busy");
			t_str(&r, "message", s, sizeof s);
			char want[64];
			snprintf(want, sizeof want, "uid %u has 2 requests in flight",
				 (unsigned)getuid());
			ck_assert_msg(strstr(s, want) != NULL, "%s", s);
		}
		msgpack_zone_destroy(&r.zone);
	}
	for (int i = 0; i < 3; i++)
		close(fd[i]);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

START_TEST(test_log_prompts_and_sighup)
{
	TDaemon d;
	char logf[160];
	ck_assert(t_prepare(&d) == 0);
	snprintf(logf, sizeof logf, "%s/inferd.log", d.dir);
	const char *args[] = { "--log-prompts", "--log-file", logf, NULL };
	ck_assert(t_launch(&d, args) == 0);
	infer_client *c = must_connect(&d);
	infer_gen_params p;
	greedy_params(&p, "l2", 3);
	ck_assert_int_eq(infer_generate(c, &p, NULL, NULL, NULL), 0);
	ck_assert_int_eq(db_wait_count(d.db, "op='generate' AND prompt='Once upon a time'", 1), 1);
	/* logrotate: move the file away, SIGHUP, a new file appears */
	char moved[200];
	snprintf(moved, sizeof moved, "%s.1", logf);
	ck_assert_int_eq(rename(logf, moved), 0);
	kill(d.pid, SIGHUP);
	double t0 = t_now();
	while (access(logf, F_OK) != 0 && t_now() - t0 < 10 * t_slow())
		usleep(10000);
	ck_assert_int_eq(infer_ping(c), 0);
	infer_close(c);
	ck_assert_int_eq(t_stop(&d), 0);
	char text[4096];
	slurp(logf, text, sizeof text);
	ck_assert_msg(strstr(text, "SIGHUP: log reopened") && strstr(text, "stopping"), "%s", text);
	slurp(moved, text, sizeof text);
	ck_assert_msg(strstr(text, "serving") && strstr(text, "loaded l2"), "%s", text);
	t_cleanup(&d);
}
END_TEST


START_TEST(test_duplicate_id_and_max_connections)
{
	TDaemon d;
	const char *args[] = { "--ctx", "8192", "--max-connections", "2", NULL };
	ck_assert(t_start(&d, args) == 0);
	int a = t_connect(d.sock);
	uint8_t b[512];
	static TReply r;
	char s[512];
	size_t n = t_pack(b, sizeof b, 6, "op", "s:generate", "id", "i:1", "model",
			  "s:l2", "prompt", "s:Once upon a time", "max_tokens", "i:8000",
			  "ignore_eos", "b:true");
	t_send(a, b, n);
	ck_assert_int_eq(t_recv_event(a, &r, 30), 0);
	msgpack_zone_destroy(&r.zone);
	/* the same id again while the first runs */
	t_send(a, b, n);
	for (;;) {
		ck_assert_int_eq(t_recv(a, &r, 30), 0);
		t_str(&r, "type", s, sizeof s);
		if (!strcmp(s, "error"))
			break;
		msgpack_zone_destroy(&r.zone);
	}
	ck_assert_str_eq(t_str(&r, "code", s, sizeof s), "bad_request");
	t_str(&r, "message", s, sizeof s);
	ck_assert_msg(strstr(s, "id 1 is already in flight") != NULL, "%s", s);
	msgpack_zone_destroy(&r.zone);
	/* a second connection is fine, a third is told why and closed */
	int bfd = t_connect(d.sock);
	n = t_pack(b, sizeof b, 2, "op", "s:ping", "id", "i:2");
	t_send(bfd, b, n);
	ck_assert_int_eq(t_recv(bfd, &r, 10), 0);
	msgpack_zone_destroy(&r.zone);
	int cfd = t_connect(d.sock);
	ck_assert_int_eq(t_recv(cfd, &r, 10), 0);
	ck_assert_str_eq(t_str(&r, "code", s, sizeof s), "busy");
	msgpack_zone_destroy(&r.zone);
	ck_assert_int_eq(t_recv(cfd, &r, 10), -1);
	close(cfd);
	close(bfd);
	close(a);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST


/* Drain whatever replies are waiting (non-blocking). */
static void drain(int fd)
{
	char buf[65536];
	while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
		;
}

/* Mutated requests (length prefix kept right, body bytes changed, cut or
 * extended): the daemon answers or closes, never crashes, and serves a
 * fresh client afterwards. */
START_TEST(test_fuzzed_frames)
{
	TDaemon d;
	const char *args[] = { "--max-tokens", "4", NULL };
	ck_assert(t_start(&d, args) == 0);
	uint8_t base[4][256];
	size_t blen[4];
	blen[0] = t_pack(base[0], 256, 2, "op", "s:ping", "id", "i:7");
	blen[1] = t_pack(base[1], 256, 6, "op", "s:generate", "id", "i:8", "model",
			 "s:l2", "prompt", "s:Once upon", "max_tokens", "i:3", "temperature", "f:0.5");
	blen[2] = t_pack(base[2], 256, 5, "op", "s:tokenize", "id", "i:9", "model",
			 "s:l2", "text", "s:hello there", "special", "b:true");
	blen[3] = t_pack(base[3], 256, 3, "op", "s:hello", "id", "i:10", "version", "i:1");
	uint64_t x = 0x243f6a8885a308d3ull;
	int fd = t_connect(d.sock), reconnects = 0;
	for (int it = 0; it < 3000; it++) {
		uint8_t b[300];
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		int k = (int)(x % 4);
		size_t n = blen[k];
		memcpy(b, base[k], n);
		int flips = 1 + (int)((x >> 8) % 4);
		for (int f = 0; f < flips; f++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			b[x % n] = (uint8_t)(x >> 40);
		}
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		if (x % 5 == 0)
			n = 1 + (x >> 16) % n;          /* cut */
		else if (x % 5 == 1 && n < 290)
			b[n++] = (uint8_t)(x >> 24);    /* one byte more */
		if (t_send(fd, b, n) < 0) {          /* the daemon hung up */
			close(fd);
			fd = t_connect(d.sock);
			ck_assert_int_ge(fd, 0);
			reconnects++;
		}
		drain(fd);
	}
	close(fd);
	/* still alive and serving */
	infer_client *c = must_connect(&d);
	ck_assert_int_eq(infer_ping(c), 0);
	int32_t *ids;
	ck_assert_int_eq(infer_tokenize(c, "l2", PROMPT, 1, 1, &ids), 5);
	free(ids);
	infer_close(c);
	printf("fuzz: 3000 mutated frames, %d reconnects\n", reconnects);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST


/* Another user (needs root to become one): shutdown and everyone's log
 * are refused, its own log works, and its uid is what the log records. */
START_TEST(test_admin_ops_need_the_daemon_uid)
{
	if (getuid() != 0)
		TEST_SKIP("needs root to act as another uid");
	TDaemon d;
	const char *args[] = { "--socket-mode", "0666", NULL };
	ck_assert(t_prepare(&d) == 0);
	ck_assert_int_eq(chmod(d.dir, 0755), 0);
	ck_assert(t_launch(&d, args) == 0);
	int pfd[2];
	ck_assert_int_eq(pipe(pfd), 0);
	pid_t pid = fork();
	if (pid == 0) {
		/* the child reports codes through the pipe */
		int res[4] = { 99, 99, 99, 99 };
		if (setgid(65534) == 0 && setuid(65534) == 0) {
			infer_client *c;
			if (infer_connect(&c, d.sock, NULL, 0) == 0) {
				char *js = NULL;
				res[0] = infer_shutdown(c);
				res[1] = infer_log(c, 10, 1, &js);
				free(js);
				int32_t *ids = NULL;
				infer_tokenize(c, "l2", "hi", 1, 1, &ids);
				free(ids);
				res[2] = infer_log(c, 10, 0, &js);
				res[3] = js && strstr(js, "\"uid\":65534") &&
					 !strstr(js, "\"uid\":0,") ? 1 : 0;
				free(js);
				infer_close(c);
			}
		}
		if (write(pfd[1], res, sizeof res) != sizeof res)
			_exit(1);
		_exit(0);
	}
	int res[4];
	close(pfd[1]);
	ck_assert_int_eq(read(pfd[0], res, sizeof res), (ssize_t)sizeof res);
	close(pfd[0]);
	waitpid(pid, NULL, 0);
	ck_assert_int_eq(res[0], INFER_EDENIED);
	ck_assert_int_eq(res[1], INFER_EDENIED);
	ck_assert_int_eq(res[2], 0);
	ck_assert_int_eq(res[3], 1);
	/* root (the daemon's uid here) sees both users */
	infer_client *c = must_connect(&d);
	char *js;
	ck_assert_int_eq(infer_log(c, 50, 1, &js), 0);
	ck_assert_msg(strstr(js, "\"uid\":65534") != NULL, "%s", js);
	free(js);
	infer_close(c);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST


/* infer-client chat: two turns on stdin; the second turn's prompt holds
 * the first exchange (more prompt tokens), replies stream to stdout. */
START_TEST(test_infer_client_chat)
{
	TDaemon d;
	ck_assert(t_start(&d, NULL) == 0);
	char cmd[2048], out[8192];
	snprintf(cmd, sizeof cmd, "printf 'Hello\\nHow are you\\n' | '%s' --socket '%s' "
		 "--json chat l3 --chat-template chatml --temp 0 -n 4 > %s/chat.txt",
		 test_build("infer-client"), d.sock, d.dir);
	ck_assert_int_eq(WEXITSTATUS(system(cmd)), 0);
	snprintf(cmd, sizeof cmd, "%s/chat.txt", d.dir);
	slurp(cmd, out, sizeof out);
	/* two done lines, the second with the longer prompt */
	char *a = strstr(out, "\"done\":true");
	ck_assert_msg(a != NULL, "%s", out);
	char *b = strstr(a + 1, "\"done\":true");
	ck_assert_msg(b != NULL, "%s", out);
	int p1 = atoi(strstr(a, "\"prompt_tokens\":") + 16);
	int p2 = atoi(strstr(b, "\"prompt_tokens\":") + 16);
	ck_assert_msg(p2 > p1 + 4, "prompt tokens %d then %d", p1, p2);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

/* infer-client end to end: exit codes and streamed output. */
START_TEST(test_infer_client)
{
	TDaemon d;
	ck_assert(t_start(&d, NULL) == 0);
	char cmd[1024], out[8192];
	snprintf(cmd, sizeof cmd, "'%s' --socket '%s' generate l2 '%s' --temp 0 -n 8 "
		 "--ignore-eos > %s/out.txt", test_build("infer-client"), d.sock,
		 PROMPT, d.dir);
	ck_assert_int_eq(WEXITSTATUS(system(cmd)), 0);
	snprintf(cmd, sizeof cmd, "%s/out.txt", d.dir);
	slurp(cmd, out, sizeof out);
	/* the text of golden's first 8 greedy ids */
	infer_client *c = must_connect(&d);
	int32_t gold[64];
	golden_greedy("tiny-llama2", gold, 64);
	char *text;
	ck_assert_int_eq(infer_detokenize(c, "l2", gold, 8, &text), 0);
	size_t tl = strlen(text);
	ck_assert_msg(strncmp(out, text, tl) == 0 && out[tl] == '\n', "'%s' vs '%s'",
		      out, text);
	free(text);
	infer_close(c);
	/* exit codes: 1 failed request, 2 usage, 3 unreachable */
	snprintf(cmd, sizeof cmd, "'%s' --socket '%s' load nope 2>/dev/null",
		 test_build("infer-client"), d.sock);
	ck_assert_int_eq(WEXITSTATUS(system(cmd)), 1);
	snprintf(cmd, sizeof cmd, "'%s' --socket '%s' frobnicate 2>/dev/null",
		 test_build("infer-client"), d.sock);
	ck_assert_int_eq(WEXITSTATUS(system(cmd)), 2);
	snprintf(cmd, sizeof cmd, "'%s' --socket '%s/none' ping 2>%s/err.txt",
		 test_build("infer-client"), d.dir, d.dir);
	ck_assert_int_eq(WEXITSTATUS(system(cmd)), 3);
	snprintf(cmd, sizeof cmd, "%s/err.txt", d.dir);
	slurp(cmd, out, sizeof out);
	ck_assert_msg(strstr(out, "/none") != NULL, "%s", out);
	snprintf(cmd, sizeof cmd, "'%s' --socket '%s' --json ping > %s/out.txt",
		 test_build("infer-client"), d.sock, d.dir);
	ck_assert_int_eq(WEXITSTATUS(system(cmd)), 0);
	snprintf(cmd, sizeof cmd, "%s/out.txt", d.dir);
	slurp(cmd, out, sizeof out);
	ck_assert_msg(strncmp(out, "{\"ok\":true,\"rtt_ms\":", 20) == 0, "%s", out);
	/* shutdown by the daemon's own user */
	snprintf(cmd, sizeof cmd, "'%s' --socket '%s' shutdown >/dev/null",
		 test_build("infer-client"), d.sock);
	ck_assert_int_eq(WEXITSTATUS(system(cmd)), 0);
	int st;
	ck_assert_int_eq(waitpid(d.pid, &st, 0), d.pid);
	d.pid = 0;
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	t_cleanup(&d);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("daemon");
	TCase *tc = tcase_create("inferd");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_hello_version_mismatch);
	tcase_add_test(tc, test_ping_status_models);
	tcase_add_test(tc, test_generate_matches_reference);
	tcase_add_test(tc, test_concurrent_clients);
	tcase_add_test(tc, test_disconnect_cancels);
	tcase_add_test(tc, test_bad_inputs);
	tcase_add_test(tc, test_second_daemon_refused);
	tcase_add_test(tc, test_stale_socket_recovered);
	tcase_add_test(tc, test_listen_fds);
	tcase_add_test(tc, test_listen_fds_exit_idle);
	tcase_add_test(tc, test_metrics);
	tcase_add_test(tc, test_metrics_queue);
	tcase_add_test(tc, test_status_unload_in);
	tcase_add_test(tc, test_log_rows);
	tcase_add_test(tc, test_sigterm_drains);
	tcase_add_test(tc, test_shutdown_timeout_cancels);
	tcase_add_test(tc, test_load_unload_idle);
	tcase_add_test(tc, test_memory_budget);
	tcase_add_test(tc, test_queue_limits);
	tcase_add_test(tc, test_infer_client);
	tcase_add_test(tc, test_infer_client_chat);
	tcase_add_test(tc, test_uid_limit);
	tcase_add_test(tc, test_log_prompts_and_sighup);
	tcase_add_test(tc, test_duplicate_id_and_max_connections);
	tcase_add_test(tc, test_fuzzed_frames);
	tcase_add_test(tc, test_admin_ops_need_the_daemon_uid);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
