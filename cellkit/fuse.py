"""The inference copy of a network: BatchNorm folded into the convolution before it, padding made static.

At inference a BatchNorm after a convolution is a fixed per-channel scale and shift, so it can be
folded into the convolution's weights (``torch.nn.utils.fusion.fuse_conv_bn_eval``). On this CPU
that removes about a fifth of EfficientNet-Lite0's forward time (``bench/bench_classify.py``).

TensorFlow's "same" padding of timm's ``tf_`` networks (``Conv2dSame``) pads with ``F.pad``, which on
channels-last tensors cost another quarter of Lite0's time. :class:`StaticSameConv` computes the same
output without a pad: where "same" pads one more pixel after than before, the kernel gets a leading
row (column) of zeros and the convolution pads symmetrically; the result is the same sum, exactly.

The folded network is a separate copy: training, ``cellkit adapt`` (which re-estimates BatchNorm
statistics) and the explanations (whose hooks name the original layers) keep the original.
:class:`FoldedCopy` rebuilds the copy whenever a parameter or buffer of the original changed in place.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
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


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) of one dimension, as timm's ``pad_same`` computes it."""
    total = max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class StaticSameConv(nn.Module):
    """A ``Conv2dSame`` (TF "same" padding) computed as one padded convolution, without ``F.pad``.

    Per input size and dimension: a symmetric pad is the convolution's own padding; a pad one larger
    after than before (the only other case) becomes a kernel with a leading zero row or column and the
    larger pad on both sides. The kernels are built once per input size; dilated convolutions pad first.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self._plans: dict[tuple[int, int], tuple[torch.Tensor, tuple[int, int]] | None] = {}

    def _plan(self, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]] | None:
        conv = self.conv
        if any(d != 1 for d in conv.dilation):
            return None
        weight, padding = conv.weight.detach(), []
        for dim, n in enumerate(size):
            before, after = _same_padding(n, conv.kernel_size[dim], conv.stride[dim], 1)
            if after > before:  # one more after: a leading zero in the kernel shifts the window by one
                shape = list(weight.shape)
                shape[2 + dim] = 1
                weight = torch.cat([weight.new_zeros(shape), weight], dim=2 + dim)
            padding.append(after)
        return weight.contiguous(memory_format=torch.channels_last), (padding[0], padding[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        if size not in self._plans:
            self._plans[size] = self._plan(size)
        plan, conv = self._plans[size], self.conv
        if plan is None:
            (bh, ah), (bw, aw) = (
                _same_padding(n, conv.kernel_size[d], conv.stride[d], conv.dilation[d]) for d, n in enumerate(size)
            )
            return F.conv2d(
                F.pad(x, (bw, aw, bh, ah)), conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups
            )
        weight, padding = plan
        return F.conv2d(x, weight, conv.bias, conv.stride, padding, 1, conv.groups)


def static_same_padding(model: nn.Module) -> nn.Module:
    """``model`` with every timm ``Conv2dSame`` replaced in place by a :class:`StaticSameConv` (inference only)."""
    try:
        from timm.layers.conv2d_same import Conv2dSame
    except ImportError:  # no timm: no such layers
        return model
    for name, module in list(model.named_modules()):
        if isinstance(module, Conv2dSame):
            plain = nn.Conv2d(
                module.in_channels,
                module.out_channels,
                module.kernel_size,
                module.stride,
                0,
                module.dilation,
                module.groups,
                module.bias is not None,
            )
            plain.load_state_dict(module.state_dict())
            _set(model, name, StaticSameConv(plain.eval()))
    return model


def inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode, channels-last copy for inference: BatchNorm folded, "same" padding made static."""
    return static_same_padding(fold_batchnorm(model)).to(memory_format=torch.channels_last)


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _version(model: nn.Module) -> tuple[int, int]:
    """Changes whenever a parameter or buffer is replaced or modified in place (torch's tensor version counter)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t._version for t in tensors), sum(id(t) for t in tensors)


class FoldedCopy:
    """The inference copy (:func:`inference_copy`) of one model, rebuilt when the model changed since it was made."""

    def __init__(self, model: nn.Module) -> None:
        self.source = model
        self._copy: nn.Module | None = None
        self._seen: tuple[int, int] | None = None

    def get(self) -> nn.Module:
        version = _version(self.source)
        if self._copy is None or version != self._seen:
            self._copy = inference_copy(self.source)
            self._seen = version
        return self._copy
