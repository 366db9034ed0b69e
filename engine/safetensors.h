/*
 * safetensors.h - reader for Hugging Face safetensors weights, one file or
 * a set of shards listed by model.safetensors.index.json, mmapped read-only
 * and validated as untrusted input.
 *
 * File layout:
 *
 *   u64 N         little-endian length of the header (we cap it at
 *                 ST_MAX_HEADER)
 *   header        N bytes of UTF-8 JSON, possibly padded with spaces: an
 *                 object mapping each tensor name to
 *                   {"dtype": "BF16", "shape": [rows, cols],
 *                    "data_offsets": [begin, end]}
 *                 plus an optional "__metadata__" object of strings
 *                 (ignored here)
 *   data          from byte 8 + N to the end of the file; begin/end are
 *                 relative to it
 *
 * Tensors are C-order (row-major, last dimension contiguous), so a 2-D
 * [out][in] weight maps straight onto Tensor rows/cols; more dimensions are
 * flattened into rows, a 1-D or 0-D tensor is one row.
 *
 * The index file is JSON {"metadata": {...}, "weight_map": {tensor name:
 * shard file name}}; shard names must be plain file names in the same
 * directory as the index.
 *
 * Validation (st_open refuses the set with a message otherwise): header
 * length within the file and the cap, JSON well formed, every entry has a
 * known dtype (F32, F16, BF16), at most ST_MAX_DIMS non-negative integer
 * dims whose product and byte size are overflow-checked, begin <= end
 * inside the data section, end - begin == elements * dtype size, no two
 * tensors overlap, names unique across all shards and every name in the
 * weight map found in its shard.
 */
#ifndef INFERD_SAFETENSORS_H
#define INFERD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

#define ST_MAX_HEADER (100u << 20) /* largest JSON header accepted */
#define ST_MAX_DIMS 8              /* most dimensions of one tensor */
#define ST_MAX_SHARDS 4096         /* most shard files in an index */

typedef struct st_file st_file;

/* Open a .safetensors file, or an index .json naming shards. Returns NULL
 * with a message. */
st_file *st_open(const char *path, char *err, size_t errlen);
void st_close(st_file *f);

int64_t st_tensor_count(const st_file *f);
/* Index of a tensor by name, or -1. */
int64_t st_find(const st_file *f, const char *name);
/* Fill t for tensor i (name, type, rows/cols, data, nbytes); 0 when i is
 * out of range. */
int st_tensor_at(const st_file *f, int64_t i, Tensor *t);
/* Likewise by name; 0 when absent. */
int st_tensor(const st_file *f, const char *name, Tensor *t);
/* Shape of tensor i as in the file (outermost first): returns the number
 * of dims (0 for a scalar) and fills shape[0..n-1]; -1 for a bad index. */
int st_shape(const st_file *f, int64_t i, int64_t shape[ST_MAX_DIMS]);
/* Number of shard files and bytes of all of them. */
int st_shard_count(const st_file *f);
uint64_t st_file_bytes(const st_file *f);

#endif
