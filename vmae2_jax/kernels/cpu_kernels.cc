// CPU kernels called through the XLA FFI from vmae2_jax/kernels/cpu.py:
// fused softmax attention (forward and backward) and a matmul for dense layers.
//
// Why: XLA:CPU has no fused attention. Its softmax attention writes and re-reads
// the [heads, N, N] score matrix several times per pass (tens of MB for the
// ~1,600-token pre-training decoder), so the decoder ran at half the speed of
// PyTorch's fused CPU kernel. Here each work item keeps a block of score rows
// (block x N floats, a few hundred KB) in the core's L2 cache from the logits
// to the output: the full N^2 matrix never exists.
//
// Layout: q [..., Nq, H, D], k and v [..., Nk, H, D], float32, q pre-scaled.
// Forward returns o [..., Nq, H, D] and the log-sum-exp lse [..., H, Nq];
// backward takes q, k, v, o, lse, do and returns dq, dk, dv. Exact softmax
// (each block holds whole rows), so the result matches the XLA path to
// float32 rounding.
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
#include <thread>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512F__)
constexpr int kW = 16;   // floats per vector register
constexpr int kNV = 4;   // vectors per micro-kernel row: 64 columns
#elif defined(__AVX__)
constexpr int kW = 8;
constexpr int kNV = 2;
#else
constexpr int kW = 4;
constexpr int kNV = 2;
#endif
constexpr int kR = 6;    // micro-kernel rows: kR * kNV accumulators

typedef float vf __attribute__((vector_size(kW * 4)));
typedef float vfu __attribute__((vector_size(kW * 4), aligned(4)));  // unaligned access
typedef int32_t vi __attribute__((vector_size(kW * 4)));

inline vf load(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline void store(float* p, vf x) { *reinterpret_cast<vfu*>(p) = x; }
// x - 0 folds to a plain broadcast (x + 0 does not: it is not exact for x = -0).
inline vf splat(float x) { return x - vf{}; }

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// exp(x) for x <= 0 (arguments here are logits minus a row maximum or a
// log-sum-exp). 2^n * e^(f ln 2) with |f| <= 1/2, degree-7 Taylor series:
// relative error ~3e-9 before float rounding.
inline vf vexp(vf x) {
  x = x < splat(-87.0f) ? splat(-87.0f) : x;
  const vf t = x * 1.44269504088896341f;
  const vf magic = splat(12582912.0f);  // 1.5 * 2^23: round to nearest
  const vf n = (t + magic) - magic;
  const vf y = (t - n) * 0.693147180559945309f;
  vf p = splat(1.0f / 5040);
  p = p * y + 1.0f / 720;
  p = p * y + 1.0f / 120;
  p = p * y + 1.0f / 24;
  p = p * y + 1.0f / 6;
  p = p * y + 0.5f;
  p = p * y + 1.0f;
  p = p * y + 1.0f;
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  return p * (vf)bits;
}

// C[r, :] (+)= sum_k A[r*sr + k*sk] * B[k*ldb + :] for R rows and NV vectors
// of columns. A is read as broadcast scalars, so the same kernel serves A, its
// transpose and strided views of the inputs.
template <int R, int NV, bool Accumulate>
void micro(int64_t K, const float* A, int64_t sr, int64_t sk, const float* B, int64_t ldb,
           float* C, int64_t ldc) {
  vf c[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) c[r][v] = Accumulate ? load(C + r * ldc + v * kW) : vf{};
  for (int64_t k = 0; k < K; ++k) {
    vf b[NV];
    for (int v = 0; v < NV; ++v) b[v] = load(B + k * ldb + v * kW);
    for (int r = 0; r < R; ++r) {
      const vf a = splat(A[r * sr + k * sk]);
      for (int v = 0; v < NV; ++v) c[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) store(C + r * ldc + v * kW, c[r][v]);
}

using MicroFn = void (*)(int64_t, const float*, int64_t, int64_t, const float*, int64_t, float*,
                         int64_t);
using MicroTable = std::array<std::array<MicroFn, kNV>, kR>;

template <bool Acc, int R, int... V>
constexpr std::array<MicroFn, kNV> row_table(std::integer_sequence<int, V...>) {
  return {&micro<R, V + 1, Acc>...};
}

template <bool Acc, int... R>
constexpr MicroTable make_table(std::integer_sequence<int, R...>) {
  return {row_table<Acc, R + 1>(std::make_integer_sequence<int, kNV>{})...};
}

// kMicro[accumulate][rows - 1][vectors - 1]
constexpr std::array<MicroTable, 2> kMicro = {
    make_table<false>(std::make_integer_sequence<int, kR>{}),
    make_table<true>(std::make_integer_sequence<int, kR>{})};

// C[M, nvec*kW] (+)= A[M, K] @ B[K, nvec*kW]; A element (i, k) at A[i*sr + k*sk].
void gemm(int64_t M, int64_t nvec, int64_t K, const float* A, int64_t sr, int64_t sk,
          const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  for (int64_t j = 0; j < nvec; j += kNV) {
    const int nv = static_cast<int>(std::min<int64_t>(kNV, nvec - j));
    for (int64_t i = 0; i < M; i += kR) {
      const int r = static_cast<int>(std::min<int64_t>(kR, M - i));
      kMicro[accumulate][r - 1][nv - 1](K, A + i * sr, sr, sk, B + j * kW, ldb,
                                        C + i * ldc + j * kW, ldc);
    }
  }
}

// 64-byte aligned float scratch, zero-filled.
struct Scratch {
  float* p = nullptr;
  explicit Scratch(size_t n) {
    const size_t bytes = round_up(static_cast<int64_t>(std::max<size_t>(n, 1) * 4), 64);
    p = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (p) std::memset(p, 0, bytes);
  }
  ~Scratch() { std::free(p); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

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

int pool_workers(ffi::ThreadPool& pool, int64_t items) {
  const int64_t t = std::max<int64_t>(1, pool.num_threads());
  return static_cast<int>(std::min<int64_t>(t, std::max<int64_t>(items, 1)));
}

// Rows per block so that a [rows, padded length] float block stays ~512 KB.
int64_t block_rows(int64_t padded_len) {
  const int64_t rows = (512 * 1024 / 4) / std::max<int64_t>(padded_len, 1);
  return std::clamp<int64_t>(rows / kR * kR, kR, 16 * kR);
}

struct Dims {
  int64_t batch, nq, nk, heads, d;
  int64_t dp() const { return round_up(d, kW); }            // padded head dim
  int64_t nqp() const { return round_up(nq, kW * kNV); }    // padded lengths
  int64_t nkp() const { return round_up(nk, kW * kNV); }
  int64_t row() const { return heads * d; }                 // token stride
};

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

// dst[c * ld + i] = src[i * stride + c] for i < n, c < d (an [n, d] slice, transposed),
// in 16 x 16 tiles so that reads and writes both stay within a few cache lines.
void pack_transposed(const float* src, int64_t stride, int64_t n, int64_t d, float* dst,
                     int64_t ld) {
  constexpr int64_t kT = 16;
  for (int64_t i0 = 0; i0 < n; i0 += kT)
    for (int64_t c0 = 0; c0 < d; c0 += kT) {
      const int64_t i1 = std::min(n, i0 + kT), c1 = std::min(d, c0 + kT);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t i = i0; i < i1; ++i) dst[c * ld + i] = src[i * stride + c];
    }
}

// dst[i * ld + c] = src[i * stride + c]: a head's [n, d] slice, rows padded to ld.
void pack_rows(const float* src, int64_t stride, int64_t n, int64_t d, float* dst, int64_t ld) {
  for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * ld, src + i * stride, d * 4);
}

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

ffi::Error AttentionForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                            ffi::Buffer<ffi::F32> v, ffi::ResultBuffer<ffi::F32> o,
                            ffi::ResultBuffer<ffi::F32> lse) {
  Dims s;
  if (ffi::Error err = get_dims(q, k, v, s); err.failure()) return err;
  const int64_t dp = s.dp(), nkp = s.nkp(), row = s.row(), bh = s.batch * s.heads;
  if (s.nq == 0 || s.nk == 0 || bh == 0) return ffi::Error::Success();
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  float *op = o->typed_data(), *lp = lse->typed_data();

  // Per (batch, head): K^T [d, nkp] (zero columns past nk) and V [nk, dp].
  Scratch kt(bh * s.d * nkp), vpad(bh * s.nk * dp);
  auto head = [&](int64_t g) { return (g / s.heads) * s.nk * row + (g % s.heads) * s.d; };
  parallel_for(pool, bh, pool_workers(pool, bh), [&](int64_t g, int) {
    pack_transposed(kp + head(g), row, s.nk, s.d, kt.p + g * s.d * nkp, nkp);
    pack_rows(vp + head(g), row, s.nk, s.d, vpad.p + g * s.nk * dp, dp);
  });

  const int64_t br = block_rows(nkp), qblocks = (s.nq + br - 1) / br, items = bh * qblocks;
  const int workers = pool_workers(pool, items);
  std::vector<std::unique_ptr<Scratch>> sbuf, obuf;
  for (int w = 0; w < workers; ++w) {
    sbuf.emplace_back(new Scratch(br * nkp));
    obuf.emplace_back(new Scratch(br * dp));
  }
  const int64_t full = s.nk / kW * kW;
  parallel_for(pool, items, workers, [&](int64_t item, int w) {
    const int64_t g = item / qblocks, i0 = (item % qblocks) * br, m = std::min(br, s.nq - i0);
    const int64_t b = g / s.heads, h = g % s.heads;
    const float* qblk = qp + (b * s.nq + i0) * row + h * s.d;
    float *S = sbuf[w]->p, *O = obuf[w]->p;
    float inv[16 * kR];  // 1 / row sum; block_rows() caps m at 16 * kR
    gemm(m, nkp / kW, s.d, qblk, row, 1, kt.p + g * s.d * nkp, nkp, S, nkp, false);
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
    gemm(m, dp / kW, s.nk, S, nkp, 1, vpad.p + g * s.nk * dp, dp, O, dp, false);
    for (int64_t r = 0; r < m; ++r) {
      float* dst = op + (b * s.nq + i0 + r) * row + h * s.d;
      for (int64_t c = 0; c < s.d; ++c) dst[c] = O[r * dp + c] * inv[r];
    }
  });
  return ffi::Error::Success();
}

ffi::Error AttentionBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q,
                             ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                             ffi::Buffer<ffi::F32> o, ffi::Buffer<ffi::F32> lse,
                             ffi::Buffer<ffi::F32> dout, ffi::ResultBuffer<ffi::F32> dq,
                             ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv) {
  Dims s;
  if (ffi::Error err = get_dims(q, k, v, s); err.failure()) return err;
  const int64_t dp = s.dp(), nqp = s.nqp(), row = s.row(), bh = s.batch * s.heads;
  if (s.nq == 0 || s.nk == 0 || bh == 0) {
    std::memset(dq->typed_data(), 0, dq->size_bytes());
    std::memset(dk->typed_data(), 0, dk->size_bytes());
    std::memset(dv->typed_data(), 0, dv->size_bytes());
    return ffi::Error::Success();
  }
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  const float *opt = o.typed_data(), *lp = lse.typed_data(), *dop = dout.typed_data();
  float *dqp = dq->typed_data(), *dkp = dk->typed_data(), *dvp = dv->typed_data();

  // Per (batch, head), over the queries: Q^T and dO^T [d, nqp], Q and dO [nq, dp],
  // the row log-sum-exp and delta = rowsum(dO * O), both padded to nqp.
  Scratch qt(bh * s.d * nqp), dot(bh * s.d * nqp), qpad(bh * s.nq * dp), dopad(bh * s.nq * dp);
  Scratch lsep(bh * nqp), delta(bh * nqp);
  auto qhead = [&](int64_t g) { return (g / s.heads) * s.nq * row + (g % s.heads) * s.d; };
  auto khead = [&](int64_t g) { return (g / s.heads) * s.nk * row + (g % s.heads) * s.d; };
  parallel_for(pool, bh, pool_workers(pool, bh), [&](int64_t g, int) {
    const int64_t off = qhead(g);
    pack_transposed(qp + off, row, s.nq, s.d, qt.p + g * s.d * nqp, nqp);
    pack_transposed(dop + off, row, s.nq, s.d, dot.p + g * s.d * nqp, nqp);
    pack_rows(qp + off, row, s.nq, s.d, qpad.p + g * s.nq * dp, dp);
    pack_rows(dop + off, row, s.nq, s.d, dopad.p + g * s.nq * dp, dp);
    for (int64_t i = 0; i < s.nq; ++i) {
      const float *a = dop + off + i * row, *b = opt + off + i * row;
      float acc = 0;
      for (int64_t c = 0; c < s.d; ++c) acc += a[c] * b[c];
      delta.p[g * nqp + i] = acc;
      lsep.p[g * nqp + i] = lp[g * s.nq + i];
    }
  });

  // Items are key blocks: each owns its rows of dk and dv; dq gets a partial
  // sum per worker (K rows padded in place), reduced at the end.
  const int64_t bc = block_rows(nqp), kblocks = (s.nk + bc - 1) / bc, items = bh * kblocks;
  const int workers = pool_workers(pool, items);
  std::vector<std::unique_ptr<Scratch>> pbuf, dsbuf, obuf, kbuf, dqacc;
  for (int w = 0; w < workers; ++w) {
    pbuf.emplace_back(new Scratch(bc * nqp));
    dsbuf.emplace_back(new Scratch(bc * nqp));
    obuf.emplace_back(new Scratch(bc * dp));
    kbuf.emplace_back(new Scratch(bc * dp));
    dqacc.emplace_back(new Scratch(bh * s.nq * dp));
  }
  const int64_t full = s.nq / kW * kW;
  parallel_for(pool, items, workers, [&](int64_t item, int w) {
    const int64_t g = item / kblocks, c0 = (item % kblocks) * bc, m = std::min(bc, s.nk - c0);
    const float* kblk = kp + khead(g) + c0 * row;
    const float* vblk = vp + khead(g) + c0 * row;
    const float *L = lsep.p + g * nqp, *Dl = delta.p + g * nqp;
    float *P = pbuf[w]->p, *dS = dsbuf[w]->p, *O = obuf[w]->p, *Kb = kbuf[w]->p;
    // P^T = exp(K Q^T - lse) and dP^T = V dO^T: [m keys, nq queries].
    gemm(m, nqp / kW, s.d, kblk, row, 1, qt.p + g * s.d * nqp, nqp, P, nqp, false);
    gemm(m, nqp / kW, s.d, vblk, row, 1, dot.p + g * s.d * nqp, nqp, dS, nqp, false);
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
    auto write = [&](float* dst) {
      for (int64_t r = 0; r < m; ++r)
        std::memcpy(dst + khead(g) + (c0 + r) * row, O + r * dp, s.d * 4);
    };
    gemm(m, dp / kW, s.nq, P, nqp, 1, dopad.p + g * s.nq * dp, dp, O, dp, false);
    write(dvp);
    gemm(m, dp / kW, s.nq, dS, nqp, 1, qpad.p + g * s.nq * dp, dp, O, dp, false);
    write(dkp);
    // dQ += dS K over this key block (dS read transposed).
    pack_rows(kblk, row, m, s.d, Kb, dp);
    gemm(s.nq, dp / kW, m, dS, 1, nqp, Kb, dp, dqacc[w]->p + g * s.nq * dp, dp, true);
  });

  parallel_for(pool, bh, pool_workers(pool, bh), [&](int64_t g, int) {
    for (int64_t i = 0; i < s.nq; ++i) {
      float* dst = dqp + qhead(g) + i * row;
      const float* src = dqacc[0]->p + (g * s.nq + i) * dp;
      std::memcpy(dst, src, s.d * 4);
      for (int w = 1; w < workers; ++w) {
        const float* part = dqacc[w]->p + (g * s.nq + i) * dp;
        for (int64_t c = 0; c < s.d; ++c) dst[c] += part[c];
      }
    }
  });
  return ffi::Error::Success();
}

// ------------------------------------------------------------------ matmul
// out[M, N] = op(a) @ op(b) with op = transpose where asked: the three
// matmuls of a dense layer (y = x W, dx = dy W^T, dW = x^T dy). Blocked so
// that an item's A block and B panel stay in L2 and the weight gradient's
// long token contraction is split into chunks.
using Matrix = ffi::Buffer<ffi::F32, 2>;

ffi::Error Matmul(ffi::ThreadPool pool, Matrix a, Matrix b, ffi::Result<Matrix> out,
                  bool transpose_a, bool transpose_b) {
  const auto da = a.dimensions(), db = b.dimensions();
  const int64_t M = transpose_a ? da[1] : da[0], K = transpose_a ? da[0] : da[1];
  const int64_t N = transpose_b ? db[0] : db[1];
  if ((transpose_b ? db[1] : db[0]) != K)
    return ffi::Error::InvalidArgument("cpu matmul: contracting dims differ");
  float* C = out->typed_data();
  if (M == 0 || N == 0) return ffi::Error::Success();
  if (K == 0) {
    std::memset(C, 0, out->size_bytes());
    return ffi::Error::Success();
  }
  const float *A = a.typed_data(), *B = b.typed_data();
  const int64_t sr = transpose_a ? 1 : K, sk = transpose_a ? M : 1;
  const int64_t np = round_up(N, kW);
  // B as [K, np] rows: packed when transposed or not a whole number of vectors.
  std::unique_ptr<Scratch> bpack;
  int64_t ldb = N;
  if (transpose_b || np != N) {
    bpack.reset(new Scratch(K * np));
    if (transpose_b)
      pack_transposed(B, K, N, K, bpack->p, np);
    else
      pack_rows(B, N, K, N, bpack->p, np);
    B = bpack->p;
    ldb = np;
  }
  constexpr int64_t kMc = 16 * kR, kNc = 4 * kNV * kW, kKc = 256;
  const int64_t mblocks = (M + kMc - 1) / kMc, nblocks = (np + kNc - 1) / kNc;
  const int64_t items = mblocks * nblocks;
  const int workers = pool_workers(pool, items);
  const bool padded_c = np != N;
  std::vector<std::unique_ptr<Scratch>> cbuf;
  if (padded_c)
    for (int w = 0; w < workers; ++w) cbuf.emplace_back(new Scratch(kMc * np));
  parallel_for(pool, items, workers, [&](int64_t item, int w) {
    const int64_t i0 = (item / nblocks) * kMc, j0 = (item % nblocks) * kNc;
    const int64_t m = std::min(kMc, M - i0), n = std::min(kNc, np - j0);
    float* c = padded_c ? cbuf[w]->p + j0 : C + i0 * N + j0;
    const int64_t ldc = padded_c ? np : N;
    for (int64_t k0 = 0; k0 < K; k0 += kKc)
      gemm(m, n / kW, std::min(kKc, K - k0), A + i0 * sr + k0 * sk, sr, sk, B + k0 * ldb + j0,
           ldb, c, ldc, k0 > 0);
    if (padded_c)
      for (int64_t r = 0; r < m; ++r)
        std::memcpy(C + (i0 + r) * N + j0, c + r * np, std::min(n, N - j0) * 4);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(Vmae2CpuAttentionForward, AttentionForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(Vmae2CpuAttentionBackward, AttentionBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(Vmae2CpuMatmul, Matmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Matrix>()
                                  .Arg<Matrix>()
                                  .Ret<Matrix>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b"));
