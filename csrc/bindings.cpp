// The only PYBIND11_MODULE: array checks, GIL release, one m.def per kernel.
// The Python wrapper (fastnn/_cpu.py) validates arguments and allocates outputs; the checks here only make sure
// a wrong call can never read or write out of bounds.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/numpy.h>

#include <array>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include <sys/mman.h>

#include "fastnn.h"
#include "simd.h"

namespace py = pybind11;
using fastnn::i64;
using Pair = std::array<i64, 2>;

namespace {

template <typename T>
T* ptr(const py::array& a, const char* name, i64 size, bool writable = false) {
    if (!py::isinstance<py::array_t<T>>(a))
        throw py::type_error(std::string(name) + ": expected dtype " + py::str(py::dtype::of<T>()).cast<std::string>() +
                             ", got " + py::str(a.dtype()).cast<std::string>());
    if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": must be C-contiguous");
    if (a.size() != size)
        throw py::value_error(std::string(name) + ": expected " + std::to_string(size) + " elements, got " +
                              std::to_string(a.size()));
    if (writable && !a.writeable()) throw py::value_error(std::string(name) + ": must be writable");
    return static_cast<T*>(const_cast<void*>(a.data()));
}

template <typename T>
T* opt_ptr(const py::object& o, const char* name, i64 size, bool writable = false) {
    if (o.is_none()) return nullptr;
    return ptr<T>(o.cast<py::array>(), name, size, writable);
}

// Call f(T{}) with T = float or double, chosen by the dtype of `a`.
template <typename F>
void dispatch(const py::array& a, F&& f) {
    if (py::isinstance<py::array_t<float>>(a)) f(float{});
    else if (py::isinstance<py::array_t<double>>(a)) f(double{});
    else throw py::type_error("expected float32 or float64, got " + py::str(a.dtype()).cast<std::string>());
}

// Freed output buffers of the cpu backend, kept for the next output of the same size (fastnn._cpu allocates its
// outputs of 1 MiB and more here). A fresh NumPy array of that size is new memory from the kernel each time
// (mmap above glibc's threshold, or heap memory trimmed back): its first write page-faults and zeroes every page,
// which was 42 % of the 7x7/2 im2col and made a 231 MB im2col output cost 47-304 ms between runs. A training loop
// asks for the same sizes every step, so an exact-size free list is enough. At most `limit` bytes are kept
// (FASTNN_CACHE_MB, default 512; 0 keeps nothing); fastnn.empty_cache() releases them.
class BufferCache {
  public:
    static BufferCache& get() {  // never destroyed: arrays freed during interpreter exit still return here
        static BufferCache* c = new BufferCache;
        return *c;
    }
    // Blocks of 4 MiB and more are 2 MiB-aligned and advised as huge pages (as NumPy does): one fault per 2 MiB,
    // fewer TLB misses. Callers round sizes up to this (aligned_alloc wants a multiple of the alignment).
    static size_t alignment(size_t bytes) { return bytes >= (size_t(4) << 20) ? (size_t(2) << 20) : 4096; }
    void* take(size_t bytes) {
        {
            std::lock_guard<std::mutex> lock(m_);
            auto it = free_.find(bytes);
            if (it != free_.end() && !it->second.empty()) {
                void* p = it->second.back();
                it->second.pop_back();
                cached_ -= bytes;
                return p;
            }
        }
        const size_t align = alignment(bytes);
        void* p = std::aligned_alloc(align, bytes);
        if (!p) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
        if (align > 4096) madvise(p, bytes, MADV_HUGEPAGE);
#endif
        return p;
    }
    void give(void* p, size_t bytes) {
        {
            std::lock_guard<std::mutex> lock(m_);
            if (cached_ + bytes <= limit_) {
                free_[bytes].push_back(p);
                cached_ += bytes;
                return;
            }
        }
        std::free(p);
    }
    void clear() {
        std::unordered_map<size_t, std::vector<void*>> drop;
        {
            std::lock_guard<std::mutex> lock(m_);
            drop.swap(free_);
            cached_ = 0;
        }
        for (auto& kv : drop)
            for (void* p : kv.second) std::free(p);
    }
    std::pair<size_t, size_t> info() {
        std::lock_guard<std::mutex> lock(m_);
        return {cached_, limit_};
    }
    void set_limit(size_t bytes) {
        { std::lock_guard<std::mutex> lock(m_); limit_ = bytes; }
        if (info().first > bytes) clear();
    }

  private:
    BufferCache() {
        const char* e = std::getenv("FASTNN_CACHE_MB");
        limit_ = (e && *e ? std::strtoull(e, nullptr, 10) : 512) << 20;
    }
    std::mutex m_;
    std::unordered_map<size_t, std::vector<void*>> free_;  // exact (page-rounded) size -> blocks
    size_t cached_ = 0, limit_ = 0;
};

// An uninitialised C-contiguous array whose memory comes from (and returns to) the BufferCache.
py::array cached_empty(const std::vector<py::ssize_t>& shape, const py::dtype& dt) {
    size_t n = size_t(dt.itemsize());
    for (py::ssize_t d : shape) {
        if (d < 0) throw py::value_error("negative dimension");
        n *= size_t(d);
    }
    struct Block { void* p; size_t bytes; };
    const size_t page = BufferCache::alignment(n);
    const size_t bytes = (std::max<size_t>(n, 1) + page - 1) / page * page;
    Block* b = new Block{BufferCache::get().take(bytes), bytes};
    py::capsule owner(b, [](void* v) {
        Block* blk = static_cast<Block*>(v);
        BufferCache::get().give(blk->p, blk->bytes);
        delete blk;
    });
    return py::array(dt, shape, std::vector<py::ssize_t>{}, b->p, owner);
}

i64 out_size(i64 in, i64 k, i64 s, i64 p, i64 d) { return (in + 2 * p - d * (k - 1) - 1) / s + 1; }

fastnn::ConvShape conv_shape(const Pair& xs4n, i64 C, i64 H, i64 W, i64 K, Pair ks, Pair st, Pair pd, Pair dl,
                             i64 groups) {
    fastnn::ConvShape s{xs4n[0], C, H, W, K, ks[0], ks[1], st[0], st[1], pd[0], pd[1], dl[0], dl[1], groups, 0, 0};
    if (s.N < 0 || C <= 0 || H <= 0 || W <= 0 || ks[0] <= 0 || ks[1] <= 0 || st[0] <= 0 || st[1] <= 0 ||
        pd[0] < 0 || pd[1] < 0 || dl[0] <= 0 || dl[1] <= 0 || groups <= 0 || C % groups || K % groups)
        throw py::value_error("invalid convolution parameters");
    s.OH = out_size(H, ks[0], st[0], pd[0], dl[0]);
    s.OW = out_size(W, ks[1], st[1], pd[1], dl[1]);
    if (s.OH <= 0 || s.OW <= 0) throw py::value_error("convolution output size must be > 0");
    return s;
}

fastnn::ConvShape conv_shape_of(const py::array& x, const py::array& w, Pair st, Pair pd, Pair dl, i64 groups) {
    if (x.ndim() != 4 || w.ndim() != 4) throw py::value_error("x and weight must be 4-D");
    if (w.shape(1) * groups != x.shape(1)) throw py::value_error("weight.shape[1] * groups must equal x.shape[1]");
    return conv_shape({x.shape(0), 0}, x.shape(1), x.shape(2), x.shape(3), w.shape(0), {w.shape(2), w.shape(3)}, st,
                      pd, dl, groups);
}

fastnn::PoolShape pool_shape(const std::array<i64, 4>& in, Pair ks, Pair st, Pair pd) {
    fastnn::PoolShape s{in[0], in[1], in[2], in[3], ks[0], ks[1], st[0], st[1], pd[0], pd[1], 0, 0};
    if (s.N < 0 || s.C < 0 || s.H <= 0 || s.W <= 0 || ks[0] <= 0 || ks[1] <= 0 || st[0] <= 0 || st[1] <= 0 ||
        pd[0] < 0 || pd[1] < 0 || 2 * pd[0] > ks[0] || 2 * pd[1] > ks[1])
        throw py::value_error("invalid pooling parameters");
    s.OH = out_size(s.H, ks[0], st[0], pd[0], 1);
    s.OW = out_size(s.W, ks[1], st[1], pd[1], 1);
    if (s.OH <= 0 || s.OW <= 0) throw py::value_error("pooling output size must be > 0");
    return s;
}

std::array<i64, 4> shape4(const py::array& a, const char* name) {
    if (a.ndim() != 4) throw py::value_error(std::string(name) + " must be 4-D");
    return {a.shape(0), a.shape(1), a.shape(2), a.shape(3)};
}

fastnn::LstmShape lstm_shape(i64 N, i64 T, i64 D, i64 H, const std::array<int, 4>& pos) {
    fastnn::LstmShape s{N, T, D, H, {pos[0], pos[1], pos[2], pos[3]}};
    int seen = 0;
    for (int p : pos) {
        if (p < 0 || p > 3) throw py::value_error("gate positions must be 0..3");
        seen |= 1 << p;
    }
    if (seen != 15 || N < 0 || T <= 0 || D <= 0 || H <= 0) throw py::value_error("invalid LSTM shape");
    return s;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "fastnn C++ CPU kernels (see fastnn/_cpu.py for the Python side)";

    m.def("config", [] {
        py::dict d;
        d["simd"] = fastnn::simd_variant();
        d["avx2_fma"] = fastnn::has_avx2_fma();
#if defined(__clang__)
        d["compiler"] = "clang " __clang_version__;
#elif defined(__GNUC__)
        d["compiler"] = "g++ " __VERSION__;
#else
        d["compiler"] = "unknown";
#endif
        return d;
    });
    m.def("empty", &cached_empty, "uninitialised C-contiguous array from the buffer cache");
    m.def("empty_cache", [] { BufferCache::get().clear(); });
    m.def("buffer_cache_info", [] {
        auto [cached, limit] = BufferCache::get().info();
        py::dict d;
        d["cached_bytes"] = cached, d["limit_bytes"] = limit;
        return d;
    });
    m.def("set_buffer_cache_limit", [](size_t bytes) { BufferCache::get().set_limit(bytes); });
    m.def("set_num_threads", &fastnn::set_num_threads);
    m.def("get_num_threads", &fastnn::get_num_threads);

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
            fastnn::gemm<T>(ta, tb, M, N, K, T(alpha), a, A.shape(1), b, B.shape(1), T(beta), c, N);
        });
    });

    m.def("im2col", [](py::array x, py::array col, Pair ks, Pair st, Pair pd, Pair dl) {
        auto in = shape4(x, "x");
        auto s = conv_shape({in[0], 0}, in[1], in[2], in[3], 1, ks, st, pd, dl, 1);
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            auto px = ptr<T>(x, "x", x.size());
            auto pc = ptr<T>(col, "col", s.N * s.OH * s.OW * s.C * s.KH * s.KW, true);
            py::gil_scoped_release nogil;
            fastnn::im2col<T>(px, pc, s);
        });
    });
    m.def("col2im", [](py::array col, py::array x, Pair ks, Pair st, Pair pd, Pair dl) {
        auto in = shape4(x, "x");
        auto s = conv_shape({in[0], 0}, in[1], in[2], in[3], 1, ks, st, pd, dl, 1);
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            auto pc = ptr<T>(col, "col", s.N * s.OH * s.OW * s.C * s.KH * s.KW);
            auto px = ptr<T>(x, "x", x.size(), true);
            py::gil_scoped_release nogil;
            fastnn::col2im<T>(pc, px, s);
        });
    });
    m.def("conv2d_fwd", [](py::array x, py::array w, py::object b, py::array y, Pair st, Pair pd, Pair dl, i64 groups) {
        auto s = conv_shape_of(x, w, st, pd, dl, groups);
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            auto px = ptr<T>(x, "x", x.size()); auto pw = ptr<T>(w, "weight", w.size());
            auto pb = opt_ptr<T>(b, "bias", s.K);
            auto py_ = ptr<T>(y, "y", s.N * s.K * s.OH * s.OW, true);
            py::gil_scoped_release nogil;
            fastnn::conv2d_fwd<T>(px, pw, pb, py_, s);
        });
    });
    m.def("conv2d_bwd", [](py::array dy, py::array x, py::array w, py::array dx, py::array dw, py::array db, Pair st,
                           Pair pd, Pair dl, i64 groups) {
        auto s = conv_shape_of(x, w, st, pd, dl, groups);
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            auto pdy = ptr<T>(dy, "dy", s.N * s.K * s.OH * s.OW);
            auto px = ptr<T>(x, "x", x.size()); auto pw = ptr<T>(w, "weight", w.size());
            auto pdx = ptr<T>(dx, "dx", x.size(), true); auto pdw = ptr<T>(dw, "dweight", w.size(), true);
            auto pdb = ptr<T>(db, "dbias", s.K, true);
            py::gil_scoped_release nogil;
            fastnn::conv2d_bwd<T>(pdy, px, pw, pdx, pdw, pdb, s);
        });
    });

    m.def("max_pool2d_fwd", [](py::array x, py::array y, py::array idx, Pair ks, Pair st, Pair pd) {
        auto s = pool_shape(shape4(x, "x"), ks, st, pd);
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            i64 n = s.N * s.C * s.OH * s.OW;
            auto px = ptr<T>(x, "x", x.size()); auto py_ = ptr<T>(y, "y", n, true);
            auto pi = ptr<i64>(idx, "indices", n, true);
            py::gil_scoped_release nogil;
            fastnn::max_pool2d_fwd<T>(px, py_, pi, s);
        });
    });
    m.def("max_pool2d_bwd", [](py::array dy, py::array idx, py::array dx) {
        // Scatter by index: only the plane sizes matter (window fields stay 0).
        auto in = shape4(dx, "dx");
        if (dy.ndim() != 4 || dy.shape(0) != in[0] || dy.shape(1) != in[1]) throw py::value_error("dy: shape mismatch");
        fastnn::PoolShape s{in[0], in[1], in[2], in[3], 0, 0, 0, 0, 0, 0, dy.shape(2), dy.shape(3)};
        dispatch(dy, [&](auto z) {
            using T = decltype(z);
            i64 n = s.N * s.C * s.OH * s.OW;
            auto pdy = ptr<T>(dy, "dy", n); auto pi = ptr<i64>(idx, "indices", n);
            auto pdx = ptr<T>(dx, "dx", dx.size(), true);
            py::gil_scoped_release nogil;
            fastnn::max_pool2d_bwd<T>(pdy, pi, pdx, s);  // the kernel must bounds-check indices against H*W
        });
    });
    m.def("avg_pool2d_fwd", [](py::array x, py::array y, Pair ks, Pair st, Pair pd, bool cip) {
        auto s = pool_shape(shape4(x, "x"), ks, st, pd);
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            auto px = ptr<T>(x, "x", x.size()); auto py_ = ptr<T>(y, "y", s.N * s.C * s.OH * s.OW, true);
            py::gil_scoped_release nogil;
            fastnn::avg_pool2d_fwd<T>(px, py_, s, cip);
        });
    });
    m.def("avg_pool2d_bwd", [](py::array dy, py::array dx, Pair ks, Pair st, Pair pd, bool cip) {
        auto s = pool_shape(shape4(dx, "dx"), ks, st, pd);
        dispatch(dy, [&](auto z) {
            using T = decltype(z);
            auto pdy = ptr<T>(dy, "dy", s.N * s.C * s.OH * s.OW); auto pdx = ptr<T>(dx, "dx", dx.size(), true);
            py::gil_scoped_release nogil;
            fastnn::avg_pool2d_bwd<T>(pdy, pdx, s, cip);
        });
    });

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
            py::gil_scoped_release nogil;
            fastnn::batch_norm_fwd<T>(px, pg, pb, py_, pm, pi, prm, prv, N, C, L, training, momentum, eps);
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
            py::gil_scoped_release nogil;
            fastnn::batch_norm_bwd<T>(pdy, px, pg, pm, pi, pdx, pdg, pdb, N, C, L, training);
        });
    });

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
            fastnn::lstm_fwd<T>(px, ph, pc, pwi, pwh, pb, phs, pcs, pg, s);
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
            fastnn::lstm_bwd<T>(pdhs, pdhn, pdcn, px, ph, pc, pwi, pwh, pg, phs, pcs, pdx, pdh0, pdc0, pdwi, pdwh,
                                pdb, s);
        });
    });
}
