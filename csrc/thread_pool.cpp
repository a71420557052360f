#include "thread_pool.h"

#include <pthread.h>
#include <sched.h>

#include <atomic>

namespace ipu {

namespace {
std::atomic<ThreadPool*> g_pool{nullptr};
std::once_flag g_pool_once;
}  // namespace

ThreadPool& ThreadPool::instance() {
  // Leaked on purpose: joining threads from a static destructor at interpreter exit can deadlock.
  std::call_once(g_pool_once, [] {
    g_pool.store(new ThreadPool(), std::memory_order_release);
    pthread_atfork(nullptr, nullptr, &ThreadPool::after_fork_in_child);
  });
  return *g_pool.load(std::memory_order_acquire);
}

void ThreadPool::after_fork_in_child() {
  // fork() copies only the calling thread: the workers are gone from the child while the pool still counts them
  // (and its mutex may have been held by one of them), so a parallel_for would queue work nobody takes and wait
  // forever. The child starts a fresh pool; the copied one is abandoned, never destroyed (its std::thread objects
  // name threads that do not exist here, and destroying a joinable std::thread terminates the process).
  g_pool.store(new ThreadPool(), std::memory_order_release);
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

int ThreadPool::available_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? int(hw) : 1;
}

void ThreadPool::ensure_workers(int count) {
  std::lock_guard<std::mutex> lock(mu_);
  while (int(workers_.size()) < count) workers_.emplace_back([this] { worker_loop(); });
}

void ThreadPool::worker_loop() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_ && queue_.empty()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

void ThreadPool::parallel_for(size_t n, int num_threads, const std::function<void(size_t, int)>& fn) {
  if (n == 0) return;
  int helpers = std::max(0, std::min<int>(num_threads, int(n)) - 1);
  std::atomic<size_t> next{0};
  auto drain = [&](int slot) {
    for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i, slot);
  };
  if (helpers == 0) {
    drain(0);
    return;
  }
  ensure_workers(helpers);
  std::mutex done_mu;
  std::condition_variable done_cv;
  int pending = helpers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int h = 0; h < helpers; ++h) {
      queue_.emplace_back([&, slot = h + 1] {
        drain(slot);
        std::lock_guard<std::mutex> g(done_mu);
        if (--pending == 0) done_cv.notify_one();
      });
    }
  }
  cv_.notify_all();
  drain(0);
  std::unique_lock<std::mutex> lock(done_mu);
  done_cv.wait(lock, [&] { return pending == 0; });
}

}  // namespace ipu
