// Plackett-Luce NLL of ordered top-k lists: native CPU kernels for the XLA FFI.
//
// Math (one row; see kernels/pl_nll/xla.py for the derivation):
//   x_i   = s_i if item i is available (where[i] and s_i > -inf), else -inf
//   M     = max_i x_i,  e_i = exp(x_i - M),  E_U = sum of e_i over items never picked
//   S_j   = E_U + sum_{l >= j, valid} e_{pi_l}         (suffix sums)
//   D_j   = M + log S_j,  t_j = D_j - x_{pi_j},  NLL = sum_j w_j t_j
//   P_m   = sum_{j <= m, valid} w_j / S_j               (prefix sums)
//   dNLL/ds_i = e_i P_pos(i) - w_pos(i),  dNLL/dw_j = t_j
// where an item never picked sees all stages (P_last, w = 0).
//
// Two handlers:
//   LucePlNll      -> nll[B]                                (primal only)
//   LucePlNllGrad  -> nll[B], dnll/ds[B, n], dnll/dw[B, k]   (for the VJP)
// The gradient is the unit-cotangent gradient: the forward already holds every
// e_i in L1, so computing the gradient there costs one multiply per item,
// where a separate backward would redo n exps. The caller's backward scales
// both by the cotangent.
//
// Fast path, per row: (1) copy + max; (2) gather the picks' scores and e's,
// mark them -inf in the copy (AVX-512 gather/scatter); (3) e_i in place and
// E_U; (4) one backward loop over the stages: suffix sums, log, t_j, NLL,
// w_j / S_j; (5) e_i P_last for every item; (6) one forward loop: prefix sums
// and the picks' gradient, scattered. Sums of positive terms only: in-vector
// scans in float, the carry across vectors in double. Vectorized Cephes
// exp/log (GCC vector extensions: 16 floats a vector with AVX-512, 8 with AVX,
// 4 otherwise). Exact as long as every picked score is within kSafeRange nats
// of M (then S_j >= e^-60 and nothing that matters underflows). Any other row
// takes the exact path: running-max log-sum-exp scans in double (and the
// gradient's exponents s_i + C_j added in double), any finite scores.
//
// Inputs: scores f32[..., n], ranking s32[..., k] (-1 or any id outside [0, n)
// is a pad), where pred[..., n] or an empty array (all available), weights
// f32[..., k] or an empty array (all ones). Leading axes are flattened into
// rows (so vmap's broadcast_all batching needs nothing special).
// Rows are split over XLA's intra-op thread pool when there is enough work
// (LUCE_PL_NLL_THREADS=1 keeps them on the calling thread).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "luce_rows.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

#define LUCE_INLINE inline __attribute__((always_inline))

// One vector: 16 floats with AVX-512, 8 with AVX, else 4 (SSE, NEON): GCC
// lowers vectors wider than the machine's badly.
#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif
typedef float vf __attribute__((vector_size(4 * kLanes)));
typedef int32_t vi __attribute__((vector_size(4 * kLanes)));
typedef uint32_t vu __attribute__((vector_size(4 * kLanes)));
typedef double vd __attribute__((vector_size(64)));  // 8 doubles
typedef double vdl __attribute__((vector_size(8 * kLanes)));  // kLanes doubles

constexpr float kSafeRange = 60.0f;
constexpr float kInf = std::numeric_limits<float>::infinity();

LUCE_INLINE vf Load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
LUCE_INLINE void Store(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }
LUCE_INLINE vf Splat(float x) { return vf{} + x; }

// exp(x) for x <= 0 (always score - max here); 0 below -87.3 and for -inf.
// Cephes expf: Cody-Waite reduction, degree-6 polynomial, ~1 ulp.
LUCE_INLINE vf ExpNeg(vf x) {
  vi tiny = x < Splat(-87.3f);
  vf xc = tiny ? Splat(-87.3f) : x;
  vf fn = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  vf r = xc - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  vf z = r * r;
  vf p = Splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  vi n = __builtin_convertvector(fn, vi);
  vf scale = (vf)((n + 127) << 23);
  vf y = p * scale;
  return tiny ? Splat(0.0f) : y;
}

// log(x) for positive normal x. Cephes logf, ~1 ulp.
LUCE_INLINE vf LogPos(vf x) {
  vi bits = (vi)x;
  vi e = ((bits >> 23) & 0xff) - 127;
  vf m = (vf)((bits & 0x7fffff) | 0x3f800000);  // [1, 2)
  vi big = m > Splat(1.41421356237f);
  m = big ? m * 0.5f : m;
  e = e - big;  // big is -1 where true
  vf f = m - 1.0f;
  vf z = f * f;
  vf y = Splat(7.0376836292e-2f);
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  vf fe = __builtin_convertvector(e, vf);
  y = y + fe * -2.12194440e-4f;
  y = y - z * 0.5f;
  vf res = f + y;
  return res + fe * 0.693359375f;
}

#if defined(__AVX512F__)
LUCE_INLINE float HMax(vf v) { return _mm512_reduce_max_ps((__m512)v); }
LUCE_INLINE float HMin(vf v) { return _mm512_reduce_min_ps((__m512)v); }
LUCE_INLINE double HSum(vf v) {  // in double
  typedef double vd4 __attribute__((vector_size(32)));
  typedef double vd2 __attribute__((vector_size(16)));
  vd s = __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), vd) +
         __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), vd);
  vd4 q = __builtin_shufflevector(s, s, 0, 1, 2, 3) + __builtin_shufflevector(s, s, 4, 5, 6, 7);
  vd2 h = __builtin_shufflevector(q, q, 0, 1) + __builtin_shufflevector(q, q, 2, 3);
  return h[0] + h[1];
}
LUCE_INLINE bool Any(vi v) { return _mm512_test_epi32_mask((__m512i)v, (__m512i)v) != 0; }
#else
LUCE_INLINE float HMax(vf v) {
  float m = v[0];
  for (int i = 1; i < kLanes; ++i) m = std::max(m, v[i]);
  return m;
}
LUCE_INLINE float HMin(vf v) {
  float m = v[0];
  for (int i = 1; i < kLanes; ++i) m = std::min(m, v[i]);
  return m;
}
LUCE_INLINE double HSum(vf v) {
  double a = 0.0;
  for (int i = 0; i < kLanes; ++i) a += v[i];
  return a;
}
LUCE_INLINE bool Any(vi v) {
  bool a = false;
  for (int i = 0; i < kLanes; ++i) a |= v[i] != 0;
  return a;
}
#endif

// In-register scans of one vector.
#if defined(__AVX512F__)
LUCE_INLINE vf SuffixScan(vf v) {
  const vf z{};
  v += __builtin_shuffle(v, z, vi{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16});
  v += __builtin_shuffle(v, z, vi{2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 16});
  v += __builtin_shuffle(v, z, vi{4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 16, 16, 16});
  v += __builtin_shuffle(v, z, vi{8, 9, 10, 11, 12, 13, 14, 15, 16, 16, 16, 16, 16, 16, 16, 16});
  return v;
}
LUCE_INLINE vf PrefixScan(vf v) {
  const vf z{};
  v += __builtin_shuffle(v, z, vi{16, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14});
  v += __builtin_shuffle(v, z, vi{16, 16, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13});
  v += __builtin_shuffle(v, z, vi{16, 16, 16, 16, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  v += __builtin_shuffle(v, z, vi{16, 16, 16, 16, 16, 16, 16, 16, 0, 1, 2, 3, 4, 5, 6, 7});
  return v;
}
#elif defined(__AVX__)
LUCE_INLINE vf SuffixScan(vf v) {
  const vf z{};
  v += __builtin_shuffle(v, z, vi{1, 2, 3, 4, 5, 6, 7, 8});
  v += __builtin_shuffle(v, z, vi{2, 3, 4, 5, 6, 7, 8, 8});
  v += __builtin_shuffle(v, z, vi{4, 5, 6, 7, 8, 8, 8, 8});
  return v;
}
LUCE_INLINE vf PrefixScan(vf v) {
  const vf z{};
  v += __builtin_shuffle(v, z, vi{8, 0, 1, 2, 3, 4, 5, 6});
  v += __builtin_shuffle(v, z, vi{8, 8, 0, 1, 2, 3, 4, 5});
  v += __builtin_shuffle(v, z, vi{8, 8, 8, 8, 0, 1, 2, 3});
  return v;
}
#else
LUCE_INLINE vf SuffixScan(vf v) {
  const vf z{};
  v += __builtin_shuffle(v, z, vi{1, 2, 3, 4});
  v += __builtin_shuffle(v, z, vi{2, 3, 4, 4});
  return v;
}
LUCE_INLINE vf PrefixScan(vf v) {
  const vf z{};
  v += __builtin_shuffle(v, z, vi{4, 0, 1, 2});
  v += __builtin_shuffle(v, z, vi{4, 4, 0, 1});
  return v;
}
#endif
// carry + v in double, rounded once to float: the within-block sums are
// float (kLanes terms), the running carry across blocks is double.
LUCE_INLINE vf AddCarry(vf v, double carry) {
  return __builtin_convertvector(__builtin_convertvector(v, vdl) + carry, vf);
}
LUCE_INLINE vi LoadI(const int32_t* p) {
  vi v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// base[idx] where mask (all ones) is set, else fallback; and its inverse.
#if defined(__AVX512F__)
LUCE_INLINE vf Gather(const float* base, vi idx, vi mask, vf fallback) {
  __mmask16 m = _mm512_test_epi32_mask((__m512i)mask, (__m512i)mask);
  return (vf)_mm512_mask_i32gather_ps((__m512)fallback, m, (__m512i)idx, base, 4);
}
LUCE_INLINE void Scatter(float* base, vi idx, vi mask, vf v) {
  __mmask16 m = _mm512_test_epi32_mask((__m512i)mask, (__m512i)mask);
  _mm512_mask_i32scatter_ps(base, m, (__m512i)idx, (__m512)v, 4);
}
#else
LUCE_INLINE vf Gather(const float* base, vi idx, vi mask, vf fallback) {
  vf out = fallback;
  for (int l = 0; l < kLanes; ++l)
    if (mask[l]) out[l] = base[idx[l]];
  return out;
}
LUCE_INLINE void Scatter(float* base, vi idx, vi mask, vf v) {
  for (int l = 0; l < kLanes; ++l)
    if (mask[l]) base[idx[l]] = v[l];
}
#endif

LUCE_INLINE int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

struct Scratch {
  std::vector<float> x;     // [np] available scores, picks removed; then e_i
  std::vector<int32_t> r;   // [kp] ranking, -1 past k
  std::vector<float> xp;    // [kp] picked scores (-inf for pads); then w_j / S_j
  std::vector<float> ep;    // [kp] e of the picks
  std::vector<float> t;     // [kp] stage terms t_j
  std::vector<float> wv;    // [kp] weights (0 for pads)
  std::vector<double> sd;   // [kp] exact path: D_j, then C_j
  void Fit(int64_t np, int64_t kp) {
    if ((int64_t)x.size() < np) x.resize(np);
    if ((int64_t)xp.size() < kp) {
      for (auto* v : {&xp, &ep, &t, &wv}) v->resize(kp);
      r.resize(kp);
      sd.resize(kp);
    }
  }
};

struct Row {
  const float* s;
  const int32_t* r;
  const bool* where;  // null: all available
  const float* w;     // null: all ones
  float* nll;
  float* gs;  // null: no gradient
  float* gw;
};

void Zero(const Row& row, int64_t n, int64_t k, float nll) {
  *row.nll = nll;
  if (row.gs) {
    std::fill(row.gs, row.gs + n, 0.0f);
    std::fill(row.gw, row.gw + k, 0.0f);
  }
}

// Adds e^v to the running log-sum-exp m + log(a) (a == 0: empty so far),
// rescaling a when v raises the max m.
inline void LogAccumulate(double v, double& m, double& a) {
  if (a == 0.0) {
    m = v;
    a = 1.0;
  } else if (v > m) {
    a = a * std::exp(m - v) + 1.0;
    m = v;
  } else {
    a += std::exp(v - m);
  }
}

// Exact path: running-max log-sum-exp scans in double. x holds the available
// scores of the items never picked (-inf elsewhere), xp the picked scores.
void RowExact(const Row& row, int64_t n, int64_t k, Scratch& sc) {
  const float* x = sc.x.data();
  const float* xp = sc.xp.data();
  const float* wv = sc.wv.data();
  double* d = sc.sd.data();  // D_j
  const double ninf = -std::numeric_limits<double>::infinity();
  double mu = ninf;
  for (int64_t i = 0; i < n; ++i) mu = std::max(mu, (double)x[i]);
  double m = mu, a = 0.0;
  if (mu > ninf) {
    for (int64_t i = 0; i < n; ++i) a += std::exp((double)x[i] - mu);
  }
  double nll = 0.0;
  for (int64_t j = k - 1; j >= 0; --j) {
    double v = xp[j];
    if (v == ninf) {  // pad (impossible rows never get here)
      d[j] = 0.0;
      continue;
    }
    LogAccumulate(v, m, a);
    d[j] = m + std::log(a);
    nll += wv[j] * (d[j] - v);
  }
  *row.nll = (float)nll;
  if (!row.gs) return;
  // C_j = log sum_{l <= j} w_l exp(-D_l), by a running max.
  double cm = ninf, ca = 0.0;
  for (int64_t j = 0; j < k; ++j) {
    double v = xp[j];
    if (v == ninf) {
      row.gw[j] = 0.0f;
      continue;
    }
    row.gw[j] = (float)(d[j] - v);
    if (wv[j] > 0.0f) {
      LogAccumulate(std::log((double)wv[j]) - d[j], cm, ca);
    }
    // Store C_j over D_j (no longer needed once gw is written).
    d[j] = ca > 0.0 ? cm + std::log(ca) : ninf;
  }
  double clast = ca > 0.0 ? cm + std::log(ca) : ninf;
  for (int64_t i = 0; i < n; ++i) {
    double v = x[i];
    row.gs[i] = (v == ninf || clast == ninf) ? 0.0f : (float)std::exp(v + clast);
  }
  for (int64_t j = 0; j < k; ++j) {
    double v = xp[j];
    if (v == ninf) continue;
    double g = d[j] == ninf ? 0.0 : std::exp(v + d[j]);
    row.gs[row.r[j]] = (float)(g - wv[j]);
  }
}

void DoRow(const Row& row, int64_t n, int64_t k, Scratch& sc) {
  const int64_t np = RoundUp(n, kLanes), kp = RoundUp(k, kLanes);
  sc.Fit(np, kp);
  float* x = sc.x.data();
  int32_t* rr = sc.r.data();
  float* xp = sc.xp.data();
  float* ep = sc.ep.data();
  float* tt = sc.t.data();
  float* wv = sc.wv.data();

  // 1. Available scores and their max; padded copies of ranking and weights.
  const int64_t nv = n / kLanes * kLanes;
  vf vmax = Splat(-kInf);
  if (row.where) {
    for (int64_t i = 0; i < n; ++i) x[i] = row.where[i] ? row.s[i] : -kInf;
    for (int64_t i = 0; i < nv; i += kLanes) {
      vf v = Load(x + i);
      vmax = v > vmax ? v : vmax;
    }
  } else {
    for (int64_t i = 0; i < nv; i += kLanes) {
      vf v = Load(row.s + i);
      Store(x + i, v);
      vmax = v > vmax ? v : vmax;
    }
    for (int64_t i = nv; i < n; ++i) x[i] = row.s[i];
  }
  for (int64_t i = n; i < np; ++i) x[i] = -kInf;
  if (nv < n) {
    vf v = Load(x + nv);
    vmax = v > vmax ? v : vmax;
  }
  const float top = HMax(vmax);
  std::memcpy(rr, row.r, k * sizeof(int32_t));
  for (int64_t j = k; j < kp; ++j) rr[j] = -1;
  if (row.w) {
    std::memcpy(wv, row.w, k * sizeof(float));
  } else {
    std::fill(wv, wv + k, 1.0f);
  }
  for (int64_t j = k; j < kp; ++j) wv[j] = 0.0f;

  // 2. Picks: gather their scores and e_{pi_j}, then remove them from x (x
  // keeps the never-picked set).
  const vf vtop = Splat(top);
  vf lowv = Splat(kInf);
  vi anyv = vi{};
  const vu un = vu{} + (uint32_t)n;
  for (int64_t j = 0; j < kp; j += kLanes) {
    vi id = LoadI(rr + j);
    vi valid = (vi)((vu)id < un);  // pads are negative
    vf v = Gather(x, id, valid, Splat(-kInf));
    Store(xp + j, v);
    Store(ep + j, ExpNeg(v - vtop));
    Store(wv + j, valid ? Load(wv + j) : Splat(0.0f));
    Scatter(x, id, valid, Splat(-kInf));
    lowv = valid ? (v < lowv ? v : lowv) : lowv;
    anyv |= valid;
  }
  const bool any = Any(anyv);
  const float low = HMin(lowv);
  if (low == -kInf) return Zero(row, n, k, kInf);  // picks an unavailable item
  if (!any) return Zero(row, n, k, 0.0f);
  if (low - top < -kSafeRange) return RowExact(row, n, k, sc);

  // 3. e_i = exp(x_i - M) in place; E_U = sum over the never-picked items.
  vf acc0 = Splat(0.0f), acc1 = Splat(0.0f);
  int64_t i = 0;
  for (; i + 2 * kLanes <= np; i += 2 * kLanes) {
    vf e0 = ExpNeg(Load(x + i) - vtop);
    vf e1 = ExpNeg(Load(x + i + kLanes) - vtop);
    Store(x + i, e0);
    Store(x + i + kLanes, e1);
    acc0 += e0;
    acc1 += e1;
  }
  for (; i < np; i += kLanes) {
    vf e0 = ExpNeg(Load(x + i) - vtop);
    Store(x + i, e0);
    acc0 += e0;
  }
  const double eu = HSum(acc0) + HSum(acc1);

  // 4. Backwards over the stages: suffix sums S_j = E_U + sum_{l >= j} e_{pi_l},
  // stage terms t_j = log S_j - (x_{pi_j} - M) (straight into the gradient of
  // w when there is one, which is t_j), the NLL, and q_j = w_j / S_j.
  float* tout = row.gw ? row.gw : tt;
  const int64_t kv = k / kLanes * kLanes;
  double carry = eu;
  vf nacc = Splat(0.0f), qacc = Splat(0.0f);
  for (int64_t j = kp - kLanes; j >= 0; j -= kLanes) {
    vf sc16 = SuffixScan(Load(ep + j));
    vf sv = AddCarry(sc16, carry);
    carry += sc16[0];
    vf xv = Load(xp + j);
    vi pad = xv == Splat(-kInf);
    sv = pad ? Splat(1.0f) : sv;
    vf t = LogPos(sv) - (xv - vtop);
    t = pad ? Splat(0.0f) : t;
    if (j < kv) {
      Store(tout + j, t);
    } else {  // the last, partial block: never write past row k
      Store(tt + j, t);
      for (int64_t l = j; l < k; ++l) tout[l] = tt[l];
    }
    vf wj = Load(wv + j);
    nacc += wj * t;
    vf q = wj / sv;  // pads have w = 0
    Store(xp + j, q);  // x_{pi_j} is not needed any more
    qacc += q;
  }
  *row.nll = (float)HSum(nacc);
  if (!row.gs) return;

  // 5. Gradient of the never picked: e_i P_last (e_i is 0 at the picks, which
  // step 6 overwrites).
  const float plast = (float)HSum(qacc);
  const vf vp = Splat(plast);
  float* gs = row.gs;
  for (i = 0; i < nv; i += kLanes) Store(gs + i, Load(x + i) * vp);
  for (; i < n; ++i) gs[i] = x[i] * plast;

  // 6. Forwards: prefix sums P_j of q_j, and the picks' gradient e_j P_j - w_j.
  double pc = 0.0;
  for (int64_t j = 0; j < kp; j += kLanes) {
    vf v = PrefixScan(Load(xp + j));
    vf pj = AddCarry(v, pc);
    pc += v[kLanes - 1];
    vi id = LoadI(rr + j);
    vi valid = (vi)((vu)id < un);
    Scatter(gs, id, valid, Load(ep + j) * pj - Load(wv + j));
  }
}

// Rows go over the intra-op pool by luce::ParallelRows (../../cpu/luce_rows.h);
// LUCE_PL_NLL_THREADS caps the threads (1: the calling thread only).
int64_t ThreadCap() {
  static const int64_t cap = luce::ThreadCap("LUCE_PL_NLL_THREADS");
  return cap;
}

template <bool kGrad>
ffi::Error Run(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scores, ffi::Buffer<ffi::S32> ranking,
               ffi::AnyBuffer where, ffi::Buffer<ffi::F32> weights, float* nll, float* gs,
               float* gw, int64_t nll_count, int64_t gs_count, int64_t gw_count) {
  auto sd = scores.dimensions();
  auto rd = ranking.dimensions();
  if (sd.size() < 1 || rd.size() < 1) return ffi::Error::InvalidArgument("pl_nll: rank-0 input");
  const int64_t n = sd.back(), k = rd.back();
  const int64_t cells = scores.element_count();
  const int64_t rows = n > 0 ? cells / n : 0;
  if ((int64_t)ranking.element_count() != rows * k || nll_count != rows)
    return ffi::Error::InvalidArgument("pl_nll: scores, ranking and output rows differ");
  const bool has_where = where.element_count() > 0;
  const bool has_w = weights.element_count() > 0;
  if (has_where && ((int64_t)where.element_count() != cells ||
                    where.element_type() != ffi::DataType::PRED))
    return ffi::Error::InvalidArgument("pl_nll: where must be pred with the shape of scores");
  if (has_w && (int64_t)weights.element_count() != rows * k)
    return ffi::Error::InvalidArgument("pl_nll: weights must have the shape of ranking");
  if (kGrad && (gs_count != cells || gw_count != rows * k))
    return ffi::Error::InvalidArgument("pl_nll: gradient outputs have the wrong shape");
  if (rows == 0) return ffi::Error::Success();
  const float* s = scores.typed_data();
  const int32_t* r = ranking.typed_data();
  const bool* wh = has_where ? reinterpret_cast<const bool*>(where.untyped_data()) : nullptr;
  const float* w = has_w ? weights.typed_data() : nullptr;
  if (n == 0) {  // k <= n upstream; still, write every output
    std::fill(nll, nll + rows, 0.0f);
    if (kGrad) std::fill(gw, gw + rows * k, 0.0f);
    return ffi::Error::Success();
  }
  luce::ParallelRows(pool, ThreadCap(), rows, n + 2 * k, [&](int64_t lo, int64_t hi) {
    thread_local Scratch sc;
    for (int64_t b = lo; b < hi; ++b) {
      Row row{s + b * n, r + b * k, wh ? wh + b * n : nullptr, w ? w + b * k : nullptr,
              nll + b, kGrad ? gs + b * n : nullptr, kGrad ? gw + b * k : nullptr};
      DoRow(row, n, k, sc);
    }
  });
  return ffi::Error::Success();
}

ffi::Error PlNll(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scores, ffi::Buffer<ffi::S32> ranking,
                 ffi::AnyBuffer where, ffi::Buffer<ffi::F32> weights,
                 ffi::ResultBuffer<ffi::F32> nll) {
  return Run<false>(pool, scores, ranking, where, weights, nll->typed_data(), nullptr, nullptr,
                    nll->element_count(), 0, 0);
}

ffi::Error PlNllGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scores,
                     ffi::Buffer<ffi::S32> ranking, ffi::AnyBuffer where,
                     ffi::Buffer<ffi::F32> weights, ffi::ResultBuffer<ffi::F32> nll,
                     ffi::ResultBuffer<ffi::F32> gs, ffi::ResultBuffer<ffi::F32> gw) {
  return Run<true>(pool, scores, ranking, where, weights, nll->typed_data(), gs->typed_data(),
                   gw->typed_data(), nll->element_count(), gs->element_count(),
                   gw->element_count());
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LucePlNll, PlNll,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(LucePlNllGrad, PlNllGrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
