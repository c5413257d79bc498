// The LSTM cell: its step arithmetic, forward and reverse loops over a range of batch rows, and its
// handlers. A step is one product of [x_t * input_dropout, h_{t-1} * recurrent_dropout] against the stacked
// weights [W; U], so the input projection is part of the step's matmul.
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
// Included once, by cpu_kernel.cc.

namespace {

#ifdef __AVX512F__
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
  const int block_rows = GradientRows(bf16);
  std::vector<GradientSums> sums = GradientBlocks(s.batch, block_rows, s.row_width(), ldz, gate_width);
  ParallelOverRanges(pool, s.batch, block_rows, num_threads, [&](int first, int end) {
    BackwardRows(s, wt, xs.typed_data(), h0.typed_data(), hs.typed_data(), gates.typed_data(),
                 cs.typed_data(), c0.typed_data(), step_mask.typed_data(), input_dropout.typed_data(),
                 recurrent_dropout.typed_data(), dhs.typed_data(), dh_last.typed_data(), dc_last.typed_data(),
                 dxs->typed_data(), dh0->typed_data(), dc0->typed_data(), sums[first / block_rows], first,
                 end);
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
  SEQCLF_BIND_XS                                                                                  \
      .Arg<F32>()  /* weights */                                                                  \
      .Arg<F32>()  /* bias */                                                                     \
      .Arg<F32>()  /* h0 */                                                                       \
      .Arg<F32>()  /* c0 */                                                                       \
      SEQCLF_BIND_MASKS                                                                           \
      SEQCLF_BIND_ATTRIBUTES

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
                              SEQCLF_BIND_XS
                                  .Arg<F32>()   // weights
                                  .Arg<F32>()   // h0
                                  .Arg<F32>()   // c0
                                  SEQCLF_BIND_MASKS
                                  .Arg<F32>()   // hs
                                  .Arg<F32>()   // cs
                                  .Arg<F32>()   // gates
                                  .Arg<F32>()   // dhs
                                  .Arg<F32>()   // dh_last
                                  .Arg<F32>()   // dc_last
                                  SEQCLF_BIND_ATTRIBUTES
                                  .Ret<F32>()    // dxs
                                  .Ret<F32>()    // dh0
                                  .Ret<F32>()    // dc0
                                  .Ret<F32>()    // d_weights
                                  .Ret<F32>());  // d_bias
