/*
 * gguf.h - reader for GGUF v2/v3 files (llama.cpp's model format), mmapped
 * read-only and validated as untrusted input.
 *
 * File layout (all integers little-endian, no implicit padding):
 *
 *   header      u32 magic "GGUF" (0x46554747), u32 version (2 or 3; v1 had
 *               32-bit counts and is refused), u64 tensor_count,
 *               u64 kv_count
 *   kv[]        kv_count times: string key, u32 value type (gguf_type),
 *               value
 *   tinfo[]     tensor_count times: string name, u32 n_dims (1..4),
 *               u64 ne[n_dims] (ne[0] is the innermost, contiguous
 *               dimension), u32 ggml type id, u64 offset (from the start
 *               of the data section)
 *   padding     zero bytes up to the next multiple of the alignment
 *   data        tensor bytes; every offset is a multiple of the alignment
 *
 * A string is u64 length + that many bytes (UTF-8, no terminator). A value
 * is the scalar itself (u8/i8/bool 1 byte, u16/i16 2, u32/i32/f32 4,
 * u64/i64/f64 8), a string, or an array: u32 element type, u64 count,
 * count elements. Arrays of arrays are legal but unused by models; we skip
 * them (nesting depth capped at GGUF_MAX_NEST) and give them no accessor.
 *
 * The alignment is the u32 key general.alignment (a power of two), 32 when
 * absent. A tensor with ne = {cols, d1, d2, d3} is row-major with d3
 * outermost: we read it as rows = d1*d2*d3 rows of cols elements, which is
 * the PyTorch [out][in] layout (a GGUF matrix {in, out} = nn.Linear
 * weight [out][in]). Model files from llama.cpp's converter also reorder
 * the rows of attn_q/attn_k of llama-architecture models inside each head
 * (HF row j*hd/2 + i -> row 2i + j) for interleaved RoPE; see loader.c.
 *
 * ggml type ids we accept and their dtype (other ids are refused by name):
 *   0 F32, 1 F16, 30 BF16: plain elements.
 *   8 Q8_0  block of 32: f16 d; int8 q[32]; x = d*q            (34 bytes)
 *   2 Q4_0  block of 32: f16 d; u8 qs[16]; element j < 16 is the low
 *           nibble of qs[j], element j+16 the high one; x = d*(q-8)
 *                                                              (18 bytes)
 *   3 Q4_1  block of 32: f16 d, f16 m; u8 qs[16] as Q4_0; x = d*q + m
 *                                                              (20 bytes)
 *  12 Q4_K  super-block of 256 = 8 sub-blocks of 32: f16 d, f16 dmin;
 *           u8 scales[12] (8 6-bit scales and 8 6-bit mins, packed);
 *           u8 qs[128] 4-bit quants; x = d*sc*q - dmin*m     (144 bytes)
 *  13 Q5_K  as Q4_K plus u8 qh[32], the fifth bit of each quant, between
 *           scales and qs                                     (176 bytes)
 *  14 Q6_K  super-block of 256 = 16 sub-blocks of 16: u8 ql[128] low 4
 *           bits, u8 qh[64] high 2 bits, int8 scales[16], f16 d;
 *           x = d*scale*(q-32)                                 (210 bytes)
 * (Exact bit orders of the K-quants are in quant.c's dequantize_row.)
 *
 * Validation (gguf_open refuses the file with a message otherwise): every
 * count is capped by the bytes left, every size/offset sum is overflow-
 * checked, strings lie inside the file and keys/names have no NUL, keys
 * and tensor names are unique, dims are > 0 and their product fits int64,
 * the row length is a multiple of the type's block, offsets are aligned,
 * tensor data lies inside the file and no two tensors overlap.
 */
#ifndef INFERD_GGUF_H
#define INFERD_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

typedef struct gguf_file gguf_file;

#define GGUF_MAGIC 0x46554747u      /* "GGUF" read as a little-endian u32 */
#define GGUF_DEFAULT_ALIGNMENT 32   /* when general.alignment is absent */
#define GGUF_MAX_NEST 4             /* deepest array-of-array accepted */
#define GGUF_MAX_DIMS 4             /* most tensor dimensions */
#define GGUF_MAX_KEY 65535          /* longest key in bytes */
#define GGUF_MAX_NAME 256           /* longest tensor name in bytes */

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
/* Index of a tensor by name, or -1. */
int64_t gguf_tensor_find(const gguf_file *g, const char *name);
/* Dimensions of tensor i as in the file (ne[0] innermost): returns n_dims
 * (1..4) and fills ne[0..n_dims-1], or 0 for a bad index. */
int gguf_tensor_dims(const gguf_file *g, int64_t i, int64_t ne[4]);
/* ggml type id of tensor i as stored in the file, -1 for a bad index. */
int gguf_tensor_ggml_type(const gguf_file *g, int64_t i);
/* Alignment of the data section and its offset in the file. */
uint64_t gguf_alignment(const gguf_file *g);
uint64_t gguf_data_offset(const gguf_file *g);
/* Size of the mapped file in bytes. */
uint64_t gguf_file_size(const gguf_file *g);
/* Name of a ggml type id ("q5_0", ...), "?" when unknown. */
const char *gguf_ggml_type_name(uint32_t id);

#endif
