"""Start-up check: fail fast, with one clear line, when the GPU or the SAM3 weights are unusable.

    python -m scripts.check_startup          CUDA works and the weights are in place
    python -m scripts.check_startup --load   also load SAM3 through the worker's own loader and
                                             run its warm-up pass (slow: once after a build)

The Docker image runs it before ``main.py`` (``check_startup.py && exec python -u main.py``), so
a worker that cannot segment never takes a job. On Runpod a non-zero exit restarts the worker
(a bad GPU gets replaced); failures that persist show in the endpoint's logs as this script's
``FAILED`` line. To serve ``apply`` jobs without weights on purpose, start ``python -u main.py``
directly instead.

What it checks:
- CUDA (skipped when ``SAM3_DEVICE=cpu``): torch imports, ``torch.cuda.is_available()``, and a
  small matrix product on the GPU gives the right answer.
- Weights (skipped when ``SEGMENTER=files``): ``SAM3_MODEL`` is a local checkpoint folder, or a
  hub id found in ``MODEL_CACHE_DIR`` (the Hugging Face cache layout that
  ``python -m scripts.fetch_weights`` and the loader use); the folder has a ``config.json`` that parses
  and its ``*.safetensors`` (every shard the index names). When the weights are not there and
  ``HF_TOKEN`` is set, ``python -m scripts.fetch_weights`` fetches them now: the first start of a worker
  whose ``MODEL_CACHE_DIR`` is on a network volume.

Exit code 0 when everything checked is usable, 1 otherwise. Secrets are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORKER_DIR = Path(__file__).resolve().parent.parent

FETCH_SCRIPT = WORKER_DIR / "scripts" / "fetch_weights.py"
FETCH_MODULE = "scripts.fetch_weights"


class CheckFailed(Exception):
    pass


def say(line: str) -> None:
    print(f"check_startup: {line}", file=sys.stderr, flush=True)


def check_cuda() -> str:
    try:
        import torch
    except ImportError as exc:
        raise CheckFailed(f"torch cannot be imported ({exc}); rebuild the image") from exc
    if not torch.cuda.is_available():
        raise CheckFailed(
            f"CUDA is not usable: torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no GPU. "
            "Run the container with a GPU (docker run --gpus all, or a GPU endpoint) on a host whose driver "
            f"supports CUDA {torch.version.cuda} (nvidia-smi shows it); SAM3_DEVICE=cpu skips this check"
        )
    try:
        ones = torch.ones((64, 64), device="cuda")
        value = (ones @ ones)[0, 0].item()
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        name = torch.cuda.get_device_name(0)
    except Exception as exc:  # a CUDA error: driver mismatch, ECC error, device busy or lost
        raise CheckFailed(f"a test computation on the GPU failed: {type(exc).__name__}: {str(exc)[:300]}") from exc
    if value != 64.0:
        raise CheckFailed(f"a test computation on the GPU gave {value} instead of 64: the GPU is faulty")
    return (f"CUDA ok: {name}, {total / 2**30:.0f} GiB ({free / 2**30:.0f} GiB free), "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}")


def find_checkpoint(model: str, cache_dir: Path) -> Path | None:
    """The folder holding ``model``: itself when it is a local folder, else its cached hub snapshot."""
    local = Path(model).expanduser()
    if local.is_dir():
        return local
    if model.startswith(("/", ".", "~")):
        raise CheckFailed(f"SAM3_MODEL={model} names a folder that does not exist")
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(model, "config.json", cache_dir=str(cache_dir))
    return Path(config).parent if isinstance(config, str) else None


def checkpoint_problems(folder: Path) -> list[str]:
    problems = []
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            problems.append("config.json is not a JSON object")
    except FileNotFoundError:
        problems.append("no config.json")
    except (OSError, ValueError) as exc:
        problems.append(f"config.json cannot be read ({type(exc).__name__})")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            problems.append("model.safetensors.index.json cannot be read")
        else:
            problems += [f"missing shard {s}" for s in sorted(shards) if not (folder / s).is_file()]
    elif not any(folder.glob("*.safetensors")):
        problems.append("no *.safetensors weights")
    return problems


def fetch_weights() -> None:
    if not FETCH_SCRIPT.is_file():
        raise CheckFailed(f"{FETCH_SCRIPT.relative_to(WORKER_DIR)} is missing from this build: cannot fetch weights")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", FETCH_MODULE], cwd=WORKER_DIR, check=False)
    if done.returncode != 0:
        raise CheckFailed(f"fetching the SAM3 weights failed (exit {done.returncode}; its output is above): "
                          "check HF_TOKEN and that its account accepted the model's licence on the hub")
    say(f"weights fetched in {time.monotonic() - started:.0f} s")


def check_weights(settings) -> str:
    model, cache_dir = settings.sam3_model.strip(), settings.model_cache_dir
    folder = find_checkpoint(model, cache_dir)
    if folder is None:
        if settings.hf_token is None:
            raise CheckFailed(
                f"SAM3 weights not found: SAM3_MODEL={model} is not in MODEL_CACHE_DIR={cache_dir}. Bake them into "
                "the image (docker build --build-arg BAKE_WEIGHTS=1 --secret id=hf_token,env=HF_TOKEN), or set "
                "HF_TOKEN to fetch them at first start (onto a network volume: MODEL_CACHE_DIR=/runpod-volume/models)"
            )
        say(f"SAM3 weights for {model} are not in MODEL_CACHE_DIR={cache_dir}: fetching them now (first start)")
        fetch_weights()
        folder = find_checkpoint(model, cache_dir)
        if folder is None:
            raise CheckFailed(f"{FETCH_SCRIPT.name} finished but {model} is still not in MODEL_CACHE_DIR={cache_dir}")
    problems = checkpoint_problems(folder)
    if problems:
        raise CheckFailed(f"the SAM3 checkpoint in {folder} is incomplete ({'; '.join(problems)}): delete that folder "
                          f"and fetch it again (python -m {FETCH_MODULE})")
    return f"weights ok: {folder}"


def check_load(settings) -> str:
    try:
        from engine.sam3 import load_sam3_segmenter
    except ImportError as exc:  # engine/sam3.py absent, or transformers without Sam3Model
        raise CheckFailed(f"the SAM3 loader cannot be imported ({exc}); rebuild the image") from exc
    from engine.errors import SegmentationUnavailable

    started = time.monotonic()
    try:
        load_sam3_segmenter(settings, warmup=True)
    except SegmentationUnavailable as exc:
        raise CheckFailed(exc.message) from exc
    except Exception as exc:  # an unexpected loader error: name it, no traceback
        raise CheckFailed(f"loading SAM3 failed: {type(exc).__name__}: {str(exc)[:300]}") from exc
    return f"SAM3 loaded and warmed up in {time.monotonic() - started:.1f} s"


def run_checks(load: bool) -> None:
    from pydantic import ValidationError

    from engine.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, error['loc'])).upper()}: {error['msg']}"
                            for error in exc.errors(include_input=False))
        raise CheckFailed(f"settings are invalid: {details}") from exc
    if settings.sam3_device == "cpu":
        say("CUDA check skipped (SAM3_DEVICE=cpu)")
    else:
        say(check_cuda())
    if settings.segmenter == "files":
        say("weights check skipped (SEGMENTER=files)")
        return
    say(check_weights(settings))
    if load:
        say(check_load(settings))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fail fast when CUDA or the SAM3 weights are unusable.")
    parser.add_argument("--load", action="store_true", help="also load SAM3 and run its warm-up pass")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        run_checks(args.load)
    except CheckFailed as exc:
        say(f"FAILED: {exc}")
        return 1
    say(f"ok ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    sys.exit(main())
