// The `cpu_kernel` engine: a whole LSTM or GRU layer as XLA FFI custom calls for the CPU.
//
// Why C++: on CPU, XLA runs a `lax.scan` step as a chain of single-threaded kernels with a fixed cost each,
// so at the article's shapes (B=64, H=100) the loop is bound by per-step overhead and by one core. Here a
// step is one register-blocked matmul plus one vectorised pass of gate arithmetic, and the batch rows,
// which never interact, are split over threads that run the whole time loop without synchronising.
// The input projection runs inside the loop, in the step's products, and the backward loop returns every
// gradient, so nothing of the layer is left to XLA.
//
// The source is one translation unit in four parts, each included once below: products.h (the float32,
// bf16 and AMX product library), common.h (threading, vector math, sizes, shape checks), lstm.h and gru.h
// (each cell's step, loops and handlers). The build (cpu_kernel.py) hashes every file of this folder.
//
// Built at first use by seqclf/rnn/engines/cpu_kernel.py (g++ -O3 -march=native); the tests compare it with
// the plain-JAX reference, seqclf/rnn/engines/scan.py (outputs and gradients, masks, dropout, vmap).

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

// One translation unit, so every helper inlines into both cells' loops as when they were one file.
#include "products.h"
#include "common.h"
#include "lstm.h"
#include "gru.h"
