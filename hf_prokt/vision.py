"""Image-classification building blocks: models from named sizes or JSON configs, the offline ``digits``
images, and the pixel transforms of `examples/image_classification`.

Nothing here is specific to distillation: `ProKTTrainer` takes any ``AutoModelForImageClassification``
pair. These helpers make it easy to build a pair from scratch and to run offline.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Sequence

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForImageClassification, PretrainedConfig
from transformers.utils import is_torchvision_available

# Architectures by name, for training from scratch. Image size, channels and labels come from the data.
# The ResNets follow the ImageNet layouts of "Deep Residual Learning" (with transformers' ResNet stem);
# the ViTs those of DeiT / "How to train your ViT". The small ones suit small images (e.g. 32x32).
NAMED_CONFIGS: dict[str, dict] = {
    "resnet-18": dict(model_type="resnet", layer_type="basic", embedding_size=64,
                      hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2]),
    "resnet-34": dict(model_type="resnet", layer_type="basic", embedding_size=64,
                      hidden_sizes=[64, 128, 256, 512], depths=[3, 4, 6, 3]),
    "resnet-50": dict(model_type="resnet", layer_type="bottleneck", embedding_size=64,
                      hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3]),
    "resnet-small": dict(model_type="resnet", layer_type="basic", embedding_size=32,
                         hidden_sizes=[32, 64, 128], depths=[2, 2, 2]),
    "resnet-tiny": dict(model_type="resnet", layer_type="basic", embedding_size=16,
                        hidden_sizes=[16, 32, 64], depths=[1, 1, 1]),
    "vit-base": dict(model_type="vit", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072, patch_size=16),
    "vit-small": dict(model_type="vit", hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                      intermediate_size=1536, patch_size=16),
    "vit-tiny": dict(model_type="vit", hidden_size=192, num_hidden_layers=12, num_attention_heads=3,
                     intermediate_size=768, patch_size=16),
    "vit-mini": dict(model_type="vit", hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=128, patch_size=4),
    "vit-micro": dict(model_type="vit", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, patch_size=4),
}


def model_config(spec: str, num_labels: int, id2label: dict[int, str], label2id: dict[str, int],
                 image_size: int, num_channels: int = 3) -> PretrainedConfig:
    """The config of a model to train from scratch.

    Args:
        spec: a name from `NAMED_CONFIGS`, a JSON file with a ``model_type`` and config fields, or a
            folder / Hub id holding a ``config.json``.
        num_labels, id2label, label2id: the dataset's label set (they override the spec's).
        image_size: the side of the (square) input images; ViTs need it, ResNets accept any size.
        num_channels: input channels (3 for RGB).
    """
    if spec in NAMED_CONFIGS:
        fields = copy.deepcopy(NAMED_CONFIGS[spec])
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    elif spec.endswith(".json") and os.path.isfile(spec):
        with open(spec) as f:
            fields = json.load(f)
        if "model_type" not in fields:
            raise ValueError(f"{spec} has no 'model_type' (e.g. \"resnet\" or \"vit\"); add it to the JSON config.")
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    elif os.path.isdir(spec) or "/" in spec:
        config = AutoConfig.from_pretrained(spec)
    else:
        raise ValueError(
            f"unknown model config {spec!r}: use one of {', '.join(sorted(NAMED_CONFIGS))}, a JSON file with a "
            "'model_type', or a folder with a config.json."
        )
    config.num_labels = num_labels
    config.id2label, config.label2id = dict(id2label), dict(label2id)
    config.num_channels = num_channels
    if hasattr(config, "image_size"):
        config.image_size = image_size
        patch = getattr(config, "patch_size", None)
        if patch and image_size % patch:
            raise ValueError(
                f"{spec}: image size {image_size} is not a multiple of the patch size {patch}. Pick --image_size "
                "as a multiple of it, or a config with another patch_size."
            )
    return config


def model_from_config(config: PretrainedConfig, seed: int) -> torch.nn.Module:
    """A freshly initialised ``AutoModelForImageClassification`` for ``config``; the same seed gives the same
    weights."""
    torch.manual_seed(seed)
    return AutoModelForImageClassification.from_config(config)


def image_processor_for(image_size: int, mean: Sequence[float] = (0.5, 0.5, 0.5),
                        std: Sequence[float] = (0.5, 0.5, 0.5)):
    """A resize-and-normalise image processor (``[C, image_size, image_size]`` outputs) for models trained
    from scratch, saved with the student so that the checkpoint is usable as is. The torchvision-backed
    processor when torchvision is installed, else its PIL twin (same outputs)."""
    if is_torchvision_available():
        from transformers import ViTImageProcessor as processor_class
    else:
        from transformers import ViTImageProcessorPil as processor_class
    return processor_class(size={"height": image_size, "width": image_size}, image_mean=list(mean),
                             image_std=list(std), do_resize=True, do_rescale=True, do_normalize=True)


# ----------------------------------------------------------------------------------------------- digits

DIGITS_LABELS = [str(i) for i in range(10)]


def digits_split_indices(labels: np.ndarray, seed: int = 0, validation_fraction: float = 0.2,
                         max_train_samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A stratified, seeded split of ``range(len(labels))`` into sorted training and validation indices.

    Args:
        labels: ``[N]`` class ids.
        seed: the same seed always gives the same split.
        validation_fraction: share of the examples held out, in every class alike.
        max_train_samples: keep at most this many training indices (a stratified subset when there are
            at least as many as classes), for quick runs; the validation set is unchanged.

    Returns:
        ``(train_indices [N_train], validation_indices [N_val])``, disjoint, each sorted.
    """
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    train, validation = train_test_split(indices, test_size=validation_fraction, stratify=labels, random_state=seed)
    if max_train_samples is not None and max_train_samples < len(train):
        if max_train_samples < 1:
            raise ValueError(f"max_train_samples must be at least 1, got {max_train_samples}.")
        num_classes = len(np.unique(labels))
        stratify = labels[train] if num_classes <= max_train_samples <= len(train) - num_classes else None
        train, _ = train_test_split(train, train_size=max_train_samples, stratify=stratify, random_state=seed)
    return np.sort(train), np.sort(validation)


def load_digits_images(seed: int = 0, validation_fraction: float = 0.2,
                       max_train_samples: int | None = None) -> datasets.DatasetDict:
    """scikit-learn's bundled ``digits`` (1,797 grey 8x8 images of 0-9) as an image-classification
    `datasets.DatasetDict` with a stratified, seeded ``train`` / ``validation`` split (`digits_split_indices`).

    Columns: ``image`` (a `datasets.Image`, mode ``L``, 8x8, pixels 0-16 scaled to 0-255), ``label`` (a
    `datasets.ClassLabel` with names "0".."9"), like an image dataset from the Hub, so the same transforms
    apply; and ``index``, the example's row in ``sklearn.datasets.load_digits()``.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # [N, 8, 8]
    labels = digits.target.astype(np.int64)
    train, validation = digits_split_indices(labels, seed, validation_fraction, max_train_samples)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=DIGITS_LABELS),
                                  "index": datasets.Value("int64")})

    def split(indices: np.ndarray) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {"image": [Image.fromarray(pixels[i], mode="L") for i in indices], "label": labels[indices].tolist(),
             "index": indices.tolist()},
            features=features,
        )

    return datasets.DatasetDict(train=split(train), validation=split(validation))


# ------------------------------------------------------------------------------------------- transforms

AUGMENTATIONS = ("none", "crop", "crop_flip")


def augment(pixel_values: torch.Tensor, augmentation: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training augmentation of one image ``[C, H, W] -> [C, H, W]``.

    ``crop``: pad by an eighth of the side (reflected) and crop back at a random offset, the CIFAR recipe;
    ``crop_flip``: the same, then a horizontal flip half of the time; ``none``: unchanged.
    """
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augmentation!r}; use one of {', '.join(AUGMENTATIONS)}.")
    if augmentation == "none":
        return pixel_values
    _, height, width = pixel_values.shape
    pad = max(1, min(height, width) // 8)
    padded = F.pad(pixel_values[None], (pad, pad, pad, pad), mode="reflect")[0]
    top, left = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=generator))
    pixel_values = padded[:, top:top + height, left:left + width]
    if augmentation == "crop_flip" and torch.rand((), generator=generator) < 0.5:
        pixel_values = pixel_values.flip(-1)
    return pixel_values


def pixel_transform(image_processor, image_column: str, label_column: str, augmentation: str = "none"
                    ) -> Callable[[dict], dict]:
    """A `datasets.Dataset.set_transform` function: a batch of ``image`` (PIL) and ``label`` columns to
    ``pixel_values`` ``[C, H, W]`` per example (the processor's resize and normalisation, then
    `augment`) and ``labels``."""

    def transform(batch: dict) -> dict:
        images = [image.convert("RGB") for image in batch[image_column]]
        pixel_values = image_processor(images, return_tensors="pt")["pixel_values"]
        out = {"pixel_values": [augment(p, augmentation) for p in pixel_values]}
        if label_column in batch:
            out["labels"] = batch[label_column]
        return out

    return transform


def collate_images(examples: list[dict]) -> dict[str, torch.Tensor]:
    """``pixel_values [B, C, H, W]`` (float32) and ``labels [B]`` (int64) from transformed examples."""
    batch = {"pixel_values": torch.stack([torch.as_tensor(e["pixel_values"]) for e in examples])}
    if "labels" in examples[0]:
        batch["labels"] = torch.tensor([int(e["labels"]) for e in examples], dtype=torch.long)
    return batch
