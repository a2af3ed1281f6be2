"""Installs the alexnet_tf library, the export and serving packages, and the `alexnet-tf` console script."""

from setuptools import find_packages, setup

setup(
    name="alexnet-tf",
    version="0.1.0",
    description="The 2012 two-tower AlexNet on TensorFlow 2 / Keras 3: train, export for TF Serving, serve.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["alexnet_tf", "alexnet_tf.*", "export", "export.*", "serving", "serving.*"]),
    package_data={"serving": ["*.config"], "alexnet_tf.network": ["kernels/*.cc", "kernels/*.h"]},
    install_requires=[
        # The full tensorflow package: tensorflow-serving-api depends on it, never also tensorflow-cpu.
        "tensorflow>=2.21,<2.22",
        "keras>=3.10,<4",
        "tensorflow-datasets>=4.9",
        "tensorflow-serving-api>=2.21,<2.22",
        "numpy>=1.26",
        # TensorBoard logs of training runs (tensorflow no longer pulls it in).
        "tensorboard>=2.15",
        # The gRPC health service of `alexnet-tf serve` (the standard grpc.health.v1 implementation).
        "grpcio-health-checking>=1.60",
        # YAML config files (`alexnet-tf train --config run.yaml`).
        "pyyaml>=6",
        # The paper's figures (`alexnet-tf figures`), drawn headless with the Agg backend.
        "matplotlib>=3.8",
    ],
    # pillow: awkward test images (CMYK...); prometheus-client: its parser reads our metrics as Prometheus would;
    # pytest-xdist: the suite on two workers (pyproject's addopts), ~40% less time on 2 cores
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "pillow>=10", "prometheus-client>=0.20"]},
    entry_points={"console_scripts": ["alexnet-tf=alexnet_tf.cli:main"]},
)
