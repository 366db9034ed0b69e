/*
 * tensor.c - element type table and scalar float conversions. See tensor.h.
 * Block dequantisation lives in quant.c.
 */
#include "tensor.h"

#include <string.h>

static const struct {
	const char *name; /* dtype_name() */
	int elems;        /* elements per block */
	size_t bytes;     /* bytes per block */
} types[DT_COUNT] = {
	[DT_F32] = {"f32", 1, 4},      [DT_F16] = {"f16", 1, 2},
	[DT_BF16] = {"bf16", 1, 2},    [DT_Q8_0] = {"q8_0", 32, 34},
	[DT_Q4_0] = {"q4_0", 32, 18},  [DT_Q4_1] = {"q4_1", 32, 20},
	[DT_Q4_K] = {"q4_k", 256, 144}, [DT_Q5_K] = {"q5_k", 256, 176},
	[DT_Q6_K] = {"q6_k", 256, 210},
};

static int valid(dtype t)
{
	return (int)t >= 0 && t < DT_COUNT;
}

int dtype_block_elems(dtype t)
{
	return valid(t) ? types[t].elems : 0;
}

size_t dtype_block_bytes(dtype t)
{
	return valid(t) ? types[t].bytes : 0;
}

size_t dtype_row_bytes(dtype t, int64_t n)
{
	if (!valid(t) || n < 0 || n % types[t].elems)
		return 0;
	return (size_t)(n / types[t].elems) * types[t].bytes;
}

const char *dtype_name(dtype t)
{
	return valid(t) ? types[t].name : "?";
}

int dtype_is_quant(dtype t)
{
	return valid(t) && types[t].elems > 1;
}

float fp16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
	if (exp == 0) {
		if (man == 0) {
			bits = sign;
		} else { /* subnormal: normalise */
			int e = -1;
			do {
				e++;
				man <<= 1;
			} while (!(man & 0x400));
			bits = sign | ((uint32_t)(127 - 15 - e) << 23) |
			       ((man & 0x3FF) << 13);
		}
	} else if (exp == 31) {
		bits = sign | 0x7F800000u | (man << 13);
	} else {
		bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
	}
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

uint16_t f32_to_fp16(float f)
{
	uint32_t x;
	memcpy(&x, &f, 4);
	uint32_t sign = (x >> 16) & 0x8000;
	int32_t exp = (int32_t)((x >> 23) & 0xFF);
	uint32_t man = x & 0x7FFFFF;
	if (exp == 0xFF) /* inf / nan */
		return (uint16_t)(sign | 0x7C00 | (man ? 0x200 : 0));
	int32_t e = exp - 127 + 15;
	if (e >= 31)
		return (uint16_t)(sign | 0x7C00);
	if (e <= 0) { /* subnormal or zero, round to nearest even */
		if (e < -10)
			return (uint16_t)sign;
		man |= 0x800000;
		uint32_t shift = (uint32_t)(14 - e);
		uint32_t half = 1u << (shift - 1);
		uint32_t r = man >> shift;
		uint32_t rem = man & ((1u << shift) - 1);
		if (rem > half || (rem == half && (r & 1)))
			r++;
		return (uint16_t)(sign | r);
	}
	uint32_t r = ((uint32_t)e << 10) | (man >> 13);
	uint32_t rem = man & 0x1FFF;
	if (rem > 0x1000 || (rem == 0x1000 && (r & 1)))
		r++; /* may carry into the exponent, which is correct */
	return (uint16_t)(sign | r);
}

float bf16_to_f32(uint16_t h)
{
	uint32_t bits = (uint32_t)h << 16;
	float f;
	memcpy(&f, &bits, 4);
	return f;
}
