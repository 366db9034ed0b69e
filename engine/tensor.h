/*
 * tensor.h - element types and the weight-tensor descriptor shared by the
 * loaders (safetensors, GGUF), the model and every backend.
 *
 * A Tensor describes bytes that live in a read-only mmap of the model file
 * (host) and, once a backend has uploaded it, a backend-private copy (dev).
 * Quantised types are stored as ggml blocks exactly as in GGUF files; the
 * block layouts are documented in gguf.h.
 */
#ifndef INFERD_TENSOR_H
#define INFERD_TENSOR_H

#include <stddef.h>
#include <stdint.h>

/* Element types. Order is ours; gguf.c maps ggml type ids onto these. */
typedef enum {
	DT_F32 = 0, /* IEEE binary32 */
	DT_F16,     /* IEEE binary16 */
	DT_BF16,    /* bfloat16: the top half of a binary32 */
	DT_Q8_0,    /* 32 elems: f16 scale + 32 x int8 (34 bytes) */
	DT_Q4_0,    /* 32 elems: f16 scale + 16 bytes of 4-bit (18 bytes) */
	DT_Q4_1,    /* 32 elems: f16 scale, f16 min + 16 bytes (20 bytes) */
	DT_Q4_K,    /* 256 elems super-block (144 bytes) */
	DT_Q5_K,    /* 256 elems super-block (176 bytes) */
	DT_Q6_K,    /* 256 elems super-block (210 bytes) */
	DT_COUNT    /* number of types; not a type */
} dtype;

/* Elements per block (1 for plain float types). */
int dtype_block_elems(dtype t);
/* Bytes per block. */
size_t dtype_block_bytes(dtype t);
/* Bytes for a row of n elements; 0 when n is not a multiple of the block. */
size_t dtype_row_bytes(dtype t, int64_t n);
/* Short lower-case name ("f16", "q4_k"), "?" for an invalid value. */
const char *dtype_name(dtype t);
/* 1 for a block-quantised type. */
int dtype_is_quant(dtype t);

/* A weight: a matrix [rows][cols], row-major, cols contiguous; a vector is
 * rows = 1. For a linear layer rows = out_features, cols = in_features,
 * the PyTorch nn.Linear layout that both safetensors and GGUF use. */
typedef struct Tensor {
	const char *name;  /* name in the file (owned by the model) */
	dtype type;        /* element type of data */
	int64_t rows;      /* outer dimension */
	int64_t cols;      /* inner, contiguous dimension (elements) */
	const void *data;  /* host bytes in the read-only mmap; NULL = absent */
	size_t nbytes;     /* rows * dtype_row_bytes(type, cols) */
	void *dev;         /* backend copy after upload(); NULL on the CPU */
} Tensor;

/* Conversions used by every backend's reference paths and by tests. */
float fp16_to_f32(uint16_t h);
uint16_t f32_to_fp16(float f);
float bf16_to_f32(uint16_t h);

/* Dequantise one row of n elements of type t into out (f32). Reference
 * implementation (portable C) that the SIMD kernels are tested against. */
void dequantize_row(dtype t, const void *row, float *out, int64_t n);

#endif
