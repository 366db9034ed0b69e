/*
 * check_faults.c - inferd under faults: kill -9 while it logs heavily
 * (the SQLite log stays intact and keeps every committed row), a database
 * that cannot grow (full disk: the daemon serves on and counts the rows it
 * lost), a client that never reads its replies (cut off with bounded
 * memory, others unaffected), and socket access by other uids (0600
 * refuses them; 0660 with --socket-group admits members, who still cannot
 * use admin operations).
 */
#include <check.h>
#include <dirent.h>
#include <grp.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/resource.h>

#include "daemon_util.h"
#include "engine.h"
#include "infer.h"

/* How much the daemon's RSS may grow while a client does not read: the
 * output cap (16 frames of 4 MB) plus input and slack; under ASan its
 * quarantine (256 MB) keeps freed buffers resident as well. */
#ifdef __SANITIZE_ADDRESS__
#define SLOW_RSS_SLACK_KB (600L * 1024)
#else
#define SLOW_RSS_SLACK_KB (200L * 1024)
#endif

/* One request by raw frames; returns the reply's "type" check: 1 when
 * it is want, 0 otherwise, -1 on a dead connection. */
static int roundtrip(int fd, const uint8_t *req, size_t n, const char *want,
		     TReply *r, double secs)
{
	char type[32];
	if (t_send(fd, req, n) < 0)
		return -1;
	if (t_recv(fd, r, secs) < 0)
		return -1;
	int ok = !strcmp(t_str(r, "type", type, sizeof type), want);
	return ok;
}

static long rss_kb(pid_t pid)
{
	char p[64], line[256];
	long kb = -1;
	snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
	FILE *f = fopen(p, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmRSS: %ld", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* count(*) of requests, -1 when the file cannot be read. */
static long db_rows(const char *path, int check_integrity, int *intact)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	long n = -1;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
		sqlite3_close(db);
		return -1;
	}
	sqlite3_busy_timeout(db, 2000);
	if (sqlite3_prepare_v2(db, "SELECT count(*) FROM requests", -1, &st,
			       NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			n = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	if (check_integrity) {
		*intact = 0;
		if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st,
				       NULL) == SQLITE_OK) {
			if (sqlite3_step(st) == SQLITE_ROW &&
			    !strcmp((const char *)sqlite3_column_text(st, 0), "ok"))
				*intact = 1;
			sqlite3_finalize(st);
		}
	}
	sqlite3_close(db);
	return n;
}

/* ---- kill -9 during heavy logging ---- */

typedef struct Logger {
	const char *sock;      /* daemon socket */
	volatile int stop;     /* set by the test */
	long answered;         /* tokenize replies received */
	pthread_t th;
} Logger;

/* Tokenize requests back to back: each one is a row in the log. */
static void *logger_main(void *arg)
{
	Logger *lg = arg;
	uint8_t req[256];
	TReply *r = malloc(sizeof *r);
	int fd = t_connect(lg->sock);
	for (uint32_t id = 1; fd >= 0 && !lg->stop; id++) {
		char idb[32];
		snprintf(idb, sizeof idb, "i:%u", id);
		size_t n = t_pack(req, sizeof req, 4, "op", "s:tokenize", "id", idb,
				  "model", "s:l2", "text", "s:Once upon a time");
		int k = roundtrip(fd, req, n, "ok", r, 10);
		if (k < 0)
			break;
		msgpack_zone_destroy(&r->zone);
		lg->answered++;
	}
	if (fd >= 0)
		close(fd);
	free(r);
	return NULL;
}

START_TEST(test_kill9_during_logging)
{
	TDaemon d;
	ck_assert(t_prepare(&d) == 0);
	long floor = 0; /* rows known committed before the last kill */
	long total_answered = 0;
	for (int round = 0; round < 5; round++) {
		ck_assert_msg(t_launch(&d, NULL) == 0, "round %d: start", round);
		Logger lg[4];
		for (int i = 0; i < 4; i++) {
			memset(&lg[i], 0, sizeof lg[i]);
			lg[i].sock = d.sock;
			pthread_create(&lg[i].th, NULL, logger_main, &lg[i]);
		}
		/* rows a reader sees are committed; the last count seen before
		 * the kill must survive it */
		long seen = 0;
		/* at least this long, and until some new row is committed */
		double t0 = t_now(), end = t0 + 0.6 + 0.15 * round;
		while (t_now() < end ||
		       (seen <= floor && t_now() < t0 + 20 * t_slow())) {
			int dummy;
			long n = db_rows(d.db, 0, &dummy);
			if (n > seen)
				seen = n;
			usleep(20000);
		}
		ck_assert_int_eq(kill(d.pid, SIGKILL), 0);
		waitpid(d.pid, NULL, 0);
		d.pid = 0;
		for (int i = 0; i < 4; i++) {
			lg[i].stop = 1;
			pthread_join(lg[i].th, NULL);
			total_answered += lg[i].answered;
		}
		int intact = 0;
		long after = db_rows(d.db, 1, &intact);
		fprintf(stderr, "kill -9 round %d: %ld rows seen committed, "
			"%ld after the kill\n", round, seen, after);
		ck_assert_msg(intact, "round %d: integrity_check failed", round);
		ck_assert_msg(after >= seen && after >= floor,
			      "round %d: %ld rows after kill, %ld seen before",
			      round, after, seen);
		ck_assert_msg(seen > floor, "round %d: nothing logged", round);
		floor = after;
	}
	fprintf(stderr, "kill -9: 5 rounds, %ld requests answered, %ld rows "
		"kept\n", total_answered, floor);
	t_cleanup(&d);
}
END_TEST

/* ---- the database cannot grow (a full filesystem, without a mount) ---- */

START_TEST(test_db_disk_full)
{
	/* RLIMIT_FSIZE makes every write past the limit fail with EFBIG,
	 * as a full filesystem fails it with ENOSPC: SQLite sees a write
	 * error either way. The daemon inherits the limit (and SIGXFSZ
	 * ignored) from this test process. */
	TDaemon d;
	ck_assert(t_prepare(&d) == 0);
	struct rlimit old, lim;
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 96 * 1024;
	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	int rc = t_launch(&d, NULL);
	setrlimit(RLIMIT_FSIZE, &old);
	ck_assert_msg(rc == 0, "daemon did not start");

	int fd = t_connect(d.sock);
	ck_assert_int_ge(fd, 0);
	uint8_t req[256];
	TReply *r = malloc(sizeof *r);
	long answered = 0;
	/* each tokenize is a row; 2000 of them need far more than 96 kB */
	for (uint32_t id = 1; id <= 2000; id++) {
		char idb[32];
		snprintf(idb, sizeof idb, "i:%u", id);
		size_t n = t_pack(req, sizeof req, 4, "op", "s:tokenize", "id", idb,
				  "model", "s:l2", "text", "s:a row that fills the disk");
		int k = roundtrip(fd, req, n, "ok", r, 10);
		ck_assert_msg(k == 1, "request %u not answered ok", id);
		msgpack_zone_destroy(&r->zone);
		answered++;
		if (id % 200 == 0)
			usleep(50000); /* let the writer commit batches */
	}
	usleep(300000);
	size_t n = t_pack(req, sizeof req, 2, "op", "s:status", "id", "i:9999");
	ck_assert_int_eq(roundtrip(fd, req, n, "ok", r, 10), 1);
	long long dropped = t_int(r, "log_dropped");
	msgpack_zone_destroy(&r->zone);
	close(fd);
	ck_assert_int_eq(t_stop(&d), 0);
	int intact = 0;
	long rows = db_rows(d.db, 1, &intact);
	fprintf(stderr, "disk full: %ld requests answered, %ld rows written, "
		"%lld counted as lost\n", answered, rows, dropped);
	ck_assert_msg(dropped > 0, "no lost rows counted (log_dropped %lld)",
		      dropped);
	ck_assert_msg(rows >= 0 && rows + dropped >= answered,
		      "%ld rows + %lld lost < %ld requests", rows, dropped,
		      answered);
	ck_assert_msg(intact, "integrity_check failed after a full disk");
	free(r);
	t_cleanup(&d);
}
END_TEST

/* ---- a log writer that cannot keep up: the queue is capped ---- */

START_TEST(test_log_queue_bounded)
{
	/* the writer is stopped by a lock the test holds on the database
	 * (its INSERT waits in the 5 s busy timeout), with the cap at 8 */
	TDaemon d;
	ck_assert(t_prepare(&d) == 0);
	setenv("INFERD_LOG_QUEUE_MAX", "8", 1);
	int rc = t_launch(&d, NULL);
	unsetenv("INFERD_LOG_QUEUE_MAX");
	ck_assert_msg(rc == 0, "daemon did not start");
	/* the socket listens before the database is opened: an answer from
	 * the loop means it is open (locked first, inferd would not start);
	 * a tokenize, so the model's load (20 s under valgrind) is done too */
	int fd = t_connect(d.sock);
	ck_assert_int_ge(fd, 0);
	uint8_t req[256];
	TReply *r = malloc(sizeof *r);
	size_t n = t_pack(req, sizeof req, 4, "op", "s:tokenize", "id", "i:1",
			  "model", "s:l2", "text", "s:warm up");
	ck_assert_int_eq(roundtrip(fd, req, n, "ok", r, 10), 1);
	msgpack_zone_destroy(&r->zone);
	sqlite3 *lk;
	ck_assert_int_eq(sqlite3_open(d.db, &lk), SQLITE_OK);
	sqlite3_busy_timeout(lk, 5000);
	ck_assert_int_eq(sqlite3_exec(lk, "BEGIN EXCLUSIVE", NULL, NULL, NULL),
			 SQLITE_OK);
	long answered = 0;
	/* fewer when slow (valgrind): all must come before the writer's 5 s
	 * busy timeout runs out */
	uint32_t nreq = t_slow() > 1 ? 30 : 300;
	double t0 = t_now();
	for (uint32_t id = 2; id <= nreq + 1; id++) {
		char idb[32];
		snprintf(idb, sizeof idb, "i:%u", id);
		n = t_pack(req, sizeof req, 4, "op", "s:tokenize", "id", idb,
			   "model", "s:l2", "text", "s:one row each");
		ck_assert_int_eq(roundtrip(fd, req, n, "ok", r, 10), 1);
		msgpack_zone_destroy(&r->zone);
		answered++;
	}
	n = t_pack(req, sizeof req, 2, "op", "s:status", "id", "i:9999");
	ck_assert_int_eq(roundtrip(fd, req, n, "ok", r, 10), 1);
	long long dropped = t_int(r, "log_dropped");
	msgpack_zone_destroy(&r->zone);
	double held = t_now() - t0;
	ck_assert_int_eq(sqlite3_exec(lk, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(lk);
	close(fd);
	ck_assert_int_eq(t_stop(&d), 0);
	free(r);
	int intact = 0;
	long rows = db_rows(d.db, 1, &intact);
	FILE *lf = fopen(d.log, "r");
	char line[512];
	int told = 0;
	while (lf && fgets(line, sizeof line, lf))
		told |= strstr(line, "log queue full (8 rows)") != NULL;
	if (lf)
		fclose(lf);
	fprintf(stderr, "log queue capped at 8 rows, writer locked out %.2f s: "
		"%ld requests answered, %lld rows counted dropped meanwhile, "
		"%ld rows written\n", held, answered, dropped, rows);
	ck_assert_msg(held < 5, "the lock was held past the writer's busy "
		      "timeout (%.1f s): rows failed rather than queued", held);
	ck_assert_msg(dropped >= answered - 8, "only %lld of %ld rows dropped "
		      "with the writer stuck and 8 queued at most", dropped,
		      answered);
	/* the warm-up's row and 8 queued at most */
	ck_assert_msg(rows >= 1 && rows <= 9, "%ld rows written", rows);
	ck_assert_msg(rows + dropped >= answered + 1, "%ld rows + %lld dropped "
		      "< %ld + 1", rows, dropped, answered);
	ck_assert_msg(told, "no 'log queue full' line in the daemon's log");
	ck_assert(intact);
	t_cleanup(&d);
}
END_TEST

/* ---- a client that never reads ---- */

START_TEST(test_slow_reader_cut_off)
{
	TDaemon d;
	ck_assert(t_start(&d, NULL) == 0);
	/* warm: load the model, measure the daemon at rest */
	infer_client *ok;
	ck_assert_int_eq(infer_connect(&ok, d.sock, NULL, 0), 0);
	int32_t *ids = NULL;
	ck_assert_int_gt(infer_tokenize(ok, "l2", "warm up", 1, 0, &ids), 0);
	free(ids);
	long rss0 = rss_kb(d.pid), rss_max = rss0;

	/* requests whose replies are large: ~600 k tokens each */
	size_t tlen = PROTO_MAX_PROMPT - 64;
	char *text = malloc(tlen + 1);
	for (size_t i = 0; i < tlen; i++)
		text[i] = i % 2 ? ' ' : 'a' + (char)(i / 2 % 26);
	text[tlen] = 0;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_sbuffer_write(&sb, "\0\0\0\0", 4);
	msgpack_pack_map(&pk, 4);
	msgpack_pack_str_with_body(&pk, "op", 2);
	msgpack_pack_str_with_body(&pk, "tokenize", 8);
	msgpack_pack_str_with_body(&pk, "id", 2);
	/* a fixed-width uint32 (at byte 20) so each copy gets its own id */
	msgpack_sbuffer_write(&sb, "\xce\0\0\0\1", 5);
	msgpack_pack_str_with_body(&pk, "model", 5);
	msgpack_pack_str_with_body(&pk, "l2", 2);
	msgpack_pack_str_with_body(&pk, "text", 4);
	msgpack_pack_str_with_body(&pk, text, tlen);
	free(text);
	proto_put_len((uint8_t *)sb.data, (uint32_t)(sb.size - 4));

	int slow = t_connect(d.sock);
	ck_assert_int_ge(slow, 0);
	int small = 4096;
	setsockopt(slow, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
	fcntl(slow, F_SETFL, O_NONBLOCK);
	size_t off = 0;
	long frames = 0;
	int cut = 0;
	double worst_ping = 0, t0 = t_now();
	while (t_now() - t0 < 90 * t_slow() && !cut) {
		ssize_t w = send(slow, sb.data + off, sb.size - off, MSG_NOSIGNAL);
		if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
			cut = 1;
			break;
		}
		if (w > 0) {
			off += (size_t)w;
			if (off == sb.size) {
				off = 0;
				frames++;
				/* ids stay unique among requests in flight */
				proto_put_len((uint8_t *)sb.data + 21,
					      (uint32_t)frames + 1);
			}
		} else {
			/* the daemon is not taking more yet: others still served? */
			double a = t_now();
			ck_assert_int_eq(infer_ping(ok), 0);
			if (t_now() - a > worst_ping)
				worst_ping = t_now() - a;
			long rss = rss_kb(d.pid);
			if (rss > rss_max)
				rss_max = rss;
			/* a closed peer shows as readable EOF/RST too */
			char b;
			ssize_t rr = recv(slow, &b, 1, MSG_PEEK);
			(void)rr;
			usleep(20000);
		}
	}
	msgpack_sbuffer_destroy(&sb);
	/* the daemon closed it: reading drains what it sent, then EOF */
	if (!cut) {
		fcntl(slow, F_SETFL, 0);
		char buf[65536];
		ssize_t rr;
		while ((rr = recv(slow, buf, sizeof buf, 0)) > 0)
			;
		cut = rr == 0 || (rr < 0 && errno == ECONNRESET);
	}
	close(slow);
	fprintf(stderr, "slow reader: %ld frames sent in %.1f s before the "
		"cut; daemon RSS %ld -> max %ld kB; worst ping %.3f s\n", frames,
		t_now() - t0, rss0, rss_max, worst_ping);
	ck_assert_msg(cut, "slow client was not cut off in %.0f s", 90 * t_slow());
	ck_assert_msg(rss_max - rss0 < SLOW_RSS_SLACK_KB, "RSS grew %ld kB",
		      rss_max - rss0);
	ck_assert_msg(worst_ping < 2.0 * t_slow(), "others waited %.2f s", worst_ping);
	ck_assert_int_eq(infer_ping(ok), 0);
	infer_close(ok);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

/* ---- a model file truncated or changed under the loaded model ---- */

/* Copy src over dst (same inode when dst exists: written in place). */
static int copy_file(const char *src, const char *dst)
{
	int in = open(src, O_RDONLY), out = open(dst, O_WRONLY | O_CREAT, 0644);
	int rc = in >= 0 && out >= 0 ? 0 : -1;
	char buf[1 << 16];
	ssize_t n;
	while (rc == 0 && (n = read(in, buf, sizeof buf)) > 0)
		if (write(out, buf, (size_t)n) != n)
			rc = -1;
	struct stat st;
	if (rc == 0 && (fstat(in, &st) < 0 || ftruncate(out, st.st_size) < 0))
		rc = -1;
	if (in >= 0)
		close(in);
	if (out >= 0 && close(out) < 0)
		rc = -1;
	return rc;
}

static off_t file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Greedy tokens of "Once upon a time" on e: count, or -1 with err. */
static int engine_greedy(Engine *e, int32_t *out, int cap, char *err,
			 size_t errlen)
{
	int32_t *ids = NULL;
	int n = tokenizer_encode(engine_tokenizer(e), "Once upon a time", 16,
				 1, 0, &ids, err, errlen);
	if (n <= 0)
		return -1;
	GenParams gp;
	gen_params_default(&gp);
	gp.max_tokens = cap;
	gp.sampling.temperature = 0;
	GenResult res = { 0 };
	int rc = engine_generate(e, ids, n, &gp, NULL, NULL, &res, err, errlen);
	free(ids);
	int k = rc == 0 ? res.n_gen : -1;
	for (int i = 0; i < k; i++)
		out[i] = res.ids[i];
	free(res.ids);
	return k;
}

/* The engine alone: a truncation under a loaded model fails its next
 * generate with a message instead of SIGBUS killing the process, and the
 * file, once restored, loads and generates the same tokens. Two CPU
 * threads, so the fault lands in the thread pool as well. */
START_TEST(test_model_truncated_engine)
{
	char dir[] = "/tmp/inferd-trunc-XXXXXX", path[64], err[512];
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/m.gguf", dir);
	const char *src = test_data("models/tiny-llama2-f16.gguf");
	ck_assert_int_eq(copy_file(src, path), 0);
	EngineOptions eo = { .backend = "cpu", .threads = 2, .quiet = 1 };
	Engine *e;
	ck_assert_msg(engine_open(path, &eo, &e, err, sizeof err) == 0, "%s", err);
	int32_t want[8], got[8];
	ck_assert_int_eq(engine_greedy(e, want, 8, err, sizeof err), 8);
	ck_assert_int_eq(engine_files_changed(e, err, sizeof err), 0);

	off_t size = file_size(path);
	ck_assert_int_eq(truncate(path, size / 2), 0);
	ck_assert_int_eq(engine_greedy(e, got, 8, err, sizeof err), -1);
	fprintf(stderr, "truncated under the engine: %s\n", err);
	ck_assert_msg(strstr(err, "changed or was truncated while loaded") &&
		      strstr(err, path), "message: %s", err);
	ck_assert_int_eq(engine_fatal(e), 1);
	ck_assert_int_eq(engine_files_changed(e, err, sizeof err), 1);
	engine_close(e); /* unmaps the zero pages put in as well */

	ck_assert_int_eq(copy_file(src, path), 0);
	ck_assert_msg(engine_open(path, &eo, &e, err, sizeof err) == 0, "%s", err);
	ck_assert_int_eq(engine_greedy(e, got, 8, err, sizeof err), 8);
	ck_assert_mem_eq(got, want, sizeof want);
	/* changed in place (same inode and size, new bytes): the mapping
	 * shows them, so only the mtime tells; the owner must reopen */
	struct timespec ts[2] = { { 0, UTIME_OMIT }, { 1, 0 } };
	ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0);
	ck_assert_int_eq(engine_files_changed(e, err, sizeof err), 1);
	ck_assert_msg(strstr(err, "was modified since"), "%s", err);
	engine_close(e);
	unlink(path);
	rmdir(dir);
}
END_TEST

/* The end of a generate on fd: 1 "done" (tokens in out), 0 "error"
 * (message in msg), -1 the connection failed. */
static int gen_end(int fd, TReply *r, int32_t *out, int cap, int *n,
		   char *msg, size_t msglen)
{
	char type[32];
	*n = 0;
	msg[0] = 0;
	for (;;) {
		if (t_recv_event(fd, r, 60) < 0)
			return -1;
		t_str(r, "type", type, sizeof type);
		if (!strcmp(type, "token")) {
			if (*n < cap)
				out[*n] = (int32_t)t_int(r, "token");
			++*n;
			msgpack_zone_destroy(&r->zone);
			continue;
		}
		int done = !strcmp(type, "done");
		if (!done)
			t_str(r, "message", msg, msglen);
		msgpack_zone_destroy(&r->zone);
		return done;
	}
}

/* A greedy generate of max tokens on model: as gen_end. */
static int gen_raw(int fd, uint32_t id, const char *model, int max,
		   int32_t *out, int *n, char *msg, size_t msglen)
{
	uint8_t req[512];
	char idb[32], mb[80], maxb[32];
	snprintf(idb, sizeof idb, "i:%u", id);
	snprintf(mb, sizeof mb, "s:%s", model);
	snprintf(maxb, sizeof maxb, "i:%d", max);
	size_t len = t_pack(req, sizeof req, 7, "op", "s:generate", "id", idb,
			    "model", mb, "prompt", "s:Once upon a time",
			    "max_tokens", maxb, "temperature", "f:0",
			    "ignore_eos", "b:true");
	TReply *r = malloc(sizeof *r);
	int rc = t_send(fd, req, len) < 0 ? -1 :
		 gen_end(fd, r, out, max, n, msg, msglen);
	free(r);
	return rc;
}

/* The quant the models op reports for model, "" if none. */
static void model_quant(const char *sock, const char *model, char *q,
			size_t qlen)
{
	infer_client *c;
	char *json = NULL, key[96];
	q[0] = 0;
	if (infer_connect(&c, sock, NULL, 0) != 0)
		return;
	if (infer_models(c, &json) == 0) {
		snprintf(key, sizeof key, "\"name\":\"%s\"", model);
		char *p = strstr(json, key), *qp = p ? strstr(p, "\"quant\":\"") : NULL;
		if (qp) {
			qp += 9;
			size_t k = strcspn(qp, "\"");
			snprintf(q, qlen, "%.*s", (int)(k < qlen ? k : qlen - 1), qp);
		}
	}
	free(json);
	infer_close(c);
}

/* inferd: a model file truncated in the middle of a generate (the daemon
 * stopped while it happens, so the generate is certainly running) fails
 * that generate with a message naming the file; the daemon serves on
 * (ping, another model generates); the model is unloaded, a request while
 * the file is still short fails its reload with a message, and once the
 * file is restored it loads again and gives the same tokens. A file
 * replaced by rename is reloaded at the next request (its quant shows). */
START_TEST(test_model_truncated_daemon)
{
	TDaemon d;
	ck_assert(t_prepare(&d) == 0);
	char path[160], mspec[200], msg[512];
	snprintf(path, sizeof path, "%s/t.gguf", d.dir);
	snprintf(mspec, sizeof mspec, "t=%s", path);
	const char *src = test_data("models/tiny-llama2-f16.gguf");
	ck_assert_int_eq(copy_file(src, path), 0);
	const char *args[] = { "--model", mspec, NULL };
	ck_assert(t_launch(&d, args) == 0);
	int fd = t_connect(d.sock);
	ck_assert_int_ge(fd, 0);
	int32_t want[8], got[512];
	int n;
	ck_assert_int_eq(gen_raw(fd, 1, "t", 8, want, &n, msg, sizeof msg), 1);
	ck_assert_int_eq(n, 8);

	/* a long generate; stopped at its first token, the file is cut to
	 * half; it cannot have ended unless it outran the SIGSTOP (~450
	 * tokens at ~1000/s here): then try again */
	off_t size = file_size(path);
	int hit = 0, tries = 0;
	for (; tries < 3 && !hit; tries++) {
		uint8_t req[512];
		TReply *r = malloc(sizeof *r);
		char type[32];
		size_t len = t_pack(req, sizeof req, 7, "op", "s:generate",
				    "id", "i:2", "model", "s:t", "prompt",
				    "s:Once upon a time", "max_tokens", "i:450",
				    "temperature", "f:0", "ignore_eos", "b:true");
		ck_assert_int_eq(t_send(fd, req, len), 0);
		ck_assert_int_eq(t_recv_event(fd, r, 60), 0);
		ck_assert_str_eq(t_str(r, "type", type, sizeof type), "token");
		msgpack_zone_destroy(&r->zone);
		ck_assert_int_eq(kill(d.pid, SIGSTOP), 0);
		ck_assert_int_eq(truncate(path, size / 2), 0);
		ck_assert_int_eq(kill(d.pid, SIGCONT), 0);
		int k = gen_end(fd, r, got, 512, &n, msg, sizeof msg);
		free(r);
		ck_assert_int_ge(k, 0); /* the daemon lives */
		hit = k == 0;
		fprintf(stderr, "truncated during a generate (try %d): %s after "
			"%d more tokens: %s\n", tries + 1, hit ? "error" : "done",
			n, msg);
		if (!hit) /* it finished first: restore, reload, again */
			ck_assert_int_eq(copy_file(src, path), 0);
	}
	ck_assert_msg(hit, "the generate always ended before the truncation");
	ck_assert_msg(strstr(msg, "changed or was truncated while loaded") &&
		      strstr(msg, path), "message: %s", msg);

	/* the daemon serves on: ping, the other model */
	infer_client *c;
	ck_assert_int_eq(infer_connect(&c, d.sock, NULL, 0), 0);
	ck_assert_int_eq(infer_ping(c), 0);
	infer_close(c);
	ck_assert_int_eq(gen_raw(fd, 3, "l2", 4, got, &n, msg, sizeof msg), 1);
	ck_assert_int_eq(n, 4);

	/* still short: the reload fails, with a message */
	ck_assert_int_eq(gen_raw(fd, 4, "t", 8, got, &n, msg, sizeof msg), 0);
	fprintf(stderr, "generate while the file is short: %s\n", msg);
	ck_assert_msg(strstr(msg, path) != NULL, "message: %s", msg);

	/* restored: loads again, same tokens */
	ck_assert_int_eq(copy_file(src, path), 0);
	ck_assert_int_eq(gen_raw(fd, 5, "t", 8, got, &n, msg, sizeof msg), 1);
	ck_assert_int_eq(n, 8);
	ck_assert_mem_eq(got, want, sizeof want);

	/* replaced by rename (the old inode stays mapped, consistent): the
	 * next request reloads the new file */
	char q[32], tmp[200];
	model_quant(d.sock, "t", q, sizeof q);
	ck_assert_str_eq(q, "f16");
	snprintf(tmp, sizeof tmp, "%s.new", path);
	ck_assert_int_eq(copy_file(test_data("models/tiny-llama2-q8_0.gguf"),
				   tmp), 0);
	ck_assert_int_eq(rename(tmp, path), 0);
	ck_assert_int_eq(gen_raw(fd, 6, "t", 4, got, &n, msg, sizeof msg), 1);
	model_quant(d.sock, "t", q, sizeof q);
	ck_assert_str_eq(q, "q8_0");
	close(fd);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

/* ---- model and template paths in requests stay in the models dir ---- */

/* A tokenize of model on fd: the reply's type in type, message in msg. */
static void tokenize_as(int fd, const char *model, char *type, size_t tlen,
			char *msg, size_t mlen)
{
	uint8_t req[512];
	char mb[300];
	snprintf(mb, sizeof mb, "s:%s", model);
	size_t n = t_pack(req, sizeof req, 4, "op", "s:tokenize", "id", "i:7",
			  "model", mb, "text", "s:hello");
	TReply *r = malloc(sizeof *r);
	type[0] = msg[0] = 0;
	if (t_send(fd, req, n) == 0 && t_recv(fd, r, 30) == 0) {
		t_str(r, "type", type, tlen);
		t_str(r, "message", msg, mlen);
		msgpack_zone_destroy(&r->zone);
	}
	free(r);
}

/* A chat generate on "good" with template tmpl: 1 done, 0 error (msg). */
static int chat_with(int fd, const char *tmpl, char *msg, size_t mlen)
{
	uint8_t req[512];
	char tb[300];
	snprintf(tb, sizeof tb, "s:%s", tmpl);
	size_t n = t_pack(req, sizeof req, 7, "op", "s:generate", "id", "i:8",
			  "model", "s:good", "prompt", "s:hi", "system",
			  "s:be brief", "template", tb, "max_tokens", "i:2");
	TReply *r = malloc(sizeof *r);
	int32_t ids[4];
	int k;
	int rc = t_send(fd, req, n) < 0 ? -1 :
		 gen_end(fd, r, ids, 4, &k, msg, mlen);
	free(r);
	return rc;
}

START_TEST(test_model_paths_confined)
{
	TDaemon d;
	ck_assert(t_prepare(&d) == 0);
	char md[160], p[300], q[300], type[32], msg[512];
	snprintf(md, sizeof md, "%s/models", d.dir);
	ck_assert_int_eq(mkdir(md, 0755), 0);
	const char *q8 = test_data("models/tiny-llama2-q8_0.gguf");
	snprintf(p, sizeof p, "%s/good.gguf", md);
	ck_assert_int_eq(copy_file(q8, p), 0);
	snprintf(p, sizeof p, "%s/late.gguf", md);
	ck_assert_int_eq(copy_file(q8, p), 0);
	/* inside -> inside: an alias, served */
	snprintf(p, sizeof p, "%s/alias.gguf", md);
	ck_assert_int_eq(symlink("good.gguf", p), 0);
	/* links out: refused */
	snprintf(p, sizeof p, "%s/out.gguf", md);
	ck_assert_int_eq(symlink(q8, p), 0);
	snprintf(p, sizeof p, "%s/hfout", md);
	ck_assert_int_eq(symlink(test_data("models/tiny-llama2"), p), 0);
	/* an HF folder inside whose files link out */
	snprintf(p, sizeof p, "%s/hfmix", md);
	ck_assert_int_eq(mkdir(p, 0755), 0);
	const char *files[] = { "config.json", "model.safetensors",
				"tokenizer.json", "tokenizer_config.json" };
	for (int i = 0; i < 4; i++) {
		char t[200];
		snprintf(t, sizeof t, "models/tiny-llama2/%s", files[i]);
		snprintf(p, sizeof p, "%s/hfmix/%s", md, files[i]);
		ck_assert_int_eq(symlink(test_data(t), p), 0);
	}
	/* templates: one inside, one linking out */
	snprintf(p, sizeof p, "%s/chat.jinja", md);
	FILE *f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	fputs("{% for message in messages %}{{'<|im_start|>' + message['role'] "
	      "+ '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
	      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
	      "{% endif %}", f);
	ck_assert_int_eq(fclose(f), 0);
	snprintf(p, sizeof p, "%s/evil.jinja", md);
	ck_assert_int_eq(symlink("/etc/hostname", p), 0);

	const char *args[] = { "--models-dir", md, NULL };
	ck_assert(t_launch(&d, args) == 0);
	infer_client *c;
	char *json = NULL;
	ck_assert_int_eq(infer_connect(&c, d.sock, NULL, 0), 0);
	ck_assert_int_eq(infer_models(c, &json), 0);
	infer_close(c);
	ck_assert_msg(strstr(json, "\"name\":\"good\"") &&
		      strstr(json, "\"name\":\"alias\"") &&
		      strstr(json, "\"name\":\"late\""), "%s", json);
	ck_assert_msg(!strstr(json, "\"name\":\"out\"") &&
		      !strstr(json, "\"name\":\"hfout\"") &&
		      !strstr(json, "\"name\":\"hfmix\""), "%s", json);
	free(json);

	int fd = t_connect(d.sock);
	ck_assert_int_ge(fd, 0);
	/* names, never paths */
	const char *paths[] = { "../x", "/etc/passwd", "../models/good",
				"good.gguf", md };
	for (int i = 0; i < 5; i++) {
		tokenize_as(fd, paths[i], type, sizeof type, msg, sizeof msg);
		ck_assert_msg(!strcmp(type, "error") &&
			      strstr(msg, "no model named"), "%s: %s %s",
			      paths[i], type, msg);
	}
	const char *out[] = { "out", "hfout", "hfmix" };
	for (int i = 0; i < 3; i++) {
		tokenize_as(fd, out[i], type, sizeof type, msg, sizeof msg);
		ck_assert_msg(!strcmp(type, "error") &&
			      strstr(msg, "link out of the models directory"),
			      "%s: %s %s", out[i], type, msg);
	}
	tokenize_as(fd, "alias", type, sizeof type, msg, sizeof msg);
	ck_assert_msg(!strcmp(type, "ok"), "alias: %s %s", type, msg);

	/* chat template files: a name in the models dir only */
	const char *bad_t[][2] = {
		{ "/etc/passwd", "paths are not accepted" },
		{ "../x.jinja", "paths are not accepted" },
		{ ".hidden.jinja", "paths are not accepted" },
		{ "evil.jinja", "links outside the models directory" },
		{ "missing.jinja", "is not in the models directory" },
	};
	for (int i = 0; i < 5; i++) {
		ck_assert_int_eq(chat_with(fd, bad_t[i][0], msg, sizeof msg), 0);
		ck_assert_msg(strstr(msg, bad_t[i][1]), "%s: %s", bad_t[i][0], msg);
	}
	ck_assert_msg(chat_with(fd, "chat.jinja", msg, sizeof msg) == 1, "%s", msg);

	/* a link put in after the scan: refused at load */
	snprintf(p, sizeof p, "%s/late.gguf", md);
	snprintf(q, sizeof q, "%s/late.tmp", md);
	ck_assert_int_eq(symlink(q8, q), 0);
	ck_assert_int_eq(rename(q, p), 0);
	tokenize_as(fd, "late", type, sizeof type, msg, sizeof msg);
	ck_assert_msg(!strcmp(type, "error") &&
		      strstr(msg, "no longer a file inside the models directory"),
		      "late: %s %s", type, msg);
	close(fd);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

/* ---- socket access by other uids (root only: setuid in a child) ---- */

/* In a child as uid/gid: connect, then shutdown (admin) and ping.
 * Returns connect errno (0 ok) and the op results through res[]. */
static void as_user(const char *sock, uid_t uid, gid_t gid, int res[3])
{
	int pfd[2];
	ck_assert_int_eq(pipe(pfd), 0);
	pid_t pid = fork();
	if (pid == 0) {
		int out[3] = { -1, 99, 99 };
		gid_t g = gid;
		if (setgroups(1, &g) == 0 && setgid(gid) == 0 && setuid(uid) == 0) {
			infer_client *c;
			int fd = t_connect(sock);
			out[0] = fd >= 0 ? 0 : errno;
			if (fd >= 0)
				close(fd);
			if (infer_connect(&c, sock, NULL, 0) == 0) {
				out[1] = infer_shutdown(c);
				out[2] = infer_ping(c);
				infer_close(c);
			}
		}
		if (write(pfd[1], out, sizeof out) != sizeof out)
			_exit(1);
		_exit(0);
	}
	close(pfd[1]);
	ck_assert_int_eq(read(pfd[0], res, 3 * sizeof(int)), (ssize_t)(3 * sizeof(int)));
	close(pfd[0]);
	waitpid(pid, NULL, 0);
}

START_TEST(test_socket_0600_refuses_other_uid)
{
	if (getuid() != 0)
		TEST_SKIP("needs root to act as another uid");
	TDaemon d;
	ck_assert(t_prepare(&d) == 0);
	ck_assert_int_eq(chmod(d.dir, 0755), 0); /* only the socket decides */
	ck_assert(t_launch(&d, NULL) == 0);
	int res[3];
	as_user(d.sock, 65534, 65534, res);
	ck_assert_int_eq(res[0], EACCES);
	ck_assert_int_eq(t_stop(&d), 0); /* and it is still there to stop */
	t_cleanup(&d);
}
END_TEST

START_TEST(test_socket_group_0660)
{
	if (getuid() != 0)
		TEST_SKIP("needs root to act as another uid");
	struct group *g = getgrgid(65534);
	if (!g)
		TEST_SKIP("no group 65534 to give the socket");
	char gname[64];
	snprintf(gname, sizeof gname, "%s", g->gr_name);
	TDaemon d;
	ck_assert(t_prepare(&d) == 0);
	ck_assert_int_eq(chmod(d.dir, 0755), 0);
	const char *args[] = { "--socket-mode", "0660", "--socket-group", gname,
			       NULL };
	ck_assert(t_launch(&d, args) == 0);
	int res[3];
	/* a member of the group: admitted, but not an admin */
	as_user(d.sock, 65534, 65534, res);
	ck_assert_int_eq(res[0], 0);
	ck_assert_int_eq(res[1], INFER_EDENIED);
	ck_assert_int_eq(res[2], 0);
	/* another uid outside the group: refused */
	as_user(d.sock, 65534, 65533, res);
	ck_assert_int_eq(res[0], EACCES);
	ck_assert_int_eq(t_stop(&d), 0);
	t_cleanup(&d);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("faults");
	TCase *tc = tcase_create("faults");
	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, test_kill9_during_logging);
	tcase_add_test(tc, test_db_disk_full);
	tcase_add_test(tc, test_log_queue_bounded);
	tcase_add_test(tc, test_slow_reader_cut_off);
	tcase_add_test(tc, test_model_truncated_engine);
	tcase_add_test(tc, test_model_truncated_daemon);
	tcase_add_test(tc, test_model_paths_confined);
	tcase_add_test(tc, test_socket_0600_refuses_other_uid);
	tcase_add_test(tc, test_socket_group_0660);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
