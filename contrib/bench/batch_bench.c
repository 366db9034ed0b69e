/*
 * batch_bench.c - aggregate generation throughput through inferd with N
 * concurrent clients (issue 6): each client generates the same number of
 * tokens (greedy, past end-of-text) from its own short prompt, all at
 * once; generated tokens of all clients / wall time.
 *
 *   make build/batch_bench
 *   build/batch_bench [--model PATH] [--threads N] [--tokens N]
 *                     [--clients 1,8,16] [--inferd PATH] [--no-batch]
 *                     [--backend cpu|cuda] [--prompt-words N] [--ctx N]
 *                     [--max-batch N] [--batch-tokens N]
 *                     [--log-file PATH]   (inferd's messages; default none)
 *
 * --prompt-words N gives every client a prompt of its own number and N
 * words of prose (~1.2 tokens a word with a Llama-2 vocabulary; the
 * PROMPT_TOK column says what the daemon counted); the number comes
 * first, so no two prompts share a KV block and prefix sharing cannot
 * flatter the figure. Without it the prompts are four short sentences.
 *
 * --no-batch runs inferd with INFERD_NO_BATCH=1: one generate at a time
 * through engine_generate, the daemon as it was before batching (and, with
 * --inferd, an inferd built from before it). It starts
 * its own inferd on a temporary socket and stops it at the end.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "infer.h"

#define MAXC 256 /* most clients */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char sock[128];

/* One client's request and outcome. */
typedef struct Job {
	int idx;        /* client number (picks its prompt) */
	const char *prompt; /* its own long prompt, or NULL */
	int n_prompt;   /* prompt tokens the daemon counted */
	int tokens;     /* max_tokens */
	int n;          /* tokens received */
	double ttft;    /* seconds to the first token */
	double t0;      /* start */
	int rc;         /* result */
} Job;

static int count_tok(void *ud, int32_t tok, const char *t, size_t len)
{
	Job *j = ud;
	if (j->n++ == 0)
		j->ttft = now() - j->t0;
	return 0;
}

static void *client(void *arg)
{
	static const char *const prompts[] = {
		"Once upon a time", "The capital of France is",
		"Write a haiku about the sea.", "List three prime numbers:",
	};
	Job *j = arg;
	infer_client *c;
	if ((j->rc = infer_connect(&c, sock, NULL, 0)) < 0)
		return NULL;
	infer_gen_params p;
	infer_gen_params_init(&p);
	p.model = "m";
	p.prompt = j->prompt ? j->prompt : prompts[j->idx % 4];
	p.temperature = 0;
	p.max_tokens = j->tokens;
	p.ignore_eos = 1;
	infer_gen_result res;
	j->t0 = now();
	j->rc = infer_generate(c, &p, count_tok, j, &res);
	j->n_prompt = j->rc == 0 ? res.prompt_tokens : 0;
	infer_close(c);
	return NULL;
}

int main(int argc, char **argv)
{
	const char *model = NULL, *inferd = NULL, *clist = "1,8,16";
	const char *backend = "cpu", *ctx = "1024", *maxb = "64", *btok = NULL,
		   *logf = "/dev/null";
	int threads = 2, tokens = 64, nobatch = 0, words = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--model") && v)
			model = argv[++i];
		else if (!strcmp(a, "--threads") && v)
			threads = atoi(argv[++i]);
		else if (!strcmp(a, "--tokens") && v)
			tokens = atoi(argv[++i]);
		else if (!strcmp(a, "--clients") && v)
			clist = argv[++i];
		else if (!strcmp(a, "--inferd") && v)
			inferd = argv[++i];
		else if (!strcmp(a, "--backend") && v)
			backend = argv[++i];
		else if (!strcmp(a, "--prompt-words") && v)
			words = atoi(argv[++i]);
		else if (!strcmp(a, "--ctx") && v)
			ctx = argv[++i];
		else if (!strcmp(a, "--max-batch") && v)
			maxb = argv[++i];
		else if (!strcmp(a, "--batch-tokens") && v)
			btok = argv[++i];
		else if (!strcmp(a, "--log-file") && v)
			logf = argv[++i];
		else if (!strcmp(a, "--no-batch"))
			nobatch = 1;
		else {
			fprintf(stderr, "batch_bench: unknown option %s\n", a);
			return 2;
		}
	}
	static char mdef[4200], def[4096];
	if (!model) {
		const char *home = getenv("HOME");
		snprintf(mdef, sizeof mdef, "%s/.cache/inferd/models/"
			 "SmolLM2-135M-Instruct-Q4_1.gguf", home ? home : "");
		model = mdef;
	}
	if (!inferd) {
		snprintf(def, sizeof def, "%s", argv[0]);
		char *slash = strrchr(def, '/');
		size_t off = slash ? (size_t)(slash + 1 - def) : 0;
		snprintf(def + off, sizeof def - off, "inferd");
		inferd = def;
	}
	if (tokens < 1 || threads < 1 || words < 0 || words > 100000)
		return 2;
	static char *long_prompts[MAXC];
	for (int i = 0; words > 0 && i < MAXC; i++) {
		static const char *const prose[] = {
			"the", "river", "runs", "past", "old", "mills",
			"where", "children", "once", "played", "in", "summer",
			"light", "and", "farmers", "carried", "grain", "to",
			"market", "towns"};
		size_t cap = (size_t)words * 12 + 32, len;
		if (!(long_prompts[i] = malloc(cap)))
			return 1;
		len = (size_t)snprintf(long_prompts[i], cap, "%d:", i);
		for (int k = 0; k < words; k++)
			len += (size_t)snprintf(long_prompts[i] + len, cap - len,
						" %s", prose[(k + i) % 20]);
	}
	char dir[] = "/tmp/batch-bench-XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	char db[64], mspec[4300], th[16];
	snprintf(sock, sizeof sock, "%s/s", dir);
	snprintf(db, sizeof db, "%s/db", dir);
	snprintf(mspec, sizeof mspec, "m=%s", model);
	snprintf(th, sizeof th, "%d", threads);
	pid_t pid = fork();
	if (pid == 0) {
		if (nobatch)
			setenv("INFERD_NO_BATCH", "1", 1);
		/* without --max-batch under --no-batch, so that an inferd
		 * from before batching (which lacks it) can be measured */
		execl(inferd, inferd, "--socket", sock, "--db", db, "--model",
		      mspec, "--threads", th, "--ctx", ctx, "--backend", backend,
		      "--max-queue", "256", "--max-uid-requests", "512",
		      "--log-file", logf,
		      nobatch ? (char *)NULL : "--max-batch", maxb,
		      btok ? "--batch-tokens" : (char *)NULL, btok, (char *)NULL);
		_exit(127);
	}
	infer_client *c = NULL;
	for (int i = 0; i < 500 && infer_connect(&c, sock, NULL, 0) < 0; i++)
		usleep(10000);
	if (!c || infer_load(c, "m", -1) < 0) {
		fprintf(stderr, "batch_bench: inferd did not come up\n");
		return 1;
	}
	printf("batch_bench: %s, backend %s, %d thread%s, %d tokens per "
	       "client, %s\n", model, backend, threads, threads > 1 ? "s" : "",
	       tokens, nobatch ? "one at a time (INFERD_NO_BATCH)" : "batched");
	printf("%8s %10s %12s %14s %10s\n", "CLIENTS", "WALL_S", "GEN_TOK/S",
	       "MEDIAN_TTFT_MS", "PROMPT_TOK");
	static Job jobs[MAXC];
	pthread_t tids[MAXC];
	for (const char *p = clist; *p;) {
		int n = atoi(p);
		if (n < 1 || n > MAXC)
			return 2;
		double t0 = now();
		for (int i = 0; i < n; i++) {
			jobs[i] = (Job){ .idx = i, .tokens = tokens,
					 .prompt = long_prompts[i] };
			pthread_create(&tids[i], NULL, client, &jobs[i]);
		}
		for (int i = 0; i < n; i++)
			pthread_join(tids[i], NULL);
		double wall = now() - t0;
		long total = 0;
		double tt[MAXC];
		for (int i = 0; i < n; i++) {
			if (jobs[i].rc < 0 || jobs[i].n != tokens) {
				fprintf(stderr, "batch_bench: client %d: %s "
					"(%d tokens)\n", i,
					infer_strerror(jobs[i].rc), jobs[i].n);
				return 1;
			}
			total += jobs[i].n;
			tt[i] = jobs[i].ttft;
		}
		for (int i = 1; i < n; i++) /* insertion sort for the median */
			for (int k = i; k > 0 && tt[k] < tt[k - 1]; k--) {
				double x = tt[k];
				tt[k] = tt[k - 1];
				tt[k - 1] = x;
			}
		printf("%8d %10.2f %12.1f %14.1f %10d\n", n, wall,
		       total / wall, tt[n / 2] * 1e3, jobs[0].n_prompt);
		fflush(stdout);
		p = strchr(p, ',');
		if (!p)
			break;
		p++;
	}
	infer_close(c);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	return system(cmd) != 0;
}
