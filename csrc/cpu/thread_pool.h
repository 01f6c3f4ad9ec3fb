// The CPU kernels' threads: one process-wide pool, sized by set_num_threads (any thread may
// call it; every later parallel_for sees the new count).
//
// parallel_for hands out tasks one at a time to the caller and the pool's workers. Between
// jobs, and while the caller waits for the last tasks, a thread spins for a bounded time
// (short enough that on a busy machine it gives its core back soon, long enough to catch the
// next job of a pass on an idle one) and then sleeps. A thread that loses its core to
// another process therefore holds back at most the task it is running, and threads that
// wait do not keep a busy machine's cores from the thread that works.
//
// Results never depend on the thread count when each task writes only its own outputs: the
// kernels split work into tasks that are a function of the shapes alone.
#pragma once

#include <cstdint>
#include <type_traits>

namespace ncfast::cpu {

// A borrowed callable `void(int64_t task, int worker)`; `worker` is in [0, num_threads())
// and no two tasks running at once share it, so it can index per-thread scratch.
class TaskRef {
 public:
  template <typename Fn, typename = std::enable_if_t<!std::is_same_v<std::decay_t<Fn>, TaskRef>>>
  explicit TaskRef(Fn& fn)
      : object_(&fn), call_([](void* f, int64_t task, int worker) {
          (*static_cast<Fn*>(f))(task, worker);
        }) {}
  void operator()(int64_t task, int worker) const { call_(object_, task, worker); }

 private:
  void* object_;
  void (*call_)(void*, int64_t, int);
};

// Threads used by parallel_for, the caller included (default: OMP_NUM_THREADS when set,
// else the CPUs this process may run on).
int num_threads();
void set_num_threads(int n);

// Runs fn(task, worker) for every task in [0, tasks) and returns when all are done. Jobs of
// concurrent callers run one after the other; a parallel_for inside a task runs inline.
void run_tasks(int64_t tasks, TaskRef fn);

template <typename Fn>
void parallel_for(int64_t tasks, Fn&& fn) {
  run_tasks(tasks, TaskRef(fn));
}

}  // namespace ncfast::cpu
