/* Biased softmax rows of one bf16 attention block, fused (seggpt_model/native.py).
 *
 * For every query row t of an (m, n) block of raw bf16 logits s = q k^T (row-major, in place):
 *
 *     x[k]    = scale * s[t, k] + products[t, h_offset - t / wg + k / wg]
 *                               + products[t, w_offset - t % wg + k % wg]           (fp32)
 *     s[t, k] = bf16(exp(x[k] - max x) / sum_k exp(x[k] - max x))   (round to nearest even)
 *     lse[t]  = max x + log(sum_k exp(x[k] - max x))                (if lse is not NULL)
 *
 * i.e. the decomposed relative-position bias of SegGPT / SAM (two position terms, one per key row
 * and one per key column, Li et al. 2022, "Exploring Plain Vision Transformer Backbones"; bf16
 * `products` hold q times the reversed position tables) added to the scaled logits, the softmax,
 * and its log-sum-exp for merging blocks. Each row is worked in fp32 in `row` (n floats,
 * caller-owned, one per thread), which stays in L1 between the row's passes: the logits are read
 * once and the probabilities written once. The exponential is taken in base 2 (log2(e) folded
 * into the scale and the terms).
 *
 * Plain C that compilers vectorise (no intrinsics); built with -O3 and the CPU's vector ISA
 * level, without -ffast-math (which would link crtfastmath and set flush-to-zero for the whole
 * process). Inputs are finite (no NaN or infinity). No heap allocation, no global state:
 * thread-safe.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t float_to_bf16(float f) {  /* round to nearest even; f finite */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* 2^d for d <= 0, within about 2 fp32 ulp: d = n + f with n an integer and |f| <= 1/2, 2^f by
 * its degree-6 Taylor polynomial (remainder below 1.2e-7), 2^n through the exponent bits. Clamped
 * at -126 (2^-126 is the smallest normal float, and negligible against the row's 1). */
static inline float exp2_nonpositive(float d) {
    d = d < -126.0f ? -126.0f : d;
    const float n = __builtin_roundf(d);
    const float f = d - n;
    float p = 1.5403530393381606e-4f;
    p = p * f + 1.3333558146428443e-3f;
    p = p * f + 9.6181291076284772e-3f;
    p = p * f + 5.5504108664821580e-2f;
    p = p * f + 2.4022650695910071e-1f;
    p = p * f + 6.9314718055994531e-1f;
    p = p * f + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return p * two_n;
}

#define LOG2E 1.44269504088896341f

/* One row, in base 2 (x * log2(e), so that the exponential is 2^d): flat passes over `row`,
 * which the compiler vectorises whole: the bias (one add per key), the scaled logits plus bias with
 * the running maximum, the exponential with the running sum, and the normalised bf16 store.
 * `tw2` holds the row's width terms times log2(e). */
static inline void biased_softmax_row(uint16_t *s, int64_t n, int64_t wg, const uint16_t *term_h,
                                      const uint16_t *term_w, float scale2, float *row, float *tw2,
                                      float *lse) {
    const int64_t key_rows = n / wg;
    for (int64_t j = 0; j < wg; j++)
        tw2[j] = LOG2E * bf16_to_float(term_w[j]);
    for (int64_t kr = 0; kr < key_rows; kr++) {
        const float th = LOG2E * bf16_to_float(term_h[kr]);
        float *dst = row + kr * wg;
        for (int64_t j = 0; j < wg; j++)
            dst[j] = th + tw2[j];
    }
    float mx = -3.0e38f;
    for (int64_t k = 0; k < n; k++) {
        const float v = scale2 * bf16_to_float(s[k]) + row[k];
        row[k] = v;
        mx = v > mx ? v : mx;
    }
    float sum = 0.0f;
    for (int64_t k = 0; k < n; k++) {
        const float e = exp2_nonpositive(row[k] - mx);
        row[k] = e;
        sum += e;
    }
    const float inverse = 1.0f / sum;
    for (int64_t k = 0; k < n; k++)
        s[k] = float_to_bf16(row[k] * inverse);
    if (lse)
        *lse = mx / LOG2E + logf(sum);
}

void seggpt_biased_softmax_bf16(uint16_t *logits, int64_t m, int64_t n, int64_t wg,
                                const uint16_t *products, int64_t products_stride,
                                int64_t h_offset, int64_t w_offset, float scale,
                                float *lse, float *row) {
    float tw2[wg];
    for (int64_t t = 0; t < m; t++) {
        const uint16_t *term_h = products + t * products_stride + h_offset - t / wg;
        const uint16_t *term_w = products + t * products_stride + w_offset - t % wg;
        float *lse_t = lse ? lse + t : 0;
        if (wg == 28)  /* SegGPT's grid (448 / 16): a constant width lets the bias loop unroll */
            biased_softmax_row(logits + t * n, n, 28, term_h, term_w, scale * LOG2E, row, tw2, lse_t);
        else
            biased_softmax_row(logits + t * n, n, wg, term_h, term_w, scale * LOG2E, row, tw2, lse_t);
    }
}
