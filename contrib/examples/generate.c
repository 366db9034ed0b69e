/*
 * generate.c - the smallest useful libinfer program: stream a completion
 * from inferd to stdout. Built against an installed libinfer with
 * pkg-config (see Makefile here):
 *
 *   cc generate.c $(pkg-config --cflags --libs libinfer) -o generate
 *   ./generate [-s SOCKET] [-n MAX_TOKENS] [-t TEMP] MODEL PROMPT
 *
 * Temperature defaults to 0 (greedy) so runs are reproducible.
 */
#include <infer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Called for each piece of generated text: print it at once. */
static int on_token(void *ud, int32_t token, const char *text, size_t len)
{
	(void)ud;
	(void)token;
	fwrite(text, 1, len, stdout);
	fflush(stdout);
	return 0; /* nonzero would cancel */
}

int main(int argc, char **argv)
{
	const char *sock = NULL;
	int max_tokens = 32;
	float temp = 0;
	int opt;
	while ((opt = getopt(argc, argv, "s:n:t:")) != -1) {
		switch (opt) {
		case 's': sock = optarg; break;
		case 'n': max_tokens = atoi(optarg); break;
		case 't': temp = strtof(optarg, NULL); break;
		default: goto usage;
		}
	}
	if (argc - optind != 2)
		goto usage;

	char err[512];
	infer_client *c;
	if (infer_connect(&c, sock, err, sizeof err) < 0) {
		fprintf(stderr, "generate: %s\n", err);
		return 3;
	}
	infer_gen_params p;
	infer_gen_params_init(&p); /* every field: the daemon's default */
	p.model = argv[optind];
	p.prompt = argv[optind + 1];
	p.max_tokens = max_tokens;
	p.temperature = temp;
	p.ignore_eos = 1;

	infer_gen_result res;
	int rc = infer_generate(c, &p, on_token, NULL, &res);
	if (rc < 0) {
		fprintf(stderr, "\ngenerate: %s: %s\n", infer_strerror(rc),
			infer_errmsg(c));
		infer_close(c);
		return 1;
	}
	printf("\n");
	fprintf(stderr, "libinfer %s: %d prompt + %d generated tokens, finish %s, "
		"first token %.1f ms, %.1f tokens/s\n", infer_version(),
		res.prompt_tokens, res.gen_tokens, res.finish, res.ttft_ms, res.tok_s);
	infer_close(c);
	return 0;

usage:
	fprintf(stderr, "usage: generate [-s SOCKET] [-n MAX_TOKENS] [-t TEMP] MODEL PROMPT\n");
	return 2;
}
