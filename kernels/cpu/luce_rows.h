// Shared by luce's native CPU kernels (kernels/*/cpu/*.cc): splitting a
// batch's rows over XLA's intra-op thread pool.
//
// kernels/_native.py compiles every kernel with -I pointing here and puts
// this file's hash in each kernel's cache key, so a change here rebuilds
// them all.
#ifndef LUCE_KERNELS_CPU_LUCE_ROWS_H_
#define LUCE_KERNELS_CPU_LUCE_ROWS_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace luce {

// The thread cap an environment variable sets (unset: no cap; 1: the calling
// thread only). Read once per variable by the caller's static.
inline int64_t ThreadCap(const char* env_name) {
  const char* env = std::getenv(env_name);
  return env ? std::max<int64_t>(1, std::atoll(env)) : std::numeric_limits<int64_t>::max();
}

// Runs fn(lo, hi) over [0, rows) in blocks, on the calling thread and the
// intra-op pool. A call with less than kMinCost elements of work
// (rows × cost_per_row) stays on the calling thread. A few blocks per task
// balance rows of uneven cost; blocks are claimed from an atomic counter, so
// a pool task that starts late finds nothing left and never touches fn, and
// the caller returns only when every block is done.
template <typename F>
void ParallelRows(xla::ffi::ThreadPool& pool, int64_t cap, int64_t rows, int64_t cost_per_row,
                  const F& fn) {
  constexpr int64_t kMinCost = 1 << 16;
  const int64_t threads = std::min(cap, std::max<int64_t>(1, pool.num_threads()));
  const int64_t total = rows * std::max<int64_t>(cost_per_row, 1);
  const int64_t tasks =
      std::min<int64_t>({threads, rows, std::max<int64_t>(1, total / kMinCost)});
  if (tasks <= 1) {
    fn(0, rows);
    return;
  }
  const int64_t nblocks = std::min<int64_t>(rows, tasks * 4);
  struct Shared {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto shared = std::make_shared<Shared>();
  const F* f = &fn;
  auto work = [shared, f, rows, nblocks]() {
    for (;;) {
      const int64_t b = shared->next.fetch_add(1, std::memory_order_relaxed);
      if (b >= nblocks) return;
      (*f)(rows * b / nblocks, rows * (b + 1) / nblocks);
      shared->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t t = 1; t < tasks; ++t) pool.Schedule(decltype(work)(work));
  work();
  while (shared->done.load(std::memory_order_acquire) < nblocks) std::this_thread::yield();
}

}  // namespace luce

#endif  // LUCE_KERNELS_CPU_LUCE_ROWS_H_
