// Freed output buffers of the cpu backend, kept for the next output of the same size (fastnn._cpu allocates its
// outputs of 128 KiB and more here, through _C.empty: bind_buffer_cache.cpp). A fresh NumPy array of that size is new
// memory from the kernel each time (mmap above glibc's threshold, or heap memory trimmed back): its first write
// page-faults and zeroes every page, which was 42 % of the 7x7/2 im2col and made a 231 MB im2col output cost
// 47-304 ms between runs. A training loop asks for the same sizes every step, so an exact-size free list is enough.
// At most `limit` bytes are kept (FASTNN_CACHE_MB, default 512; 0 keeps nothing); fastnn.empty_cache() releases
// them.
#pragma once
#include <cstddef>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fastnn {

class BufferCache {
  public:
    static BufferCache& get();  // never destroyed: arrays freed during interpreter exit still return here
    // Blocks of 4 MiB and more are 2 MiB-aligned and advised as huge pages (as NumPy does): one fault per 2 MiB,
    // fewer TLB misses. Callers round sizes up to this (aligned_alloc wants a multiple of the alignment).
    static size_t alignment(size_t bytes) { return bytes >= (size_t(4) << 20) ? (size_t(2) << 20) : 4096; }
    void* take(size_t bytes);           // a cached block of exactly `bytes`, else a new one
    void give(void* p, size_t bytes);   // back to the cache, or freed when over the limit
    void clear();                       // frees every cached block
    std::pair<size_t, size_t> info();   // (cached bytes, limit)
    void set_limit(size_t bytes);

  private:
    BufferCache();
    std::mutex m_;
    std::unordered_map<size_t, std::vector<void*>> free_;  // exact (page-rounded) size -> blocks
    size_t cached_ = 0, limit_ = 0;
};

}  // namespace fastnn
