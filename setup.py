"""bqnet_ros: ament_python package + the csrc C++ torch extension (``bqnet_model._C``)."""

from glob import glob
import os

from setuptools import find_packages, setup

package_name = "bqnet_ros"

ext_modules = []
cmdclass = {}
sources = sorted(glob("csrc/*.cpp"))
if sources and os.environ.get("BQNET_NO_EXT") != "1":
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    ext_modules.append(
        CppExtension(
            "bqnet_model._C",
            sources,
            extra_compile_args=["-O3", "-fopenmp", "-std=c++17"],
            extra_link_args=["-fopenmp"],
        )
    )
    cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=False)

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["bqnet_ros", "bqnet_ros.*", "bqnet_model", "bqnet_model.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*")),
        ("share/" + package_name + "/msg", glob("msg/*.msg")),
        ("share/" + package_name + "/models", glob("models/*.pth")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="bqnet_ros developers",
    maintainer_email="bqnet-ros@example.org",
    description="BQNet 3D referring expression segmentation for ROS 2 point-cloud maps",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "segment_node = bqnet_ros.segment_node:main",
            "play_scene = bqnet_ros.play_scene:main",
            "bqnet-synth = bqnet_model.data.synthetic:main",
            "bqnet-train = bqnet_model.train:main",
            "bqnet-segment = bqnet_model.cli:main",
        ],
    },
)
