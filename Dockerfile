# syntax=docker/dockerfile:1
# SAM3 photo-editing GPU worker. Runs the Runpod Serverless adapter by default, or pulls jobs from a
# Cloudflare Queue with WORKER_ADAPTER=queue_pull. The deployment guide is docs/DEPLOY.md.
#
#   docker build --platform linux/amd64 -t sam3-worker .
#       weights fetched at first start (set HF_TOKEN, and MODEL_CACHE_DIR=/runpod-volume/models on Runpod)
#   docker build --platform linux/amd64 --build-arg BAKE_WEIGHTS=1 --secret id=hf_token,env=HF_TOKEN -t sam3-worker .
#       weights baked into /models; the token is a build secret, in no layer and no build history

# The CUDA build is chosen by three build arguments that change together, e.g. for Blackwell GPUs:
#   --build-arg CUDA_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04 \
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130 --build-arg TORCH_CUDA=13.0
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04
FROM ${CUDA_IMAGE} AS base
# Ubuntu 24.04 ships Python 3.12. The torch wheels bring their own CUDA libraries and cuDNN; the
# base image adds the driver hook-up, and NVIDIA_REQUIRE_CUDA (cuda>=12.6 here) so a host whose
# driver is too old refuses to start the container instead of failing on the first job.
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.2
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
ARG TORCH_CUDA=12.6
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    MODEL_CACHE_DIR=/models \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=4194304 \
    PATH=/opt/venv/bin:$PATH
# glibc malloc: two arenas instead of one per thread, and blocks of 4 MB and more (image planes)
# mapped and returned to the system when freed: with 4 photos of 12 MP in flight, about 0.5 GB
# less peak host memory (bench/bench_e2e.py runs its workers with the same settings).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
# torch first, in its own layer: gigabytes that change only with the pinned versions.
RUN pip install --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
# requirements.txt pins the same torch/torchvision versions, which the CUDA builds above satisfy;
# the check fails the build if pip ever swapped them for another build.
COPY requirements.txt /app/requirements.txt
RUN pip install -r /app/requirements.txt \
 && python -c "import torch, torchvision, transformers, cv2, PIL, boto3, httpx, runpod; \
assert torch.version.cuda == '$TORCH_CUDA', f'torch {torch.__version__} is not the CUDA $TORCH_CUDA build'"

# Optional: SAM3 weights baked into /models with the worker's own fetch script. The HF token is
# mounted for this one RUN only; the download cache survives between builds, so a rebuild after a
# code change copies the weights again instead of downloading them again.
FROM base AS weights
ARG BAKE_WEIGHTS=0
WORKDIR /app/gpu-worker
COPY gpu-worker/ ./
RUN --mount=type=secret,id=hf_token --mount=type=cache,target=/root/.cache/sam3-weights \
    mkdir -p /models \
 && if [ "$BAKE_WEIGHTS" = "1" ]; then \
      [ -s /run/secrets/hf_token ] || { echo "BAKE_WEIGHTS=1 needs --secret id=hf_token,env=HF_TOKEN" >&2; exit 1; }; \
      HF_TOKEN="$(cat /run/secrets/hf_token)" MODEL_CACHE_DIR=/root/.cache/sam3-weights \
        python -m scripts.fetch_weights \
      && cp -a /root/.cache/sam3-weights/. /models/; \
    fi

FROM base
COPY --from=weights /models /models
WORKDIR /app/gpu-worker
COPY gpu-worker/ ./
# Fail fast (exit 1, one clear line) when CUDA or the weights are unusable, then hand PID 1 to the
# worker so it receives SIGTERM itself. WORKER_ADAPTER picks the adapter (default runpod).
CMD ["sh", "-c", "python -m scripts.check_startup && exec python -u main.py"]
