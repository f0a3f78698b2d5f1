"""bqnet_ros: ament_python package, the csrc C++ torch extension (``bqnet_model._C``) and, inside
a ROS 2 build, the interfaces package ``bqnet_ros_interfaces``.

Every path is taken relative to this file's real folder, not the working directory: colcon's
``--symlink-install`` runs ``setup.py develop`` from its build folder, where only setup.py,
setup.cfg, the Python packages and the data files are linked (``csrc/`` is not), and a glob
relative to the working directory silently built a package without its C++ extension.

The interfaces: colcon stops descending at this folder's package.xml, so the CMake project
``interfaces/bqnet_ros_interfaces`` can never be a colcon package of its own here. Instead,
``install`` and ``develop`` configure, build and install it with CMake into this package's
install prefix when a ROS 2 build environment is present (rosidl_default_generators on
AMENT_PREFIX_PATH or CMAKE_PREFIX_PATH); ``BQNET_BUILD_INTERFACES=0`` skips it (interfaces
built another way), ``=1`` makes a missing environment an error. Outside ROS (the venv's
``pip install -e .``) nothing is built: ``tools/build_msgs.sh`` does that.
"""

import os
import subprocess
import sys
from glob import glob

from setuptools import find_packages, setup
from setuptools.command.develop import develop
from setuptools.command.install import install

package_name = "bqnet_ros"
HERE = os.path.dirname(os.path.realpath(__file__))
INTERFACES = os.path.join(HERE, "interfaces", "bqnet_ros_interfaces")


def _files(pattern):
    """Sorted files under HERE; relative to the working directory when that is HERE (setuptools
    wants relative data paths there), absolute otherwise (colcon's build folder)."""
    found = sorted(p for p in glob(os.path.join(HERE, pattern)) if os.path.isfile(p))
    if os.path.realpath(os.getcwd()) == HERE:
        return [os.path.relpath(p, HERE) for p in found]
    return found


def _ros_build_environment():
    """Whether rosidl_default_generators can be found by CMake (a sourced ROS 2 or the wheels)."""
    roots = []
    for var in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH"):
        roots += [p for p in os.environ.get(var, "").split(os.pathsep) if p]
    return any(os.path.isdir(os.path.join(r, "share", "rosidl_default_generators")) for r in roots)


def build_interfaces(prefix, build_dir):
    """Configure, build and install interfaces/bqnet_ros_interfaces into ``prefix``."""
    mode = os.environ.get("BQNET_BUILD_INTERFACES", "auto")
    if mode == "0":
        print("bqnet_ros: BQNET_BUILD_INTERFACES=0, not building bqnet_ros_interfaces")
        return
    if not _ros_build_environment():
        if mode == "1":
            sys.exit("bqnet_ros: BQNET_BUILD_INTERFACES=1 but rosidl_default_generators is not on "
                     "AMENT_PREFIX_PATH / CMAKE_PREFIX_PATH: source ROS 2 first")
        print("bqnet_ros: no ROS 2 build environment, bqnet_ros_interfaces not built (tools/build_msgs.sh builds it)")
        return
    build_dir = os.path.abspath(build_dir)
    os.makedirs(build_dir, exist_ok=True)
    configure = ["cmake", "-S", INTERFACES, "-B", build_dir, f"-DCMAKE_INSTALL_PREFIX={os.path.abspath(prefix)}",
                 "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"]
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 2)
    for cmd in (configure, ["cmake", "--build", build_dir, "-j", jobs], ["cmake", "--install", build_dir]):
        print("bqnet_ros:", " ".join(cmd), flush=True)
        subprocess.check_call(cmd)


class InstallWithInterfaces(install):
    """``install`` (colcon build): the package, then the interfaces into the same prefix."""

    def run(self):
        super().run()
        build_base = self.get_finalized_command("build").build_base
        build_interfaces(self.install_data, os.path.join(build_base, "bqnet_ros_interfaces"))


class DevelopWithInterfaces(develop):
    """``develop`` (colcon build --symlink-install): the same, into the develop prefix."""

    def run(self):
        super().run()
        if not self.uninstall:
            install_cmd = self.get_finalized_command("install")
            build_interfaces(install_cmd.install_data, os.path.join(os.getcwd(), "build", "bqnet_ros_interfaces"))


def _cuda_extension():
    """``bqnet_model._C_cuda`` (csrc/cuda/: the GPU oversegmentation and farthest point sampling) when
    torch was built with CUDA, nvcc is found and ``BQNET_NO_CUDA`` is not "1"; None otherwise, so that
    a CPU-only build is the same as before. The nvcc flags keep the device's float arithmetic IEEE (no
    fused multiply-add, correctly rounded division and square root) so that it reproduces the host's bits."""
    if os.environ.get("BQNET_NO_CUDA") == "1":
        return None
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CUDAExtension

    if not torch.version.cuda or CUDA_HOME is None or not os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")):
        return None
    print(f"bqnet_ros: building bqnet_model._C_cuda with {os.path.join(CUDA_HOME, 'bin', 'nvcc')}", flush=True)
    return CUDAExtension(
        "bqnet_model._C_cuda",
        [os.path.join(HERE, "csrc", "cuda", name)
         for name in ("superpoints_cuda.cu", "fps_cuda.cu", "bindings_cuda.cpp")],
        include_dirs=[os.path.join(HERE, "csrc"), os.path.join(HERE, "csrc", "cuda")],
        extra_compile_args={
            "cxx": ["-O3", "-std=c++17"],
            "nvcc": ["-O3", "-std=c++17", "--extended-lambda", "--expt-relaxed-constexpr", "-fmad=false",
                     "--prec-div=true", "--prec-sqrt=true"],
        },
    )


ext_modules = []
cmdclass = {"install": InstallWithInterfaces, "develop": DevelopWithInterfaces}
sources = sorted(glob(os.path.join(HERE, "csrc", "*.cpp")))
if not sources:
    sys.exit(f"bqnet_ros: no C++ sources under {os.path.join(HERE, 'csrc')}: the checkout is incomplete")
if os.environ.get("BQNET_NO_EXT") != "1":
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    # BQNET_ONLY_CUDA=1 builds _C_cuda alone (tools/device_superpoints_cuda.sh builds the two in parallel).
    ext_modules += [] if os.environ.get("BQNET_ONLY_CUDA") == "1" else [
        CppExtension(
            "bqnet_model._C",
            sources,
            include_dirs=[os.path.join(HERE, "csrc")],
            extra_compile_args=["-O3", "-fopenmp", "-std=c++17"],
            extra_link_args=["-fopenmp"],
        )
    ]
    cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=False)
    cuda_ext = _cuda_extension()
    if cuda_ext is not None:
        ext_modules.append(cuda_ext)

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(where=HERE, include=["bqnet_ros", "bqnet_ros.*", "bqnet_model", "bqnet_model.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    data_files=[
        ("share/ament_index/resource_index/packages", _files("resource/" + package_name)),
        ("share/" + package_name, _files("package.xml") + _files("resource/rosdep.yaml")),
        ("share/" + package_name + "/launch", _files("launch/*.launch.py")),
        ("share/" + package_name + "/config", _files("config/*")),
        ("share/" + package_name + "/msg", _files("msg/*.msg")),
        ("share/" + package_name + "/models", _files("models/*.pth")),
    ],
    install_requires=["setuptools"],
    # bqnet_synth (the synthetic-room generator) is not in packages: a robot install does not need it;
    # it runs from the checkout (bqnet_synth/__init__.py and bqnet_model/synth_extra.py say how).
    zip_safe=False,
    maintainer="bqnet_ros developers",
    maintainer_email="bqnet-ros@example.org",
    description="BQNet 3D referring expression segmentation for ROS 2 point-cloud maps",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "segment_node = bqnet_ros.segment_node:main",
            "segment_lifecycle_node = bqnet_ros.lifecycle_node:main",
            "play_scene = bqnet_ros.play_scene:main",
            "bqnet-synth = bqnet_model.synth_extra:main",
            "bqnet-train = bqnet_model.train:main",
            "bqnet-segment = bqnet_model.cli:main",
        ],
    },
)
