/*
 * main.c - inferd's command line: parse options into a DaemonConfig and
 * run the daemon (server.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"

static void usage(FILE *f)
{
	fprintf(f,
"usage: inferd [options]\n"
"Local LLM inference daemon: serves models over a Unix socket.\n\n"
"  --socket PATH            socket (default $XDG_RUNTIME_DIR/inferd.sock)\n"
"  --socket-mode OCTAL      socket permissions (default 0600)\n"
"  --socket-group NAME      group of the socket (system daemon)\n"
"  --model [NAME=]PATH      a model (HF folder or GGUF file; NAME defaults\n"
"                           to the file name without .gguf); repeatable\n"
"  --models-dir DIR         every *.gguf and HF folder in DIR is a model\n"
"  --db PATH                request log (default $XDG_STATE_HOME/inferd/inferd.db)\n"
"  --log-prompts            store prompt text in the request log\n"
"  --log-file PATH          daemon messages (default stderr; SIGHUP reopens)\n"
"  --mem-budget SIZE        bytes of models loaded at once (e.g. 8G; 0 = no limit)\n"
"  --keep-alive SEC         unload a model idle this long (default 300; -1 never)\n"
"  --shutdown-timeout SEC   SIGTERM: wait this long for requests (default 30)\n"
"  --max-queue N            waiting requests per model (default 32)\n"
"  --max-batch N            generates run together per model (default 16;\n"
"                           1 = one at a time)\n"
"  --max-conn-requests N    requests in flight per connection (default 16)\n"
"  --max-uid-requests N     requests in flight per user (default 64)\n"
"  --max-connections N      open connections at once (default 1024)\n"
"  --max-tokens N           default max_tokens of generate (default 256)\n"
"  --backend NAME           auto, cpu or cuda (default auto)\n"
"  --threads N              CPU threads per model (default all cores)\n"
"  --ctx N                  KV cache tokens per model (default min(model, 4096))\n"
"  --version, --help\n"
"Also serves a socket passed by systemd (LISTEN_FDS).\n");
}

/* Integer option with range check. */
static int num(const char *opt, const char *s, long lo, long hi, int *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi) {
		fprintf(stderr, "inferd: %s wants an integer in %ld..%ld, not '%s'\n",
			opt, lo, hi, s);
		return -1;
	}
	*out = (int)v;
	return 0;
}

/* "8G", "512M", "123456" -> bytes. */
static int size_arg(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -1;
	double mul = 1;
	switch (*end) {
	case 'k': case 'K': mul = 1024.0; end++; break;
	case 'm': case 'M': mul = 1048576.0; end++; break;
	case 'g': case 'G': mul = 1073741824.0; end++; break;
	case 't': case 'T': mul = 1099511627776.0; end++; break;
	}
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || v * mul > 1.8e19)
		return -1;
	*out = (uint64_t)(v * mul);
	return 0;
}

int main(int argc, char **argv)
{
	DaemonConfig cfg;
	daemon_config_default(&cfg);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		int takes = 1;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--version")) {
			printf("inferd %s (protocol %d)\n", INFERD_VERSION, PROTO_VERSION);
			return 0;
		} else if (!strcmp(a, "--log-prompts")) {
			cfg.log_prompts = 1;
			takes = 0;
		} else if (!v) {
			fprintf(stderr, "inferd: unknown option or missing value: %s\n", a);
			usage(stderr);
			return 2;
		} else if (!strcmp(a, "--socket")) {
			cfg.socket_path = v;
		} else if (!strcmp(a, "--socket-mode")) {
			char *end;
			long m = strtol(v, &end, 8);
			if (*end || m < 0 || m > 0777) {
				fprintf(stderr, "inferd: --socket-mode wants octal like 0660\n");
				return 2;
			}
			cfg.socket_mode = (int)m;
		} else if (!strcmp(a, "--socket-group")) {
			cfg.socket_group = v;
		} else if (!strcmp(a, "--model")) {
			/* NAME=PATH, or PATH named by its file (no .gguf) */
			const char *eq = strchr(v, '=');
			const char *path = eq ? eq + 1 : v;
			if (eq == v || !*path) {
				fprintf(stderr, "inferd: --model wants NAME=PATH or PATH, not '%s'\n", v);
				return 2;
			}
			if (cfg.n_models == INFERD_MAX_MODELS) {
				fprintf(stderr, "inferd: at most %d --model\n", INFERD_MAX_MODELS);
				return 2;
			}
			char *name;
			if (eq) {
				name = strndup(v, (size_t)(eq - v));
			} else {
				const char *base = strrchr(path, '/');
				size_t n;
				base = base && base[1] ? base + 1 : path;
				n = strcspn(base, "/");
				if (n > 5 && !strncmp(base + n - 5, ".gguf", 5))
					n -= 5;
				name = strndup(base, n);
			}
			if (!name)
				return 1;
			cfg.models[cfg.n_models].name = name;
			cfg.models[cfg.n_models++].path = path;
		} else if (!strcmp(a, "--models-dir")) {
			cfg.models_dir = v;
		} else if (!strcmp(a, "--db")) {
			cfg.db_path = v;
		} else if (!strcmp(a, "--log-file")) {
			cfg.log_file = v;
		} else if (!strcmp(a, "--mem-budget")) {
			if (size_arg(v, &cfg.mem_budget) < 0) {
				fprintf(stderr, "inferd: --mem-budget wants a size like 8G\n");
				return 2;
			}
		} else if (!strcmp(a, "--keep-alive")) {
			if (num(a, v, -1, 365L * 86400, &cfg.keep_alive) < 0)
				return 2;
		} else if (!strcmp(a, "--shutdown-timeout")) {
			if (num(a, v, 0, 86400, &cfg.shutdown_timeout) < 0)
				return 2;
		} else if (!strcmp(a, "--max-batch")) {
			if (num(a, v, 1, DAEMON_MAX_BATCH, &cfg.max_batch) < 0)
				return 2;
		} else if (!strcmp(a, "--max-queue")) {
			if (num(a, v, 0, 100000, &cfg.max_queue) < 0)
				return 2;
		} else if (!strcmp(a, "--max-conn-requests")) {
			if (num(a, v, 1, 100000, &cfg.max_conn_requests) < 0)
				return 2;
		} else if (!strcmp(a, "--max-uid-requests")) {
			if (num(a, v, 1, 1000000, &cfg.max_uid_requests) < 0)
				return 2;
		} else if (!strcmp(a, "--max-connections")) {
			if (num(a, v, 1, 1000000, &cfg.max_connections) < 0)
				return 2;
		} else if (!strcmp(a, "--max-tokens")) {
			if (num(a, v, 1, PROTO_MAX_TOKENS, &cfg.max_tokens) < 0)
				return 2;
		} else if (!strcmp(a, "--backend")) {
			cfg.eng.backend = v;
		} else if (!strcmp(a, "--threads")) {
			if (num(a, v, 0, 1024, &cfg.eng.threads) < 0)
				return 2;
		} else if (!strcmp(a, "--ctx")) {
			if (num(a, v, 0, 1 << 20, &cfg.eng.ctx) < 0)
				return 2;
		} else {
			fprintf(stderr, "inferd: unknown option %s\n", a);
			usage(stderr);
			return 2;
		}
		i += takes;
	}
	char err[512];
	int rc = daemon_run(&cfg, err, sizeof err);
	if (rc < 0)
		fprintf(stderr, "inferd: %s\n", err);
	for (int i = 0; i < cfg.n_models; i++)
		free((char *)cfg.models[i].name);
	return rc < 0 ? 1 : 0;
}
