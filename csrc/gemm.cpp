// GEMM shared by conv2d and LSTM: C = alpha * op(A) @ op(B) + beta * C (row-major).
// gemm_naive is the algorithmic reference; the fast packed/register-blocked variants replace it.
#include "fastnn.h"

namespace fastnn {

template <typename T>
static void gemm_naive(bool ta, bool tb, i64 M, i64 N, i64 K, T alpha, const T* A, i64 lda, const T* B, i64 ldb,
                       T beta, T* C, i64 ldc) {
#pragma omp parallel for schedule(static)
    for (i64 i = 0; i < M; ++i) {
        T* c = C + i * ldc;
        for (i64 j = 0; j < N; ++j) c[j] = beta == T(0) ? T(0) : beta * c[j];
        for (i64 k = 0; k < K; ++k) {
            T a = alpha * (ta ? A[k * lda + i] : A[i * lda + k]);
            if (tb) for (i64 j = 0; j < N; ++j) c[j] += a * B[j * ldb + k];
            else    for (i64 j = 0; j < N; ++j) c[j] += a * B[k * ldb + j];
        }
    }
}

template <typename T>
void gemm(bool ta, bool tb, i64 M, i64 N, i64 K, T alpha, const T* A, i64 lda, const T* B, i64 ldb, T beta, T* C,
          i64 ldc) {
    gemm_naive(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template void gemm<float>(bool, bool, i64, i64, i64, float, const float*, i64, const float*, i64, float, float*, i64);
template void gemm<double>(bool, bool, i64, i64, i64, double, const double*, i64, const double*, i64, double, double*,
                           i64);

}  // namespace fastnn
