/*
 * json.h - a small, strict JSON (RFC 8259) reader for the files a model
 * directory holds: config.json, tokenizer.json, tokenizer_config.json,
 * generation_config.json, model.safetensors.index.json and the safetensors
 * header.
 *
 * The whole text is parsed into a read-only tree that lives in one arena
 * owned by the json_doc; every value pointer stays valid until json_free().
 * Input is untrusted: nesting depth and sizes are capped, strings are checked
 * to be valid UTF-8 once unescaped, and every error names the byte offset.
 *
 * Object members keep file order; duplicate keys are kept too and json_get()
 * returns the first (RFC 8259 leaves this to the reader).
 */
#ifndef INFERD_JSON_H
#define INFERD_JSON_H

#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 128 /* deepest nesting accepted (arrays + objects) */

typedef enum {
	JSON_NULL,
	JSON_FALSE,
	JSON_TRUE,
	JSON_NUMBER,
	JSON_STRING,
	JSON_ARRAY,
	JSON_OBJECT,
} json_type;

typedef struct json_value json_value;
typedef struct json_doc json_doc;

struct json_value {
	json_type type; /* which member of u is live */
	union {
		double num; /* JSON_NUMBER */
		struct {
			const char *s; /* NUL-terminated UTF-8; may hold inner NULs */
			size_t len;    /* bytes, without the terminator */
		} str;             /* JSON_STRING */
		struct {
			json_value **items; /* n values */
			size_t n;
		} arr; /* JSON_ARRAY */
		struct {
			json_value **keys; /* n JSON_STRING values */
			json_value **vals; /* n values, vals[i] belongs to keys[i] */
			size_t n;
		} obj; /* JSON_OBJECT */
	} u;
};

/* Parse len bytes of text. Returns NULL on error with a message in err
 * (at most errlen bytes, always terminated). The caller owns the result and
 * frees it with json_free(). text need not be NUL-terminated. */
json_doc *json_parse(const char *text, size_t len, char *err, size_t errlen);

/* Read and parse a whole file (max_bytes caps its size; 0 means 256 MiB). */
json_doc *json_parse_file(const char *path, size_t max_bytes, char *err,
			  size_t errlen);

void json_free(json_doc *doc);

/* The top-level value; never NULL for a parsed document. */
const json_value *json_root(const json_doc *doc);

/* Member of an object by key (first match); NULL when v is not an object or
 * has no such key. */
const json_value *json_get(const json_value *v, const char *key);

/* Element i of an array; NULL when v is not an array or i is out of range. */
const json_value *json_at(const json_value *v, size_t i);

/* Number of array elements or object members; 0 for anything else. */
size_t json_count(const json_value *v);

/* Typed accessors: return the value, or def when v is NULL or of another
 * type. json_str returns def (may be NULL) for non-strings. */
double json_num(const json_value *v, double def);
int json_bool(const json_value *v, int def);
const char *json_str(const json_value *v, const char *def);

/* 1 when v is a number holding an exact integer in [lo, hi], storing it. */
int json_int(const json_value *v, int64_t lo, int64_t hi, int64_t *out);

/* Nonzero when v is present and not JSON null. */
int json_present(const json_value *v);

#endif
