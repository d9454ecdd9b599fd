// _C bindings of the rnn family: rnn_fwd, rnn_bwd, gru_fwd, gru_bwd (the cells are sequences of one step).
#include "bind.h"
#include "rnn.h"

namespace fastnn {
namespace bind {

namespace {
struct Dims { i64 N, T, D, H; };
// xs (N,T,D), or (N,D) for a cell (T = 1: then every (N,T,.) array may be (N,.), only sizes are checked).
Dims dims(const py::array& xs, i64 H) {
    if (xs.ndim() != 3 && xs.ndim() != 2) throw py::value_error("xs must be 2-D or 3-D");
    const bool seq = xs.ndim() == 3;
    Dims d{xs.shape(0), seq ? xs.shape(1) : 1, xs.shape(seq ? 2 : 1), H};
    if (d.N <= 0 || d.T <= 0 || d.D <= 0 || H <= 0) throw py::value_error("invalid recurrent shape");
    return d;
}
}  // namespace

void bind_rnn(py::module_& m) {
    // h0 is always given (zeros materialised by the caller); G = H (rnn) or 3H (gru).
    m.def("rnn_fwd", [](py::array xs, py::array h0, py::array w_ih, py::array w_hh, py::object bias, py::array hs,
                        i64 H) {
        const Dims d = dims(xs, H);
        dispatch(xs, [&](auto z) {
            using T = decltype(z);
            auto px = ptr<T>(xs, "xs", xs.size()); auto ph = ptr<T>(h0, "h0", d.N * H);
            auto pwi = ptr<T>(w_ih, "w_ih", d.D * H); auto pwh = ptr<T>(w_hh, "w_hh", H * H);
            auto pb = opt_ptr<T>(bias, "bias", H); auto phs = ptr<T>(hs, "hs", d.N * d.T * H, true);
            py::gil_scoped_release nogil;
            rnn_fwd<T>(px, ph, pwi, pwh, pb, phs, d.N, d.T, d.D, H);
        });
    });
    m.def("rnn_bwd", [](py::object dhs, py::object dh_n, py::array xs, py::array h0, py::array w_ih, py::array w_hh,
                        py::array hs, py::array dxs, py::array dh0, py::array dw_ih, py::array dw_hh, py::array dbias,
                        i64 H) {
        const Dims d = dims(xs, H);
        dispatch(xs, [&](auto z) {
            using T = decltype(z);
            const i64 NTH = d.N * d.T * H, NH = d.N * H;
            auto pdhs = opt_ptr<T>(dhs, "dhs", NTH); auto pdhn = opt_ptr<T>(dh_n, "dh_n", NH);
            auto px = ptr<T>(xs, "xs", xs.size()); auto ph = ptr<T>(h0, "h0", NH);
            auto pwi = ptr<T>(w_ih, "w_ih", d.D * H); auto pwh = ptr<T>(w_hh, "w_hh", H * H);
            auto phs = ptr<T>(hs, "hs", NTH);
            auto pdx = ptr<T>(dxs, "dxs", xs.size(), true); auto pdh0 = ptr<T>(dh0, "dh0", NH, true);
            auto pdwi = ptr<T>(dw_ih, "dw_ih", d.D * H, true); auto pdwh = ptr<T>(dw_hh, "dw_hh", H * H, true);
            auto pdb = ptr<T>(dbias, "dbias", H, true);
            py::gil_scoped_release nogil;
            rnn_bwd<T>(pdhs, pdhn, px, ph, pwi, pwh, phs, pdx, pdh0, pdwi, pdwh, pdb, d.N, d.T, d.D, H);
        });
    });
    // rzn: PyTorch's gate layout (else book 2's "zrh").
    m.def("gru_fwd", [](py::array xs, py::array h0, py::array w_ih, py::array w_hh, py::object b_ih, py::object b_hh,
                        py::array hs, py::array gates, py::array hn, i64 H, bool rzn) {
        const Dims d = dims(xs, H);
        dispatch(xs, [&](auto z) {
            using T = decltype(z);
            const i64 NTH = d.N * d.T * H;
            auto px = ptr<T>(xs, "xs", xs.size()); auto ph = ptr<T>(h0, "h0", d.N * H);
            auto pwi = ptr<T>(w_ih, "w_ih", d.D * 3 * H); auto pwh = ptr<T>(w_hh, "w_hh", H * 3 * H);
            auto pbi = opt_ptr<T>(b_ih, "b_ih", 3 * H); auto pbh = opt_ptr<T>(b_hh, "b_hh", 3 * H);
            auto phs = ptr<T>(hs, "hs", NTH, true); auto pg = ptr<T>(gates, "gates", 3 * NTH, true);
            auto phn = ptr<T>(hn, "hn", NTH, true);
            py::gil_scoped_release nogil;
            gru_fwd<T>(rzn, px, ph, pwi, pwh, pbi, pbh, phs, pg, phn, d.N, d.T, d.D, H);
        });
    });
    m.def("gru_bwd", [](py::object dhs, py::object dh_n, py::array xs, py::array h0, py::array w_ih, py::array w_hh,
                        py::array gates, py::array hs, py::array hn, py::object dhn, py::array dxs, py::array dh0,
                        py::array dw_ih, py::array dw_hh, py::array db_ih, py::array db_hh, i64 H, bool rzn) {
        const Dims d = dims(xs, H);
        dispatch(xs, [&](auto z) {
            using T = decltype(z);
            const i64 NTH = d.N * d.T * H, NH = d.N * H;
            auto pdhs = opt_ptr<T>(dhs, "dhs", NTH); auto pdhn = opt_ptr<T>(dh_n, "dh_n", NH);
            auto px = ptr<T>(xs, "xs", xs.size()); auto ph = ptr<T>(h0, "h0", NH);
            auto pwi = ptr<T>(w_ih, "w_ih", d.D * 3 * H); auto pwh = ptr<T>(w_hh, "w_hh", H * 3 * H);
            auto pg = ptr<T>(gates, "gates", 3 * NTH); auto phs = ptr<T>(hs, "hs", NTH);
            auto phn = ptr<T>(hn, "hn", NTH);
            T* pscratch = opt_ptr<T>(dhn, "dhn", NTH, true);
            if (rzn && !pscratch) throw py::value_error("dhn: the rzn backward needs its (N,T,H) scratch");
            auto pdx = ptr<T>(dxs, "dxs", xs.size(), true); auto pdh0 = ptr<T>(dh0, "dh0", NH, true);
            auto pdwi = ptr<T>(dw_ih, "dw_ih", d.D * 3 * H, true);
            auto pdwh = ptr<T>(dw_hh, "dw_hh", H * 3 * H, true);
            auto pdbi = ptr<T>(db_ih, "db_ih", 3 * H, true); auto pdbh = ptr<T>(db_hh, "db_hh", 3 * H, true);
            py::gil_scoped_release nogil;
            gru_bwd<T>(rzn, pdhs, pdhn, px, ph, pwi, pwh, pg, phs, phn, pscratch, pdx, pdh0, pdwi, pdwh, pdbi, pdbh,
                       d.N, d.T, d.D, H);
        });
    });
}

}  // namespace bind
}  // namespace fastnn
