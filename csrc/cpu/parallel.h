// Small helpers for splitting work across OpenMP threads.
#pragma once

#include <algorithm>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ncfast::cpu {

inline int thread_count() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

inline int team_size() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

// Thread t of `parts` gets columns [begin, end); edges are multiples of 16 elements (one cache
// line of floats) so two threads never write the same line of a row.
struct ColumnRange {
  int64_t begin;
  int64_t end;
};

inline ColumnRange column_range(int part, int parts, int64_t dim) {
  constexpr int64_t kAlign = 16;
  const int64_t units = (dim + kAlign - 1) / kAlign;
  const int64_t first = units * part / parts;
  const int64_t last = units * (part + 1) / parts;
  return {std::min(dim, first * kAlign), std::min(dim, last * kAlign)};
}

// Column tasks for passes that split the columns: up to 4 per thread (handed out dynamically,
// so a thread that stalls holds back little work), each at least 16 columns wide.
inline int column_tasks(int64_t dim) {
  const int64_t units = (dim + 15) / 16;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(units, int64_t{4} * thread_count())));
}

}  // namespace ncfast::cpu
