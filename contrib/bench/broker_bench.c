/*
 * broker_bench.c - what the broker costs: ping round trips through inferd
 * (median and p99, one client and 64 concurrent clients) and the overhead
 * of a generate through inferd + libinfer over the same generation by
 * infer-run (its own prefill + decode time, without process start and
 * model load), with 1 and 64 concurrent clients.
 *
 *   make build/broker_bench
 *   build/broker_bench [--model PATH] [--threads N] [--tokens N]
 *                      [--pings N] [--inferd PATH] [--backend cpu|cuda]
 *
 * It starts its own inferd (BUILD/inferd next to itself by default) on a
 * temporary socket and database, and stops it at the end.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "infer.h"

static const char *PROMPT = "Once upon a time";

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Percentile (0..100) of n sorted values. */
static double pct(const double *v, size_t n, double p)
{
	size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

static char sock[128];

typedef struct PingJob {
	int n;          /* pings to do */
	double *lat;    /* [n] seconds each */
	int rc;         /* first error */
} PingJob;

static void *ping_thread(void *arg)
{
	PingJob *j = arg;
	infer_client *c;
	if ((j->rc = infer_connect(&c, sock, NULL, 0)) < 0)
		return NULL;
	for (int i = 0; i < j->n; i++) {
		double t0 = now();
		if ((j->rc = infer_ping(c)) < 0)
			break;
		j->lat[i] = now() - t0;
	}
	infer_close(c);
	return NULL;
}

static void ping_bench(int clients, int per)
{
	PingJob *jobs = calloc((size_t)clients, sizeof *jobs);
	pthread_t *th = calloc((size_t)clients, sizeof *th);
	double *all = malloc(sizeof(double) * (size_t)clients * (size_t)per);
	for (int i = 0; i < clients; i++) {
		jobs[i].n = per;
		jobs[i].lat = all + (size_t)i * (size_t)per;
	}
	double t0 = now();
	for (int i = 0; i < clients; i++)
		pthread_create(&th[i], NULL, ping_thread, &jobs[i]);
	for (int i = 0; i < clients; i++)
		pthread_join(th[i], NULL);
	double wall = now() - t0;
	for (int i = 0; i < clients; i++)
		if (jobs[i].rc < 0) {
			printf("ping: client %d failed: %s\n", i, infer_strerror(jobs[i].rc));
			exit(1);
		}
	size_t n = (size_t)clients * (size_t)per;
	qsort(all, n, sizeof *all, cmp_d);
	printf("ping  %2d client%s x %d: median %.1f us, p99 %.1f us, max %.1f us, "
	       "%.0f pings/s\n", clients, clients > 1 ? "s" : " ", per,
	       pct(all, n, 50) * 1e6, pct(all, n, 99) * 1e6, all[n - 1] * 1e6,
	       (double)n / wall);
	free(all);
	free(jobs);
	free(th);
}

typedef struct GenJob {
	int tokens;     /* max_tokens */
	double t;       /* seconds for the whole request */
	double t_daemon; /* the daemon's own arrival-to-done time */
	int n;          /* tokens received */
	int rc;         /* result */
} GenJob;

static int count_tok(void *ud, int32_t tok, const char *t, size_t len)
{
	(*(int *)ud)++;
	return 0;
}

static void *gen_thread(void *arg)
{
	GenJob *j = arg;
	infer_client *c;
	if ((j->rc = infer_connect(&c, sock, NULL, 0)) < 0)
		return NULL;
	infer_gen_params p;
	infer_gen_params_init(&p);
	p.model = "m";
	p.prompt = PROMPT;
	p.temperature = 0;
	p.max_tokens = j->tokens;
	p.ignore_eos = 1;
	infer_gen_result res;
	double t0 = now();
	j->rc = infer_generate(c, &p, count_tok, &j->n, &res);
	j->t = now() - t0;
	j->t_daemon = res.total_ms / 1e3;
	infer_close(c);
	return NULL;
}

int main(int argc, char **argv)
{
	const char *model = "build/testdata/models/tiny-llama2";
	const char *inferd = NULL, *backend = "cpu";
	int threads = 1, tokens = 64, pings = 5000, reps = 30;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--model")) model = argv[i + 1];
		else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--tokens")) tokens = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--pings")) pings = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]) > 0 && atoi(argv[i + 1]) <= 256 ? atoi(argv[i + 1]) : 30;
		else if (!strcmp(argv[i], "--inferd")) inferd = argv[i + 1];
		else if (!strcmp(argv[i], "--backend")) backend = argv[i + 1];
		else {
			fprintf(stderr, "broker_bench: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	char def[4096];
	if (!inferd) {
		snprintf(def, sizeof def, "%s", argv[0]);
		char *slash = strrchr(def, '/');
		snprintf(slash ? slash + 1 : def, sizeof def - (size_t)(slash ? slash + 1 - def : 0),
			 "inferd");
		inferd = def;
	}
	char dir[] = "/tmp/broker-bench-XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	char db[64], mspec[4200], th[16], ctx[16];
	snprintf(sock, sizeof sock, "%s/s", dir);
	snprintf(db, sizeof db, "%s/db", dir);
	snprintf(mspec, sizeof mspec, "m=%s", model);
	snprintf(th, sizeof th, "%d", threads);
	snprintf(ctx, sizeof ctx, "%d", 512);
	pid_t pid = fork();
	if (pid == 0) {
		execl(inferd, inferd, "--socket", sock, "--db", db, "--model", mspec,
		      "--threads", th, "--ctx", ctx, "--backend", backend, "--max-queue", "128",
		      "--max-uid-requests", "256", "--log-file", "/dev/null", (char *)NULL);
		_exit(127);
	}
	infer_client *c = NULL;
	for (int i = 0; i < 500 && infer_connect(&c, sock, NULL, 0) < 0; i++)
		usleep(10000);
	if (!c) {
		fprintf(stderr, "broker_bench: inferd did not come up\n");
		return 1;
	}
	printf("broker_bench: model %s, backend %s, %d thread%s, %d tokens, prompt "
	       "\"%s\"\n", model, backend, threads, threads > 1 ? "s" : "", tokens,
	       PROMPT);
	ping_bench(1, pings);
	ping_bench(64, pings / 10 > 10 ? pings / 10 : 10);

	/* generate: infer-run (a fresh process per run: its prefill + decode
	 * time as it reports it, without its process start and model load)
	 * against the same request through inferd, runs alternating so that
	 * load from other processes hits both alike */
	char run_bin[4096], cmd[8192];
	snprintf(run_bin, sizeof run_bin, "%s", inferd);
	char *sl = strrchr(run_bin, '/');
	snprintf(sl ? sl + 1 : run_bin, sizeof run_bin - (size_t)(sl ? sl + 1 - run_bin : 0),
		 "infer-run");
	snprintf(cmd, sizeof cmd, "'%s' generate '%s' -p '%s' --temp 0 -n %d --ignore-eos "
		 "-t %d --ctx 512 --backend %s 2>&1 >/dev/null", run_bin, model, PROMPT,
		 tokens, threads, backend);
	double direct[256], viad[256], inside[256];
	for (int r = 0; r <= reps; r++) {
		FILE *f = popen(cmd, "r");
		double pf = -1, dc = -1;
		char line[512];
		while (f && fgets(line, sizeof line, f)) {
			char *p = strstr(line, "prefill ");
			if (p && strstr(line, "decode "))
				sscanf(p, "prefill %*f tok/s (%lf s), decode %*f tok/s (%lf s)",
				       &pf, &dc);
		}
		if (!f || pclose(f) != 0 || pf < 0 || dc < 0) {
			fprintf(stderr, "broker_bench: could not run %s\n", run_bin);
			return 1;
		}
		if (r)
			direct[r - 1] = pf + dc;
		GenJob j = { tokens, 0, 0, 0, 0 };
		gen_thread(&j);
		if (j.rc < 0 || j.n != tokens) {
			fprintf(stderr, "broker_bench: generate failed: %s (%d tokens)\n",
				infer_strerror(j.rc), j.n);
			return 1;
		}
		if (r) {
			viad[r - 1] = j.t;
			inside[r - 1] = j.t_daemon;
		}
	}
	qsort(direct, (size_t)reps, sizeof *direct, cmp_d);
	/* the transport: the client's time (request out, 64 token frames in)
	 * minus the daemon's own arrival-to-done time */
	double tr[256];
	for (int r = 0; r < reps; r++)
		tr[r] = viad[r] - inside[r];
	qsort(tr, (size_t)reps, sizeof *tr, cmp_d);
	qsort(viad, (size_t)reps, sizeof *viad, cmp_d);
	qsort(inside, (size_t)reps, sizeof *inside, cmp_d);
	double dm = pct(direct, (size_t)reps, 50), vm = pct(viad, (size_t)reps, 50);
	printf("generate %d tokens, 1 client: infer-run %.2f ms, via inferd %.2f ms "
	       "(median of %d): overhead %.2f ms (%.1f%%, %.1f us/token)\n", tokens,
	       dm * 1e3, vm * 1e3, reps, (vm - dm) * 1e3, (vm / dm - 1) * 100,
	       (vm - dm) / tokens * 1e6);
	printf("generate %d tokens, 1 client: inside inferd %.2f ms, client-side "
	       "transport (client time - daemon time) median %.3f ms, p99 %.3f ms\n",
	       tokens, pct(inside, (size_t)reps, 50) * 1e3,
	       pct(tr, (size_t)reps, 50) * 1e3, pct(tr, (size_t)reps, 99) * 1e3);
	/* 64 clients at once: the model runs them one after another */
	enum { NC = 64 };
	static GenJob jobs[NC];
	pthread_t tids[NC];
	double t0 = now();
	for (int i = 0; i < NC; i++) {
		jobs[i] = (GenJob){ tokens, 0, 0, 0, 0 };
		pthread_create(&tids[i], NULL, gen_thread, &jobs[i]);
	}
	for (int i = 0; i < NC; i++)
		pthread_join(tids[i], NULL);
	double wall = now() - t0;
	for (int i = 0; i < NC; i++)
		if (jobs[i].rc < 0 || jobs[i].n != tokens) {
			fprintf(stderr, "broker_bench: client %d: %s (%d tokens)\n", i,
				infer_strerror(jobs[i].rc), jobs[i].n);
			return 1;
		}
	printf("generate %d tokens, %d clients at once: wall %.1f ms vs %d x infer-run "
	       "%.1f ms: overhead %.2f ms per request (%.1f%%)\n", tokens, NC,
	       wall * 1e3, NC, NC * dm * 1e3, (wall - NC * dm) / NC * 1e3,
	       (wall / (NC * dm) - 1) * 100);
	infer_close(c);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		return 1;
	return 0;
}
