// Fused CPU kernel of the iterated product basis (tensorfuse.nn.ProductBasis, "full"/"symmetric").
//
// Per atom, all channels at once (the innermost loops run over channels, so they vectorize), every
// intermediate product stays in a small per-thread buffer instead of streaming [N, C, ...] tensors
// through memory once per operation. The maths is a list of sparse coupling entries built in
// Python (_product_kernel.py) from the same plan and coupling blocks as the tensor path:
//
//   level s >= 1:  P_s[out] += coef * P_(s-1)[x] * A[a]             (P_0 = A)
//   collapse:      B[out]   += W[k] * P_level[col]
//   Horner sums:   S[s]     += W[k] * P_last[col]
//   final:         B[out]   += coef * S[s] * A[a]
//
// with W the species' path weights (already scaled). The backward recomputes the forward buffers
// of the atom and runs the entries in reverse; it gives dB/dA and (optionally) dB/dW.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <vector>

namespace {

struct Plan {
  int64_t D, dout, C, P;
  std::vector<int64_t> level_dims;              // dims of P_0 = A, P_1, ... (materialized levels)
  std::vector<const int32_t*> level_index;      // per level s >= 1: [n, 3] (x, a, out)
  std::vector<const double*> level_coef;        // per level s >= 1: [n]
  std::vector<int64_t> level_count;
  const int32_t* collapse; int64_t n_collapse;  // [n, 4]: (level, col, out, k)
  const int32_t* horner; int64_t n_horner;      // [n, 3]: (s, k, col in the last level)
  const int32_t* final_index; const double* final_coef; int64_t n_final;  // [n, 3]: (s, a, out)
  int64_t n_s;
};

template <typename T>
struct Buffers {
  std::vector<std::vector<T>> levels;  // [dim][C] each
  std::vector<T> S;                    // [n_s][C]
  Buffers(const Plan& p) {
    for (auto d : p.level_dims) levels.emplace_back(d * p.C);
    S.resize(p.n_s * p.C);
  }
};

template <typename T>
inline void axpy_product(T* out, const T* x, const T* y, T coef, int64_t C) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) out[c] += coef * x[c] * y[c];
}

template <typename T>
inline void axpy_weighted(T* out, const T* w, const T* x, int64_t C) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) out[c] += w[c] * x[c];
}

// forward buffers of one atom: levels (A transposed to [D][C] first) and Horner sums
template <typename T>
void atom_forward(const Plan& p, const T* A, const T* W, Buffers<T>& b) {
  const int64_t C = p.C;
  T* P0 = b.levels[0].data();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t d = 0; d < p.D; ++d) P0[d * C + c] = A[c * p.D + d];
  for (size_t s = 1; s < b.levels.size(); ++s) {
    T* out = b.levels[s].data();
    std::fill(b.levels[s].begin(), b.levels[s].end(), T(0));
    const T* prev = b.levels[s - 1].data();
    const int32_t* idx = p.level_index[s - 1];
    const double* coef = p.level_coef[s - 1];
    for (int64_t e = 0; e < p.level_count[s - 1]; ++e)
      axpy_product(out + idx[3 * e + 2] * C, prev + idx[3 * e] * C, P0 + idx[3 * e + 1] * C, T(coef[e]), C);
  }
  std::fill(b.S.begin(), b.S.end(), T(0));
  const T* last = b.levels.back().data();
  for (int64_t e = 0; e < p.n_horner; ++e) {
    const int32_t* h = p.horner + 3 * e;
    axpy_weighted(b.S.data() + h[0] * C, W + h[1] * C, last + h[2] * C, C);
  }
}

template <typename T>
void forward_impl(const Plan& p, const T* A, const T* W, const int64_t* species, T* out, int64_t N) {
  const int64_t C = p.C;
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    Buffers<T> b(p);
    std::vector<T> B(p.dout * C);
    for (int64_t n = begin; n < end; ++n) {
      const T* Wz = W + species[n] * p.P * C;
      atom_forward(p, A + n * C * p.D, Wz, b);
      std::fill(B.begin(), B.end(), T(0));
      for (int64_t e = 0; e < p.n_collapse; ++e) {
        const int32_t* q = p.collapse + 4 * e;
        axpy_weighted(B.data() + q[2] * C, Wz + q[3] * C, b.levels[q[0]].data() + q[1] * C, C);
      }
      const T* P0 = b.levels[0].data();
      for (int64_t e = 0; e < p.n_final; ++e) {
        const int32_t* f = p.final_index + 3 * e;
        axpy_product(B.data() + f[2] * C, b.S.data() + f[0] * C, P0 + f[1] * C, T(p.final_coef[e]), C);
      }
      T* o = out + n * C * p.dout;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t d = 0; d < p.dout; ++d) o[c * p.dout + d] = B[d * C + c];
    }
  });
}

template <typename T>
void backward_impl(const Plan& p, const T* A, const T* W, const int64_t* species, const T* grad, T* grad_A,
                   T* grad_W, int64_t N, int64_t num_species) {
  const int64_t C = p.C;
  const int64_t threads = at::get_num_threads();
  // per-thread weight gradients, summed at the end (no atomics in the hot loop)
  std::vector<std::vector<T>> dW_parts(grad_W ? threads : 0, std::vector<T>());
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    Buffers<T> b(p), d(p);
    std::vector<T> g(p.dout * C);
    std::vector<T>* dW = nullptr;
    if (grad_W) {
      dW = &dW_parts[at::get_thread_num()];
      if (dW->empty()) dW->assign(num_species * p.P * C, T(0));
    }
    for (int64_t n = begin; n < end; ++n) {
      const T* Wz = W + species[n] * p.P * C;
      T* dWz = dW ? dW->data() + species[n] * p.P * C : nullptr;
      atom_forward(p, A + n * C * p.D, Wz, b);
      const T* gn = grad + n * C * p.dout;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t o = 0; o < p.dout; ++o) g[o * C + c] = gn[c * p.dout + o];
      for (auto& level : d.levels) std::fill(level.begin(), level.end(), T(0));
      std::fill(d.S.begin(), d.S.end(), T(0));
      const T* P0 = b.levels[0].data();
      T* dP0 = d.levels[0].data();
      // final: B[out] += coef S[s] A[a]
      for (int64_t e = 0; e < p.n_final; ++e) {
        const int32_t* f = p.final_index + 3 * e;
        const T coef = T(p.final_coef[e]);
        axpy_product(d.S.data() + f[0] * C, g.data() + f[2] * C, P0 + f[1] * C, coef, C);
        axpy_product(dP0 + f[1] * C, g.data() + f[2] * C, b.S.data() + f[0] * C, coef, C);
      }
      // Horner sums: S[s] += W[k] P_last[col]
      T* dlast = d.levels.back().data();
      const T* last = b.levels.back().data();
      for (int64_t e = 0; e < p.n_horner; ++e) {
        const int32_t* h = p.horner + 3 * e;
        axpy_weighted(dlast + h[2] * C, Wz + h[1] * C, d.S.data() + h[0] * C, C);
        if (dWz) axpy_weighted(dWz + h[1] * C, d.S.data() + h[0] * C, last + h[2] * C, C);
      }
      // collapse: B[out] += W[k] P_level[col]
      for (int64_t e = 0; e < p.n_collapse; ++e) {
        const int32_t* q = p.collapse + 4 * e;
        axpy_weighted(d.levels[q[0]].data() + q[1] * C, Wz + q[3] * C, g.data() + q[2] * C, C);
        if (dWz) axpy_weighted(dWz + q[3] * C, g.data() + q[2] * C, b.levels[q[0]].data() + q[1] * C, C);
      }
      // levels, last first: P_s[out] += coef P_(s-1)[x] A[a]
      for (size_t s = b.levels.size() - 1; s >= 1; --s) {
        const T* prev = b.levels[s - 1].data();
        T* dprev = d.levels[s - 1].data();
        const T* dout = d.levels[s].data();
        const int32_t* idx = p.level_index[s - 1];
        const double* coef = p.level_coef[s - 1];
        for (int64_t e = 0; e < p.level_count[s - 1]; ++e) {
          const T cf = T(coef[e]);
          axpy_product(dprev + idx[3 * e] * C, dout + idx[3 * e + 2] * C, P0 + idx[3 * e + 1] * C, cf, C);
          axpy_product(dP0 + idx[3 * e + 1] * C, dout + idx[3 * e + 2] * C, prev + idx[3 * e] * C, cf, C);
        }
      }
      T* ga = grad_A + n * C * p.D;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t k = 0; k < p.D; ++k) ga[c * p.D + k] = dP0[k * C + c];
    }
  });
  if (grad_W) {
    for (auto& part : dW_parts) {
      if (part.empty()) continue;
      for (int64_t i = 0; i < num_species * p.P * C; ++i) grad_W[i] += part[i];
    }
  }
}

Plan make_plan(const torch::Tensor& A, const torch::Tensor& W, int64_t dout, const std::vector<int64_t>& level_dims,
               const std::vector<torch::Tensor>& level_index, const std::vector<torch::Tensor>& level_coef,
               const torch::Tensor& collapse, const torch::Tensor& horner, const torch::Tensor& final_index,
               const torch::Tensor& final_coef, int64_t n_s) {
  Plan p;
  p.D = A.size(2);
  p.C = A.size(1);
  p.P = W.size(1);
  p.dout = dout;
  p.level_dims = level_dims;
  for (size_t i = 0; i < level_index.size(); ++i) {
    p.level_index.push_back(level_index[i].data_ptr<int32_t>());
    p.level_coef.push_back(level_coef[i].data_ptr<double>());
    p.level_count.push_back(level_index[i].size(0));
  }
  p.collapse = collapse.data_ptr<int32_t>();
  p.n_collapse = collapse.size(0);
  p.horner = horner.data_ptr<int32_t>();
  p.n_horner = horner.size(0);
  p.final_index = final_index.data_ptr<int32_t>();
  p.final_coef = final_coef.data_ptr<double>();
  p.n_final = final_index.size(0);
  p.n_s = n_s;
  return p;
}

}  // namespace

// A [N, C, D], W [Z, P, C] (scaled weights, channels last), species [N] -> B [N, C, dout]
torch::Tensor product_forward(torch::Tensor A, torch::Tensor W, torch::Tensor species, int64_t dout,
                              std::vector<int64_t> level_dims, std::vector<torch::Tensor> level_index,
                              std::vector<torch::Tensor> level_coef, torch::Tensor collapse, torch::Tensor horner,
                              torch::Tensor final_index, torch::Tensor final_coef, int64_t n_s) {
  A = A.contiguous();
  W = W.contiguous();
  species = species.contiguous();
  Plan p = make_plan(A, W, dout, level_dims, level_index, level_coef, collapse, horner, final_index, final_coef, n_s);
  auto out = torch::empty({A.size(0), A.size(1), dout}, A.options());
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "product_forward", [&] {
    forward_impl<scalar_t>(p, A.data_ptr<scalar_t>(), W.data_ptr<scalar_t>(), species.data_ptr<int64_t>(),
                           out.data_ptr<scalar_t>(), A.size(0));
  });
  return out;
}

// -> (dB/dA, dB/dW or an empty tensor)
std::vector<torch::Tensor> product_backward(torch::Tensor grad, torch::Tensor A, torch::Tensor W,
                                            torch::Tensor species, bool need_W, int64_t dout,
                                            std::vector<int64_t> level_dims, std::vector<torch::Tensor> level_index,
                                            std::vector<torch::Tensor> level_coef, torch::Tensor collapse,
                                            torch::Tensor horner, torch::Tensor final_index, torch::Tensor final_coef,
                                            int64_t n_s) {
  A = A.contiguous();
  W = W.contiguous();
  grad = grad.contiguous();
  species = species.contiguous();
  Plan p = make_plan(A, W, dout, level_dims, level_index, level_coef, collapse, horner, final_index, final_coef, n_s);
  auto grad_A = torch::empty_like(A);
  auto grad_W = need_W ? torch::zeros_like(W) : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "product_backward", [&] {
    backward_impl<scalar_t>(p, A.data_ptr<scalar_t>(), W.data_ptr<scalar_t>(), species.data_ptr<int64_t>(),
                            grad.data_ptr<scalar_t>(), grad_A.data_ptr<scalar_t>(),
                            need_W ? grad_W.data_ptr<scalar_t>() : nullptr, A.size(0), W.size(0));
  });
  return {grad_A, need_W ? grad_W : torch::empty({0}, A.options())};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &product_forward, "product basis, forward");
  m.def("backward", &product_backward, "product basis, backward");
}
