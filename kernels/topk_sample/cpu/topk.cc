// Constrained Gumbel-top-k (the topk_sample op): a native CPU kernel for the XLA FFI.
//
// The op (kernels/topk_sample/_common.py, reference.py): slot j = 0..k-1 of a
// row takes the largest perturbed score z among the eligible items (available:
// z > -inf, not NaN, not forbidden; not picked yet; in a group below its max;
// and, when the outstanding deficit D = sum_g max(0, min_g - count_g) is at
// least the k - j slots left, in a group still below its min); ties go to the
// lower id; no eligible item gives -1. Slots j >= u[b] are -1. With quotas a
// row that no k-list of its available items can satisfy (or with a group id
// out of range) is all -1.
//
// Algorithm, per row. Every available item gets a 64-bit key that orders it
// by (z desc, id asc): the float's bits mapped to an order-preserving uint32
// (-0 read as +0, so it ties with +0 as in a float compare) in the high half,
// ~id in the low half. Keys are distinct, so "best" is "largest key".
//
//   Without quotas the slots are the top min(u, available) keys in
//   decreasing order. For up to kSmall slots one pass over the row in id
//   order keeps them in a sorted buffer: a later item has a larger id, so it
//   gets in iff its z is strictly above the smallest kept z, and with
//   AVX-512 16 items at a time are tested against that threshold (most
//   vectors have none above it). Above kSmall slots, nth_element + sort on
//   the row's keys. O(n + c log c) either way.
//
//   With quotas, eligibility only ever shrinks along the slots (counts only
//   grow; once tight, every pick comes from a group in deficit, so D and
//   k - j fall together and the row stays tight), so the picks come in
//   decreasing key order and an item passed over stays out for good. The
//   kernel sorts the row's keys lazily (the best c first, c = 2k + 8; the
//   next 2c when the walk runs past them, and so on) and walks them once,
//   with one counter per group and D kept up to date: O(n + k log k) for the
//   usual row, O(n log n) at worst. The feasibility check (available count
//   per group against the quotas) is one more pass over the row.
//
// Inputs (leading axes beyond [B, n] are vmap's broadcast_all batch axes and
// index independent instances):
//   z f32[..., B, n]; forbidden pred[..., B, n] or empty; u s32[..., B] or
//   empty (k for every row); groups s32[..., n] or empty (no quotas); quotas
//   s32[..., G, 2] (one table) or s32[..., B, G, 2] (one per row) or empty.
// Output: s32[..., B, k].
// Rows are split over XLA's intra-op thread pool when a call has enough work
// (LUCE_TOPK_THREADS=1 keeps them on the calling thread).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
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

constexpr int64_t kSmall = 32;  // up to this many slots: the sorted-buffer scan

inline uint64_t Key(float z, int64_t id) {
  uint32_t u;
  std::memcpy(&u, &z, 4);
  if (u == 0x80000000u) u = 0;  // -0 ties with +0
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (uint64_t(u) << 32) | uint32_t(~uint32_t(id));
}
inline int32_t IdOf(uint64_t key) { return int32_t(~uint32_t(key)); }
inline bool Available(float z, const bool* forbidden, int64_t i) {
  return z > -std::numeric_limits<float>::infinity() && !(forbidden && forbidden[i]);
}

// Inserts x into the descending buffer buf[0, len) holding at most c keys.
inline void Insert(uint64_t* buf, int64_t& len, int64_t c, uint64_t x) {
  int64_t i = len < c ? len++ : c - 1;
  while (i > 0 && buf[i - 1] < x) {
    buf[i] = buf[i - 1];
    --i;
  }
  buf[i] = x;
}

// Reorders keys[lo, m) so that keys[lo, lo + c) are its c largest, descending.
void SelectSorted(uint64_t* keys, int64_t lo, int64_t m, int64_t c, uint64_t* buf) {
  if (c >= m - lo) {
    std::sort(keys + lo, keys + m, std::greater<uint64_t>());
    return;
  }
  if (c <= kSmall) {
    int64_t len = 0;
    for (int64_t i = lo; i < m; ++i)
      if (len < c || keys[i] > buf[c - 1]) Insert(buf, len, c, keys[i]);
    const uint64_t t = buf[c - 1];
    std::partition(keys + lo, keys + m, [t](uint64_t x) { return x >= t; });
    std::copy(buf, buf + c, keys + lo);
    return;
  }
  std::nth_element(keys + lo, keys + lo + c, keys + m, std::greater<uint64_t>());
  std::sort(keys + lo, keys + lo + c, std::greater<uint64_t>());
}

struct Scratch {
  std::vector<uint64_t> keys, buf;
  std::vector<int64_t> count, avail;
  void Fit(int64_t n, int64_t groups) {
    if ((int64_t)keys.size() < n) {
      keys.resize(n);
      buf.resize(n);
    }
    if ((int64_t)count.size() < groups) {
      count.resize(groups);
      avail.resize(groups);
    }
  }
};

// No quotas, up to kSmall slots: one pass in id order keeps the best `take`
// as (z, id) in a buffer sorted by (z desc, id asc). Every item seen later
// has a larger id, so once the buffer is full an item gets in iff its z is
// strictly above the last kept z (the threshold; -inf while not full, which
// no unavailable item passes: -inf > -inf and NaN > x are false). With
// AVX-512, 16 items at a time are compared with the threshold and only the
// ones above it are looked at.
struct Kept {
  float z;
  int32_t id;
};

inline void Offer(Kept* buf, int64_t& len, int64_t take, float& thr, float z, int32_t id) {
  int64_t i = len < take ? len++ : take - 1;
  while (i > 0 && buf[i - 1].z < z) {  // ties stay before: their ids are lower
    buf[i] = buf[i - 1];
    --i;
  }
  buf[i] = Kept{z, id};
  if (len == take) thr = buf[take - 1].z;
}

int64_t TopSmall(const float* z, const bool* forbidden, int64_t n, int64_t take, Kept* buf) {
  int64_t len = 0;
  float thr = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(z + i), _mm512_set1_ps(thr), _CMP_GT_OQ);
    if (forbidden && m) {
      __m128i f = _mm_loadu_si128(reinterpret_cast<const __m128i*>(forbidden + i));
      m &= (__mmask16)_mm_movemask_epi8(_mm_cmpeq_epi8(f, _mm_setzero_si128()));  // allowed
    }
    while (m) {
      const int b = __builtin_ctz(m);
      m &= m - 1;
      const float v = z[i + b];
      if (v > thr) Offer(buf, len, take, thr, v, int32_t(i + b));
    }
  }
#endif
  for (; i < n; ++i) {
    const float v = z[i];
    if (v > thr && !(forbidden && forbidden[i])) Offer(buf, len, take, thr, v, int32_t(i));
  }
  return len;
}

// No quotas: the top `take` available items.
void RowPlain(const float* z, const bool* forbidden, int64_t n, int64_t k, int64_t take,
              int32_t* out, Scratch& sc) {
  int64_t filled = 0;
  if (take > 0 && take <= kSmall) {
    Kept* buf = reinterpret_cast<Kept*>(sc.buf.data());
    filled = TopSmall(z, forbidden, n, take, buf);
    for (int64_t j = 0; j < filled; ++j) out[j] = buf[j].id;
  } else if (take > 0) {
    uint64_t* keys = sc.keys.data();
    int64_t m = 0;
    for (int64_t i = 0; i < n; ++i)
      if (Available(z[i], forbidden, i)) keys[m++] = Key(z[i], i);
    filled = std::min(take, m);
    SelectSorted(keys, 0, m, filled, sc.buf.data());
    for (int64_t j = 0; j < filled; ++j) out[j] = IdOf(keys[j]);
  }
  std::fill(out + filled, out + k, -1);
}

// Quotas: the greedy slot rule, walking the row in decreasing key order.
void RowQuotas(const float* z, const bool* forbidden, const int32_t* groups, const int32_t* q,
               int64_t n_groups, bool ids_ok, int64_t n, int64_t k, int64_t take, int32_t* out,
               Scratch& sc) {
  std::fill(out, out + k, -1);
  if (!ids_ok) return;
  int64_t* count = sc.count.data();
  int64_t* avail = sc.avail.data();
  std::fill(avail, avail + n_groups, 0);
  uint64_t* keys = sc.keys.data();
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!Available(z[i], forbidden, i)) continue;
    keys[m++] = Key(z[i], i);
    ++avail[groups[i]];
  }
  // Feasible: every min_g <= min(max_g, available_g), sum of mins <= k <= sum of those.
  int64_t sum_lo = 0, sum_hi = 0;
  for (int64_t g = 0; g < n_groups; ++g) {
    const int64_t lo = std::max<int32_t>(q[2 * g], 0);
    const int64_t hi = std::min<int64_t>(q[2 * g + 1], avail[g]);
    if (lo > hi) return;
    sum_lo += lo;
    sum_hi += hi;
  }
  if (sum_lo > k || sum_hi < k) return;
  std::fill(count, count + n_groups, 0);
  int64_t deficit = sum_lo;
  int64_t p = 0, sorted = 0;  // next key to look at; keys[0, sorted) are in order
  int64_t chunk = std::min<int64_t>(m, 2 * k + 8);
  for (int64_t j = 0; j < take; ++j) {
    const bool tight = deficit >= k - j;
    int32_t pick = -1;
    while (p < m) {
      if (p == sorted) {
        const int64_t c = std::min(chunk, m - sorted);
        SelectSorted(keys, sorted, m, c, sc.buf.data());
        sorted += c;
        chunk *= 2;
      }
      const int32_t id = IdOf(keys[p++]);
      const int32_t g = groups[id];
      const int64_t lo = std::max<int32_t>(q[2 * g], 0);
      if (count[g] < q[2 * g + 1] && (!tight || count[g] < lo)) {
        if (count[g] < lo) --deficit;
        ++count[g];
        pick = id;
        break;
      }
    }
    if (pick < 0) return;  // nothing eligible now, nor at any later slot
    out[j] = pick;
  }
}

// Rows go over the intra-op pool by luce::ParallelRows (../../cpu/luce_rows.h);
// LUCE_TOPK_THREADS caps the threads (1: the calling thread only).
int64_t ThreadCap() {
  static const int64_t cap = luce::ThreadCap("LUCE_TOPK_THREADS");
  return cap;
}

ffi::Error TopkSample(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> z, ffi::AnyBuffer forbidden,
                      ffi::Buffer<ffi::S32> u, ffi::Buffer<ffi::S32> groups,
                      ffi::Buffer<ffi::S32> quotas, ffi::ResultBuffer<ffi::S32> out) {
  auto zd = z.dimensions();
  auto od = out->dimensions();
  if (zd.size() < 2 || od.size() != zd.size())
    return ffi::Error::InvalidArgument("topk_sample: z must be f32[..., B, n], out s32[..., B, k]");
  const int64_t extra = (int64_t)zd.size() - 2;
  const int64_t n = zd.back(), batch = zd[extra], k = od.back();
  int64_t inst = 1;  // vmap instances
  for (int64_t a = 0; a < extra; ++a) inst *= zd[a];
  const int64_t rows = inst * batch;
  if ((int64_t)out->element_count() != rows * k)
    return ffi::Error::InvalidArgument("topk_sample: output rows differ from z's");
  const bool has_f = forbidden.element_count() > 0, has_u = u.element_count() > 0;
  const bool has_q = quotas.element_count() > 0;
  if (has_f && ((int64_t)forbidden.element_count() != rows * n ||
                forbidden.element_type() != ffi::DataType::PRED))
    return ffi::Error::InvalidArgument("topk_sample: forbidden must be pred with z's shape");
  if (has_u && (int64_t)u.element_count() != rows)
    return ffi::Error::InvalidArgument("topk_sample: u must be s32[..., B]");
  int64_t n_groups = 0, q_inst = 0, q_row = 0;  // quotas strides per instance and per row
  if (has_q) {
    auto qd = quotas.dimensions();
    const int64_t rank = (int64_t)qd.size() - extra;
    if ((rank != 2 && rank != 3) || qd.back() != 2 || qd[qd.size() - 2] < 1 ||
        (int64_t)groups.element_count() != inst * n)
      return ffi::Error::InvalidArgument(
          "topk_sample: quotas must be s32[G, 2] or s32[B, G, 2], groups s32[n]");
    n_groups = qd[qd.size() - 2];
    q_row = rank == 3 ? 2 * n_groups : 0;
    q_inst = rank == 3 ? batch * q_row : 2 * n_groups;
    if ((int64_t)quotas.element_count() != inst * q_inst)
      return ffi::Error::InvalidArgument("topk_sample: quotas rows differ from z's");
  }
  if (rows == 0 || k == 0) return ffi::Error::Success();
  const float* zp = z.typed_data();
  const bool* fp = has_f ? reinterpret_cast<const bool*>(forbidden.untyped_data()) : nullptr;
  const int32_t* up = has_u ? u.typed_data() : nullptr;
  const int32_t* gp = has_q ? groups.typed_data() : nullptr;
  const int32_t* qp = has_q ? quotas.typed_data() : nullptr;
  int32_t* op = out->typed_data();
  std::vector<char> ids_ok(has_q ? inst : 0, 1);
  for (int64_t v = 0; v < (has_q ? inst : 0); ++v)
    for (int64_t i = 0; i < n; ++i)
      if (gp[v * n + i] < 0 || gp[v * n + i] >= n_groups) ids_ok[v] = 0;
  luce::ParallelRows(pool, ThreadCap(), rows, n + 4 * k, [&](int64_t lo, int64_t hi) {
    thread_local Scratch sc;
    sc.Fit(n, n_groups);
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t take = up ? std::clamp<int64_t>(up[r], 0, k) : k;
      const bool* f = fp ? fp + r * n : nullptr;
      if (has_q) {
        const int64_t v = r / batch, b = r % batch;
        RowQuotas(zp + r * n, f, gp + v * n, qp + v * q_inst + b * q_row, n_groups, ids_ok[v],
                  n, k, take, op + r * k, sc);
      } else {
        RowPlain(zp + r * n, f, n, k, take, op + r * k, sc);
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LuceTopkSample, TopkSample,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());
