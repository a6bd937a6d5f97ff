// This core's float32 FMA peak, for reporting the kernels' fraction of it
// (python -m vmae2_jax.bench kernels): 12 independent chains of vector FMAs,
// enough to cover the FMA latency on the two FMA pipes of current x86 cores
// (4-5 cycles each, so 8-10 chains in flight). Built like the kernels, with
// -march=native, so the vectors are the ISA's widest.
#include <cstdint>

#if defined(__AVX512F__)
constexpr int kW = 16;
#elif defined(__AVX__)
constexpr int kW = 8;
#else
constexpr int kW = 4;
#endif
typedef float vf __attribute__((vector_size(kW * 4)));

extern "C" int vmae2_fma_width() { return kW; }

// Runs `iters` rounds of 12 FMAs on kW floats; returns the FLOPs done.
extern "C" double vmae2_fma_run(int64_t iters) {
  vf acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = vf{} + 0.001f * static_cast<float>(j);
  const vf m = vf{} + 0.999999f, c = vf{} + 1e-7f;
  for (int64_t i = 0; i < iters; ++i)
    for (int j = 0; j < 12; ++j) acc[j] = acc[j] * m + c;
  vf sum{};
  for (int j = 0; j < 12; ++j) sum += acc[j];
  volatile float sink = sum[0];
  (void)sink;
  return 2.0 * kW * 12 * static_cast<double>(iters);
}
