// One persistent pool of worker threads. A parallel_for hands out indices one at a time (dynamic scheduling:
// images differ in cost), with the calling thread working too. Several callers may use the pool at once. A child
// process made by fork() gets a pool of its own (its parent's workers do not exist there).
#pragma once
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ipu {

class ThreadPool {
 public:
  static ThreadPool& instance();
  ~ThreadPool();

  // Run fn(i, worker_slot) for i in [0, n) on up to num_threads threads (the caller included).
  // worker_slot is in [0, num_threads) and unique among the threads working on this call.
  void parallel_for(size_t n, int num_threads, const std::function<void(size_t, int)>& fn);

  // CPUs this process may run on (sched_getaffinity), at least 1.
  static int available_cpus();

 private:
  ThreadPool() = default;
  static void after_fork_in_child();  // pthread_atfork child handler: replace the pool whose workers fork left behind
  void ensure_workers(int count);
  void worker_loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::thread> workers_;
  bool stopping_ = false;
};

}  // namespace ipu
