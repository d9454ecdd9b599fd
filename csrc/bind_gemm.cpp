// _C.gemm.
#include "bind.h"

namespace fastnn {
namespace bind {

void bind_gemm(py::module_& m) {
    m.def("gemm", [](bool ta, bool tb, py::array A, py::array B, py::array C, double alpha, double beta) {
        // 2-D C-contiguous operands: C (M,N) = alpha*op(A)@op(B) + beta*C
        if (A.ndim() != 2 || B.ndim() != 2 || C.ndim() != 2) throw py::value_error("gemm operands must be 2-D");
        i64 M = C.shape(0), N = C.shape(1), K = ta ? A.shape(0) : A.shape(1);
        if ((ta ? A.shape(1) : A.shape(0)) != M || (tb ? B.shape(1) : B.shape(0)) != K || (tb ? B.shape(0) : B.shape(1)) != N)
            throw py::value_error("gemm: shapes do not match");
        dispatch(C, [&](auto z) {
            using T = decltype(z);
            auto a = ptr<T>(A, "A", A.size()); auto b = ptr<T>(B, "B", B.size()); auto c = ptr<T>(C, "C", C.size(), true);
            py::gil_scoped_release nogil;
            gemm<T>(ta, tb, M, N, K, T(alpha), a, A.shape(1), b, B.shape(1), T(beta), c, N);
        });
    });
}

}  // namespace bind
}  // namespace fastnn
