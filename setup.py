"""Packaging for bertkit."""
import os

from setuptools import find_packages, setup


here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "README.md"), encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="bertkit",
    version="0.1.0",
    description="BERT fine-tuning in the bert4keras style, on Keras 3",
    long_description=long_description,
    long_description_content_type="text/markdown",
    packages=find_packages(include=["bertkit", "bertkit.*"]),
    python_requires=">=3.10",
    install_requires=["tensorflow>=2.16", "numpy", "h5py", "tqdm", "safetensors"],
    extras_require={
        # Pictures of a run and TensorBoard to look at --log-dir.
        "plots": ["matplotlib", "tensorboard"],
        # Serving files: ONNX (tf2onnx, run by onnxruntime) and OpenVINO's IR.
        "export": ["tf2onnx>=1.16", "onnx", "onnxruntime>=1.18", "openvino>=2024.0"],
        # pytest-xdist: the README's test command runs the suite on two processes.
        "test": ["pytest", "pytest-xdist", "hypothesis", "matplotlib", "tensorboard",
                 "tf2onnx>=1.16", "onnx", "onnxruntime>=1.18", "openvino>=2024.0"],
    },
    license="Apache-2.0",
)
