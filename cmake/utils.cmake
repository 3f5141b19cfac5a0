# Helpers for CMakeLists.txt: architecture checks, torch and CUTLASS discovery.

function(qwen3next_check_archs archs)
  foreach(arch IN LISTS archs)
    if(NOT arch MATCHES "^(80|86|89|90|90a|100|100a|103|120)$")
      message(FATAL_ERROR "QWEN3NEXT_CUDA_ARCHS: unsupported architecture '${arch}' "
                          "(expected a ';'-separated list such as 80;90a;100)")
    endif()
  endforeach()
  # The wgmma kernels' bodies exist only in 90a code; an sm_90 image beside it would hold them empty.
  if("90" IN_LIST archs AND "90a" IN_LIST archs)
    message(FATAL_ERROR "QWEN3NEXT_CUDA_ARCHS: give 90a or 90, not both (90a runs on every sm90 GPU)")
  endif()
endfunction()

# find_package(Torch) through the running interpreter's torch; torch's own arch flags are dropped
# so that the target's CUDA_ARCHITECTURES alone decide what is built.
macro(qwen3next_find_torch)
  execute_process(
    COMMAND ${Python_EXECUTABLE} -c "import torch; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "PyTorch is not importable from ${Python_EXECUTABLE}")
  endif()
  list(APPEND CMAKE_PREFIX_PATH ${_torch_prefix})
  find_package(Torch REQUIRED)
  string(REGEX REPLACE "-gencode[= ][^ ]+" "" CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS}")
  # Link the few libraries the ops use by file, not torch's target graph: that graph also asks
  # for nvrtc and other toolkit libraries a minimal CUDA install does not have.
  set(QWEN3NEXT_TORCH_LIBRARIES CUDA::cudart)
  foreach(_lib c10 c10_cuda torch torch_cpu torch_cuda)
    find_library(_path_${_lib} ${_lib} PATHS "${TORCH_INSTALL_PREFIX}/lib" NO_DEFAULT_PATH REQUIRED)
    list(APPEND QWEN3NEXT_TORCH_LIBRARIES ${_path_${_lib}})
  endforeach()
endmacro()

# CUTLASS/CuTe headers: CUTLASS_DIR if given, else the nvidia-cutlass wheel of the interpreter.
function(qwen3next_find_cutlass out_var)
  if(DEFINED ENV{CUTLASS_DIR} AND NOT "$ENV{CUTLASS_DIR}" STREQUAL "")
    set(_dir "$ENV{CUTLASS_DIR}/include")
  else()
    execute_process(
      COMMAND ${Python_EXECUTABLE} -c
        "import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), 'source', 'include'))"
      OUTPUT_VARIABLE _dir OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc ERROR_QUIET)
  endif()
  if(NOT EXISTS "${_dir}/cute/tensor.hpp")
    message(FATAL_ERROR "CUTLASS/CuTe headers not found (looked in '${_dir}'). "
                        "Install the nvidia-cutlass wheel or set CUTLASS_DIR to a CUTLASS checkout.")
  endif()
  message(STATUS "CUTLASS headers: ${_dir}")
  set(${out_var} "${_dir}" PARENT_SCOPE)
endfunction()
