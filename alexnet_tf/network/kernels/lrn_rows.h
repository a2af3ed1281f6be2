// The paper's Local Response Normalization and its gradient over rows of channels (one row = one NHWC pixel),
// in float32 arithmetic, for float32 or bfloat16 tensors (bfloat16 passed as its 16 bits).
#pragma once
#include <cstdint>

namespace alexnet_lrn {

struct Constants {
  int radius;
  float bias, alpha, beta;
  bool relu;  // the input is a ReLU's input z: a = max(z, 0) (NaN kept), and the gradient is da/dz
};

// b = a * (bias + alpha * sum_{window} a^2)^-beta, row by row.
void Forward(const float* a, float* b, int64_t rows, int channels, const Constants& k);
void Forward(const uint16_t* a, uint16_t* b, int64_t rows, int channels, const Constants& k);

// da = g * d^-beta - 2 * alpha * beta * a * sum_{window} g * b / d, recomputing d from a; with `relu`, times
// (z > 0), as TensorFlow's ReluGrad.
void Backward(const float* a, const float* g, float* da, int64_t rows, int channels, const Constants& k);
void Backward(const uint16_t* a, const uint16_t* g, uint16_t* da, int64_t rows, int channels, const Constants& k);

}  // namespace alexnet_lrn
