// AMX on this KVM guest: asks Linux for the tile state (arch_prctl), checks one tdpbf16ps against a known
// result and times four independent accumulator tiles. gcc -O2 -mamx-tile -mamx-bf16 amx_tdpbf16ps_throughput.c
#include <immintrin.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <time.h>
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
typedef struct { uint8_t palette_id, start_row, reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; } tilecfg;
int main() {
  long r = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
  printf("arch_prctl XTILEDATA: %ld\n", r);
  if (r) return 1;
  tilecfg cfg; memset(&cfg, 0, sizeof cfg); cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) { cfg.colsb[t] = 64; cfg.rows[t] = 16; }
  _tile_loadconfig(&cfg);
  static uint16_t a[16 * 32], b[16 * 32]; static float c[16 * 16];
  for (int i = 0; i < 16 * 32; ++i) { a[i] = 0x3f80; b[i] = 0x3f80; }  // 1.0 in bf16
  _tile_zero(0); _tile_loadd(1, a, 64); _tile_loadd(2, b, 64);
  _tile_dpbf16ps(0, 1, 2); _tile_stored(0, c, 64);
  printf("c[0] = %g (expect 32)\n", c[0]);
  struct timespec t0, t1; long n = 20000000;
  _tile_zero(3); _tile_zero(4); _tile_zero(5); _tile_zero(6);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long i = 0; i < n; ++i) { _tile_dpbf16ps(3, 1, 2); _tile_dpbf16ps(4, 1, 2); _tile_dpbf16ps(5, 1, 2); _tile_dpbf16ps(6, 1, 2); }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
  printf("tdpbf16ps: %.0f GFLOP/s on one core\n", 4.0 * n * 16 * 16 * 32 * 2 / s / 1e9);
  _tile_release();
}
