/* Peak single-precision FMA rate of one core: the ceiling any sgemm micro-kernel can reach.
 *
 * Build and run:  gcc -O2 -mavx512f -o /tmp/fma_peak benchmarks/fma_peak.c && /tmp/fma_peak
 *
 * 12 independent chains of 512-bit FMAs (enough to cover 4-cycle latency on two FMA ports);
 * each FMA is 16 lanes × 2 flops. Prints GFLOP/s of one thread (best of 5 runs), and of
 * AVX2 (256-bit) FMAs for comparison. Where AVX-512 is missing, build with -mavx2 -mfma -DNO512.
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#ifndef NO512
static double run512(long iters) {
    __m512 a[12];
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps(1.0f + i * 1e-3f);
    const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    double t = now();
    for (long it = 0; it < iters; it++) {
        for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], x, y);
    }
    t = now() - t;
    __m512 s = a[0];
    for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, a[i]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return iters * 12.0 * 16 * 2 / t / 1e9;
}
#endif

static double run256(long iters) {
    __m256 a[12];
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps(1.0f + i * 1e-3f);
    const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    double t = now();
    for (long it = 0; it < iters; it++) {
        for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], x, y);
    }
    t = now() - t;
    float out[8];
    __m256 s = a[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, a[i]);
    _mm256_storeu_ps(out, s);
    volatile float sink = out[0];
    (void)sink;
    return iters * 12.0 * 8 * 2 / t / 1e9;
}

int main(void) {
    const long iters = 100000000;
    double best512 = 0, best256 = 0;
    for (int r = 0; r < 5; r++) {
#ifndef NO512
        double g = run512(iters);
        if (g > best512) best512 = g;
#endif
        double h = run256(iters);
        if (h > best256) best256 = h;
    }
    printf("{\"fp32_fma_gflops_one_thread_avx512\": %.1f, \"fp32_fma_gflops_one_thread_avx2\": %.1f}\n", best512, best256);
    return 0;
}
