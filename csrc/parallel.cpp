// The thread pool behind parallel_for (parallel.h says why it is not OpenMP).
//
// One job at a time: a caller publishes it (job_, then a new generation number), wakes the sleeping workers, takes
// chunks itself, then closes it (job_ = nullptr) and waits until no worker is inside it (active_ == 0). A worker
// counts itself in (active_) before it reads job_, so the caller's wait covers every worker that can still see the
// job, and the job can live on the caller's stack. A second caller (another Python thread, the GIL released) or a
// call from inside a chunk finds the pool taken and runs inline.
#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#if defined(__linux__)
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace fastnn {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
}

// How long a worker spins for the next job, then yields its core between looks, before it sleeps. Spinning: short,
// so a BLAS call right after a fastnn call loses at most this much of one core (libgomp's default spins ~300k
// iterations: milliseconds). Yielding: the core stays awake, so back-to-back calls with Python work between them
// find the worker at once (a halted virtual core took tens of us to wake), yet any runnable thread gets the core.
constexpr int kSpinMicros = 50;
constexpr int kYieldMicros = 1000;
// Since the last BLAS call run on the pool (run_gang), the workers yield for this long instead: OpenBLAS's jobs wait
// for each other with nops, and a worker woken from sleep was placed on the caller's core (a halted virtual core is
// passed over), so the caller's job spun while the one it waited for queued behind it: 1-20 ms for a 0.2 ms matmul.
// A worker that keeps yielding keeps its own core. OpenBLAS's own workers spin ~0.1 s (2^28 cycles) for the same.
constexpr int kBlasYieldMicros = 100000;

int env_int(const char* name, int fallback) {
    const char* v = std::getenv(name);
    if (!v || !*v) return fallback;
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    return (end && *end == '\0' && n >= 0 && n < (1 << 20)) ? int(n) : fallback;
}

int default_threads() {
    // FASTNN_NUM_THREADS, else OMP_NUM_THREADS (what the OpenMP build honoured), else the CPUs this process may use.
    int n = env_int("FASTNN_NUM_THREADS", 0);
    if (n <= 0) n = env_int("OMP_NUM_THREADS", 0);
#if defined(__linux__)
    if (n <= 0) {
        cpu_set_t set;
        if (sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
    }
#endif
    if (n <= 0) n = int(std::max(1u, std::thread::hardware_concurrency()));
    return n;
}

// The chunks are split into one contiguous part per thread, like OpenMP's static schedule: thread t starts on part
// t, so back-to-back calls give each core the same slice of the data (still in its L2: batch_norm on
// (64,16,28,28) ran 0.34 ms with chunks handed out in turn, 0.18 static). A thread whose part is done takes chunks
// from the next parts, so a thread that is late or not scheduled at all holds up only the chunk it is running.
struct Job {
    struct alignas(64) Part {
        std::atomic<i64> next{0};  // next chunk of this part
        i64 end = 0;
    };
    detail::RangeFn fn;
    void* ctx;
    i64 n, chunk;
    int nparts;
    std::unique_ptr<Part[]> parts;
    std::atomic<int> joined{1};    // seats taken, the caller's (0) included: a worker's seat is its first part
    std::atomic<bool> failed{false};
    std::exception_ptr error;      // the first exception a worker's chunk threw (rethrown by the caller)
    std::mutex error_mu;

    Job(detail::RangeFn f, void* c, i64 n_, i64 chunk_, int nth)
        : fn(f), ctx(c), n(n_), chunk(chunk_), nparts(nth), parts(new Part[nth]) {
        const i64 chunks = (n + chunk - 1) / chunk;
        for (int p = 0; p < nth; ++p) parts[p].next.store(chunks * p / nth), parts[p].end = chunks * (p + 1) / nth;
    }

    void run_chunks(int seat) {
        for (int k = 0; k < nparts; ++k) {
            Part& part = parts[(seat + k) % nparts];
            for (;;) {
                if (failed.load(std::memory_order_relaxed)) return;
                const i64 c = part.next.fetch_add(1, std::memory_order_relaxed);
                if (c >= part.end) break;
                fn(ctx, c * chunk, std::min(n, (c + 1) * chunk));
            }
        }
    }
};

thread_local bool tl_in_pool = false;  // a worker, or a caller inside its job: nested calls run inline

class Pool {
  public:
    Pool()
        : size_(default_threads()), spin_us_(env_int("FASTNN_SPIN_US", kSpinMicros)),
          yield_us_(env_int("FASTNN_YIELD_US", kYieldMicros)),
          blas_yield_us_(env_int("FASTNN_BLAS_YIELD_US", kBlasYieldMicros)) {}

    void set_size(int n) { size_.store(std::max(1, n)); }
    int size() const { return size_.load(); }
    bool awake() const {
        return sleeping_.load(std::memory_order_relaxed) == 0 && started_.load(std::memory_order_relaxed) >= size() - 1;
    }

    void run(i64 n, i64 chunk, int threads, detail::RangeFn fn, void* ctx) {
        const i64 chunks = (n + chunk - 1) / chunk;
        const int nth = int(std::min<i64>(threads > 0 ? std::min(threads, size()) : size(), chunks));
        if (nth <= 1 || tl_in_pool || !mu_.try_lock()) return fn(ctx, 0, n);
        std::lock_guard<std::mutex> lock(mu_, std::adopt_lock);
        start_workers(nth - 1);
        Job job(fn, ctx, n, chunk, nth);
        job_.store(&job);
        gen_.fetch_add(1);
        if (sleeping_.load() > 0) wake(nth - 1);
        tl_in_pool = true;
        std::exception_ptr mine;
        try {
            job.run_chunks(0);
        } catch (...) {
            mine = std::current_exception();
            job.failed.store(true);
        }
        tl_in_pool = false;
        job_.store(nullptr);
        // A worker counted in may have been preempted (its core taken by another pool's spinner): after a short
        // spin, give the core away between looks instead of burning the time slice that worker is waiting for.
        for (int i = 0; active_.load() != 0; ++i) {
            if (i < 4096) cpu_relax();
            else std::this_thread::yield();
        }
        if (mine) std::rethrow_exception(mine);
        if (job.error) std::rethrow_exception(job.error);
    }

    void gang(int n, detail::RangeFn fn, void* ctx) {
        if (n <= 1) return n == 1 ? fn(ctx, 0, 1) : void();
        if (tl_in_pool) return gang_on_own_threads(n, fn, ctx);
        std::lock_guard<std::mutex> lock(mu_);  // wait, never inline: the n jobs must run side by side
        start_workers(n - 1);
        Job job(fn, ctx, n, 1, n);  // one part of one chunk per thread: a seat is a job
        job_.store(&job);
        gen_.fetch_add(1);
        if (sleeping_.load() > 0) wake(n - 1);
        // The caller's own part first; it returns only once every other job has started (they wait for each
        // other), so stealing a part that no worker has taken yet can only happen when it is safe.
        tl_in_pool = true;
        job.run_chunks(0);
        tl_in_pool = false;
        job_.store(nullptr);
        last_gang_.store(std::chrono::steady_clock::now().time_since_epoch().count());
        for (int i = 0; active_.load() != 0; ++i) {
            if (i < 4096) cpu_relax();
            else std::this_thread::yield();
        }
    }

  private:
    static void gang_on_own_threads(int n, detail::RangeFn fn, void* ctx) {
        std::unique_ptr<std::thread[]> t(new std::thread[n - 1]);
        for (int i = 1; i < n; ++i) t[i - 1] = std::thread([=] { fn(ctx, i, i + 1); });
        fn(ctx, 0, 1);
        for (int i = 0; i < n - 1; ++i) t[i].join();
    }

    void start_workers(int want) {
        // A new worker waits for the generation after this one (called before the caller publishes its job): a
        // worker that read gen_ itself could start after the bump and sleep through the job it was started for.
        for (const unsigned seen = gen_.load(); started_ < want; ++started_)  // detached: lives as long as the process
            std::thread([this, seen] { worker(seen); }).detach();
    }

    void worker(unsigned seen) {
        tl_in_pool = true;
        for (;;) {
            wait_for_job(seen);
            seen = gen_.load();
            active_.fetch_add(1);
            Job* job = job_.load();
            const int seat = job ? job->joined.fetch_add(1) : 0;
            if (job && seat < job->nparts) {
                try {
                    job->run_chunks(seat);
                } catch (...) {
                    std::lock_guard<std::mutex> g(job->error_mu);
                    if (!job->error) job->error = std::current_exception();
                    job->failed.store(true);
                }
            }
            active_.fetch_sub(1);
        }
    }

    // Spin for spin_us_, yield for yield_us_ (until blas_yield_us_ after the last gang, if later), then sleep until
    // the generation moves past `seen`.
    void wait_for_job(unsigned seen) {
        using clock = std::chrono::steady_clock;
        const auto until = clock::now() + std::chrono::microseconds(spin_us_);
        const auto until_yield = std::max(until + std::chrono::microseconds(yield_us_),
                                          clock::time_point(clock::duration(last_gang_.load())) +
                                              std::chrono::microseconds(blas_yield_us_));
        for (int i = 0; gen_.load(std::memory_order_acquire) == seen; ++i) {
            if ((i & 63) != 63) {
                cpu_relax();
                continue;
            }
            const auto now = clock::now();
            if (now < until) continue;
            if (now < until_yield) {  // the core stays awake for us, yet any runnable thread gets it at once
                sched_yield();
                continue;
            }
            sleeping_.fetch_add(1);
            sleep_while(seen);
            sleeping_.fetch_sub(1);
        }
    }

#if defined(__linux__)
    // futex on the generation word: returns at once if it already moved (no lost wake-up: the caller bumps gen_
    // before it reads sleeping_, the worker counts itself in sleeping_ before the futex compares gen_).
    void sleep_while(unsigned seen) {
        syscall(SYS_futex, reinterpret_cast<unsigned*>(&gen_), FUTEX_WAIT_PRIVATE, seen, nullptr, nullptr, 0);
    }
    void wake(int n) {  // only as many as the job has seats: a worker woken for nothing delays the caller's join
        syscall(SYS_futex, reinterpret_cast<unsigned*>(&gen_), FUTEX_WAKE_PRIVATE, n, nullptr, nullptr, 0);
    }
#else
    void sleep_while(unsigned seen) {
        while (gen_.load() == seen) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    void wake(int) {}
#endif

    static_assert(sizeof(std::atomic<unsigned>) == sizeof(unsigned), "futex word");
    std::atomic<int> size_;
    const int spin_us_, yield_us_, blas_yield_us_;
    std::atomic<std::chrono::steady_clock::rep> last_gang_{0};  // when the last gang ended (steady_clock ticks)
    std::mutex mu_;                  // held by the one caller whose job is published
    std::atomic<int> started_{0};    // workers started (changed under mu_)
    std::atomic<unsigned> gen_{0};   // bumped per job; the futex word the workers sleep on
    std::atomic<Job*> job_{nullptr};
    std::atomic<int> active_{0};     // workers between counting in and out of a job
    std::atomic<int> sleeping_{0};
};

// Never destroyed (its detached workers may outlive static destructors). A forked child has none of the parent's
// workers: it gets a fresh pool with the same size.
Pool* g_pool = nullptr;
std::once_flag g_once;

Pool& pool() {
    std::call_once(g_once, [] {
        g_pool = new Pool();
#if defined(__linux__)
        pthread_atfork(nullptr, nullptr, [] {
            const int n = g_pool->size();
            g_pool = new Pool();  // the parent's, with its workers gone, is left behind
            g_pool->set_size(n);
        });
#endif
    });
    return *g_pool;
}

}  // namespace

void set_num_threads(int n) { pool().set_size(n); }
int get_num_threads() { return pool().size(); }
bool pool_awake() { return pool().awake(); }

namespace detail {
void run_parallel(i64 n, i64 chunk, int threads, RangeFn fn, void* ctx) { pool().run(n, chunk, threads, fn, ctx); }
void run_gang(int n, RangeFn fn, void* ctx) { pool().gang(n, fn, ctx); }
InlineScope::InlineScope() : prev(tl_in_pool) { tl_in_pool = true; }
InlineScope::~InlineScope() { tl_in_pool = prev; }
}  // namespace detail

}  // namespace fastnn
