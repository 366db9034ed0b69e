/*
 * main.c - inferd's command line: parse options into a DaemonConfig and
 * run the daemon (server.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
"  --exit-idle SEC          exit after SEC s without clients (default 0 = never;\n"
"                           for socket activation, which starts it again)\n"
"  --max-queue N            waiting requests per model (default 32)\n"
"  --max-batch N            generates run together per model (default 16;\n"
"                           1 = one at a time)\n"
"  --batch-tokens N         rows of one batched forward pass: decode tokens\n"
"                           plus prompt chunks (default 512)\n"
"  --max-conn-requests N    requests in flight per connection (default 16)\n"
"  --max-uid-requests N     requests in flight per user (default 64)\n"
"  --max-connections N      open connections at once (default 1024)\n"
"  --max-tokens N           default max_tokens of generate (default 256)\n"
"  --backend NAME           auto, cpu or cuda (default auto)\n"
"  --threads N              CPU threads per model (default all cores)\n"
"  --ctx N                  KV cache tokens per model (default min(model, 4096))\n"
"  --config PATH            options file (default $XDG_CONFIG_HOME/inferd/inferd.conf\n"
"                           if present, else /etc/inferd.conf if present)\n"
"  --no-config              read no options file\n"
"  --version, --help\n"
"The options file has 'name = value' lines, name a long option above\n"
"without '--'; command-line options override it (and --model given here\n"
"replaces its models). Also serves a socket passed by systemd (LISTEN_FDS).\n");
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

/* Strings from the config file: cfg points into them until exit. */
static char *owned[2 * INFERD_MAX_MODELS + 64];
static int n_owned;

static const char *keep(const char *s, size_t n)
{
	if (n_owned == (int)(sizeof owned / sizeof owned[0]))
		return NULL;
	char *d = strndup(s, n);
	if (d)
		owned[n_owned++] = d;
	return d;
}

/* Set option a (a long flag, "--socket") to v. Returns 0, or 2 after
 * printing why (a bad value or an unknown option). */
static int set_option(DaemonConfig *cfg, const char *a, const char *v)
{
	if (!strcmp(a, "--socket")) {
		cfg->socket_path = v;
	} else if (!strcmp(a, "--socket-mode")) {
		char *end;
		long m = strtol(v, &end, 8);
		if (*end || m < 0 || m > 0777) {
			fprintf(stderr, "inferd: --socket-mode wants octal like 0660\n");
			return 2;
		}
		cfg->socket_mode = (int)m;
	} else if (!strcmp(a, "--socket-group")) {
		cfg->socket_group = v;
	} else if (!strcmp(a, "--model")) {
		/* NAME=PATH, or PATH named by its file (no .gguf) */
		const char *eq = strchr(v, '=');
		const char *path = eq ? eq + 1 : v;
		if (eq == v || !*path) {
			fprintf(stderr, "inferd: --model wants NAME=PATH or PATH, not '%s'\n", v);
			return 2;
		}
		if (cfg->n_models == INFERD_MAX_MODELS) {
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
		if (!name) {
			fprintf(stderr, "inferd: out of memory\n");
			return 2;
		}
		cfg->models[cfg->n_models].name = name;
		cfg->models[cfg->n_models++].path = path;
	} else if (!strcmp(a, "--models-dir")) {
		cfg->models_dir = v;
	} else if (!strcmp(a, "--db")) {
		cfg->db_path = v;
	} else if (!strcmp(a, "--log-file")) {
		cfg->log_file = v;
	} else if (!strcmp(a, "--mem-budget")) {
		if (size_arg(v, &cfg->mem_budget) < 0) {
			fprintf(stderr, "inferd: --mem-budget wants a size like 8G\n");
			return 2;
		}
	} else if (!strcmp(a, "--keep-alive")) {
		if (num(a, v, -1, 365L * 86400, &cfg->keep_alive) < 0)
			return 2;
	} else if (!strcmp(a, "--shutdown-timeout")) {
		if (num(a, v, 0, 86400, &cfg->shutdown_timeout) < 0)
			return 2;
	} else if (!strcmp(a, "--exit-idle")) {
		if (num(a, v, 0, 365L * 86400, &cfg->exit_idle) < 0)
			return 2;
	} else if (!strcmp(a, "--max-batch")) {
		if (num(a, v, 1, DAEMON_MAX_BATCH, &cfg->max_batch) < 0)
			return 2;
	} else if (!strcmp(a, "--batch-tokens")) {
		if (num(a, v, 16, 65536, &cfg->batch_tokens) < 0)
			return 2;
	} else if (!strcmp(a, "--max-queue")) {
		if (num(a, v, 0, 100000, &cfg->max_queue) < 0)
			return 2;
	} else if (!strcmp(a, "--max-conn-requests")) {
		if (num(a, v, 1, 100000, &cfg->max_conn_requests) < 0)
			return 2;
	} else if (!strcmp(a, "--max-uid-requests")) {
		if (num(a, v, 1, 1000000, &cfg->max_uid_requests) < 0)
			return 2;
	} else if (!strcmp(a, "--max-connections")) {
		if (num(a, v, 1, 1000000, &cfg->max_connections) < 0)
			return 2;
	} else if (!strcmp(a, "--max-tokens")) {
		if (num(a, v, 1, PROTO_MAX_TOKENS, &cfg->max_tokens) < 0)
			return 2;
	} else if (!strcmp(a, "--backend")) {
		cfg->eng.backend = v;
	} else if (!strcmp(a, "--threads")) {
		if (num(a, v, 0, 1024, &cfg->eng.threads) < 0)
			return 2;
	} else if (!strcmp(a, "--ctx")) {
		if (num(a, v, 0, 1 << 20, &cfg->eng.ctx) < 0)
			return 2;
	} else {
		fprintf(stderr, "inferd: unknown option %s\n", a);
		return 2;
	}
	return 0;
}

/* The config file: "name = value" lines, name a long option without its
 * "--" (see contrib/inferd.conf.example), # comments, blank lines. A flag
 * without a value (log-prompts) takes true/false. */
static int read_config(DaemonConfig *cfg, const char *path, int must_exist)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		if (!must_exist && errno == ENOENT)
			return 0;
		fprintf(stderr, "inferd: config %s: %s\n", path, strerror(errno));
		return 2;
	}
	char line[8192];
	int ln = 0, rc = 0;
	while (rc == 0 && fgets(line, sizeof line, f)) {
		ln++;
		size_t n = strlen(line);
		if (n == sizeof line - 1 && line[n - 1] != '\n') {
			fprintf(stderr, "inferd: %s:%d: line too long\n", path, ln);
			rc = 2;
			break;
		}
		char *p = line + strspn(line, " \t");
		char *e = p + strlen(p);
		while (e > p && strchr(" \t\r\n", e[-1]))
			*--e = 0;
		if (!*p || *p == '#')
			continue;
		char *eq = strchr(p, '=');
		if (!eq) {
			fprintf(stderr, "inferd: %s:%d: want 'name = value', not '%s'\n",
				path, ln, p);
			rc = 2;
			break;
		}
		char *ke = eq;
		while (ke > p && strchr(" \t", ke[-1]))
			ke--;
		char *v = eq + 1 + strspn(eq + 1, " \t");
		char name[64];
		if (ke == p || snprintf(name, sizeof name, "--%.*s", (int)(ke - p), p) >=
		    (int)sizeof name) {
			fprintf(stderr, "inferd: %s:%d: bad option name\n", path, ln);
			rc = 2;
			break;
		}
		if (!strcmp(name, "--log-prompts")) {
			int t = !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1");
			if (!t && strcmp(v, "false") && strcmp(v, "no") && strcmp(v, "0")) {
				fprintf(stderr, "inferd: %s:%d: log-prompts wants true or false\n",
					path, ln);
				rc = 2;
			}
			cfg->log_prompts = t;
			continue;
		}
		if (!strcmp(name, "--config") || !strcmp(name, "--no-config") ||
		    !strcmp(name, "--help") || !strcmp(name, "--version")) {
			fprintf(stderr, "inferd: %s:%d: %s is for the command line\n",
				path, ln, name + 2);
			rc = 2;
			break;
		}
		const char *kv = keep(v, strlen(v));
		if (!kv) {
			fprintf(stderr, "inferd: %s: too many options\n", path);
			rc = 2;
			break;
		}
		rc = set_option(cfg, name, kv);
		if (rc)
			fprintf(stderr, "inferd: (at %s:%d)\n", path, ln);
	}
	fclose(f);
	return rc;
}

/* --config PATH, else $XDG_CONFIG_HOME/inferd/inferd.conf (~/.config),
 * else /etc/inferd.conf; none at all is fine. */
static int load_config(DaemonConfig *cfg, int argc, char **argv)
{
	const char *path = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--no-config"))
			return 0;
		if (!strcmp(argv[i], "--config") && i + 1 < argc)
			path = argv[i + 1];
	}
	if (path)
		return read_config(cfg, path, 1);
	char p[4096];
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	int n = -1;
	if (xdg && *xdg)
		n = snprintf(p, sizeof p, "%s/inferd/inferd.conf", xdg);
	else if (home && *home)
		n = snprintf(p, sizeof p, "%s/.config/inferd/inferd.conf", home);
	if (n > 0 && n < (int)sizeof p && access(p, F_OK) == 0)
		return read_config(cfg, p, 1);
	return read_config(cfg, "/etc/inferd.conf", 0);
}

int main(int argc, char **argv)
{
	DaemonConfig cfg;
	daemon_config_default(&cfg);
	for (int i = 1; i < argc; i++) { /* these need no config */
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		}
		if (!strcmp(argv[i], "--version")) {
			printf("inferd %s (protocol %d)\n", INFERD_VERSION, PROTO_VERSION);
			return 0;
		}
	}
	int rc = load_config(&cfg, argc, argv);
	int cfg_models = cfg.n_models, cli_models = 0;
	for (int i = 1; i < argc && rc == 0; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--log-prompts")) {
			cfg.log_prompts = 1;
		} else if (!strcmp(a, "--no-config")) {
			continue;
		} else if (!v) {
			fprintf(stderr, "inferd: unknown option or missing value: %s\n", a);
			usage(stderr);
			rc = 2;
		} else {
			if (!strcmp(a, "--model") && !cli_models++) {
				/* the command line's models replace the file's */
				for (int k = 0; k < cfg_models; k++)
					free((char *)cfg.models[k].name);
				cfg.n_models = 0;
			}
			if (strcmp(a, "--config"))
				rc = set_option(&cfg, a, v);
			i++;
		}
	}
	if (rc) {
		for (int i = 0; i < cfg.n_models; i++)
			free((char *)cfg.models[i].name);
		for (int i = 0; i < n_owned; i++)
			free(owned[i]);
		return rc;
	}
	char err[512];
	rc = daemon_run(&cfg, err, sizeof err);
	if (rc < 0)
		fprintf(stderr, "inferd: %s\n", err);
	for (int i = 0; i < cfg.n_models; i++)
		free((char *)cfg.models[i].name);
	for (int i = 0; i < n_owned; i++)
		free(owned[i]);
	return rc < 0 ? 1 : 0;
}
