// One mutex guards the current job (its task counter and the count of unfinished tasks);
// tasks are at least tens of microseconds of work, so claiming them under a lock costs
// nothing measurable and keeps the hand-off easy to reason about. Waiting threads spin on
// atomic mirrors of the job's generation and of its unfinished count for kSpin, then sleep
// on condition variables.
#include "thread_pool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif
#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace ncfast::cpu {
namespace {

// How long a thread with nothing to do polls before it sleeps. On an idle machine the gaps
// between the jobs of one update (serial bookkeeping of a block) are a few microseconds; on
// a busy one, each spin is time taken from another process or from our own running thread.
constexpr std::chrono::microseconds kSpin{50};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

template <typename Done>
void spin_until(Done done) {
  const auto start = std::chrono::steady_clock::now();
  for (unsigned i = 1; !done(); ++i) {
    cpu_relax();
    if ((i & 63u) == 0 && std::chrono::steady_clock::now() - start > kSpin) return;
  }
}

int default_threads() {
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    const long n = std::strtol(env, nullptr, 10);  // "4" or the first entry of "4,2"
    if (n > 0) return static_cast<int>(n);
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

std::atomic<int> g_threads{0};

thread_local bool t_in_task = false;

class Pool {
 public:
  void run(int64_t tasks, TaskRef fn, int threads) {
    std::lock_guard<std::mutex> one_job(run_mutex_);
    std::unique_lock<std::mutex> lock(mutex_);
    start_workers(threads - 1);
    fn_ = &fn;
    tasks_ = tasks;
    next_ = 0;
    unfinished_ = tasks;
    unfinished_mirror_.store(tasks, std::memory_order_relaxed);
    job_workers_ = threads - 1;
    error_ = nullptr;
    ++generation_;
    generation_mirror_.store(generation_, std::memory_order_release);
    const bool wake = sleeping_ > 0;
    lock.unlock();
    if (wake) work_cv_.notify_all();

    lock.lock();
    run_claimed(lock, 0);
    if (unfinished_ > 0) {
      lock.unlock();
      spin_until([&] { return unfinished_mirror_.load(std::memory_order_acquire) == 0; });
      lock.lock();
      done_cv_.wait(lock, [&] { return unfinished_ == 0; });
    }
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // Called with mutex_ held; returns with it held. Runs tasks of the current job until none
  // is left to claim.
  void run_claimed(std::unique_lock<std::mutex>& lock, int worker) {
    while (next_ < tasks_) {
      const int64_t task = next_++;
      const TaskRef fn = *fn_;
      lock.unlock();
      std::exception_ptr error;
      t_in_task = true;
      try {
        fn(task, worker);
      } catch (...) {
        error = std::current_exception();
      }
      t_in_task = false;
      lock.lock();
      if (error && !error_) error_ = error;
      if (--unfinished_ == 0) {
        unfinished_mirror_.store(0, std::memory_order_release);
        done_cv_.notify_all();
      }
    }
  }

  void worker_loop(int id, uint64_t seen) {
    std::unique_lock<std::mutex> lock(mutex_, std::defer_lock);
    for (;;) {
      spin_until([&] { return generation_mirror_.load(std::memory_order_acquire) != seen; });
      lock.lock();
      if (generation_ == seen) {
        ++sleeping_;
        work_cv_.wait(lock, [&] { return generation_ != seen; });
        --sleeping_;
      }
      seen = generation_;
      if (id <= job_workers_) run_claimed(lock, id);
      lock.unlock();
    }
  }

  // Workers are never joined: they sleep between jobs and end with the process.
  void start_workers(int wanted) {
    while (static_cast<int>(workers_.size()) < wanted) {
      const int id = static_cast<int>(workers_.size()) + 1;
      workers_.push_back(new std::thread(&Pool::worker_loop, this, id, generation_));
    }
  }

  std::mutex run_mutex_;  // one job at a time
  std::mutex mutex_;      // the fields below
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  uint64_t generation_ = 0;
  const TaskRef* fn_ = nullptr;
  int64_t tasks_ = 0;
  int64_t next_ = 0;
  int64_t unfinished_ = 0;
  int job_workers_ = 0;  // workers 1..job_workers_ take part in the current job
  int sleeping_ = 0;
  std::exception_ptr error_;
  std::atomic<uint64_t> generation_mirror_{0};
  std::atomic<int64_t> unfinished_mirror_{0};
  std::vector<std::thread*> workers_;
};

std::atomic<Pool*> g_pool{nullptr};

// A forked child has only the thread that forked: it starts a fresh pool (the parent's, whose
// threads and locks are not the child's, is left untouched).
void forget_pool_in_child() { g_pool.store(nullptr); }

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return *p;
  static const bool registered = [] {
#if defined(__unix__) || defined(__APPLE__)
    pthread_atfork(nullptr, nullptr, forget_pool_in_child);
#endif
    return true;
  }();
  (void)registered;
  Pool* fresh = new Pool();
  if (!g_pool.compare_exchange_strong(p, fresh)) {
    delete fresh;
    return *p;
  }
  return *fresh;
}

}  // namespace

int num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n > 0) return n;
  int expected = 0;
  g_threads.compare_exchange_strong(expected, default_threads());
  return g_threads.load(std::memory_order_relaxed);
}

void set_num_threads(int n) { g_threads.store(n > 0 ? n : 1, std::memory_order_relaxed); }

void run_tasks(int64_t tasks, TaskRef fn) {
  if (tasks <= 0) return;
  const int64_t threads = std::min<int64_t>(num_threads(), tasks);
  if (threads <= 1 || t_in_task) {
    for (int64_t t = 0; t < tasks; ++t) fn(t, 0);
    return;
  }
  pool().run(tasks, fn, static_cast<int>(threads));
}

}  // namespace ncfast::cpu
