// TensorFlow ops AlexnetLrn and AlexnetLrnGrad over `lrn_rows.h`, sharded over rows on the intra-op threads.
#include "lrn_rows.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/util/work_sharder.h"

namespace {
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;

#define ALEXNET_LRN_ATTRS                      \
  Attr("T: {float, bfloat16}")                 \
      .Attr("depth_radius: int >= 0")          \
      .Attr("bias: float")                     \
      .Attr("alpha: float")                    \
      .Attr("beta: float")                     \
      .Attr("relu: bool = false")              \
      .SetShapeFn(tensorflow::shape_inference::UnchangedShape)

REGISTER_OP("AlexnetLrn").Input("a: T").Output("b: T").ALEXNET_LRN_ATTRS;
REGISTER_OP("AlexnetLrnGrad").Input("a: T").Input("upstream: T").Output("da: T").ALEXNET_LRN_ATTRS;

template <typename T> struct Bits { using type = T; };
template <> struct Bits<Eigen::bfloat16> { using type = uint16_t; };
template <typename T> using BitsOf = typename Bits<T>::type;

template <typename T> const BitsOf<T>* Data(const Tensor& t) {
  return reinterpret_cast<const BitsOf<T>*>(t.flat<T>().data());
}
template <typename T> BitsOf<T>* Data(Tensor* t) { return reinterpret_cast<BitsOf<T>*>(t->flat<T>().data()); }

// AlexnetLrn (kGradient false: b from a) and AlexnetLrnGrad (true: da from a and the upstream gradient); with
// `relu`, `a` is a ReLU's input: the ops compute LRN(ReLU(a)) and its gradient with respect to a.
template <typename T, bool kGradient>
class LrnOp : public OpKernel {
 public:
  explicit LrnOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("depth_radius", &k_.radius));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bias", &k_.bias));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("alpha", &k_.alpha));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("beta", &k_.beta));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("relu", &k_.relu));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& a = ctx->input(0);
    OP_REQUIRES(ctx, a.dims() >= 1, tensorflow::errors::InvalidArgument("LRN needs a channel axis, got a scalar"));
    const Tensor& g = ctx->input(kGradient ? 1 : 0);
    OP_REQUIRES(ctx, a.shape() == g.shape(),
                tensorflow::errors::InvalidArgument("LRN gradient: the input's shape ", a.shape().DebugString(),
                                                    " differs from the upstream gradient's ", g.shape().DebugString()));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, a.shape(), &out));
    if (a.NumElements() == 0) return;
    const int64_t channels = a.dim_size(a.dims() - 1);
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(threads->num_threads, threads->workers, a.NumElements() / channels,
                      (kGradient ? 20 : 10) * channels, [&](int64_t begin, int64_t end) {
                        const int64_t at = begin * channels;
                        if constexpr (kGradient) {
                          alexnet_lrn::Backward(Data<T>(a) + at, Data<T>(g) + at, Data<T>(out) + at, end - begin,
                                                channels, k_);
                        } else {
                          alexnet_lrn::Forward(Data<T>(a) + at, Data<T>(out) + at, end - begin, channels, k_);
                        }
                      });
  }

 private:
  alexnet_lrn::Constants k_{};
};

#define ALEXNET_LRN_KERNELS(T)                                                                          \
  REGISTER_KERNEL_BUILDER(                                                                              \
      Name("AlexnetLrn").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), LrnOp<T, false>);       \
  REGISTER_KERNEL_BUILDER(                                                                              \
      Name("AlexnetLrnGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), LrnOp<T, true>);
ALEXNET_LRN_KERNELS(float)
ALEXNET_LRN_KERNELS(Eigen::bfloat16)

}  // namespace
