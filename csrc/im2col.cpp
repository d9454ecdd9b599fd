#include <stdexcept>
#include "fastnn.h"
namespace fastnn {
template <typename T> void im2col(const T*, T*, const ConvShape&) { throw std::runtime_error("im2col: not implemented yet"); }
template <typename T> void col2im(const T*, T*, const ConvShape&) { throw std::runtime_error("col2im: not implemented yet"); }
template void im2col<float>(const float*, float*, const ConvShape&);
template void im2col<double>(const double*, double*, const ConvShape&);
template void col2im<float>(const float*, float*, const ConvShape&);
template void col2im<double>(const double*, double*, const ConvShape&);
}
