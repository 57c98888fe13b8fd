"""BatchNorm folded into the convolution before it, for inference only.

At inference a BatchNorm after a convolution is a fixed per-channel scale and shift, so it can be
folded into the convolution's weights (``torch.nn.utils.fusion.fuse_conv_bn_eval``). On this CPU
that removes about a fifth of EfficientNet-Lite0's forward time (``bench/bench_classify.py``).

The folded network is a separate copy: training, ``cellkit adapt`` (which re-estimates BatchNorm
statistics) and the explanations (whose hooks name the original layers) keep the original.
:class:`FoldedCopy` rebuilds the copy whenever a parameter or buffer of the original changed in place.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


class _Tracer(fx.Tracer):
    """Keeps every convolution and BatchNorm (timm's padded and norm+act variants too) as one node."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, nn.Conv2d | nn.modules.batchnorm._BatchNorm) or super().is_leaf_module(m, qualname)


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, batchnorm) module names where the BatchNorm's only input is the convolution's only use."""
    graph = _Tracer().trace(model)
    mods = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.modules.batchnorm._BatchNorm):
            continue
        src = node.args[0] if node.args else None
        if (
            isinstance(src, fx.Node)
            and src.op == "call_module"
            and isinstance(mods.get(src.target), nn.Conv2d)
            and len(src.users) == 1
        ):
            pairs.append((str(src.target), str(node.target)))
    return pairs


def _after_norm(bn: nn.Module) -> nn.Module:
    """What a BatchNorm does besides normalising: timm's BatchNormAct2d also applies dropout and an activation."""
    parts = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if isinstance(m, nn.Module)]
    return nn.Sequential(*parts) if parts else nn.Identity()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every foldable BatchNorm folded into its convolution.

    Models that cannot be traced (dynamic control flow) come back as a plain eval copy, unfolded.
    """
    out = copy.deepcopy(model).eval()
    try:
        pairs = conv_bn_pairs(out)
    except Exception:  # not traceable by torch.fx: correct, only not faster
        return out
    for conv_name, bn_name in pairs:
        conv, bn = out.get_submodule(conv_name), out.get_submodule(bn_name)
        fused = fuse_conv_bn_eval(conv, bn)
        _set(out, conv_name, fused)
        _set(out, bn_name, _after_norm(bn))
    return out


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _version(model: nn.Module) -> tuple[int, int]:
    """Changes whenever a parameter or buffer is replaced or modified in place (torch's tensor version counter)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t._version for t in tensors), sum(id(t) for t in tensors)


class FoldedCopy:
    """The folded inference copy of one model, rebuilt when the model changed since it was made."""

    def __init__(self, model: nn.Module) -> None:
        self.source = model
        self._copy: nn.Module | None = None
        self._seen: tuple[int, int] | None = None

    def get(self) -> nn.Module:
        version = _version(self.source)
        if self._copy is None or version != self._seen:
            self._copy = fold_batchnorm(self.source).to(memory_format=torch.channels_last)
            self._seen = version
        return self._copy
