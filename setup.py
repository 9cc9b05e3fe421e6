"""The wheel build: everything is in pyproject.toml except the CPU kernel, compiled here for each x86-64 level.

On Linux x86-64, building the wheel (not an editable install) compiles ``kernels/mambaseg_kernels/cpu`` once per
level of ``ISA_LEVELS`` with the sources and flags of its JIT build, into ``mambaseg_kernels/cpu/prebuilt/``, and
writes ``prebuilt/build.json`` (the torch, Python and sources it was built against), so that installing the wheel
needs no compiler. The build fails, saying so, without a C++ compiler; ``MAMBASEG_PREBUILT_KERNELS=0`` builds a
wheel without the prebuilt kernel, which then compiles on first use as on other platforms.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CPU_DIR = "kernels/mambaseg_kernels/cpu"
PREBUILT_ENV = "MAMBASEG_PREBUILT_KERNELS"


def _kernel_build_module():
    """``mambaseg_kernels.cpu`` of this source tree, loaded alone (it imports only the standard library)."""
    path = Path(__file__).resolve().parent / CPU_DIR / "__init__.py"
    spec = importlib.util.spec_from_file_location("_mambaseg_cpu_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prebuilds() -> bool:
    if os.environ.get(PREBUILT_ENV, "1").strip().lower() in ("0", "false", "no"):
        return False
    return platform.system() == "Linux" and platform.machine().lower() in ("x86_64", "amd64")


def _extensions(cpu) -> list[Extension]:
    return [
        Extension(
            name=f"mambaseg_kernels.cpu.{cpu.PREBUILT_DIR}.{cpu.prebuilt_name(level)}",
            sources=[f"{CPU_DIR}/{source}" for source in cpu.SOURCES],
            depends=[f"{CPU_DIR}/{header}" for header in cpu.HEADERS],
            extra_compile_args=cpu.compiler_flags(level),
            extra_link_args=cpu.LDFLAGS,
            language="c++",
        )
        for level in cpu.ISA_LEVELS
    ]


try:  # a build requirement (pyproject.toml); without it only an editable install or a kernel-less wheel builds
    from torch.utils.cpp_extension import BuildExtension as _TorchBuildExt
except ImportError:
    _TorchBuildExt = None


class BuildPrebuiltKernels(_TorchBuildExt or build_ext):
    """torch's ``BuildExtension`` (torch's headers, libraries and C++ ABI flag), then ``prebuilt/build.json``."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.parallel = None  # torch writes one build.ninja per build_temp: levels built side by side would race

    def run(self) -> None:
        if not self.extensions or self.editable_mode:  # a checkout builds the kernel on first use, from its sources
            return
        compiler = os.environ.get("CXX", "c++").split()[0]
        if shutil.which(compiler) is None:
            raise SystemExit(
                f"mambaseg: building the wheel compiles the CPU selective-scan kernel, but the C++ compiler "
                f"{compiler!r} (CXX, default c++) was not found. Install g++ or clang, or set {PREBUILT_ENV}=0 to "
                "build a wheel whose kernel compiles on first use instead."
            )
        if _TorchBuildExt is None:
            raise SystemExit("mambaseg: building the wheel compiles the CPU kernel against torch: install torch first")
        from torch.utils.cpp_extension import include_paths, library_paths

        for ext in self.extensions:  # what torch's CppExtension adds, and a copy of the sources per level
            level_sources = Path(self.build_temp).resolve() / "sources" / ext.name.rpartition(".")[2]
            level_sources.mkdir(parents=True, exist_ok=True)
            for name in [*ext.sources, *ext.depends]:  # each level's object file in a folder of its own
                shutil.copy2(name, level_sources / Path(name).name)
            ext.sources = [str(level_sources / Path(name).name) for name in ext.sources]
            ext.include_dirs = [str(level_sources), *include_paths()]
            ext.library_dirs = library_paths()
            ext.libraries = ["c10", "torch", "torch_cpu", "torch_python"]
        super().run()
        cpu = _kernel_build_module()
        folder = Path(self.build_lib) / "mambaseg_kernels" / "cpu" / cpu.PREBUILT_DIR
        record = cpu.build_record(list(cpu.ISA_LEVELS))
        (folder / cpu.PREBUILT_RECORD).write_text(json.dumps(record, indent=2) + "\n")

    def build_extensions(self) -> None:
        # Python's own flags (-g -fwrapv -Wall ...) out: the JIT build has only its flags and -fPIC
        self.compiler.set_executable("compiler_so", [self.compiler.compiler_so[0], "-fPIC"])
        super().build_extensions()

    def get_outputs(self) -> list[str]:
        return [] if self.editable_mode else super().get_outputs()


if __name__ == "__main__":
    sys.dont_write_bytecode = True  # loading the kernel module alone must leave no __pycache__ in the sources
    setup(
        ext_modules=_extensions(_kernel_build_module()) if _prebuilds() else [],
        cmdclass={"build_ext": BuildPrebuiltKernels},
    )
