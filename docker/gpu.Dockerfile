# GPU image for ablate-bench with every GPU extra: CUDA torch, FlashAttention-2 (flash-attn) and xformers.
# Not built in this repository's CI (no GPU runner or registry there); build it on a machine with Docker and the
# NVIDIA Container Toolkit:
#
#   docker build -f docker/gpu.Dockerfile -t ablate-gpu .
#   docker run --rm --gpus all -v "$PWD/runs:/work/runs" ablate-gpu ablate run --suite latency --out runs
#
# Versions: torch from the cu124 index, flash-attn and xformers built for it. Change TORCH_INDEX/TORCH_SPEC together
# with the base image's CUDA version. flash-attn compiles from source when no wheel matches (tens of minutes;
# MAX_JOBS bounds its memory use).
ARG CUDA_IMAGE=nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04
FROM ${CUDA_IMAGE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cu124
ARG TORCH_SPEC="torch==2.5.1"
ARG XFORMERS_SPEC="xformers==0.0.28.post3"
ARG FLASH_ATTN_SPEC="flash-attn>=2.6"
ARG MAX_JOBS=8

ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 MPLBACKEND=Agg

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev git ninja-build \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# CUDA torch first, so the extras build against it
RUN pip install --upgrade pip setuptools wheel packaging \
    && pip install "${TORCH_SPEC}" --index-url "${TORCH_INDEX}" \
    && pip install "${XFORMERS_SPEC}" --index-url "${TORCH_INDEX}" \
    && MAX_JOBS=${MAX_JOBS} pip install "${FLASH_ATTN_SPEC}" --no-build-isolation

WORKDIR /src
COPY . /src
# the GPU extras are installed above (pinned to the torch build); [dev] adds the tests
RUN pip install -e '.[dev]'

WORKDIR /work
CMD ["ablate", "env"]
