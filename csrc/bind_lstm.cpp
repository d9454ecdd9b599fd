// _C.lstm_fwd and _C.lstm_bwd.
#include "bind.h"

namespace fastnn {
namespace bind {

static LstmShape lstm_shape(i64 N, i64 T, i64 D, i64 H, const std::array<int, 4>& pos) {
    LstmShape s{N, T, D, H, {pos[0], pos[1], pos[2], pos[3]}};
    int seen = 0;
    for (int p : pos) {
        if (p < 0 || p > 3) throw py::value_error("gate positions must be 0..3");
        seen |= 1 << p;
    }
    if (seen != 15 || N < 0 || T <= 0 || D <= 0 || H <= 0) throw py::value_error("invalid LSTM shape");
    return s;
}

void bind_lstm(py::module_& m) {
    // xs (N,T,D); pos = block index of gates i, f, g, o.
    m.def("lstm_fwd", [](py::array xs, py::object h0, py::object c0, py::array w_ih, py::array w_hh, py::object bias,
                         py::array hs, py::array cs, py::array gates, i64 H, std::array<int, 4> pos) {
        if (xs.ndim() != 3) throw py::value_error("xs must be 3-D");
        auto s = lstm_shape(xs.shape(0), xs.shape(1), xs.shape(2), H, pos);
        dispatch(xs, [&](auto z) {
            using T = decltype(z);
            i64 NTH = s.N * s.T * s.H;
            auto px = ptr<T>(xs, "xs", xs.size());
            auto ph = opt_ptr<T>(h0, "h0", s.N * H); auto pc = opt_ptr<T>(c0, "c0", s.N * H);
            auto pwi = ptr<T>(w_ih, "w_ih", s.D * 4 * H); auto pwh = ptr<T>(w_hh, "w_hh", H * 4 * H);
            auto pb = opt_ptr<T>(bias, "bias", 4 * H);
            auto phs = ptr<T>(hs, "hs", NTH, true); auto pcs = ptr<T>(cs, "cs", NTH, true);
            auto pg = ptr<T>(gates, "gates", 4 * NTH, true);
            py::gil_scoped_release nogil;
            lstm_fwd<T>(px, ph, pc, pwi, pwh, pb, phs, pcs, pg, s);
        });
    });
    m.def("lstm_bwd", [](py::object dhs, py::object dh_n, py::object dc_n, py::array xs, py::object h0, py::object c0,
                         py::array w_ih, py::array w_hh, py::array gates, py::array hs, py::array cs, py::array dxs,
                         py::array dh0, py::array dc0, py::array dw_ih, py::array dw_hh, py::array dbias, i64 H,
                         std::array<int, 4> pos) {
        if (xs.ndim() != 3) throw py::value_error("xs must be 3-D");
        auto s = lstm_shape(xs.shape(0), xs.shape(1), xs.shape(2), H, pos);
        dispatch(xs, [&](auto z) {
            using T = decltype(z);
            i64 NTH = s.N * s.T * s.H, NH = s.N * H;
            auto pdhs = opt_ptr<T>(dhs, "dhs", NTH);
            auto pdhn = opt_ptr<T>(dh_n, "dh_n", NH); auto pdcn = opt_ptr<T>(dc_n, "dc_n", NH);
            auto px = ptr<T>(xs, "xs", xs.size());
            auto ph = opt_ptr<T>(h0, "h0", NH); auto pc = opt_ptr<T>(c0, "c0", NH);
            auto pwi = ptr<T>(w_ih, "w_ih", s.D * 4 * H); auto pwh = ptr<T>(w_hh, "w_hh", H * 4 * H);
            auto pg = ptr<T>(gates, "gates", 4 * NTH);
            auto phs = ptr<T>(hs, "hs", NTH); auto pcs = ptr<T>(cs, "cs", NTH);
            auto pdx = ptr<T>(dxs, "dxs", xs.size(), true);
            auto pdh0 = ptr<T>(dh0, "dh0", NH, true); auto pdc0 = ptr<T>(dc0, "dc0", NH, true);
            auto pdwi = ptr<T>(dw_ih, "dw_ih", s.D * 4 * H, true); auto pdwh = ptr<T>(dw_hh, "dw_hh", H * 4 * H, true);
            auto pdb = ptr<T>(dbias, "dbias", 4 * H, true);
            py::gil_scoped_release nogil;
            lstm_bwd<T>(pdhs, pdhn, pdcn, px, ph, pc, pwi, pwh, pg, phs, pcs, pdx, pdh0, pdc0, pdwi, pdwh,
                                pdb, s);
        });
    });
}

}  // namespace bind
}  // namespace fastnn
