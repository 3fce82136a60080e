// Fused CPU kernel of the message passing of tensorfuse.nn.ChannelwiseTensorProduct.aggregate:
//
//   A[r, c, o] = sum_{e: receiver(e) = r} w[e, c, path(o)] * sum_i h[sender(e), c, i] * M_e[i, o],
//   M_e[i, o]  = sum_j x2[e, j] U[j, i, o]   (one matrix product outside, for all edges at once)
//
// Edge by edge, all channels at once (the innermost loops run over channels and vectorize); the
// per-edge messages are never stored. Only the (i, o) pairs that U can make nonzero are visited.
// Threads own disjoint ranges of atoms (owner computes): the output row of a receiver (grad_h: of a
// sender) is written by one thread only, which visits that atom's edges in their original order
// (a stable counting sort), so any number of threads gives the numbers of one, with no private
// copies of the output. Every index is checked before use. Layouts: h [N, d1, C], A and grad_A
// [N, dout, C], grad_h [N, d1, C] (the Python side transposes these node-sized tensors); w and
// grad_w stay [E, C, P] (edge-sized, transposed per edge in cache).
#ifdef TENSORFUSE_NO_PYTHON  // compiled into the LAMMPS plugin: the operators only, no Python module
#include <torch/all.h>
#else
#include <torch/extension.h>
#endif
#include <torch/library.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

struct Shape {
  int64_t N, E, C, d1, dout, P;
  const int32_t* pairs;     // [n_pairs, 2]: (i, o) with U[:, i, o] != 0
  int64_t n_pairs;
  const int32_t* path;      // [dout]
};

template <typename T>
inline void transpose_weights(const Shape& s, const T* w, T* wt) {  // w[e]: [C, P] -> [P, C]
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t p = 0; p < s.P; ++p) wt[p * s.C + c] = w[c * s.P + p];
}

int64_t thread_count(int64_t E) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), E / 256 + 1));
}

// Calls body(e, buffers) for every edge, each thread on the edges of its own range of owner atoms
// (owner[e] in [0, N)), in the original edge order within an owner; make() gives a thread's buffers.
template <typename Make, typename Body>
void for_edges_by_owner(const int64_t* owner, int64_t E, int64_t N, Make make, Body body) {
  const int64_t threads = thread_count(E);
  if (threads == 1 || owner == nullptr) {  // one thread, or nothing scattered: plain ranges of edges
    at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        auto buffers = make();
        for (int64_t e = E * t / threads; e < E * (t + 1) / threads; ++e) body(e, buffers);
      }
    });
    return;
  }
  std::vector<int64_t> offsets(N + 1, 0), order(E);
  for (int64_t e = 0; e < E; ++e) ++offsets[owner[e] + 1];
  for (int64_t n = 0; n < N; ++n) offsets[n + 1] += offsets[n];
  {
    std::vector<int64_t> next(offsets.begin(), offsets.end() - 1);
    for (int64_t e = 0; e < E; ++e) order[next[owner[e]]++] = e;
  }
  std::vector<int64_t> first(threads + 1, N);  // owners [first[t], first[t+1]) have about E/threads edges
  for (int64_t t = 0; t < threads; ++t)
    first[t] = std::lower_bound(offsets.begin(), offsets.end(), E * t / threads) - offsets.begin();
  first[0] = 0;
  at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      auto buffers = make();
      for (int64_t k = offsets[std::min(first[t], N)]; k < offsets[std::min(first[t + 1], N)]; ++k)
        body(order[k], buffers);
    }
  });
}

template <typename T>
void forward_impl(const Shape& s, const T* h, const T* Mall, const T* w, const int64_t* sender,
                  const int64_t* receiver, T* A) {
  const int64_t C = s.C;
  struct Buffers { std::vector<T> acc, wt; };
  auto make = [&] { return Buffers{std::vector<T>(s.dout * C), std::vector<T>(s.P * C)}; };
  for_edges_by_owner(receiver, s.E, s.N, make, [&](int64_t e, Buffers& b) {
        std::vector<T>& acc = b.acc;
        std::vector<T>& wt = b.wt;
        T* out = A;
        const T* M = Mall + e * s.n_pairs;
        transpose_weights(s, w + e * C * s.P, wt.data());
        std::fill(acc.begin(), acc.end(), T(0));
        const T* hs = h + sender[e] * s.d1 * C;
        for (int64_t k = 0; k < s.n_pairs; ++k) {
          const T m = M[k];
          const T* hi = hs + s.pairs[2 * k] * C;
          T* a = acc.data() + s.pairs[2 * k + 1] * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) a[c] += m * hi[c];
        }
        T* Ar = out + receiver[e] * s.dout * C;
        for (int64_t o = 0; o < s.dout; ++o) {
          const T* wp = wt.data() + s.path[o] * C;
          const T* a = acc.data() + o * C;
          T* dst = Ar + o * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) dst[c] += a[c] * wp[c];
        }
  });
}

template <typename T>
void backward_impl(const Shape& s, const T* G, const T* h, const T* Mall, const T* w, const int64_t* sender,
                   const int64_t* receiver, T* grad_h, T* grad_M, T* grad_w) {
  const int64_t C = s.C;
  T* gh = grad_h;
  struct Buffers { std::vector<T> gw, y, wt, gwt; };
  auto make = [&] {
    return Buffers{std::vector<T>(s.dout * C), std::vector<T>(grad_w ? s.dout * C : 0), std::vector<T>(s.P * C),
                   std::vector<T>(grad_w ? s.P * C : 0)};
  };
  for_edges_by_owner(grad_h ? sender : nullptr, s.E, s.N, make, [&](int64_t e, Buffers& b) {
        std::vector<T>& gw = b.gw;
        std::vector<T>& y = b.y;
        std::vector<T>& wt = b.wt;
        std::vector<T>& gwt = b.gwt;
        const T* M = Mall + e * s.n_pairs;
        const T* Gr = G + receiver[e] * s.dout * C;
        transpose_weights(s, w + e * C * s.P, wt.data());
        const T* we = wt.data();
        const T* hs = h + sender[e] * s.d1 * C;
        for (int64_t o = 0; o < s.dout; ++o) {  // gw = G[r] * w[e, path(o)]
          const T* g = Gr + o * C;
          const T* wp = we + s.path[o] * C;
          T* dst = gw.data() + o * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) dst[c] = g[c] * wp[c];
        }
        if (grad_w) std::fill(y.begin(), y.end(), T(0));
        for (int64_t k = 0; k < s.n_pairs; ++k) {
          const int64_t i = s.pairs[2 * k], o = s.pairs[2 * k + 1];
          const T m = M[k];
          const T* hi = hs + i * C;
          const T* g = gw.data() + o * C;
          if (gh) {
            T* dst = gh + sender[e] * s.d1 * C + i * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) dst[c] += m * g[c];
          }
          if (grad_w) {
            T* yo = y.data() + o * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) yo[c] += m * hi[c];
          }
          if (grad_M) {
            T dot = 0;
#pragma omp simd reduction(+ : dot)
            for (int64_t c = 0; c < C; ++c) dot += hi[c] * g[c];
            grad_M[e * s.n_pairs + k] = dot;
          }
        }
        if (grad_w) {  // grad_w[e, p] = sum_{o in p} G[r, o] * y[o]
          T* gwe = gwt.data();
          std::fill(gwe, gwe + s.P * C, T(0));
          for (int64_t o = 0; o < s.dout; ++o) {
            const T* g = Gr + o * C;
            const T* yo = y.data() + o * C;
            T* dst = gwe + s.path[o] * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) dst[c] += g[c] * yo[c];
          }
          T* out = grad_w + e * C * s.P;  // back to [C, P]
          for (int64_t c = 0; c < C; ++c)
            for (int64_t p = 0; p < s.P; ++p) out[c * s.P + p] = gwe[p * C + c];
        }
  });
}

void check_index(const torch::Tensor& index, int64_t count, int64_t bound, const char* name) {
  TORCH_CHECK(index.scalar_type() == torch::kInt64 && index.dim() == 1 && index.numel() == count,
              "tensorfuse message kernel: ", name, " must be an int64 vector of ", count, " edges");
  const int64_t* v = index.data_ptr<int64_t>();
  for (int64_t e = 0; e < count; ++e)
    TORCH_CHECK(v[e] >= 0 && v[e] < bound, "tensorfuse message kernel: ", name, "[", e, "] = ", v[e],
                " is not an atom index in [0, ", bound, ")");
}

Shape make_shape(const torch::Tensor& h, const torch::Tensor& M, const torch::Tensor& w, const torch::Tensor& pairs,
                 const torch::Tensor& path, int64_t dout) {
  for (const torch::Tensor* t : {&h, &M, &w, &pairs, &path})
    TORCH_CHECK(t->device().is_cpu(), "tensorfuse message kernel: every tensor must be on the CPU");
  TORCH_CHECK(h.dim() == 3 && M.dim() == 2 && w.dim() == 3, "tensorfuse message kernel: h [N, d1, C], M [E, pairs] "
              "and w [E, C, P] expected");
  TORCH_CHECK(M.scalar_type() == h.scalar_type() && w.scalar_type() == h.scalar_type(),
              "tensorfuse message kernel: h, M and w must have one dtype");
  TORCH_CHECK(w.size(0) == M.size(0) && w.size(1) == h.size(2), "tensorfuse message kernel: w must be [E, C, P]");
  TORCH_CHECK(pairs.scalar_type() == torch::kInt32 && pairs.dim() == 2 && pairs.size(1) == 2 &&
              pairs.size(0) == M.size(1), "tensorfuse message kernel: pairs must be int32 [M.size(1), 2]");
  TORCH_CHECK(path.scalar_type() == torch::kInt32 && path.dim() == 1 && path.numel() == dout,
              "tensorfuse message kernel: path must be int32 [dout]");
  const int32_t* pv = pairs.data_ptr<int32_t>();
  for (int64_t k = 0; k < pairs.size(0); ++k)
    TORCH_CHECK(pv[2 * k] >= 0 && pv[2 * k] < h.size(1) && pv[2 * k + 1] >= 0 && pv[2 * k + 1] < dout,
                "tensorfuse message kernel: pair ", k, " out of range");
  const int32_t* qv = path.data_ptr<int32_t>();
  for (int64_t o = 0; o < dout; ++o)
    TORCH_CHECK(qv[o] >= 0 && qv[o] < w.size(2), "tensorfuse message kernel: path[", o, "] out of range");
  Shape s;
  s.N = h.size(0);
  s.d1 = h.size(1);
  s.C = h.size(2);
  s.E = M.size(0);
  s.P = w.size(2);
  s.dout = dout;
  s.pairs = pairs.data_ptr<int32_t>();
  s.n_pairs = pairs.size(0);
  s.path = path.data_ptr<int32_t>();
  return s;
}

}  // namespace

// h [N, d1, C], M [E, n_pairs], w [E, C, P] -> A [N, dout, C]
torch::Tensor message_forward(torch::Tensor h, torch::Tensor M, torch::Tensor w, torch::Tensor sender,
                              torch::Tensor receiver, torch::Tensor pairs, torch::Tensor path, int64_t dout) {
  h = h.contiguous(); M = M.contiguous(); w = w.contiguous();
  sender = sender.contiguous(); receiver = receiver.contiguous(); pairs = pairs.contiguous(); path = path.contiguous();
  Shape s = make_shape(h, M, w, pairs, path, dout);
  check_index(sender, s.E, s.N, "sender");
  check_index(receiver, s.E, s.N, "receiver");
  auto A = torch::zeros({s.N, dout, s.C}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "message_forward", [&] {
    forward_impl<scalar_t>(s, h.data_ptr<scalar_t>(), M.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                           sender.data_ptr<int64_t>(), receiver.data_ptr<int64_t>(), A.data_ptr<scalar_t>());
  });
  return A;
}

// G [N, dout, C] -> (grad_h [N, d1, C], grad_M [E, n_pairs], grad_w [E, C, P]); empty where not needed
std::vector<torch::Tensor> message_backward(torch::Tensor G, torch::Tensor h, torch::Tensor M, torch::Tensor w,
                                            torch::Tensor sender, torch::Tensor receiver, torch::Tensor pairs,
                                            torch::Tensor path, int64_t dout, bool need_h, bool need_M,
                                            bool need_w) {
  G = G.contiguous(); h = h.contiguous(); M = M.contiguous(); w = w.contiguous();
  sender = sender.contiguous(); receiver = receiver.contiguous(); pairs = pairs.contiguous(); path = path.contiguous();
  Shape s = make_shape(h, M, w, pairs, path, dout);
  check_index(sender, s.E, s.N, "sender");
  check_index(receiver, s.E, s.N, "receiver");
  TORCH_CHECK(G.dim() == 3 && G.size(0) == s.N && G.size(1) == dout && G.size(2) == s.C &&
              G.scalar_type() == h.scalar_type() && G.device().is_cpu(),
              "tensorfuse message kernel: the output gradient must be [N, dout, C] like the output");
  auto grad_h = need_h ? torch::zeros_like(h) : torch::empty({0}, h.options());
  auto grad_M = need_M ? torch::empty_like(M) : torch::empty({0}, h.options());
  auto grad_w = need_w ? torch::empty_like(w) : torch::empty({0}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "message_backward", [&] {
    backward_impl<scalar_t>(s, G.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), M.data_ptr<scalar_t>(),
                            w.data_ptr<scalar_t>(), sender.data_ptr<int64_t>(), receiver.data_ptr<int64_t>(),
                            need_h ? grad_h.data_ptr<scalar_t>() : nullptr,
                            need_M ? grad_M.data_ptr<scalar_t>() : nullptr,
                            need_w ? grad_w.data_ptr<scalar_t>() : nullptr);
  });
  return {grad_h, grad_M, grad_w};
}

// The operators of traced graphs (torch.compile, torch.export, AOTInductor, the LAMMPS plugin), in
// the layouts of the Python side: h and A [N, C, d], x2 [E, d2] with the used couplings U [d2, pairs].
// Their fake (shape) functions and autograd formulas are registered in tensorfuse.nn._kernel_ops.
namespace {

torch::Tensor message_passing_op(const torch::Tensor& h, const torch::Tensor& x2, const torch::Tensor& w,
                                 const torch::Tensor& sender, const torch::Tensor& receiver, const torch::Tensor& U,
                                 const torch::Tensor& pairs, const torch::Tensor& path, int64_t dout) {
  return message_forward(h.transpose(1, 2), x2.matmul(U), w, sender, receiver, pairs, path, dout)
      .transpose(1, 2)
      .contiguous();
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> message_passing_backward_op(
    const torch::Tensor& grad, const torch::Tensor& h, const torch::Tensor& x2, const torch::Tensor& w,
    const torch::Tensor& sender, const torch::Tensor& receiver, const torch::Tensor& U, const torch::Tensor& pairs,
    const torch::Tensor& path, bool need_h, bool need_x2, bool need_w) {
  auto g = message_backward(grad.transpose(1, 2), h.transpose(1, 2), x2.matmul(U), w, sender, receiver, pairs, path,
                            grad.size(2), need_h, need_x2, need_w);
  return {need_h ? g[0].transpose(1, 2).contiguous() : torch::zeros_like(h),
          need_x2 ? g[1].matmul(U.t()) : torch::zeros_like(x2), need_w ? g[2] : torch::zeros_like(w)};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tensorfuse, m) {
  m.def("message_passing(Tensor h, Tensor x2, Tensor w, Tensor sender, Tensor receiver, Tensor U, Tensor pairs, "
        "Tensor path, int dout) -> Tensor");
  m.def("message_passing_backward(Tensor grad, Tensor h, Tensor x2, Tensor w, Tensor sender, Tensor receiver, "
        "Tensor U, Tensor pairs, Tensor path, bool need_h, bool need_x2, bool need_w) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(tensorfuse, CPU, m) {
  m.impl("message_passing", &message_passing_op);
  m.impl("message_passing_backward", &message_passing_backward_op);
}

#ifndef TENSORFUSE_NO_PYTHON
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &message_forward, "fused message passing, forward");
  m.def("backward", &message_backward, "fused message passing, backward");
}
#endif
