"""A tiny random-weight SAM3 checkpoint (model + processor) for tests and the CPU benchmark.

``save_tiny_sam3(folder)`` writes what ``Sam3Model.from_pretrained`` and
``Sam3Processor.from_pretrained`` read: a small ``Sam3Config`` (same architecture, every width,
depth and resolution shrunk), random weights, a CLIP tokenizer built from a hand-written
vocabulary and a ``Sam3ImageProcessor`` at a small input size. It needs no network and takes
well under a second on a CPU. The masks it predicts are meaningless but have the real shapes,
dtypes and code paths.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPTokenizer, Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

IMAGE_SIZE = 112  # input side: 8 x 8 patches of 14 px
HIDDEN = 32  # width shared by the FPN, DETR encoder/decoder, mask decoder and geometry encoder
NUM_QUERIES = 8

# The words the tiny tokenizer knows (plus single letters, so any prompt tokenizes).
WORDS = ["wall", "floor", "ceiling", "tiles", "tile", "grout", "lines", "door", "window", "frame",
         "or", "crown", "molding", "bright", "reflection", "on", "glass", "cabinet", "countertop",
         "furniture", "product", "background", "shadow", "logo", "text", "label", "prop", "object"]


def tiny_sam3_config() -> Sam3Config:
    side_patches = IMAGE_SIZE // 14
    fpn_sizes = [[side_patches * 4] * 2, [side_patches * 2] * 2, [side_patches] * 2]
    vocab = _vocab()
    small = {"hidden_size": HIDDEN, "num_attention_heads": 2, "intermediate_size": 64}
    return Sam3Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model",
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": IMAGE_SIZE,
                "patch_size": 14,
                "window_size": 4,
                "global_attn_indexes": [1],
                "pretrain_image_size": 56,
            },
            "fpn_hidden_size": HIDDEN,
            "backbone_feature_sizes": fpn_sizes,
        },
        text_config={
            "model_type": "clip_text_model",
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "projection_dim": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        },
        geometry_encoder_config={**small, "num_layers": 1},
        detr_encoder_config={**small, "num_layers": 1},
        detr_decoder_config={**small, "num_layers": 1, "num_queries": NUM_QUERIES},
        mask_decoder_config={"hidden_size": HIDDEN, "num_attention_heads": 2},
    )


def _vocab() -> dict[str, int]:
    """CLIP BPE vocabulary: letters (plain and word-final), each word's prefixes, whole words."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    prefixes = [w[:i] for w in WORDS for i in range(2, len(w))]
    tokens = letters + [f"{c}</w>" for c in letters] + prefixes + [f"{w}</w>" for w in WORDS]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}


def _merges() -> list[tuple[str, str]]:
    """BPE merges that rebuild every word of WORDS letter by letter, left to right."""
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        prefix = word[0]
        for i, char in enumerate(word[1:], start=1):
            right = f"{char}</w>" if i == len(word) - 1 else char
            merges.append((prefix, right))
            prefix = prefix + char
    return list(dict.fromkeys(merges))


def tiny_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer(vocab=_vocab(), merges=_merges())


def _spread_heads(model: Sam3Model) -> None:
    """Scale the scoring and mask heads so a random model behaves like a trained one in shape.

    With the default initialisation every query scores ~0.25 and every mask logit is ~1e-4;
    after this, scores spread over (0, 1) (the presence token says "present") and masks cover
    parts of the photo, so thresholds, instance lists and unions get exercised by the tests.
    """
    with torch.no_grad():
        model.dot_product_scoring.query_proj.weight.normal_(0.0, 0.5)
        model.dot_product_scoring.text_proj.weight.normal_(0.0, 0.5)
        model.mask_decoder.mask_embedder.layers[-1].weight.normal_(0.0, 1.0)
        model.mask_decoder.instance_projection.weight.normal_(0.0, 0.5)
        model.detr_decoder.presence_head.layer3.bias.fill_(3.0)


def save_tiny_sam3(folder: Path, seed: int = 0) -> Path:
    """Build the tiny model and processor and ``save_pretrained`` both into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Sam3Model(tiny_sam3_config()).eval()
    _spread_heads(model)
    model.save_pretrained(folder)
    image_processor = Sam3ImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        mask_size={"height": IMAGE_SIZE // 14 * 4, "width": IMAGE_SIZE // 14 * 4},
    )
    Sam3Processor(image_processor=image_processor, tokenizer=tiny_tokenizer()).save_pretrained(folder)
    return folder
