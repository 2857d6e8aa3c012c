// Persistent thread pool (see threadpool.h).
#include "kernels/cpu/threadpool.h"

#include <chrono>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define EDGENANO_PAUSE() _mm_pause()
#else
#define EDGENANO_PAUSE() std::this_thread::yield()
#endif

namespace edgenano::kern {

namespace {
thread_local bool t_in_job = false;  // a nested parallel_for runs inline
constexpr auto kSpin = std::chrono::microseconds(2000);
constexpr int64_t kMaxItems = 0xffff;

uint64_t gen_of(uint64_t w) { return w >> 32; }
uint64_t count_of(uint64_t w) { return (w >> 16) & 0xffff; }
uint64_t next_of(uint64_t w) { return w & 0xffff; }
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
  for (int t = 1; t < n_threads_; ++t) threads_.emplace_back([this, t] { worker(t); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  job_.fetch_add(uint64_t(1) << 32);  // a new generation wakes every worker
  {
    std::lock_guard<std::mutex> lock(mu_);
  }
  cv_.notify_all();
  for (auto &th : threads_) th.join();
}

// Claims one item of `job` (the word the caller saw) and runs it; false when none is left.
bool ThreadPool::claim_and_run(uint64_t job, int tid) {
  uint64_t w = job_.load(std::memory_order_acquire);
  for (;;) {
    if (gen_of(w) != gen_of(job) || next_of(w) >= count_of(w)) return false;
    if (job_.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel)) break;
  }
  // The job cannot end before this item is done, so call_ and ctx_ are still this job's.
  call_(ctx_, int64_t(next_of(w)), tid);
  done_.fetch_add(1, std::memory_order_acq_rel);
  return true;
}

void ThreadPool::run_job(int64_t n, Call call, void *ctx) {
  call_ = call;
  ctx_ = ctx;
  done_.store(0, std::memory_order_relaxed);
  const uint64_t gen = gen_of(job_.load(std::memory_order_relaxed)) + 1;
  const uint64_t job = (gen << 32) | (uint64_t(n) << 16);
  job_.store(job, std::memory_order_seq_cst);
  if (sleeping_.load(std::memory_order_seq_cst) > 0) {
    {
      std::lock_guard<std::mutex> lock(mu_);
    }
    cv_.notify_all();
  }
  t_in_job = true;
  while (claim_and_run(job, 0)) {
  }
  t_in_job = false;
  for (int spins = 0; done_.load(std::memory_order_acquire) != n; ++spins) {
    if (spins < 20000)
      EDGENANO_PAUSE();
    else
      std::this_thread::yield();
  }
}

void ThreadPool::run(int64_t n, Call call, void *ctx) {
  if (n <= 0) return;
  if (n == 1 || n_threads_ == 1 || t_in_job) {
    for (int64_t i = 0; i < n; ++i) call(ctx, i, 0);
    return;
  }
  if (n <= kMaxItems) return run_job(n, call, ctx);
  // More items than a job word holds: hand out contiguous runs of them instead.
  struct Runs {
    int64_t n, per;
    Call call;
    void *ctx;
  };
  Runs runs{n, (n + kMaxItems - 1) / kMaxItems, call, ctx};
  run_job((n + runs.per - 1) / runs.per,
          [](void *c, int64_t i, int tid) {
            auto *r = static_cast<Runs *>(c);
            for (int64_t j = i * r->per; j < r->n && j < (i + 1) * r->per; ++j)
              r->call(r->ctx, j, tid);
          },
          &runs);
}

void ThreadPool::worker(int tid) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t w = job_.load(std::memory_order_acquire);
    const auto start = std::chrono::steady_clock::now();
    for (int spins = 0; gen_of(w) == gen_of(seen); ++spins) {
      EDGENANO_PAUSE();
      if ((spins & 255) == 255 && std::chrono::steady_clock::now() - start > kSpin) {
        std::unique_lock<std::mutex> lock(mu_);
        sleeping_.fetch_add(1, std::memory_order_seq_cst);
        cv_.wait(lock,
                 [&] { return gen_of(job_.load(std::memory_order_seq_cst)) != gen_of(seen); });
        sleeping_.fetch_sub(1, std::memory_order_relaxed);
      }
      w = job_.load(std::memory_order_acquire);
    }
    seen = w;
    if (stop_.load()) return;
    t_in_job = true;
    while (claim_and_run(w, tid)) {
    }
    t_in_job = false;
  }
}

}  // namespace edgenano::kern
