#include <immintrin.h>
#include <chrono>
#include <cstdio>
#define R12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
int main() {
#define DECL(i) __m512 a##i = _mm512_set1_ps(i * 1e-3f);
  R12(DECL)
  __m512 x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(0.9999f);
  __m512bh bx = (__m512bh)_mm512_set1_epi32(0x3f803f80), by = bx;
  const long n = 50000000;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
#define FMA(i) a##i = _mm512_fmadd_ps(x, y, a##i);
    for (long k = 0; k < n; ++k) { R12(FMA) }
    double f = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    t0 = std::chrono::steady_clock::now();
#define DP(i) a##i = _mm512_dpbf16_ps(a##i, bx, by);
    for (long k = 0; k < n; ++k) { R12(DP) }
    double b = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("fma %.1f GFLOP/s   dpbf16 %.1f GFLOP/s  (per instruction: dpbf16 takes %.2fx the time of an fma)\n", 12.0 * n * 32 / f / 1e9, 12.0 * n * 64 / b / 1e9, b / f);
  }
#define SUM(i) + _mm512_reduce_add_ps(a##i)
  printf("%g\n", 0.0f R12(SUM));
}
