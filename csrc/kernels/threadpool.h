// A persistent thread pool: workers spin briefly between jobs, then park on a condition variable.
// parallel_for hands out items one by one (an atomic counter), the calling thread works too.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace edgenano::kern {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  int size() const { return n_threads_; }

  // Calls fn(i, tid) for every i in [0, n); tid in [0, size()) names the thread (for scratch).
  // Items are independent: which thread runs one never changes its result.
  template <class F>
  void parallel_for(int64_t n, F &&fn) {
    auto call = [](void *ctx, int64_t i, int tid) { (*static_cast<F *>(ctx))(i, tid); };
    run(n, call, &fn);
  }

 private:
  using Call = void (*)(void *, int64_t, int);
  void run(int64_t n, Call call, void *ctx);
  void worker(int tid);
  void work(int tid);

  int n_threads_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> next_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  Call call_ = nullptr;
  void *ctx_ = nullptr;
  int64_t n_ = 0;
};

}  // namespace edgenano::kern
