"""WSConv against Weight Standardization written plainly."""
import pytest
import torch
import torch.nn.functional as F

from mmbcn.ops import WSConv2d, standardize_weight


def plain_ws(w, eps, formula):
    out = torch.empty_like(w)
    for o in range(w.shape[0]):
        k = w[o]
        mean = k.sum() / k.numel()
        var = ((k - mean)**2).sum() / (k.numel() - 1)  # unbiased
        if formula == 'var':
            out[o] = (k - mean) / torch.sqrt(var + eps)
        else:
            out[o] = (k - mean) / (torch.sqrt(var) + eps)
    return out


@pytest.mark.parametrize('formula', ['var', 'std'])
def test_standardization_matches_plain_formula(formula):
    conv = WSConv2d(4, 6, 3, padding=1, bias=True, formula=formula).double()
    torch.testing.assert_close(conv.standardized_weight(),
                               plain_ws(conv.weight, 1e-5, formula))
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64, requires_grad=True)
    expected = F.conv2d(x, plain_ws(conv.weight, 1e-5, formula), conv.bias,
                        padding=1)
    torch.testing.assert_close(conv(x), expected)
    assert torch.autograd.gradcheck(
        lambda x, w: F.conv2d(x, standardize_weight(w, formula=formula)),
        (x[:1, :, :4, :4].detach().requires_grad_(),
         conv.weight.detach().clone().requires_grad_()))


def test_std_formula_equals_mmcv_conv_ws():
    from mmcv.cnn.bricks.conv_ws import ConvWS2d
    ours = WSConv2d(3, 5, 3, formula='std')
    theirs = ConvWS2d(3, 5, 3)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 9, 9)
    torch.testing.assert_close(ours(x), theirs(x))


def test_bad_arguments():
    with pytest.raises(ValueError, match="formula"):
        WSConv2d(3, 4, 3, formula='l2')
    with pytest.raises(ValueError, match='at least 2 weights'):
        WSConv2d(1, 4, 1)


@pytest.mark.parametrize('eps', [float('inf'), float('nan'), -1.0, 0.0,
                                 -float('inf')])
def test_eps_that_breaks_the_weight_is_refused(eps):
    with pytest.raises(ValueError, match=r'WSConv: eps=.* finite number > 0'):
        WSConv2d(3, 4, 3, eps=eps)


@pytest.mark.parametrize('eps', ['1e-5', None, True])
def test_eps_that_is_not_a_number_is_refused(eps):
    with pytest.raises(TypeError, match='WSConv: eps=.* must be a number'):
        WSConv2d(3, 4, 3, eps=eps)


def test_eps_from_a_config_is_checked():
    from mmcv.cnn import build_conv_layer
    with pytest.raises(ValueError, match='eps'):
        build_conv_layer(dict(type='WSConv', eps=float('nan')), 3, 4, 3)
    conv = build_conv_layer(dict(type='WSConv', eps=1e-3), 3, 4, 3)
    assert conv.eps == 1e-3
