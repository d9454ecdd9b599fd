#include <stdexcept>
#include "fastnn.h"
namespace fastnn {
template <typename T> void lstm_fwd(const T*, const T*, const T*, const T*, const T*, const T*, T*, T*, T*, const LstmShape&) { throw std::runtime_error("not implemented yet"); }
template <typename T> void lstm_bwd(const T*, const T*, const T*, const T*, const T*, const T*, const T*, const T*, const T*, const T*, const T*, T*, T*, T*, T*, T*, T*, const LstmShape&) { throw std::runtime_error("not implemented yet"); }
#define INST(T) \
template void lstm_fwd<T>(const T*, const T*, const T*, const T*, const T*, const T*, T*, T*, T*, const LstmShape&); \
template void lstm_bwd<T>(const T*, const T*, const T*, const T*, const T*, const T*, const T*, const T*, const T*, const T*, const T*, T*, T*, T*, T*, T*, T*, const LstmShape&);
INST(float) INST(double)
}
