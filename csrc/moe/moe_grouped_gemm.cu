// Grouped GEMM for the MoE block's many-token path: for each group (expert) e,
//   out[rows of e] = a[rows of e] @ b[e]^T,   rows of e = [offsets[e - 1], offsets[e])  (offsets[-1] = 0),
// the offsets on the device (no host sync, capturable). CUTLASS 3 ptr-array grouped GEMM for sm90a: TMA loads,
// wgmma, warp-specialized cooperative persistent kernel over every group's tiles; a small setup kernel writes the
// groups' problem shapes, pointers and strides from the offsets first. Groups without rows have no tiles.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <initializer_list>

#include "common/checks.h"
#include "common/launch.h"
#include "ops.h"

#ifdef QWEN3NEXT_SM90A
#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/group_array_problem_shape.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#endif

namespace qwen3next {

#ifdef QWEN3NEXT_SM90A
namespace {

using namespace cute;
using Element = cutlass::bfloat16_t;
using ProblemShape = cutlass::gemm::GroupProblemShape<Shape<int, int, int>>;  // (M, N, K) per group
using LayoutA = cutlass::layout::RowMajor;  // a: [rows, K]
using LayoutB = cutlass::layout::ColumnMajor;  // b[e]: [N, K] row-major, i.e. K x N with K contiguous
using LayoutD = cutlass::layout::RowMajor;  // out: [rows, N]
constexpr int kAlignment = 8;  // elements per 16-byte TMA unit
using TileShape = Shape<_128, _128, _64>;
using ClusterShape = Shape<_1, _1, _1>;

using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
    cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, LayoutD*, kAlignment, Element, LayoutD*,
    kAlignment, cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative>::CollectiveOp;
using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Element, LayoutA*, kAlignment, Element, LayoutB*, kAlignment,
    float, TileShape, ClusterShape,
    cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
    cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative>::CollectiveOp;
using Kernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, Mainloop, Epilogue>;
using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
using Shape3 = ProblemShape::UnderlyingProblemShape;
using StrideA = Kernel::InternalStrideA;
using StrideB = Kernel::InternalStrideB;
using StrideD = Kernel::InternalStrideD;

// The per-group arguments CUTLASS reads on the device, one array each.
struct GroupArrays {
  Shape3* shapes;
  const Element** a;
  const Element** b;
  Element** d;
  StrideA* stride_a;
  StrideB* stride_b;
  StrideD* stride_d;
};

__global__ void setup_groups_kernel(GroupArrays g, const int32_t* offsets, int groups, const Element* a,
                                    const Element* b, Element* d, int n, int k) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= groups) return;
  const int begin = e == 0 ? 0 : offsets[e - 1], rows = offsets[e] - begin;
  g.shapes[e] = Shape3{rows, n, k};
  g.a[e] = a + int64_t(begin) * k;
  g.b[e] = b + int64_t(e) * n * k;
  g.d[e] = d + int64_t(begin) * n;
  g.stride_a[e] = make_stride(int64_t(k), Int<1>{}, Int<0>{});
  g.stride_b[e] = make_stride(int64_t(k), Int<1>{}, Int<0>{});
  g.stride_d[e] = make_stride(int64_t(n), Int<1>{}, Int<0>{});
}

// Carves `count` objects of T, 16-byte aligned, from a byte buffer.
template <typename T>
T* carve(uint8_t*& cursor, int64_t count) {
  T* p = reinterpret_cast<T*>(cursor);
  cursor += (count * int64_t(sizeof(T)) + 15) / 16 * 16;
  return p;
}

}  // namespace
#endif

void moe_grouped_gemm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets) {
  QN_CHECK_CUDA(a);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &a, &b, &offsets}) {
    TORCH_CHECK(t->device() == a.device(), "moe_grouped_gemm: all tensors must be on ", a.device(), ", got one on ",
                t->device());
    TORCH_CHECK(t->is_contiguous(), "moe_grouped_gemm: every tensor must be contiguous");
  }
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &a, &b}) {
    TORCH_CHECK(t->scalar_type() == at::kBFloat16, "moe_grouped_gemm: a, b and out must be bfloat16, got ",
                t->scalar_type());
    TORCH_CHECK(reinterpret_cast<uintptr_t>(t->data_ptr()) % 16 == 0,
                "moe_grouped_gemm: a, b and out must start on a 16-byte boundary");
  }
  TORCH_CHECK(offsets.scalar_type() == at::kInt, "moe_grouped_gemm: offsets must be int32, got ",
              offsets.scalar_type());
  TORCH_CHECK(a.dim() == 2 && b.dim() == 3 && b.size(2) == a.size(1),
              "moe_grouped_gemm: a must be [rows, K] and b [groups, N, K], got ", a.sizes(), " and ", b.sizes());
  const int64_t rows = a.size(0), k = a.size(1), groups = b.size(0), n = b.size(1);
  QN_CHECK_SHAPE(offsets, groups);
  QN_CHECK_SHAPE(out, rows, n);
  TORCH_CHECK(k % 8 == 0 && n % 8 == 0, "moe_grouped_gemm: K and N must be multiples of 8, got ", k, " and ", n);
  if (rows == 0 || groups == 0) return;
  const c10::cuda::OptionalCUDAGuard guard(a.device());
  int major = 0, minor = 0, multiprocessors = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, a.get_device());
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, a.get_device());
  cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, a.get_device());
  TORCH_CHECK(major == 9 && minor == 0, "moe_grouped_gemm: needs an sm90 GPU (its kernel uses wgmma), got sm", major,
              minor);
#ifdef QWEN3NEXT_SM90A
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // The group arrays in one buffer (stream-ordered through the caching allocator: capturable).
  const int64_t bytes = groups * int64_t(sizeof(Shape3) + 3 * sizeof(void*) + sizeof(StrideA) + sizeof(StrideB) +
                                         sizeof(StrideD)) + 7 * 16;
  const at::Tensor arrays = at::empty({bytes}, a.options().dtype(at::kByte));
  uint8_t* cursor = arrays.data_ptr<uint8_t>();
  GroupArrays g{carve<Shape3>(cursor, groups), carve<const Element*>(cursor, groups),
                carve<const Element*>(cursor, groups), carve<Element*>(cursor, groups), carve<StrideA>(cursor, groups),
                carve<StrideB>(cursor, groups), carve<StrideD>(cursor, groups)};
  setup_groups_kernel<<<(groups + 127) / 128, 128, 0, stream>>>(
      g, offsets.data_ptr<int32_t>(), static_cast<int>(groups), static_cast<const Element*>(a.data_ptr()),
      static_cast<const Element*>(b.data_ptr()), static_cast<Element*>(out.data_ptr()), static_cast<int>(n),
      static_cast<int>(k));
  QN_CHECK_LAUNCH();

  cutlass::KernelHardwareInfo hw_info;
  hw_info.device_id = a.get_device();
  hw_info.sm_count = multiprocessors;
  typename Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGrouped,
                                {static_cast<int>(groups), g.shapes, nullptr},
                                {g.a, g.stride_a, g.b, g.stride_b},
                                {{}, nullptr, nullptr, g.d, g.stride_d},
                                hw_info};
  args.epilogue.thread.alpha = 1.f;
  args.epilogue.thread.beta = 0.f;
  Gemm gemm;
  const at::Tensor workspace = at::empty({static_cast<int64_t>(Gemm::get_workspace_size(args))},
                                         a.options().dtype(at::kByte));
  TORCH_CHECK(gemm.can_implement(args) == cutlass::Status::kSuccess,
              "moe_grouped_gemm: CUTLASS cannot run these shapes (K ", k, ", N ", n, ")");
  TORCH_CHECK(gemm.initialize(args, workspace.data_ptr(), stream) == cutlass::Status::kSuccess,
              "moe_grouped_gemm: CUTLASS initialisation failed");
  TORCH_CHECK(gemm.run(stream) == cutlass::Status::kSuccess, "moe_grouped_gemm: CUTLASS launch failed");
  QN_CHECK_LAUNCH();
#else
  TORCH_CHECK(false, "moe_grouped_gemm: this build has no sm90a code (QWEN3NEXT_CUDA_ARCHS=", QWEN3NEXT_CUDA_ARCHS,
              ")");
#endif
}

}  // namespace qwen3next
