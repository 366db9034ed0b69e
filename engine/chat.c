/*
 * chat.c - chat template families: detection from Jinja text and rendering.
 * See chat.h; every rendering rule here mirrors a real template, cited at
 * its family's function, and is pinned by tests/data/chat/vectors.json.
 */
#include "chat.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Growable output buffer; a failed append sets oom and keeps going quietly
 * so render code stays linear. */
typedef struct Buf {
	char *p;    /* bytes, NUL-terminated when not oom */
	size_t len; /* bytes used */
	size_t cap; /* bytes allocated */
	int oom;    /* an allocation failed */
} Buf;

static void put(Buf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (n > SIZE_MAX - b->len - 1) {
		b->oom = 1;
		return;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1) {
			if (cap > SIZE_MAX / 2) {
				b->oom = 1;
				return;
			}
			cap *= 2;
		}
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

static void puts_(Buf *b, const char *s) { put(b, s, strlen(s)); }

/* Python str.isspace() code points, which str.strip() and Jinja's trim
 * remove: \t-\r, \x1c-\x1f, space, U+0085, U+00A0, U+1680,
 * U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000. */
static int is_py_space_cp(uint32_t c)
{
	return (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x20) ||
	       c == 0x85 || c == 0xa0 || c == 0x1680 ||
	       (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
	       c == 0x202f || c == 0x205f || c == 0x3000;
}

/* Byte length of the space at s[i..n) (0 if none there). */
static size_t space_at(const unsigned char *s, size_t i, size_t n)
{
	uint32_t c = s[i];
	if (c < 0x80)
		return is_py_space_cp(c) ? 1 : 0;
	if ((c & 0xe0) == 0xc0 && i + 1 < n && (s[i + 1] & 0xc0) == 0x80)
		return is_py_space_cp(((c & 0x1f) << 6) | (s[i + 1] & 0x3f)) ? 2 : 0;
	if ((c & 0xf0) == 0xe0 && i + 2 < n && (s[i + 1] & 0xc0) == 0x80 &&
	    (s[i + 2] & 0xc0) == 0x80)
		return is_py_space_cp(((c & 0x0f) << 12) |
				      ((uint32_t)(s[i + 1] & 0x3f) << 6) |
				      (s[i + 2] & 0x3f)) ? 3 : 0;
	return 0;
}

/* Byte length of the space ending at s[..n) (0 if none). */
static size_t space_before(const unsigned char *s, size_t start, size_t n)
{
	for (size_t k = 1; k <= 3 && k <= n - start; k++)
		if (space_at(s, n - k, n) == k)
			return k;
	return 0;
}

static void put_stripped(Buf *b, const char *text)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t n = strlen(text), i = 0, k;
	while (i < n && (k = space_at(s, i, n)) > 0)
		i += k;
	while (n > i && (k = space_before(s, i, n)) > 0)
		n -= k;
	put(b, text + i, n - i);
}

const char *chat_family_name(chat_family f)
{
	switch (f) {
	case CHAT_CHATML: return "chatml";
	case CHAT_LLAMA2: return "llama2";
	case CHAT_LLAMA3: return "llama3";
	case CHAT_MISTRAL: return "mistral";
	case CHAT_ZEPHYR: return "zephyr";
	case CHAT_GEMMA: return "gemma";
	case CHAT_PHI3: return "phi3";
	default: return "none";
	}
}

#define FAMILIES "chatml, llama2, llama3, mistral, zephyr, gemma, phi3"

static void set_tokens(ChatTemplate *t, const char *bos, const char *eos)
{
	snprintf(t->bos, sizeof t->bos, "%s", bos ? bos : "");
	snprintf(t->eos, sizeof t->eos, "%s", eos ? eos : "");
}

/* The default system prompt a ChatML template injects when the
 * conversation has none: the string literal right after
 * "<|im_start|>system" + newline, up to "<|im_end|>" (SmolLM2, Qwen2:
 * {% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>
 * system\nYou are ...<|im_end|>\n' }}). The newline may be a real one or a
 * Jinja escape; the literal is unescaped as Jinja does. Only literals count:
 * "<|im_start|>system\n' + message..." is not a default. */
static void chatml_default_system(const char *s, char *out, size_t cap)
{
	out[0] = 0;
	const char *key = "<|im_start|>system";
	for (const char *p = strstr(s, key); p; p = strstr(p + 1, key)) {
		const char *q = p + strlen(key);
		if (*q == '\n')
			q++;
		else if (q[0] == '\\' && q[1] == 'n')
			q += 2;
		else
			continue;
		const char *end = strstr(q, "<|im_end|>");
		if (!end)
			return;
		/* Unescape; give up on anything that is not a plain literal. */
		size_t o = 0;
		int ok = 1;
		for (const char *c = q; c < end && ok; c++) {
			char ch = *c;
			if (ch == '\'' || ch == '"' || ch == '{' || ch == '}')
				ok = 0;
			else if (ch == '\\') {
				c++;
				if (c >= end)
					ok = 0;
				else if (*c == 'n')
					ch = '\n';
				else if (*c == 't')
					ch = '\t';
				else if (*c == '\\' || *c == '\'' || *c == '"')
					ch = *c;
				else
					ok = 0;
			}
			if (ok && o + 1 < cap)
				out[o++] = ch;
			else
				ok = 0;
		}
		if (ok && o > 0) {
			out[o] = 0;
			return;
		}
		out[0] = 0;
	}
}

int chat_template_detect(const char *s, const char *bos, const char *eos,
			 ChatTemplate *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof *t);
	set_tokens(t, bos, eos);
	if (!s || !*s) {
		snprintf(err, errlen, "no chat template");
		return -1;
	}
	t->emits_bos = strstr(s, "bos_token") != NULL;
	if (strstr(s, "<|im_start|>")) {
		t->family = CHAT_CHATML;
		chatml_default_system(s, t->default_system,
				      sizeof t->default_system);
	} else if (strstr(s, "<|start_header_id|>")) {
		t->family = CHAT_LLAMA3;
		t->llama3_dated = strstr(s, "Cutting Knowledge Date") != NULL;
		t->llama3_today = strstr(s, "strftime_now") != NULL;
	} else if (strstr(s, "<start_of_turn>")) {
		t->family = CHAT_GEMMA;
	} else if (strstr(s, "[INST]") && strstr(s, "<<SYS>>")) {
		t->family = CHAT_LLAMA2;
	} else if (strstr(s, "[INST]")) {
		t->family = CHAT_MISTRAL;
		t->mistral_eos_space = strstr(s, "eos_token + ' '") != NULL;
		if (strstr(s, "\"[INST]\" +") || strstr(s, "'[INST]' +"))
			t->mistral_v3 = 2;
		else if (strstr(s, "+ \"[/INST]\"") || strstr(s, "+ '[/INST]'"))
			t->mistral_v3 = 1;
	} else if ((strstr(s, "<|user|>") || strstr(s, "'<|' + message['role'] + '|>'")) &&
		   strstr(s, "<|end|>")) {
		t->family = CHAT_PHI3;
		if (!strstr(s, "system") && !strstr(s, "message['role'] + '|>'"))
			t->phi3_system = 0;
		else if (strstr(s, "'system' and message['content']"))
			t->phi3_system = 2;
		else
			t->phi3_system = 1;
		t->phi3_asst_after_user =
			strstr(s, "'<|end|>' + '\\n' + '<|assistant|>'") ||
			strstr(s, "'<|end|>' + '\n' + '<|assistant|>'");
		t->phi3_final_eos = strstr(s, "{% else %}{{ eos_token }}") != NULL;
	} else if (strstr(s, "<|user|>")) {
		t->family = CHAT_ZEPHYR;
	} else {
		snprintf(err, errlen,
			 "unknown chat template (not one of " FAMILIES
			 "); name one with --chat-template NAME");
		return -1;
	}
	return 0;
}

int chat_template_named(const char *name, const char *bos, const char *eos,
			ChatTemplate *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof *t);
	set_tokens(t, bos, eos);
	/* Each name renders as its family's reference template: OpenHermes
	 * ChatML, Llama-2-chat, Meta-Llama-3-Instruct, Mixtral-Instruct,
	 * zephyr-7b-beta, gemma-7b-it, Phi-3.5-mini. */
	if (!strcmp(name, "chatml")) {
		t->family = CHAT_CHATML;
	} else if (!strcmp(name, "llama2")) {
		t->family = CHAT_LLAMA2;
		t->emits_bos = 1;
	} else if (!strcmp(name, "llama3")) {
		t->family = CHAT_LLAMA3;
		t->emits_bos = 1;
	} else if (!strcmp(name, "mistral")) {
		t->family = CHAT_MISTRAL;
		t->emits_bos = 1;
	} else if (!strcmp(name, "zephyr")) {
		t->family = CHAT_ZEPHYR;
	} else if (!strcmp(name, "gemma")) {
		t->family = CHAT_GEMMA;
		t->emits_bos = 1;
	} else if (!strcmp(name, "phi3")) {
		t->family = CHAT_PHI3;
		t->phi3_system = 2;
		t->phi3_final_eos = 1;
	} else {
		snprintf(err, errlen,
			 "unknown chat template name '%s' (known: " FAMILIES ")",
			 name);
		return -1;
	}
	return 0;
}

const char *chat_end_of_turn(const ChatTemplate *t)
{
	switch (t->family) {
	case CHAT_CHATML: return "<|im_end|>";
	case CHAT_LLAMA3: return "<|eot_id|>";
	case CHAT_GEMMA: return "<end_of_turn>";
	case CHAT_PHI3: return "<|end|>";
	default: return t->eos; /* [INST] models and Zephyr end with eos */
	}
}

int chat_add_bos(const ChatTemplate *t, int tokenizer_adds_bos)
{
	return !t->emits_bos && tokenizer_adds_bos;
}

static int role_is(const ChatMessage *m, const char *r)
{
	return m->role && !strcmp(m->role, r);
}

/* ChatML (SmolLM2, Qwen2, OpenHermes):
 *   [<|im_start|>system\nDEFAULT<|im_end|>\n  when first message isn't system]
 *   <|im_start|>ROLE\nCONTENT<|im_end|>\n ...  [<|im_start|>assistant\n] */
static void render_chatml(Buf *b, const ChatTemplate *t, const ChatMessage *m,
			  int n, int agp)
{
	for (int i = 0; i < n; i++) {
		if (i == 0 && t->default_system[0] && !role_is(&m[0], "system")) {
			puts_(b, "<|im_start|>system\n");
			puts_(b, t->default_system);
			puts_(b, "<|im_end|>\n");
		}
		puts_(b, "<|im_start|>");
		puts_(b, m[i].role);
		puts_(b, "\n");
		puts_(b, m[i].content);
		puts_(b, "<|im_end|>\n");
	}
	if (agp)
		puts_(b, "<|im_start|>assistant\n");
}

/* Llama 3 Instruct: BOS, then <|start_header_id|>ROLE<|end_header_id|>\n\n
 * trim(CONTENT)<|eot_id|> per message. Llama 3.1+ (dated) always opens
 * with a system header holding "Cutting Knowledge Date: December 2023\n
 * Today Date: DATE\n\n" and the trimmed system message, if any. */
static void render_llama3(Buf *b, const ChatTemplate *t, const ChatMessage *m,
			  int n, int agp, const char *date)
{
	int i = 0;
	if (t->llama3_dated) {
		if (t->emits_bos)
			puts_(b, t->bos);
		puts_(b, "<|start_header_id|>system<|end_header_id|>\n\n");
		puts_(b, "Cutting Knowledge Date: December 2023\nToday Date: ");
		puts_(b, date);
		puts_(b, "\n\n");
		if (n > 0 && role_is(&m[0], "system")) {
			put_stripped(b, m[0].content);
			i = 1;
		}
		puts_(b, "<|eot_id|>");
	}
	for (; i < n; i++) {
		if (i == 0 && t->emits_bos && !t->llama3_dated)
			puts_(b, t->bos);
		puts_(b, "<|start_header_id|>");
		puts_(b, m[i].role);
		puts_(b, "<|end_header_id|>\n\n");
		put_stripped(b, m[i].content);
		puts_(b, "<|eot_id|>");
	}
	if (agp)
		puts_(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* The [INST] and Gemma templates insist on user/assistant/user/...
 * after the optional leading system message. */
static int check_alternation(const ChatMessage *m, int n, char *err,
			     size_t errlen)
{
	for (int i = 0; i < n; i++) {
		int want_user = i % 2 == 0;
		if (role_is(&m[i], "user") != want_user ||
		    (!want_user && !role_is(&m[i], "assistant"))) {
			snprintf(err, errlen,
				 "conversation roles must alternate "
				 "user/assistant/user/... after an optional "
				 "system message (message %d is '%s')",
				 i, m[i].role);
			return -1;
		}
	}
	return 0;
}

/* Llama 2 chat: <s>[INST] <<SYS>>\nSYSTEM\n<</SYS>>\n\nUSER [/INST] REPLY </s>
 * with content.strip() applied to user (system block included) and reply
 * text; BOS text before every [INST]. */
static void render_llama2(Buf *b, const ChatTemplate *t, const ChatMessage *m,
			  int n, const char *sys)
{
	for (int i = 0; i < n; i++) {
		if (role_is(&m[i], "user")) {
			if (t->emits_bos)
				puts_(b, t->bos);
			puts_(b, "[INST] ");
			if (i == 0 && sys) {
				Buf c = {0};
				puts_(&c, "<<SYS>>\n");
				puts_(&c, sys);
				puts_(&c, "\n<</SYS>>\n\n");
				puts_(&c, m[i].content);
				if (c.oom)
					b->oom = 1;
				else
					put_stripped(b, c.p);
				free(c.p);
			} else {
				put_stripped(b, m[i].content);
			}
			puts_(b, " [/INST]");
		} else {
			puts_(b, " ");
			put_stripped(b, m[i].content);
			puts_(b, " ");
			puts_(b, t->eos);
		}
	}
}

/* Mistral/Mixtral instruct v0.1/v0.2: <s>[INST] USER [/INST]REPLY</s>[INST]
 * ... (v0.1 writes a space after each </s>), system text folded into the
 * first user message. v3: [INST] USER[/INST] trim(REPLY)</s>, the system
 * text in front of the last message when it is the user's; v3-tekken:
 * [INST]USER[/INST]REPLY</s>, likewise. */
static void render_mistral(Buf *b, const ChatTemplate *t, const ChatMessage *m,
			   int n, const char *sys)
{
	if (t->emits_bos)
		puts_(b, t->bos);
	for (int i = 0; i < n; i++) {
		if (role_is(&m[i], "user")) {
			puts_(b, t->mistral_v3 == 2 ? "[INST]" : "[INST] ");
			int fold = t->mistral_v3 ? i == n - 1 : i == 0;
			if (fold && sys) {
				puts_(b, sys);
				puts_(b, "\n\n");
			}
			puts_(b, m[i].content);
			puts_(b, t->mistral_v3 ? "[/INST]" : " [/INST]");
		} else if (t->mistral_v3 == 1) {
			puts_(b, " ");
			put_stripped(b, m[i].content);
			puts_(b, t->eos);
		} else {
			puts_(b, m[i].content);
			puts_(b, t->eos);
			if (t->mistral_eos_space)
				puts_(b, " ");
		}
	}
}

/* Gemma: <start_of_turn>user\ntrim(USER)<end_of_turn>\n<start_of_turn>model\n
 * trim(REPLY)<end_of_turn>\n ... [<start_of_turn>model\n]. */
static void render_gemma(Buf *b, const ChatTemplate *t, const ChatMessage *m,
			 int n, int agp, const char *sys)
{
	if (t->emits_bos)
		puts_(b, t->bos);
	for (int i = 0; i < n; i++) {
		puts_(b, "<start_of_turn>");
		puts_(b, role_is(&m[i], "assistant") ? "model" : m[i].role);
		puts_(b, "\n");
		if (i == 0 && sys) {
			puts_(b, sys);
			puts_(b, "\n\n");
		}
		put_stripped(b, m[i].content);
		puts_(b, "<end_of_turn>\n");
	}
	if (agp)
		puts_(b, "<start_of_turn>model\n");
}

/* Zephyr (rendered with trim_blocks): <|ROLE|>\nCONTENT</s>\n per message,
 * then <|assistant|>\n. */
static void render_zephyr(Buf *b, const ChatTemplate *t, const ChatMessage *m,
			  int n, int agp)
{
	for (int i = 0; i < n; i++) {
		puts_(b, "<|");
		puts_(b, m[i].role);
		puts_(b, "|>\n");
		puts_(b, m[i].content);
		puts_(b, t->eos);
		puts_(b, "\n");
	}
	if (agp && n > 0)
		puts_(b, "<|assistant|>\n");
}

/* Phi-3: <|ROLE|>\nCONTENT<|end|>\n per message, then <|assistant|>\n or
 * (Phi-3.5/small) eos without a generation prompt. Phi-3-mini drops system
 * messages and writes <|assistant|>\n right after each user turn. */
static void render_phi3(Buf *b, const ChatTemplate *t, const ChatMessage *m,
			int n, int agp)
{
	if (t->emits_bos)
		puts_(b, t->bos);
	for (int i = 0; i < n; i++) {
		int sys = role_is(&m[i], "system");
		if (sys && (t->phi3_system == 0 ||
			    (t->phi3_system == 2 && !m[i].content[0])))
			continue;
		if (t->phi3_asst_after_user && role_is(&m[i], "assistant")) {
			puts_(b, m[i].content);
			puts_(b, "<|end|>\n");
			continue;
		}
		puts_(b, "<|");
		puts_(b, m[i].role);
		puts_(b, "|>\n");
		puts_(b, m[i].content);
		puts_(b, "<|end|>\n");
		if (t->phi3_asst_after_user && role_is(&m[i], "user"))
			puts_(b, "<|assistant|>\n");
	}
	if (t->phi3_asst_after_user)
		return;
	if (agp)
		puts_(b, "<|assistant|>\n");
	else if (t->phi3_final_eos)
		puts_(b, t->eos);
}

char *chat_render(const ChatTemplate *t, const ChatMessage *m, int n,
		  int agp, const char *date, size_t *len, char *err,
		  size_t errlen)
{
	char today[32];
	if (n < 0 || (n > 0 && !m)) {
		snprintf(err, errlen, "bad message list");
		return NULL;
	}
	for (int i = 0; i < n; i++) {
		if (!m[i].role || !m[i].content) {
			snprintf(err, errlen, "message %d lacks role or content", i);
			return NULL;
		}
		if (strcmp(m[i].role, "system") && strcmp(m[i].role, "user") &&
		    strcmp(m[i].role, "assistant")) {
			snprintf(err, errlen,
				 "message %d: unknown role '%.32s' (system, "
				 "user or assistant)", i, m[i].role);
			return NULL;
		}
	}
	if (!date && !t->llama3_today)
		date = "26 Jul 2024";
	if (!date) {
		time_t now = time(NULL);
		struct tm tm;
		if (!localtime_r(&now, &tm) ||
		    !strftime(today, sizeof today, "%d %b %Y", &tm))
			snprintf(today, sizeof today, "26 Jul 2024");
		date = today;
	}
	/* Families that take the system message out of the loop. */
	const char *sys = NULL;
	const ChatMessage *rest = m;
	int nrest = n;
	if (t->family == CHAT_LLAMA2 || t->family == CHAT_MISTRAL ||
	    t->family == CHAT_GEMMA) {
		if (n > 0 && role_is(&m[0], "system")) {
			sys = m[0].content;
			rest = m + 1;
			nrest = n - 1;
		}
		if (check_alternation(rest, nrest, err, errlen))
			return NULL;
		/* The Mistral/Gemma fold needs a user message to go into. */
		if (sys && nrest == 0 && t->family != CHAT_LLAMA2 &&
		    !t->mistral_v3) {
			snprintf(err, errlen,
				 "%s templates need a user message after the "
				 "system message", chat_family_name(t->family));
			return NULL;
		}
	}
	Buf b = {0};
	puts_(&b, ""); /* an empty render is "", not NULL */
	switch (t->family) {
	case CHAT_CHATML: render_chatml(&b, t, m, n, agp); break;
	case CHAT_LLAMA3: render_llama3(&b, t, m, n, agp, date); break;
	case CHAT_LLAMA2: render_llama2(&b, t, rest, nrest, sys); break;
	case CHAT_MISTRAL: render_mistral(&b, t, rest, nrest, sys); break;
	case CHAT_GEMMA: render_gemma(&b, t, rest, nrest, agp, sys); break;
	case CHAT_ZEPHYR: render_zephyr(&b, t, m, n, agp); break;
	case CHAT_PHI3: render_phi3(&b, t, m, n, agp); break;
	default:
		snprintf(err, errlen, "no chat template");
		free(b.p);
		return NULL;
	}
	if (b.oom) {
		snprintf(err, errlen, "out of memory rendering the chat");
		free(b.p);
		return NULL;
	}
	if (len)
		*len = b.len;
	return b.p;
}
