/*
 * check_chat.c - chat templates: family detection from real template texts
 * and rendering byte for byte as Python jinja2 renders those templates
 * (tests/data/chat/vectors.json, from contrib/gen_chat_vectors.py with
 * Hugging Face's jinja settings).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat.h"
#include "json.h"
#include "testutil.h"

static json_doc *vectors(void)
{
	char err[256];
	json_doc *d = json_parse_file(test_data("chat/vectors.json"), 0, err,
				      sizeof err);
	ck_assert_msg(d, "%s", err);
	return d;
}

static const char *tmpl_field(const json_value *root, int i, const char *k)
{
	return json_str(json_get(json_at(json_get(root, "templates"), i), k),
			NULL);
}

/* Every jinja2 rendering in the vectors, reproduced exactly. */
START_TEST(vectors_render)
{
	json_doc *d = vectors();
	const json_value *root = json_root(d);
	const json_value *cases = json_get(root, "cases");
	ck_assert_uint_ge(json_count(cases), 60);
	int checked = 0;
	for (size_t c = 0; c < json_count(cases); c++) {
		const json_value *cs = json_at(cases, c);
		int64_t ti;
		ck_assert(json_int(json_get(cs, "template"), 0, 100, &ti));
		const char *name = tmpl_field(root, (int)ti, "name");
		const char *text = tmpl_field(root, (int)ti, "template");
		char err[256];
		ChatTemplate t;
		ck_assert_msg(chat_template_detect(text,
						   tmpl_field(root, (int)ti, "bos"),
						   tmpl_field(root, (int)ti, "eos"),
						   &t, err, sizeof err) == 0,
			      "%s: %s", name, err);
		ck_assert_str_eq(chat_family_name(t.family),
				 tmpl_field(root, (int)ti, "family"));
		const json_value *msgs = json_get(cs, "messages");
		ChatMessage m[16];
		int n = (int)json_count(msgs);
		ck_assert_int_le(n, 16);
		for (int i = 0; i < n; i++) {
			m[i].role = json_str(json_get(json_at(msgs, i), "role"), NULL);
			m[i].content = json_str(json_get(json_at(msgs, i), "content"), NULL);
		}
		const json_value *want = json_get(cs, "expected");
		size_t len = 0;
		char *got = chat_render(&t, m, n,
					json_bool(json_get(cs, "add_generation_prompt"), 0),
					json_str(json_get(cs, "date_string"), NULL),
					&len, err, sizeof err);
		ck_assert_msg(got, "%s case %zu: %s", name, c, err);
		ck_assert_msg(len == want->u.str.len &&
				      memcmp(got, want->u.str.s, len) == 0,
			      "%s case %zu:\n got [%s]\nwant [%s]", name, c, got,
			      want->u.str.s);
		free(got);
		checked++;
	}
	ck_assert_int_eq(checked, (int)json_count(cases));
	json_free(d);
}
END_TEST

/* The facts about each real template that callers rely on. */
START_TEST(detect_real_templates)
{
	json_doc *d = vectors();
	const json_value *root = json_root(d);
	char err[256];
	struct {
		const char *name;
		int emits_bos;
		const char *eot;
		const char *default_system;
	} want[] = {
		{"HuggingFaceTB/SmolLM2-135M-Instruct (GGUF)", 0, "<|im_end|>",
		 "You are a helpful AI assistant named SmolLM, trained by Hugging Face"},
		{"teknium/OpenHermes-2.5-Mistral-7B", 0, "<|im_end|>", ""},
		{"meta-llama/Llama-2-7b-chat-hf", 1, "</s>", ""},
		{"meta-llama/Meta-Llama-3-8B-Instruct", 1, "<|eot_id|>", ""},
		{"meta-llama/Llama-3.2-1B-Instruct", 1, "<|eot_id|>", ""},
		{"mistralai/Mistral-7B-Instruct-v0.1", 1, "</s>", ""},
		{"mistralai/Mistral-Large-Instruct-2407 (v3)", 1, "</s>", ""},
		{"mistralai/Mistral-Nemo-Instruct-2407 (v3-tekken)", 1, "</s>", ""},
		{"HuggingFaceH4/zephyr-7b-beta", 0, "</s>", ""},
		{"google/gemma-7b-it", 1, "<end_of_turn>", ""},
		{"microsoft/Phi-3.5-mini-instruct", 0, "<|end|>", ""},
	};
	size_t nt = json_count(json_get(root, "templates"));
	for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
		size_t i;
		for (i = 0; i < nt; i++)
			if (!strcmp(tmpl_field(root, (int)i, "name"), want[k].name))
				break;
		ck_assert_msg(i < nt, "%s not in vectors", want[k].name);
		ChatTemplate t;
		ck_assert_msg(chat_template_detect(tmpl_field(root, (int)i, "template"),
						   tmpl_field(root, (int)i, "bos"),
						   tmpl_field(root, (int)i, "eos"),
						   &t, err, sizeof err) == 0,
			      "%s", err);
		ck_assert_msg(t.emits_bos == want[k].emits_bos, "%s", want[k].name);
		ck_assert_str_eq(chat_end_of_turn(&t), want[k].eot);
		ck_assert_str_eq(t.default_system, want[k].default_system);
		ck_assert_int_eq(chat_add_bos(&t, 1), !want[k].emits_bos);
		ck_assert_int_eq(chat_add_bos(&t, 0), 0);
		/* Variants within a family. */
		if (strstr(want[k].name, "Llama-3.2"))
			ck_assert(t.llama3_dated && t.llama3_today);
		if (strstr(want[k].name, "Meta-Llama-3-8B"))
			ck_assert(!t.llama3_dated);
		if (strstr(want[k].name, "(v3)"))
			ck_assert_int_eq(t.mistral_v3, 1);
		if (strstr(want[k].name, "tekken"))
			ck_assert_int_eq(t.mistral_v3, 2);
		if (strstr(want[k].name, "v0.1"))
			ck_assert(t.mistral_eos_space && !t.mistral_v3);
	}
	json_free(d);
}
END_TEST

START_TEST(unknown_template)
{
	char err[256];
	ChatTemplate t;
	/* Vicuna: no template of ours looks like it. */
	const char *vicuna =
		"{%- for message in messages %}{%- if message['role'] == 'system' -%}"
		"{{- '' + message['content'] + '\\n\\n' -}}{%- else -%}{%- if "
		"message['role'] == 'user' -%}{{-'USER: ' + message['content'] + "
		"'\\n'-}}{%- else -%}{{-'ASSISTANT: ' + message['content'] + "
		"'</s>\\n' -}}{%- endif -%}{%- endif -%}{%- endfor -%}{%- if "
		"add_generation_prompt -%}{{-'ASSISTANT:'-}}{%- endif -%}";
	err[0] = 0;
	ck_assert_int_eq(chat_template_detect(vicuna, "<s>", "</s>", &t, err,
					      sizeof err), -1);
	ck_assert_msg(strstr(err, "unknown chat template") &&
			      strstr(err, "--chat-template"), "%s", err);
	ck_assert_int_eq(chat_template_detect(NULL, "", "", &t, err, sizeof err), -1);
	ck_assert_msg(strstr(err, "no chat template"), "%s", err);
	ck_assert_int_eq(chat_template_named("vicuna", "", "", &t, err, sizeof err), -1);
	ck_assert_msg(strstr(err, "vicuna") && strstr(err, "chatml"), "%s", err);
}
END_TEST

/* Named families render like their reference templates in the vectors. */
START_TEST(named_families)
{
	char err[256];
	ChatTemplate t;
	ChatMessage m[] = {{"system", "S"}, {"user", "Hi"}};
	struct { const char *name, *want; } k[] = {
		{"chatml", "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"},
		{"llama2", "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nHi [/INST]"},
		{"llama3", "<s><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		/* Mistral and Gemma reject system messages; we fold it in. */
		{"mistral", "<s>[INST] S\n\nHi [/INST]"},
		{"gemma", "<s><start_of_turn>user\nS\n\nHi<end_of_turn>\n<start_of_turn>model\n"},
		{"zephyr", "<|system|>\nS</s>\n<|user|>\nHi</s>\n<|assistant|>\n"},
		{"phi3", "<|system|>\nS<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"},
	};
	for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
		ck_assert_msg(chat_template_named(k[i].name, "<s>", "</s>", &t,
						  err, sizeof err) == 0, "%s", err);
		char *s = chat_render(&t, m, 2, 1, NULL, NULL, err, sizeof err);
		ck_assert_msg(s, "%s", err);
		ck_assert_str_eq(s, k[i].want);
		free(s);
	}
}
END_TEST

START_TEST(render_errors)
{
	char err[256];
	ChatTemplate t;
	ck_assert_int_eq(chat_template_named("llama2", "<s>", "</s>", &t, err,
					     sizeof err), 0);
	ChatMessage twice[] = {{"user", "a"}, {"user", "b"}};
	ck_assert_ptr_null(chat_render(&t, twice, 2, 1, NULL, NULL, err, sizeof err));
	ck_assert_msg(strstr(err, "alternate"), "%s", err);
	ChatMessage odd[] = {{"tool", "x"}};
	ck_assert_ptr_null(chat_render(&t, odd, 1, 1, NULL, NULL, err, sizeof err));
	ck_assert_msg(strstr(err, "unknown role"), "%s", err);
	/* ChatML takes any order of roles, as its template does. */
	ck_assert_int_eq(chat_template_named("chatml", "", "", &t, err, sizeof err), 0);
	char *s = chat_render(&t, twice, 2, 0, NULL, NULL, err, sizeof err);
	ck_assert_str_eq(s, "<|im_start|>user\na<|im_end|>\n<|im_start|>user\nb<|im_end|>\n");
	free(s);
}
END_TEST

/* The tiny test models carry no chat template (neither their
 * tokenizer_config.json nor their GGUF): asking for theirs fails clearly,
 * naming one works with the tokenizer's bos/eos texts. */
START_TEST(tiny_models)
{
	struct { const char *path, *bos, *eos; } k[] = {
		{"models/tiny-llama2", "<s>", "</s>"},
		{"models/tiny-llama2-f16.gguf", "<s>", "</s>"},
		{"models/tiny-llama3", "<|endoftext|>", "<|endoftext|>"},
		{"models/tiny-llama3-q8_0.gguf", "<|endoftext|>", "<|endoftext|>"},
	};
	for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
		Model m;
		char err[512];
		ck_assert_msg(model_load(test_data(k[i].path), &m, err, sizeof err) == 0,
			      "%s", err);
		ck_assert_ptr_null(m.chat_template);
		ChatTemplate t;
		ck_assert_int_eq(chat_template_for_model(&m, NULL, &t, err, sizeof err), -1);
		ck_assert_msg(strstr(err, "has no chat template") &&
				      strstr(err, "--chat-template"), "%s", err);
		ck_assert_msg(chat_template_for_model(&m, "llama2", &t, err, sizeof err) == 0,
			      "%s", err);
		ck_assert_str_eq(t.bos, k[i].bos);
		ck_assert_str_eq(t.eos, k[i].eos);
		ck_assert_str_eq(chat_end_of_turn(&t), k[i].eos);
		/* A Jinja file named on the command line: SmolLM2's template. */
		json_doc *d = vectors();
		const char *smol = tmpl_field(json_root(d), 0, "template");
		char path[] = "/tmp/check_chat_XXXXXX.jinja";
		int fd = mkstemps(path, 6);
		ck_assert_int_ge(fd, 0);
		ck_assert(write(fd, smol, strlen(smol)) == (ssize_t)strlen(smol));
		close(fd);
		ck_assert_msg(chat_template_for_model(&m, path, &t, err, sizeof err) == 0,
			      "%s", err);
		unlink(path);
		ck_assert_int_eq(t.family, CHAT_CHATML);
		ck_assert_str_eq(t.default_system,
				 "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
		ck_assert_int_eq(chat_template_for_model(&m, "/nonexistent/x.jinja", &t,
							 err, sizeof err), -1);
		ck_assert_msg(strstr(err, "cannot open"), "%s", err);
		json_free(d);
		model_free(&m);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("chat");
	TCase *tc = tcase_create("chat");
	tcase_add_test(tc, vectors_render);
	tcase_add_test(tc, detect_real_templates);
	tcase_add_test(tc, unknown_template);
	tcase_add_test(tc, named_families);
	tcase_add_test(tc, render_errors);
	tcase_add_test(tc, tiny_models);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? EXIT_FAILURE : EXIT_SUCCESS;
}
