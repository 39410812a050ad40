// Fused elementwise passes of the bfloat16 training step (boltzkit.kernels.native).
//
// A bfloat16 CD/PCD step spends more time in its elementwise passes (bias add, sigmoid,
// compare with the uniforms, casts to the GEMM dtype, the momentum update and the new
// low-precision copy of W) than in its GEMMs; each pass is a separate torch call that
// reads and writes whole buffers.  Here each group is one loop over the data: the same
// arithmetic in float32 as the torch calls they replace (only rounding differs: a fused
// multiply-add, the exp of libm's vector math), the same uniforms (the 16-bit draws of
// boltzkit.units.bits16, hashed inside the loops from the caller's keys).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <vector>

namespace {

inline float bf16_to_float(uint16_t h) {
  uint32_t x = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

inline float to_float(uint16_t h) { return bf16_to_float(h); }
inline float to_float(float f) { return f; }

inline uint16_t float_to_bf16(float f) {  // round to nearest, ties to even (finite values)
  uint32_t x;
  std::memcpy(&x, &f, 4);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

constexpr uint16_t kBf16One = 0x3f80;

// The 16-bit draws of mixed precision (boltzkit.units.hashed_bits16 is the same in NumPy):
// draw i of a call keyed by the 64-bit word k is the top half of
// triple32((i + lo(k)) ^ triple32(hi(k))), triple32 being C. Wellons's 32-bit integer
// hash (three xorshift-multiply rounds, a bijection).
inline uint32_t triple32(uint32_t x) {
  x ^= x >> 17; x *= 0xed5ad4bbU;
  x ^= x >> 11; x *= 0xac4c1b51U;
  x ^= x >> 15; x *= 0x31848babU;
  x ^= x >> 14;
  return x;
}

struct HashKey {
  uint32_t lo, hi;
  explicit HashKey(int64_t key)
      : lo(static_cast<uint32_t>(static_cast<uint64_t>(key))),
        hi(triple32(static_cast<uint32_t>(static_cast<uint64_t>(key) >> 32))) {}
  inline float uniform(uint32_t i) const {  // a multiple of 2^-16 in [0, 1)
    return static_cast<float>(triple32((i + lo) ^ hi) >> 16) * (1.0f / 65536.0f);
  }
};

void check(const at::Tensor& t, at::ScalarType dtype, int64_t numel, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), name, ": a contiguous CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, name, ": wrong dtype ", t.scalar_type());
  TORCH_CHECK(t.numel() == numel, name, ": ", t.numel(), " elements, expected ", numel);
}

}  // namespace

template <typename In>
inline void sigmoid_row(const In* pre, const float* b, float* q, int64_t C) {
#pragma omp simd
  for (int64_t j = 0; j < C; ++j) {
    // Clamped: under -ffast-math exp's overflow to inf is not handled (1 / (1 + inf) came
    // out NaN); sigmoid(+-80) is 1 and 1.8e-35 in float32.
    float x = to_float(pre[j]) + b[j];
    x = x > 80.0f ? 80.0f : x;
    x = x < -80.0f ? -80.0f : x;
    q[j] = 1.0f / (1.0f + std::exp(-x));
  }
}

// Rows are handled in tiles of at most 32 (RowTiles): fixed by R alone, so the column sums
// below, summed per tile and then over the tiles in order, do not depend on the number of
// threads (a resumed run on another thread count sums alike).
struct RowTiles {
  int64_t n, size;
  explicit RowTiles(int64_t R) : n(std::max<int64_t>(1, (R + 31) / 32)), size((R + n - 1) / n) {}
};

// out (C) = the sum over the tiles, in order, of part (n, C).
void sum_tiles(const std::vector<float>& part, int64_t n, int64_t C, float* out) {
  std::fill(out, out + C, 0.0f);
  for (int64_t t = 0; t < n; ++t) {
    const float* p = part.data() + t * C;
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) out[j] += p[j];
  }
}

// out (C) = the column sums of x (R, C) float32, summed as sample_bernoulli sums.
void column_sums(const at::Tensor& x, const at::Tensor& out) {
  const int64_t R = x.size(0), C = x.size(1);
  check(x, at::kFloat, R * C, "x");
  check(out, at::kFloat, C, "out");
  const RowTiles tl(R);
  std::vector<float> part(tl.n * C, 0.0f);
  const float* a = x.data_ptr<float>();
  at::parallel_for(0, tl.n, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t ti = t0; ti < t1; ++ti) {
      float* acc = part.data() + ti * C;
      for (int64_t r = ti * tl.size; r < std::min(R, (ti + 1) * tl.size); ++r) {
#pragma omp simd
        for (int64_t j = 0; j < C; ++j) acc[j] += a[r * C + j];
      }
    }
  });
  sum_tiles(part, tl.n, C, out.data_ptr<float>());
}

// p = sigmoid(pre + bias) for pre (R, C) bfloat16 or float32 and bias (C) float32; each
// output given (non-empty) is written: prob (float32) and prob_low (bfloat16) get scale * p;
// state and state_low (float32 / bfloat16) get 1 where u < p, u the draws keyed by key (see
// HashKey); prob_sum and state_sum (C) the column sums of scale * p and of the states.
// low_col >= 0: prob_low is written transposed, (C, L), row r of the result into column
// low_col + r (for a GEMM that wants the transpose as its left operand), a tile of rows at a
// time so that each unit's values are one contiguous run (scattered 2-byte stores, one per
// unit and row, made this loop 2x slower).
void sample_bernoulli(const at::Tensor& pre, const at::Tensor& bias, int64_t key,
                      const at::Tensor& prob, const at::Tensor& prob_low, double scale,
                      const at::Tensor& state, const at::Tensor& state_low, int64_t low_col,
                      const at::Tensor& prob_sum, const at::Tensor& state_sum) {
  TORCH_CHECK(pre.dim() == 2, "pre: (rows, units)");
  const int64_t R = pre.size(0), C = pre.size(1), N = R * C;
  TORCH_CHECK(N <= (int64_t(1) << 32), "at most 2^32 draws per key");
  const bool low_pre = pre.scalar_type() == at::kBFloat16;
  check(pre, low_pre ? at::kBFloat16 : at::kFloat, N, "pre");
  check(bias, at::kFloat, C, "bias");
  const bool want_p = prob.numel() > 0, want_pl = prob_low.numel() > 0;
  const bool want_s = state.numel() > 0, want_sl = state_low.numel() > 0;
  const bool want_ps = prob_sum.numel() > 0, want_ss = state_sum.numel() > 0;
  if (want_p) check(prob, at::kFloat, N, "prob");
  int64_t ld = 0;  // prob_low transposed: (C, ld), row r of p in its column low_col + r
  if (want_pl && low_col >= 0) {
    TORCH_CHECK(prob_low.dim() == 2 && prob_low.size(0) == C && low_col + R <= prob_low.size(1),
                "prob_low: (units, >= low_col + rows) for a transposed write");
    ld = prob_low.size(1);
    check(prob_low, at::kBFloat16, prob_low.numel(), "prob_low");
  } else if (want_pl) {
    check(prob_low, at::kBFloat16, N, "prob_low");
  }
  if (want_s) check(state, at::kFloat, N, "state");
  if (want_sl) check(state_low, at::kBFloat16, N, "state_low");
  if (want_ps) check(prob_sum, at::kFloat, C, "prob_sum");
  if (want_ss) check(state_sum, at::kFloat, C, "state_sum");
  const HashKey hk(key);
  const auto* Pl = low_pre ? reinterpret_cast<const uint16_t*>(pre.data_ptr()) : nullptr;
  const float* Pf = low_pre ? nullptr : pre.data_ptr<float>();
  const float* b = bias.data_ptr<float>();
  const bool draw = want_s || want_sl || want_ss;
  float* po = want_p ? prob.data_ptr<float>() : nullptr;
  auto* plo = want_pl ? reinterpret_cast<uint16_t*>(prob_low.data_ptr()) : nullptr;
  float* so = want_s ? state.data_ptr<float>() : nullptr;
  auto* slo = want_sl ? reinterpret_cast<uint16_t*>(state_low.data_ptr()) : nullptr;
  const float sc = static_cast<float>(scale);
  const bool transposed = plo != nullptr && ld > 0;
  const RowTiles tl(R);
  std::vector<float> psum(want_ps ? tl.n * C : 0, 0.0f), ssum(want_ss ? tl.n * C : 0, 0.0f);
  at::parallel_for(0, tl.n, 1, [&](int64_t t0, int64_t t1) {
    // st: a row's states; qs: a row's probabilities, or the tile's when transposed
    std::vector<float> buf((transposed ? tl.size + 1 : 2) * C);
    float* st = buf.data();
    float* qs = st + C;
    for (int64_t ti = t0; ti < t1; ++ti) {
      const int64_t rb = ti * tl.size, re = std::min(R, rb + tl.size);
      float* pacc = want_ps ? psum.data() + ti * C : nullptr;
      float* sacc = want_ss ? ssum.data() + ti * C : nullptr;
      for (int64_t r = rb; r < re; ++r) {
        const int64_t o = r * C;
        float* q = transposed ? qs + (r - rb) * C : qs;
        if (Pl != nullptr) sigmoid_row(Pl + o, b, q, C);
        else sigmoid_row(Pf + o, b, q, C);
        if (draw) {
          const uint32_t o32 = static_cast<uint32_t>(o);
#pragma omp simd
          for (int64_t j = 0; j < C; ++j)
            st[j] = hk.uniform(o32 + static_cast<uint32_t>(j)) < q[j] ? 1.0f : 0.0f;
          if (so != nullptr) {
#pragma omp simd
            for (int64_t j = 0; j < C; ++j) so[o + j] = st[j];
          }
          if (slo != nullptr) {
#pragma omp simd
            for (int64_t j = 0; j < C; ++j) slo[o + j] = st[j] != 0.0f ? kBf16One : 0;
          }
          if (sacc != nullptr) {
#pragma omp simd
            for (int64_t j = 0; j < C; ++j) sacc[j] += st[j];
          }
        }
        if (po != nullptr) {
#pragma omp simd
          for (int64_t j = 0; j < C; ++j) po[o + j] = q[j] * sc;
        }
        if (pacc != nullptr) {
#pragma omp simd
          for (int64_t j = 0; j < C; ++j) pacc[j] += q[j] * sc;
        }
        if (plo != nullptr && !transposed) {
#pragma omp simd
          for (int64_t j = 0; j < C; ++j) plo[o + j] = float_to_bf16(q[j] * sc);
        }
      }
      if (transposed) {
        const int64_t nt = re - rb;
        for (int64_t j = 0; j < C; ++j) {
          uint16_t* col = plo + j * ld + low_col + rb;
          const float* qj = qs + j;
          for (int64_t t = 0; t < nt; ++t) col[t] = float_to_bf16(qj[t * C] * sc);
        }
      }
    }
  });
  if (want_ps) sum_tiles(psum, tl.n, C, prob_sum.data_ptr<float>());
  if (want_ss) sum_tiles(ssum, tl.n, C, state_sum.data_ptr<float>());
}

// The weight step from G = V^T H (bfloat16, the shape of W), then the new bfloat16 copy
// of W.  With a momentum buffer: buf = momentum buf + alpha G + wd W; W -= lr buf.
// Without (buf empty): W = (1 - lr wd) W + alpha G.
void sgd_step(const at::Tensor& W, const at::Tensor& buf, const at::Tensor& G, double lr,
              double momentum, double alpha, double wd, const at::Tensor& W_low) {
  const int64_t N = W.numel();
  check(W, at::kFloat, N, "W");
  check(G, at::kBFloat16, N, "G");
  check(W_low, at::kBFloat16, N, "W_low");
  const bool has_buf = buf.numel() > 0;
  if (has_buf) check(buf, at::kFloat, N, "buf");
  float* w = W.data_ptr<float>();
  float* m = has_buf ? buf.data_ptr<float>() : nullptr;
  const auto* g = reinterpret_cast<const uint16_t*>(G.data_ptr());
  auto* wl = reinterpret_cast<uint16_t*>(W_low.data_ptr());
  const float l = static_cast<float>(lr), mo = static_cast<float>(momentum);
  const float a = static_cast<float>(alpha), d = static_cast<float>(wd);
  const float keep = static_cast<float>(1.0 - lr * wd);
  at::parallel_for(0, N, 16384, [&](int64_t i0, int64_t i1) {
    if (m != nullptr) {
#pragma omp simd
      for (int64_t i = i0; i < i1; ++i) {
        const float mi = mo * m[i] + a * bf16_to_float(g[i]) + d * w[i];
        m[i] = mi;
        const float wi = w[i] - l * mi;
        w[i] = wi;
        wl[i] = float_to_bf16(wi);
      }
    } else {
#pragma omp simd
      for (int64_t i = i0; i < i1; ++i) {
        const float wi = keep * w[i] + a * bf16_to_float(g[i]);
        w[i] = wi;
        wl[i] = float_to_bf16(wi);
      }
    }
  });
}

// out (N int16, read as unsigned): the 16-bit draws keyed by key (see HashKey).
void hashed_bits16(const at::Tensor& out, int64_t key) {
  const int64_t N = out.numel();
  check(out, at::kShort, N, "out");
  TORCH_CHECK(N <= (int64_t(1) << 32), "at most 2^32 draws per key");
  auto* o = reinterpret_cast<uint16_t*>(out.data_ptr());
  const HashKey hk(key);
  at::parallel_for(0, N, 32768, [&](int64_t i0, int64_t i1) {
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i)
      o[i] = static_cast<uint16_t>(triple32((static_cast<uint32_t>(i) + hk.lo) ^ hk.hi) >> 16);
  });
}

// dst (C, R) = src (R, C)^T, float32 to float32 or bfloat16, in cache-sized tiles.
void transpose_copy(const at::Tensor& src, const at::Tensor& dst) {
  TORCH_CHECK(src.dim() == 2 && dst.dim() == 2, "transpose_copy: matrices");
  const int64_t R = src.size(0), C = src.size(1);
  check(src, at::kFloat, R * C, "src");
  TORCH_CHECK(dst.size(0) == C && dst.size(1) == R, "transpose_copy: dst must be src^T");
  const bool low = dst.scalar_type() == at::kBFloat16;
  check(dst, low ? at::kBFloat16 : at::kFloat, R * C, "dst");
  const float* a = src.data_ptr<float>();
  float* df = low ? nullptr : dst.data_ptr<float>();
  auto* dl = low ? reinterpret_cast<uint16_t*>(dst.data_ptr()) : nullptr;
  constexpr int64_t T = 32;
  const int64_t tiles_r = (R + T - 1) / T;
  at::parallel_for(0, tiles_r, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t tr = t0; tr < t1; ++tr) {
      const int64_t r0 = tr * T, r1 = std::min(R, r0 + T);
      for (int64_t c0 = 0; c0 < C; c0 += T) {
        const int64_t c1 = std::min(C, c0 + T);
        for (int64_t c = c0; c < c1; ++c) {
          if (df != nullptr) {
            for (int64_t r = r0; r < r1; ++r) df[c * R + r] = a[r * C + c];
          } else {
            for (int64_t r = r0; r < r1; ++r) dl[c * R + r] = float_to_bf16(a[r * C + c]);
          }
        }
      }
    }
  });
}

// The bias steps from the column sums of the data's and the chains' visible states (dv, mv)
// and hidden probabilities (dh; mh already scaled by -w): the gradients V^T s, s the rows'
// signs (1 for data, -w for chains), and H^T 1.  With momentum buffers gb, gc: as sgd_step;
// without: p += alpha grad, the visible bias's step in float64, rounded once, when wide.
void bias_steps(const at::Tensor& b, const at::Tensor& c, const at::Tensor& gb,
                const at::Tensor& gc, const float* dv, const float* mv, const float* dh,
                const float* mh, float w, double lr, double momentum, double alpha,
                bool wide) {
  const int64_t nv = b.numel(), nh = c.numel();
  float* pb = b.data_ptr<float>();
  float* pc = c.data_ptr<float>();
  const float l = static_cast<float>(lr), a = static_cast<float>(alpha);
  if (gb.numel() > 0) {
    float* m = gb.data_ptr<float>();
    const float mo = static_cast<float>(momentum);
    for (int64_t j = 0; j < nv; ++j) {
      m[j] = mo * m[j] + a * (dv[j] - w * mv[j]);
      pb[j] -= l * m[j];
    }
    m = gc.data_ptr<float>();
    for (int64_t j = 0; j < nh; ++j) {
      m[j] = mo * m[j] + a * (dh[j] + mh[j]);
      pc[j] -= l * m[j];
    }
    return;
  }
  for (int64_t j = 0; j < nv; ++j) {
    const float g = dv[j] - w * mv[j];
    if (wide) pb[j] = static_cast<float>(static_cast<double>(pb[j]) + alpha * g);
    else pb[j] += a * g;
  }
  for (int64_t j = 0; j < nh; ++j) pc[j] += a * (dh[j] + mh[j]);
}

// One pass of CD-k / PCD-k + SGD over `batches` (each (B, n_visible) float32, the same B;
// or, with `rows` (n, n_visible) float32 given, each the B int64 indices of its rows),
// the loop of FusedBernoulliSGD._steps_native in C++: the weights transposed (WT, their
// momentum bufT and bfloat16 copy WlT, (n_hidden, n_visible)), the workspace's buffers
// (ws: V, Vl, Fl, HlT, hsl, pvl, GT, F32; see fused.py), the keys of the draws (2k per
// batch, in the general path's order), and, for PCD, the chains' kept hidden field.  The
// bias gradients and the mean hidden activation come from column sums taken inside the
// sampling loops.  Returns the field to keep (PCD) or an empty tensor.
at::Tensor bernoulli_pass(const std::vector<at::Tensor>& batches, const at::Tensor& keys,
                          const at::Tensor& WT, const at::Tensor& bufT, const at::Tensor& WlT,
                          const at::Tensor& b, const at::Tensor& c, const at::Tensor& gb,
                          const at::Tensor& gc, const std::vector<at::Tensor>& ws,
                          const at::Tensor& field0, bool persistent, int64_t k, double lr,
                          double momentum, double wd, double model_weight, bool wide,
                          const at::Tensor& activation, const at::Tensor& rows) {
  TORCH_CHECK(ws.size() == 8, "bernoulli_pass: 8 workspace buffers");
  const at::Tensor &V = ws[0], &Vl = ws[1], &Fl = ws[2], &HlT = ws[3];
  const at::Tensor &hsl = ws[4], &pvl = ws[5], &GT = ws[6], &F32 = ws[7];
  const int64_t BM = V.size(0), nh = WT.size(0), nv = V.size(1);
  const int64_t M = hsl.size(0), B = BM - M;
  const at::Tensor Vd = V.narrow(0, 0, B), Vm = V.narrow(0, B, M);
  const at::Tensor Vdl = Vl.narrow(0, 0, B), Vml = Vl.narrow(0, B, M);
  const at::Tensor Fdl = Fl.narrow(0, 0, B), Fml = Fl.narrow(0, B, M);
  const at::Tensor Fm = F32.narrow(0, B, M);
  const at::Tensor WlTt = WlT.t();
  const at::Tensor e32 = at::empty({0}, V.options());
  const at::Tensor e16 = at::empty({0}, Vl.options());
  // column sums: the data's and the chains' visible states, hidden probabilities
  const at::Tensor sums = at::empty({2 * (nv + nh)}, V.options());
  const at::Tensor dv = sums.narrow(0, 0, nv), mv = sums.narrow(0, nv, nv);
  const at::Tensor dh = sums.narrow(0, 2 * nv, nh), mh = sums.narrow(0, 2 * nv + nh, nh);
  const bool has_buf = bufT.numel() > 0;
  if (has_buf) {
    check(gb, at::kFloat, nv, "gb");
    check(gc, at::kFloat, nh, "gc");
  }
  check(b, at::kFloat, nv, "b");
  check(c, at::kFloat, nh, "c");
  const bool act = activation.numel() > 0;
  if (act) check(activation, at::kFloat, 1, "activation");
  TORCH_CHECK(keys.scalar_type() == at::kLong && keys.is_contiguous() &&
                  keys.numel() == static_cast<int64_t>(batches.size()) * 2 * k,
              "bernoulli_pass: 2k keys per batch");
  const int64_t* key = keys.data_ptr<int64_t>();
  const float w = static_cast<float>(model_weight);
  at::Tensor field = field0;
  const bool gather = rows.numel() > 0;
  if (gather) check(rows, at::kFloat, rows.numel(), "rows");
  for (const at::Tensor& v_data : batches) {
    TORCH_CHECK(v_data.size(0) == B, "bernoulli_pass: every batch has the workspace's rows");
    if (gather) {  // v_data: the batch's row indices into rows (n, n_visible)
      TORCH_CHECK(v_data.scalar_type() == at::kLong && v_data.is_contiguous(),
                  "bernoulli_pass: int64 row indices");
      const int64_t* idx = v_data.data_ptr<int64_t>();
      const float* src = rows.data_ptr<float>();
      float* vd = Vd.data_ptr<float>();
      auto* vdl = reinterpret_cast<uint16_t*>(Vdl.data_ptr());
      const int64_t n_rows = rows.size(0);
      at::parallel_for(0, B, 8, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t i = idx[r];
          TORCH_CHECK(i >= 0 && i < n_rows, "bernoulli_pass: row index out of range");
          const float* x = src + i * nv;
#pragma omp simd
          for (int64_t j = 0; j < nv; ++j) {
            vd[r * nv + j] = x[j];
            vdl[r * nv + j] = float_to_bf16(x[j]);
          }
        }
      });
    } else {
      Vd.copy_(v_data);
      Vdl.copy_(v_data);
    }
    column_sums(Vd, dv);
    if (persistent) {  // first half-sweep from the chains' kept field
      sample_bernoulli(field.is_contiguous() ? field : field.contiguous(), c, *key++, e32,
                       e16, 1.0, e32, hsl, -1, e32, e32);
    } else {  // CD: the data's hidden means, and the first draw from them
      at::mm_out(const_cast<at::Tensor&>(Fdl), Vdl, WlTt);
      sample_bernoulli(Fdl, c, *key++, e32, HlT, 1.0, e32, hsl, 0, dh, e32);
    }
    for (int64_t i = 0; i < k; ++i) {
      if (i) {
        at::mm_out(const_cast<at::Tensor&>(Fml), Vml, WlTt);
        sample_bernoulli(Fml, c, *key++, e32, e16, 1.0, e32, hsl, -1, e32, e32);
      }
      at::mm_out(const_cast<at::Tensor&>(pvl), hsl, WlT);
      sample_bernoulli(pvl, b, *key++, e32, e16, 1.0, Vm, Vml, -1, e32,
                       i + 1 == k ? mv : e32);
    }
    if (persistent) {  // both hidden fields, before the update
      at::mm_out(const_cast<at::Tensor&>(Fl), Vl, WlTt);
      Fm.copy_(Fml);
      sample_bernoulli(Fdl, c, 0, e32, HlT, 1.0, e32, e16, 0, dh, e32);
      field = Fm;
    } else {
      at::mm_out(const_cast<at::Tensor&>(Fml), Vml, WlTt);
    }
    sample_bernoulli(Fml, c, 0, e32, HlT, -model_weight, e32, e16, B, mh, e32);
    if (act) {  // the mean hidden activation of the data, 1 / (B nh) sum of dh
      const float* h = dh.data_ptr<float>();
      double total = 0.0;
      for (int64_t j = 0; j < nh; ++j) total += h[j];
      activation.data_ptr<float>()[0] += static_cast<float>(total / static_cast<double>(B * nh));
    }
    at::mm_out(const_cast<at::Tensor&>(GT), HlT, Vl);  // (V^T H)^T
    const double a = (has_buf ? -1.0 : lr) / static_cast<double>(B);
    sgd_step(WT, has_buf ? bufT : e32, GT, lr, has_buf ? momentum : 0.0, a, wd, WlT);
    bias_steps(b, c, has_buf ? gb : e32, has_buf ? gc : e32, dv.data_ptr<float>(),
               mv.data_ptr<float>(), dh.data_ptr<float>(), mh.data_ptr<float>(), w, lr,
               momentum, a, wide);
  }
  return persistent ? field : e32;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("transpose_copy", &transpose_copy);
  m.def("bernoulli_pass", &bernoulli_pass);
  m.def("hashed_bits16", &hashed_bits16);
  m.def("sample_bernoulli", &sample_bernoulli);
  m.def("sgd_step", &sgd_step);
  m.def("column_sums", &column_sums);
}
