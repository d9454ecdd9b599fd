// The buffer cache of fastnn._cpu's outputs (buffer_cache.h).
#include "buffer_cache.h"

#include <cstdlib>
#include <new>

#include <sys/mman.h>

namespace fastnn {

BufferCache& BufferCache::get() {
    static BufferCache* c = new BufferCache;
    return *c;
}

BufferCache::BufferCache() {
    const char* e = std::getenv("FASTNN_CACHE_MB");
    limit_ = (e && *e ? std::strtoull(e, nullptr, 10) : 512) << 20;
}

void* BufferCache::take(size_t bytes) {
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

void BufferCache::give(void* p, size_t bytes) {
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

void BufferCache::clear() {
    std::unordered_map<size_t, std::vector<void*>> drop;
    {
        std::lock_guard<std::mutex> lock(m_);
        drop.swap(free_);
        cached_ = 0;
    }
    for (auto& kv : drop)
        for (void* p : kv.second) std::free(p);
}

std::pair<size_t, size_t> BufferCache::info() {
    std::lock_guard<std::mutex> lock(m_);
    return {cached_, limit_};
}

void BufferCache::set_limit(size_t bytes) {
    { std::lock_guard<std::mutex> lock(m_); limit_ = bytes; }
    if (info().first > bytes) clear();
}

}  // namespace fastnn
