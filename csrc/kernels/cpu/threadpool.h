// A persistent thread pool: workers spin briefly between jobs, then park on a condition variable.
// parallel_for hands out items one by one and the calling thread works too. A job ends when all
// of its items are done, not when every worker has shown up: on a busy machine a worker that is
// not scheduled in time simply misses the job, and the others (the caller at least) do its share.
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
  void run_job(int64_t n, Call call, void *ctx);
  bool claim_and_run(uint64_t job, int tid);
  void worker(int tid);

  int n_threads_;
  std::vector<std::thread> threads_;
  // The job word: generation (32 bits) | item count (16) | next item (16). Claiming an item is a
  // CAS on the whole word, so a worker can never take an item of a job other than the one it saw.
  std::atomic<uint64_t> job_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<int> sleeping_{0};
  std::atomic<bool> stop_{false};
  Call call_ = nullptr;
  void *ctx_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace edgenano::kern
