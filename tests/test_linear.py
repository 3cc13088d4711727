"""The linear layer computes F.linear on either CPU kernel: values and all three gradients on oneDNN, the fall-back
where oneDNN must not run (other dtypes, autocast, tracing), and the kernel chosen by measurement, remembered per
machine, or set by RECURSIVEDET_CPU_LINEAR."""

import json
from unittest import mock

import pytest
import torch
from torch.nn import functional as F

from recursivedet.errors import UserError
from recursivedet.modeling import linear as linear_module
from recursivedet.modeling.linear import KERNEL_VARIABLE, Linear, cpu_linear_kernel, linear, onednn_applies, uses_onednn

needs_onednn = pytest.mark.skipif(linear_module._ONEDNN_LINEAR is None, reason="this PyTorch build has no oneDNN")


@pytest.fixture(autouse=True)
def onednn_kernel(monkeypatch):
    """The oneDNN path under test, whichever kernel this machine measured faster."""
    monkeypatch.setattr(linear_module, "_KERNEL", "onednn")


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
    assert uses_onednn(x, weight) == onednn_applies(x, weight) == (linear_module._ONEDNN_LINEAR is not None)


@needs_onednn
def test_second_derivatives_are_refused_not_wrong():
    x = torch.randn(4, 6, requires_grad=True)
    weight = torch.randn(5, 6, requires_grad=True)
    (grad_x,) = torch.autograd.grad(linear(x, weight).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        grad_x.sum().backward()


@pytest.fixture
def unchosen(monkeypatch, tmp_path):
    """No kernel chosen yet in this process, an empty cache folder, no override."""
    monkeypatch.setattr(linear_module, "_KERNEL", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(KERNEL_VARIABLE, raising=False)
    return tmp_path / "recursivedet" / "cpu_linear.json"


@needs_onednn
@pytest.mark.parametrize("faster", ["mkl", "onednn"])
def test_the_faster_kernel_is_chosen_once_and_remembered(unchosen, monkeypatch, faster):
    rates = {"onednn": 100.0, "mkl": 50.0} if faster == "onednn" else {"onednn": 50.0, "mkl": 100.0}
    monkeypatch.setattr(linear_module, "measure_kernels", mock.Mock(return_value=rates))
    x, weight = torch.randn(3, 8), torch.randn(4, 8)
    assert uses_onednn(x, weight) == (faster == "onednn")
    assert cpu_linear_kernel() == faster
    assert linear_module.measure_kernels.call_count == 1
    # a new process on this machine reads the choice instead of measuring again
    monkeypatch.setattr(linear_module, "_KERNEL", None)
    monkeypatch.setattr(linear_module, "measure_kernels", mock.Mock(side_effect=AssertionError("measured again")))
    assert cpu_linear_kernel() == faster
    # another thread count is another measurement
    monkeypatch.setattr(linear_module, "_KERNEL", None)
    monkeypatch.setattr(linear_module, "measure_kernels", mock.Mock(return_value={"onednn": 1.0, "mkl": 2.0}))
    with mock.patch.object(torch, "get_num_threads", return_value=torch.get_num_threads() + 1):
        assert cpu_linear_kernel() == "mkl"
    assert len(json.loads(unchosen.read_text())) == 2


@needs_onednn
def test_the_variable_sets_the_kernel_and_mkl_is_f_linear_exactly(unchosen, monkeypatch):
    monkeypatch.setattr(linear_module, "measure_kernels", mock.Mock(side_effect=AssertionError("measured")))
    monkeypatch.setenv(KERNEL_VARIABLE, "mkl")
    x, weight, bias = torch.randn(64, 48), torch.randn(96, 48), torch.randn(96)
    assert not uses_onednn(x, weight)
    assert torch.equal(linear(x, weight, bias), F.linear(x, weight, bias))
    monkeypatch.setattr(linear_module, "_KERNEL", None)
    monkeypatch.setenv(KERNEL_VARIABLE, "onednn")
    assert uses_onednn(x, weight)
    assert not unchosen.exists()  # nothing measured, nothing remembered


def test_an_unknown_kernel_name_is_refused_naming_the_variable(unchosen, monkeypatch):
    monkeypatch.setenv(KERNEL_VARIABLE, "blas")
    with pytest.raises(UserError, match=f"{KERNEL_VARIABLE}='blas': expected one of auto, onednn, mkl"):
        linear(torch.randn(2, 3), torch.randn(4, 3))


@needs_onednn
def test_an_unreadable_cache_is_measured_over(unchosen, monkeypatch):
    unchosen.parent.mkdir(parents=True)
    unchosen.write_text("not json")
    monkeypatch.setattr(linear_module, "measure_kernels", mock.Mock(return_value={"onednn": 1.0, "mkl": 2.0}))
    assert cpu_linear_kernel() == "mkl"
    assert next(iter(json.loads(unchosen.read_text()).values()))["kernel"] == "mkl"


@needs_onednn
def test_both_kernels_are_measured_on_a_decoder_sized_product():
    rates = linear_module.measure_kernels(rows=64, features=32, outputs=48, runs=1)
    assert set(rates) == {"onednn", "mkl"} and all(r > 0 for r in rates.values())
