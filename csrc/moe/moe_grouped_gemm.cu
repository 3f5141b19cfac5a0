// Grouped GEMM for the MoE block's many-token path: for each group (expert) e,
//   out[rows of e] = a[rows of e] @ b[e]^T,   rows of e = [offsets[e - 1], offsets[e])  (offsets[-1] = 0),
// the offsets on the device (no host sync, capturable). Two CUTLASS kernels, each after a small setup kernel that
// writes the groups' problem sizes, pointers and strides from the offsets:
//   sm90a     CUTLASS 3 ptr-array grouped GEMM: TMA loads, wgmma, a warp-specialized cooperative persistent kernel
//             over every group's tiles (needs an sm90 GPU and a build with 90a);
//   portable  CUTLASS 2 grouped GEMM on mma.sync (sm80 and later: A100, H100, B200), the problem sizes read on
//             the device by its persistent tile scheduler.
// Groups without rows have no tiles.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <initializer_list>

#include "common/checks.h"
#include "common/device.h"
#include "common/launch.h"
#include "common/workspace.h"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/thread/linear_combination.h"
#include "cutlass/gemm/device/gemm_grouped.h"
#include "cutlass/gemm/kernel/default_gemm_grouped.h"
#include "ops.h"

#ifdef QWEN3NEXT_SM90A
#include "cute/tensor.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/group_array_problem_shape.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#endif

namespace qwen3next {
namespace {

using Element = cutlass::bfloat16_t;
constexpr int kAlignment = 8;  // elements per 16-byte access

// Group e's rows of a and out.
struct GroupRows {
  int begin, count;
};
__device__ __forceinline__ GroupRows group_rows(const int32_t* offsets, int e) {
  const int begin = e == 0 ? 0 : offsets[e - 1];
  return {begin, offsets[e] - begin};
}

// ---- portable: CUTLASS 2 grouped GEMM, mma.sync (sm80+) ---------------------------------------------------

using PortableKernel = cutlass::gemm::kernel::DefaultGemmGrouped<
    Element, cutlass::layout::RowMajor, cutlass::ComplexTransform::kNone, kAlignment,  // a: [rows, K]
    Element, cutlass::layout::ColumnMajor, cutlass::ComplexTransform::kNone, kAlignment,  // b[e]: [N, K]
    Element, cutlass::layout::RowMajor,  // out: [rows, N]
    float, cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80, cutlass::gemm::GemmShape<128, 128, 32>,
    cutlass::gemm::GemmShape<64, 64, 32>, cutlass::gemm::GemmShape<16, 8, 16>,
    cutlass::epilogue::thread::LinearCombination<Element, kAlignment, float, float,
                                                 cutlass::epilogue::thread::ScaleType::OnlyAlphaScaling>,
    cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<>, 4,
    cutlass::gemm::kernel::GroupScheduleMode::kDeviceOnly>::GemmKernel;
using PortableGemm = cutlass::gemm::device::GemmGrouped<PortableKernel>;

struct PortableArrays {
  cutlass::gemm::GemmCoord* sizes;
  Element** a;
  Element** b;
  Element** d;
  int64_t* lda;
  int64_t* ldb;
  int64_t* ldd;
};

__global__ void setup_portable_kernel(PortableArrays g, const int32_t* offsets, int groups, Element* a, Element* b,
                                      Element* d, int n, int k) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= groups) return;
  const GroupRows rows = group_rows(offsets, e);
  g.sizes[e] = cutlass::gemm::GemmCoord(rows.count, n, k);
  g.a[e] = a + int64_t(rows.begin) * k;
  g.b[e] = b + int64_t(e) * n * k;
  g.d[e] = d + int64_t(rows.begin) * n;
  g.lda[e] = k;
  g.ldb[e] = k;
  g.ldd[e] = n;
}

void run_portable(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets,
                  cudaStream_t stream) {
  const int64_t groups = b.size(0), n = b.size(1), k = b.size(2);
  const int64_t bytes = carved_bytes<cutlass::gemm::GemmCoord>(groups) + 3 * carved_bytes<Element*>(groups) +
                        3 * carved_bytes<int64_t>(groups);
  const at::Tensor arrays = at::empty({bytes}, a.options().dtype(at::kByte));
  uint8_t* const base = arrays.data_ptr<uint8_t>();
  uint8_t* cursor = base;
  PortableArrays g{carve<cutlass::gemm::GemmCoord>(cursor, groups), carve<Element*>(cursor, groups),
                   carve<Element*>(cursor, groups), carve<Element*>(cursor, groups), carve<int64_t>(cursor, groups),
                   carve<int64_t>(cursor, groups), carve<int64_t>(cursor, groups)};
  TORCH_INTERNAL_ASSERT(cursor == base + bytes, "moe_grouped_gemm: the arrays' size and their carving disagree");
  setup_portable_kernel<<<(groups + 127) / 128, 128, 0, stream>>>(
      g, offsets.data_ptr<int32_t>(), static_cast<int>(groups), static_cast<Element*>(a.data_ptr()),
      static_cast<Element*>(b.data_ptr()), static_cast<Element*>(out.data_ptr()), static_cast<int>(n),
      static_cast<int>(k));
  QN_CHECK_LAUNCH();
  const int ctas = PortableGemm::sufficient(nullptr, static_cast<int>(groups));
  TORCH_CHECK(ctas > 0, "moe_grouped_gemm: the portable kernel fits no block on this GPU");
  // beta is not used (OnlyAlphaScaling): out is only written; C points at it for the arguments' sake.
  typename PortableGemm::Arguments args(g.sizes, static_cast<int>(groups), ctas, {1.f}, g.a, g.b, g.d, g.d, g.lda,
                                        g.ldb, g.ldd, g.ldd);
  PortableGemm gemm;
  TORCH_CHECK(gemm.initialize(args, nullptr, stream) == cutlass::Status::kSuccess,
              "moe_grouped_gemm: CUTLASS initialisation failed (portable kernel)");
  TORCH_CHECK(gemm.run(stream) == cutlass::Status::kSuccess, "moe_grouped_gemm: CUTLASS launch failed");
  QN_CHECK_LAUNCH();
}

// ---- sm90a: CUTLASS 3 ptr-array grouped GEMM, TMA + wgmma ------------------------------------------------

#ifdef QWEN3NEXT_SM90A
using namespace cute;
using ProblemShape = cutlass::gemm::GroupProblemShape<Shape<int, int, int>>;  // (M, N, K) per group
using LayoutA = cutlass::layout::RowMajor;  // a: [rows, K]
using LayoutB = cutlass::layout::ColumnMajor;  // b[e]: [N, K] row-major, i.e. K x N with K contiguous
using LayoutD = cutlass::layout::RowMajor;  // out: [rows, N]
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
using Sm90Kernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, Mainloop, Epilogue>;
using Sm90Gemm = cutlass::gemm::device::GemmUniversalAdapter<Sm90Kernel>;
using Shape3 = ProblemShape::UnderlyingProblemShape;
using StrideA = Sm90Kernel::InternalStrideA;
using StrideB = Sm90Kernel::InternalStrideB;
using StrideD = Sm90Kernel::InternalStrideD;

struct Sm90Arrays {
  Shape3* shapes;
  const Element** a;
  const Element** b;
  Element** d;
  StrideA* stride_a;
  StrideB* stride_b;
  StrideD* stride_d;
};

__global__ void setup_sm90_kernel(Sm90Arrays g, const int32_t* offsets, int groups, const Element* a,
                                  const Element* b, Element* d, int n, int k) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= groups) return;
  const GroupRows rows = group_rows(offsets, e);
  g.shapes[e] = Shape3{rows.count, n, k};
  g.a[e] = a + int64_t(rows.begin) * k;
  g.b[e] = b + int64_t(e) * n * k;
  g.d[e] = d + int64_t(rows.begin) * n;
  g.stride_a[e] = make_stride(int64_t(k), Int<1>{}, Int<0>{});
  g.stride_b[e] = make_stride(int64_t(k), Int<1>{}, Int<0>{});
  g.stride_d[e] = make_stride(int64_t(n), Int<1>{}, Int<0>{});
}

void run_sm90(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets,
              cudaStream_t stream) {
  const int64_t groups = b.size(0), n = b.size(1), k = b.size(2);
  const int64_t bytes = carved_bytes<Shape3>(groups) + 3 * carved_bytes<Element*>(groups) +
                        carved_bytes<StrideA>(groups) + carved_bytes<StrideB>(groups) + carved_bytes<StrideD>(groups);
  const at::Tensor arrays = at::empty({bytes}, a.options().dtype(at::kByte));
  uint8_t* const base = arrays.data_ptr<uint8_t>();
  uint8_t* cursor = base;
  Sm90Arrays g{carve<Shape3>(cursor, groups), carve<const Element*>(cursor, groups),
               carve<const Element*>(cursor, groups), carve<Element*>(cursor, groups), carve<StrideA>(cursor, groups),
               carve<StrideB>(cursor, groups), carve<StrideD>(cursor, groups)};
  TORCH_INTERNAL_ASSERT(cursor == base + bytes, "moe_grouped_gemm: the arrays' size and their carving disagree");
  setup_sm90_kernel<<<(groups + 127) / 128, 128, 0, stream>>>(
      g, offsets.data_ptr<int32_t>(), static_cast<int>(groups), static_cast<const Element*>(a.data_ptr()),
      static_cast<const Element*>(b.data_ptr()), static_cast<Element*>(out.data_ptr()), static_cast<int>(n),
      static_cast<int>(k));
  QN_CHECK_LAUNCH();

  cutlass::KernelHardwareInfo hw_info;
  hw_info.device_id = a.get_device();
  hw_info.sm_count = device_attribute<cudaDevAttrMultiProcessorCount>(a.get_device());
  typename Sm90Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGrouped,
                                    {static_cast<int>(groups), g.shapes, nullptr},
                                    {g.a, g.stride_a, g.b, g.stride_b},
                                    {{}, nullptr, nullptr, g.d, g.stride_d},
                                    hw_info};
  args.epilogue.thread.alpha = 1.f;
  args.epilogue.thread.beta = 0.f;
  Sm90Gemm gemm;
  const at::Tensor workspace = at::empty({static_cast<int64_t>(Sm90Gemm::get_workspace_size(args))},
                                         a.options().dtype(at::kByte));
  TORCH_CHECK(gemm.can_implement(args) == cutlass::Status::kSuccess,
              "moe_grouped_gemm: CUTLASS cannot run these shapes (K ", k, ", N ", n, ")");
  TORCH_CHECK(gemm.initialize(args, workspace.data_ptr(), stream) == cutlass::Status::kSuccess,
              "moe_grouped_gemm: CUTLASS initialisation failed");
  TORCH_CHECK(gemm.run(stream) == cutlass::Status::kSuccess, "moe_grouped_gemm: CUTLASS launch failed");
  QN_CHECK_LAUNCH();
}
#endif

}  // namespace

void moe_grouped_gemm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets,
                      bool portable) {
  QN_CHECK_CUDA(a);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &a, &b, &offsets}) {
    TORCH_CHECK(t->device() == a.device(), "moe_grouped_gemm: all tensors must be on ", a.device(), ", got one on ",
                t->device());
    TORCH_CHECK(t->is_contiguous(), "moe_grouped_gemm: every tensor must be contiguous");
  }
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &a, &b}) {
    TORCH_CHECK(t->scalar_type() == at::kBFloat16, "moe_grouped_gemm: a, b and out must be bfloat16, got ",
                t->scalar_type());
    TORCH_CHECK(vector_aligned(*t), "moe_grouped_gemm: a, b and out must start on a 16-byte boundary");
  }
  TORCH_CHECK(offsets.scalar_type() == at::kInt, "moe_grouped_gemm: offsets must be int32, got ",
              offsets.scalar_type());
  TORCH_CHECK(a.dim() == 2 && b.dim() == 3 && b.size(2) == a.size(1),
              "moe_grouped_gemm: a must be [rows, K] and b [groups, N, K], got ", a.sizes(), " and ", b.sizes());
  const int64_t rows = a.size(0), k = a.size(1), groups = b.size(0), n = b.size(1);
  QN_CHECK_SHAPE(offsets, groups);
  QN_CHECK_SHAPE(out, rows, n);
  TORCH_CHECK(k % kAlignment == 0 && n % kAlignment == 0, "moe_grouped_gemm: K and N must be multiples of ",
              kAlignment, ", got ", k, " and ", n);
  if (rows == 0 || groups == 0) return;
  const c10::cuda::OptionalCUDAGuard guard(a.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int major = device_attribute<cudaDevAttrComputeCapabilityMajor>(a.get_device());
  const int minor = device_attribute<cudaDevAttrComputeCapabilityMinor>(a.get_device());
  if (portable) {
    TORCH_CHECK(major >= 8, "moe_grouped_gemm: needs an sm80 or later GPU, got sm", major, minor);
    run_portable(out, a, b, offsets, stream);
    return;
  }
  TORCH_CHECK(major == 9 && minor == 0, "moe_grouped_gemm: the sm90a kernel needs an sm90 GPU, got sm", major, minor,
              " (pass portable=True)");
#ifdef QWEN3NEXT_SM90A
  run_sm90(out, a, b, offsets, stream);
#else
  TORCH_CHECK(false, "moe_grouped_gemm: this build has no sm90a code (QWEN3NEXT_CUDA_ARCHS=", QWEN3NEXT_CUDA_ARCHS,
              "; pass portable=True)");
#endif
}

}  // namespace qwen3next
