/*
 * quant.c - reference dequantisation of ggml block types (dequantize_row in
 * tensor.h). Portable and deliberately plain: the SIMD dot products in
 * kernels_*.c and the CUDA kernels are tested against these loops.
 *
 * Block layouts (little-endian, packed, as stored in GGUF files):
 *   Q8_0  d:f16, qs:int8[32]                        x = d*q
 *   Q4_0  d:f16, qs:u8[16]   low nibbles are elements 0..15, high 16..31,
 *                                                    x = d*(q - 8)
 *   Q4_1  d:f16, m:f16, qs:u8[16]  (nibbles as Q4_0) x = d*q + m
 *   Q4_K  d:f16, dmin:f16, scales:u8[12], qs:u8[128]
 *         8 sub-blocks of 32 with 6-bit scale sc and 6-bit min m packed in
 *         the 12 bytes (see k4_scale_min); each 64 elements share 32 bytes
 *         of qs: low nibbles the first sub-block, high the second.
 *                                                    x = d*sc*q - dmin*m
 *   Q5_K  d, dmin, scales[12] as Q4_K, qh:u8[32], qs:u8[128]
 *         q = nibble | (bit of qh[l] for that sub-block) << 4; sub-block j
 *         uses bit j of qh[l].
 *   Q6_K  ql:u8[128], qh:u8[64], scales:int8[16], d:f16
 *         16 sub-blocks of 16; each 128 elements use 64 bytes of ql and 32
 *         of qh: q = (4 bits of ql) | (2 bits of qh) << 4, x = d*sc*(q-32).
 */
#include <string.h>

#include "tensor.h"

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

/* Q4_K/Q5_K: 6-bit scale and min of sub-block j (0..7). The first four
 * live in the low 6 bits of bytes 0..3 (scales) and 4..7 (mins); the last
 * four take their low 4 bits from bytes 8..11 and their top 2 bits from the
 * spare top bits of bytes 0..7. */
void k4_scale_min(const uint8_t *s, int j, uint8_t *sc, uint8_t *m)
{
	if (j < 4) {
		*sc = s[j] & 63;
		*m = s[j + 4] & 63;
	} else {
		*sc = (uint8_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
		*m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
	}
}

static void deq_q8_0(const uint8_t *b, float *y)
{
	float d = fp16_to_f32(rd16(b));
	const int8_t *q = (const int8_t *)(b + 2);
	for (int i = 0; i < 32; i++)
		y[i] = d * q[i];
}

static void deq_q4_0(const uint8_t *b, float *y)
{
	float d = fp16_to_f32(rd16(b));
	const uint8_t *q = b + 2;
	for (int i = 0; i < 16; i++) {
		y[i] = d * ((q[i] & 0xF) - 8);
		y[i + 16] = d * ((q[i] >> 4) - 8);
	}
}

static void deq_q4_1(const uint8_t *b, float *y)
{
	float d = fp16_to_f32(rd16(b)), m = fp16_to_f32(rd16(b + 2));
	const uint8_t *q = b + 4;
	for (int i = 0; i < 16; i++) {
		y[i] = d * (q[i] & 0xF) + m;
		y[i + 16] = d * (q[i] >> 4) + m;
	}
}

static void deq_q4_k(const uint8_t *b, float *y)
{
	float d = fp16_to_f32(rd16(b)), dmin = fp16_to_f32(rd16(b + 2));
	const uint8_t *sc = b + 4, *q = b + 16;
	for (int j = 0; j < 8; j += 2) {
		uint8_t s0, m0, s1, m1;
		k4_scale_min(sc, j, &s0, &m0);
		k4_scale_min(sc, j + 1, &s1, &m1);
		for (int l = 0; l < 32; l++) {
			y[l] = d * s0 * (q[l] & 0xF) - dmin * m0;
			y[l + 32] = d * s1 * (q[l] >> 4) - dmin * m1;
		}
		y += 64;
		q += 32;
	}
}

static void deq_q5_k(const uint8_t *b, float *y)
{
	float d = fp16_to_f32(rd16(b)), dmin = fp16_to_f32(rd16(b + 2));
	const uint8_t *sc = b + 4, *qh = b + 16, *q = b + 48;
	for (int j = 0; j < 8; j += 2) {
		uint8_t s0, m0, s1, m1;
		k4_scale_min(sc, j, &s0, &m0);
		k4_scale_min(sc, j + 1, &s1, &m1);
		for (int l = 0; l < 32; l++) {
			int h0 = (qh[l] >> j) & 1, h1 = (qh[l] >> (j + 1)) & 1;
			y[l] = d * s0 * ((q[l] & 0xF) | (h0 << 4)) - dmin * m0;
			y[l + 32] = d * s1 * ((q[l] >> 4) | (h1 << 4)) - dmin * m1;
		}
		y += 64;
		q += 32;
	}
}

static void deq_q6_k(const uint8_t *b, float *y)
{
	const uint8_t *ql = b, *qh = b + 128;
	const int8_t *sc = (const int8_t *)(b + 192);
	float d = fp16_to_f32(rd16(b + 208));
	for (int h = 0; h < 2; h++) {
		for (int l = 0; l < 32; l++) {
			int is = l / 16;
			int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
			int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
			int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
			int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
			y[l] = d * sc[is + 0] * q1;
			y[l + 32] = d * sc[is + 2] * q2;
			y[l + 64] = d * sc[is + 4] * q3;
			y[l + 96] = d * sc[is + 6] * q4;
		}
		y += 128;
		ql += 64;
		qh += 32;
		sc += 8;
	}
}

void dequantize_row(dtype t, const void *row, float *out, int64_t n)
{
	const uint8_t *p = row;
	int64_t be = dtype_block_elems(t);
	size_t bb = dtype_block_bytes(t);
	if (be <= 0 || n % be)
		return; /* dtype_row_bytes() is 0 for such rows; loaders reject */
	switch (t) {
	case DT_F32:
		memcpy(out, row, (size_t)n * 4);
		return;
	case DT_F16:
		for (int64_t i = 0; i < n; i++)
			out[i] = fp16_to_f32(rd16(p + 2 * i));
		return;
	case DT_BF16:
		for (int64_t i = 0; i < n; i++)
			out[i] = bf16_to_f32(rd16(p + 2 * i));
		return;
	default:
		break;
	}
	void (*deq)(const uint8_t *, float *) = NULL;
	switch (t) {
	case DT_Q8_0: deq = deq_q8_0; break;
	case DT_Q4_0: deq = deq_q4_0; break;
	case DT_Q4_1: deq = deq_q4_1; break;
	case DT_Q4_K: deq = deq_q4_k; break;
	case DT_Q5_K: deq = deq_q5_k; break;
	case DT_Q6_K: deq = deq_q6_k; break;
	default: return;
	}
	for (int64_t i = 0; i < n / be; i++)
		deq(p + (size_t)i * bb, out + i * be);
}
