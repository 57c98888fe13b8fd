"""BatchNorm folded into convolutions for inference: the same outputs, rebuilt when the model changes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cellkit.classify import build_tiny_classifier
from cellkit.fuse import FoldedCopy, StaticSameConv, conv_bn_pairs, fold_batchnorm, inference_copy
from cellkit.nets import build_model
from cellkit.synth import make_crop


def _with_stats(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that folding has something to fold."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize("arch", ["cellkit_tiny_cnn", "tf_efficientnet_lite0"])
def test_folded_network_gives_the_same_outputs(arch):
    model = _with_stats(build_model(arch, 5))
    folded = fold_batchnorm(model)
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert len(conv_bn_pairs(model)) == n_bn  # every BatchNorm here follows a convolution
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    x = torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())  # the original is kept


def test_folded_copy_follows_in_place_changes_and_new_models():
    model = _with_stats(build_model("cellkit_tiny_cnn", 3))
    cache = FoldedCopy(model)
    first = cache.get()
    assert cache.get() is first  # unchanged model: the same copy
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    bn.running_mean.add_(1.0)  # what cellkit adapt's BatchNorm re-estimation does
    second = cache.get()
    assert second is not first
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(second(x), model(x), rtol=1e-4, atol=1e-4)


def test_classifier_predictions_use_the_current_weights():
    clf = build_tiny_classifier(seed=0)
    crops = [make_crop(k, 64, k) for k in range(3)]
    before = clf.predict_arrays(crops)["logits"]
    with torch.no_grad():
        clf.model.get_classifier().bias.add_(torch.arange(clf.model.get_classifier().bias.numel()).float())
    after = clf.predict_arrays(crops)["logits"]
    with torch.inference_mode():
        direct = clf.leaf_logits(clf.preprocess(crops)).numpy()
    assert not (before == after).all()
    torch.testing.assert_close(torch.from_numpy(after), torch.from_numpy(direct), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel,stride,dilation", [(3, 2, 1), (5, 2, 1), (3, 1, 1), (4, 2, 1), (3, 2, 2)])
@pytest.mark.parametrize("size", [(112, 112), (7, 7), (28, 15), (1, 1)])
def test_static_same_conv_equals_tf_same_padding(kernel, stride, dilation, size):
    from timm.layers.conv2d_same import Conv2dSame

    torch.manual_seed(0)
    same = Conv2dSame(6, 6, kernel, stride, dilation=dilation, groups=3, bias=True).eval()
    plain = nn.Conv2d(6, 6, kernel, stride, 0, dilation, 3, True)
    plain.load_state_dict(same.state_dict())
    static = StaticSameConv(plain.eval())
    x = torch.randn(2, 6, *size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(2):  # the second call uses the plan built by the first
            torch.testing.assert_close(static(x), same(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [112, 63])
def test_inference_copy_of_a_tf_network_has_no_dynamic_padding_and_the_same_outputs(size):
    from timm.layers.conv2d_same import Conv2dSame

    model = _with_stats(build_model("tf_efficientnet_lite0", 5))
    fast = inference_copy(model)
    assert not any(isinstance(m, Conv2dSame) for m in fast.modules())
    assert any(isinstance(m, StaticSameConv) for m in fast.modules())
    x = torch.randn(3, 3, size, size)
    with torch.inference_mode():
        torch.testing.assert_close(
            fast(x.contiguous(memory_format=torch.channels_last)), model(x), rtol=1e-4, atol=1e-4
        )
