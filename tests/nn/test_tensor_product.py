import pytest
import torch

from tensorfuse import o3
from tensorfuse.nn import ChannelwiseTensorProduct
from tensorfuse.testing import assert_equivariant

C = 4
CASES = [  # irreps1, irreps2, output filter
    ("0e+1o", "0e+1o+2e+3o", 2),
    ("0e+1o+2e", "0e+1o+2e+3o", None),
    ("0e+1o+1e+2e+2o", "0e+1o+2e", "0e+1o+1e+2e"),
    ("0e+1o+2e+3o+4e", "0e+1o+2e+3o+4e", 4),
]


def _channel_irreps(irreps, channels=C):
    """The irreps of the flattened [C, D] layout: C copies of the per-channel irreps, interleaved."""
    return o3.Irreps(irreps) * channels


@pytest.mark.parametrize("basis", ["spherical", "cartesian"])
@pytest.mark.parametrize("irreps1,irreps2,out", CASES)
def test_shared_x2_product_is_equivariant(basis, irreps1, irreps2, out):
    tp = ChannelwiseTensorProduct(irreps1, irreps2, out, channels=C, basis=basis)
    x1 = torch.randn(6, C, tp.irreps_in1.dim)
    x2 = torch.randn(6, tp.irreps_in2.dim)
    w = torch.randn(6, C, tp.num_paths)

    def f(a, b):
        return tp(a.reshape(6, C, -1), b, w).reshape(6, -1)

    assert_equivariant(
        f,
        [x1.reshape(6, -1), x2],
        [_channel_irreps(irreps1), irreps2],
        _channel_irreps(tp.irreps_out),
        basis=basis,
    )


@pytest.mark.parametrize("basis", ["spherical", "cartesian"])
@pytest.mark.parametrize("irreps1,irreps2,out", CASES[:3])
def test_channelwise_x2_product_is_equivariant(basis, irreps1, irreps2, out):
    tp = ChannelwiseTensorProduct(irreps1, irreps2, out, channels=C, basis=basis, weights="internal",
                                  x2_has_channels=True)
    x1, x2 = torch.randn(6, C * tp.irreps_in1.dim), torch.randn(6, C * tp.irreps_in2.dim)

    def f(a, b):
        return tp(a.reshape(6, C, -1), b.reshape(6, C, -1)).reshape(6, -1)

    assert_equivariant(f, [x1, x2], [_channel_irreps(irreps1), _channel_irreps(irreps2)],
                       _channel_irreps(tp.irreps_out), basis=basis)


def _reference(tp, x1, x2, w):
    """Path by path, with the basis' unit-norm path couplings: what the batched layer must equal."""
    spec, outs = tp.spec, []
    s1, s2 = o3.Irreps([(1, ir) for ir in spec._ir1]).slices(), o3.Irreps([(1, ir) for ir in spec._ir2]).slices()
    for k, (path, (l1, l2, l3)) in enumerate(zip(spec.paths, spec.path_degrees())):
        Cp = tp.basis.path_coupling(l1, l2, l3) * (2 * l3 + 1) ** 0.5
        b = x2[:, s2[path.i2]] if x2.dim() == 2 else x2[:, :, s2[path.i2]]
        eq = "nci,nj,ijk->nck" if x2.dim() == 2 else "nci,ncj,ijk->nck"
        outs.append(torch.einsum(eq, x1[:, :, s1[path.i1]], b, Cp) * w[:, :, k : k + 1])
    return torch.cat(outs, dim=-1)


@pytest.mark.parametrize("basis", ["spherical", "cartesian"])
@pytest.mark.parametrize("x2_has_channels", [False, True])
def test_batched_contraction_equals_path_by_path(basis, x2_has_channels):
    tp = ChannelwiseTensorProduct("0e+1o+2e", "0e+1o+2e+3o", 3, channels=C, basis=basis,
                                  x2_has_channels=x2_has_channels)
    x1 = torch.randn(5, C, tp.irreps_in1.dim)
    x2 = torch.randn(5, C, tp.irreps_in2.dim) if x2_has_channels else torch.randn(5, tp.irreps_in2.dim)
    w = torch.randn(5, C, tp.num_paths)
    assert torch.allclose(tp(x1, x2, w), _reference(tp, x1, x2, w), atol=1e-12)


@pytest.mark.parametrize("irreps1,irreps2,out", CASES)
def test_both_bases_compute_the_same_function_with_the_same_weights(irreps1, irreps2, out):
    sph = ChannelwiseTensorProduct(irreps1, irreps2, out, channels=C, basis="spherical")
    cart = ChannelwiseTensorProduct(irreps1, irreps2, out, channels=C, basis="cartesian")
    to_cart = lambda irreps: o3.change_of_basis_matrix(irreps, "spherical", "cartesian")  # noqa: E731
    x1, x2 = torch.randn(7, C, sph.irreps_in1.dim), torch.randn(7, sph.irreps_in2.dim)
    w = torch.randn(7, C, sph.num_paths)
    y_sph = sph(x1, x2, w)
    y_cart = cart(x1 @ to_cart(irreps1).T, x2 @ to_cart(irreps2).T, w)
    assert (y_cart - y_sph @ to_cart(sph.irreps_out).T).abs().max() < 1e-12


def test_outputs_have_unit_variance_for_unit_variance_inputs():
    tp = ChannelwiseTensorProduct("0e+1o+2e", "0e+1o+2e", 2, channels=8, basis="cartesian", weights="none")
    y = tp(torch.randn(4000, 8, 9), torch.randn(4000, 9))
    assert torch.allclose(y.pow(2).mean(dim=(0, 1)), torch.ones(y.shape[-1]), atol=0.15)


def test_bad_shapes_and_arguments_raise_clear_errors():
    tp = ChannelwiseTensorProduct("0e+1o", "0e+1o", channels=3)
    with pytest.raises(ValueError, match=r"x1 must have shape \[N, 3, 4\]"):
        tp(torch.randn(2, 3, 5), torch.randn(2, 4), torch.randn(2, 3, tp.num_paths))
    with pytest.raises(ValueError, match="x2 must have shape"):
        tp(torch.randn(2, 3, 4), torch.randn(3, 4), torch.randn(2, 3, tp.num_paths))
    with pytest.raises(ValueError, match="weights must have shape"):
        tp(torch.randn(2, 3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="'bogus'"):
        ChannelwiseTensorProduct("0e", "0e", channels=1, weights="bogus")
    with pytest.raises(ValueError, match="inadmissible path 1o x 1o -> 1o"):
        o3.TensorProductSpec("1o", "1o", paths=[(0, 0, "1o")])
    with pytest.raises(ValueError, match="no admissible path"):
        o3.TensorProductSpec("1o", "1o", "0o")


class TestAgainstE3nn:
    @pytest.fixture
    def e3nn_o3(self):
        """e3nn's o3, or a skip of just the test that asks for it (not of the whole file)."""
        return pytest.importorskip("e3nn.o3")

    def test_matches_e3nn_uvu_tensor_product(self, e3nn_o3):
        irreps1, irreps2 = o3.Irreps("0e+1o+2e"), o3.Irreps("0e+1o+2e+3o")
        ours = ChannelwiseTensorProduct(irreps1, irreps2, 2, channels=C, basis="spherical")
        spec = ours.spec
        e = e3nn_o3
        in1 = e.Irreps([(C, (ir.l, ir.p)) for _, ir in irreps1])
        out = e.Irreps([(C, (p.ir_out.l, p.ir_out.p)) for p in spec.paths])
        instructions = [(p.i1, p.i2, k, "uvu", True) for k, p in enumerate(spec.paths)]
        theirs = e.TensorProduct(in1, e.Irreps(str(irreps2)), out, instructions, shared_weights=False,
                                 internal_weights=False, irrep_normalization="component",
                                 path_normalization="none")
        # our path couplings fix their sign by a harmonic identity; e3nn's follow wigner_3j
        sign = torch.tensor([
            torch.sign((o3.SPHERICAL.path_coupling(l1, l2, l3) * o3.wigner_3j(l1, l2, l3)).sum()).item()
            for l1, l2, l3 in spec.path_degrees()
        ])
        x1, x2, w = torch.randn(5, C, irreps1.dim), torch.randn(5, irreps2.dim), torch.randn(5, C, spec.num_paths)
        # e3nn layout: per input irrep a [mul, 2l+1] block
        x1_e3nn = torch.cat([x1[:, :, s].reshape(5, -1) for s in irreps1.slices()], dim=-1)
        y_e3nn = theirs(x1_e3nn, x2, (w * sign).transpose(1, 2).reshape(5, -1))
        y = ours(x1, x2, w)
        y_ours_e3nn_layout = torch.cat([y[:, :, s].reshape(5, -1) for s in spec.irreps_out.slices()], dim=-1)
        assert (y_e3nn - y_ours_e3nn_layout).abs().max() < 1e-12


@pytest.mark.parametrize("x2_has_channels", [False, True])
def test_gradients_match_finite_differences(x2_has_channels):
    tp = ChannelwiseTensorProduct("0e+1o+2e", "0e+1o+2e", 2, channels=2, basis="cartesian",
                                  x2_has_channels=x2_has_channels)
    x1 = torch.randn(3, 2, 9, requires_grad=True)
    x2 = torch.randn(*((3, 2, 9) if x2_has_channels else (3, 9)), requires_grad=True)
    w = torch.randn(3, 2, tp.num_paths, requires_grad=True)
    assert torch.autograd.gradcheck(tp, (x1, x2, w))
    assert torch.autograd.gradgradcheck(tp, (x1, x2, w))


@pytest.mark.parametrize("basis", ["spherical", "cartesian"])
def test_fused_aggregation_equals_gather_product_and_sum(basis):
    tp = ChannelwiseTensorProduct("0e+1o", "0e+1o+2e", 2, channels=2, basis=basis)
    n, e = 4, 12
    g = torch.Generator().manual_seed(3)
    sender, receiver = torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g)
    h = torch.randn(n, 2, tp.irreps_in1.dim, requires_grad=True)
    x2 = torch.randn(e, tp.irreps_in2.dim, requires_grad=True)
    w = torch.randn(e, 2, tp.num_paths, requires_grad=True)
    fused = tp.aggregate(h, x2, w, sender, receiver, n)
    reference = torch.zeros(n, 2, tp.irreps_out.dim).index_add(0, receiver, tp(h[sender], x2, w))
    assert torch.allclose(fused, reference, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, b, c: tp.aggregate(a, b, c, sender, receiver, n), (h, x2, w))
    assert torch.autograd.gradgradcheck(lambda a, b, c: tp.aggregate(a, b, c, sender, receiver, n), (h, x2, w))


@pytest.mark.parametrize("varying", ["h", "x2", "w", "x2,w", "h,w"])
def test_fused_second_derivatives_with_some_inputs_fixed(varying):
    """The fused double backward with only some inputs differentiable (the others constants)."""
    tp = ChannelwiseTensorProduct("0e+1o+2e", "0e+1o", 2, channels=3, basis="cartesian")
    n, e = 5, 14
    g = torch.Generator().manual_seed(4)
    sender, receiver = torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g)
    values = {"h": torch.randn(n, 3, tp.irreps_in1.dim), "x2": torch.randn(e, tp.irreps_in2.dim),
              "w": torch.randn(e, 3, tp.num_paths)}
    names = varying.split(",")
    inputs = tuple(values[k].requires_grad_(True) for k in names)

    def f(*args):
        given = {**values, **dict(zip(names, args))}
        return tp.aggregate(given["h"], given["x2"], given["w"], sender, receiver, n)

    assert torch.autograd.gradgradcheck(f, inputs)


def test_fused_aggregation_works_in_small_chunks():
    from tensorfuse.nn._tensor_product import _FusedMessagePassing

    tp = ChannelwiseTensorProduct("0e+1o", "0e+1o+2e", 2, channels=2)
    n, e = 5, 23
    sender, receiver = torch.randint(0, n, (e,)), torch.randint(0, n, (e,))
    h = torch.randn(n, 2, 4, requires_grad=True)
    x2, w = torch.randn(e, 9, requires_grad=True), torch.randn(e, 2, tp.num_paths, requires_grad=True)
    args = (sender, receiver, tp.coupling, tp.path_expansion, n)
    small = _FusedMessagePassing.apply(h, x2, w, *args, 4)
    whole = _FusedMessagePassing.apply(h, x2, w, *args, 1000)
    assert torch.allclose(small, whole, atol=1e-13)
    gs = torch.autograd.grad(small.sum(), (h, x2, w))
    gw = torch.autograd.grad(whole.sum(), (h, x2, w))
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(gs, gw))
