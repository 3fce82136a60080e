// Fused CPU kernel of the iterated product basis (tensorfuse.nn.ProductBasis, "full"/"symmetric").
//
// Per atom, all channels at once (the innermost loops run over channels, so they vectorize), every
// intermediate product stays in a small per-thread buffer instead of streaming [N, C, ...] tensors
// through memory once per operation. The maths is a list of sparse coupling entries built in
// Python (_product_kernel.py) from the same plan and coupling blocks as the tensor path:
//
//   level s >= 1:  P_s[out] += coef * P_(s-1)[x] * A[a]             (P_0 = A)
//     or, a level given without coefficients (a "mixing" level of the reduced variant):
//                  P_s[out] += W[k] * P_(s-1)[x]                    (index rows (x, k, out))
//   collapse:      B[out]   += W[k] * P_level[col]
//   Horner sums:   S[s]     += W[k] * P_last[col]
//   final:         B[out]   += coef * S[s] * A[a]
//
// with W the species' path weights (already scaled). The backward recomputes the forward buffers
// of the atom and runs the entries in reverse; it gives dB/dA and (optionally) dB/dW. The backward
// of the backward (training on forces) runs the same atom-level code on dual numbers.
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

// Rows of C values; with D (dual numbers, for second derivatives) each row is followed by the C
// tangents of its values: x + eps x'. The same atom-level code then gives a derivative of itself.
template <bool D>
inline int64_t stride(int64_t C) { return D ? 2 * C : C; }

template <typename T, bool D>
struct Buffers {
  std::vector<std::vector<T>> levels;  // [dim][R] each
  std::vector<T> S;                    // [n_s][R]
  Buffers(const Plan& p) {
    for (auto d : p.level_dims) levels.emplace_back(d * stride<D>(p.C));
    S.resize(p.n_s * stride<D>(p.C));
  }
  void zero() {
    for (auto& level : levels) std::fill(level.begin(), level.end(), T(0));
    std::fill(S.begin(), S.end(), T(0));
  }
};

// out += coef x y
template <typename T, bool D>
inline void axpy_product(T* out, const T* x, const T* y, T coef, int64_t C) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) out[c] += coef * x[c] * y[c];
  if constexpr (D) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) out[C + c] += coef * (x[C + c] * y[c] + x[c] * y[C + c]);
  }
}

// out += w x
template <typename T, bool D>
inline void axpy_weighted(T* out, const T* w, const T* x, int64_t C) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) out[c] += w[c] * x[c];
  if constexpr (D) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) out[C + c] += w[C + c] * x[c] + w[c] * x[C + c];
  }
}

// rows [dim][R] from an atom's [C, dim] values (and tangents, or zeros)
template <typename T, bool D>
inline void load_rows(T* rows, const T* x, const T* tangent, int64_t C, int64_t dim) {
  const int64_t R = stride<D>(C);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t d = 0; d < dim; ++d) {
      rows[d * R + c] = x[c * dim + d];
      if constexpr (D) rows[d * R + C + c] = tangent ? tangent[c * dim + d] : T(0);
    }
}

// an atom's [C, dim] from rows (part 0: values, 1: tangents)
template <typename T, bool D>
inline void store_rows(T* x, const T* rows, int64_t C, int64_t dim, int part) {
  const int64_t R = stride<D>(C);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t d = 0; d < dim; ++d) x[c * dim + d] = rows[d * R + part * C + c];
}

// forward buffers of one atom: levels (P_0 = A) and Horner sums; Wz: the species' weights, [P][R]
template <typename T, bool D>
void atom_forward(const Plan& p, const T* A, const T* A_tangent, const T* Wz, Buffers<T, D>& b) {
  const int64_t C = p.C, R = stride<D>(C);
  T* P0 = b.levels[0].data();
  load_rows<T, D>(P0, A, A_tangent, C, p.D);
  for (size_t s = 1; s < b.levels.size(); ++s) {
    T* out = b.levels[s].data();
    std::fill(b.levels[s].begin(), b.levels[s].end(), T(0));
    const T* prev = b.levels[s - 1].data();
    const int32_t* idx = p.level_index[s - 1];
    const double* coef = p.level_coef[s - 1];
    if (coef == nullptr) {  // mixing level
      for (int64_t e = 0; e < p.level_count[s - 1]; ++e)
        axpy_weighted<T, D>(out + idx[3 * e + 2] * R, Wz + idx[3 * e + 1] * R, prev + idx[3 * e] * R, C);
      continue;
    }
    for (int64_t e = 0; e < p.level_count[s - 1]; ++e)
      axpy_product<T, D>(out + idx[3 * e + 2] * R, prev + idx[3 * e] * R, P0 + idx[3 * e + 1] * R, T(coef[e]), C);
  }
  std::fill(b.S.begin(), b.S.end(), T(0));
  const T* last = b.levels.back().data();
  for (int64_t e = 0; e < p.n_horner; ++e) {
    const int32_t* h = p.horner + 3 * e;
    axpy_weighted<T, D>(b.S.data() + h[0] * R, Wz + h[1] * R, last + h[2] * R, C);
  }
}

// B rows [dout][R] of one atom from its forward buffers
template <typename T, bool D>
void atom_output(const Plan& p, const T* Wz, const Buffers<T, D>& b, T* B) {
  const int64_t C = p.C, R = stride<D>(C);
  std::fill(B, B + p.dout * R, T(0));
  for (int64_t e = 0; e < p.n_collapse; ++e) {
    const int32_t* q = p.collapse + 4 * e;
    axpy_weighted<T, D>(B + q[2] * R, Wz + q[3] * R, b.levels[q[0]].data() + q[1] * R, C);
  }
  const T* P0 = b.levels[0].data();
  for (int64_t e = 0; e < p.n_final; ++e) {
    const int32_t* f = p.final_index + 3 * e;
    axpy_product<T, D>(B + f[2] * R, b.S.data() + f[0] * R, P0 + f[1] * R, T(p.final_coef[e]), C);
  }
}

// reverse pass of one atom: d.levels[0] = d<g, B>/dA, dWz += d<g, B>/dW (when given); d is zeroed here
template <typename T, bool D>
void atom_backward(const Plan& p, const T* Wz, const Buffers<T, D>& b, const T* g, Buffers<T, D>& d, T* dWz) {
  const int64_t C = p.C, R = stride<D>(C);
  d.zero();
  const T* P0 = b.levels[0].data();
  T* dP0 = d.levels[0].data();
  // final: B[out] += coef S[s] A[a]
  for (int64_t e = 0; e < p.n_final; ++e) {
    const int32_t* f = p.final_index + 3 * e;
    const T coef = T(p.final_coef[e]);
    axpy_product<T, D>(d.S.data() + f[0] * R, g + f[2] * R, P0 + f[1] * R, coef, C);
    axpy_product<T, D>(dP0 + f[1] * R, g + f[2] * R, b.S.data() + f[0] * R, coef, C);
  }
  // Horner sums: S[s] += W[k] P_last[col]
  T* dlast = d.levels.back().data();
  const T* last = b.levels.back().data();
  for (int64_t e = 0; e < p.n_horner; ++e) {
    const int32_t* h = p.horner + 3 * e;
    axpy_weighted<T, D>(dlast + h[2] * R, Wz + h[1] * R, d.S.data() + h[0] * R, C);
    if (dWz) axpy_weighted<T, D>(dWz + h[1] * R, d.S.data() + h[0] * R, last + h[2] * R, C);
  }
  // collapse: B[out] += W[k] P_level[col]
  for (int64_t e = 0; e < p.n_collapse; ++e) {
    const int32_t* q = p.collapse + 4 * e;
    axpy_weighted<T, D>(d.levels[q[0]].data() + q[1] * R, Wz + q[3] * R, g + q[2] * R, C);
    if (dWz) axpy_weighted<T, D>(dWz + q[3] * R, g + q[2] * R, b.levels[q[0]].data() + q[1] * R, C);
  }
  // levels, last first: P_s[out] += coef P_(s-1)[x] A[a]
  for (size_t s = b.levels.size() - 1; s >= 1; --s) {
    const T* prev = b.levels[s - 1].data();
    T* dprev = d.levels[s - 1].data();
    const T* dout = d.levels[s].data();
    const int32_t* idx = p.level_index[s - 1];
    const double* coef = p.level_coef[s - 1];
    if (coef == nullptr) {  // mixing level: P_s[out] += W[k] P_(s-1)[x]
      for (int64_t e = 0; e < p.level_count[s - 1]; ++e) {
        const int32_t* q = idx + 3 * e;
        axpy_weighted<T, D>(dprev + q[0] * R, Wz + q[1] * R, dout + q[2] * R, C);
        if (dWz) axpy_weighted<T, D>(dWz + q[1] * R, dout + q[2] * R, prev + q[0] * R, C);
      }
      continue;
    }
    for (int64_t e = 0; e < p.level_count[s - 1]; ++e) {
      const T cf = T(coef[e]);
      axpy_product<T, D>(dprev + idx[3 * e] * R, dout + idx[3 * e + 2] * R, P0 + idx[3 * e + 1] * R, cf, C);
      axpy_product<T, D>(dP0 + idx[3 * e + 1] * R, dout + idx[3 * e + 2] * R, prev + idx[3 * e] * R, cf, C);
    }
  }
}

template <typename T>
void forward_impl(const Plan& p, const T* A, const T* W, const int64_t* species, T* out, int64_t N) {
  const int64_t C = p.C;
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    Buffers<T, false> b(p);
    std::vector<T> B(p.dout * C);
    for (int64_t n = begin; n < end; ++n) {
      const T* Wz = W + species[n] * p.P * C;
      atom_forward<T, false>(p, A + n * C * p.D, nullptr, Wz, b);
      atom_output<T, false>(p, Wz, b, B.data());
      store_rows<T, false>(out + n * C * p.dout, B.data(), C, p.dout, 0);
    }
  });
}

// per-thread accumulators of the weight gradient, summed at the end (no atomics in the hot loop)
template <typename T>
struct WeightGrads {
  std::vector<std::vector<T>> parts;
  int64_t size;
  WeightGrads(bool need, int64_t size) : parts(need ? at::get_num_threads() : 0), size(size) {}
  T* mine() {
    if (parts.empty()) return nullptr;
    auto& part = parts[at::get_thread_num()];
    if (part.empty()) part.assign(size, T(0));
    return part.data();
  }
};

template <typename T>
void backward_impl(const Plan& p, const T* A, const T* W, const int64_t* species, const T* grad, T* grad_A,
                   T* grad_W, int64_t N, int64_t num_species) {
  const int64_t C = p.C;
  WeightGrads<T> dW(grad_W != nullptr, num_species * p.P * C);
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    Buffers<T, false> b(p), d(p);
    std::vector<T> g(p.dout * C);
    T* dW_here = dW.mine();
    for (int64_t n = begin; n < end; ++n) {
      const T* Wz = W + species[n] * p.P * C;
      atom_forward<T, false>(p, A + n * C * p.D, nullptr, Wz, b);
      load_rows<T, false>(g.data(), grad + n * C * p.dout, nullptr, C, p.dout);
      atom_backward<T, false>(p, Wz, b, g.data(), d, dW_here ? dW_here + species[n] * p.P * C : nullptr);
      store_rows<T, false>(grad_A + n * C * p.D, d.levels[0].data(), C, p.D, 0);
    }
  });
  for (auto& part : dW.parts)
    if (!part.empty())
      for (int64_t i = 0; i < dW.size; ++i) grad_W[i] += part[i];
}

// Backward of the backward (grad_A, grad_W) = d<G, B>/d(A, W) with upstream gradients (u, v) of
// (grad_A, grad_W): forward-over-reverse. With A + eps u and W + eps v, the eps parts of B,
// grad_A and grad_W are the derivatives wanted: d/dG = J (u, v), d/dA and d/dW (the Hessian of
// <G, B> is symmetric, and B is linear in W).
template <typename T>
void double_backward_impl(const Plan& p, const T* A, const T* W, const int64_t* species, const T* grad, const T* u,
                          const T* v, T* d_grad, T* d_A, T* d_W, int64_t N, int64_t num_species) {
  const int64_t C = p.C, R = 2 * C, PC = p.P * C;
  std::vector<T> Wdual(num_species * p.P * R);  // [Z][P][R]: weights and their tangents
  for (int64_t z = 0; z < num_species; ++z)
    for (int64_t k = 0; k < p.P; ++k)
      for (int64_t c = 0; c < C; ++c) {
        Wdual[(z * p.P + k) * R + c] = W[z * PC + k * C + c];
        Wdual[(z * p.P + k) * R + C + c] = v ? v[z * PC + k * C + c] : T(0);
      }
  WeightGrads<T> dW(d_W != nullptr, num_species * p.P * R);
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    Buffers<T, true> b(p), d(p);
    std::vector<T> g(p.dout * R), B(d_grad ? p.dout * R : 0);
    T* dW_here = dW.mine();
    for (int64_t n = begin; n < end; ++n) {
      const T* Wz = Wdual.data() + species[n] * p.P * R;
      atom_forward<T, true>(p, A + n * C * p.D, u ? u + n * C * p.D : nullptr, Wz, b);
      if (d_grad) {
        atom_output<T, true>(p, Wz, b, B.data());
        store_rows<T, true>(d_grad + n * C * p.dout, B.data(), C, p.dout, 1);
      }
      if (d_A || d_W) {
        load_rows<T, true>(g.data(), grad + n * C * p.dout, nullptr, C, p.dout);
        atom_backward<T, true>(p, Wz, b, g.data(), d, dW_here ? dW_here + species[n] * p.P * R : nullptr);
        if (d_A) store_rows<T, true>(d_A + n * C * p.D, d.levels[0].data(), C, p.D, 1);
      }
    }
  });
  if (d_W) {
    std::fill(d_W, d_W + num_species * PC, T(0));
    for (auto& part : dW.parts) {
      if (part.empty()) continue;
      for (int64_t zk = 0; zk < num_species * p.P; ++zk)
        for (int64_t c = 0; c < C; ++c) d_W[zk * C + c] += part[zk * R + C + c];
    }
  }
}

Plan make_plan(const torch::Tensor& A, const torch::Tensor& W, int64_t dout, const std::vector<int64_t>& level_dims,
               const std::vector<torch::Tensor>& level_index, const std::vector<torch::Tensor>& level_coef,
               const torch::Tensor& collapse, const torch::Tensor& horner, const torch::Tensor& final_index,
               const torch::Tensor& final_coef, int64_t n_s) {
  TORCH_CHECK(A.device().is_cpu() && W.device().is_cpu(), "tensorfuse product kernel: A and W must be on the CPU");
  TORCH_CHECK(A.dim() == 3 && W.dim() == 3 && W.size(2) == A.size(1) && W.scalar_type() == A.scalar_type(),
              "tensorfuse product kernel: A [N, C, D] and W [Z, P, C] of one dtype expected");
  TORCH_CHECK(!level_dims.empty() && level_dims[0] == A.size(2) && level_index.size() + 1 == level_dims.size() &&
              level_coef.size() == level_index.size(), "tensorfuse product kernel: the plan's levels do not match A");
  // the tables come from the planner, but an index read unchecked is memory corruption if they do not
  auto check_table = [](const torch::Tensor& table, int64_t columns, std::vector<int64_t> bounds, const char* name) {
    TORCH_CHECK(table.device().is_cpu() && table.scalar_type() == torch::kInt32 && table.is_contiguous() &&
                (table.numel() == 0 || (table.dim() == 2 && table.size(1) == columns)),
                "tensorfuse product kernel: table ", name, " must be contiguous int32 [n, ", columns, "]");
    const int32_t* v = table.numel() ? table.data_ptr<int32_t>() : nullptr;
    for (int64_t r = 0; r < (table.numel() ? table.size(0) : 0); ++r)
      for (int64_t c = 0; c < columns; ++c)
        TORCH_CHECK(bounds[c] < 0 || (v[r * columns + c] >= 0 && v[r * columns + c] < bounds[c]),
                    "tensorfuse product kernel: table ", name, " row ", r, " column ", c, " out of range");
  };
  const int64_t D = A.size(2), P = W.size(1), levels = static_cast<int64_t>(level_dims.size());
  const int64_t widest = *std::max_element(level_dims.begin(), level_dims.end());
  for (size_t i = 0; i < level_index.size(); ++i) {
    // (x, a, out), or for a mixing level (x, k, out)
    const bool mixing = level_coef[i].numel() == 0;
    check_table(level_index[i], 3, {level_dims[i], mixing ? P : D, level_dims[i + 1]}, "level");
    TORCH_CHECK(mixing || (level_coef[i].scalar_type() == torch::kFloat64 &&
                           level_coef[i].numel() == level_index[i].size(0)),
                "tensorfuse product kernel: one float64 coefficient per level entry expected");
  }
  check_table(collapse, 4, {levels, widest, dout, P}, "collapse");
  check_table(horner, 3, {n_s, P, level_dims.back()}, "horner");
  check_table(final_index, 3, {n_s, D, dout}, "final");
  TORCH_CHECK(final_coef.scalar_type() == torch::kFloat64 && final_coef.numel() == final_index.size(0),
              "tensorfuse product kernel: one float64 coefficient per final entry expected");
  const int32_t* rows = collapse.numel() ? collapse.data_ptr<int32_t>() : nullptr;
  for (int64_t r = 0; r < (collapse.numel() ? collapse.size(0) : 0); ++r)
    TORCH_CHECK(rows[4 * r + 1] < level_dims[rows[4 * r]], "tensorfuse product kernel: collapse row ", r,
                " out of range");
  Plan p;
  p.D = A.size(2);
  p.C = A.size(1);
  p.P = W.size(1);
  p.dout = dout;
  p.level_dims = level_dims;
  for (size_t i = 0; i < level_index.size(); ++i) {
    p.level_index.push_back(level_index[i].data_ptr<int32_t>());
    // no coefficients: a mixing level (weights instead)
    p.level_coef.push_back(level_coef[i].numel() > 0 ? level_coef[i].data_ptr<double>() : nullptr);
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

void check_species(const torch::Tensor& species, const torch::Tensor& A, const torch::Tensor& W) {
  TORCH_CHECK(species.device().is_cpu() && species.scalar_type() == torch::kInt64 && species.dim() == 1 &&
              species.numel() == A.size(0), "tensorfuse product kernel: species must be int64 [N] like A's atoms");
  const int64_t* z = species.data_ptr<int64_t>();
  for (int64_t n = 0; n < species.numel(); ++n)
    TORCH_CHECK(z[n] >= 0 && z[n] < W.size(0), "tensorfuse product kernel: species[", n, "] = ", z[n],
                " is not one of the model's ", W.size(0), " species");
}

void check_like(const torch::Tensor& t, const torch::Tensor& like, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == like.scalar_type() && t.sizes() == like.sizes(),
              "tensorfuse product kernel: ", name, " must have the shape and dtype ", like.sizes(), " on the CPU");
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
  check_species(species, A, W);
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
  check_species(species, A, W);
  TORCH_CHECK(grad.dim() == 3 && grad.size(0) == A.size(0) && grad.size(1) == A.size(1) && grad.size(2) == dout &&
              grad.scalar_type() == A.scalar_type(), "tensorfuse product kernel: the gradient must be [N, C, dout]");
  auto grad_A = torch::empty_like(A);
  auto grad_W = need_W ? torch::zeros_like(W) : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "product_backward", [&] {
    backward_impl<scalar_t>(p, A.data_ptr<scalar_t>(), W.data_ptr<scalar_t>(), species.data_ptr<int64_t>(),
                            grad.data_ptr<scalar_t>(), grad_A.data_ptr<scalar_t>(),
                            need_W ? grad_W.data_ptr<scalar_t>() : nullptr, A.size(0), W.size(0));
  });
  return {grad_A, need_W ? grad_W : torch::empty({0}, A.options())};
}

// upstream gradients u (of dB/dA, or empty) and v (of dB/dW, or empty) -> (d grad, d A, d W), empty where
// not needed
std::vector<torch::Tensor> product_double_backward(torch::Tensor grad, torch::Tensor A, torch::Tensor W,
                                                   torch::Tensor species, torch::Tensor u, torch::Tensor v,
                                                   bool need_grad, bool need_A, bool need_W, int64_t dout,
                                                   std::vector<int64_t> level_dims,
                                                   std::vector<torch::Tensor> level_index,
                                                   std::vector<torch::Tensor> level_coef, torch::Tensor collapse,
                                                   torch::Tensor horner, torch::Tensor final_index,
                                                   torch::Tensor final_coef, int64_t n_s) {
  A = A.contiguous();
  W = W.contiguous();
  grad = grad.contiguous();
  species = species.contiguous();
  const bool has_u = u.numel() > 0, has_v = v.numel() > 0;
  if (has_u) u = u.contiguous();
  if (has_v) v = v.contiguous();
  Plan p = make_plan(A, W, dout, level_dims, level_index, level_coef, collapse, horner, final_index, final_coef, n_s);
  check_species(species, A, W);
  TORCH_CHECK(grad.dim() == 3 && grad.size(0) == A.size(0) && grad.size(1) == A.size(1) && grad.size(2) == dout &&
              grad.scalar_type() == A.scalar_type(), "tensorfuse product kernel: the gradient must be [N, C, dout]");
  if (has_u) check_like(u, A, "u");
  if (has_v) check_like(v, W, "v");
  auto empty = torch::empty({0}, A.options());
  auto d_grad = need_grad ? torch::empty_like(grad) : empty;
  auto d_A = need_A ? torch::empty_like(A) : empty;
  auto d_W = need_W ? torch::empty_like(W) : empty;
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "product_double_backward", [&] {
    double_backward_impl<scalar_t>(p, A.data_ptr<scalar_t>(), W.data_ptr<scalar_t>(), species.data_ptr<int64_t>(),
                                   grad.data_ptr<scalar_t>(), has_u ? u.data_ptr<scalar_t>() : nullptr,
                                   has_v ? v.data_ptr<scalar_t>() : nullptr,
                                   need_grad ? d_grad.data_ptr<scalar_t>() : nullptr,
                                   need_A ? d_A.data_ptr<scalar_t>() : nullptr,
                                   need_W ? d_W.data_ptr<scalar_t>() : nullptr, A.size(0), W.size(0));
  });
  return {d_grad, d_A, d_W};
}

// The operators of traced graphs (torch.compile, torch.export, AOTInductor, the LAMMPS plugin), with
// the weights W [Z, C, P] as the Python side holds them. Their fake (shape) functions and autograd
// formulas are registered in tensorfuse.nn._kernel_ops. The tensor lists end in a placeholder that is
// dropped here: AOTInductor's C++ runner reads an empty tensor list as None.
namespace {

std::vector<torch::Tensor> without_placeholder(std::vector<torch::Tensor> list) {
  TORCH_CHECK(!list.empty(), "tensorfuse product operator: a tensor list lacks its trailing placeholder");
  list.pop_back();
  return list;
}

torch::Tensor product_basis_op(const torch::Tensor& A, const torch::Tensor& W, const torch::Tensor& species,
                               int64_t dout, std::vector<int64_t> level_dims, std::vector<torch::Tensor> level_index,
                               std::vector<torch::Tensor> level_coef, const torch::Tensor& collapse,
                               const torch::Tensor& horner, const torch::Tensor& final_index,
                               const torch::Tensor& final_coef, int64_t n_s) {
  return product_forward(A, W.transpose(1, 2), species, dout, level_dims, without_placeholder(level_index),
                         without_placeholder(level_coef), collapse, horner, final_index, final_coef, n_s);
}

std::tuple<torch::Tensor, torch::Tensor> product_basis_backward_op(
    const torch::Tensor& grad, const torch::Tensor& A, const torch::Tensor& W, const torch::Tensor& species,
    bool need_W, int64_t dout, std::vector<int64_t> level_dims, std::vector<torch::Tensor> level_index,
    std::vector<torch::Tensor> level_coef, const torch::Tensor& collapse, const torch::Tensor& horner,
    const torch::Tensor& final_index, const torch::Tensor& final_coef, int64_t n_s) {
  auto g = product_backward(grad, A, W.transpose(1, 2), species, need_W, dout, level_dims,
                            without_placeholder(level_index), without_placeholder(level_coef), collapse, horner,
                            final_index, final_coef, n_s);
  return {g[0], need_W ? g[1].transpose(1, 2).contiguous() : torch::zeros_like(W)};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tensorfuse, m) {
  m.def("product_basis(Tensor A, Tensor W, Tensor species, int dout, int[] level_dims, Tensor[] level_index, "
        "Tensor[] level_coef, Tensor collapse, Tensor horner, Tensor final_index, Tensor final_coef, int n_s) -> Tensor");
  m.def("product_basis_backward(Tensor grad, Tensor A, Tensor W, Tensor species, bool need_W, int dout, "
        "int[] level_dims, Tensor[] level_index, Tensor[] level_coef, Tensor collapse, Tensor horner, "
        "Tensor final_index, Tensor final_coef, int n_s) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(tensorfuse, CPU, m) {
  m.impl("product_basis", &product_basis_op);
  m.impl("product_basis_backward", &product_basis_backward_op);
}

#ifndef TENSORFUSE_NO_PYTHON
void bind_product_kernel(pybind11::module_ m) {  // the Python module: _kernels_module.cpp
  m.def("forward", &product_forward, "product basis, forward");
  m.def("backward", &product_backward, "product basis, backward");
  m.def("double_backward", &product_double_backward, "product basis, backward of the backward");
}
#endif
