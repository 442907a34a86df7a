from setuptools import find_packages, setup

setup(
    name="minisnn",
    version="0.1.0",
    description="Reference implementation of Sub-bit Neural Networks (numpy, numba, Verilog)",
    packages=find_packages(include=["minisnn", "minisnn.*"]),
    python_requires=">=3.9",
    install_requires=["numpy>=1.22", "numba>=0.57", "pillow>=10.1"],
    extras_require={"test": ["pytest>=7", "hypothesis>=6"]},
)
