#include "../../../seqclf/lstm/cpu_kernel.cc"
#include <chrono>
#include <cstdio>
int main(int argc, char** argv) {
  int rows = 32, depth = 132, cols = 400, iters = 500;
  if (argc > 1) { rows = atoi(argv[1]); depth = atoi(argv[2]); cols = atoi(argv[3]); }
  std::vector<float> w(depth * cols), a(rows * depth), out(rows * RoundUp(cols, 16));
  for (auto& v : w) v = (rand() % 100) / 100.0f; for (auto& v : a) v = (rand() % 100) / 100.0f;
  StepWeights f(w.data(), depth, cols, false, false), b(w.data(), depth, cols, false, true);
  std::vector<uint32_t> scratch;
  for (int rep = 0; rep < 3; ++rep) for (int which = 0; which < 2; ++which) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) StepMatmul(which ? b : f, a.data(), depth, rows, out.data(), RoundUp(cols, 16), scratch);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("%s %.2f ms  %.1f GFLOP/s\n", which ? "bf16" : "f32 ", s * 1e3, 2.0 * rows * depth * cols * iters / s / 1e9);
  }
}
