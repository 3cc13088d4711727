"""The oneDNN-backed linear layer computes F.linear: values and all three gradients, and falls back where it
must (other dtypes, autocast, tracing)."""

from unittest import mock

import pytest
import torch
from torch.nn import functional as F

from recursivedet.modeling import linear as linear_module
from recursivedet.modeling.linear import Linear, linear, uses_onednn

needs_onednn = pytest.mark.skipif(linear_module._ONEDNN_LINEAR is None, reason="this PyTorch build has no oneDNN")


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(7, 33), (3, 5, 33), (2, 0, 33)])
def test_values_and_gradients_equal_f_linear(bias, shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    weight = torch.randn(65, 33, generator=g)
    b = torch.randn(65, generator=g) if bias else None
    grad = torch.randn(*shape[:-1], 65, generator=g)

    results = []
    for fn in (linear, F.linear):
        leaves = [t.clone().requires_grad_() for t in (x, weight) + ((b,) if bias else ())]
        out = fn(leaves[0], leaves[1], leaves[2] if bias else None)
        out.backward(grad)
        results.append([out] + [t.grad for t in leaves])
    for ours, reference in zip(*results, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_transposed_and_strided_inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 24, generator=g).t()  # (24, 40), not contiguous
    weight = torch.randn(40, 16, generator=g).t()  # (16, 40)
    torch.testing.assert_close(linear(x, weight), F.linear(x, weight), rtol=1e-5, atol=1e-5)


def test_module_keeps_nn_linear_parameters_and_state_dict():
    torch.manual_seed(0)
    plain = torch.nn.Linear(8, 4)
    ours = Linear(8, 4)
    ours.load_state_dict(plain.state_dict())
    assert list(ours.state_dict()) == ["weight", "bias"]
    x = torch.randn(3, 8)
    torch.testing.assert_close(ours(x), plain(x), rtol=1e-6, atol=1e-6)


def test_falls_back_to_f_linear_where_onednn_does_not_apply():
    x, weight = torch.randn(3, 8), torch.randn(4, 8)
    with mock.patch.object(linear_module, "_ONEDNN_LINEAR", mock.Mock(side_effect=AssertionError)):
        for args in ((x.double(), weight.double()), (x.half(), weight.half())):
            assert not uses_onednn(*args)
            torch.testing.assert_close(linear(*args), F.linear(*args))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not uses_onednn(x, weight)
            assert linear(x, weight).dtype == torch.bfloat16
        # fvcore counts FLOPs from a trace, which must see aten::linear
        traced = torch.jit.trace(lambda a, w: linear(a, w), (x, weight), check_trace=False)
        assert "aten::linear" in str(traced.graph)
    assert uses_onednn(x, weight) == (linear_module._ONEDNN_LINEAR is not None)


@needs_onednn
def test_second_derivatives_are_refused_not_wrong():
    x = torch.randn(4, 6, requires_grad=True)
    weight = torch.randn(5, 6, requires_grad=True)
    (grad_x,) = torch.autograd.grad(linear(x, weight).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        grad_x.sum().backward()
