// The GRU cell (`gru` of seqclf/rnn/engines/cpu_kernel.py): the same row ranges, masked-row compaction,
// register-blocked float32 matmul over packed panels and staged non-temporal state stores as the LSTM
// (lstm.h), around the GRU cell of Keras' reset_after=True and PyTorch's nn.GRU (seqclf/rnn/cells.py):
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
// Included once, by cpu_kernel.cc.

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
  const int block_rows = GradientRows(bf16);
  std::vector<GradientSums> sums = GradientBlocks(s.batch, block_rows, s.row_width(), 3 * hp, ldz);
  ParallelOverRanges(pool, s.batch, block_rows, num_threads, [&](int first, int end) {
    GruBackwardRows(s, w, xs.typed_data(), h0.typed_data(), hs.typed_data(), gates.typed_data(),
                    step_mask.typed_data(), input_dropout.typed_data(), recurrent_dropout.typed_data(),
                    dhs.typed_data(), dh_last.typed_data(), dxs->typed_data(), dh0->typed_data(),
                    sums[first / block_rows], first, end);
  });
  // The blocks in order, without the padding; the biases' gradients are dz's blocks z, r, n (input
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
  SEQCLF_BIND_XS                                  \
      .Arg<F32>()  /* kernel */                   \
      .Arg<F32>()  /* recurrent_kernel */         \
      .Arg<F32>()  /* bias */                     \
      .Arg<F32>()  /* h0 */                       \
      SEQCLF_BIND_MASKS                           \
      SEQCLF_BIND_ATTRIBUTES

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqclfGruForward, GruForward,
                              SEQCLF_GRU_FORWARD_ARGS
                                  .Ret<F32>()    // hs
                                  .Ret<F32>());  // gates

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqclfGruInference, GruInference, SEQCLF_GRU_FORWARD_ARGS.Ret<F32>());  // hs

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqclfGruBackward, GruBackward,
                              SEQCLF_BIND_XS
                                  .Arg<F32>()   // kernel
                                  .Arg<F32>()   // recurrent_kernel
                                  .Arg<F32>()   // h0
                                  SEQCLF_BIND_MASKS
                                  .Arg<F32>()   // hs
                                  .Arg<F32>()   // gates
                                  .Arg<F32>()   // dhs
                                  .Arg<F32>()   // dh_last
                                  SEQCLF_BIND_ATTRIBUTES
                                  .Ret<F32>()    // dxs
                                  .Ret<F32>()    // dh0
                                  .Ret<F32>()    // d_kernel
                                  .Ret<F32>()    // d_recurrent_kernel
                                  .Ret<F32>());  // d_bias
