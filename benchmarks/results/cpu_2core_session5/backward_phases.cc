// One thread's backward loop outside JAX, with the time of each phase (rdtsc): built and run by backward_phases.py.
#include KERNEL  // the kernel with phase timers, written by backward_phases.py
#include <cstdio>
#include <random>
int main(int argc, char** argv) {
  int B = 32, T = 500, E = 32, H = 100;
  if (argc > 1) sscanf(argv[1], "%d,%d,%d,%d", &B, &T, &E, &H);
  Shapes s{B, T, E, H};
  std::mt19937 g(0); std::normal_distribution<float> nd(0, 0.1f);
  auto vec = [&](size_t n) { std::vector<float> v(n); for (auto& x : v) x = nd(g); return v; };
  auto xs = vec((size_t)B*T*E), W = vec((size_t)(E+H)*4*H), bias = vec(4*H), h0 = vec(B*H), c0 = vec(B*H);
  std::vector<float> ones_e(B*E, 1.f), ones_h(B*H, 1.f);
  std::unique_ptr<bool[]> mask(new bool[B*T]); for (int i=0;i<B*T;++i) mask[i]=true;
  float* hsp=(float*)aligned_alloc(64,(size_t)B*T*H*4); float* csp=(float*)aligned_alloc(64,(size_t)B*T*H*4); float* gp=(float*)aligned_alloc(64,(size_t)B*T*H*16);
  std::vector<float> dhs = vec((size_t)B*T*H), dxs((size_t)B*T*E), dh0(B*H), dc0(B*H), dl = vec(B*H), dcl = vec(B*H);
  bool bf = argc > 2; StepWeights w(W.data(), E+H, 4*H, false, bf), wt(W.data(), E+H, 4*H, true, bf);
  ForwardRows(s, xs.data(), w, bias.data(), h0.data(), c0.data(), mask.get(), ones_e.data(), ones_h.data(), hsp, csp, gp, nullptr, 0, B);
  for (int rep = 0; rep < 4; ++rep) {
    memset(g_ph, 0, sizeof g_ph);
    GradientSums sums; sums.weights.assign((size_t)(E+H)*RoundUp(4*H,16), 0.f); sums.bias.assign(4*H, 0.f);
    uint64_t t = __rdtsc();
    BackwardRows(s, wt, xs.data(), h0.data(), hsp, gp, csp, c0.data(), mask.get(), ones_e.data(), ones_h.data(), dhs.data(), dl.data(), dcl.data(), dxs.data(), dh0.data(), dc0.data(), sums, 0, B);
    double tot = __rdtsc() - t;
    const char* nm[] = {"prefetches+masked rows", "weight-gradient product", "gate gradients", "dz @ [W; U]^T", "step inputs"};
    double rest = tot;
    printf("%s total %.1f Mtsc:", bf?"bf16":"f32", tot/1e6);
    for (int i = 0; i < 5; ++i) { printf(" %s %.1f%%", nm[i], 100*g_ph[i]/tot); rest -= g_ph[i]; }
    printf(" rest (dx, dh) %.1f%%\n", 100*rest/tot);
  }
}
