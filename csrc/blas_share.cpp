// NumPy's OpenBLAS on fastnn's thread pool (OpenBLAS >= 0.3.28: openblas_set_threads_callback_function).
//
// Why: a training loop calls NumPy's matmuls and fastnn's kernels in turn. OpenBLAS's own worker spins for ~0.1 s
// after each threaded call (2^28 TSC cycles, nops: it never gives its core away), so a fastnn call in that window
// had one core, not two: conv2d 1.71x and conv2d_backward 1.42x its time after a one-thread matmul (`python -m
// fastnn.bench --mixed`). With the callback set, OpenBLAS hands each threaded call's jobs to us instead of waking
// its own workers: both libraries run on one pool, whose workers stop spinning 50 us after a call and give their
// core to any thread that wants it (parallel.cpp). OpenBLAS still chooses how many jobs a call has (its thread
// count, OPENBLAS_NUM_THREADS, threadpoolctl), and each job computes what it computed before: same results.
//
// The jobs of one call wait for each other (the threaded GEMM's threads swap packed panels), so they run as a gang
// (detail::run_gang): all at once, on distinct threads. OpenBLAS's own workers, if they ever ran, spin out their
// timeout and sleep for good.
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "bind.h"
#include "parallel.h"

#if defined(__linux__)
#include <dlfcn.h>
#include <link.h>
#endif

namespace fastnn {
namespace {

// OpenBLAS's types (cblas.h): dojob(thread_num, &jobs[i], dojob_data) must be called once for each job.
using DoJob = void (*)(int thread_num, void* jobdata, int dojob_data);
using ThreadsCallback = void (*)(int sync, DoJob dojob, int numjobs, std::size_t elsize, void* jobs, int data);
using SetCallback = void (*)(ThreadsCallback);

struct Gang {
    DoJob dojob;
    char* jobs;
    std::size_t elsize;
    int data, first;
};

// The smallest MAX_THREADS of the libraries we serve: OpenBLAS's per-thread status words and buffers are arrays of
// that size, indexed by thread_num, and its own workers (which stay, asleep) own the first slots. Our jobs take
// the last numjobs slots instead of 0..numjobs-1: a job writing a sleeping worker's status word kept that worker
// spinning (its timeout restarts while the word is nonzero), and the matmul ran 2.9x slower.
std::atomic<int> g_slots{0};

void run_jobs(int, DoJob dojob, int numjobs, std::size_t elsize, void* jobs, int data) {
    Gang g{dojob, static_cast<char*>(jobs), elsize, data, std::max(0, g_slots.load() - numjobs)};
    detail::run_gang(numjobs, [](void* ctx, i64 i, i64) {
        const Gang& g = *static_cast<Gang*>(ctx);
        g.dojob(g.first + int(i), g.jobs + std::size_t(i) * g.elsize, g.data);
    }, &g);
}

struct OpenBLAS {
    std::string path;
    SetCallback set;
    int slots;  // MAX_THREADS, from its config string
    int procs;  // its default thread count: its workers own slots 0..procs-2
};

// Every OpenBLAS loaded in this process that has the callback: NumPy's (scipy-openblas, symbols prefixed
// scipy_ and suffixed 64_), SciPy's, a system one. Found by name among the loaded objects (NumPy loads its copy
// RTLD_LOCAL, so it is not in the global namespace).
std::vector<OpenBLAS> openblas_libraries() {
    std::vector<OpenBLAS> found;
#if defined(__linux__)
    std::vector<std::string> names;
    dl_iterate_phdr([](dl_phdr_info* info, std::size_t, void* out) {
        if (info->dlpi_name && std::strstr(info->dlpi_name, "openblas"))
            static_cast<std::vector<std::string>*>(out)->push_back(info->dlpi_name);
        return 0;
    }, &names);
    for (const std::string& name : names) {
        void* h = dlopen(name.c_str(), RTLD_LAZY | RTLD_NOLOAD);  // a handle to what is loaded, never a new load
        if (!h) continue;
        // The first naming that has all three functions (a library exporting two namings is listed once).
        static const std::pair<const char*, const char*> namings[] = {
            {"", ""}, {"", "64_"}, {"scipy_", ""}, {"scipy_", "64_"}};  // prefix, suffix
        for (const auto& [prefix, suffix] : namings) {
            auto sym = [&](const char* f) { return dlsym(h, (std::string(prefix) + f + suffix).c_str()); };
            auto set = reinterpret_cast<SetCallback>(sym("openblas_set_threads_callback_function"));
            auto config = reinterpret_cast<const char* (*)()>(sym("openblas_get_config"));
            auto procs = reinterpret_cast<int (*)()>(sym("openblas_get_num_procs"));
            const char* max = config ? std::strstr(config(), "MAX_THREADS=") : nullptr;
            if (set && max && procs) {
                found.push_back({name, set, std::atoi(max + 12), procs()});
                break;
            }
        }
        dlclose(h);  // drops the reference NOLOAD took; the library stays loaded
    }
#endif
    return found;
}

}  // namespace

namespace bind {

void bind_blas_share(py::module_& m) {
    m.def("share_blas_threads", [](bool on) {
        py::list paths;
        int slots = 1 << 30;
        for (const OpenBLAS& lib : openblas_libraries()) {
            // Room for its own workers and a call's jobs (<= its threads) in separate slots; else left alone.
            if (on && 2 * lib.procs - 1 > lib.slots) continue;
            slots = std::min(slots, lib.slots);
            g_slots.store(slots);  // before any library can call run_jobs
            lib.set(on ? &run_jobs : nullptr);
            paths.append(lib.path);
        }
        return paths;
    }, py::arg("on"));
}

}  // namespace bind
}  // namespace fastnn
