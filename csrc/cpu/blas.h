// The few BLAS routines the CPU kernels use, from the OpenBLAS build that ships as the
// `scipy-openblas32` wheel (its symbols carry a `scipy_` prefix, so it never clashes with
// the BLAS inside NumPy, SciPy or PyTorch). Overloads let kernels be templated on float/double.
#pragma once

#include <cblas.h>

#include <cstdint>

namespace ncfast::cpu::blas {

// C(upper) = alpha * A^T A + beta * C; A is k x n row-major with leading dim lda.
inline void syrk_upper_at_a(int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                            float beta, float* c, int64_t ldc) {
  scipy_cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, n, k, alpha, a, lda, beta, c, ldc);
}
inline void syrk_upper_at_a(int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
                            double beta, double* c, int64_t ldc) {
  scipy_cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, n, k, alpha, a, lda, beta, c, ldc);
}

// C = alpha * A^T B + beta * C; A is k x m, B is k x n, both row-major.
inline void gemm_at_b(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                      const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta,
                    c, ldc);
}
inline void gemm_at_b(int64_t m, int64_t n, int64_t k, double alpha, const double* a,
                      int64_t lda, const double* b, int64_t ldb, double beta, double* c,
                      int64_t ldc) {
  scipy_cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta,
                    c, ldc);
}

}  // namespace ncfast::cpu::blas
