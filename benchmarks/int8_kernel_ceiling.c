/* What an AVX2 (no VNNI) int8 GEMM micro-kernel can reach on this CPU, one core:
 * the vpmaddwd scheme we ship (int16 operands, 16 MACs per instruction + vpaddd)
 * against onnxruntime's vpmaddubsw scheme (u8 activations x s8 weights, 32 MACs
 * per vpmaddubsw + vpmaddwd(ones) + vpaddd; weights must be 7-bit so the int16
 * pair sums cannot saturate).
 *
 *   gcc -O3 -mavx2 -mfma -o /tmp/int8_ceiling benchmarks/int8_kernel_ceiling.c && /tmp/int8_ceiling
 *
 * Both kernels use the same 4-row x 2-vector (16 columns) register tile over
 * the whole K, operands pre-packed so every weight load is one contiguous
 * 32-byte vector (bert-base FFN shape M=128, K=768, N=3072), and both check
 * their int32 result against a scalar reference. This is a ceiling for the
 * kernel only: no quantize step, no epilogue, one thread.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { M = 128, K = 768, N = 3072, MR = 4, NB = 16 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* int16: x16[M][K], w16 packed [N/8][K/2][8][2] */
static void gemm_i16(const int16_t *x, const int16_t *w, int32_t *c) {
    for (int jb = 0; jb < N / NB; jb++) {
        const int16_t *w0 = w + (size_t)(2 * jb) * (K / 2) * 16;
        const int16_t *w1 = w + (size_t)(2 * jb + 1) * (K / 2) * 16;
        for (int i = 0; i < M; i += MR) {
            __m256i acc[MR][2];
            for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
            for (int p = 0; p < K / 2; p++) {
                __m256i b0 = _mm256_load_si256((const __m256i *)(w0 + p * 16));
                __m256i b1 = _mm256_load_si256((const __m256i *)(w1 + p * 16));
                for (int r = 0; r < MR; r++) {
                    __m256i a = _mm256_set1_epi32(*(const int32_t *)(x + (size_t)(i + r) * K + 2 * p));
                    acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(a, b0));
                    acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(a, b1));
                }
            }
            for (int r = 0; r < MR; r++) {
                _mm256_storeu_si256((__m256i *)(c + (size_t)(i + r) * N + jb * NB), acc[r][0]);
                _mm256_storeu_si256((__m256i *)(c + (size_t)(i + r) * N + jb * NB + 8), acc[r][1]);
            }
        }
    }
}

/* u8 x s8: x8[M][K] (u8), w8 packed [N/8][K/4][8][4] (s8) */
static void gemm_u8s8(const uint8_t *x, const int8_t *w, int32_t *c) {
    const __m256i ones = _mm256_set1_epi16(1);
    for (int jb = 0; jb < N / NB; jb++) {
        const int8_t *w0 = w + (size_t)(2 * jb) * (K / 4) * 32;
        const int8_t *w1 = w + (size_t)(2 * jb + 1) * (K / 4) * 32;
        for (int i = 0; i < M; i += MR) {
            __m256i acc[MR][2];
            for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
            for (int p = 0; p < K / 4; p++) {
                __m256i b0 = _mm256_load_si256((const __m256i *)(w0 + p * 32));
                __m256i b1 = _mm256_load_si256((const __m256i *)(w1 + p * 32));
                for (int r = 0; r < MR; r++) {
                    __m256i a = _mm256_set1_epi32(*(const int32_t *)(x + (size_t)(i + r) * K + 4 * p));
                    acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b0), ones));
                    acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b1), ones));
                }
            }
            for (int r = 0; r < MR; r++) {
                _mm256_storeu_si256((__m256i *)(c + (size_t)(i + r) * N + jb * NB), acc[r][0]);
                _mm256_storeu_si256((__m256i *)(c + (size_t)(i + r) * N + jb * NB + 8), acc[r][1]);
            }
        }
    }
}

static int check(const int32_t *got, const int32_t *want) {
    for (size_t i = 0; i < (size_t)M * N; i++)
        if (got[i] != want[i]) return 0;
    return 1;
}

int main(void) {
    int16_t *x16 = aligned_alloc(64, sizeof(int16_t) * M * K);
    uint8_t *x8 = aligned_alloc(64, M * K);
    int8_t *wq = malloc(K * N);
    int16_t *w16 = aligned_alloc(64, sizeof(int16_t) * K * N);
    int8_t *w8 = aligned_alloc(64, K * N);
    int32_t *c = aligned_alloc(64, sizeof(int32_t) * M * N), *ref = malloc(sizeof(int32_t) * M * N);
    int32_t *ref8 = malloc(sizeof(int32_t) * M * N);
    srand(0);
    for (int i = 0; i < M * K; i++) {
        int v = rand() % 255 - 127; /* symmetric int8 activation */
        x16[i] = (int16_t)v;
        x8[i] = (uint8_t)(v + 128); /* u8 with zero point 128 */
    }
    for (int i = 0; i < K * N; i++) wq[i] = (int8_t)(rand() % 127 - 63); /* 7-bit weights */
    for (int j = 0; j < N; j++)
        for (int k = 0; k < K; k++) {
            w16[(((size_t)(j / 8) * (K / 2) + k / 2) * 8 + j % 8) * 2 + k % 2] = wq[(size_t)k * N + j];
            w8[(((size_t)(j / 8) * (K / 4) + k / 4) * 8 + j % 8) * 4 + k % 4] = wq[(size_t)k * N + j];
        }
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            int32_t s = 0, s8 = 0;
            for (int k = 0; k < K; k++) {
                s += x16[i * K + k] * wq[(size_t)k * N + j];
                s8 += x8[i * K + k] * wq[(size_t)k * N + j];
            }
            ref[(size_t)i * N + j] = s;
            ref8[(size_t)i * N + j] = s8; /* = s + 128 * colsum: the zero-point term the epilogue subtracts */
        }
    const double ops = 2.0 * M * K * N;
    /* Alternate the two kernels in short bursts and keep each one's best: on a VM whose vCPU may share a
     * physical core with a neighbour, a sustained disturbance must hit both kernels alike. */
    const int reps = 5, rounds = 40;
    double best16 = 1e9, best8 = 1e9;
    int ok16 = 1, ok8 = 1;
    for (int round = 0; round < rounds; round++) {
        for (int r = 0; r < reps; r++) {
            double t = now();
            gemm_i16(x16, w16, c);
            t = now() - t;
            if (t < best16) best16 = t;
        }
        ok16 &= check(c, ref);
        for (int r = 0; r < reps; r++) {
            double t = now();
            gemm_u8s8(x8, w8, c);
            t = now() - t;
            if (t < best8) best8 = t;
        }
        ok8 &= check(c, ref8);
    }
    printf("best of %d runs each: vpmaddwd int16 %.1f GOP/s (exact %s) | vpmaddubsw u8s8 %.1f GOP/s (exact %s) | u8s8/int16 time %.2f\n",
           reps * rounds, ops / best16 * 1e-9, ok16 ? "yes" : "NO", ops / best8 * 1e-9, ok8 ? "yes" : "NO", best8 / best16);
    return ok16 && ok8 ? 0 : 1;
}
