// The rows of `lrn_rows.h`, processed in blocks laid out with `radius` zeros either side of every row, so that each
// step (squares, window sums, the powers) is one long vectorizable loop over the block and the window sums add
// the same 2r+1 terms in the same order as the Python forms' `shifted_slices_sum`.
#include "lrn_rows.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace alexnet_lrn {
namespace {

inline float ToFloat(float x) { return x; }
inline float ToFloat(uint16_t bits) {  // bfloat16 -> float32 is exact: the bits are the float's top half
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float x;
  std::memcpy(&x, &wide, sizeof x);
  return x;
}
inline void FromFloat(float x, float* out) { *out = x; }
inline void FromFloat(float x, uint16_t* out) {  // float32 -> bfloat16, rounding to nearest even, NaN kept a NaN
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  *out = static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? ((u >> 16) | 0x40u) : rounded);
}

enum class Power { kThreeQuarters, kHalf, kGeneral };

// d^-beta as the Python forms compute it: rsqrt(d) * sqrt(rsqrt(d)) for the paper's beta = 0.75.
template <Power P>
inline float NegativePower(float d, float beta) {
  if constexpr (P == Power::kThreeQuarters) {
    const float r = 1.0f / std::sqrt(d);
    return r * std::sqrt(r);
  } else if constexpr (P == Power::kHalf) {
    return 1.0f / std::sqrt(d);
  } else {
    return std::pow(d, -beta);
  }
}

// A block of rows in the padded layout: row i's channel c at i * stride + radius + c.
struct Block {
  int channels, radius, stride, capacity;
  std::vector<float> storage;
  Block(int channels, int radius, int buffers)
      : channels(channels), radius(radius), stride(channels + 2 * radius),
        capacity(std::max(1, 512 / (channels + 2 * radius))),  // 2 KiB a buffer: all of them stay in L1
        storage(static_cast<size_t>(buffers) * capacity * stride, 0.0f) {}
  float* buffer(int i) { return storage.data() + static_cast<size_t>(i) * capacity * stride; }

  template <typename T>
  void Load(const T* __restrict rows, int count, float* __restrict padded) const {
    for (int i = 0; i < count; ++i)
      for (int c = 0; c < channels; ++c) padded[i * stride + radius + c] = ToFloat(rows[i * channels + c]);
  }
  // max(z, 0) as TensorFlow's Relu computes it (a NaN stays a NaN), in place; the pads are 0 already.
  void Relu(float* __restrict padded, int count) const {
    for (int j = 0; j < count * stride; ++j) padded[j] = padded[j] < 0.0f ? 0.0f : padded[j];
  }
  template <typename T>
  void Store(const float* __restrict padded, int count, T* __restrict rows) const {
    for (int i = 0; i < count; ++i)
      for (int c = 0; c < channels; ++c) FromFloat(padded[i * stride + radius + c], &rows[i * channels + c]);
  }
  // out[j] = in[j - r] + ... + in[j + r] for every j that is a channel of a row (and for the pads between rows),
  // added left to right; for the paper's r = 2 in one pass, else one pass per term.
  void WindowSum(const float* __restrict in, int count, float* __restrict out) const {
    const int end = count * stride - radius;
    if (radius == 2) {
      for (int j = 2; j < end; ++j) out[j] = (((in[j - 2] + in[j - 1]) + in[j]) + in[j + 1]) + in[j + 2];
      return;
    }
    for (int j = radius; j < end; ++j) out[j] = in[j - radius];
    for (int shift = 1 - radius; shift <= radius; ++shift)
      for (int j = radius; j < end; ++j) out[j] += in[j + shift];
  }
  void ZeroPads(float* padded, int count) const {
    for (int i = 0; i < count; ++i) {
      std::fill_n(padded + i * stride, radius, 0.0f);
      std::fill_n(padded + i * stride + radius + channels, radius, 0.0f);
    }
  }
};

template <Power P, bool kRelu, typename T>
void ForwardRows(const T* a, T* b, int64_t rows, int channels, const Constants& k) {
  Block block(channels, k.radius, 3);
  float* __restrict x = block.buffer(0);
  float* __restrict squares = block.buffer(1);
  float* __restrict sums = block.buffer(2);
  const float bias = k.bias, alpha = k.alpha, beta = k.beta;
  for (int64_t first = 0; first < rows; first += block.capacity) {
    const int count = static_cast<int>(std::min<int64_t>(block.capacity, rows - first));
    const int size = count * block.stride;
    block.Load(a + first * channels, count, x);
    if constexpr (kRelu) block.Relu(x, count);
    for (int j = 0; j < size; ++j) squares[j] = x[j] * x[j];
    block.WindowSum(squares, count, sums);
    for (int j = k.radius; j < size - k.radius; ++j) sums[j] = x[j] * NegativePower<P>(bias + alpha * sums[j], beta);
    block.Store(sums, count, b + first * channels);
  }
}

template <Power P, bool kRelu, typename T>
void BackwardRows(const T* a, const T* g, T* da, int64_t rows, int channels, const Constants& k) {
  Block block(channels, k.radius, 5);
  float* __restrict x = block.buffer(0);
  float* __restrict up = block.buffer(1);
  float* __restrict work = block.buffer(2);  // squares, then g * b / d
  float* __restrict sums = block.buffer(3);  // window sums of the squares, then of g * b / d
  float* __restrict direct = block.buffer(4);  // g * d^-beta
  const float bias = k.bias, alpha = k.alpha, beta = k.beta, two_alpha_beta = 2.0f * k.alpha * k.beta;
  const int r = k.radius;
  for (int64_t first = 0; first < rows; first += block.capacity) {
    const int count = static_cast<int>(std::min<int64_t>(block.capacity, rows - first));
    const int size = count * block.stride;
    block.Load(a + first * channels, count, x);
    if constexpr (kRelu) block.Relu(x, count);
    block.Load(g + first * channels, count, up);
    for (int j = 0; j < size; ++j) work[j] = x[j] * x[j];
    block.WindowSum(work, count, sums);
    for (int j = r; j < size - r; ++j) {
      const float d = bias + alpha * sums[j];
      const float scale = NegativePower<P>(d, beta);
      direct[j] = up[j] * scale;
      work[j] = up[j] * ((x[j] * scale) / d);
    }
    block.ZeroPads(work, count);  // the pads' "g * b / d" must be 0 even where d is 0 there
    block.WindowSum(work, count, sums);
    for (int j = r; j < size - r; ++j) direct[j] -= two_alpha_beta * x[j] * sums[j];
    if constexpr (kRelu)  // x > 0 exactly where z > 0 (false for a NaN, as in ReluGrad)
      for (int j = r; j < size - r; ++j) direct[j] = x[j] > 0.0f ? direct[j] : 0.0f;
    block.Store(direct, count, da + first * channels);
  }
}

template <bool kRelu, typename T>
void ForwardAnyPower(const T* a, T* b, int64_t rows, int channels, const Constants& k) {
  if (k.beta == 0.75f) return ForwardRows<Power::kThreeQuarters, kRelu>(a, b, rows, channels, k);
  if (k.beta == 0.5f) return ForwardRows<Power::kHalf, kRelu>(a, b, rows, channels, k);
  ForwardRows<Power::kGeneral, kRelu>(a, b, rows, channels, k);
}

template <bool kRelu, typename T>
void BackwardAnyPower(const T* a, const T* g, T* da, int64_t rows, int channels, const Constants& k) {
  if (k.beta == 0.75f) return BackwardRows<Power::kThreeQuarters, kRelu>(a, g, da, rows, channels, k);
  if (k.beta == 0.5f) return BackwardRows<Power::kHalf, kRelu>(a, g, da, rows, channels, k);
  BackwardRows<Power::kGeneral, kRelu>(a, g, da, rows, channels, k);
}

template <typename T>
void ForwardAny(const T* a, T* b, int64_t rows, int channels, const Constants& k) {
  k.relu ? ForwardAnyPower<true>(a, b, rows, channels, k) : ForwardAnyPower<false>(a, b, rows, channels, k);
}

template <typename T>
void BackwardAny(const T* a, const T* g, T* da, int64_t rows, int channels, const Constants& k) {
  k.relu ? BackwardAnyPower<true>(a, g, da, rows, channels, k) : BackwardAnyPower<false>(a, g, da, rows, channels, k);
}

}  // namespace

void Forward(const float* a, float* b, int64_t rows, int channels, const Constants& k) {
  ForwardAny(a, b, rows, channels, k);
}
void Forward(const uint16_t* a, uint16_t* b, int64_t rows, int channels, const Constants& k) {
  ForwardAny(a, b, rows, channels, k);
}
void Backward(const float* a, const float* g, float* da, int64_t rows, int channels, const Constants& k) {
  BackwardAny(a, g, da, rows, channels, k);
}
void Backward(const uint16_t* a, const uint16_t* g, uint16_t* da, int64_t rows, int channels, const Constants& k) {
  BackwardAny(a, g, da, rows, channels, k);
}

}  // namespace alexnet_lrn
