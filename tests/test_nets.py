"""The networks: built by name (timm or our own), one pass gives the pooled features and the logits."""

from __future__ import annotations

import pytest
import torch

from cellkit.errors import CellkitError
from cellkit.nets import LOCAL_ARCHS, build_model, penultimate_and_logits


@pytest.mark.parametrize("arch", [*LOCAL_ARCHS, "tf_efficientnet_lite0"])
def test_features_and_logits_in_one_pass(arch):
    model = build_model(arch, 5).eval()
    with torch.no_grad():
        feats, logits = penultimate_and_logits(model, torch.zeros(2, 3, 64, 64))
        assert logits.shape == (2, 5) and feats.shape[0] == 2 and feats.shape[1] > 5
        torch.testing.assert_close(logits, model(torch.zeros(2, 3, 64, 64)))


def test_an_unknown_architecture_says_what_exists():
    with pytest.raises(CellkitError, match=r"unknown architecture 'resnet_9000'.*timm model name"):
        build_model("resnet_9000", 3)


def test_inference_in_chunks_gives_the_same_features_and_logits(monkeypatch):
    from cellkit import nets

    model = nets.build_model("cellkit_tiny_cnn", 4).eval()
    x = torch.randn(7, 3, 16, 16)
    with torch.inference_mode():
        whole = nets.penultimate_and_logits(model, x)
        monkeypatch.setattr(nets, "CHUNK_PIXELS", 3 * 16 * 16)  # chunks of 3, 3 and 1 crops
        chunked = nets.in_chunks(model, x)
    for a, b in zip(whole, chunked, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
