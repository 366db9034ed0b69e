/*
 * fuzz_chat.c - chat templates from arbitrary bytes. The input is split at
 * NUL bytes: part 0 is Jinja template text given to chat_template_detect()
 * (when it matches no family, a family is named by its first byte instead),
 * part 1 the bos/eos texts' source, the rest messages whose role is picked
 * by their first byte (system, user, assistant, or the rest of the bytes as
 * an unknown role). Invariant: chat_render() returns a NUL-terminated
 * string of the length it reports, or NULL with a message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "fuzzutil.h"

#define MAX_PARTS 40

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	char *buf = malloc(size + 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = 0;
	char *part[MAX_PARTS];
	int np = 0;
	for (char *p = buf; np < MAX_PARTS;) {
		part[np++] = p;
		char *z = memchr(p, 0, (size_t)(buf + size - p));
		if (!z || z == buf + size)
			break;
		p = z + 1;
	}
	const char *bos = np > 1 && part[1][0] ? part[1] : NULL;
	const char *eos = np > 1 && part[1][0] ? part[1] + strlen(part[1]) / 2 : NULL;
	static const char *const fam[] = {"chatml", "llama2", "llama3", "mistral",
					  "zephyr", "gemma", "phi3", "bogus"};
	ChatTemplate t;
	if (chat_template_detect(part[0], bos, eos, &t, err, sizeof err) != 0 &&
	    chat_template_named(fam[(uint8_t)part[0][0] & 7], bos, eos, &t, err,
				sizeof err) != 0) {
		free(buf);
		return 0;
	}
	ChatMessage msgs[MAX_PARTS];
	int nm = 0;
	static const char *const roles[] = {"system", "user", "assistant"};
	for (int i = 2; i < np; i++) {
		uint8_t r = (uint8_t)part[i][0];
		msgs[nm].role = r % 4 < 3 ? roles[r % 4] : part[i];
		msgs[nm].content = part[i][0] ? part[i] + 1 : part[i];
		nm++;
	}
	for (int gen = 0; gen < 2; gen++) {
		size_t len = 0;
		err[0] = 0;
		char *out = chat_render(&t, msgs, nm, gen,
					size & 1 ? "26 Jul 2024" : NULL, &len,
					err, sizeof err);
		if (out) {
			if (strlen(out) != len) /* the parts hold no NUL */
				abort();
			free(out);
		} else if (!err[0]) {
			abort();
		}
	}
	(void)chat_end_of_turn(&t);
	(void)chat_add_bos(&t, 1);
	free(buf);
	return 0;
}
