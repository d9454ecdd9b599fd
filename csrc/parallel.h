// fastnn's thread pool: every parallel loop of the kernels runs through parallel_for (parallel.cpp).
//
// Why not OpenMP: fastnn is called between NumPy's own BLAS calls, and NumPy's OpenBLAS keeps its worker spinning
// for ~0.1 s after each call. libgomp's workers spin too after their region (for milliseconds by default), so the
// two pools took each other's cores in turn: a fastnn call after a matmul ran up to 38x slower than alone, and the
// matmul after it 3x slower (bench: `python -m fastnn.bench --mixed`). This pool
//   - lets the calling thread take tasks too: a worker that is not scheduled (its core is busy with another
//     pool's spinner) holds up nothing but the task it has already taken (the caller yields its core while it
//     waits for that one);
//   - spins only briefly after its work (kSpinMicros, FASTNN_SPIN_US), then offers its core to any other thread
//     (sched_yield, kYieldMicros) before sleeping on a futex, so the BLAS call that follows finds both cores free;
//   - runs work too small to share on the calling thread, with no worker woken (parallel_work).
#pragma once
#include <cstdint>
#include <type_traits>

namespace fastnn {
using i64 = std::int64_t;

void set_num_threads(int n);  // threads used by every kernel (the calling thread included); n >= 1
int get_num_threads();

namespace detail {
using RangeFn = void (*)(void* ctx, i64 begin, i64 end);
void run_parallel(i64 n, i64 chunk, int threads, RangeFn fn, void* ctx);
// fn(ctx, i, i + 1) for each i in [0, n), all n at once on n distinct threads (the caller and n-1 workers, started
// whatever the pool's size): for jobs that wait for each other, like a threaded OpenBLAS call's (blas_share.cpp).
// Waits for the pool while another caller holds it; from inside the pool it runs on n-1 threads of its own.
void run_gang(int n, RangeFn fn, void* ctx);
struct InlineScope {  // while alive, every parallel_for of this thread runs inline
    InlineScope();
    ~InlineScope();
    bool prev;
};
}  // namespace detail

// f(begin, end) over [0, n) in chunks of `chunk` indices (the last may be shorter), taken in order by the calling
// thread and up to threads-1 pool workers (threads <= 0: get_num_threads()). Chunks run in any order, on any thread,
// possibly all on the caller: a chunk must never wait for another. Called from inside a chunk, it runs inline.
template <class F>
void parallel_for(i64 n, i64 chunk, F&& f, int threads = 0) {
    if (n <= 0) return;
    if (chunk < 1) chunk = 1;
    using Fn = std::remove_reference_t<F>;
    detail::run_parallel(n, chunk, threads,
                         [](void* ctx, i64 b, i64 e) { (*static_cast<Fn*>(ctx))(b, e); },
                         const_cast<void*>(static_cast<const void*>(&f)));
}

// f(i) for each i in [0, n), one index per chunk: for loops over big tasks (planes, GEMM blocks, images).
template <class F>
void parallel_tasks(i64 n, F&& f, int threads = 0) {
    parallel_for(n, 1, [&](i64 b, i64 e) { for (i64 i = b; i < e; ++i) f(i); }, threads);
}

// The threads worth waking for `work` units (~ one element read or written; a GEMM counts 64 multiply-adds as one,
// gemm_work): 1 below
// kMinParallelWork, where waking a sleeping worker (~10-50 us on a virtual machine whose idle core halted) and
// the fork/join cost more than the work they would share.
// From kMinParallelWork / 8 on, threads are worth it while every worker is awake (spinning or yielding after a
// recent job: a fork/join of ~1-2 us, no wake-up), as in a training loop's back-to-back calls: the book MLP
// (784-100x5-10, float64) went 1.63-1.74x -> 1.76-1.83x the NumPy step (its 100x100x100 GEMMs threaded).
constexpr double kMinParallelWork = 1 << 16;
bool pool_awake();  // no worker asleep (and all started)
inline int parallel_work(double work) {
    if (work >= kMinParallelWork) return get_num_threads();
    return work >= kMinParallelWork / 8 && pool_awake() ? get_num_threads() : 1;
}

// f() with every parallel loop inside it on the calling thread, when `work` is below kMinParallelWork: for a kernel
// made of several loops that do not each know the whole call's size (a tiny conv woke the pool: 8.9 vs 7.0 us).
template <class F>
void maybe_serially(double work, F&& f) {
    if (work >= kMinParallelWork) return f();
    detail::InlineScope scope;
    f();
}

// f(i) for each i in [0, n), each about `work_each` units: threads by parallel_work, ~16 chunks per thread (a chunk
// per index would cost an atomic per row on loops of many small rows; fewer left a late thread's chunk too long).
template <class F>
void parallel_items(i64 n, double work_each, F&& f) {
    const int nt = parallel_work(double(n) * work_each);
    const i64 chunk = nt == 1 ? n : (n + 16 * nt - 1) / (16 * nt);
    parallel_for(n, chunk, [&](i64 b, i64 e) { for (i64 i = b; i < e; ++i) f(i); }, nt);
}

}  // namespace fastnn
