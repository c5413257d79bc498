// What both cells' loops share: row ranges over XLA's thread pool, the vectorised exponential, sigmoid and
// tanh, the sizes of a call, streaming stores and prefetches, the compaction of unmasked rows, per-block
// gradient sums, and the handlers' shape checks. Included once, by cpu_kernel.cc.

namespace {

// Batch rows per thread: whole matmul row blocks where possible, so that each range runs full blocks.
int RowsPerRange(int rows, int64_t num_threads) {
  if (rows <= 0) return kRows;
  const int threads =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, (rows + kRows - 1) / kRows)));
  return RoundUp((rows + threads - 1) / threads, kRows);
}

// Runs body(first_row, end_row) over consecutive ranges of `chunk` rows on at most `num_threads` threads:
// the calling thread and XLA's intra-op thread pool. Threads claim ranges from a shared counter, so the
// caller never waits for a task that has not started (a late task finds nothing left and returns; the
// shared state outlives the call), and XLA's pool threads work on the layer instead of spinning beside
// threads of our own.
template <typename Body>
void ParallelOverRanges(ffi::ThreadPool& pool, int rows, int chunk, int64_t num_threads, const Body& body) {
  if (rows <= 0) return;
  const int ranges = (rows + chunk - 1) / chunk;
  const int workers = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, ranges)));
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
  for (int i = 1; i < workers; ++i) pool.Schedule([work] { work(); });
  work();
  std::unique_lock<std::mutex> lock(state->mutex);
  state->finished.wait(lock, [&] { return state->done.load() == ranges; });
}

// One range per thread: the forward loops, whose rows never interact.
template <typename Body>
void ParallelOverRows(ffi::ThreadPool& pool, int rows, int64_t num_threads, const Body& body) {
  ParallelOverRanges(pool, rows, RowsPerRange(rows, num_threads), num_threads, body);
}

// The backward loops sum the weight and bias gradients per block of GradientRows() batch rows (each block
// by one thread, in the order of its steps and rows) and then add the blocks in order, so a gradient's
// bits depend on the batch, never on the number of threads. float32's block is the matmul's 8-row register
// block (a batch of 64 still spreads over 8 threads); bfloat16's is an AMX tile's 16 rows.
inline int GradientRows(bool bf16) { return bf16 ? 16 : 8; }

// What one block's reverse loop adds up over its rows: the weight and bias gradients.
struct GradientSums {
  std::vector<float> weights;  // [E + H, pad(4H)], the rows of d[W; U]
  std::vector<float> bias;     // [4H]
};

// The sums of the batch's blocks of `block_rows`, each [rows, width] of weights and [bias_width] of biases, zeroed.
std::vector<GradientSums> GradientBlocks(int batch, int block_rows, int rows, int width, int bias_width) {
  std::vector<GradientSums> sums(std::max(1, (batch + block_rows - 1) / block_rows));
  for (GradientSums& block : sums) {
    block.weights.assign(static_cast<size_t>(rows) * width, 0.0f);
    block.bias.assign(bias_width, 0.0f);
  }
  return sums;
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

using F32 = ffi::Buffer<ffi::F32>;
using Mask = ffi::Buffer<ffi::PRED>;
using F32Out = ffi::ResultBuffer<ffi::F32>;

// The handlers get raw buffers: seqclf.rnn.rnn checks shapes before it calls them, but a direct
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

// The error of a bf16 call on a build without bf16 products.
ffi::Error NoBf16() {
  return ffi::Error::InvalidArgument("bf16 products need AVX512-BF16, which this CPU (or build) lacks");
}

}  // namespace

// What every handler of both cells binds (ffi::Ffi::Bind() chains): XLA's thread pool and xs first; the
// step mask and the dropout masks after its weights and initial state; the attributes last.
#define SEQCLF_BIND_XS ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>() /* xs */
#define SEQCLF_BIND_MASKS .Arg<Mask>() /* step_mask */ .Arg<F32>() /* input_dropout */ .Arg<F32>() /* recurrent_dropout */
#define SEQCLF_BIND_ATTRIBUTES .Attr<int64_t>("num_threads").Attr<bool>("bf16")
