/*
 * gguf.h - reader for GGUF v2/v3 files (llama.cpp's model format), mmapped
 * read-only and validated as untrusted input.
 *
 * (File format description: to be completed by the loader's author: header,
 * metadata key/value types, tensor infos, alignment, block layouts.)
 */
#ifndef INFERD_GGUF_H
#define INFERD_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

typedef struct gguf_file gguf_file;

/* Metadata value types, numbered as in the file. */
typedef enum {
	GGUF_T_UINT8 = 0,
	GGUF_T_INT8 = 1,
	GGUF_T_UINT16 = 2,
	GGUF_T_INT16 = 3,
	GGUF_T_UINT32 = 4,
	GGUF_T_INT32 = 5,
	GGUF_T_FLOAT32 = 6,
	GGUF_T_BOOL = 7,
	GGUF_T_STRING = 8,
	GGUF_T_ARRAY = 9,
	GGUF_T_UINT64 = 10,
	GGUF_T_INT64 = 11,
	GGUF_T_FLOAT64 = 12,
} gguf_type;

/* A string inside the mapping: not NUL-terminated. */
typedef struct gguf_str {
	const char *s; /* bytes in the mmap */
	uint64_t len;  /* length in bytes */
} gguf_str;

/* Open and validate path. Returns NULL with a message. */
gguf_file *gguf_open(const char *path, char *err, size_t errlen);
void gguf_close(gguf_file *g);

uint32_t gguf_version(const gguf_file *g);

/* Metadata lookup: index of key, or -1. */
int64_t gguf_find(const gguf_file *g, const char *key);
gguf_type gguf_kv_type(const gguf_file *g, int64_t i);
gguf_str gguf_kv_key(const gguf_file *g, int64_t i);
int64_t gguf_kv_count(const gguf_file *g);

/* Scalar getters by key with type conversion among integer types (and
 * float32/float64). Return 1 and store the value, 0 when absent or of an
 * incompatible type. */
int gguf_get_u64(const gguf_file *g, const char *key, uint64_t *out);
int gguf_get_i64(const gguf_file *g, const char *key, int64_t *out);
int gguf_get_f32(const gguf_file *g, const char *key, float *out);
int gguf_get_bool(const gguf_file *g, const char *key, int *out);
int gguf_get_str(const gguf_file *g, const char *key, gguf_str *out);

/* Arrays: element type and count (1 when key is an array). */
int gguf_get_arr(const gguf_file *g, const char *key, gguf_type *elem_type,
		 uint64_t *count);
/* Element i of a string array; element i of a numeric array as f32 / i64.
 * O(1): gguf_open() indexes string arrays. */
int gguf_arr_str(const gguf_file *g, const char *key, uint64_t i,
		 gguf_str *out);
int gguf_arr_f32(const gguf_file *g, const char *key, uint64_t i, float *out);
int gguf_arr_i64(const gguf_file *g, const char *key, uint64_t i,
		 int64_t *out);

/* Tensors. */
int64_t gguf_tensor_count(const gguf_file *g);
/* Find a tensor by name; fills t (name, type, rows/cols, data, nbytes)
 * and returns 1, or 0 if absent. Tensors of more than 2 dimensions are
 * flattened to rows = product of outer dims. */
int gguf_tensor(const gguf_file *g, const char *name, struct Tensor *t);
/* Tensor by index, likewise. */
int gguf_tensor_at(const gguf_file *g, int64_t i, struct Tensor *t);

#endif
