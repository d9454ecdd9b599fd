// _C.empty (an output array from the BufferCache) and the cache's controls.
#include <algorithm>
#include <vector>

#include "bind.h"
#include "buffer_cache.h"

namespace fastnn {
namespace bind {

// An uninitialised C-contiguous array whose memory comes from (and returns to) the BufferCache.
static py::array cached_empty(const std::vector<py::ssize_t>& shape, const py::dtype& dt) {
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

void bind_buffer_cache(py::module_& m) {
    m.def("empty", &cached_empty, "uninitialised C-contiguous array from the buffer cache");
    m.def("empty_cache", [] { BufferCache::get().clear(); });
    m.def("buffer_cache_info", [] {
        auto [cached, limit] = BufferCache::get().info();
        py::dict d;
        d["cached_bytes"] = cached, d["limit_bytes"] = limit;
        return d;
    });
    m.def("set_buffer_cache_limit", [](size_t bytes) { BufferCache::get().set_limit(bytes); });
}

}  // namespace bind
}  // namespace fastnn
