"""The fused CPU kernels (product basis, message passing, linear maps) give the tensor paths' numbers,
derivatives included."""

import pytest
import torch

from tensorfuse.nn import ChannelwiseTensorProduct, IrrepsLinear, ProductBasis
from tensorfuse.nn._kernels import load_kernel

CASES = [  # (A irreps, output irreps, correlation, variant, basis)
    ("1x0e+1x1o+1x2e+1x3o", "1x0e+1x1o", 3, "symmetric", "cartesian"),
    ("1x0e+1x1o+1x2e+1x3o", "1x0e+1x1o+1x2e", 3, "symmetric", "spherical"),
    ("1x0e+1x1o+1x2e", "1x0e+1x1o", 2, "full", "cartesian"),
    ("1x0e+1x1o", "1x0e", 1, "symmetric", "spherical"),
    ("2x0e+1x1o+1x2e", "1x0e+1x1o", 4, "full", "spherical"),
    ("1x0e+1x1o+1x2e", "1x0e", 5, "symmetric", "cartesian"),
    ("1x0e+1x1o+1x2e+1x3o", "1x0e+1x1o+1x2e", 4, "reduced", "cartesian"),
    ("2x0e+1x1o+1x2e", "1x0e+1x1o", 5, "reduced", "spherical"),
]


def _kernel(name="product"):
    if load_kernel(name) is None:
        pytest.skip(f"the {name} kernel could not be built here (no C++ compiler?)")


def _both(module, *args, fn):
    results = []
    for fused in (True, False):
        module.fused = fused
        results.append(fn(*args))
    module.fused = True
    return results


@pytest.mark.parametrize("irreps_a, irreps_out, correlation, variant, basis", CASES)
def test_fused_equals_tensor_path_with_first_derivatives(irreps_a, irreps_out, correlation, variant, basis):
    _kernel()
    torch.manual_seed(0)
    pb = ProductBasis(irreps_a, irreps_out, 6, correlation, 3, variant=variant, basis=basis, dtype=torch.float64)
    A = torch.randn(9, 6, pb.irreps_a.dim, dtype=torch.float64, requires_grad=True)
    species = torch.tensor([0, 2, 1, 1, 0, 2, 2, 0, 1])
    cotangent = torch.randn(9, 6, pb.irreps_out.dim, dtype=torch.float64)

    def call():
        out = pb(A, species)
        return (out, *torch.autograd.grad(out, (A, *pb.parameters()), cotangent))  # reduced: mixing too

    fused, tensor = _both(pb.paths, fn=call)
    for a, b in zip(fused, tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_fused_second_derivatives_equal_the_tensor_path():
    """Training on forces differentiates the backward: the fused backward builds that graph too."""
    _kernel()
    torch.manual_seed(1)
    pb = ProductBasis("1x0e+1x1o+1x2e", "1x0e+1x1o", 4, 3, 2, basis="cartesian", dtype=torch.float64)
    A = torch.randn(5, 4, pb.irreps_a.dim, dtype=torch.float64, requires_grad=True)
    species = torch.tensor([0, 1, 1, 0, 1])

    def call():
        (grad_A,) = torch.autograd.grad(pb(A, species).pow(2).sum(), A, create_graph=True)
        return torch.autograd.grad(grad_A.pow(2).sum(), (A, pb.weights))

    fused, tensor = _both(pb.paths, fn=call)
    for a, b in zip(fused, tensor):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)  # values reach 1e5


@pytest.mark.parametrize("irreps_a, irreps_out, correlation, variant, basis", CASES)
def test_fused_second_derivatives_in_every_input(irreps_a, irreps_out, correlation, variant, basis):
    """The kernel's backward of its backward (forward-over-reverse): a loss on both first derivatives,
    with a cotangent that itself depends on A, W and another parameter."""
    _kernel()
    torch.manual_seed(5)
    pb = ProductBasis(irreps_a, irreps_out, 3, correlation, 2, variant=variant, basis=basis, dtype=torch.float64)
    A = torch.randn(4, 3, pb.irreps_a.dim, dtype=torch.float64, requires_grad=True)
    scale = torch.randn(3, pb.irreps_out.dim, dtype=torch.float64, requires_grad=True)
    species = torch.tensor([0, 1, 1, 0])
    probe = torch.randn(pb.weights.shape, dtype=torch.float64)

    def call():
        energy = (pb(A, species).pow(2) * scale).sum()
        grad_A, grad_W = torch.autograd.grad(energy, (A, pb.weights), create_graph=True)
        loss = grad_A.pow(2).sum() + (grad_W * probe).sum()
        return torch.autograd.grad(loss, (A, *pb.parameters(), scale))

    fused, tensor = _both(pb.paths, fn=call)
    for a, b in zip(fused, tensor):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * b.abs().max().item())


@pytest.mark.parametrize("inputs, irreps_out, basis, species", [
    (("0e+1o+2e", "0e+1o+2e+3o", "0e+1o+2e+3o"), "0e+1o+2e", "cartesian", 3),
    (("0e+1o", "2x0e+1o+2e", "1o", "0e+1e"), "0e+1o", "spherical", 1),
])
def test_fused_distinct_inputs_equal_the_tensor_path_to_second_derivatives(inputs, irreps_out, basis, species):
    """Each step reads its own input from the concatenated A (fusion trees of distinct leaves):
    values, first derivatives and the backward of the backward."""
    _kernel()
    from tensorfuse.nn._product_paths import ProductPaths
    from tensorfuse.o3 import Irreps, ManyBodySpec

    torch.manual_seed(6)
    paths = ProductPaths(ManyBodySpec(inputs, irreps_out, len(inputs), symmetric=False), basis, dtype=torch.float64)
    A = torch.randn(5, 3, sum(Irreps(x).dim for x in inputs), dtype=torch.float64, requires_grad=True)
    W = torch.randn(species, 3, paths.num_paths, dtype=torch.float64, requires_grad=True)
    atoms = torch.arange(5) % species
    cotangent = torch.randn(5, 3, paths.irreps_out.dim, dtype=torch.float64)

    def call():
        out = paths(A, atoms, W)
        grad_A, grad_W = torch.autograd.grad(out, (A, W), cotangent, create_graph=True)
        return (out, grad_A, grad_W, *torch.autograd.grad(grad_A.pow(2).sum() + grad_W.pow(2).sum(), (A, W)))

    fused, tensor = _both(paths, fn=call)
    for a, b in zip(fused, tensor):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * b.abs().max().item())


def test_fused_batched_cotangents_equal_the_tensor_path():
    """Multi-state models take per-state derivatives with a batch of cotangents (vmap)."""
    _kernel()
    torch.manual_seed(2)
    pb = ProductBasis("1x0e+1x1o+1x2e", "1x0e+1x1o", 4, 3, 2, basis="spherical", dtype=torch.float64)
    A = torch.randn(5, 4, pb.irreps_a.dim, dtype=torch.float64, requires_grad=True)
    species = torch.tensor([0, 1, 1, 0, 1])
    cotangents = torch.randn(3, 5, 4, pb.irreps_out.dim, dtype=torch.float64)

    def call():
        return torch.autograd.grad(pb(A, species), A, cotangents, is_grads_batched=True)[0]

    fused, tensor = _both(pb.paths, fn=call)
    torch.testing.assert_close(fused, tensor, rtol=0, atol=1e-12)


def test_fused_float32_is_close_to_float64():
    _kernel()
    torch.manual_seed(3)
    pb = ProductBasis("1x0e+1x1o+1x2e+1x3o", "1x0e+1x1o", 8, 3, 2, basis="cartesian", dtype=torch.float64)
    A = torch.randn(6, 8, pb.irreps_a.dim, dtype=torch.float64)
    species = torch.tensor([0, 1, 1, 0, 1, 0])
    reference = pb(A, species)
    pb32 = pb.to(torch.float32)
    torch.testing.assert_close(pb32(A.float(), species).double(), reference, rtol=1e-4, atol=1e-4)


def _message_case(basis, dtype, irreps_node="1x0e+1x1o+1x2e", seed=0):
    torch.manual_seed(seed)
    tp = ChannelwiseTensorProduct(irreps_node, "1x0e+1x1o+1x2e+1x3o", "1x0e+1x1o+1x2e+1x3o", channels=5, basis=basis,
                                  dtype=dtype)
    n, e = 6, 17
    h = torch.randn(n, 5, tp.irreps_in1.dim, dtype=dtype, requires_grad=True)
    x2 = torch.randn(e, tp.irreps_in2.dim, dtype=dtype, requires_grad=True)
    w = torch.randn(e, 5, tp.num_paths, dtype=dtype, requires_grad=True)
    sender, receiver = torch.randint(0, n, (e,)), torch.randint(0, n, (e,))
    receiver[0] = sender[0]  # a self-loop and repeated receivers, as periodic images give
    return tp, h, x2, w, sender, receiver


@pytest.mark.parametrize("basis", ["spherical", "cartesian"])
def test_fused_message_passing_equals_tensor_path(basis):
    _kernel("message")
    tp, h, x2, w, sender, receiver = _message_case(basis, torch.float64)
    cotangent = torch.randn(6, 5, tp.irreps_out.dim, dtype=torch.float64)

    def call():
        out = tp.aggregate(h, x2, w, sender, receiver, 6)
        return (out, *torch.autograd.grad(out, (h, x2, w), cotangent))

    fused, tensor = _both(tp, fn=call)
    for a, b in zip(fused, tensor):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_fused_message_passing_second_derivatives_and_float32():
    _kernel("message")
    tp, h, x2, w, sender, receiver = _message_case("cartesian", torch.float64, seed=1)

    def call():
        (grad_h,) = torch.autograd.grad(tp.aggregate(h, x2, w, sender, receiver, 6).pow(2).sum(), h, create_graph=True)
        return torch.autograd.grad(grad_h.pow(2).sum(), (h, x2, w))

    fused, tensor = _both(tp, fn=call)
    for a, b in zip(fused, tensor):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    reference = tp.aggregate(h, x2, w, sender, receiver, 6)
    tp32 = tp.to(torch.float32)  # after a float64 call: its kernel tables follow the conversion
    out32 = tp32.aggregate(h.float(), x2.float(), w.float(), sender, receiver, 6)
    torch.testing.assert_close(out32.double(), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("basis", ["spherical", "cartesian"])
def test_fused_message_passing_second_derivatives_in_every_input(basis):
    """A loss on all three first derivatives (h, x2, w): every term of the kernel's second derivative."""
    _kernel("message")
    tp, h, x2, w, sender, receiver = _message_case(basis, torch.float64, seed=2)
    probe = [torch.randn(t.shape, dtype=torch.float64) for t in (h, x2, w)]

    def call():
        energy = tp.aggregate(h, x2, w, sender, receiver, 6).pow(2).sum()
        grads = torch.autograd.grad(energy, (h, x2, w), create_graph=True)
        loss = sum((g * p).sum() for g, p in zip(grads, probe))
        return torch.autograd.grad(loss, (h, x2, w))

    fused, tensor = _both(tp, fn=call)
    for a, b in zip(fused, tensor):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * b.abs().max().item())


def test_fused_kernels_with_two_threads_equal_one_thread():
    """Threads own ranges of atoms (message passing) or of atoms with their own weight-gradient
    copies (product basis): the same sums."""
    _kernel("message")
    _kernel("product")
    torch.manual_seed(4)
    tp = ChannelwiseTensorProduct("1x0e+1x1o", "1x0e+1x1o+1x2e", "1x0e+1x1o+1x2e", channels=8, basis="cartesian",
                                  dtype=torch.float64)
    n, e = 40, 1500  # enough edges for both threads to get some
    h = torch.randn(n, 8, 4, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(e, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(e, 8, tp.num_paths, dtype=torch.float64, requires_grad=True)
    sender, receiver = torch.randint(0, n, (e,)), torch.randint(0, n, (e,))
    pb = ProductBasis(tp.irreps_out, "1x0e+1x1o", 8, 2, 2, variant="full", basis="cartesian", dtype=torch.float64)
    species = torch.randint(0, 2, (n,))

    def call():
        A = tp.aggregate(h, x2, w, sender, receiver, n)
        out = pb(A, species)
        return (out, *torch.autograd.grad(out.pow(2).sum(), (h, x2, w, pb.weights)))

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = call()
        torch.set_num_threads(2)
        two = call()
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_message_passing_threads_own_atoms_and_give_the_numbers_of_one_thread():
    """Owner computes: each receiver's (for grad_h each sender's) row is summed by one thread in the
    edges' order, so two threads give one thread's numbers bit for bit, with no output copies."""
    _kernel("message")
    torch.manual_seed(5)
    tp = ChannelwiseTensorProduct("1x0e+1x1o", "1x0e+1x1o+1x2e", "1x0e+1x1o+1x2e", channels=8, basis="spherical",
                                  dtype=torch.float64)
    n, e = 50, 3000
    h = torch.randn(n, 8, 4, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(e, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(e, 8, tp.num_paths, dtype=torch.float64, requires_grad=True)
    sender, receiver = torch.randint(0, n, (e,)), torch.randint(0, n, (e,))  # not sorted by either

    def call():
        out = tp.aggregate(h, x2, w, sender, receiver, n)
        return (out, *torch.autograd.grad(out.pow(2).sum(), (h, x2, w)))

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = call()
        torch.set_num_threads(2)
        two = call()
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_the_kernels_refuse_out_of_range_atoms_and_species():
    """An index is checked before it is read or written through: an error, not memory corruption."""
    _kernel("message")
    _kernel("product")
    tp, h, x2, w, sender, receiver = _message_case("cartesian", torch.float64)
    for bad_sender, bad_receiver, name in ((sender, receiver.clone().fill_(6), "receiver"),
                                           (sender.clone().fill_(-1), receiver, "sender")):
        with pytest.raises(RuntimeError, match=name):
            tp.aggregate(h, x2, w, bad_sender, bad_receiver, 6)
    pb = ProductBasis("1x0e+1x1o+1x2e", "1x0e+1x1o", 4, 2, 2, variant="symmetric", basis="cartesian",
                      dtype=torch.float64)
    A = torch.randn(3, 4, pb.irreps_a.dim, dtype=torch.float64)
    pb(A, torch.tensor([0, 1, 1]))
    with pytest.raises(RuntimeError, match="species"):
        pb(A, torch.tensor([0, 2, 1]))  # two species: 0 and 1


class _Counting:
    """A kernel extension that counts its calls."""

    def __init__(self, extension, calls):
        self.extension, self.calls = extension, calls

    def __getattr__(self, name):
        function = getattr(self.extension, name)

        def counted(*args):
            self.calls[name] = self.calls.get(name, 0) + 1
            return function(*args)

        return counted


@pytest.mark.parametrize("architecture", [
    {"mace": {}}, {"mace": {"product_basis": "contraction"}},
    {"mace": {"product_basis": "fusion", "fusion_shape": "balanced"}},
    {"mace": {"product_basis": "fusion", "fusion_leaves": "distinct"}},
    {"architecture": "cormorant", "cormorant": {"fusion": True, "second_message": "distinct"}},
], ids=["symmetric", "contraction", "fusion-density", "fusion-distinct", "cormorant-fusion"])
def test_a_model_call_runs_the_fused_kernels(monkeypatch, architecture):
    """Energy and forces of a model on the CPU go through the kernels, forward and backward, whatever
    parametrizes its many-body product: one density's, distinct densities' or a Cormorant level's
    fusion trees (all on the one product plan)."""
    _kernel("message")
    _kernel("product")
    from tensorfuse import ModelConfig, build_model
    from tensorfuse.data import AtomicGraph
    from tensorfuse.nn import _kernels
    from tensorfuse.testing import random_molecule

    _kernel("linear")
    calls = {"product": {}, "message": {}, "linear": {}}
    for name in calls:
        monkeypatch.setitem(_kernels._loaded, name, _Counting(_kernels._loaded[name], calls[name]))
    config = ModelConfig(species=(1, 6, 8), channels=8, l_max=2, r_max=4.0, **architecture)
    potential = build_model(config, dtype=torch.float64, seed=0)
    positions, numbers = random_molecule((1, 6, 8), 8, seed=0)
    out = potential(AtomicGraph.from_arrays(positions, numbers, 4.0, dtype=torch.float64), forces=True)
    assert torch.isfinite(out["forces"]).all()
    for name in ("product", "message"):
        assert calls[name].get("forward", 0) >= 2 and calls[name].get("backward", 0) >= 2, (name, calls[name])
    assert calls["linear"].get("apply", 0) >= 5 and calls["linear"].get("transpose", 0) >= 5, calls["linear"]


def test_a_build_for_another_cpu_is_never_loaded(monkeypatch):
    """The cached library's name holds the CPU's instruction sets: a build made on another CPU (of a
    shared home, say) has another name and is never found here; this CPU builds its own."""
    from tensorfuse.nn import _kernels

    here = _kernels.cpu_features()
    source = b"// a kernel"
    assert _kernels.extension_name("message", source, here) == _kernels.extension_name("message", source, here)
    without_avx512 = " ".join(word for word in here.split() if not word.startswith("avx512")) + " AVX2"
    assert _kernels.extension_name("message", source, without_avx512) != _kernels.extension_name("message", source, here)

    import torch.utils.cpp_extension as cpp

    asked = []

    def build(name, **kwargs):
        asked.append(name)
        raise RuntimeError("not built in this test")

    monkeypatch.setattr(cpp, "load", build)
    for cpu in (here, without_avx512):
        monkeypatch.setattr(_kernels, "cpu_features", lambda cpu=cpu: cpu)
        monkeypatch.setattr(_kernels, "_loaded", {})
        monkeypatch.setattr(_kernels, "_failed", {})
        with pytest.warns(RuntimeWarning, match="could not be built"):
            assert _kernels.load_kernel("message") is None
    assert len(asked) == 2 and asked[0] != asked[1]


def test_backward_passes_skip_the_gradients_nobody_uses(monkeypatch):
    """Forces (a gradient with respect to positions) never need the product weights' gradient, and a
    training loss's backward over the parameters never the edge harmonics' (positions'): the kernels
    are asked for neither, and the parameters' gradients are those of a full backward."""
    _kernel("message")
    _kernel("product")
    from tensorfuse import ModelConfig, build_model
    from tensorfuse.data import AtomicGraph
    from tensorfuse.nn import _kernels
    from tensorfuse.nn._kernels import tensor_paths
    from tensorfuse.testing import random_molecule

    asked = {"product": [], "message": []}

    class Recording:
        def __init__(self, extension, log, flags):
            self.extension, self.log, self.flags = extension, log, flags

        def __getattr__(self, name):
            function = getattr(self.extension, name)
            if name != "backward":
                return function

            def recorded(*args):
                self.log.append(self.flags(args))
                return function(*args)

            return recorded

    monkeypatch.setitem(_kernels._loaded, "product", Recording(_kernels._loaded["product"], asked["product"],
                                                               lambda args: {"W": args[4]}))
    monkeypatch.setitem(_kernels._loaded, "message", Recording(_kernels._loaded["message"], asked["message"],
                                                               lambda args: {"h": args[-3], "M": args[-2]}))
    potential = build_model(ModelConfig(species=(1, 6, 8), channels=8, l_max=2, r_max=4.0), dtype=torch.float64, seed=0)
    positions, numbers = random_molecule((1, 6, 8), 8, seed=0)
    graph = AtomicGraph.from_arrays(positions, numbers, 4.0, dtype=torch.float64)
    params = [p for p in potential.parameters() if p.requires_grad]

    out = potential(graph, forces=True, create_graph=True)  # the forces pass
    assert asked["product"] and not any(flags["W"] for flags in asked["product"])
    assert not asked["message"][-1]["h"]  # the first layer's input is the species embedding
    loss = out["energy"].pow(2).sum() + out["forces"].pow(2).sum()
    count = len(asked["message"])
    narrowed = torch.autograd.grad(loss, params, retain_graph=True)
    assert asked["message"][count:] and not any(flags["M"] for flags in asked["message"][count:])
    with tensor_paths(potential):
        reference = potential(graph, forces=True, create_graph=True)
        full = torch.autograd.grad(reference["energy"].pow(2).sum() + reference["forces"].pow(2).sum(), params)
    for a, b in zip(narrowed, full):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("present", [(True, True, True), (True, False, False), (False, True, False),
                                     (False, False, True), (False, True, True), (True, True, False)])
@pytest.mark.parametrize("need", [(True, True, True, True), (True, True, False, True), (False, True, True, False)])
def test_message_second_derivatives_in_one_pass_equal_their_identities(present, need):
    """The kernel's fused second derivatives equal the identities they implement, written with its
    forward and backward (dG = f(a, M, w) + f(h, c, w) + f(h, M, b); dh, dM, dw from the backward),
    whichever upstream gradients are absent and whichever outputs are wanted."""
    _kernel("message")
    from tensorfuse.nn._tensor_product import _kernel_backward, _kernel_forward, _kernel_second_derivatives

    torch.manual_seed(3)
    tp = ChannelwiseTensorProduct("0e+1o+2e", "0e+1o+2e", None, channels=5, basis="cartesian", dtype=torch.float64)
    n, e = 6, 17
    h = torch.randn(n, 5, tp.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.randn(e, tp.irreps_in2.dim, dtype=torch.float64)
    w = torch.randn(e, 5, tp.num_paths, dtype=torch.float64)
    sender, receiver = torch.randint(0, n, (e,)), torch.randint(0, n, (e,)).sort().values
    module, U, pairs, path = tp._kernel(h)
    tables = (module, U, pairs, path, tp.irreps_out.dim)
    M = x2 @ U
    G = torch.randn(n, 5, tp.irreps_out.dim, dtype=torch.float64)
    a, c, b = (x if keep else None for x, keep in zip((torch.randn_like(h), torch.randn_like(M), torch.randn_like(w)),
                                                          present))
    fused = _kernel_second_derivatives(tables, G, h, M, w, sender, receiver, a, c, b, need)
    zero = (torch.zeros_like(h), torch.zeros_like(M), torch.zeros_like(w))
    a0, c0, b0 = (x if x is not None else z for x, z in zip((a, c, b), zero))
    every = (True, True, True)
    expected = (
        _kernel_forward(tables, a0, M, w, sender, receiver) + _kernel_forward(tables, h, c0, w, sender, receiver)
        + _kernel_forward(tables, h, M, b0, sender, receiver),
        _kernel_backward(tables, G, h, c0, w, sender, receiver, every)[0]
        + _kernel_backward(tables, G, h, M, b0, sender, receiver, every)[0],
        _kernel_backward(tables, G, a0, M, w, sender, receiver, every)[1]
        + _kernel_backward(tables, G, h, M, b0, sender, receiver, every)[1],
        _kernel_backward(tables, G, h, c0, w, sender, receiver, every)[2]
        + _kernel_backward(tables, G, a0, M, w, sender, receiver, every)[2],
    )
    flows = (any(present), present[1] or present[2], present[0] or present[2], present[0] or present[1])
    for got, want, wanted, flowing in zip(fused, expected, need, flows):
        if wanted and flowing:
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        else:
            assert got is None


LINEAR_CASES = [  # (irreps in, irreps out, channels in, channels out, species)
    ("1x0e", "1x0e", 6, 6, None),
    ("1x0e+1x1o+1x2e+1x3o", "1x0e+1x1o+1x2e+1x3o", 5, 4, None),
    ("2x0e+3x1o+3x2e+2x3o", "1x0e+1x1o+1x2e+1x3o", 4, 5, None),  # several copies in
    ("2x0e+1x1o", "1x1o+3x0e+1x2e", 5, 3, None),  # several copies out, interleaved; 2e has no input
    ("1x0e+1x1o", "1x0e", 6, 6, 3),  # per species (a self-connection)
    ("2x0e+1x1o", "1x1o+2x0e", 3, 4, 2),
]


def _linear_case(irreps_in, irreps_out, c_in, c_out, species, seed=0):
    torch.manual_seed(seed)
    linear = IrrepsLinear(irreps_in, irreps_out, c_in, c_out, num_species=species, dtype=torch.float64)
    x = torch.randn(7, c_in, linear.irreps_in.dim, dtype=torch.float64, requires_grad=True)
    z = torch.tensor([0, 1, 1, 0, 1, 0, 0]) % species if species else None
    return linear, x, z


@pytest.mark.parametrize("irreps_in, irreps_out, c_in, c_out, species", LINEAR_CASES)
def test_fused_linear_equals_tensor_path_to_second_derivatives(irreps_in, irreps_out, c_in, c_out, species):
    """Values, first derivatives (input and weights) and the derivatives of a loss on both (training
    on forces differentiates the backward) against the tensor path."""
    _kernel("linear")
    linear, x, z = _linear_case(irreps_in, irreps_out, c_in, c_out, species)
    scale = torch.randn(c_out, linear.irreps_out.dim, dtype=torch.float64, requires_grad=True)
    probes = [torch.randn(w.shape, dtype=torch.float64) for w in linear.weights]

    def call():
        out = linear(x, z)
        energy = (out.pow(2) * scale).sum()
        grad_x, *grad_w = torch.autograd.grad(energy, (x, *linear.weights), create_graph=True)
        loss = grad_x.pow(2).sum() + sum((g * p).sum() for g, p in zip(grad_w, probes))
        return (out, grad_x, *grad_w, *torch.autograd.grad(loss, (x, *linear.weights, scale)))

    fused, tensor = _both(linear, fn=call)
    for a, b in zip(fused, tensor):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("case", [LINEAR_CASES[2], LINEAR_CASES[4]], ids=["copies", "species"])
def test_fused_linear_batched_cotangents_equal_the_tensor_path(case):
    """A multi-state model's per-state forces: one backward pass with a batch of cotangents (vmap)."""
    _kernel("linear")
    linear, x, z = _linear_case(*case, seed=1)
    cotangents = torch.randn(3, 7, linear.channels_out, linear.irreps_out.dim, dtype=torch.float64)

    def call():
        return torch.autograd.grad(linear(x, z), x, cotangents, is_grads_batched=True)[0]

    fused, tensor = _both(linear, fn=call)
    torch.testing.assert_close(fused, tensor, rtol=0, atol=1e-12)


def test_the_linear_kernel_runs_and_refuses_out_of_range_species(monkeypatch):
    """The eager map goes through the kernel (forward: apply; backward: transpose); a species index
    outside the weights is an error, not a read outside them."""
    _kernel("linear")
    from tensorfuse.nn import _kernels

    calls = {}
    monkeypatch.setitem(_kernels._loaded, "linear", _Counting(_kernels._loaded["linear"], calls))
    linear, x, z = _linear_case(*LINEAR_CASES[4])
    torch.autograd.grad(linear(x, z).sum(), x)
    assert calls == {"apply": 1, "transpose": 1}
    tables = linear._kernel(x)
    with pytest.raises(RuntimeError, match="species"):
        tables.module.apply(x.detach(), linear._matrices(), torch.full((7,), 3), tables.types, tables.a_off,
                            tables.b_off, tables.scales, tables.c_b, tables.d_b, tables.num_species)
    with pytest.raises(RuntimeError, match="must be"):  # a weight of the wrong shape
        tables.module.apply(x.detach(), [w[:1] for w in linear._matrices()], z, tables.types, tables.a_off,
                            tables.b_off, tables.scales, tables.c_b, tables.d_b, tables.num_species)


def test_the_kernels_are_one_extension_and_unknown_names_are_errors():
    """One build makes every kernel (their sources compile together); a misspelt name is an error,
    not a silent tensor path."""
    _kernel("message")
    names = {load_kernel(name).__name__.rsplit(".", 1)[0] for name in ("message", "product", "linear")}
    assert len(names) == 1
    with pytest.raises(ValueError, match="no kernel 'messages'"):
        load_kernel("messages")
