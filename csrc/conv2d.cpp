#include <stdexcept>
#include "fastnn.h"
namespace fastnn {
template <typename T> void conv2d_fwd(const T*, const T*, const T*, T*, const ConvShape&) { throw std::runtime_error("conv2d: not implemented yet"); }
template <typename T> void conv2d_bwd(const T*, const T*, const T*, T*, T*, T*, const ConvShape&) { throw std::runtime_error("conv2d_backward: not implemented yet"); }
template void conv2d_fwd<float>(const float*, const float*, const float*, float*, const ConvShape&);
template void conv2d_fwd<double>(const double*, const double*, const double*, double*, const ConvShape&);
template void conv2d_bwd<float>(const float*, const float*, const float*, float*, float*, float*, const ConvShape&);
template void conv2d_bwd<double>(const double*, const double*, const double*, double*, double*, double*, const ConvShape&);
}
