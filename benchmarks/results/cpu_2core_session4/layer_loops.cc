// One thread's forward and backward loops of the cpu_kernel engine, outside JAX: B rows x T steps,
// GFLOP/s against the LSTM matmuls, the step product alone and the cell arithmetic alone. Build and run from
// the repository root (see README.md here).
#include "../../../seqclf/lstm/cpu_kernel.cc"
#include <chrono>
#include <cstdio>
#include <random>
using clk = std::chrono::steady_clock;
static double secs(clk::time_point t) { return std::chrono::duration<double>(clk::now() - t).count(); }
int main(int argc, char** argv) {
  int B = 32, T = 500, E = 32, H = 100;
  if (argc > 1) sscanf(argv[1], "%d,%d,%d,%d", &B, &T, &E, &H);
  Shapes s{B, T, E, H};
  std::mt19937 g(0); std::normal_distribution<float> nd(0, 0.1f);
  auto vec = [&](size_t n) { std::vector<float> v(n); for (auto& x : v) x = nd(g); return v; };
  auto xs = vec((size_t)B*T*E), W = vec((size_t)(E+H)*4*H), bias = vec(4*H), h0 = vec(B*H), c0 = vec(B*H);
  std::vector<float> ones_e(B*E, 1.f), ones_h(B*H, 1.f);
  std::unique_ptr<bool[]> mask(new bool[B*T]); for (int i=0;i<B*T;++i) mask[i]=true;
  float* hsp=(float*)aligned_alloc(64,(size_t)B*T*H*4); float* csp=(float*)aligned_alloc(64,(size_t)B*T*H*4); float* gp=(float*)aligned_alloc(64,(size_t)B*T*H*16); memset(hsp,0,(size_t)B*T*H*4); memset(csp,0,(size_t)B*T*H*4); memset(gp,0,(size_t)B*T*H*16);
  std::vector<float> dhs = vec((size_t)B*T*H), dxs((size_t)B*T*E), dh0(B*H), dc0(B*H), dl = vec(B*H), dcl = vec(B*H);
  StepWeights w(W.data(), E+H, 4*H, false, false), wt(W.data(), E+H, 4*H, true, false);
  double fl = 2.0*B*T*(E+H)*4*H;
  for (int rep = 0; rep < 5; ++rep) {
    auto t = clk::now();
    ForwardRows(s, xs.data(), w, bias.data(), h0.data(), c0.data(), mask.get(), ones_e.data(), ones_h.data(), hsp, csp, gp, nullptr, 0, B);
    double f = secs(t);
    GradientSums sums; sums.weights.assign((size_t)(E+H)*RoundUp(4*H,16), 0.f); sums.bias.assign(4*H, 0.f);
    t = clk::now();
    BackwardRows(s, wt, xs.data(), h0.data(), hsp, gp, csp, c0.data(), mask.get(), ones_e.data(), ones_h.data(), dhs.data(), dl.data(), dcl.data(), dxs.data(), dh0.data(), dc0.data(), sums, 0, B);
    double b = secs(t);
    // matmul alone: T steps of [B, E+H] x [E+H, 4H]
    std::vector<float> a((size_t)B*(E+H), 0.5f), z((size_t)B*RoundUp(4*H,16)); std::vector<uint32_t> scr;
    t = clk::now();
    for (int st = 0; st < T; ++st) StepMatmul(w, a.data(), E+H, B, z.data(), RoundUp(4*H,16), scr);
    double m = secs(t);
    std::vector<float> zz((size_t)B*4*H), hh(B*H), cc(B*H);
    t = clk::now();
    for (int st = 0; st < T; ++st) for (int r = 0; r < B; ++r) CellForward(H, &zz[r*4*H], &hh[r*H], &cc[r*H]);
    double c = secs(t);
    printf("fwd %.2f ms (%.0f GF/s)  bwd %.2f ms (%.0f GF/s)  fwd-matmul alone %.2f ms (%.0f GF/s)  cellfwd alone %.2f ms\n", f*1e3, fl/f/1e9, b*1e3, 2*fl/b/1e9, m*1e3, fl/m/1e9, c*1e3);
  }
}
