/*
 * chat_model.c - chat_template_for_model(): pick a loaded model's chat
 * template (its own, a named family or a Jinja file) with the bos/eos texts
 * of its tokenizer. Kept apart from chat.c so the template code links
 * without the tokenizer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "tokenizer.h"

/* Text of one special token, "" when the model has none. */
static void token_text(const Tokenizer *tok, int32_t id, char *out, size_t cap)
{
	char err[128];
	out[0] = 0;
	if (!tok || id < 0)
		return;
	size_t n = 0;
	char *s = tokenizer_decode(tok, &id, 1, &n, err, sizeof err);
	if (s && n < cap)
		memcpy(out, s, n + 1);
	free(s);
}

/* Read a Jinja file of at most 1 MiB. */
static char *read_small_file(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "chat template %s: cannot open", path);
		return NULL;
	}
	size_t cap = 1 << 20, n;
	char *s = malloc(cap + 1);
	if (!s) {
		fclose(f);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	n = fread(s, 1, cap + 1, f);
	int bad = ferror(f) || n > cap;
	fclose(f);
	if (bad) {
		free(s);
		snprintf(err, errlen, "chat template %s: unreadable or over 1 MiB",
			 path);
		return NULL;
	}
	s[n] = 0;
	return s;
}

int chat_template_for_model(const Model *m, const char *name, ChatTemplate *out,
			    char *err, size_t errlen)
{
	char bos[CHAT_TOKEN_MAX], eos[CHAT_TOKEN_MAX];
	token_text(m->tok, tokenizer_bos(m->tok), bos, sizeof bos);
	token_text(m->tok, tokenizer_eos(m->tok), eos, sizeof eos);
	if (name && *name) {
		size_t l = strlen(name);
		if (strchr(name, '/') || (l > 6 && !strcmp(name + l - 6, ".jinja"))) {
			char *text = read_small_file(name, err, errlen);
			if (!text)
				return -1;
			int rc = chat_template_detect(text, bos, eos, out, err,
						      errlen);
			free(text);
			return rc;
		}
		return chat_template_named(name, bos, eos, out, err, errlen);
	}
	if (!m->chat_template || !*m->chat_template) {
		snprintf(err, errlen,
			 "%s has no chat template; name one with "
			 "--chat-template NAME (chatml, llama2, llama3, mistral, "
			 "zephyr, gemma, phi3)", m->path ? m->path : "the model");
		return -1;
	}
	return chat_template_detect(m->chat_template, bos, eos, out, err, errlen);
}
