"""Builds qwen3next_cuda._C by driving CMake (CMakeLists.txt holds every flag).

Environment:
  QWEN3NEXT_CUDA_ARCHS   ';'-separated architectures, default "80;90a;100" (e.g. "90a" on an H100)
  QWEN3NEXT_MAX_JOBS     parallel compile jobs (default: from cores and memory)
  QWEN3NEXT_NVCC_THREADS nvcc --threads per job (default 1)
  CUTLASS_DIR            a CUTLASS checkout instead of the nvidia-cutlass wheel's headers
  CUDA_HOME              the CUDA toolkit (default: /usr/local/cuda, then nvcc on PATH)
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
DEFAULT_ARCHS = "80;90a;100"


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


def _find_nvcc() -> str:
    """CUDA_HOME's nvcc, else /usr/local/cuda's, else the one on PATH."""
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [os.path.join(cuda_home, "bin", "nvcc")] if cuda_home else []
    candidates += ["/usr/local/cuda/bin/nvcc", shutil.which("nvcc") or ""]
    for nvcc in candidates:
        if nvcc and os.path.isfile(nvcc):
            return nvcc
    sys.exit("qwen3next_cuda: nvcc not found. Install the CUDA toolkit (12.8 or newer) and set CUDA_HOME.")


def _check_torch() -> None:
    try:
        import torch
    except ImportError:
        sys.exit("qwen3next_cuda: PyTorch is required to build; install a CUDA build of torch first.")
    if torch.version.cuda is None:
        sys.exit(f"qwen3next_cuda: torch {torch.__version__} is a CPU-only build; install a CUDA build of torch.")


def _default_jobs() -> int:
    cores = os.cpu_count() or 1
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = 8
    return max(1, min(cores, int(mem_gib // 4)))  # a CUTLASS translation unit can take ~4 GiB


def _tool(name: str) -> str:
    """cmake / ninja from their Python packages (the build requirements), else from PATH."""
    try:
        module = __import__(name)
        path = os.path.join(getattr(module, "CMAKE_BIN_DIR", None) or module.BIN_DIR, name)
        if os.path.isfile(path):
            return path
    except (ImportError, AttributeError):
        pass
    return shutil.which(name) or sys.exit(f"qwen3next_cuda: {name} not found; pip install {name}")


def _torch_arch_name(arch: str) -> str:
    """CMake's "90a" -> torch's "9.0a" (torch's CMake reads TORCH_CUDA_ARCH_LIST)."""
    digits, suffix = arch.rstrip("a"), "a" if arch.endswith("a") else ""
    return f"{digits[:-1]}.{digits[-1]}{suffix}"


def _fresh_build_dir(build_dir: Path) -> Path:
    """The CMake build folder, emptied when it was configured against another torch: pip's isolated
    build environments are new folders each time, and CMake's cache would point into a deleted one."""
    import torch

    stamp, torch_dir = build_dir / "torch_dir.txt", os.path.dirname(torch.__file__)
    if build_dir.exists() and (not stamp.exists() or stamp.read_text() != torch_dir):
        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(torch_dir)
    return build_dir


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        _check_torch()
        nvcc = _find_nvcc()
        archs = os.environ.get("QWEN3NEXT_CUDA_ARCHS", DEFAULT_ARCHS).replace(",", ";")
        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()  # .../qwen3next_cuda
        build_dir = _fresh_build_dir(Path(self.build_temp).resolve())
        torch_archs = ";".join(_torch_arch_name(a) for a in archs.split(";"))
        env = dict(os.environ, TORCH_CUDA_ARCH_LIST=torch_archs, CUDACXX=nvcc)
        configure = [
            _tool("cmake"), str(ROOT), "-G", "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_CUDA_COMPILER={nvcc}",
            f"-DCUDA_TOOLKIT_ROOT_DIR={Path(nvcc).resolve().parent.parent}",
            f"-DQWEN3NEXT_CUDA_ARCHS={archs}",
            f"-DQWEN3NEXT_NVCC_THREADS={os.environ.get('QWEN3NEXT_NVCC_THREADS', '1')}",
        ]
        jobs = os.environ.get("QWEN3NEXT_MAX_JOBS", str(_default_jobs()))
        subprocess.run(configure, cwd=build_dir, env=env, check=True)
        subprocess.run([_tool("cmake"), "--build", ".", "-j", jobs], cwd=build_dir, env=env, check=True)


setup(
    ext_modules=[CMakeExtension("qwen3next_cuda._C")],
    cmdclass={"build_ext": CMakeBuild},
)
