// Symmetric Gram C = alpha * Z^T Z + beta * C, upper triangle only, split over threads by row
// slabs or column panels (sym_gram_cpu.cpp says which when).
#pragma once

#include <cstdint>

namespace ncfast::cpu {

// Z: rows x dim, row-major, leading dimension ld. C: dim x dim row-major; only entries
// with column >= row are read and written.
void sym_gram_upper(const float* z, int64_t rows, int64_t dim, int64_t ld, float alpha, float beta,
                    float* c);
void sym_gram_upper(const double* z, int64_t rows, int64_t dim, int64_t ld, double alpha,
                    double beta, double* c);

// Copies the upper triangle of the row-major dim x dim C into its lower triangle.
void mirror_upper(float* c, int64_t dim);
void mirror_upper(double* c, int64_t dim);

}  // namespace ncfast::cpu
