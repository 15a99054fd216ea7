"""Package layout that pyproject.toml alone cannot express: the top-level device_profiles/
folder ships inside the wheel as the package data `edgesdk.device_profiles`."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["runtimes*", "converters*", "edgesdk*"]) + ["edgesdk.device_profiles"],
    package_dir={"edgesdk.device_profiles": "device_profiles"},
    package_data={"edgesdk.device_profiles": ["*.yaml"]},
)
