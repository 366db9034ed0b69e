/*
 * loadtest.c - many clients against a real inferd on the tiny test models,
 * over its Unix socket (loopback only), bounded in time.
 *
 *   loadtest [-c clients] [-n requests per client] [-t max seconds]
 *   (INFERD_TEST_DATA / INFERD_BUILD as for the Check tests)
 *
 * Each client thread keeps one connection and sends its requests one after
 * the other: ~10% are generates it abandons after the first token (closes
 * the socket mid-stream and reconnects), ~5% are garbage frames (random
 * bytes, which must get an error reply with id 0 while the connection goes
 * on; one in four of those is a frame length over the limit, after which
 * the daemon closes), the rest well-formed generates that must end in
 * "done". Every generate's prompt carries a unique tag, and the daemon
 * runs with --log-prompts, so after it stops the test counts each tag's
 * rows in the SQLite log: exactly one per generate sent (abandoned ones
 * included). The daemon's open fds (/proc/pid/fd) and RSS are read after a
 * warm-up round and at the end, with the same clients connected.
 * Prints the figures; exits 0 when every check holds.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <dirent.h>

#include "daemon_util.h"

static int n_clients = 64, n_requests = 200;
static double max_secs = 120;
static TDaemon dmn;
static double t_end;

/* What one client did and saw. */
typedef struct Client {
	pthread_t th;
	int idx;                 /* 0..n_clients-1 */
	unsigned seed;           /* rand_r state */
	int fd;                  /* current connection */
	int sent_ok, answered;   /* well-formed generates / "done" replies */
	int abandoned;           /* generates closed mid-stream */
	int garbage, garbage_err;/* garbage frames / error replies to them */
	int busy;                /* well-formed answered "busy" (retried) */
	int failures;            /* anything unexpected */
	int gens;                /* generates sent (rows expected) */
	char why[160];           /* first failure */
} Client;

static Client *clients;
static pthread_barrier_t warm_barrier; /* all clients after round 1 */
static pthread_barrier_t warm_done;    /* main measured: go on */

static void failf(Client *c, const char *fmt, ...)
{
	va_list ap;
	if (!c->failures++) {
		va_start(ap, fmt);
		vsnprintf(c->why, sizeof c->why, fmt, ap);
		va_end(ap);
	}
}

static int reconnect(Client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = t_connect(dmn.sock);
	return c->fd < 0 ? -1 : 0;
}

static int type_is(const TReply *r, const char *t)
{
	char b[32];
	return !strcmp(t_str(r, "type", b, sizeof b), t);
}

static size_t pack_generate(uint8_t *out, size_t cap, uint32_t id,
			    const char *model, const char *prompt, int max_tok)
{
	char idb[32], mt[32], pr[160], mo[64];
	snprintf(idb, sizeof idb, "i:%u", id);
	snprintf(mt, sizeof mt, "i:%d", max_tok);
	snprintf(pr, sizeof pr, "s:%s", prompt);
	snprintf(mo, sizeof mo, "s:%s", model);
	return t_pack(out, cap, 6, "op", "s:generate", "id", idb, "model", mo,
		      "prompt", pr, "max_tokens", mt, "ignore_eos", "b:true");
}

/* One well-formed generate to the end; 1 done, 0 busy, -1 failure. */
static int do_generate(Client *c, uint32_t id, const char *model,
		       const char *prompt, int abandon)
{
	uint8_t buf[512];
	TReply *r = malloc(sizeof *r);
	size_t n = pack_generate(buf, sizeof buf, id, model, prompt, 6);
	int rc = -1;
	if (!r || t_send(c->fd, buf, n) < 0) {
		failf(c, "send: %s", strerror(errno));
		free(r);
		return -1;
	}
	c->gens++;
	for (;;) {
		int k = t_recv(c->fd, r, 60);
		if (k < 0) {
			failf(c, "generate %u: recv %d", id, k);
			break;
		}
		long long rid = t_int(r, "id");
		int done = type_is(r, "done"), err = type_is(r, "error");
		if (rid != id) {
			failf(c, "reply for id %lld, want %u", rid, id);
			msgpack_zone_destroy(&r->zone);
			break;
		}
		if (err) {
			char code[32], msg[120];
			t_str(r, "code", code, sizeof code);
			t_str(r, "message", msg, sizeof msg);
			rc = !strcmp(code, "busy") ? 0 : -1;
			if (rc < 0)
				failf(c, "generate %u: %s %s", id, code, msg);
			msgpack_zone_destroy(&r->zone);
			break;
		}
		if (abandon && type_is(r, "token")) {
			msgpack_zone_destroy(&r->zone);
			c->abandoned++;
			rc = reconnect(c) == 0 ? 1 : -1;
			break;
		}
		msgpack_zone_destroy(&r->zone);
		if (done) {
			rc = 1;
			break;
		}
	}
	free(r);
	return rc;
}

static void do_garbage(Client *c)
{
	uint8_t buf[300];
	TReply *r = malloc(sizeof *r);
	if (!r)
		return;
	c->garbage++;
	if (rand_r(&c->seed) % 4 == 0) {
		/* a length over PROTO_MAX_FRAME: error, then the daemon closes */
		uint8_t h[4];
		proto_put_len(h, PROTO_MAX_FRAME + 1 + (uint32_t)rand_r(&c->seed) % 1000);
		if (t_write_all(c->fd, h, 4) == 0 && t_recv(c->fd, r, 30) == 0) {
			if (type_is(r, "error") && t_int(r, "id") == 0)
				c->garbage_err++;
			msgpack_zone_destroy(&r->zone);
		}
		if (reconnect(c) < 0)
			failf(c, "reconnect: %s", strerror(errno));
		free(r);
		return;
	}
	size_t n = 1 + (size_t)rand_r(&c->seed) % sizeof buf;
	for (size_t i = 0; i < n; i++)
		buf[i] = (uint8_t)rand_r(&c->seed);
	buf[0] = 0xc1; /* never-used msgpack byte: never a valid request */
	if (t_send(c->fd, buf, n) < 0 || t_recv(c->fd, r, 30) < 0) {
		failf(c, "garbage: no reply");
	} else {
		if (type_is(r, "error") && t_int(r, "id") == 0)
			c->garbage_err++;
		else
			failf(c, "garbage: reply is not an error for id 0");
		msgpack_zone_destroy(&r->zone);
	}
	free(r);
}

static void *client_main(void *arg)
{
	Client *c = arg;
	static const char *const models[] = {"l2", "l3"};
	c->fd = -1;
	if (reconnect(c) < 0)
		failf(c, "connect: %s", strerror(errno));
	for (int i = 0; i < n_requests; i++) {
		if (i == 1) { /* warm-up round done: let main measure */
			pthread_barrier_wait(&warm_barrier);
			pthread_barrier_wait(&warm_done);
		}
		if (t_now() > t_end || c->fd < 0)
			break;
		int dice = rand_r(&c->seed) % 100;
		if (i > 0 && dice < 5) {
			do_garbage(c);
			continue;
		}
		char prompt[96];
		snprintf(prompt, sizeof prompt, "load tag c%d r%d once upon", c->idx, i);
		int abandon = i > 0 && dice < 15;
		uint32_t id = (uint32_t)i + 1;
		if (!abandon)
			c->sent_ok++;
		int rc;
		while ((rc = do_generate(c, id, models[(c->idx + i) & 1], prompt,
					 abandon)) == 0) {
			c->busy++; /* refused before it started: logged, retried */
			usleep(20000);
			snprintf(prompt, sizeof prompt, "load tag c%d r%d retry%d once",
				 c->idx, i, c->busy);
		}
		if (rc > 0 && !abandon)
			c->answered++;
		if (rc < 0)
			break;
	}
	if (n_requests <= 1) {
		pthread_barrier_wait(&warm_barrier);
		pthread_barrier_wait(&warm_done);
	}
	return NULL;
}

static int count_fds(pid_t pid)
{
	char p[64];
	snprintf(p, sizeof p, "/proc/%d/fd", (int)pid);
	DIR *d = opendir(p);
	int n = 0;
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n - 2;
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

/* Rows per prompt tag in the log; checks each generate sent has one. */
static int check_db(long *rows_out, int *dups, int *missing)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	long rows = 0;
	*dups = *missing = 0;
	if (sqlite3_open_v2(dmn.db, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_prepare_v2(db, "SELECT prompt, count(*) FROM requests "
			       "WHERE op='generate' GROUP BY prompt", -1, &st,
			       NULL) != SQLITE_OK) {
		sqlite3_close(db);
		return -1;
	}
	while (sqlite3_step(st) == SQLITE_ROW) {
		int k = sqlite3_column_int(st, 1);
		rows += k;
		if (k != 1)
			(*dups)++;
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	long want = 0;
	for (int i = 0; i < n_clients; i++)
		want += clients[i].gens;
	*missing = (int)(want - rows);
	*rows_out = rows;
	return 0;
}

int main(int argc, char **argv)
{
	int opt;
	while ((opt = getopt(argc, argv, "c:n:t:")) != -1) {
		if (opt == 'c')
			n_clients = atoi(optarg);
		else if (opt == 'n')
			n_requests = atoi(optarg);
		else if (opt == 't')
			max_secs = atof(optarg);
		else {
			fprintf(stderr, "usage: loadtest [-c clients] [-n requests] [-t secs]\n");
			return 2;
		}
	}
	if (n_clients < 1 || n_requests < 1) {
		fprintf(stderr, "loadtest: need at least one client and request\n");
		return 2;
	}
	const char *extra[] = {"--log-prompts", "--max-queue", "1024",
			       "--max-uid-requests", "4096", "--keep-alive", "-1",
			       NULL};
	if (t_start(&dmn, extra) < 0) {
		fprintf(stderr, "loadtest: inferd did not start (see %s)\n", dmn.log);
		return 1;
	}
	clients = calloc((size_t)n_clients, sizeof *clients);
	pthread_barrier_init(&warm_barrier, NULL, (unsigned)n_clients + 1);
	pthread_barrier_init(&warm_done, NULL, (unsigned)n_clients + 1);
	double t0 = t_now();
	t_end = t0 + max_secs;
	for (int i = 0; i < n_clients; i++) {
		clients[i].idx = i;
		clients[i].seed = 0x9e3779b9u * (unsigned)(i + 1);
		pthread_create(&clients[i].th, NULL, client_main, &clients[i]);
	}
	pthread_barrier_wait(&warm_barrier);
	int fd0 = count_fds(dmn.pid);
	long rss0 = rss_kb(dmn.pid);
	double tw = t_now();
	pthread_barrier_wait(&warm_done);
	for (int i = 0; i < n_clients; i++)
		pthread_join(clients[i].th, NULL);
	double t1 = t_now();
	/* same clients connected as at the warm-up measure (after a close) */
	for (int i = 0; i < n_clients; i++)
		if (clients[i].fd < 0)
			clients[i].fd = t_connect(dmn.sock);
	usleep(300000); /* let the loop see the connections */
	int fd1 = count_fds(dmn.pid);
	long rss1 = rss_kb(dmn.pid);
	for (int i = 0; i < n_clients; i++)
		if (clients[i].fd >= 0)
			close(clients[i].fd);
	int st = t_stop(&dmn);
	long rows = 0;
	int dups = 0, missing = 0;
	int dbrc = check_db(&rows, &dups, &missing);

	long sent = 0, answered = 0, abandoned = 0, garbage = 0, gerr = 0,
	     busy = 0, fails = 0, gens = 0;
	for (int i = 0; i < n_clients; i++) {
		Client *c = &clients[i];
		sent += c->sent_ok;
		answered += c->answered;
		abandoned += c->abandoned;
		garbage += c->garbage;
		gerr += c->garbage_err;
		busy += c->busy;
		gens += c->gens;
		fails += c->failures;
		if (c->failures)
			fprintf(stderr, "client %d: %d failures, first: %s\n", i,
				c->failures, c->why);
	}
	printf("loadtest: %d clients x %d requests in %.1f s (%.0f req/s after warm-up)\n",
	       n_clients, n_requests, t1 - t0,
	       (double)(gens + garbage - n_clients) / (t1 - tw));
	printf("  well-formed %ld answered %ld (busy retries %ld), abandoned mid-stream %ld,"
	       " garbage %ld (error replies %ld)\n",
	       sent, answered, busy, abandoned, garbage, gerr);
	printf("  log rows %ld for %ld generates sent: %d tags not exactly once, %d missing\n",
	       rows, gens, dups, missing);
	printf("  inferd fds %d -> %d, RSS %ld -> %ld kB, exit status %d\n", fd0,
	       fd1, rss0, rss1, st);
	int ok = fails == 0 && answered == sent && gerr == garbage && dbrc == 0 &&
		 dups == 0 && missing == 0 && fd1 <= fd0 && st == 0 &&
		 rss1 <= rss0 + rss0 / 10 + 4096;
	if (t1 > t_end)
		printf("  stopped at the %.0f s limit\n", max_secs);
	printf("loadtest: %s\n", ok ? "PASS" : "FAIL");
	if (ok)
		t_cleanup(&dmn);
	else
		fprintf(stderr, "loadtest: daemon files kept in %s\n", dmn.dir);
	return ok ? 0 : 1;
}
