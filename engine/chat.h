/*
 * chat.h - chat templates: turn a conversation (system/user/assistant
 * messages) into the prompt text a chat model was trained on.
 *
 * Models ship their template as Jinja source (GGUF tokenizer.chat_template,
 * tokenizer_config.json chat_template). We do not run Jinja: the template
 * text is recognised as one of a few families by distinctive substrings,
 * and each family is rendered by hand, byte for byte as Python jinja2
 * renders the real templates under Hugging Face's settings
 * (tests/data/chat/vectors.json, made by contrib/gen_chat_vectors.py, pins
 * this). Families and what identifies them:
 *
 *   chatml   "<|im_start|>"            SmolLM2, Qwen2, OpenHermes
 *   llama3   "<|start_header_id|>"     Llama 3 (3.1+ "Cutting Knowledge Date")
 *   gemma    "<start_of_turn>"         Gemma
 *   llama2   "[INST]" and "<<SYS>>"    Llama 2 chat
 *   mistral  "[INST]" without <<SYS>>  Mistral / Mixtral instruct
 *   phi3     "<|user|>" and "<|end|>"  Phi-3, Phi-3.5
 *   zephyr   "<|user|>"                Zephyr, TinyLlama chat
 *
 * Where the real template refuses a conversation (Mistral v0.1 and Gemma
 * raise on a system message) we render what those models' later templates
 * do instead: the system text goes in front of the first user message,
 * separated by a blank line. (Mistral v3 templates accept one and put it in
 * front of the last message, if that is the user's.)
 *
 * The rendered text contains special tokens as text (bos/eos included where
 * the template writes them), so it is encoded with parse_special = 1; BOS
 * is added by the encoder only when the template does not write it
 * (chat_add_bos()).
 */
#ifndef INFERD_CHAT_H
#define INFERD_CHAT_H

#include <stddef.h>

#include "model.h"

typedef enum {
	CHAT_NONE = 0,
	CHAT_CHATML,
	CHAT_LLAMA2,
	CHAT_LLAMA3,
	CHAT_MISTRAL,
	CHAT_ZEPHYR,
	CHAT_GEMMA,
	CHAT_PHI3,
} chat_family;

#define CHAT_TOKEN_MAX 64     /* longest bos/eos text kept */
#define CHAT_SYSTEM_MAX 2048  /* longest default system prompt kept */

typedef struct ChatTemplate {
	chat_family family;  /* how to render */
	int emits_bos;       /* the template writes bos_token itself */
	int llama3_dated;    /* Llama 3.1+: system header with knowledge date */
	int mistral_eos_space; /* Mistral v0.1: eos_token + ' ' after replies */
	int mistral_v3;      /* 1 v3 "[INST] x[/INST]", 2 v3-tekken "[INST]x[/INST]";
			      * both put the system text in the last message */
	int llama3_today;    /* dated template takes today's date (strftime_now) */
	int phi3_system;     /* 0 drop system, 1 keep, 2 keep when non-empty */
	int phi3_asst_after_user; /* Phi-3-mini: "<|assistant|>\n" after each user turn */
	int phi3_final_eos;  /* without a generation prompt, end with eos */
	char default_system[CHAT_SYSTEM_MAX]; /* injected when no system msg; "" none */
	char bos[CHAT_TOKEN_MAX]; /* bos_token text, e.g. "<s>" */
	char eos[CHAT_TOKEN_MAX]; /* eos_token text, e.g. "</s>" */
} ChatTemplate;

typedef struct ChatMessage {
	const char *role;    /* "system", "user" or "assistant" */
	const char *content; /* UTF-8 text */
} ChatMessage;

/* Recognise the family of Jinja template text. bos/eos: the tokenizer's
 * bos_token and eos_token texts (NULL = none). Returns 0, or -1 with a
 * message naming the families we know when the text matches none. */
int chat_template_detect(const char *jinja, const char *bos, const char *eos,
			 ChatTemplate *out, char *err, size_t errlen);

/* A family by name ("chatml", "llama2", "llama3", "mistral", "zephyr",
 * "gemma", "phi3"), rendered as that family's reference template does. */
int chat_template_named(const char *name, const char *bos, const char *eos,
			ChatTemplate *out, char *err, size_t errlen);

/* The template for a loaded model: name (NULL or "" = the model's own)
 * is a family name, or a path to a Jinja file; bos/eos texts come from the
 * model's tokenizer. Fails with a clear message when the model has no
 * template and none is named, or the template is unknown. */
int chat_template_for_model(const Model *m, const char *name, ChatTemplate *out,
			    char *err, size_t errlen);

const char *chat_family_name(chat_family f); /* "chatml", ... */

/* Render n messages; add_generation_prompt appends the assistant header.
 * date: "26 Jul 2024"-style date for Llama 3.1+ templates; NULL = what
 * the template does in transformers: today for templates that call
 * strftime_now (3.2, 3.3), "26 Jul 2024" for those that do not (3.1).
 * Returns a malloc'd NUL-terminated string (length in *len if non-NULL), or
 * NULL with a message (unknown role, roles not alternating where the
 * template requires it, out of memory). */
char *chat_render(const ChatTemplate *t, const ChatMessage *msgs, int n,
		  int add_generation_prompt, const char *date, size_t *len,
		  char *err, size_t errlen);

/* Text that closes an assistant turn (e.g. "<|im_end|>", "<|eot_id|>");
 * generation stops there. */
const char *chat_end_of_turn(const ChatTemplate *t);

/* Whether the encoder should add BOS: only when the template does not
 * write it and the tokenizer adds one (tokenizer_adds_bos). */
int chat_add_bos(const ChatTemplate *t, int tokenizer_adds_bos);

#endif
