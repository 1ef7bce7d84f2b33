#!/usr/bin/env bash
# The GPU checks and measurements, step by step, on a machine with a GPU.
#
# The device image has torch, torchvision, numpy, Pillow, OpenCV, httpx and pytest, but no
# network and not every package the worker needs. So, once, on the development machine (it
# fills .whl/ at the repository root, which git ignores, with the missing wheels for the
# image's Python 3.12, pinned to the versions installed here):
#
#     bash gpu-worker/bench/gpu_run.sh prepare
#
# then one device `run` per step, each well under the 10-minute limit, carrying ".whl":
#
#     bash gpu-worker/bench/gpu_run.sh tests      # the suite on CUDA (the runpod-dependent file left out)
#     bash gpu-worker/bench/gpu_run.sh e2e        # 16 x 12 MP: pipeline, naive (4 photos), model only
#     bash gpu-worker/bench/gpu_run.sh e2e-keep   # the same with masks (3 detections kept per prompt)
#     bash gpu-worker/bench/gpu_run.sh segment    # bench_segment.py --full
#     bash gpu-worker/bench/gpu_run.sh apply      # bench_apply.py --backend torch at 12 MP
#     bash gpu-worker/bench/gpu_run.sh edits      # edits on the device: parity on CUDA, one 12 MP
#                                                 # photo's edits (numpy and torch editors, GPU
#                                                 # memory per photo, torch calls of the edits
#                                                 # and of the mask fit)
#     bash gpu-worker/bench/gpu_run.sh maskfit    # the mask fit on the device: parity tests on CUDA,
#                                                 # bench.maskfit_device_parity (quality, 12 MP cost)
#     bash gpu-worker/bench/gpu_run.sh e2e-edits  # 16 x 12 MP, 3 detections kept per prompt: the
#                                                 # pipeline with torch edits next to model only
#
# Results are written to bench/results/ there and copied to $OUT, which the device tool brings
# back; copy them into bench/results/ here.
set -euo pipefail
cd "$(dirname "$0")/.."  # gpu-worker/
REPO=$(cd .. && pwd)

# What the image lacks; versions pinned to the development machine's.
CARRIED=(transformers pydantic pydantic-core pydantic-settings python-dotenv annotated-types
         typing-inspection boto3 botocore s3transfer jmespath moto responses xmltodict cryptography
         cffi pycparser flask flask-cors blinker itsdangerous pytest-asyncio respx isal)

install() {
    if [ ! -d /tmp/site ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$REPO"/.whl/*.whl
    fi
    export PYTHONPATH=/tmp/site
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
}

keep() {  # copy result files to $OUT
    mkdir -p "${OUT:-/tmp/out}"
    cp "$@" "${OUT:-/tmp/out}/"
}

case "${1:-}" in
    prepare)
        mkdir -p "$REPO/.whl"
        for name in "${CARRIED[@]}"; do
            version=$(python -c "import importlib.metadata as m; print(m.version('$name'))")
            python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
                --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
                --platform manylinux_2_34_x86_64 --platform any -d "$REPO/.whl" "$name==$version"
        done
        du -sh "$REPO/.whl"
        ;;
    tests)
        install
        python3 -m pytest -q -p no:cacheprovider --ignore=tests/test_s3_and_handler.py 2>&1 | tail -15
        ;;
    e2e)
        install
        python3 -m bench.bench_e2e --model full --photos 16 --naive-photos 4
        keep bench/results/e2e_full_*.md
        ;;
    e2e-keep)
        install
        python3 -m bench.bench_e2e --model full --photos 16 --variants pipeline,model --keep-top 3
        keep bench/results/e2e_full_*_keep3.md
        ;;
    segment)
        install
        python3 -m bench.bench_segment --full
        keep bench/results/segment_*.md
        ;;
    apply)
        install
        python3 -m bench.bench_apply --backend torch --sizes 12 --out bench/results/apply_gpu.md
        keep bench/results/apply_gpu.md
        ;;
    edits)
        install
        python3 -m pytest -q -p no:cacheprovider tests/test_device_edits.py 2>&1 | tail -5
        python3 -m bench.bench_device_edits --editors numpy,torch
        keep bench/results/device_edits_*cuda*.md
        ;;
    maskfit)
        install
        python3 -m pytest -q -p no:cacheprovider tests/test_device_maskfit.py 2>&1 | tail -5
        python3 -m bench.maskfit_device_parity
        keep bench/results/maskfit_device_parity_cuda.md
        ;;
    e2e-edits)
        install
        APPLY_BACKEND=torch python3 -m bench.bench_e2e --model full --photos 16 --variants pipeline,model \
            --keep-top 3 --edit-backend torch
        keep bench/results/e2e_full_*_keep3.md
        ;;
    *)
        sed -n '2,27p' "$0"
        exit 2
        ;;
esac
