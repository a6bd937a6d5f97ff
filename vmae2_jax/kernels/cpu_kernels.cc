// CPU kernels called through the XLA FFI from vmae2_jax/kernels/cpu.py:
// fused softmax attention (forward and backward) and the matmul x^T dy that
// gives the dense layers' weight gradients.
//
// Why: XLA:CPU has no fused attention. Its softmax attention writes and re-reads
// the [heads, N, N] score matrix several times per pass (tens of MB for the
// ~1,600-token pre-training decoder), so the decoder ran at half the speed of
// PyTorch's fused CPU kernel. Here each work item keeps a block of score rows
// (block x N floats, a few hundred KB) in the core's L2 cache from the logits
// to the output: the full N^2 matrix never exists.
//
// Attention, two front ends over one core (float32): separate q [..., Nq, H, D]
// (pre-scaled), k and v [..., Nk, H, D]; or the model's fused projection
// qkv [..., N, 3, H, D] with q/v biases and the scale applied while packing.
// Forward returns o [..., Nq, H, D] and the log-sum-exp lse [..., H, Nq];
// backward takes the inputs, o, lse and do and returns their gradients (one
// dqkv for the fused form). Exact softmax (each block holds whole rows), so
// results match the XLA path to float32 rounding.
//
// Matmuls use one register-blocked micro-kernel written with GCC vector
// extensions; the build compiles for the host CPU (-march=native), so the
// vectors are AVX-512, AVX2 or whatever the machine has. Work is split
// over XLA's intra-op thread pool.

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sched.h>
#include <thread>
#include <utility>

#include "xla/ffi/api/ffi.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

// Block sizes per ISA, chosen at build time (-march=native decides the ISA).
// Each can be overridden with -D for tuning (build.py passes
// $VMAE2_JAX_KERNEL_DEFINES; `python -m vmae2_jax.bench kernels --sweep` uses it).
//   VMAE2_NV         vectors per micro-kernel row (kR * kNV accumulators)
//   VMAE2_SCORE_KB   attention score block (rows x padded length floats)
//   VMAE2_WG_MC/NC   weight-gradient output block: MC x kR rows, NC x kPanel columns
//                    (large blocks; small ones are half of each when items are few)
//   VMAE2_WG_KC      weight-gradient depth chunk
//   VMAE2_WG_KERNEL  whether models should send weight gradients here (1) or keep
//                    XLA's dot (0); read through vmae2_weight_gradient_preferred()
// AVX-512 (tuned on Xeon / Zen 4, 1-2 MB L2): 6 x 64 micro-kernel, 512 KB score
// blocks, [192, 384] x 256 weight-gradient blocks. AVX2 (measured on Zen 3, 512 KB
// L2, 16 vector registers): 6 x 16 micro-kernel (12 accumulators + 2 B vectors + 1
// broadcast) and the same score blocks (K^T packed in panels was tried: no gain
// beyond the noise of a loaded machine; BENCHMARKS.md); XLA's dot does the weight
// gradients there (VMAE2_WG_KERNEL below).
#if defined(__AVX512F__)
constexpr int kW = 16;   // floats per vector register
#define VMAE2_DEFAULT_NV 4
#define VMAE2_DEFAULT_SCORE_KB 512
#define VMAE2_DEFAULT_WG_MC 32
#define VMAE2_DEFAULT_WG_NC 6
#define VMAE2_DEFAULT_WG_KC 256
#elif defined(__AVX__)
constexpr int kW = 8;
#if defined(__AVX2__)
// Zen 3 (AVX2): XLA's own dot (its YNNPACK/Eigen kernels, packed panels) ran the
// weight gradients 1.1-1.5x faster per CPU second than this kernel on all four
// ViT-S shapes, packing a and b here included (BENCHMARKS.md): models use XLA's.
#define VMAE2_DEFAULT_WG_KERNEL 0
#endif
#define VMAE2_DEFAULT_NV 2
#define VMAE2_DEFAULT_SCORE_KB 512
#define VMAE2_DEFAULT_WG_MC 32
#define VMAE2_DEFAULT_WG_NC 6
#define VMAE2_DEFAULT_WG_KC 256
#else
constexpr int kW = 4;
#define VMAE2_DEFAULT_NV 2
#define VMAE2_DEFAULT_SCORE_KB 512
#define VMAE2_DEFAULT_WG_MC 32
#define VMAE2_DEFAULT_WG_NC 6
#define VMAE2_DEFAULT_WG_KC 256
#endif
#ifndef VMAE2_DEFAULT_WG_KERNEL
#define VMAE2_DEFAULT_WG_KERNEL 1
#endif
#ifndef VMAE2_WG_KERNEL
#define VMAE2_WG_KERNEL VMAE2_DEFAULT_WG_KERNEL
#endif
#ifndef VMAE2_NV
#define VMAE2_NV VMAE2_DEFAULT_NV
#endif
#ifndef VMAE2_SCORE_KB
#define VMAE2_SCORE_KB VMAE2_DEFAULT_SCORE_KB
#endif
#ifndef VMAE2_WG_MC
#define VMAE2_WG_MC VMAE2_DEFAULT_WG_MC
#endif
#ifndef VMAE2_WG_NC
#define VMAE2_WG_NC VMAE2_DEFAULT_WG_NC
#endif
#ifndef VMAE2_WG_KC
#define VMAE2_WG_KC VMAE2_DEFAULT_WG_KC
#endif
constexpr int kNV = VMAE2_NV;   // vectors per micro-kernel row
constexpr int kR = 6;    // micro-kernel rows: kR * kNV accumulators
constexpr int64_t kPanel = kNV * kW;  // micro-kernel columns

typedef float vf __attribute__((vector_size(kW * 4)));
typedef float vfu __attribute__((vector_size(kW * 4), aligned(4)));  // unaligned access
typedef int32_t vi __attribute__((vector_size(kW * 4)));

inline vf load(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline void store(float* p, vf x) { *reinterpret_cast<vfu*>(p) = x; }
// x - 0 folds to a plain broadcast (x + 0 does not: it is not exact for x = -0).
inline vf splat(float x) { return x - vf{}; }

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// exp(x) for x <= 0 (arguments here are logits minus a row maximum or a
// log-sum-exp): x = n ln 2 + y with n = round(x / ln 2) and |y| <= ln(2) / 2,
// ln 2 split in two (Cody-Waite) so that y carries no error from n; e^y from a
// degree-6 polynomial fitted for relative error (2e-9 before float rounding);
// then times 2^n: AVX-512's scalef (which also underflows gracefully), else
// through the exponent bits (arguments clamped at -87 there).
inline vf vexp(vf x) {
#if defined(__AVX512F__)
  x = x < splat(-104.0f) ? splat(-104.0f) : x;  // exp(-104) is 0 in float32
#else
  x = x < splat(-87.0f) ? splat(-87.0f) : x;
#endif
  const vf magic = splat(12582912.0f);  // 1.5 * 2^23: round to nearest
  const vf n = (x * 1.44269504088896341f + magic) - magic;
  vf y = x - n * 0.693359375f;  // ln 2 to 9 bits: n times it is exact
  y = y + n * 2.12194440e-4f;   // 0.693359375 - ln 2
  vf p = splat(1.3859296450391412e-3f);
  p = p * y + 8.374767377972603e-3f;
  p = p * y + 4.166772589087486e-2f;
  p = p * y + 1.666642129421234e-1f;
  p = p * y + 4.999999403953552e-1f;
  p = p * y + 1.0f;
  p = p * y + 1.0f;
#if defined(__AVX512F__)
  return (vf)_mm512_scalef_ps((__m512)p, (__m512)n);
#else
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  return p * (vf)bits;
#endif
}

// C[r, :] (+)= sum_k A(r, k) * B[k*ldb + :] for R rows and NV vectors of
// columns, A(r, k) = A[r*sa + k] or, transposed (AT), A[r + k*sa]. A is read
// as broadcast scalars, so the same kernel serves A, its transpose and strided
// views of the inputs. The layout is a template parameter so that the loop has
// one form and the accumulators stay in registers from start to end (with the
// layout chosen inside, GCC kept them on the stack around the loop: 2-5% of
// the attention, whose logits take many short calls with K = head dim).
template <int R, int NV, bool Accumulate, bool AT>
void micro(int64_t K, const float* A, int64_t sa, const float* B, int64_t ldb, float* C,
           int64_t ldc) {
  vf c[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) c[r][v] = Accumulate ? load(C + r * ldc + v * kW) : vf{};
  int64_t k = 0;
  do {  // K >= 1 (gemm() checks): one loop form, no register spills around it
    vf b[NV];
    if (AT) {  // rows of A and B far apart (x^T dy, dS^T K): fetch 12 rows ahead, 3-7%
      // of the weight gradient. Prefetches never fault, also past the end.
      __builtin_prefetch(A + (k + 12) * sa);
      for (int v = 0; v < NV; ++v) __builtin_prefetch(B + (k + 12) * ldb + v * kW);
    }
    for (int v = 0; v < NV; ++v) b[v] = load(B + k * ldb + v * kW);
    for (int r = 0; r < R; ++r) {
      const vf a = splat(AT ? A[r + k * sa] : A[r * sa + k]);
      for (int v = 0; v < NV; ++v) c[r][v] += a * b[v];
    }
  } while (++k < K);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) store(C + r * ldc + v * kW, c[r][v]);
}

using MicroFn = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t);
using MicroTable = std::array<std::array<MicroFn, kNV>, kR>;

template <bool Acc, bool AT, int R, int... V>
constexpr std::array<MicroFn, kNV> row_table(std::integer_sequence<int, V...>) {
  return {&micro<R, V + 1, Acc, AT>...};
}

template <bool Acc, bool AT, int... R>
constexpr MicroTable make_table(std::integer_sequence<int, R...>) {
  return {row_table<Acc, AT, R + 1>(std::make_integer_sequence<int, kNV>{})...};
}

// kMicro[accumulate][transposed A][rows - 1][vectors - 1]
constexpr std::array<std::array<MicroTable, 2>, 2> kMicro = {{
    {make_table<false, false>(std::make_integer_sequence<int, kR>{}),
     make_table<false, true>(std::make_integer_sequence<int, kR>{})},
    {make_table<true, false>(std::make_integer_sequence<int, kR>{}),
     make_table<true, true>(std::make_integer_sequence<int, kR>{})}}};

// C[M, nvec*kW] (+)= A[M, K] @ B[K, nvec*kW]; A element (i, k) at A[i*sr + k*sk],
// where sr or sk is 1.
void gemm(int64_t M, int64_t nvec, int64_t K, const float* A, int64_t sr, int64_t sk,
          const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::memset(C + i * ldc, 0, nvec * kW * 4);
    return;
  }
  const bool at = sk != 1;  // then sr == 1: A is read transposed
  const int64_t sa = at ? sk : sr;
  const MicroTable& table = kMicro[accumulate][at];
  for (int64_t j = 0; j < nvec; j += kNV) {
    const int nv = static_cast<int>(std::min<int64_t>(kNV, nvec - j));
    for (int64_t i = 0; i < M; i += kR) {
      const int r = static_cast<int>(std::min<int64_t>(kR, M - i));
      table[r - 1][nv - 1](K, A + i * (at ? 1 : sr), sa, B + j * kW, ldb, C + i * ldc + j * kW,
                           ldc);
    }
  }
}

// Per-call scratch carved from a buffer the calling thread keeps between
// calls: after the first call of a given size there is no allocation, no
// page fault and no zeroing (callers zero what they accumulate into). Helper
// threads only use pointers handed out during the call.
class Arena {
 public:
  // 16-float (64-byte) aligned space for n floats, valid until the call returns.
  float* take(int64_t n) {
    float* p = base_ + used_;
    used_ += round_up(std::max<int64_t>(n, 1), 16);
    return p;
  }
  static Arena reserve(int64_t floats) {
    struct Buffer {
      float* p = nullptr;
      int64_t size = 0;
      ~Buffer() { std::free(p); }
    };
    thread_local Buffer buf;
    if (buf.size < floats) {
      std::free(buf.p);
      buf.size = round_up(floats, 16);
      buf.p = static_cast<float*>(std::aligned_alloc(64, buf.size * 4));
    }
    return Arena(buf.p);
  }

 private:
  explicit Arena(float* base) : base_(base) {}
  float* base_;
  int64_t used_ = 0;
};

// Floats an arena needs for `sizes` (each rounded up as Arena::take does).
int64_t arena_floats(std::initializer_list<int64_t> sizes) {
  int64_t total = 0;
  for (int64_t n : sizes) total += round_up(std::max<int64_t>(n, 1), 16);
  return total;
}

// Runs body(item, worker) for item in [0, n) on the caller plus up to
// (pool threads - 1) helpers. The caller takes items too and waits only for
// helpers that have started, so a busy pool delays nothing and cannot
// deadlock; a helper that starts late finds no items left and touches no
// buffers (its shared state outlives the call).
template <typename F>
void parallel_for(ffi::ThreadPool& pool, int64_t n, int workers, const F& body) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int> active{0};
    std::atomic<int> slot{1};
  };
  auto state = std::make_shared<State>();
  auto run = [&body, n](State& s, int worker) {
    for (int64_t i; (i = s.next.fetch_add(1)) < n;) body(i, worker);
  };
  for (int t = 1; t < workers; ++t) {
    pool.Schedule([state, run, workers]() {
      state->active.fetch_add(1);
      const int worker = state->slot.fetch_add(1);
      if (worker < workers) run(*state, worker);
      state->active.fetch_sub(1);
    });
  }
  run(*state, 0);
  while (state->active.load() > 0) std::this_thread::yield();
}

// Threads worth running at once: XLA's pool, but no more than the CPUs this
// process may use. Tests and compile-only runs widen the pool well past the cores
// (8 fake devices: vmae2_jax/cpu_threads.py); helpers beyond the cores only queue.
int64_t usable_threads(ffi::ThreadPool& pool) {
  static const int64_t cpus = [] {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return int64_t{CPU_COUNT(&set)};
    return static_cast<int64_t>(std::thread::hardware_concurrency());
  }();
  const int64_t pool_threads = std::max<int64_t>(1, pool.num_threads());
  return cpus > 0 ? std::min(pool_threads, cpus) : pool_threads;
}

int pool_workers(ffi::ThreadPool& pool, int64_t items) {
  const int64_t t = usable_threads(pool);
  return static_cast<int>(std::min<int64_t>(t, std::max<int64_t>(items, 1)));
}

// Rows per block so that a [rows, padded length] float block stays ~VMAE2_SCORE_KB.
int64_t block_rows(int64_t padded_len) {
  const int64_t rows = (VMAE2_SCORE_KB * 1024 / 4) / std::max<int64_t>(padded_len, 1);
  return std::clamp<int64_t>(rows / kR * kR, kR, 16 * kR);
}

// One of q, k, v as the kernels read it: element (head g = b * heads + h,
// token i, channel c) is (p[b * batch + i * row + h * d + c] + bias[h * d + c]) * scale.
// Covers separate [B, N, H, D] arrays and the slices of a fused [B, N, 3, H, D]
// qkv projection alike, so the model never copies q, k and v out of it.
struct Src {
  const float* p;
  int64_t batch, row, heads, d;
  const float* bias;  // [heads, d] or null
  float scale;
  const float* at(int64_t g, int64_t i) const {
    return p + (g / heads) * batch + i * row + (g % heads) * d;
  }
  // n rows from token i0 as [n, ld] (zero padding past d).
  void rows(int64_t g, int64_t i0, int64_t n, float* dst, int64_t ld) const {
    const float* b = bias ? bias + (g % heads) * d : nullptr;
    for (int64_t i = 0; i < n; ++i) {
      const float* s = at(g, i0 + i);
      float* o = dst + i * ld;
      if (!b && scale == 1.0f) {
        std::memcpy(o, s, d * 4);
      } else {
        for (int64_t c = 0; c < d; ++c) o[c] = (s[c] + (b ? b[c] : 0.0f)) * scale;
      }
      std::memset(o + d, 0, (ld - d) * 4);
    }
  }
  // All n tokens transposed, [d, ld] (zero padding past n), in 16 x 16 tiles
  // so that reads and writes both stay within a few cache lines.
  void transposed(int64_t g, int64_t n, float* dst, int64_t ld) const {
    constexpr int64_t kT = 16;
    const float* b = bias ? bias + (g % heads) * d : nullptr;
    for (int64_t i0 = 0; i0 < n; i0 += kT)
      for (int64_t c0 = 0; c0 < d; c0 += kT) {
        const int64_t i1 = std::min(n, i0 + kT), c1 = std::min(d, c0 + kT);
        for (int64_t c = c0; c < c1; ++c) {
          const float add = b ? b[c] : 0.0f;
          for (int64_t i = i0; i < i1; ++i) dst[c * ld + i] = (at(g, i)[c] + add) * scale;
        }
      }
    for (int64_t c = 0; c < d; ++c) std::memset(dst + c * ld + n, 0, (ld - n) * 4);
  }
};

// Where a gradient goes: row i of head g at p[b * batch + i * row + h * d], times scale.
struct Dst {
  float* p;
  int64_t batch, row, heads, d;
  float scale;
  float* at(int64_t g, int64_t i) const {
    return p + (g / heads) * batch + i * row + (g % heads) * d;
  }
};

struct Dims {
  int64_t batch, nq, nk, heads, d;
  int64_t dp() const { return round_up(d, kW); }    // padded head dim
  int64_t nqp() const { return round_up(nq, kW); }  // lengths padded to whole vectors
  int64_t nkp() const { return round_up(nk, kW); }
  int64_t bh() const { return batch * heads; }
};

float hmax(vf x) {
  float m = x[0];
  for (int i = 1; i < kW; ++i) m = std::max(m, x[i]);
  return m;
}

float hsum(vf x) {
  float s = 0;
  for (int i = 0; i < kW; ++i) s += x[i];
  return s;
}

// Forward: o [B, nq, H, d] (contiguous) and lse [B, H, nq].
void attention_forward(ffi::ThreadPool& pool, const Dims& s, const Src& q, const Src& k,
                       const Src& v, float* op, float* lp) {
  const int64_t dp = s.dp(), nkp = s.nkp(), bh = s.bh(), orow = s.heads * s.d;
  // First every head's K^T [d, nkp] and V [nk, dp] are packed, heads split
  // over the workers; then items are (head, block of query rows).
  const int64_t br = block_rows(nkp), qblocks = (s.nq + br - 1) / br, items = bh * qblocks;
  const int workers = pool_workers(pool, items);
  Arena arena = Arena::reserve(arena_floats({bh * s.d * nkp, bh * s.nk * dp, workers * br * nkp,
                                             workers * br * dp, workers * br * s.d}));
  float *kt = arena.take(bh * s.d * nkp), *vpad = arena.take(bh * s.nk * dp);
  float *sbuf = arena.take(workers * br * nkp), *obuf = arena.take(workers * br * dp);
  float* qbuf = arena.take(workers * br * s.d);
  const int64_t full = s.nk / kW * kW;

  // Packing in its own pass: with packing inside the items (the first item of a
  // head packing while the other workers waited for it) 2 workers lost 3-6% of
  // the 1,568-token attention to waiting.
  parallel_for(pool, bh, pool_workers(pool, bh), [&](int64_t g, int) {
    k.transposed(g, s.nk, kt + g * s.d * nkp, nkp);
    v.rows(g, 0, s.nk, vpad + g * s.nk * dp, dp);
  });
  parallel_for(pool, items, workers, [&](int64_t item, int w) {
    const int64_t g = item / qblocks, i0 = (item % qblocks) * br, m = std::min(br, s.nq - i0);
    float *S = sbuf + w * br * nkp, *O = obuf + w * br * dp, *Q = qbuf + w * br * s.d;
    float inv[16 * kR];  // 1 / row sum; block_rows() caps m at 16 * kR
    q.rows(g, i0, m, Q, s.d);
    gemm(m, nkp / kW, s.d, Q, s.d, 1, kt + g * s.d * nkp, nkp, S, nkp, false);
    for (int64_t r = 0; r < m; ++r) {
      float* sr = S + r * nkp;
      vf mv = splat(-INFINITY);
      int64_t j = 0;
      for (; j < full; j += kW) mv = mv > load(sr + j) ? mv : load(sr + j);
      float mx = hmax(mv);
      for (; j < s.nk; ++j) mx = std::max(mx, sr[j]);
      vf sv{};
      for (j = 0; j < full; j += kW) {
        const vf e = vexp(load(sr + j) - mx);
        store(sr + j, e);
        sv += e;
      }
      float sum = hsum(sv);
      for (; j < s.nk; ++j) {
        const float e = std::exp(sr[j] - mx);
        sr[j] = e;
        sum += e;
      }
      lp[g * s.nq + i0 + r] = mx + std::log(sum);
      inv[r] = 1.0f / sum;
    }
    gemm(m, dp / kW, s.nk, S, nkp, 1, vpad + g * s.nk * dp, dp, O, dp, false);
    const int64_t b = g / s.heads, h = g % s.heads;
    for (int64_t r = 0; r < m; ++r) {
      float* dst = op + (b * s.nq + i0 + r) * orow + h * s.d;
      for (int64_t c = 0; c < s.d; ++c) dst[c] = O[r * dp + c] * inv[r];
    }
  });
}

// Backward: from o, lse and do (contiguous like o) to dq, dk, dv.
void attention_backward(ffi::ThreadPool& pool, const Dims& s, const Src& q, const Src& k,
                        const Src& v, const float* opt, const float* lp, const float* dop,
                        const Dst& dq, const Dst& dk, const Dst& dv) {
  const int64_t dp = s.dp(), nqp = s.nqp(), bh = s.bh(), orow = s.heads * s.d;
  const Src out{opt, s.nq * orow, orow, s.heads, s.d, nullptr, 1.0f};
  const Src dout{dop, s.nq * orow, orow, s.heads, s.d, nullptr, 1.0f};
  // Items are (head, block of key rows): each owns its rows of dk and dv.
  // dq gets a partial sum per worker; the worker that finishes a head's last
  // item adds them up. A first pass packs every head's Q^T and dO^T
  // [d, nqp], Q and dO [nq, dp], the row log-sum-exp and
  // delta = rowsum(dO * O), heads split over the workers.
  const int64_t bc = block_rows(nqp), kblocks = (s.nk + bc - 1) / bc, items = bh * kblocks;
  const int workers = pool_workers(pool, items);
  const int64_t head_t = s.d * nqp, head_p = s.nq * dp, blk = bc * nqp;
  Arena arena = Arena::reserve(arena_floats(
      {bh * head_t, bh * head_t, bh * head_p, bh * head_p, bh * nqp, bh * nqp,
       workers * blk, workers * blk, workers * bc * dp, workers * bc * dp, workers * bc * dp,
       workers * bh * head_p}));
  float *qt = arena.take(bh * head_t), *dot = arena.take(bh * head_t);
  float *qpad = arena.take(bh * head_p), *dopad = arena.take(bh * head_p);
  float *lsep = arena.take(bh * nqp), *delta = arena.take(bh * nqp);
  float *pbuf = arena.take(workers * blk), *dsbuf = arena.take(workers * blk);
  float *obuf = arena.take(workers * bc * dp), *kbuf = arena.take(workers * bc * dp);
  float *vbuf = arena.take(workers * bc * dp), *dqacc = arena.take(workers * bh * head_p);
  std::memset(dqacc, 0, workers * bh * head_p * 4);
  std::unique_ptr<std::atomic<int64_t>[]> left(new std::atomic<int64_t>[bh]);
  for (int64_t g = 0; g < bh; ++g) left[g].store(kblocks);
  const int64_t full = s.nq / kW * kW;

  parallel_for(pool, bh, pool_workers(pool, bh), [&](int64_t g, int) {
    q.transposed(g, s.nq, qt + g * head_t, nqp);
    dout.transposed(g, s.nq, dot + g * head_t, nqp);
    q.rows(g, 0, s.nq, qpad + g * head_p, dp);
    dout.rows(g, 0, s.nq, dopad + g * head_p, dp);
    for (int64_t i = 0; i < nqp; ++i) {
      float acc = 0;
      if (i < s.nq) {
        const float *a = dout.at(g, i), *b = out.at(g, i);
        for (int64_t c = 0; c < s.d; ++c) acc += a[c] * b[c];
      }
      delta[g * nqp + i] = acc;
      lsep[g * nqp + i] = i < s.nq ? lp[g * s.nq + i] : 0.0f;
    }
  });
  parallel_for(pool, items, workers, [&](int64_t item, int w) {
    const int64_t g = item / kblocks, c0 = (item % kblocks) * bc, m = std::min(bc, s.nk - c0);
    const float *L = lsep + g * nqp, *Dl = delta + g * nqp;
    float *P = pbuf + w * blk, *dS = dsbuf + w * blk, *O = obuf + w * bc * dp;
    float *Kb = kbuf + w * bc * dp, *Vb = vbuf + w * bc * dp;
    k.rows(g, c0, m, Kb, dp);
    v.rows(g, c0, m, Vb, dp);
    // P^T = exp(K Q^T - lse) and dP^T = V dO^T: [m keys, nq queries].
    gemm(m, nqp / kW, s.d, Kb, dp, 1, qt + g * head_t, nqp, P, nqp, false);
    gemm(m, nqp / kW, s.d, Vb, dp, 1, dot + g * head_t, nqp, dS, nqp, false);
    for (int64_t r = 0; r < m; ++r) {
      float *pr = P + r * nqp, *dr = dS + r * nqp;
      int64_t j = 0;
      for (; j < full; j += kW) {
        const vf p = vexp(load(pr + j) - load(L + j));
        store(pr + j, p);
        store(dr + j, p * (load(dr + j) - load(Dl + j)));
      }
      for (; j < s.nq; ++j) {
        pr[j] = std::exp(pr[j] - L[j]);
        dr[j] = pr[j] * (dr[j] - Dl[j]);
      }
    }
    // dV rows = P^T dO, dK rows = dS^T Q.
    auto write = [&](const Dst& dst) {
      for (int64_t r = 0; r < m; ++r) {
        float* o = dst.at(g, c0 + r);
        for (int64_t c = 0; c < s.d; ++c) o[c] = O[r * dp + c] * dst.scale;
      }
    };
    gemm(m, dp / kW, s.nq, P, nqp, 1, dopad + g * head_p, dp, O, dp, false);
    write(dv);
    gemm(m, dp / kW, s.nq, dS, nqp, 1, qpad + g * head_p, dp, O, dp, false);
    write(dk);
    // dQ += dS K over this key block (dS read transposed).
    float* acc = dqacc + (w * bh + g) * head_p;
    gemm(s.nq, dp / kW, m, dS, 1, nqp, Kb, dp, acc, dp, true);
    // Last item of this head: dq = sum of the workers' partial sums.
    if (left[g].fetch_sub(1, std::memory_order_acq_rel) == 1) {
      for (int64_t i = 0; i < s.nq; ++i) {
        float* dst = dq.at(g, i);
        const float* first = dqacc + g * head_p + i * dp;
        for (int64_t c = 0; c < s.d; ++c) {
          float sum = first[c];
          for (int u = 1; u < workers; ++u) sum += dqacc[(u * bh + g) * head_p + i * dp + c];
          dst[c] = sum * dq.scale;
        }
      }
    }
  });
}

// ----------------------------------------------------- FFI: separate q, k, v
ffi::Error get_dims(const ffi::Buffer<ffi::F32>& q, const ffi::Buffer<ffi::F32>& k,
                    const ffi::Buffer<ffi::F32>& v, Dims& s) {
  auto dq = q.dimensions(), dk = k.dimensions(), dv = v.dimensions();
  if (dq.size() < 3 || dq.size() != dk.size() || dk.size() != dv.size())
    return ffi::Error::InvalidArgument("cpu attention: q, k, v need equal ranks >= 3 ([..., N, H, D])");
  s = Dims{1, dq[dq.size() - 3], dk[dk.size() - 3], dq[dq.size() - 2], dq[dq.size() - 1]};
  for (size_t i = 0; i + 3 < dq.size(); ++i) {
    if (dq[i] != dk[i] || dk[i] != dv[i])
      return ffi::Error::InvalidArgument("cpu attention: batch dims of q, k, v differ");
    s.batch *= dq[i];
  }
  for (size_t i = dq.size() - 2; i < dq.size(); ++i)
    if (dk[i] != dq[i] || dv[i] != dq[i])
      return ffi::Error::InvalidArgument("cpu attention: heads/head dim of q, k, v differ");
  if (dv[dv.size() - 3] != s.nk)
    return ffi::Error::InvalidArgument("cpu attention: k and v lengths differ");
  return ffi::Error::Success();
}

Src plain(const float* p, int64_t n, const Dims& s) {
  return Src{p, n * s.heads * s.d, s.heads * s.d, s.heads, s.d, nullptr, 1.0f};
}

ffi::Error AttentionForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                            ffi::Buffer<ffi::F32> v, ffi::ResultBuffer<ffi::F32> o,
                            ffi::ResultBuffer<ffi::F32> lse) {
  Dims s;
  if (ffi::Error err = get_dims(q, k, v, s); err.failure()) return err;
  if (s.nq == 0 || s.nk == 0 || s.bh() == 0) return ffi::Error::Success();
  attention_forward(pool, s, plain(q.typed_data(), s.nq, s), plain(k.typed_data(), s.nk, s),
                    plain(v.typed_data(), s.nk, s), o->typed_data(), lse->typed_data());
  return ffi::Error::Success();
}

ffi::Error AttentionBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q,
                             ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                             ffi::Buffer<ffi::F32> o, ffi::Buffer<ffi::F32> lse,
                             ffi::Buffer<ffi::F32> dout, ffi::ResultBuffer<ffi::F32> dq,
                             ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv) {
  Dims s;
  if (ffi::Error err = get_dims(q, k, v, s); err.failure()) return err;
  if (s.nq == 0 || s.nk == 0 || s.bh() == 0) {
    for (auto* r : {&dq, &dk, &dv}) std::memset((*r)->typed_data(), 0, (*r)->size_bytes());
    return ffi::Error::Success();
  }
  const int64_t row = s.heads * s.d;
  attention_backward(pool, s, plain(q.typed_data(), s.nq, s), plain(k.typed_data(), s.nk, s),
                     plain(v.typed_data(), s.nk, s), o.typed_data(), lse.typed_data(),
                     dout.typed_data(), Dst{dq->typed_data(), s.nq * row, row, s.heads, s.d, 1.0f},
                     Dst{dk->typed_data(), s.nk * row, row, s.heads, s.d, 1.0f},
                     Dst{dv->typed_data(), s.nk * row, row, s.heads, s.d, 1.0f});
  return ffi::Error::Success();
}

// ------------------------------------------ FFI: the fused qkv projection
// qkv [..., N, 3, H, D] straight from the attention's projection, q_bias and
// v_bias [H, D]; q = (qkv[:, :, 0] + q_bias) * scale, k = qkv[:, :, 1],
// v = qkv[:, :, 2] + v_bias. Queries are the last num_queries tokens.
struct QkvViews {
  Dims s;
  Src q, k, v;
};

ffi::Error qkv_views(const ffi::Buffer<ffi::F32>& qkv, const ffi::Buffer<ffi::F32>& q_bias,
                     const ffi::Buffer<ffi::F32>& v_bias, float scale, int64_t num_queries,
                     QkvViews& out) {
  auto d = qkv.dimensions();
  if (d.size() < 4 || d[d.size() - 3] != 3)
    return ffi::Error::InvalidArgument("cpu qkv attention: qkv must be [..., N, 3, H, D]");
  const int64_t n = d[d.size() - 4], heads = d[d.size() - 2], hd = d[d.size() - 1];
  if (q_bias.element_count() != static_cast<size_t>(heads * hd) ||
      v_bias.element_count() != static_cast<size_t>(heads * hd))
    return ffi::Error::InvalidArgument("cpu qkv attention: q_bias and v_bias must be [H, D]");
  if (num_queries < 0 || num_queries > n)
    return ffi::Error::InvalidArgument("cpu qkv attention: num_queries outside [0, N]");
  int64_t batch = 1;
  for (size_t i = 0; i + 4 < d.size(); ++i) batch *= d[i];
  out.s = Dims{batch, num_queries, n, heads, hd};
  const int64_t row = 3 * heads * hd, bstride = n * row;
  const float* p = qkv.typed_data();
  out.q = Src{p + (n - num_queries) * row, bstride, row, heads, hd, q_bias.typed_data(), scale};
  out.k = Src{p + heads * hd, bstride, row, heads, hd, nullptr, 1.0f};
  out.v = Src{p + 2 * heads * hd, bstride, row, heads, hd, v_bias.typed_data(), 1.0f};
  return ffi::Error::Success();
}

ffi::Error QkvAttentionForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> qkv,
                               ffi::Buffer<ffi::F32> q_bias, ffi::Buffer<ffi::F32> v_bias,
                               ffi::ResultBuffer<ffi::F32> o, ffi::ResultBuffer<ffi::F32> lse,
                               float scale, int64_t num_queries) {
  QkvViews x;
  if (ffi::Error err = qkv_views(qkv, q_bias, v_bias, scale, num_queries, x); err.failure())
    return err;
  if (x.s.nq == 0 || x.s.nk == 0 || x.s.bh() == 0) return ffi::Error::Success();
  attention_forward(pool, x.s, x.q, x.k, x.v, o->typed_data(), lse->typed_data());
  return ffi::Error::Success();
}

ffi::Error QkvAttentionBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> qkv,
                                ffi::Buffer<ffi::F32> q_bias, ffi::Buffer<ffi::F32> v_bias,
                                ffi::Buffer<ffi::F32> o, ffi::Buffer<ffi::F32> lse,
                                ffi::Buffer<ffi::F32> dout, ffi::ResultBuffer<ffi::F32> dqkv,
                                float scale, int64_t num_queries) {
  QkvViews x;
  if (ffi::Error err = qkv_views(qkv, q_bias, v_bias, scale, num_queries, x); err.failure())
    return err;
  const Dims& s = x.s;
  const int64_t row = 3 * s.heads * s.d, bstride = s.nk * row;
  float* g = dqkv->typed_data();
  if (s.nq == 0 || s.bh() == 0) {  // no queries: every gradient is zero
    std::memset(g, 0, dqkv->size_bytes());
    return ffi::Error::Success();
  }
  for (int64_t b = 0; b < s.batch; ++b)  // tokens that are not queries get no q gradient
    for (int64_t i = 0; i < s.nk - s.nq; ++i)
      std::memset(g + b * bstride + i * row, 0, s.heads * s.d * 4);
  attention_backward(pool, s, x.q, x.k, x.v, o.typed_data(), lse.typed_data(), dout.typed_data(),
                     Dst{g + (s.nk - s.nq) * row, bstride, row, s.heads, s.d, scale},
                     Dst{g + s.heads * s.d, bstride, row, s.heads, s.d, 1.0f},
                     Dst{g + 2 * s.heads * s.d, bstride, row, s.heads, s.d, 1.0f});
  return ffi::Error::Success();
}

// ------------------------------------------------------ weight-gradient matmul
// out[M, N] = a^T b for a [K, M] and b [K, N]: a dense layer's weight gradient
// x^T dy, contracting over all tokens. Items are output blocks, [192, 384]
// where that still gives every thread two or more, else [96, 256]; K is taken
// in chunks of 256 so an item's slices of a and b stay in L2. a and b are
// larger than L2 (x and dy of every token), so each is read from L3 or memory
// once per item: the larger blocks read them half as often, ~5% faster on one
// core (more where the cores share the memory bandwidth). a is read as
// broadcast scalars (six consecutive floats per step), b in rows.
using Matrix = ffi::Buffer<ffi::F32, 2>;

// out[M, N] = a^T b for a [K, M] and b [K, N] (K >= 1, M, N >= 1).
void weight_gradient(ffi::ThreadPool& pool, int64_t K, int64_t M, int64_t N, const float* A,
                     const float* B, float* C) {
  const int64_t np = round_up(N, kW);
  constexpr int64_t kKc = VMAE2_WG_KC, kMl = VMAE2_WG_MC * kR, kNl = VMAE2_WG_NC * kPanel;
  const int64_t threads = usable_threads(pool);
  auto count = [&](int64_t mc, int64_t nc) { return ((M + mc - 1) / mc) * ((np + nc - 1) / nc); };
  const bool large = count(kMl, kNl) >= 2 * threads;
  const int64_t kMc = large ? kMl : std::max<int64_t>(kR, kMl / 2 / kR * kR);
  const int64_t kNc = large ? kNl : std::max<int64_t>(kPanel, kNl * 2 / 3 / kPanel * kPanel);
  const int64_t nblocks = (np + kNc - 1) / kNc, items = count(kMc, kNc);
  const int workers = pool_workers(pool, items);
  // A width that is not a whole number of vectors: b padded to np columns,
  // each item's output through a padded buffer.
  const bool padded = np != N;
  Arena arena = Arena::reserve(arena_floats({padded ? K * np : 0, padded ? workers * kMc * np : 0}));
  int64_t ldb = N;
  float* cbuf = nullptr;
  if (padded) {
    float* bp = arena.take(K * np);
    Src{B, 0, N, 1, N, nullptr, 1.0f}.rows(0, 0, K, bp, np);
    B = bp;
    ldb = np;
    cbuf = arena.take(workers * kMc * np);
  }
  parallel_for(pool, items, workers, [&](int64_t item, int w) {
    const int64_t i0 = (item / nblocks) * kMc, j0 = (item % nblocks) * kNc;
    const int64_t m = std::min(kMc, M - i0), n = std::min(kNc, np - j0);
    float* c = padded ? cbuf + w * kMc * np + j0 : C + i0 * N + j0;
    const int64_t ldc = padded ? np : N;
    for (int64_t k0 = 0; k0 < K; k0 += kKc)
      gemm(m, n / kW, std::min(kKc, K - k0), A + k0 * M + i0, 1, M, B + k0 * ldb + j0, ldb, c,
           ldc, k0 > 0);
    if (padded)
      for (int64_t r = 0; r < m; ++r)
        std::memcpy(C + (i0 + r) * N + j0, c + r * np, std::min(n, N - j0) * 4);
  });
}

ffi::Error WeightGradient(ffi::ThreadPool pool, Matrix a, Matrix b, ffi::Result<Matrix> out) {
  const auto da = a.dimensions(), db = b.dimensions();
  const int64_t K = da[0], M = da[1], N = db[1];
  if (db[0] != K) return ffi::Error::InvalidArgument("cpu matmul: a and b have different rows");
  float* C = out->typed_data();
  if (M == 0 || N == 0) return ffi::Error::Success();
  if (K == 0) {
    std::memset(C, 0, out->size_bytes());
    return ffi::Error::Success();
  }
  weight_gradient(pool, K, M, N, a.typed_data(), b.typed_data(), C);
  return ffi::Error::Success();
}

}  // namespace

// Whether this build's weight-gradient matmul is the one to use on this ISA (see
// VMAE2_WG_KERNEL above); vmae2_jax/kernels/cpu.py reads it through ctypes.
extern "C" int vmae2_weight_gradient_preferred() { return VMAE2_WG_KERNEL; }

// Bindings: XLA's thread pool first, then operands, results and attributes in
// the order of the functions' parameters.
using F32 = ffi::Buffer<ffi::F32>;

auto forward_binding() {  // (q, k, v) or (qkv, q_bias, v_bias) -> (o, lse)
  return ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>()
      .Ret<F32>();
}

auto backward_operands() {  // the forward's three operands, then o, lse, do
  return ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
      .Arg<F32>().Arg<F32>();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(Vmae2CpuAttentionForward, AttentionForward, forward_binding());

XLA_FFI_DEFINE_HANDLER_SYMBOL(Vmae2CpuAttentionBackward, AttentionBackward,
                              backward_operands().Ret<F32>().Ret<F32>().Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(Vmae2CpuQkvAttentionForward, QkvAttentionForward,
                              forward_binding().Attr<float>("scale")
                                  .Attr<int64_t>("num_queries"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(Vmae2CpuQkvAttentionBackward, QkvAttentionBackward,
                              backward_operands().Ret<F32>().Attr<float>("scale")
                                  .Attr<int64_t>("num_queries"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(Vmae2CpuWeightGradient, WeightGradient,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<Matrix>().Arg<Matrix>()
                                  .Ret<Matrix>());
