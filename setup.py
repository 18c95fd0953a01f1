"""Thin CMake driver for the compiled core seg_xai_fast._core (pybind/cmake_example style).

Environment switches:
  SEG_XAI_CUDA=auto|on|off     CUDA kernels: auto builds them when nvcc is found (default);
                               on fails the build without nvcc; off builds the CPU kernels only.
  CMAKE_ARGS="-D..."           extra CMake arguments, e.g. -DCMAKE_CUDA_ARCHITECTURES=90
  CMAKE_BUILD_PARALLEL_LEVEL   parallel compile jobs (default 2)
  CMAKE_GENERATOR              CMake generator (default: Ninja when available)
  DEBUG=1                      Debug build (no optimisation, assertions on)

  pip install .                              # a normal install
  pip install --no-build-isolation -e .      # development (needs pybind11, cmake, ninja installed)
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str, sourcedir: Path = ROOT) -> None:
        super().__init__(name, sources=[])
        self.sourcedir = os.fspath(sourcedir)


def _cmake() -> str:
    try:  # the `cmake` PyPI package (a build requirement) ships its own binary
        import cmake

        return os.path.join(cmake.CMAKE_BIN_DIR, "cmake")
    except ImportError:
        found = shutil.which("cmake")
        if not found:
            sys.exit("seg_xai_fast: cmake not found; pip install cmake")
        return found


def _version() -> str:
    text = (ROOT / "seg_xai_fast" / "_version.py").read_text()  # the one version source
    return re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M).group(1)


def _source_digest() -> str:
    """The digest of csrc/ that the core reports and kernels/backend.py checks (one implementation:
    seg_xai_fast/_source_digest.py, loaded by path since the package is not built yet)."""
    spec = importlib.util.spec_from_file_location("_source_digest", ROOT / "seg_xai_fast" / "_source_digest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.source_digest(ROOT / "csrc")


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        extdir = (Path.cwd() / self.get_ext_fullpath(ext.name)).parent.resolve()
        debug = int(os.environ.get("DEBUG", 0)) if self.debug is None else self.debug
        cuda = os.environ.get("SEG_XAI_CUDA", "auto").strip().lower()
        if cuda not in ("auto", "on", "off"):
            sys.exit(f"seg_xai_fast: SEG_XAI_CUDA must be auto, on or off, got {cuda!r}")

        import pybind11

        cmake_args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}{os.sep}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY_RELEASE={extdir}{os.sep}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY_DEBUG={extdir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={'Debug' if debug else 'Release'}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DSEG_XAI_CUDA={cuda.upper()}",
            f"-DSEG_XAI_VERSION={_version()}",
            f"-DSEG_XAI_SOURCE_DIGEST={_source_digest()}",
        ]
        cmake_args += os.environ.get("CMAKE_ARGS", "").split()

        if not os.environ.get("CMAKE_GENERATOR"):
            try:
                import ninja

                ninja_exe = os.path.join(ninja.BIN_DIR, "ninja")
                cmake_args += ["-GNinja", f"-DCMAKE_MAKE_PROGRAM:FILEPATH={ninja_exe}"]
            except ImportError:
                if shutil.which("ninja"):
                    cmake_args += ["-GNinja"]

        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
        build_args = ["--config", "Debug" if debug else "Release", "--parallel", jobs]

        build_temp = Path(self.build_temp) / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        cmake = _cmake()
        print(f"seg_xai_fast: configuring with SEG_XAI_CUDA={cuda}, {jobs} parallel jobs", flush=True)
        subprocess.run([cmake, ext.sourcedir, *cmake_args], cwd=build_temp, check=True)
        subprocess.run([cmake, "--build", ".", *build_args], cwd=build_temp, check=True)


setup(
    ext_modules=[CMakeExtension("seg_xai_fast._core")],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
