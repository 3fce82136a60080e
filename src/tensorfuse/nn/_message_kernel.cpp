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

// An edge's weight gradient out[c, p] = sum_{o in p} G[r, o, c] * y[o, c] (buffer: [P, C]).
template <typename T>
inline void weight_gradient(const Shape& s, const T* Gr, const T* y, T* buffer, T* out) {
  const int64_t C = s.C;
  std::fill(buffer, buffer + s.P * C, T(0));
  for (int64_t o = 0; o < s.dout; ++o) {
    const T* g = Gr + o * C;
    const T* yo = y + o * C;
    T* dst = buffer + s.path[o] * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) dst[c] += g[c] * yo[c];
  }
  for (int64_t c = 0; c < C; ++c)  // back to [C, P]
    for (int64_t p = 0; p < s.P; ++p) out[c * s.P + p] = buffer[p * C + c];
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
        if (grad_w) weight_gradient(s, Gr, y.data(), gwt.data(), grad_w + e * C * s.P);
  });
}

// Second derivatives: with f(h, M, w) the (trilinear) forward, G the output gradient and upstream
// gradients a (of grad_h), c (of grad_M), b (of grad_w), any of them absent (nullptr):
//   dG = f(a, M, w) + f(h, c, w) + f(h, M, b)                     (scattered to receivers)
//   dM[e, k] = <a[s, i], G[r, o] w[e, p(o)]> + <h[s, i], G[r, o] b[e, p(o)]>
//   dw[e, p] = sum_{o in p} G[r, o] (sum_k M[e, k] a[s, i] + c[e, k] h[s, i])
//   dh[s, i] += sum_k c[e, k] G[r, o] w[e, p(o)] + M[e, k] G[r, o] b[e, p(o)]   (scattered to senders)
// in two passes over the edges: one owned by receivers (dG, and the per-edge dM, dw), one by senders
// (dh), each visiting an edge's pairs once for every term.
template <typename T>
void double_backward_impl(const Shape& s, const T* G, const T* h, const T* Mall, const T* w, const T* a,
                          const T* call, const T* b, const int64_t* sender, const int64_t* receiver, T* dG, T* dh,
                          T* dM, T* dw) {
  const int64_t C = s.C;
  const bool want_y = dG || dw;  // the products y[o] = sum_k M a + c h (and M h with b)
  struct Buffers { std::vector<T> y, yb, wt, bt, gw, gb, dwt; };
  auto make = [&] {
    return Buffers{std::vector<T>(s.dout * C), std::vector<T>(b ? s.dout * C : 0), std::vector<T>(s.P * C),
                   std::vector<T>(b ? s.P * C : 0), std::vector<T>(s.dout * C), std::vector<T>(b ? s.dout * C : 0),
                   std::vector<T>(dw ? s.P * C : 0)};
  };
  auto weights = [&](int64_t e, Buffers& B) {
    transpose_weights(s, w + e * C * s.P, B.wt.data());
    if (b) transpose_weights(s, b + e * C * s.P, B.bt.data());
  };
  auto gradient_weights = [&](int64_t e, Buffers& B) {  // gw[o] = G[r, o] w[p(o)], gb[o] = G[r, o] b[p(o)]
    const T* Gr = G + receiver[e] * s.dout * C;
    for (int64_t o = 0; o < s.dout; ++o) {
      const T* g = Gr + o * C;
      const T* wp = B.wt.data() + s.path[o] * C;
      T* dst = B.gw.data() + o * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) dst[c] = g[c] * wp[c];
      if (b) {
        const T* bp = B.bt.data() + s.path[o] * C;
        T* dstb = B.gb.data() + o * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dstb[c] = g[c] * bp[c];
      }
    }
  };
  if (dG || dM || dw) {
    for_edges_by_owner(dG ? receiver : nullptr, s.E, s.N, make, [&](int64_t e, Buffers& B) {
      weights(e, B);
      if (dM) gradient_weights(e, B);
      const T* M = Mall + e * s.n_pairs;
      const T* ce = call ? call + e * s.n_pairs : nullptr;
      const T* hs = h + sender[e] * s.d1 * C;
      const T* as = a ? a + sender[e] * s.d1 * C : nullptr;
      if (want_y) std::fill(B.y.begin(), B.y.end(), T(0));
      if (b && dG) std::fill(B.yb.begin(), B.yb.end(), T(0));
      for (int64_t k = 0; k < s.n_pairs; ++k) {
        const int64_t i = s.pairs[2 * k], o = s.pairs[2 * k + 1];
        const T m = M[k];
        const T* hi = hs + i * C;
        if (want_y) {
          T* yo = B.y.data() + o * C;
          if (as) {
            const T* ai = as + i * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) yo[c] += m * ai[c];
          }
          if (ce) {
            const T ck = ce[k];
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) yo[c] += ck * hi[c];
          }
        }
        if (b && dG) {
          T* yo = B.yb.data() + o * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) yo[c] += m * hi[c];
        }
        if (dM) {
          T dot = 0;
          if (as) {
            const T* ai = as + i * C;
            const T* g = B.gw.data() + o * C;
#pragma omp simd reduction(+ : dot)
            for (int64_t c = 0; c < C; ++c) dot += ai[c] * g[c];
          }
          if (b) {
            const T* g = B.gb.data() + o * C;
#pragma omp simd reduction(+ : dot)
            for (int64_t c = 0; c < C; ++c) dot += hi[c] * g[c];
          }
          dM[e * s.n_pairs + k] = dot;
        }
      }
      const T* Gr = G + receiver[e] * s.dout * C;
      if (dG) {
        T* Dr = dG + receiver[e] * s.dout * C;
        for (int64_t o = 0; o < s.dout; ++o) {
          const T* wp = B.wt.data() + s.path[o] * C;
          const T* yo = B.y.data() + o * C;
          T* dst = Dr + o * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) dst[c] += yo[c] * wp[c];
          if (b) {
            const T* bp = B.bt.data() + s.path[o] * C;
            const T* ybo = B.yb.data() + o * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) dst[c] += ybo[c] * bp[c];
          }
        }
      }
      if (dw) weight_gradient(s, Gr, B.y.data(), B.dwt.data(), dw + e * C * s.P);
    });
  }
  if (dh && (call || b)) {
    for_edges_by_owner(sender, s.E, s.N, make, [&](int64_t e, Buffers& B) {
      weights(e, B);
      gradient_weights(e, B);
      const T* M = Mall + e * s.n_pairs;
      const T* ce = call ? call + e * s.n_pairs : nullptr;
      T* ds = dh + sender[e] * s.d1 * C;
      for (int64_t k = 0; k < s.n_pairs; ++k) {
        const int64_t i = s.pairs[2 * k], o = s.pairs[2 * k + 1];
        T* dst = ds + i * C;
        if (ce) {
          const T ck = ce[k];
          const T* g = B.gw.data() + o * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) dst[c] += ck * g[c];
        }
        if (b) {
          const T m = M[k];
          const T* g = B.gb.data() + o * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) dst[c] += m * g[c];
        }
      }
    });
  }
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

// The inputs of a backward pass made contiguous (in place) and checked: the output gradient G
// [N, dout, C] beside those of the forward.
Shape backward_shape(torch::Tensor& G, torch::Tensor& h, torch::Tensor& M, torch::Tensor& w, torch::Tensor& sender,
                     torch::Tensor& receiver, torch::Tensor& pairs, torch::Tensor& path, int64_t dout) {
  G = G.contiguous(); h = h.contiguous(); M = M.contiguous(); w = w.contiguous();
  sender = sender.contiguous(); receiver = receiver.contiguous(); pairs = pairs.contiguous(); path = path.contiguous();
  Shape s = make_shape(h, M, w, pairs, path, dout);
  check_index(sender, s.E, s.N, "sender");
  check_index(receiver, s.E, s.N, "receiver");
  TORCH_CHECK(G.dim() == 3 && G.size(0) == s.N && G.size(1) == dout && G.size(2) == s.C &&
              G.scalar_type() == h.scalar_type() && G.device().is_cpu(),
              "tensorfuse message kernel: the output gradient must be [N, dout, C] like the output");
  return s;
}

// G [N, dout, C] -> (grad_h [N, d1, C], grad_M [E, n_pairs], grad_w [E, C, P]); empty where not needed
std::vector<torch::Tensor> message_backward(torch::Tensor G, torch::Tensor h, torch::Tensor M, torch::Tensor w,
                                            torch::Tensor sender, torch::Tensor receiver, torch::Tensor pairs,
                                            torch::Tensor path, int64_t dout, bool need_h, bool need_M,
                                            bool need_w) {
  Shape s = backward_shape(G, h, M, w, sender, receiver, pairs, path, dout);
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

// (dG [N, dout, C], dh [N, d1, C], dM [E, n_pairs], dw [E, C, P]) from G [N, dout, C] and upstream
// gradients a [N, d1, C] (of grad_h), c [E, n_pairs] (of grad_M), b [E, C, P] (of grad_w), each a 1-d
// empty tensor where absent; outputs empty where not needed (see double_backward_impl)
std::vector<torch::Tensor> message_double_backward(torch::Tensor G, torch::Tensor h, torch::Tensor M, torch::Tensor w,
                                                   torch::Tensor sender, torch::Tensor receiver, torch::Tensor a,
                                                   torch::Tensor c, torch::Tensor b, torch::Tensor pairs,
                                                   torch::Tensor path, int64_t dout, bool need_G, bool need_h,
                                                   bool need_M, bool need_w) {
  Shape s = backward_shape(G, h, M, w, sender, receiver, pairs, path, dout);
  const bool has_a = a.dim() == 3, has_c = c.dim() == 2, has_b = b.dim() == 3;  // absent: a 1-d empty tensor
  if (has_a) a = a.contiguous();
  if (has_c) c = c.contiguous();
  if (has_b) b = b.contiguous();
  TORCH_CHECK(!has_a || (a.sizes() == h.sizes() && a.scalar_type() == h.scalar_type() && a.device().is_cpu()),
              "tensorfuse message kernel: the gradient of grad_h must be shaped like h");
  TORCH_CHECK(!has_c || (c.sizes() == M.sizes() && c.scalar_type() == h.scalar_type() && c.device().is_cpu()),
              "tensorfuse message kernel: the gradient of grad_M must be shaped like M");
  TORCH_CHECK(!has_b || (b.sizes() == w.sizes() && b.scalar_type() == h.scalar_type() && b.device().is_cpu()),
              "tensorfuse message kernel: the gradient of grad_w must be shaped like w");
  // a term is there only if its upstream gradient is: dG needs any, dh needs c or b, dM a or b, dw a or c
  need_G = need_G && (has_a || has_c || has_b);
  need_h = need_h && (has_c || has_b);
  need_M = need_M && (has_a || has_b);
  need_w = need_w && (has_a || has_c);
  auto dG = need_G ? torch::zeros_like(G) : torch::empty({0}, h.options());
  auto dh = need_h ? torch::zeros_like(h) : torch::empty({0}, h.options());
  auto dM = need_M ? torch::empty_like(M) : torch::empty({0}, h.options());
  auto dw = need_w ? torch::empty_like(w) : torch::empty({0}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "message_double_backward", [&] {
    double_backward_impl<scalar_t>(
        s, G.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), M.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
        has_a ? a.data_ptr<scalar_t>() : nullptr, has_c ? c.data_ptr<scalar_t>() : nullptr,
        has_b ? b.data_ptr<scalar_t>() : nullptr, sender.data_ptr<int64_t>(), receiver.data_ptr<int64_t>(),
        need_G ? dG.data_ptr<scalar_t>() : nullptr, need_h ? dh.data_ptr<scalar_t>() : nullptr,
        need_M ? dM.data_ptr<scalar_t>() : nullptr, need_w ? dw.data_ptr<scalar_t>() : nullptr);
  });
  return {dG, dh, dM, dw};
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
void bind_message_kernel(pybind11::module_ m) {  // the Python module: _kernels_module.cpp
  m.def("forward", &message_forward, "fused message passing, forward");
  m.def("backward", &message_backward, "fused message passing, backward");
  m.def("double_backward", &message_double_backward, "fused message passing, second derivatives");
}
#endif
