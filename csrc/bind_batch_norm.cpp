// _C.batch_norm_fwd and _C.batch_norm_bwd.
#include "bind.h"

namespace fastnn {
namespace bind {

void bind_batch_norm(py::module_& m) {
    // x is viewed as (N, C, L): the wrapper passes N, C, L explicitly.
    m.def("batch_norm_fwd", [](py::array x, py::object gamma, py::object beta, py::array y, py::array mean,
                               py::array invstd, py::object rmean, py::object rvar, i64 N, i64 C, i64 L,
                               bool training, double momentum, double eps) {
        if (N < 0 || C <= 0 || L <= 0) throw py::value_error("invalid batch_norm shape");
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            auto px = ptr<T>(x, "x", N * C * L); auto py_ = ptr<T>(y, "y", N * C * L, true);
            auto pg = opt_ptr<T>(gamma, "gamma", C); auto pb = opt_ptr<T>(beta, "beta", C);
            auto pm = ptr<T>(mean, "mean", C, true); auto pi = ptr<T>(invstd, "invstd", C, true);
            auto prm = opt_ptr<T>(rmean, "running_mean", C, true); auto prv = opt_ptr<T>(rvar, "running_var", C, true);
            NoGil nogil(N * C * L);
            batch_norm_fwd<T>(px, pg, pb, py_, pm, pi, prm, prv, N, C, L, training, momentum, eps);
        });
    });
    m.def("batch_norm_bwd", [](py::array dy, py::array x, py::object gamma, py::array mean, py::array invstd,
                               py::array dx, py::array dgamma, py::array dbeta, i64 N, i64 C, i64 L, bool training) {
        if (N < 0 || C <= 0 || L <= 0) throw py::value_error("invalid batch_norm shape");
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            auto pdy = ptr<T>(dy, "dy", N * C * L); auto px = ptr<T>(x, "x", N * C * L);
            auto pg = opt_ptr<T>(gamma, "gamma", C);
            auto pm = ptr<T>(mean, "mean", C); auto pi = ptr<T>(invstd, "invstd", C);
            auto pdx = ptr<T>(dx, "dx", N * C * L, true);
            auto pdg = ptr<T>(dgamma, "dgamma", C, true); auto pdb = ptr<T>(dbeta, "dbeta", C, true);
            NoGil nogil(N * C * L);
            batch_norm_bwd<T>(pdy, px, pg, pm, pi, pdx, pdg, pdb, N, C, L, training);
        });
    });
}

}  // namespace bind
}  // namespace fastnn
