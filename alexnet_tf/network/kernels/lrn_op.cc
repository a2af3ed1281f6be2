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

class LrnKernel : public OpKernel {
 public:
  explicit LrnKernel(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("depth_radius", &k_.radius));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bias", &k_.bias));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("alpha", &k_.alpha));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("beta", &k_.beta));
  }

 protected:
  // Allocates the output like `a`; runs work(first_row, row_count) on shards of a's rows. False if nothing to do.
  template <typename Work>
  bool Run(OpKernelContext* ctx, const Tensor& a, Tensor** out, int64_t cost_per_element, Work work) {
    if (a.dims() < 1) {
      ctx->CtxFailure(__FILE__, __LINE__, tensorflow::errors::InvalidArgument("LRN needs a channel axis, got a scalar"));
      return false;
    }
    auto status = ctx->allocate_output(0, a.shape(), out);
    if (!status.ok()) { ctx->CtxFailure(__FILE__, __LINE__, status); return false; }
    const int64_t channels = a.dim_size(a.dims() - 1);
    if (a.NumElements() == 0) return true;
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(threads->num_threads, threads->workers, a.NumElements() / channels,
                      cost_per_element * channels, [&](int64_t begin, int64_t end) { work(begin, end - begin); });
    return true;
  }
  alexnet_lrn::Constants k_{};
};

template <typename T>
class LrnOp : public LrnKernel {
 public:
  using LrnKernel::LrnKernel;
  void Compute(OpKernelContext* ctx) override {
    const Tensor& a = ctx->input(0);
    Tensor* b = nullptr;
    const int channels = a.dims() ? a.dim_size(a.dims() - 1) : 0;
    Run(ctx, a, &b, 10, [&](int64_t first, int64_t rows) {
      alexnet_lrn::Forward(Data<T>(a) + first * channels, Data<T>(b) + first * channels, rows, channels, k_);
    });
  }
};

template <typename T>
class LrnGradOp : public LrnKernel {
 public:
  using LrnKernel::LrnKernel;
  void Compute(OpKernelContext* ctx) override {
    const Tensor& a = ctx->input(0);
    const Tensor& g = ctx->input(1);
    OP_REQUIRES(ctx, a.shape() == g.shape(),
                tensorflow::errors::InvalidArgument("LRN gradient: the input's shape ", a.shape().DebugString(),
                                                    " differs from the upstream gradient's ", g.shape().DebugString()));
    Tensor* da = nullptr;
    const int channels = a.dims() ? a.dim_size(a.dims() - 1) : 0;
    Run(ctx, a, &da, 20, [&](int64_t first, int64_t rows) {
      const int64_t at = first * channels;
      alexnet_lrn::Backward(Data<T>(a) + at, Data<T>(g) + at, Data<T>(da) + at, rows, channels, k_);
    });
  }
};

#define ALEXNET_LRN_KERNELS(T)                                                                     \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("AlexnetLrn").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), LrnOp<T>);         \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("AlexnetLrnGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), LrnGradOp<T>);
ALEXNET_LRN_KERNELS(float)
ALEXNET_LRN_KERNELS(Eigen::bfloat16)

}  // namespace
