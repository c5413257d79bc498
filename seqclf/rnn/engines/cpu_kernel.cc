// The `cpu_kernel` engine: a whole LSTM layer as XLA FFI custom calls for the CPU.
//
// Why C++: on CPU, XLA runs a `lax.scan` step as a chain of single-threaded kernels with a fixed cost each,
// so at the article's shapes (B=64, H=100) the loop is bound by per-step overhead and by one core. Here a
// step is one register-blocked matmul plus one vectorised pass of gate arithmetic, and the batch rows,
// which never interact, are split over threads that run the whole time loop without synchronising.
// The input projection runs inside the loop as part of the same matmul (the step's input row is
// [x_t * input_dropout, h_{t-1} * recurrent_dropout] against the stacked weights [W; U]), and the backward
// loop returns every gradient (dx, dh0, dc0, d[W; U], db), so nothing of the layer is left to XLA.
//
// Three handlers, all float32 and batch-major (the layout of the layer's inputs and outputs), gates packed
// i, f, g, o:
//   SeqclfLstmForward   (xs, weights, bias, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask)
//                       -> (hs, cs, gates)
//   SeqclfLstmInference (same arguments) -> (hs, c_last)
//   SeqclfLstmBackward  (xs, weights, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask, hs, cs,
//                        gates, dhs, dh_last, dc_last) -> (dxs, dh0, dc0, d_weights, d_bias)
// with xs [B, T, E], weights [E + H, 4H] (kernel stacked on recurrent_kernel), bias [4H], states [B, H],
// step_mask [B, T] (bool; where false the state passes through unchanged and the step costs no FLOPs),
// hs/cs [B, T, H] (state after each step), gates [B, T, 4H] (activated; unwritten at masked steps, which
// the backward pass does not read), and the attribute `num_threads` (row ranges; they run on the
// calling thread and XLA's intra-op thread pool).
//
// Built at first use by seqclf/rnn/engines/cpu_kernel.py (g++ -O3 -march=native); tests/test_lstm_api.py compares
// it with the plain-JAX reference, seqclf/rnn/engines/scan.py (outputs and gradients, masks, dropout, vmap).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <limits>
#include <string>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kLanes = 16;  // floats per vector: one AVX-512 register, two AVX2 ones, four NEON ones
// The matmul's register block: kRows rows x kCols vectors of accumulators, plus kCols vectors of weights.
// 8 x 3 (27 of AVX-512's 32 registers) measured best for the article's shapes on Zen 4 (against 4 x 4,
// whose weight loads, not its FMAs, set the pace) and again on an AVX-512 Xeon (2026-12, against 14 x 2,
// 12 x 2 and 6 x 4; 500 steps of a [32, 132] x [132, 400] product in 9.4-10.5 ms, 160-180 GFLOP/s of the
// core's 225 GFLOP/s FMA peak). Without AVX-512 a vector is two or four registers: 4 x 1.
#ifdef __AVX512F__
constexpr int kRows = 8, kCols = 3;
#else
constexpr int kRows = 4, kCols = 1;
#endif
constexpr int kMaxDepth = 160;  // 160 x 48 floats = 30 KiB of weights per column block: L1 is 32-48 KiB
// The backward pass adds each step's weight gradient a^T @ dz into per-thread sums, a product whose depth
// is the thread's rows; it collects steps until the depth reaches about this, so the sums ([E + H, 4H],
// over 1 MiB at H = 256) are read and written once per batch of steps rather than once per step.
constexpr int kGradientDepth = 128;
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef float UnalignedVec __attribute__((vector_size(kLanes * sizeof(float)), aligned(4)));

inline Vec Load(const float* p) { return *reinterpret_cast<const UnalignedVec*>(p); }
inline void Store(float* p, Vec v) { *reinterpret_cast<UnalignedVec*>(p) = v; }
inline int RoundUp(int n, int multiple) { return (n + multiple - 1) / multiple * multiple; }
#ifdef __AVX512F__
// Lanes [k, min(k + 16, n)) of a row: the mask of a row's last, partial vector.
inline __mmask16 Lanes(int k, int n) {
  return n - k >= kLanes ? 0xffff : static_cast<__mmask16>((1u << (n - k)) - 1);
}
#endif

// The operands of out[rows, cols] += a[rows, depth] @ w[depth, cols]. Element (r, k) of `a` is at
// a[r * lda + k * ldk], so `a` can be read transposed; `cols` is a multiple of kLanes, and w's and out's
// rows hold at least `cols` floats (zero-padded where the matrix is narrower). `w` is row-major with
// leading dimension ldw, or, with `panels`, packed as `Panels` writes it (ldw unused). With `init` (a row
// of `cols` floats) the product overwrites out with init + a @ w instead of adding to it: the forward's
// gates start from the bias in registers rather than from a copy of it in every row.
struct MatmulArgs {
  const float* a;
  std::ptrdiff_t lda, ldk;
  int rows, depth;
  const float* w;
  std::ptrdiff_t ldw;
  int cols;
  float* out;
  std::ptrdiff_t ldo;
  bool panels = false;
  const float* init = nullptr;
};

// Rows [r0, r0 + R) x columns [j0, j0 + V * kLanes), with the accumulators held in registers across the
// whole k loop; `w` points at the block's first column in depth row 0, its rows `ldw` floats apart.
template <int R, int V>
inline void MatmulBlock(const MatmulArgs& m, const float* w, std::ptrdiff_t ldw, int r0, int j0) {
  Vec acc[R][V];
  float* out = m.out + r0 * m.ldo + j0;
  const float* a = m.a + r0 * m.lda;
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      acc[r][v] = m.init ? Load(m.init + j0 + v * kLanes) : Load(out + r * m.ldo + v * kLanes);
  for (int k = 0; k < m.depth; ++k) {
    Vec wk[V];
    for (int v = 0; v < V; ++v) wk[v] = Load(w + k * ldw + v * kLanes);
    for (int r = 0; r < R; ++r) {
      const float ark = a[r * m.lda + k * m.ldk];
      for (int v = 0; v < V; ++v) acc[r][v] += ark * wk[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) Store(out + r * m.ldo + v * kLanes, acc[r][v]);
}

// Columns [j0, j0 + V * kLanes) of all rows: full kRows blocks, then one block for the remaining rows.
template <int V>
void MatmulColumns(const MatmulArgs& m, const float* w, std::ptrdiff_t ldw, int j0) {
  static_assert(kRows <= 8, "the switch below covers remainders of up to 7 rows");
  int r = 0;
  for (; r + kRows <= m.rows; r += kRows) MatmulBlock<kRows, V>(m, w, ldw, r, j0);
  switch (m.rows - r) {
    case 7: MatmulBlock<7, V>(m, w, ldw, r, j0); break;
    case 6: MatmulBlock<6, V>(m, w, ldw, r, j0); break;
    case 5: MatmulBlock<5, V>(m, w, ldw, r, j0); break;
    case 4: MatmulBlock<4, V>(m, w, ldw, r, j0); break;
    case 3: MatmulBlock<3, V>(m, w, ldw, r, j0); break;
    case 2: MatmulBlock<2, V>(m, w, ldw, r, j0); break;
    case 1: MatmulBlock<1, V>(m, w, ldw, r, j0); break;
    default: break;
  }
}

// The width of the column block that starts at column j of a matrix `cols` wide: kCols vectors while
// they fit, then single vectors. Matmul and Panels walk the columns the same way.
inline int BlockWidth(int j, int cols) { return j + kCols * kLanes <= cols ? kCols * kLanes : kLanes; }

// Column blocks outside, row blocks inside, so a block's slice of w stays in L1 for all the rows; a deep
// product goes in equal slices of at most kMaxDepth, so that slice (kMaxDepth x 48 floats) fits L1 too.
void Matmul(const MatmulArgs& m) {
  const int slices = (m.depth + kMaxDepth - 1) / kMaxDepth, slice = (m.depth + slices - 1) / slices;
  for (int k0 = 0; k0 < m.depth; k0 += slice) {
    MatmulArgs part = m;
    part.a = m.a + k0 * m.ldk;
    part.depth = std::min(slice, m.depth - k0);
    part.init = k0 == 0 ? m.init : nullptr;
    for (int j = 0; j < m.cols;) {
      const int width = BlockWidth(j, m.cols);
      const float* w = m.panels ? m.w + static_cast<std::ptrdiff_t>(j) * m.depth + k0 * width
                                : m.w + k0 * m.ldw + j;
      const std::ptrdiff_t ldw = m.panels ? width : m.ldw;
      if (width == kLanes) MatmulColumns<1>(part, w, ldw, j);
      else MatmulColumns<kCols>(part, w, ldw, j);
      j += width;
    }
  }
}

// The w of a Matmul with `panels`: element (k, j) = at(k, j) of a [depth, width] matrix, zero-padded to
// RoundUp(width, kLanes) columns, written to `out` so that each column block (BlockWidth) is one
// contiguous [depth, block] panel and the block's loop reads its slice of w linearly (at H = 256 the
// rows of an unpacked w are 4 KiB apart: a page per depth step).
template <typename At>
void PackPanels(int depth, int width, const At& at, float* out) {
  const int ld = RoundUp(width, kLanes);
  for (int j0 = 0; j0 < ld;) {
    const int block = BlockWidth(j0, ld);
    float* panel = out + static_cast<size_t>(j0) * depth;
    for (int k = 0; k < depth; ++k)
      for (int j = j0; j < j0 + block; ++j)
        panel[static_cast<size_t>(k) * block + (j - j0)] = j < width ? at(k, j) : 0.0f;
    j0 += block;
  }
}

// `matrix` [rows, cols] (or its transpose) packed by PackPanels.
std::vector<float> Panels(const float* matrix, int rows, int cols, bool transpose) {
  const int depth = transpose ? cols : rows, width = transpose ? rows : cols;
  std::vector<float> out(static_cast<size_t>(depth) * RoundUp(width, kLanes));
  PackPanels(depth, width, [&](int k, int j) {
    return transpose ? matrix[static_cast<size_t>(j) * cols + k] : matrix[static_cast<size_t>(k) * cols + j];
  }, out.data());
  return out;
}

// bfloat16 products (`bf16` attribute): operands rounded to bfloat16 (to nearest even), products summed
// in float32, on AMX tiles where the CPU has them (AmxBf16Matmul), else by AVX512-BF16's vdpbf16ps, which
// multiplies a pair of bf16 values per float lane: twice the FMAs of a float32 vector instruction, but on
// this project's Xeon (KVM, 2026-12) at half the FMA's rate, so without AMX bf16 is slower than float32
// there (WORKSPACE.md). All three products of a step are bf16 then (forward, dh, and the weight gradient,
// whose sums over steps stay float32). The operands are laid out in pairs along the depth (AMX's layout
// too): a row of `a` as [depth / 2] 32-bit words (a[k], a[k + 1]), and w as [depth / 2, cols] words
// (w[k][j], w[k + 1][j]), so one broadcast word of `a` against one vector of w adds two depth steps; for
// AMX, w's words are regrouped into tiles (TiledIndex).
inline uint16_t RoundToBf16(float x) {
  const uint32_t bits = __builtin_bit_cast(uint32_t, x);
  // A NaN stays a (quiet) NaN, as with vcvtneps2bf16: rounding its bits could carry into the exponent
  // and make it an infinity, or wrap to zero.
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

constexpr int kTilePairs = 16;  // an AMX tile row is 64 bytes: 16 words, 16 pairs of bf16

// Where pair p, column j of a bf16 w goes when AMX multiplies it: w tiled into 16 x 16-word tiles (16
// pairs by 16 columns), each one contiguous KiB, column tiles outside and the depth's tiles inside
// (`ksteps` of them), so a tile load reads 16 adjacent cache lines.
inline size_t TiledIndex(int p, int j, int ksteps) {
  return (static_cast<size_t>(j / kLanes) * ksteps + p / kTilePairs) * (kTilePairs * kLanes) +
         (p % kTilePairs) * kLanes + j % kLanes;
}

// The pairs of rows [2p, 2p + 1] of `matrix` [rows, cols] (or of its transpose), zero-padded to a depth
// of whole AMX tiles (kTilePairs pairs) and to RoundUp(cols, kLanes) columns, as bf16 words: [pairs, ld]
// in rows, or `tiled` (TiledIndex).
std::vector<uint32_t> PairedBf16(const float* matrix, int rows, int cols, bool transpose, bool tiled) {
  const int depth = transpose ? cols : rows, width = transpose ? rows : cols;
  const int ld = RoundUp(width, kLanes), pairs = RoundUp((depth + 1) / 2, kTilePairs);
  std::vector<uint32_t> out(static_cast<size_t>(pairs) * ld, 0u);
  for (int k = 0; k < depth; ++k)
    for (int j = 0; j < width; ++j) {
      const size_t at = transpose ? static_cast<size_t>(j) * cols + k : static_cast<size_t>(k) * cols + j;
      const size_t to =
          tiled ? TiledIndex(k / 2, j, pairs / kTilePairs) : static_cast<size_t>(k / 2) * ld + j;
      out[to] |= static_cast<uint32_t>(RoundToBf16(matrix[at])) << (16 * (k % 2));
    }
  return out;
}

#ifdef __AVX512BF16__
constexpr bool kHasBf16 = true;

struct Bf16MatmulArgs {
  const uint32_t* a;  // [rows, lda] words
  std::ptrdiff_t lda;
  int rows, pairs;
  const uint32_t* w;  // [pairs, ldw] words
  std::ptrdiff_t ldw;
  int cols;
  float* out;
  std::ptrdiff_t ldo;
};

template <int R, int V>
inline void Bf16MatmulBlock(const Bf16MatmulArgs& m, int r0, int j0) {
  __m512 acc[R][V];
  float* out = m.out + r0 * m.ldo + j0;
  const uint32_t* a = m.a + r0 * m.lda;
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_loadu_ps(out + r * m.ldo + v * kLanes);
  for (int p = 0; p < m.pairs; ++p) {
    __m512bh wp[V];
    for (int v = 0; v < V; ++v) wp[v] = (__m512bh)_mm512_loadu_si512(m.w + p * m.ldw + j0 + v * kLanes);
    for (int r = 0; r < R; ++r) {
      const __m512bh arp = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r * m.lda + p]));
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], arp, wp[v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(out + r * m.ldo + v * kLanes, acc[r][v]);
}

template <int V>
void Bf16MatmulColumns(const Bf16MatmulArgs& m, int j0) {
  int r = 0;
  for (; r + kRows <= m.rows; r += kRows) Bf16MatmulBlock<kRows, V>(m, r, j0);
  switch (m.rows - r) {
    case 7: Bf16MatmulBlock<7, V>(m, r, j0); break;
    case 6: Bf16MatmulBlock<6, V>(m, r, j0); break;
    case 5: Bf16MatmulBlock<5, V>(m, r, j0); break;
    case 4: Bf16MatmulBlock<4, V>(m, r, j0); break;
    case 3: Bf16MatmulBlock<3, V>(m, r, j0); break;
    case 2: Bf16MatmulBlock<2, V>(m, r, j0); break;
    case 1: Bf16MatmulBlock<1, V>(m, r, j0); break;
    default: break;
  }
}

// As Matmul: column blocks outside, depth slices of at most kMaxDepth pairs (half the bytes of a float
// slice of kMaxDepth rows).
void Bf16Matmul(const Bf16MatmulArgs& m) {
  const int slices = (m.pairs + kMaxDepth - 1) / kMaxDepth, slice = (m.pairs + slices - 1) / slices;
  for (int p0 = 0; p0 < m.pairs; p0 += slice) {
    Bf16MatmulArgs part = m;
    part.a = m.a + p0;
    part.w = m.w + p0 * m.ldw;
    part.pairs = std::min(slice, m.pairs - p0);
    int j = 0;
    for (; j + kCols * kLanes <= m.cols; j += kCols * kLanes) Bf16MatmulColumns<kCols>(part, j);
    for (; j < m.cols; j += kLanes) Bf16MatmulColumns<1>(part, j);
  }
}
#else
constexpr bool kHasBf16 = false;
#endif

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
// The same bf16 product on AMX tiles (tdpbf16ps: a 16 x 16 float32 tile += a 16 x 32 bf16 tile times a
// 32 x 16 one), where the CPU has them and Linux grants the process their state: on this project's Xeon
// 2.5 TFLOP/s on one core, 11x the float32 FMA rate (WORKSPACE.md). The operands of Bf16Matmul, with
// `a` [RoundUp(rows, 16), lda] words (lda a multiple of 16, the padding zero), w's pairs a multiple of
// kTilePairs and w tiled (TiledIndex); rows of `out` past `rows` are never touched (a last, partial row
// tile goes through a copy).
bool AmxGranted() {
  static const bool granted = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */,
                                      18 /* XFEATURE_XTILEDATA */) == 0;
  return granted;
}

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

// Tiles 0-3: the float32 accumulators of up to 2 x 2 output tiles (c[2 * row + column]); 4-5: their
// row tiles of `a`; 6-7: their column tiles of w. Each tile loaded serves two products: with one row tile
// per w column tile, the w tiles (from L2: the weights outgrow L1) were reloaded for every row tile and
// the product ran at a sixth of the unit's rate.
template <int R, int C>
inline void AmxBlock(const uint32_t* a, std::ptrdiff_t lda, const uint32_t* w, int ksteps, float* const* c,
                     const std::ptrdiff_t* ldc) {
  constexpr int kTileWords = kTilePairs * kLanes;
  _tile_loadd(0, c[0], ldc[0]);
  if (C > 1) _tile_loadd(1, c[1], ldc[1]);
  if (R > 1) _tile_loadd(2, c[2], ldc[2]);
  if (R > 1 && C > 1) _tile_loadd(3, c[3], ldc[3]);
  const std::ptrdiff_t a_bytes = lda * sizeof(uint32_t), w_bytes = kLanes * sizeof(uint32_t);
  for (int kt = 0; kt < ksteps; ++kt) {
    _tile_loadd(4, a + kt * kTilePairs, a_bytes);
    if (R > 1) _tile_loadd(5, a + 16 * lda + kt * kTilePairs, a_bytes);
    _tile_loadd(6, w + kt * kTileWords, w_bytes);
    if (C > 1) _tile_loadd(7, w + (ksteps + kt) * kTileWords, w_bytes);
    _tile_dpbf16ps(0, 4, 6);
    if (C > 1) _tile_dpbf16ps(1, 4, 7);
    if (R > 1) _tile_dpbf16ps(2, 5, 6);
    if (R > 1 && C > 1) _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c[0], ldc[0]);
  if (C > 1) _tile_stored(1, c[1], ldc[1]);
  if (R > 1) _tile_stored(2, c[2], ldc[2]);
  if (R > 1 && C > 1) _tile_stored(3, c[3], ldc[3]);
}

// `w` is tiled (TiledIndex) with m.pairs / kTilePairs tiles along the depth; m.ldw is unused.
void AmxBf16Matmul(const Bf16MatmulArgs& m) {
  TileConfig config;
  for (int t = 0; t < 8; ++t) config.bytes_per_row[t] = 64, config.rows[t] = 16;
  _tile_loadconfig(&config);
  const int ksteps = m.pairs / kTilePairs;
  alignas(64) float partial[2][16 * kLanes];  // a last, partial row tile's outputs
  for (int r0 = 0; r0 < m.rows; r0 += 32) {
    const int row_tiles = m.rows - r0 > 16 ? 2 : 1;
    const int last_rows = std::min(16, m.rows - r0 - 16 * (row_tiles - 1));
    const uint32_t* a = m.a + static_cast<std::ptrdiff_t>(r0) * m.lda;
    for (int j0 = 0; j0 < m.cols; j0 += 2 * kLanes) {
      const int col_tiles = m.cols - j0 > kLanes ? 2 : 1;
      float* c[4] = {};
      std::ptrdiff_t ldc[4] = {};
      for (int row = 0; row < row_tiles; ++row)
        for (int col = 0; col < col_tiles; ++col) {
          c[2 * row + col] = m.out + static_cast<std::ptrdiff_t>(r0 + 16 * row) * m.ldo + j0 + kLanes * col;
          ldc[2 * row + col] = m.ldo * sizeof(float);
        }
      float* last = c[2 * (row_tiles - 1)];
      if (last_rows < 16)  // through 16-row copies, so no row past `rows` is read or written
        for (int t = 0; t < col_tiles; ++t) {
          std::fill(partial[t], partial[t] + 16 * kLanes, 0.0f);
          for (int r = 0; r < last_rows; ++r)
            std::memcpy(partial[t] + r * kLanes, last + r * m.ldo + t * kLanes, kLanes * sizeof(float));
          c[2 * (row_tiles - 1) + t] = partial[t];
          ldc[2 * (row_tiles - 1) + t] = kLanes * sizeof(float);
        }
      const uint32_t* w = m.w + static_cast<std::ptrdiff_t>(j0 / kLanes) * ksteps * kTilePairs * kLanes;
      if (row_tiles == 2 && col_tiles == 2) AmxBlock<2, 2>(a, m.lda, w, ksteps, c, ldc);
      else if (row_tiles == 2) AmxBlock<2, 1>(a, m.lda, w, ksteps, c, ldc);
      else if (col_tiles == 2) AmxBlock<1, 2>(a, m.lda, w, ksteps, c, ldc);
      else AmxBlock<1, 1>(a, m.lda, w, ksteps, c, ldc);
      if (last_rows < 16)
        for (int t = 0; t < col_tiles; ++t)
          for (int r = 0; r < last_rows; ++r)
            std::memcpy(last + r * m.ldo + t * kLanes, partial[t] + r * kLanes, kLanes * sizeof(float));
    }
  }
  _tile_release();
}
#endif

// Whether the bf16 products run on AMX tiles, and so take w tiled: the build has them and Linux grants them.
inline bool UseAmx() {
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
  return AmxGranted();
#else
  return false;
#endif
}

#ifdef __AVX512BF16__
// A bf16 product on AMX tiles where UseAmx(), else with vdpbf16ps: `a` [RoundUp(rows, 16), lda] words with
// lda = RoundUp(pairs, kTilePairs), w that many pairs (tiled where UseAmx(), else [pairs, ldw] words), all
// padding zero.
void Bf16Product(const Bf16MatmulArgs& m) {
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
  if (UseAmx()) {
    AmxBf16Matmul({m.a, m.lda, m.rows, RoundUp(m.pairs, kTilePairs), m.w, m.ldw, m.cols, m.out, m.ldo});
    return;
  }
#endif
  Bf16Matmul(m);
}

// Rows 2p and 2p + 1 of `matrix` [rows, width] (rows ld floats apart; a row past `rows` reads as zeros)
// as bf16 pairs, for p < pairs: the pair at column j goes to out[p * ld_out + j], or with `tiled` (pairs a
// multiple of kTilePairs) to out[TiledIndex(p, j, pairs / kTilePairs)]; zeros for j from width to
// RoundUp(width, kLanes).
void PairRows(const float* matrix, int rows, int width, std::ptrdiff_t ld, int pairs, uint32_t* out,
              std::ptrdiff_t ld_out, bool tiled) {
  for (int p = 0; p < pairs; ++p) {
    for (int k = 0; k < width; k += kLanes) {
      uint32_t* words = out + (tiled ? TiledIndex(p, k, pairs / kTilePairs) : p * ld_out + k);
      const __mmask16 m = Lanes(k, width);
      auto row = [&](int r) {
        return r < rows ? _mm512_maskz_loadu_ps(m, matrix + r * ld + k) : _mm512_setzero_ps();
      };
      const __m512 lo = row(2 * p), hi = row(2 * p + 1);
      const __m512i lo16 = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(lo));
      const __m512i hi16 = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(hi));
      _mm512_storeu_si512(words, _mm512_or_si512(lo16, _mm512_slli_epi32(hi16, 16)));
    }
  }
}
#endif

// The weights of a step's matmul out[rows, ld] += a[rows, depth] @ w[depth, ld]: float32 (zero-padded
// to ld columns, in column panels) or bf16 pairs (tiled where UseAmx()). StepMatmul rounds the rows of
// `a` into `scratch` for the bf16 product.
struct StepWeights {
  int depth, ld;
  std::vector<float> f32;
  std::vector<uint32_t> bf16;

  StepWeights(const float* matrix, int rows, int cols, bool transpose, bool use_bf16)
      : depth(transpose ? cols : rows), ld(RoundUp(transpose ? rows : cols, kLanes)) {
    if (use_bf16) bf16 = PairedBf16(matrix, rows, cols, transpose, UseAmx());
    else f32 = Panels(matrix, rows, cols, transpose);
  }
};

// out = init + a @ w with `init` (a row of w.ld floats), else out += a @ w.
void StepMatmul(const StepWeights& w, const float* a, std::ptrdiff_t lda, int rows, float* out,
                std::ptrdiff_t ldo, std::vector<uint32_t>& scratch, const float* init = nullptr) {
  if (w.bf16.empty()) {
    Matmul({a, lda, 1, rows, w.depth, w.f32.data(), w.ld, w.ld, out, ldo, true, init});
    return;
  }
  if (init != nullptr)
    for (int r = 0; r < rows; ++r) std::memcpy(out + r * ldo, init, w.ld * sizeof(float));
#ifdef __AVX512BF16__
  // A row of bf16 values in order is already a row of pairs (little-endian words); rounded 16 at a time
  // (vcvtneps2bf16: to nearest even, as RoundToBf16), zeros past the depth.
  // Rows padded to whole AMX tiles (depth to kTilePairs pairs, rows to 16, the padding zero).
  const int row_words = RoundUp((w.depth + 1) / 2, kTilePairs), padded_rows = RoundUp(rows, 16);
  scratch.assign(static_cast<size_t>(padded_rows) * row_words, 0u);
  for (int r = 0; r < rows; ++r) {
    const float* ar = a + r * lda;
    __m256bh* dst = reinterpret_cast<__m256bh*>(scratch.data() + static_cast<size_t>(r) * row_words);
    for (int k = 0; k < w.depth; k += kLanes) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k / kLanes),
                          (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(Lanes(k, w.depth), ar + k)));
    }
  }
  Bf16Product({scratch.data(), row_words, rows, (w.depth + 1) / 2, w.bf16.data(), w.ld, w.ld, out, ldo});
#endif
}

// Batch rows per thread: whole matmul row blocks where possible, so that each range runs full blocks.
int RowsPerRange(int rows, int64_t num_threads) {
  if (rows <= 0) return kRows;
  const int threads =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, (rows + kRows - 1) / kRows)));
  return RoundUp((rows + threads - 1) / threads, kRows);
}

// Runs body(first_row, end_row) over contiguous row ranges on the calling thread and XLA's intra-op
// thread pool. Threads claim ranges from a shared counter, so the caller never waits for a task that has
// not started (a late task finds nothing left and returns; the shared state outlives the call), and XLA's
// pool threads work on the layer instead of spinning beside threads of our own.
template <typename Body>
void ParallelOverRows(ffi::ThreadPool& pool, int rows, int64_t num_threads, const Body& body) {
  if (rows <= 0) return;
  const int chunk = RowsPerRange(rows, num_threads);
  const int ranges = (rows + chunk - 1) / chunk;
  struct State {
    std::atomic<int> next{0}, done{0};
    std::mutex mutex;
    std::condition_variable finished;
    std::function<void(int)> run;  // called only for a claimed range, so only while the caller waits
  };
  auto state = std::make_shared<State>();
  state->run = [&](int range) { body(range * chunk, std::min(rows, (range + 1) * chunk)); };
  auto work = [state, ranges]() {
    for (int range; (range = state->next.fetch_add(1)) < ranges;) {
      state->run(range);
      if (state->done.fetch_add(1) + 1 == ranges) {
        std::lock_guard<std::mutex> lock(state->mutex);
        state->finished.notify_all();
      }
    }
  };
  for (int i = 1; i < ranges; ++i) pool.Schedule([work] { work(); });
  work();
  std::unique_lock<std::mutex> lock(state->mutex);
  state->finished.wait(lock, [&] { return state->done.load() == ranges; });
}

#ifdef __AVX512F__
// The cell's arithmetic written with AVX-512 intrinsics, 16 lanes at a time (g++ vectorises the scalar
// loops of the fallback below with 256-bit vectors only): exp(x) as in Cephes' expf (x = n ln2 + r with
// |r| <= ln2 / 2, a degree-6 polynomial for exp(r), relative error about 1e-7 over the clamped range,
// beyond which sigmoid and tanh saturate), with 2^n by vscalefps. 1 / d stays a division: vrcp14ps with a
// Newton step was no faster here and its extra rounding doubled the kernel's error against `scan`.
// NaN and infinities behave as in `scan`: the clamp keeps a NaN (vmaxps/vminps return their second
// operand when either is NaN, so x goes second), and its upper bound lies past exp's overflow, so
// exp(x) is +inf there and sigmoid(-inf) is exactly 0 (with a bound below it, 6e-39, whose slope times an
// infinite cotangent gave inf where `scan` gives NaN).
inline __m512 Exp(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-87.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}

inline __m512 Reciprocal(__m512 d) { return _mm512_div_ps(_mm512_set1_ps(1.0f), d); }

inline __m512 Sigmoid(__m512 x) {
  return Reciprocal(_mm512_add_ps(_mm512_set1_ps(1.0f), Exp(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

inline __m512 Tanh(__m512 x) {
  const __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), Exp(_mm512_add_ps(x, x)));
  return _mm512_fnmadd_ps(_mm512_set1_ps(2.0f), Reciprocal(d), _mm512_set1_ps(1.0f));
}


// f applied in place to z[0, n), 16 lanes at a time.
template <typename F>
inline void ApplyInPlace(float* z, int n, F f) {
  for (int k = 0; k < n; k += kLanes) {
    const __mmask16 m = Lanes(k, n);
    _mm512_mask_storeu_ps(z + k, m, f(_mm512_maskz_loadu_ps(m, z + k)));
  }
}

// One unmasked step of one batch row, in place: activates the gate pre-activations z [4H] and updates
// the state (h, c).
inline void CellForward(int hidden, float* __restrict z, float* __restrict h, float* __restrict c) {
  ApplyInPlace(z, 2 * hidden, [](__m512 x) { return Sigmoid(x); });
  ApplyInPlace(z + 2 * hidden, hidden, [](__m512 x) { return Tanh(x); });
  ApplyInPlace(z + 3 * hidden, hidden, [](__m512 x) { return Sigmoid(x); });
  for (int k = 0; k < hidden; k += kLanes) {
    const __mmask16 m = Lanes(k, hidden);
    const __m512 i = _mm512_maskz_loadu_ps(m, z + k), f = _mm512_maskz_loadu_ps(m, z + hidden + k);
    const __m512 g = _mm512_maskz_loadu_ps(m, z + 2 * hidden + k), o = _mm512_maskz_loadu_ps(m, z + 3 * hidden + k);
    const __m512 c_new = _mm512_fmadd_ps(f, _mm512_maskz_loadu_ps(m, c + k), _mm512_mul_ps(i, g));
    _mm512_mask_storeu_ps(c + k, m, c_new);
    _mm512_mask_storeu_ps(h + k, m, _mm512_mul_ps(o, Tanh(c_new)));
  }
}

// The gradients through one unmasked step of one batch row: from the activated gates g [4H], the cell
// states c_t and c_prev [H], and the cotangents of the step's output (dh_out) and new state (dh, dc), it
// writes the pre-activation gate gradients dz [4H], adds them to db, and turns dc into the cotangent of
// c_prev (dh's turn comes after the step's matmul).
inline void CellBackward(int hidden, const float* __restrict g, const float* __restrict c_t,
                         const float* __restrict c_prev, const float* __restrict dh_out,
                         const float* __restrict dh_next, float* __restrict dc, float* __restrict dz,
                         float* __restrict db) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int k = 0; k < hidden; k += kLanes) {
    const __mmask16 m = Lanes(k, hidden);
    auto load = [m](const float* p) { return _mm512_maskz_loadu_ps(m, p); };
    const __m512 i = load(g + k), f = load(g + hidden + k), gg = load(g + 2 * hidden + k);
    const __m512 o = load(g + 3 * hidden + k);
    const __m512 dh = _mm512_add_ps(load(dh_next + k), load(dh_out + k));
    const __m512 tanh_c = Tanh(load(c_t + k));
    // dc + dh * o * (1 - tanh_c^2)
    const __m512 dc_k = _mm512_fmadd_ps(_mm512_mul_ps(dh, o), _mm512_fnmadd_ps(tanh_c, tanh_c, one), load(dc + k));
    auto store = [m](float* p, __m512 v) { _mm512_mask_storeu_ps(p, m, v); };
    auto sigmoid_slope = [&](__m512 s) { return _mm512_mul_ps(s, _mm512_sub_ps(one, s)); };
    const __m512 dz_i = _mm512_mul_ps(_mm512_mul_ps(dc_k, gg), sigmoid_slope(i));
    const __m512 dz_f = _mm512_mul_ps(_mm512_mul_ps(dc_k, load(c_prev + k)), sigmoid_slope(f));
    const __m512 dz_g = _mm512_mul_ps(_mm512_mul_ps(dc_k, i), _mm512_fnmadd_ps(gg, gg, one));
    const __m512 dz_o = _mm512_mul_ps(_mm512_mul_ps(dh, tanh_c), sigmoid_slope(o));
    store(dz + k, dz_i);
    store(dz + hidden + k, dz_f);
    store(dz + 2 * hidden + k, dz_g);
    store(dz + 3 * hidden + k, dz_o);
    store(db + k, _mm512_add_ps(load(db + k), dz_i));
    store(db + hidden + k, _mm512_add_ps(load(db + hidden + k), dz_f));
    store(db + 2 * hidden + k, _mm512_add_ps(load(db + 2 * hidden + k), dz_g));
    store(db + 3 * hidden + k, _mm512_add_ps(load(db + 3 * hidden + k), dz_o));
    store(dc + k, _mm512_mul_ps(dc_k, f));
  }
}
#else
// Without AVX-512, the same in scalar loops that the compiler vectorises.
// exp(x) as in Cephes' expf: x = n ln2 + r with |r| <= ln2 / 2, a degree-6 polynomial for exp(r), and
// 2^n built in the exponent bits. Written branch-free so that g++ vectorises the loops that call it.
// Relative error about 1e-7 over the clamped range; beyond it the result saturates, as sigmoid and tanh do.
// std::max/min return their first argument when a comparison with NaN is false, so a NaN stays NaN;
// n reaches 128 above 88.7, which makes 2^n (and exp) +inf, as in the AVX-512 version.
inline float Exp(float x) {
  x = std::min(std::max(x, -87.0f), 89.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return y * __builtin_bit_cast(float, bits);
}

inline float Sigmoid(float x) { return 1.0f / (1.0f + Exp(-x)); }
inline float Tanh(float x) { return 1.0f - 2.0f / (1.0f + Exp(2.0f * x)); }

// One unmasked step of one batch row, in place: activates the gate pre-activations z [4H] and updates
// the state (h, c). The pointers never alias (restrict lets g++ vectorise).
inline void CellForward(int hidden, float* __restrict z, float* __restrict h, float* __restrict c) {
  for (int k = 0; k < 2 * hidden; ++k) z[k] = Sigmoid(z[k]);
  for (int k = 2 * hidden; k < 3 * hidden; ++k) z[k] = Tanh(z[k]);
  for (int k = 3 * hidden; k < 4 * hidden; ++k) z[k] = Sigmoid(z[k]);
  for (int k = 0; k < hidden; ++k) {
    c[k] = z[hidden + k] * c[k] + z[k] * z[2 * hidden + k];
    h[k] = z[3 * hidden + k] * Tanh(c[k]);
  }
}

// The gradients through one unmasked step of one batch row: from the activated gates g [4H], the cell
// states c_t and c_prev [H], and the cotangents of the step's output (dh_out) and new state (dh, dc), it
// writes the pre-activation gate gradients dz [4H], adds them to db, and turns dc into the cotangent of
// c_prev (dh's turn comes after the step's matmul).
inline void CellBackward(int hidden, const float* __restrict g, const float* __restrict c_t,
                         const float* __restrict c_prev, const float* __restrict dh_out,
                         const float* __restrict dh_next, float* __restrict dc, float* __restrict dz,
                         float* __restrict db) {
  for (int k = 0; k < hidden; ++k) {
    const float i = g[k], f = g[hidden + k], gg = g[2 * hidden + k], o = g[3 * hidden + k];
    const float dh = dh_next[k] + dh_out[k];
    const float tanh_c = Tanh(c_t[k]);
    const float dc_k = dc[k] + dh * o * (1.0f - tanh_c * tanh_c);
    dz[k] = dc_k * gg * i * (1.0f - i);
    dz[hidden + k] = dc_k * c_prev[k] * f * (1.0f - f);
    dz[2 * hidden + k] = dc_k * i * (1.0f - gg * gg);
    dz[3 * hidden + k] = dh * tanh_c * o * (1.0f - o);
    dc[k] = dc_k * f;
  }
  for (int k = 0; k < 4 * hidden; ++k) db[k] += dz[k];
}

#endif

struct Shapes {
  int batch, steps, input_size, hidden;
  int gate_width() const { return 4 * hidden; }
  int row_width() const { return input_size + hidden; }  // a step's matmul input: [x_t, h_{t-1}]
  size_t at(int b, int t) const { return static_cast<size_t>(b) * steps + t; }  // batch-major row
};

// Copies a row that will not be read again until the backward pass, long after it has left the caches:
// with non-temporal stores where the destination is aligned (the whole vectors; the rest copied), so the
// write does not first read the line into the cache and evict the loop's working set.
inline void StreamRow(float* dst, const float* src, int n) {
  int k = 0;
#ifdef __AVX512F__
  if (reinterpret_cast<uintptr_t>(dst) % 64 == 0)
    for (; k + kLanes <= n; k += kLanes) _mm512_stream_ps(dst + k, _mm512_loadu_ps(src + k));
#endif
  std::memcpy(dst + k, src + k, (n - k) * sizeof(float));
}

// Orders this thread's non-temporal stores before whatever tells XLA the call is done (x86 does not order
// them with ordinary stores).
inline void StreamFence() {
#ifdef __AVX512F__
  _mm_sfence();
#endif
}

// Asks for the `bytes` at p to be in the cache soon. A step reads a short row of every batch row (x_t
// forward; gates, c, h, dh and x of step t backward), so a thread follows tens of streams, each 0.1-1.6 KB
// a step apart, more than the hardware prefetchers track; prefetching a few steps ahead hides the misses.
inline void Prefetch(const float* p, int floats) {
  const char* bytes = reinterpret_cast<const char*>(p);
  for (int offset = 0; offset < floats * static_cast<int>(sizeof(float)); offset += 64)
    __builtin_prefetch(bytes + offset);
}
constexpr int kPrefetchSteps = 2;
constexpr int kStagedSteps = 16;

// Builds the matmul input of step t, [x_t * input_dropout, h_{t-1} * recurrent_dropout], for the local
// rows listed in `active` (n of them, row r of the range is batch row first + r) into a compact
// [n, E + H]; `h_prev(r)` points at local row r's h_{t-1}.
template <typename HiddenOf>
void StepInputs(const Shapes& s, const float* xs, const float* input_dropout, const float* recurrent_dropout,
                int first, const int* active, int n, int t, HiddenOf h_prev, float* a) {
  const int input_size = s.input_size, hidden = s.hidden, row_width = s.row_width();
  for (int i = 0; i < n; ++i) {
    const int r = active[i], b = first + r;
    const float* x = xs + s.at(b, t) * input_size;
    const float* x_mask = input_dropout + b * input_size;
    const float* h = h_prev(r);
    const float* h_mask = recurrent_dropout + b * hidden;
    float* ar = a + i * row_width;
    for (int k = 0; k < input_size; ++k) ar[k] = x[k] * x_mask[k];
    for (int k = 0; k < hidden; ++k) ar[input_size + k] = h[k] * h_mask[k];
  }
}

// The local rows of [first, end) whose step t is not masked, in order; returns how many.
inline int ActiveRows(const Shapes& s, const bool* step_mask, int first, int end, int t, int* active) {
  int n = 0;
  for (int r = 0; r < end - first; ++r)
    if (step_mask[s.at(first + r, t)]) active[n++] = r;
  return n;
}

// The forward loop over batch rows [first, end). `cs` and `gates` are null for inference (nothing stored
// for a backward pass); `c_last` then receives the final cell state. Only the rows whose step is not
// masked enter the step's matmul and gate arithmetic (compacted, so a bucket's trailing padding, left
// padding and holes cost no FLOPs); a masked row just repeats its state into hs and cs, and its gates are
// left unwritten (the backward pass never reads a masked step's gates).
void ForwardRows(const Shapes& s, const float* xs, const StepWeights& weights, const float* bias,
                 const float* h0, const float* c0, const bool* step_mask, const float* input_dropout,
                 const float* recurrent_dropout, float* hs, float* cs, float* gates, float* c_last, int first,
                 int end) {
  const int rows = end - first, hidden = s.hidden;
  const int gate_width = s.gate_width(), row_width = s.row_width(), ldz = RoundUp(gate_width, kLanes);
  std::vector<float> h(h0 + first * hidden, h0 + end * hidden), c(c0 + first * hidden, c0 + end * hidden);
  std::vector<float> a(static_cast<size_t>(rows) * row_width), z(static_cast<size_t>(rows) * ldz, 0.0f);
  std::vector<float> padded_bias(ldz, 0.0f);
  std::copy(bias, bias + gate_width, padded_bias.begin());
  std::vector<int> active(rows);
  std::vector<uint32_t> scratch;
  // The states of the last kStagedSteps steps per row, [rows, kStagedSteps, H] each: a row's steps are
  // adjacent in hs and cs, so they leave as one contiguous span of non-temporal stores instead of a
  // 0.4 KiB store per row and step that first reads its lines (a seventh of a forward step at H = 100).
  const int staged = std::min(kStagedSteps, std::max(s.steps, 1));
  std::vector<float> h_staged(static_cast<size_t>(rows) * staged * hidden);
  std::vector<float> c_staged(cs != nullptr ? h_staged.size() : 0);
  auto flush = [&](int t0, int count) {
    for (int r = 0; r < rows; ++r) {
      const size_t at = s.at(first + r, t0) * hidden, from = static_cast<size_t>(r) * staged * hidden;
      StreamRow(hs + at, &h_staged[from], count * hidden);
      if (cs != nullptr) StreamRow(cs + at, &c_staged[from], count * hidden);
    }
  };
  for (int t = 0; t < s.steps; ++t) {
    if (t + kPrefetchSteps < s.steps)
      for (int r = 0; r < rows; ++r) Prefetch(xs + s.at(first + r, t + kPrefetchSteps) * s.input_size, s.input_size);
    const int n = ActiveRows(s, step_mask, first, end, t, active.data());
    if (n > 0) {
      StepInputs(s, xs, input_dropout, recurrent_dropout, first, active.data(), n, t,
                 [&](int r) { return &h[r * hidden]; }, a.data());
      StepMatmul(weights, a.data(), row_width, n, z.data(), ldz, scratch, padded_bias.data());
      for (int i = 0; i < n; ++i) {
        const int r = active[i];
        float* zr = &z[i * ldz];
        CellForward(hidden, zr, &h[r * hidden], &c[r * hidden]);
        if (gates != nullptr) StreamRow(gates + s.at(first + r, t) * gate_width, zr, gate_width);
      }
    }
    const int slot = t % staged;
    for (int r = 0; r < rows; ++r) {
      const size_t to = (static_cast<size_t>(r) * staged + slot) * hidden;
      std::memcpy(&h_staged[to], &h[r * hidden], hidden * sizeof(float));
      if (cs != nullptr) std::memcpy(&c_staged[to], &c[r * hidden], hidden * sizeof(float));
    }
    if (slot == staged - 1 || t == s.steps - 1) flush(t - slot, slot + 1);
  }
  if (c_last != nullptr) std::memcpy(c_last + first * hidden, c.data(), c.size() * sizeof(float));
  StreamFence();
}

// What one thread's reverse loop adds up over its rows: the weight and bias gradients, summed over the
// threads in a fixed order afterwards (so the result does not depend on scheduling).
struct GradientSums {
  std::vector<float> weights;  // [E + H, pad(4H)], the rows of d[W; U]
  std::vector<float> bias;     // [4H]
};

// The reverse loop over batch rows [first, end): input gradients dxs, the cotangents of h0 and c0, and
// this range's weight and bias gradients. Per step, for the rows whose step is not masked (compacted, as
// in the forward loop): the gate gradients dz, then [dx_t, dh_{t-1}] = dz_t @ [W; U]^T and
// d[W; U] += inputs_t^T @ dz_t, where inputs_t is the step's matmul input, rebuilt from xs and hs. A
// masked step passed the state through, so its cotangents pass through too and its dx is zero.
void BackwardRows(const Shapes& s, const StepWeights& weights_t, const float* xs, const float* h0,
                  const float* hs, const float* gates, const float* cs, const float* c0, const bool* step_mask,
                  const float* input_dropout, const float* recurrent_dropout, const float* dhs,
                  const float* dh_last, const float* dc_last, float* dxs, float* dh0, float* dc0,
                  GradientSums& sums, int first, int end) {
  const int rows = end - first, hidden = s.hidden, input_size = s.input_size;
  const int gate_width = s.gate_width(), row_width = s.row_width();
  const int ldz = RoundUp(gate_width, kLanes), ld_inputs = RoundUp(row_width, kLanes);
  std::vector<float> dh_next(dh_last + first * hidden, dh_last + end * hidden);
  std::vector<float> dc_next(dc_last + first * hidden, dc_last + end * hidden);
  // The dz and matmul inputs of the last steps' unmasked rows, stacked ([pending, ...]), for one
  // weight-gradient product of depth `pending` once it reaches about kGradientDepth.
  const int capacity = std::max(1, kGradientDepth / std::max(rows, 1)) * rows;
  const bool bf16 = !weights_t.bf16.empty();
  std::vector<float> dz_steps(static_cast<size_t>(capacity) * ldz, 0.0f);
  std::vector<float> dz_panels(bf16 ? 0 : dz_steps.size());
  std::vector<float> a_steps(static_cast<size_t>(capacity) * row_width);
  std::vector<float> d_inputs(static_cast<size_t>(rows) * ld_inputs);
  std::vector<int> active(rows);
  std::vector<uint32_t> scratch;
  int pending = 0;
  // With bf16 products the weight gradient is one too: dz and the inputs rounded into bf16 pairs along the
  // depth (AMX's layout), the inputs transposed so that a row of `a` is one row of d[W; U].
  const int max_pairs = RoundUp((capacity + 1) / 2, kTilePairs), ld_a = RoundUp(row_width, kLanes);
  std::vector<uint32_t> dz_pairs(bf16 ? static_cast<size_t>(max_pairs) * ldz : 0);
  std::vector<uint32_t> a_pairs(bf16 ? static_cast<size_t>(max_pairs) * ld_a : 0), a_rows(a_pairs.size());
  auto flush = [&] {
    // d[W; U] [E + H, 4H] += a^T @ dz over the pending rows.
    if (pending > 0 && !bf16) {
      // a read transposed (its rows are the depth), dz packed in panels first (at H = 256 this product
      // ran at half the speed of the others unpacked).
      PackPanels(pending, ldz, [&](int k, int j) { return dz_steps[static_cast<size_t>(k) * ldz + j]; },
                 dz_panels.data());
      Matmul({a_steps.data(), 1, row_width, row_width, pending, dz_panels.data(), 0, ldz, sums.weights.data(),
              ldz, true});
    }
#ifdef __AVX512BF16__
    if (pending > 0 && bf16) {
      const int pairs = RoundUp((pending + 1) / 2, kTilePairs);
      PairRows(dz_steps.data(), pending, ldz, ldz, pairs, dz_pairs.data(), ldz, UseAmx());
      PairRows(a_steps.data(), pending, row_width, row_width, pairs, a_pairs.data(), ld_a, false);
      for (int r = 0; r < ld_a; ++r)
        for (int p = 0; p < pairs; ++p)
          a_rows[static_cast<size_t>(r) * pairs + p] = a_pairs[static_cast<size_t>(p) * ld_a + r];
      Bf16Product(
          {a_rows.data(), pairs, row_width, pairs, dz_pairs.data(), ldz, ldz, sums.weights.data(), ldz});
    }
#endif
    pending = 0;
  };
  for (int t = s.steps - 1; t >= 0; --t) {
    if (t - kPrefetchSteps >= 0)
      for (int r = 0; r < rows; ++r) {
        const size_t ahead = s.at(first + r, t - kPrefetchSteps);
        Prefetch(gates + ahead * gate_width, gate_width);
        Prefetch(cs + ahead * hidden, hidden);
        Prefetch(hs + ahead * hidden, hidden);
        Prefetch(dhs + ahead * hidden, hidden);
        Prefetch(xs + ahead * input_size, input_size);
      }
    const int n = ActiveRows(s, step_mask, first, end, t, active.data());
    for (int r = 0, i = 0; r < rows; ++r) {
      if (i < n && active[i] == r) {
        ++i;
        continue;
      }
      float* dhr = &dh_next[r * hidden];
      const size_t row = s.at(first + r, t);
      const float* dhs_r = dhs + row * hidden;
      for (int k = 0; k < hidden; ++k) dhr[k] += dhs_r[k];
      std::fill(dxs + row * input_size, dxs + (row + 1) * input_size, 0.0f);
    }
    if (n == 0) continue;
    if (pending + n > capacity) flush();
    float* dz = &dz_steps[static_cast<size_t>(pending) * ldz];
    float* a = &a_steps[static_cast<size_t>(pending) * row_width];
    for (int i = 0; i < n; ++i) {
      const int r = active[i], b = first + r;
      const size_t row = s.at(b, t);
      const float* c_prev = t > 0 ? cs + s.at(b, t - 1) * hidden : c0 + b * hidden;
      CellBackward(hidden, gates + row * gate_width, cs + row * hidden, c_prev, dhs + row * hidden,
                   &dh_next[r * hidden], &dc_next[r * hidden], &dz[i * ldz], sums.bias.data());
    }
    std::fill(d_inputs.begin(), d_inputs.begin() + static_cast<size_t>(n) * ld_inputs, 0.0f);
    StepMatmul(weights_t, dz, ldz, n, d_inputs.data(), ld_inputs, scratch);
    StepInputs(s, xs, input_dropout, recurrent_dropout, first, active.data(), n, t, [&](int r) {
      return t > 0 ? hs + s.at(first + r, t - 1) * hidden : h0 + (first + r) * hidden;
    }, a);
    pending += n;
    for (int i = 0; i < n; ++i) {
      const int r = active[i], b = first + r;
      float* dx = dxs + s.at(b, t) * input_size;
      const float* dr = &d_inputs[i * ld_inputs];
      const float* x_mask = input_dropout + b * input_size;
      const float* h_mask = recurrent_dropout + b * hidden;
      for (int k = 0; k < input_size; ++k) dx[k] = dr[k] * x_mask[k];
      for (int k = 0; k < hidden; ++k) dh_next[r * hidden + k] = dr[input_size + k] * h_mask[k];
    }
  }
  flush();
  std::memcpy(dh0 + first * hidden, dh_next.data(), dh_next.size() * sizeof(float));
  std::memcpy(dc0 + first * hidden, dc_next.data(), dc_next.size() * sizeof(float));
}

using F32 = ffi::Buffer<ffi::F32>;
using Mask = ffi::Buffer<ffi::PRED>;
using F32Out = ffi::ResultBuffer<ffi::F32>;

// The handlers get raw buffers: seqclf.rnn.api checks shapes before it calls them, but a direct
// jax.ffi.ffi_call (or a future caller) could hand over buffers that disagree, and the loops index them
// by the sizes of xs and h0. So every buffer is held against those sizes first, and a mismatch is an
// InvalidArgument error naming it, never a read or write out of bounds.
class ShapeCheck {
 public:
  explicit ShapeCheck(const char* handler) : handler_(handler) {}

  template <typename Dims>
  void Expect(const char* name, const Dims& dims, std::initializer_list<int64_t> want) {
    if (!error_.empty()) return;
    if (dims.size() == want.size() && std::equal(dims.begin(), dims.end(), want.begin())) return;
    error_ = std::string(handler_) + ": " + name + " is " + Text(dims.begin(), dims.end()) + ", expected " +
             Text(want.begin(), want.end()) + " (xs [B, T, E], h0 [B, H])";
  }

  void Fail(const std::string& message) {
    if (error_.empty()) error_ = std::string(handler_) + ": " + message;
  }

  bool ok() const { return error_.empty(); }
  ffi::Error error() const { return ffi::Error::InvalidArgument(error_); }

 private:
  template <typename It>
  static std::string Text(It begin, It end) {
    std::string text = "[";
    for (It it = begin; it != end; ++it) text += (it == begin ? "" : ", ") + std::to_string(*it);
    return text + "]";
  }

  const char* handler_;
  std::string error_;
};

// The sizes of a call, from xs [B, T, E] and h0 [B, H]; each must fit an int (the loops' index type).
bool ShapesOf(ShapeCheck& check, const F32& xs, const F32& h0, Shapes& s) {
  const auto x = xs.dimensions(), h = h0.dimensions();
  if (x.size() != 3 || h.size() != 2) {
    check.Fail("xs must be rank 3 and h0 rank 2");
    return false;
  }
  constexpr int64_t kMax = std::numeric_limits<int>::max() / 8;
  for (int64_t size : {x[0], x[1], x[2], h[1]})
    if (size < 0 || size > kMax) {
      check.Fail("a dimension is out of range: " + std::to_string(size));
      return false;
    }
  if (h[1] < 1) {
    check.Fail("the hidden size (h0's second dimension) must be at least 1");
    return false;
  }
  s = Shapes{static_cast<int>(x[0]), static_cast<int>(x[1]), static_cast<int>(x[2]), static_cast<int>(h[1])};
  return true;
}

// The arguments both forward handlers and the backward handler take, held against the sizes.
void CheckCommon(ShapeCheck& check, const Shapes& s, const F32& weights, const F32& h0, const F32& c0,
                 const Mask& step_mask, const F32& input_dropout, const F32& recurrent_dropout) {
  check.Expect("weights", weights.dimensions(), {s.row_width(), s.gate_width()});
  check.Expect("h0", h0.dimensions(), {s.batch, s.hidden});
  check.Expect("c0", c0.dimensions(), {s.batch, s.hidden});
  check.Expect("step_mask", step_mask.dimensions(), {s.batch, s.steps});
  check.Expect("input_dropout_mask", input_dropout.dimensions(), {s.batch, s.input_size});
  check.Expect("recurrent_dropout_mask", recurrent_dropout.dimensions(), {s.batch, s.hidden});
}

// Forward and Inference differ only in what they store.
ffi::Error NoBf16() {
  return ffi::Error::InvalidArgument("bf16 products need AVX512-BF16, which this CPU (or build) lacks");
}

ffi::Error RunForward(ffi::ThreadPool& pool, F32& xs, F32& weights, F32& bias, F32& h0, F32& c0,
                      Mask& step_mask, F32& input_dropout, F32& recurrent_dropout, int64_t num_threads,
                      bool bf16, const Shapes& s, float* hs, float* cs, float* gates, float* c_last) {
  if (bf16 && !kHasBf16) return NoBf16();
  const StepWeights w(weights.typed_data(), s.row_width(), s.gate_width(), false, bf16);
  ParallelOverRows(pool, s.batch, num_threads, [&](int first, int end) {
    ForwardRows(s, xs.typed_data(), w, bias.typed_data(), h0.typed_data(), c0.typed_data(),
                step_mask.typed_data(), input_dropout.typed_data(), recurrent_dropout.typed_data(), hs, cs,
                gates, c_last, first, end);
  });
  return ffi::Error::Success();
}

// The forward handlers' arguments and `outputs` (name, dimensions) held against the sizes of xs and h0.
bool CheckForward(ShapeCheck& check, Shapes& s, const F32& xs, const F32& weights, const F32& bias,
                  const F32& h0, const F32& c0, const Mask& step_mask, const F32& input_dropout,
                  const F32& recurrent_dropout) {
  if (!ShapesOf(check, xs, h0, s)) return false;
  CheckCommon(check, s, weights, h0, c0, step_mask, input_dropout, recurrent_dropout);
  check.Expect("bias", bias.dimensions(), {s.gate_width()});
  return check.ok();
}

ffi::Error Forward(ffi::ThreadPool pool, F32 xs, F32 weights, F32 bias, F32 h0, F32 c0, Mask step_mask,
                   F32 input_dropout, F32 recurrent_dropout, int64_t num_threads, bool bf16, F32Out hs,
                   F32Out cs, F32Out gates) {
  ShapeCheck check("seqclf_lstm_forward");
  Shapes s{};
  if (CheckForward(check, s, xs, weights, bias, h0, c0, step_mask, input_dropout, recurrent_dropout)) {
    check.Expect("hs (result)", hs->dimensions(), {s.batch, s.steps, s.hidden});
    check.Expect("cs (result)", cs->dimensions(), {s.batch, s.steps, s.hidden});
    check.Expect("gates (result)", gates->dimensions(), {s.batch, s.steps, s.gate_width()});
  }
  if (!check.ok()) return check.error();
  return RunForward(pool, xs, weights, bias, h0, c0, step_mask, input_dropout, recurrent_dropout,
                    num_threads, bf16, s, hs->typed_data(), cs->typed_data(), gates->typed_data(), nullptr);
}

ffi::Error Inference(ffi::ThreadPool pool, F32 xs, F32 weights, F32 bias, F32 h0, F32 c0, Mask step_mask,
                     F32 input_dropout, F32 recurrent_dropout, int64_t num_threads, bool bf16, F32Out hs,
                     F32Out c_last) {
  ShapeCheck check("seqclf_lstm_inference");
  Shapes s{};
  if (CheckForward(check, s, xs, weights, bias, h0, c0, step_mask, input_dropout, recurrent_dropout)) {
    check.Expect("hs (result)", hs->dimensions(), {s.batch, s.steps, s.hidden});
    check.Expect("c_last (result)", c_last->dimensions(), {s.batch, s.hidden});
  }
  if (!check.ok()) return check.error();
  return RunForward(pool, xs, weights, bias, h0, c0, step_mask, input_dropout, recurrent_dropout,
                    num_threads, bf16, s, hs->typed_data(), nullptr, nullptr, c_last->typed_data());
}

ffi::Error Backward(ffi::ThreadPool pool, F32 xs, F32 weights, F32 h0, F32 c0, Mask step_mask,
                    F32 input_dropout, F32 recurrent_dropout, F32 hs, F32 cs, F32 gates, F32 dhs, F32 dh_last,
                    F32 dc_last, int64_t num_threads, bool bf16, F32Out dxs, F32Out dh0, F32Out dc0,
                    F32Out d_weights, F32Out d_bias) {
  ShapeCheck check("seqclf_lstm_backward");
  Shapes s{};
  if (ShapesOf(check, xs, h0, s)) {
    CheckCommon(check, s, weights, h0, c0, step_mask, input_dropout, recurrent_dropout);
    const std::initializer_list<int64_t> state = {s.batch, s.steps, s.hidden};
    check.Expect("hs", hs.dimensions(), state);
    check.Expect("cs", cs.dimensions(), state);
    check.Expect("gates", gates.dimensions(), {s.batch, s.steps, s.gate_width()});
    check.Expect("dhs", dhs.dimensions(), state);
    check.Expect("dh_last", dh_last.dimensions(), {s.batch, s.hidden});
    check.Expect("dc_last", dc_last.dimensions(), {s.batch, s.hidden});
    check.Expect("dxs (result)", dxs->dimensions(), {s.batch, s.steps, s.input_size});
    check.Expect("dh0 (result)", dh0->dimensions(), {s.batch, s.hidden});
    check.Expect("dc0 (result)", dc0->dimensions(), {s.batch, s.hidden});
    check.Expect("d_weights (result)", d_weights->dimensions(), {s.row_width(), s.gate_width()});
    check.Expect("d_bias (result)", d_bias->dimensions(), {s.gate_width()});
  }
  if (!check.ok()) return check.error();
  if (bf16 && !kHasBf16) return NoBf16();
  const int gate_width = s.gate_width(), ldz = RoundUp(gate_width, kLanes);
  const StepWeights wt(weights.typed_data(), s.row_width(), gate_width, true, bf16);
  const int chunk = RowsPerRange(s.batch, num_threads);
  std::vector<GradientSums> sums(std::max(1, (s.batch + chunk - 1) / chunk));
  for (GradientSums& part : sums) {
    part.weights.assign(static_cast<size_t>(s.row_width()) * ldz, 0.0f);
    part.bias.assign(gate_width, 0.0f);
  }
  ParallelOverRows(pool, s.batch, num_threads, [&](int first, int end) {
    BackwardRows(s, wt, xs.typed_data(), h0.typed_data(), hs.typed_data(), gates.typed_data(),
                 cs.typed_data(), c0.typed_data(), step_mask.typed_data(), input_dropout.typed_data(),
                 recurrent_dropout.typed_data(), dhs.typed_data(), dh_last.typed_data(), dc_last.typed_data(),
                 dxs->typed_data(), dh0->typed_data(), dc0->typed_data(), sums[first / chunk], first, end);
  });
  float* dw = d_weights->typed_data();
  float* db = d_bias->typed_data();
  std::fill(dw, dw + static_cast<size_t>(s.row_width()) * gate_width, 0.0f);
  std::fill(db, db + gate_width, 0.0f);
  for (const GradientSums& part : sums) {
    for (int i = 0; i < s.row_width(); ++i)
      for (int j = 0; j < gate_width; ++j) dw[i * gate_width + j] += part.weights[i * ldz + j];
    for (int j = 0; j < gate_width; ++j) db[j] += part.bias[j];
  }
  return ffi::Error::Success();
}

}  // namespace

#define SEQCLF_FORWARD_ARGS                                                                       \
  ffi::Ffi::Bind()                                                                                \
      .Ctx<ffi::ThreadPool>()                                                                     \
      .Arg<F32>()  /* xs */                                                                       \
      .Arg<F32>()  /* weights */                                                                  \
      .Arg<F32>()  /* bias */                                                                     \
      .Arg<F32>()  /* h0 */                                                                       \
      .Arg<F32>()  /* c0 */                                                                       \
      .Arg<Mask>() /* step_mask */                                                                \
      .Arg<F32>()  /* input_dropout_mask */                                                       \
      .Arg<F32>()  /* recurrent_dropout_mask */                                                   \
      .Attr<int64_t>("num_threads")                                                              \
      .Attr<bool>("bf16")

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqclfLstmForward, Forward,
                              SEQCLF_FORWARD_ARGS
                                  .Ret<F32>()    // hs
                                  .Ret<F32>()    // cs
                                  .Ret<F32>());  // gates

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqclfLstmInference, Inference,
                              SEQCLF_FORWARD_ARGS
                                  .Ret<F32>()    // hs
                                  .Ret<F32>());  // c_last

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqclfLstmBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()   // xs
                                  .Arg<F32>()   // weights
                                  .Arg<F32>()   // h0
                                  .Arg<F32>()   // c0
                                  .Arg<Mask>()  // step_mask
                                  .Arg<F32>()   // input_dropout_mask
                                  .Arg<F32>()   // recurrent_dropout_mask
                                  .Arg<F32>()   // hs
                                  .Arg<F32>()   // cs
                                  .Arg<F32>()   // gates
                                  .Arg<F32>()   // dhs
                                  .Arg<F32>()   // dh_last
                                  .Arg<F32>()   // dc_last
                                  .Attr<int64_t>("num_threads")
                                  .Attr<bool>("bf16")
                                  .Ret<F32>()    // dxs
                                  .Ret<F32>()    // dh0
                                  .Ret<F32>()    // dc0
                                  .Ret<F32>()    // d_weights
                                  .Ret<F32>());  // d_bias

// Whether this build has the bf16 products (the CPU it was built for has AVX512-BF16).
extern "C" int SeqclfLstmHasBf16() { return kHasBf16 ? 1 : 0; }

// Whether they run on AMX tiles in this process (UseAmx), rather than with vdpbf16ps.
extern "C" int SeqclfLstmBf16OnAmx() { return kHasBf16 && UseAmx() ? 1 : 0; }

// ---------------------------------------------------------------------------------------------------------
// The GRU (seqclf/rnn/gru_cpu_kernel.py): the same row ranges, masked-row compaction, register-blocked
// float32 matmul over packed panels and staged non-temporal state stores as the LSTM above, around the GRU
// cell of Keras' reset_after=True and PyTorch's nn.GRU (seqclf/rnn/gru_api.py):
//   z = sigmoid(x W_z + b_z + h U_z + b'_z), r = sigmoid(x W_r + b_r + h U_r + b'_r),
//   n = tanh(x W_n + b_n + r * (h U_n + b'_n)), h_new = z * h + (1 - z) * n.
// A step's pre-activations are one row [z | r | xn | hn] of four blocks, each H rounded up to whole vectors
// (Hp): xn = x W_n + b_n and hn = h U_n + b'_n stay apart because r scales only hn. Three products fill it,
// each over only the operands that enter it (no zero blocks, so an infinite input meets no 0 * inf):
// [x, h] -> [z | r | xn] as x @ [W_z W_r W_n] (+ bias) and h @ [U_z U_r], and h @ U_n (+ b'_n) -> hn.
// The stored gates are [z | r | n | hn] (activated, hn as is), all the backward pass needs besides h.
// Handlers, float32 and batch-major:
//   SeqclfGruForward   (xs, kernel, recurrent_kernel, bias, h0, step_mask, input_dropout_mask,
//                       recurrent_dropout_mask) -> (hs, gates [B, T, 4 Hp])
//   SeqclfGruInference (same arguments) -> hs
//   SeqclfGruBackward  (xs, kernel, recurrent_kernel, h0, step_mask, input_dropout_mask,
//                       recurrent_dropout_mask, hs, gates, dhs, dh_last)
//                       -> (dxs, dh0, d_kernel [E, 3H], d_recurrent_kernel [H, 3H], d_bias [2, 3H])
// with Keras' parameter layout (kernel [E, 3H], recurrent_kernel [H, 3H], gates z, r, n; bias [2, 3H]).
// With the `bf16` attribute the step's products (forward, and dx and dh backward) are bfloat16 as the
// LSTM's (StepWeights, StepMatmul); the weight gradient stays a float32 product of the stored steps.

namespace {

inline int GruBlock(int hidden) { return RoundUp(hidden, kLanes); }

// Columns [first_gate * Hp, (first_gate + gates) * Hp) of `matrix` [rows, 3H] (gates of H columns) in
// blocks of Hp, the padding zero, as a step product's weights; or, `transposed`, their transpose.
StepWeights GateWeights(const float* matrix, int rows, int hidden, int first_gate, int gates, bool transposed,
                        bool bf16) {
  const int hp = GruBlock(hidden), cols = 3 * hidden;
  std::vector<float> blocks(static_cast<size_t>(rows) * gates * hp, 0.0f);  // [rows, gates * Hp]
  for (int r = 0; r < rows; ++r)
    for (int gate = 0; gate < gates; ++gate)
      std::memcpy(&blocks[(static_cast<size_t>(r) * gates + gate) * hp],
                  matrix + static_cast<size_t>(r) * cols + (first_gate + gate) * hidden, hidden * sizeof(float));
  return StepWeights(blocks.data(), rows, gates * hp, transposed, bf16);
}

#ifdef __AVX512F__
// x where x is NaN, else y: sigmoid and tanh of a NaN are NaN, as in `scan` (Exp clamps its argument).
inline __m512 KeepNan(__m512 x, __m512 y) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), y, x);
}

// One unmasked step of one row: the pre-activations zr [4 Hp] become the gates [z | r | n | hn] in place
// and h the new state.
inline void GruCellForward(int hidden, float* __restrict zr, float* __restrict h) {
  const int hp = GruBlock(hidden);
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int k = 0; k < hidden; k += kLanes) {
    const __mmask16 m = Lanes(k, hidden);
    auto load = [m](const float* p) { return _mm512_maskz_loadu_ps(m, p); };
    const __m512 az = load(zr + k), ar = load(zr + hp + k);
    const __m512 xn = load(zr + 2 * hp + k), hn = load(zr + 3 * hp + k);
    const __m512 z = KeepNan(az, Sigmoid(az)), r = KeepNan(ar, Sigmoid(ar));
    const __m512 an = _mm512_fmadd_ps(r, hn, xn), n = KeepNan(an, Tanh(an));
    _mm512_mask_storeu_ps(zr + k, m, z);
    _mm512_mask_storeu_ps(zr + hp + k, m, r);
    _mm512_mask_storeu_ps(zr + 2 * hp + k, m, n);
    _mm512_mask_storeu_ps(h + k, m, _mm512_fmadd_ps(z, load(h + k), _mm512_mul_ps(_mm512_sub_ps(one, z), n)));
  }
}

// The gradients through one unmasked step of one row (seqclf/rnn/gru_fused.py): from the gates g
// [z | r | n | hn], h_prev and the cotangents dh_out (of the step's output) and dh (of its new state), it
// writes dz [dz_z | dz_r | dn | r dn] (the padding left alone), adds it to db, and turns dh into dh * z,
// the part of the cotangent of h_prev that does not pass through the matmul.
inline void GruCellBackward(int hidden, const float* __restrict g, const float* __restrict h_prev,
                            const float* __restrict dh_out, float* __restrict dh, float* __restrict dz,
                            float* __restrict db) {
  const int hp = GruBlock(hidden);
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int k = 0; k < hidden; k += kLanes) {
    const __mmask16 m = Lanes(k, hidden);
    auto load = [m](const float* p) { return _mm512_maskz_loadu_ps(m, p); };
    auto store = [m](float* p, __m512 v) { _mm512_mask_storeu_ps(p, m, v); };
    const __m512 z = load(g + k), r = load(g + hp + k), n = load(g + 2 * hp + k), hn = load(g + 3 * hp + k);
    const __m512 d = _mm512_add_ps(load(dh + k), load(dh_out + k));
    const __m512 dz_z = _mm512_mul_ps(_mm512_mul_ps(d, _mm512_sub_ps(load(h_prev + k), n)),
                                      _mm512_mul_ps(z, _mm512_sub_ps(one, z)));
    const __m512 dn = _mm512_mul_ps(_mm512_mul_ps(d, _mm512_sub_ps(one, z)), _mm512_fnmadd_ps(n, n, one));
    const __m512 dz_r = _mm512_mul_ps(_mm512_mul_ps(dn, hn), _mm512_mul_ps(r, _mm512_sub_ps(one, r)));
    const __m512 dhn = _mm512_mul_ps(dn, r);
    const __m512 parts[4] = {dz_z, dz_r, dn, dhn};
    for (int b = 0; b < 4; ++b) {
      store(dz + b * hp + k, parts[b]);
      store(db + b * hp + k, _mm512_add_ps(load(db + b * hp + k), parts[b]));
    }
    store(dh + k, _mm512_mul_ps(d, z));
  }
}
#else
inline float KeepNan(float x, float y) { return x != x ? x : y; }

inline void GruCellForward(int hidden, float* __restrict zr, float* __restrict h) {
  const int hp = GruBlock(hidden);
  for (int k = 0; k < hidden; ++k) {
    const float z = KeepNan(zr[k], Sigmoid(zr[k])), r = KeepNan(zr[hp + k], Sigmoid(zr[hp + k]));
    const float an = zr[2 * hp + k] + r * zr[3 * hp + k], n = KeepNan(an, Tanh(an));
    zr[k] = z, zr[hp + k] = r, zr[2 * hp + k] = n;
    h[k] = z * h[k] + (1.0f - z) * n;
  }
}

inline void GruCellBackward(int hidden, const float* __restrict g, const float* __restrict h_prev,
                            const float* __restrict dh_out, float* __restrict dh, float* __restrict dz,
                            float* __restrict db) {
  const int hp = GruBlock(hidden);
  for (int k = 0; k < hidden; ++k) {
    const float z = g[k], r = g[hp + k], n = g[2 * hp + k], hn = g[3 * hp + k];
    const float d = dh[k] + dh_out[k];
    const float dn = d * (1.0f - z) * (1.0f - n * n);
    const float parts[4] = {d * (h_prev[k] - n) * z * (1.0f - z), dn * hn * r * (1.0f - r), dn, dn * r};
    for (int b = 0; b < 4; ++b) dz[b * hp + k] = parts[b], db[b * hp + k] += parts[b];
    dh[k] = d * z;
  }
}
#endif

// The forward weights: x @ [W_z W_r W_n] with the summed biases, h @ [U_z U_r], h @ U_n with b'_n.
struct GruForwardWeights {
  StepWeights input, recurrent_zr, recurrent_n;
  std::vector<float> input_bias, recurrent_bias;  // [3 Hp]: b + b' for z and r, b_n; [Hp]: b'_n
  GruForwardWeights(const float* kernel, const float* recurrent_kernel, const float* bias, int input_size,
                    int hidden, bool bf16)
      : input(GateWeights(kernel, input_size, hidden, 0, 3, false, bf16)),
        recurrent_zr(GateWeights(recurrent_kernel, hidden, hidden, 0, 2, false, bf16)),
        recurrent_n(GateWeights(recurrent_kernel, hidden, hidden, 2, 1, false, bf16)),
        input_bias(3 * GruBlock(hidden), 0.0f),
        recurrent_bias(GruBlock(hidden), 0.0f) {
    const int hp = GruBlock(hidden);
    for (int gate = 0; gate < 3; ++gate)
      for (int c = 0; c < hidden; ++c)
        input_bias[gate * hp + c] =
            bias[gate * hidden + c] + (gate < 2 ? bias[3 * hidden + gate * hidden + c] : 0.0f);
    for (int c = 0; c < hidden; ++c) recurrent_bias[c] = bias[3 * hidden + 2 * hidden + c];
  }
};

// The forward loop over batch rows [first, end); `gates` null for inference. As ForwardRows: only the rows
// whose step is not masked enter the products; a masked row repeats its state into hs.
void GruForwardRows(const Shapes& s, const float* xs, const GruForwardWeights& w, const float* h0,
                    const bool* step_mask, const float* input_dropout, const float* recurrent_dropout,
                    float* hs, float* gates, int first, int end) {
  const int rows = end - first, hidden = s.hidden, hp = GruBlock(hidden), ldz = 4 * hp;
  const int row_width = s.row_width();
  std::vector<float> h(h0 + first * hidden, h0 + end * hidden);
  std::vector<float> a(static_cast<size_t>(rows) * row_width), z(static_cast<size_t>(rows) * ldz, 0.0f);
  std::vector<int> active(rows);
  std::vector<uint32_t> scratch;  // a step's operand rows as bf16 pairs (StepMatmul)
  const int staged = std::min(kStagedSteps, std::max(s.steps, 1));
  std::vector<float> h_staged(static_cast<size_t>(rows) * staged * hidden);
  auto flush = [&](int t0, int count) {
    for (int r = 0; r < rows; ++r)
      StreamRow(hs + s.at(first + r, t0) * hidden, &h_staged[static_cast<size_t>(r) * staged * hidden],
                count * hidden);
  };
  for (int t = 0; t < s.steps; ++t) {
    if (t + kPrefetchSteps < s.steps)
      for (int r = 0; r < rows; ++r)
        Prefetch(xs + s.at(first + r, t + kPrefetchSteps) * s.input_size, s.input_size);
    const int n = ActiveRows(s, step_mask, first, end, t, active.data());
    if (n > 0) {
      StepInputs(s, xs, input_dropout, recurrent_dropout, first, active.data(), n, t,
                 [&](int r) { return &h[r * hidden]; }, a.data());
      const float* a_h = a.data() + s.input_size;
      StepMatmul(w.input, a.data(), row_width, n, z.data(), ldz, scratch, w.input_bias.data());
      StepMatmul(w.recurrent_zr, a_h, row_width, n, z.data(), ldz, scratch);
      StepMatmul(w.recurrent_n, a_h, row_width, n, z.data() + 3 * hp, ldz, scratch, w.recurrent_bias.data());
      for (int i = 0; i < n; ++i) {
        float* zr = &z[i * ldz];
        GruCellForward(hidden, zr, &h[active[i] * hidden]);
        if (gates != nullptr) StreamRow(gates + s.at(first + active[i], t) * ldz, zr, ldz);
      }
    }
    const int slot = t % staged;
    for (int r = 0; r < rows; ++r)
      std::memcpy(&h_staged[(static_cast<size_t>(r) * staged + slot) * hidden], &h[r * hidden],
                  hidden * sizeof(float));
    if (slot == staged - 1 || t == s.steps - 1) flush(t - slot, slot + 1);
  }
  StreamFence();
}

// The backward weights: dz[:, :3 Hp] @ [W_z W_r W_n]^T -> dx, dz[:, :2 Hp] @ [U_z U_r]^T and
// dz[:, 3 Hp:] @ U_n^T -> dh.
struct GruBackwardWeights {
  StepWeights input_t, recurrent_zr_t, recurrent_n_t;
  GruBackwardWeights(const float* kernel, const float* recurrent_kernel, int input_size, int hidden, bool bf16)
      : input_t(GateWeights(kernel, input_size, hidden, 0, 3, true, bf16)),
        recurrent_zr_t(GateWeights(recurrent_kernel, hidden, hidden, 0, 2, true, bf16)),
        recurrent_n_t(GateWeights(recurrent_kernel, hidden, hidden, 2, 1, true, bf16)) {}
};

// The reverse loop over batch rows [first, end), as BackwardRows: dxs, dh0 and this range's sums of
// x^T @ [dz_z | dz_r | dn] and h^T @ [dz_z | dz_r | r dn] (the kernel's and the recurrent kernel's
// gradients, rows [E + H] of 3 Hp each) and of dz ([4 Hp]); a masked step passes its cotangent through.
void GruBackwardRows(const Shapes& s, const GruBackwardWeights& w, const float* xs, const float* h0,
                     const float* hs, const float* gates, const bool* step_mask, const float* input_dropout,
                     const float* recurrent_dropout, const float* dhs, const float* dh_last, float* dxs,
                     float* dh0, GradientSums& sums, int first, int end) {
  const int rows = end - first, hidden = s.hidden, input_size = s.input_size, hp = GruBlock(hidden);
  const int ldz = 4 * hp, row_width = s.row_width(), ld_x = RoundUp(input_size, kLanes);
  std::vector<float> dh_next(dh_last + first * hidden, dh_last + end * hidden);
  const int capacity = std::max(1, kGradientDepth / std::max(rows, 1)) * rows;
  std::vector<float> dz_steps(static_cast<size_t>(capacity) * ldz, 0.0f);
  std::vector<float> dz_input(static_cast<size_t>(capacity) * 3 * hp), dz_recurrent(dz_input.size());
  std::vector<float> a_steps(static_cast<size_t>(capacity) * row_width);
  std::vector<float> d_x(static_cast<size_t>(rows) * ld_x), d_h(static_cast<size_t>(rows) * hp);
  const std::vector<float> zeros(std::max(ld_x, hp), 0.0f);
  std::vector<int> active(rows);
  std::vector<uint32_t> scratch;  // dz rows as bf16 pairs (StepMatmul)
  int pending = 0;
  // The weight gradients of the pending steps: the x columns of their inputs (read transposed) against
  // the input side of dz, the h columns against the recurrent side, dz packed in panels first.
  auto flush = [&] {
    if (pending > 0) {
      const int width = 3 * hp;
      auto dz_at = [&](int k, int j) { return dz_steps[static_cast<size_t>(k) * ldz + j]; };
      PackPanels(pending, width, dz_at, dz_input.data());
      PackPanels(pending, width, [&](int k, int j) { return dz_at(k, j < 2 * hp ? j : j + hp); },
                 dz_recurrent.data());
      Matmul({a_steps.data(), 1, row_width, input_size, pending, dz_input.data(), 0, width, sums.weights.data(),
              width, true});
      Matmul({a_steps.data() + input_size, 1, row_width, hidden, pending, dz_recurrent.data(), 0, width,
              sums.weights.data() + static_cast<size_t>(input_size) * width, width, true});
    }
    pending = 0;
  };
  for (int t = s.steps - 1; t >= 0; --t) {
    if (t - kPrefetchSteps >= 0)
      for (int r = 0; r < rows; ++r) {
        const size_t ahead = s.at(first + r, t - kPrefetchSteps);
        Prefetch(gates + ahead * ldz, ldz);
        Prefetch(hs + ahead * hidden, hidden);
        Prefetch(dhs + ahead * hidden, hidden);
        Prefetch(xs + ahead * input_size, input_size);
      }
    const int n = ActiveRows(s, step_mask, first, end, t, active.data());
    for (int r = 0, i = 0; r < rows; ++r) {
      if (i < n && active[i] == r) {
        ++i;
        continue;
      }
      const size_t row = s.at(first + r, t);
      for (int k = 0; k < hidden; ++k) dh_next[r * hidden + k] += dhs[row * hidden + k];
      std::fill(dxs + row * input_size, dxs + (row + 1) * input_size, 0.0f);
    }
    if (n == 0) continue;
    if (pending + n > capacity) flush();
    float* dz = &dz_steps[static_cast<size_t>(pending) * ldz];
    auto h_prev = [&](int r) {
      return t > 0 ? hs + s.at(first + r, t - 1) * hidden : h0 + (first + r) * hidden;
    };
    for (int i = 0; i < n; ++i) {
      const int r = active[i];
      const size_t row = s.at(first + r, t);
      GruCellBackward(hidden, gates + row * ldz, h_prev(r), dhs + row * hidden, &dh_next[r * hidden],
                      &dz[i * ldz], sums.bias.data());
    }
    StepMatmul(w.input_t, dz, ldz, n, d_x.data(), ld_x, scratch, zeros.data());
    StepMatmul(w.recurrent_zr_t, dz, ldz, n, d_h.data(), hp, scratch, zeros.data());
    StepMatmul(w.recurrent_n_t, dz + 3 * hp, ldz, n, d_h.data(), hp, scratch);
    StepInputs(s, xs, input_dropout, recurrent_dropout, first, active.data(), n, t, h_prev,
               &a_steps[static_cast<size_t>(pending) * row_width]);
    pending += n;
    for (int i = 0; i < n; ++i) {
      const int r = active[i], b = first + r;
      float* dx = dxs + s.at(b, t) * input_size;
      const float* x_mask = input_dropout + b * input_size;
      const float* h_mask = recurrent_dropout + b * hidden;
      for (int k = 0; k < input_size; ++k) dx[k] = d_x[i * ld_x + k] * x_mask[k];
      for (int k = 0; k < hidden; ++k) dh_next[r * hidden + k] += d_h[i * hp + k] * h_mask[k];
    }
  }
  flush();
  std::memcpy(dh0 + first * hidden, dh_next.data(), dh_next.size() * sizeof(float));
}

// The GRU handlers' arguments, held against the sizes of xs and h0 as the LSTM's are (`ShapeCheck`): every
// argument and every result buffer, so a direct call with buffers that disagree is an InvalidArgument error
// naming the buffer, never a read or write out of bounds.
bool GruCheckArguments(ShapeCheck& check, Shapes& s, const F32& xs, const F32& kernel,
                       const F32& recurrent_kernel, const F32& h0, const Mask& step_mask,
                       const F32& input_dropout, const F32& recurrent_dropout) {
  if (!ShapesOf(check, xs, h0, s)) return false;
  const int64_t cols = 3 * static_cast<int64_t>(s.hidden);
  check.Expect("kernel", kernel.dimensions(), {s.input_size, cols});
  check.Expect("recurrent_kernel", recurrent_kernel.dimensions(), {s.hidden, cols});
  check.Expect("h0", h0.dimensions(), {s.batch, s.hidden});
  check.Expect("step_mask", step_mask.dimensions(), {s.batch, s.steps});
  check.Expect("input_dropout_mask", input_dropout.dimensions(), {s.batch, s.input_size});
  check.Expect("recurrent_dropout_mask", recurrent_dropout.dimensions(), {s.batch, s.hidden});
  return check.ok();
}

// The stored gates z, r, n, hn: four blocks of H rounded up to whole vectors, per (row, step).
int64_t GruGateWidth(const Shapes& s) { return 4 * static_cast<int64_t>(GruBlock(s.hidden)); }

ffi::Error GruRunForward(const char* handler, ffi::ThreadPool& pool, F32& xs, F32& kernel, F32& recurrent_kernel,
                         F32& bias, F32& h0, Mask& step_mask, F32& input_dropout, F32& recurrent_dropout,
                         int64_t num_threads, bool bf16, F32Out hs, F32Out* gates) {
  if (bf16 && !kHasBf16) return NoBf16();
  ShapeCheck check(handler);
  Shapes s{};
  if (GruCheckArguments(check, s, xs, kernel, recurrent_kernel, h0, step_mask, input_dropout,
                        recurrent_dropout)) {
    check.Expect("bias", bias.dimensions(), {2, 3 * static_cast<int64_t>(s.hidden)});
    check.Expect("hs (result)", hs->dimensions(), {s.batch, s.steps, s.hidden});
    if (gates) check.Expect("gates (result)", (*gates)->dimensions(), {s.batch, s.steps, GruGateWidth(s)});
  }
  if (!check.ok()) return check.error();
  const GruForwardWeights w(kernel.typed_data(), recurrent_kernel.typed_data(), bias.typed_data(), s.input_size,
                            s.hidden, bf16);
  float* gates_data = gates ? (*gates)->typed_data() : nullptr;
  ParallelOverRows(pool, s.batch, num_threads, [&](int first, int end) {
    GruForwardRows(s, xs.typed_data(), w, h0.typed_data(), step_mask.typed_data(), input_dropout.typed_data(),
                   recurrent_dropout.typed_data(), hs->typed_data(), gates_data, first, end);
  });
  return ffi::Error::Success();
}

ffi::Error GruForward(ffi::ThreadPool pool, F32 xs, F32 kernel, F32 recurrent_kernel, F32 bias, F32 h0,
                      Mask step_mask, F32 input_dropout, F32 recurrent_dropout, int64_t num_threads, bool bf16,
                      F32Out hs, F32Out gates) {
  return GruRunForward("seqclf_gru_forward", pool, xs, kernel, recurrent_kernel, bias, h0, step_mask,
                       input_dropout, recurrent_dropout, num_threads, bf16, hs, &gates);
}

ffi::Error GruInference(ffi::ThreadPool pool, F32 xs, F32 kernel, F32 recurrent_kernel, F32 bias, F32 h0,
                        Mask step_mask, F32 input_dropout, F32 recurrent_dropout, int64_t num_threads, bool bf16,
                        F32Out hs) {
  return GruRunForward("seqclf_gru_inference", pool, xs, kernel, recurrent_kernel, bias, h0, step_mask,
                       input_dropout, recurrent_dropout, num_threads, bf16, hs, nullptr);
}

ffi::Error GruBackward(ffi::ThreadPool pool, F32 xs, F32 kernel, F32 recurrent_kernel, F32 h0, Mask step_mask,
                       F32 input_dropout, F32 recurrent_dropout, F32 hs, F32 gates, F32 dhs, F32 dh_last,
                       int64_t num_threads, bool bf16, F32Out dxs, F32Out dh0, F32Out d_kernel,
                       F32Out d_recurrent_kernel, F32Out d_bias) {
  if (bf16 && !kHasBf16) return NoBf16();
  ShapeCheck check("seqclf_gru_backward");
  Shapes s{};
  if (GruCheckArguments(check, s, xs, kernel, recurrent_kernel, h0, step_mask, input_dropout,
                        recurrent_dropout)) {
    const int64_t cols = 3 * static_cast<int64_t>(s.hidden);
    const std::initializer_list<int64_t> state = {s.batch, s.steps, s.hidden};
    check.Expect("hs", hs.dimensions(), state);
    check.Expect("gates", gates.dimensions(), {s.batch, s.steps, GruGateWidth(s)});
    check.Expect("dhs", dhs.dimensions(), state);
    check.Expect("dh_last", dh_last.dimensions(), {s.batch, s.hidden});
    check.Expect("dxs (result)", dxs->dimensions(), {s.batch, s.steps, s.input_size});
    check.Expect("dh0 (result)", dh0->dimensions(), {s.batch, s.hidden});
    check.Expect("d_kernel (result)", d_kernel->dimensions(), {s.input_size, cols});
    check.Expect("d_recurrent_kernel (result)", d_recurrent_kernel->dimensions(), {s.hidden, cols});
    check.Expect("d_bias (result)", d_bias->dimensions(), {2, cols});
  }
  if (!check.ok()) return check.error();
  const int hidden = s.hidden, hp = GruBlock(hidden), ldz = 4 * hp;
  const GruBackwardWeights w(kernel.typed_data(), recurrent_kernel.typed_data(), s.input_size, hidden, bf16);
  const int chunk = RowsPerRange(s.batch, num_threads);
  std::vector<GradientSums> sums(std::max(1, (s.batch + chunk - 1) / chunk));
  for (GradientSums& part : sums) {
    part.weights.assign(static_cast<size_t>(s.row_width()) * 3 * hp, 0.0f);
    part.bias.assign(ldz, 0.0f);
  }
  ParallelOverRows(pool, s.batch, num_threads, [&](int first, int end) {
    GruBackwardRows(s, w, xs.typed_data(), h0.typed_data(), hs.typed_data(), gates.typed_data(),
                    step_mask.typed_data(), input_dropout.typed_data(), recurrent_dropout.typed_data(),
                    dhs.typed_data(), dh_last.typed_data(), dxs->typed_data(), dh0->typed_data(),
                    sums[first / chunk], first, end);
  });
  // The sums in a fixed order, without the padding; the biases' gradients are dz's blocks z, r, n (input
  // side) and z, r, hn (recurrent side).
  float* dk = d_kernel->typed_data();
  float* dr = d_recurrent_kernel->typed_data();
  float* db = d_bias->typed_data();
  const int cols = 3 * hidden;
  std::fill(dk, dk + static_cast<size_t>(s.input_size) * cols, 0.0f);
  std::fill(dr, dr + static_cast<size_t>(hidden) * cols, 0.0f);
  std::fill(db, db + 2 * cols, 0.0f);
  for (const GradientSums& part : sums)
    for (int gate = 0; gate < 3; ++gate) {
      const int block = gate * hp, recurrent_block = (gate == 2 ? 3 : gate) * hp;
      for (int c = 0; c < hidden; ++c) {
        const int to = gate * hidden + c;
        for (int i = 0; i < s.input_size; ++i)
          dk[static_cast<size_t>(i) * cols + to] += part.weights[static_cast<size_t>(i) * 3 * hp + block + c];
        for (int i = 0; i < hidden; ++i)
          dr[static_cast<size_t>(i) * cols + to] +=
              part.weights[static_cast<size_t>(s.input_size + i) * 3 * hp + block + c];
        db[to] += part.bias[block + c];
        db[cols + to] += part.bias[recurrent_block + c];
      }
    }
  return ffi::Error::Success();
}

}  // namespace

#define SEQCLF_GRU_FORWARD_ARGS                   \
  ffi::Ffi::Bind()                                \
      .Ctx<ffi::ThreadPool>()                     \
      .Arg<F32>()  /* xs */                       \
      .Arg<F32>()  /* kernel */                   \
      .Arg<F32>()  /* recurrent_kernel */         \
      .Arg<F32>()  /* bias */                     \
      .Arg<F32>()  /* h0 */                       \
      .Arg<Mask>() /* step_mask */                \
      .Arg<F32>()  /* input_dropout_mask */       \
      .Arg<F32>()  /* recurrent_dropout_mask */   \
      .Attr<int64_t>("num_threads")               \
      .Attr<bool>("bf16")

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqclfGruForward, GruForward,
                              SEQCLF_GRU_FORWARD_ARGS
                                  .Ret<F32>()    // hs
                                  .Ret<F32>());  // gates

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqclfGruInference, GruInference, SEQCLF_GRU_FORWARD_ARGS.Ret<F32>());  // hs

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqclfGruBackward, GruBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()   // xs
                                  .Arg<F32>()   // kernel
                                  .Arg<F32>()   // recurrent_kernel
                                  .Arg<F32>()   // h0
                                  .Arg<Mask>()  // step_mask
                                  .Arg<F32>()   // input_dropout_mask
                                  .Arg<F32>()   // recurrent_dropout_mask
                                  .Arg<F32>()   // hs
                                  .Arg<F32>()   // gates
                                  .Arg<F32>()   // dhs
                                  .Arg<F32>()   // dh_last
                                  .Attr<int64_t>("num_threads")
                                  .Attr<bool>("bf16")
                                  .Ret<F32>()    // dxs
                                  .Ret<F32>()    // dh0
                                  .Ret<F32>()    // d_kernel
                                  .Ret<F32>()    // d_recurrent_kernel
                                  .Ret<F32>());  // d_bias
