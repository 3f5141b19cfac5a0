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
#include "moe/gate_up_layout.h"
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

// ---- sm90a, gate_up with SiLU·up in the epilogue ------------------------------------------------------------
// b's rows hold gate and up interleaved in blocks of kGateUpBlock ([g 0-31 | u 0-31 | g 32-63 | u 32-63 | ...]), so
// a 128-wide tile's accumulators pair gate column c with up column c + 32 in the same thread (a wgmma accumulator
// thread holds columns 2t, 2t + 1 of every 8-column group, and 32 columns are 4 groups). The epilogue writes
// silu(g) * u * scale[row] to the half-width output [rows, N / 2] straight from registers (no shared memory).
using GroupStride = StrideD;

struct SwigluEpilogue {
  using EpilogueSchedule = cutlass::epilogue::PtrArrayNoSmemWarpSpecialized;
  using DispatchPolicy = EpilogueSchedule;
  using ElementC = void;
  using ElementD = Element;
  using ElementOutput = Element;
  using ElementAccumulator = float;
  using ElementCompute = float;
  using ElementScalar = float;
  using InternalStrideC = GroupStride;
  using StrideC = GroupStride*;
  using InternalStrideD = GroupStride;
  using StrideD = GroupStride*;
  using GmemTiledCopyC = void;
  using GmemTiledCopyD = void;
  using ThreadEpilogueOp = void;  // no elementwise op object: the SwiGLU is below
  struct SharedStorage {};
  using TensorMapStorage = SharedStorage;

  struct Arguments {
    Element** ptr_out = nullptr;  // per group: its rows of the [rows, N / 2] output
    const float** ptr_scale = nullptr;  // per group: its rows' scales
    int64_t out_stride = 0;  // N / 2
  };
  using Params = Arguments;

  template <class ProblemShape>
  static constexpr Params to_underlying_arguments(ProblemShape const&, Arguments const& args, void*) {
    return args;
  }
  template <class ProblemShape>
  static size_t get_workspace_size(ProblemShape const&, Arguments const&, int) {
    return 0;
  }
  template <class ProblemShape>
  static cutlass::Status initialize_workspace(ProblemShape const&, Arguments const&, void*, cudaStream_t,
                                              cutlass::CudaHostAdapter* = nullptr) {
    return cutlass::Status::kSuccess;
  }
  template <class ProblemShape>
  static bool can_implement(ProblemShape const&, Arguments const& args) {
    return args.ptr_out != nullptr && args.ptr_scale != nullptr;
  }

  CUTLASS_HOST_DEVICE SwigluEpilogue(Params const& params) : params(params) {}
  CUTLASS_DEVICE bool is_source_needed() { return false; }

  template <class ProblemShapeMNKL, class BlockShapeMNK, class BlockCoordMNKL, class FrgEngine, class FrgLayout,
            class TiledMma, class ResidueMNK>
  CUTLASS_DEVICE void operator()(ProblemShapeMNKL problem_shape_mnkl, BlockShapeMNK blk_shape_MNK,
                                 BlockCoordMNKL blk_coord_mnkl, cute::Tensor<FrgEngine, FrgLayout> const& accumulators,
                                 TiledMma tiled_mma, ResidueMNK, int thread_idx, char*) {
    using namespace cute;
    // Per thread ((2 columns, 2 rows, N / 8 column groups), 1, 1); up is 4 groups after its gate.
    static_assert(decltype(size<0, 0>(FrgLayout{}))::value == 2 && decltype(size<0, 1>(FrgLayout{}))::value == 2 &&
                      decltype(size<0, 2>(FrgLayout{}))::value % 8 == 0 && decltype(size<1>(FrgLayout{}))::value == 1 &&
                      decltype(size<2>(FrgLayout{}))::value == 1 && decltype(stride<0, 2>(FrgLayout{}))::value == 4,
                  "a 64 x N wgmma accumulator per warpgroup");
    constexpr int kUpOffset = kGateUpBlock / 8 * 4;  // fragment index of the up value of a gate value
    const int M = get<0>(problem_shape_mnkl), N = get<1>(problem_shape_mnkl);
    const auto [m_coord, n_coord, k_coord, l_coord] = blk_coord_mnkl;
    Element* out = params.ptr_out[l_coord];
    const float* scale = params.ptr_scale[l_coord];
    // (row, column) of each accumulator within the group's [M, N] product
    Tensor coord = local_tile(make_identity_tensor(make_shape(M, N)),
                              take<0, 2>(blk_shape_MNK), make_coord(m_coord, n_coord));
    Tensor thread_coord = tiled_mma.get_thread_slice(thread_idx).partition_C(coord);
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < size(accumulators); i += 2) {
      const int group = i / 4;  // the 8-column group of value i
      if (group % (2 * kGateUpBlock / 8) >= kGateUpBlock / 8) continue;  // an up column: taken with its gate
      const auto [row, column] = thread_coord(i);
      if (row >= M || column >= N) continue;  // past the group's rows, or past N in a last partial tile
      const float s = scale[row];
      const int out_column = column / (2 * kGateUpBlock) * kGateUpBlock + column % (2 * kGateUpBlock);
      float value[2];
      CUTLASS_PRAGMA_UNROLL
      for (int c = 0; c < 2; ++c) {
        const float g = accumulators(i + c), u = accumulators(i + c + kUpOffset);
        value[c] = g / (1.f + __expf(-g)) * u * s;
      }
      *reinterpret_cast<__nv_bfloat162*>(out + int64_t(row) * params.out_stride + out_column) =
          __floats2bfloat162_rn(value[0], value[1]);
    }
  }

 private:
  Params params;
};

using SwigluEpilogueOp = cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter<SwigluEpilogue>;
using SwigluMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Element, LayoutA*, kAlignment, Element, LayoutB*, kAlignment,
    float, TileShape, ClusterShape, cutlass::gemm::collective::StageCountAuto,
    cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative>::CollectiveOp;
using Sm90SwigluKernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, SwigluMainloop, SwigluEpilogueOp>;
using Sm90SwigluGemm = cutlass::gemm::device::GemmUniversalAdapter<Sm90SwigluKernel>;

struct Sm90Arrays {
  Shape3* shapes;
  const Element** a;
  const Element** b;
  Element** d;
  StrideA* stride_a;
  StrideB* stride_b;
  StrideD* stride_d;
  const float** scale;  // the SwiGLU kernel's: each group's rows' scales
};

// Group e's problem, pointers and strides; out rows are out_width wide (N, or N / 2 for the SwiGLU kernel).
__global__ void setup_sm90_kernel(Sm90Arrays g, const int32_t* offsets, int groups, const Element* a,
                                  const Element* b, Element* d, int n, int k, int out_width, const float* scale) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= groups) return;
  const GroupRows rows = group_rows(offsets, e);
  g.shapes[e] = Shape3{rows.count, n, k};
  g.a[e] = a + int64_t(rows.begin) * k;
  g.b[e] = b + int64_t(e) * n * k;
  g.d[e] = d + int64_t(rows.begin) * out_width;
  g.stride_a[e] = make_stride(int64_t(k), Int<1>{}, Int<0>{});
  g.stride_b[e] = make_stride(int64_t(k), Int<1>{}, Int<0>{});
  g.stride_d[e] = make_stride(int64_t(out_width), Int<1>{}, Int<0>{});
  if (scale != nullptr) g.scale[e] = scale + rows.begin;
}

// The per-group arrays in one byte buffer, filled on the device from the offsets.
Sm90Arrays setup_sm90(at::Tensor& storage, at::Tensor& out, const at::Tensor& a, const at::Tensor& b,
                      const at::Tensor& offsets, const float* scale, cudaStream_t stream) {
  const int64_t groups = b.size(0), n = b.size(1), k = b.size(2);
  const int64_t bytes = carved_bytes<Shape3>(groups) + 3 * carved_bytes<Element*>(groups) +
                        carved_bytes<StrideA>(groups) + carved_bytes<StrideB>(groups) + carved_bytes<StrideD>(groups) +
                        carved_bytes<const float*>(groups);
  storage = at::empty({bytes}, a.options().dtype(at::kByte));
  uint8_t* const base = storage.data_ptr<uint8_t>();
  uint8_t* cursor = base;
  Sm90Arrays g{carve<Shape3>(cursor, groups), carve<const Element*>(cursor, groups),
               carve<const Element*>(cursor, groups), carve<Element*>(cursor, groups), carve<StrideA>(cursor, groups),
               carve<StrideB>(cursor, groups), carve<StrideD>(cursor, groups), carve<const float*>(cursor, groups)};
  TORCH_INTERNAL_ASSERT(cursor == base + bytes, "moe_grouped_gemm: the arrays' size and their carving disagree");
  setup_sm90_kernel<<<(groups + 127) / 128, 128, 0, stream>>>(
      g, offsets.data_ptr<int32_t>(), static_cast<int>(groups), static_cast<const Element*>(a.data_ptr()),
      static_cast<const Element*>(b.data_ptr()), static_cast<Element*>(out.data_ptr()), static_cast<int>(n),
      static_cast<int>(k), static_cast<int>(out.size(1)), scale);
  QN_CHECK_LAUNCH();
  return g;
}

// Runs `Gemm` with these arguments on `stream` (k and n name the shape in errors).
template <class Gemm>
void run_gemm(typename Gemm::Arguments& args, const at::Tensor& like, int64_t k, int64_t n, cudaStream_t stream) {
  Gemm gemm;
  const at::Tensor workspace = at::empty({static_cast<int64_t>(Gemm::get_workspace_size(args))},
                                         like.options().dtype(at::kByte));
  TORCH_CHECK(gemm.can_implement(args) == cutlass::Status::kSuccess,
              "moe_grouped_gemm: CUTLASS cannot run these shapes (K ", k, ", N ", n, ")");
  TORCH_CHECK(gemm.initialize(args, workspace.data_ptr(), stream) == cutlass::Status::kSuccess,
              "moe_grouped_gemm: CUTLASS initialisation failed");
  TORCH_CHECK(gemm.run(stream) == cutlass::Status::kSuccess, "moe_grouped_gemm: CUTLASS launch failed");
  QN_CHECK_LAUNCH();
}

cutlass::KernelHardwareInfo hardware(const at::Tensor& a) {
  cutlass::KernelHardwareInfo hw_info;
  hw_info.device_id = a.get_device();
  hw_info.sm_count = device_attribute<cudaDevAttrMultiProcessorCount>(a.get_device());
  return hw_info;
}

void run_sm90(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets,
              cudaStream_t stream) {
  at::Tensor storage;
  const Sm90Arrays g = setup_sm90(storage, out, a, b, offsets, nullptr, stream);
  typename Sm90Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGrouped,
                                    {static_cast<int>(b.size(0)), g.shapes, nullptr},
                                    {g.a, g.stride_a, g.b, g.stride_b},
                                    {{}, nullptr, nullptr, g.d, g.stride_d},
                                    hardware(a)};
  args.epilogue.thread.alpha = 1.f;
  args.epilogue.thread.beta = 0.f;
  run_gemm<Sm90Gemm>(args, a, b.size(2), b.size(1), stream);
}

void run_sm90_swiglu(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets,
                     const at::Tensor& scale, cudaStream_t stream) {
  at::Tensor storage;
  const Sm90Arrays g = setup_sm90(storage, out, a, b, offsets, scale.data_ptr<float>(), stream);
  typename Sm90SwigluGemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGrouped,
                                          {static_cast<int>(b.size(0)), g.shapes, nullptr},
                                          {g.a, g.stride_a, g.b, g.stride_b},
                                          {g.d, g.scale, out.size(1)},
                                          hardware(a)};
  run_gemm<Sm90SwigluGemm>(args, a, b.size(2), b.size(1), stream);
}
#endif

}  // namespace

namespace {

// The checks both ops share: devices, layouts, dtypes and shapes (out [rows, out_width]).
void check_grouped_gemm(const char* op, const at::Tensor& out, const at::Tensor& a, const at::Tensor& b,
                        const at::Tensor& offsets, int64_t out_width) {
  QN_CHECK_CUDA(a);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &a, &b, &offsets}) {
    TORCH_CHECK(t->device() == a.device(), op, ": all tensors must be on ", a.device(), ", got one on ", t->device());
    TORCH_CHECK(t->is_contiguous(), op, ": every tensor must be contiguous");
  }
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &a, &b}) {
    TORCH_CHECK(t->scalar_type() == at::kBFloat16, op, ": a, b and out must be bfloat16, got ", t->scalar_type());
    TORCH_CHECK(vector_aligned(*t), op, ": a, b and out must start on a 16-byte boundary");
  }
  TORCH_CHECK(offsets.scalar_type() == at::kInt, op, ": offsets must be int32, got ", offsets.scalar_type());
  TORCH_CHECK(a.dim() == 2 && b.dim() == 3 && b.size(2) == a.size(1), op,
              ": a must be [rows, K] and b [groups, N, K], got ", a.sizes(), " and ", b.sizes());
  const int64_t k = a.size(1), n = b.size(1);
  QN_CHECK_SHAPE(offsets, b.size(0));
  QN_CHECK_SHAPE(out, a.size(0), out_width);
  TORCH_CHECK(k % kAlignment == 0 && n % kAlignment == 0, op, ": K and N must be multiples of ", kAlignment, ", got ",
              k, " and ", n);
}

// An sm90 GPU and a build with 90a, or a clear error naming what is missing.
void check_sm90a(const char* op, const at::Tensor& a, const char* otherwise) {
  const int major = device_attribute<cudaDevAttrComputeCapabilityMajor>(a.get_device());
  const int minor = device_attribute<cudaDevAttrComputeCapabilityMinor>(a.get_device());
  TORCH_CHECK(major == 9 && minor == 0, op, ": the sm90a kernel needs an sm90 GPU, got sm", major, minor, otherwise);
#ifndef QWEN3NEXT_SM90A
  TORCH_CHECK(false, op, ": this build has no sm90a code (QWEN3NEXT_CUDA_ARCHS=", QWEN3NEXT_CUDA_ARCHS, ")", otherwise);
#endif
}

}  // namespace

void moe_grouped_gemm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets,
                      bool portable) {
  check_grouped_gemm("moe_grouped_gemm", out, a, b, offsets, b.dim() == 3 ? b.size(1) : 0);
  if (a.size(0) == 0 || b.size(0) == 0) return;
  const c10::cuda::OptionalCUDAGuard guard(a.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (portable) {
    const int major = device_attribute<cudaDevAttrComputeCapabilityMajor>(a.get_device());
    TORCH_CHECK(major >= 8, "moe_grouped_gemm: needs an sm80 or later GPU, got sm", major,
                device_attribute<cudaDevAttrComputeCapabilityMinor>(a.get_device()));
    run_portable(out, a, b, offsets, stream);
    return;
  }
  check_sm90a("moe_grouped_gemm", a, " (pass portable=True)");
#ifdef QWEN3NEXT_SM90A
  run_sm90(out, a, b, offsets, stream);
#endif
}

void moe_grouped_gemm_swiglu(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets,
                             const at::Tensor& scale) {
  const char* op = "moe_grouped_gemm_swiglu";
  check_grouped_gemm(op, out, a, b, offsets, b.dim() == 3 ? b.size(1) / 2 : 0);
  TORCH_CHECK(b.size(1) % (2 * kGateUpBlock) == 0, op, ": b's rows (gate and up interleaved in blocks of ",
              kGateUpBlock, ") must be a multiple of ", 2 * kGateUpBlock, ", got ", b.size(1));
  TORCH_CHECK(scale.device() == a.device() && scale.scalar_type() == at::kFloat && scale.is_contiguous(), op,
              ": scale must be a contiguous float32 tensor on ", a.device());
  QN_CHECK_SHAPE(scale, a.size(0));
  if (a.size(0) == 0 || b.size(0) == 0) return;
  check_sm90a(op, a, "");
  const c10::cuda::OptionalCUDAGuard guard(a.device());
#ifdef QWEN3NEXT_SM90A
  run_sm90_swiglu(out, a, b, offsets, scale, c10::cuda::getCurrentCUDAStream());
#endif
}

}  // namespace qwen3next
