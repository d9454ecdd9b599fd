#include <stdexcept>
#include "fastnn.h"
namespace fastnn {
template <typename T> void max_pool2d_fwd(const T*, T*, i64*, const PoolShape&) { throw std::runtime_error("not implemented yet"); }
template <typename T> void max_pool2d_bwd(const T*, const i64*, T*, const PoolShape&) { throw std::runtime_error("not implemented yet"); }
template <typename T> void avg_pool2d_fwd(const T*, T*, const PoolShape&, bool) { throw std::runtime_error("not implemented yet"); }
template <typename T> void avg_pool2d_bwd(const T*, T*, const PoolShape&, bool) { throw std::runtime_error("not implemented yet"); }
#define INST(T) \
template void max_pool2d_fwd<T>(const T*, T*, i64*, const PoolShape&); \
template void max_pool2d_bwd<T>(const T*, const i64*, T*, const PoolShape&); \
template void avg_pool2d_fwd<T>(const T*, T*, const PoolShape&, bool); \
template void avg_pool2d_bwd<T>(const T*, T*, const PoolShape&, bool);
INST(float) INST(double)
}
