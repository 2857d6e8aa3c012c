// Persistent thread pool (see threadpool.h).
#include "kernels/threadpool.h"

#include <chrono>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define EDGENANO_PAUSE() _mm_pause()
#else
#define EDGENANO_PAUSE() std::this_thread::yield()
#endif

namespace edgenano::kern {

namespace {
thread_local bool t_in_pool_job = false;  // nested parallel_for runs inline
constexpr auto kSpin = std::chrono::microseconds(2000);
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
  for (int t = 1; t < n_threads_; ++t) threads_.emplace_back([this, t] { worker(t); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto &th : threads_) th.join();
}

void ThreadPool::work(int tid) {
  t_in_pool_job = true;
  for (int64_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n_;) call_(ctx_, i, tid);
  t_in_pool_job = false;
}

void ThreadPool::run(int64_t n, Call call, void *ctx) {
  if (n <= 0) return;
  if (n == 1 || n_threads_ == 1 || t_in_pool_job) {
    for (int64_t i = 0; i < n; ++i) call(ctx, i, 0);
    return;
  }
  call_ = call;
  ctx_ = ctx;
  n_ = n;
  next_.store(0, std::memory_order_relaxed);
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  work(0);
  for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < 100000) EDGENANO_PAUSE(); else std::this_thread::yield();
  }
}

void ThreadPool::worker(int tid) {
  uint64_t seen = 0;
  for (;;) {
    auto start = std::chrono::steady_clock::now();
    for (int spins = 0; generation_.load(std::memory_order_acquire) == seen; ++spins) {
      EDGENANO_PAUSE();
      if ((spins & 255) == 255 && std::chrono::steady_clock::now() - start > kSpin) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        break;
      }
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    work(tid);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace edgenano::kern
