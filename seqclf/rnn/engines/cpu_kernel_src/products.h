// The product library of the cpu_kernel engine: out += a @ w register-blocked in float32 over weights packed
// in column panels (Matmul, Panels), and bfloat16 products (operands rounded to bf16, sums in float32) with
// AVX512-BF16's vdpbf16ps or on AMX tiles (Bf16Product); StepWeights and StepMatmul, a recurrent step's
// product in either precision. Included once, by cpu_kernel.cc.

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
// The backward pass adds each step's weight gradient a^T @ dz into per-block sums, a product whose depth
// is the block's rows; it collects steps until the depth reaches about this, so the sums ([E + H, 4H],
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
  // An empty product (the GRU's x @ W for inputs of width 0) adds nothing; the products below would
  // split a depth of 0 into 0 slices.
  if (w.depth == 0) {
    if (init != nullptr)
      for (int r = 0; r < rows; ++r) std::memcpy(out + r * ldo, init, w.ld * sizeof(float));
    return;
  }
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

}  // namespace

// Whether this build has the bf16 products (the CPU it was built for has AVX512-BF16).
extern "C" int SeqclfLstmHasBf16() { return kHasBf16 ? 1 : 0; }

// Whether they run on AMX tiles in this process (UseAmx), rather than with vdpbf16ps.
extern "C" int SeqclfLstmBf16OnAmx() { return kHasBf16 && UseAmx() ? 1 : 0; }
