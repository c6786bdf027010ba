import pytest
import torch

from tumorseg.models.attention_unet import AttentionUNet, build_model
from tumorseg.models.blocks import AttentionGate


@pytest.mark.parametrize("size", [(32, 32), (37, 45), (8, 9)])
def test_2d_shapes_for_any_input_size(size):
    model = AttentionUNet(2, 4, 3, channels=(4, 8, 16)).eval()
    logits, maps = model(torch.randn(2, 4, *size), return_attention=True)
    assert logits.shape == (2, 3, *size)
    assert [m.shape[2:] for m in maps] == [size, tuple(-(-s // 2) for s in size)]
    assert all(((m >= 0) & (m <= 1)).all() for m in maps)


def test_3d_from_the_same_definition():
    model = AttentionUNet(3, 4, 4, channels=(2, 4, 8), norm="instance").eval()
    assert model(torch.randn(1, 4, 10, 12, 7)).shape == (1, 4, 10, 12, 7)


def test_gate_weights_the_skip_by_its_coefficients():
    gate = AttentionGate(2, skip_channels=3, gate_channels=5, inter_channels=2)
    x, g = torch.randn(1, 3, 8, 8), torch.randn(1, 5, 4, 4)
    gated, alpha = gate(x, g)
    assert alpha.shape == (1, 1, 8, 8)
    torch.testing.assert_close(gated, x * alpha)
    with torch.no_grad():
        gate.psi.bias.fill_(-50.0)  # a gate that lets nothing through
    gated, _ = gate(x, g)
    assert gated.abs().max() < 1e-12


def test_deep_supervision_only_when_training():
    model = AttentionUNet(2, 4, 3, channels=(4, 8, 16, 32), deep_supervision=True)
    outputs = model.train()(torch.randn(2, 4, 24, 24))
    assert isinstance(outputs, tuple) and len(outputs) == 3
    assert all(o.shape == (2, 3, 24, 24) for o in outputs)
    assert model.eval()(torch.randn(2, 4, 24, 24)).shape == (2, 3, 24, 24)


def test_channels_last_gives_the_same_result():
    torch.manual_seed(0)
    model = AttentionUNet(2, 4, 3, channels=(4, 8, 16)).eval()
    x = torch.randn(2, 4, 32, 32)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(
        model(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-5, rtol=1e-4
    )


def test_every_parameter_learns():
    model = AttentionUNet(2, 4, 3, channels=(4, 8, 16))
    model(torch.randn(2, 4, 16, 16)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_monai_model_for_comparison():
    model = build_model("monai_attention_unet", channels=(4, 8, 16), out_channels=3)
    assert model(torch.randn(1, 4, 32, 32)).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("unet")
