// Fused CPU kernel of tensorfuse.nn.IrrepsLinear (eager calls on small systems).
//
// The map sends side A, x [N, C_a, D_a], to side B, y [N, C_b, D_b]. Per irrep type t (dimension d,
// na copies on side A at column offsets a_off, nb copies on side B at b_off, weight W_t
// [C_a na, Z C_b nb], rows (c, s), columns (z, o, q)):
//
//   y[n, o, b_off[q] + m] = scale_t sum_{c, s} x[n, c, a_off[s] + m] W_t[c na + s, z_n C_b nb + o nb + q]
//
// with z_n the species of atom n (Z = 1: no species). Three functions cover every derivative of it
// (all three are bilinear): `apply` (A -> B, the map), `transpose` (B -> A with W_t transposed: the
// map's derivative in x) and `weight_grad` (scale_t X_t^T G_t: its derivative in W). Each gathers a
// type's copies into one [N d, fan] matrix, makes one matrix product (BLAS) and scatters the result:
// one call instead of the ~25 tensor operations (and their autograd nodes) per map of the tensor
// path, whose dispatch costs more than the arithmetic for molecules of tens of atoms.
// Every table and species index is checked before use.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <vector>

namespace {

struct Type {  // one row of the `types` table
  int64_t d, na, nb, weight, a_start, b_start;  // weight: index into the list, -1: none (output zero)
};

struct Plan {
  std::vector<Type> types;
  const int64_t* a_off;
  const int64_t* b_off;
  std::vector<double> scales;
  int64_t N, C_a, D_a, C_b, D_b, Z;
  const int64_t* species;  // [N], or nullptr when Z == 1
};

Plan make_plan(const torch::Tensor& types, const torch::Tensor& a_off, const torch::Tensor& b_off,
               const std::vector<double>& scales, const torch::Tensor& species, int64_t N, int64_t C_a, int64_t D_a,
               int64_t C_b, int64_t D_b, int64_t Z, const std::vector<torch::Tensor>& weights, bool check_shapes = true) {
  for (const torch::Tensor* t : {&types, &a_off, &b_off, &species})
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == torch::kInt64 && t->is_contiguous(),
                "tensorfuse linear kernel: tables and species must be contiguous int64 CPU tensors");
  TORCH_CHECK(types.dim() == 2 && types.size(1) == 6 && static_cast<int64_t>(scales.size()) == types.size(0),
              "tensorfuse linear kernel: types must be [T, 6] with one scale per type");
  TORCH_CHECK(Z >= 1, "tensorfuse linear kernel: Z must be >= 1");
  Plan p;
  p.a_off = a_off.data_ptr<int64_t>();
  p.b_off = b_off.data_ptr<int64_t>();
  p.scales = scales;
  p.N = N, p.C_a = C_a, p.D_a = D_a, p.C_b = C_b, p.D_b = D_b, p.Z = Z;
  p.species = nullptr;
  if (Z > 1) {
    TORCH_CHECK(species.dim() == 1 && species.numel() == N, "tensorfuse linear kernel: species must be [N]");
    p.species = species.data_ptr<int64_t>();
    for (int64_t n = 0; n < N; ++n)
      TORCH_CHECK(p.species[n] >= 0 && p.species[n] < Z, "tensorfuse linear kernel: species[", n, "] = ",
                  p.species[n], " is not in [0, ", Z, ")");
  }
  const int64_t* tv = types.data_ptr<int64_t>();
  for (int64_t t = 0; t < types.size(0); ++t) {
    Type ty{tv[6 * t], tv[6 * t + 1], tv[6 * t + 2], tv[6 * t + 3], tv[6 * t + 4], tv[6 * t + 5]};
    TORCH_CHECK(ty.d >= 1 && ty.na >= 0 && ty.nb >= 1 && ty.a_start >= 0 && ty.a_start + ty.na <= a_off.numel() &&
                    ty.b_start >= 0 && ty.b_start + ty.nb <= b_off.numel(),
                "tensorfuse linear kernel: types[", t, "] is inconsistent with the offset tables");
    for (int64_t s = 0; s < ty.na; ++s)
      TORCH_CHECK(p.a_off[ty.a_start + s] >= 0 && p.a_off[ty.a_start + s] + ty.d <= D_a,
                  "tensorfuse linear kernel: an input column offset is out of range");
    for (int64_t q = 0; q < ty.nb; ++q)
      TORCH_CHECK(p.b_off[ty.b_start + q] >= 0 && p.b_off[ty.b_start + q] + ty.d <= D_b,
                  "tensorfuse linear kernel: an output column offset is out of range");
    if (ty.weight >= 0 && check_shapes) {
      TORCH_CHECK(ty.weight < static_cast<int64_t>(weights.size()) && ty.na >= 1,
                  "tensorfuse linear kernel: types[", t, "] names a missing weight");
      const torch::Tensor& w = weights[ty.weight];
      TORCH_CHECK(w.dim() == 2 && w.size(0) == C_a * ty.na && w.size(1) == Z * C_b * ty.nb,
                  "tensorfuse linear kernel: weight ", ty.weight, " must be [", C_a * ty.na, ", ", Z * C_b * ty.nb,
                  "], got ", w.sizes());
    }
    p.types.push_back(ty);
  }
  return p;
}

void check_features(const torch::Tensor& x, int64_t N, int64_t C, int64_t D, const char* name) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3 && x.size(0) == N && x.size(1) == C && x.size(2) == D,
              "tensorfuse linear kernel: ", name, " must be a CPU tensor [", N, ", ", C, ", ", D, "], got ",
              x.sizes());
}

void check_weights(const std::vector<torch::Tensor>& weights, const torch::Tensor& x) {
  for (const torch::Tensor& w : weights)
    TORCH_CHECK(w.device().is_cpu() && w.scalar_type() == x.scalar_type(),
                "tensorfuse linear kernel: the weights must be CPU tensors of the features' dtype");
}

// X[n d + m, c na + s] = scale x[n, c, a_off[s] + m]: side A's copies of one type as one matrix
template <typename T>
void gather_a(const Plan& p, const Type& ty, const T* x, T scale, T* X) {
  const int64_t d = ty.d, na = ty.na, K = p.C_a * na;
  const int64_t* off = p.a_off + ty.a_start;
  at::parallel_for(0, p.N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n)
      for (int64_t m = 0; m < d; ++m) {
        T* row = X + (n * d + m) * K;
        for (int64_t c = 0; c < p.C_a; ++c) {
          const T* xc = x + (n * p.C_a + c) * p.D_a + m;
          for (int64_t s = 0; s < na; ++s) row[c * na + s] = scale * xc[off[s]];
        }
      }
  });
}

// G[n d + m, z C_b nb + o nb + q] = scale g[n, o, b_off[q] + m] for z = z_n, zero for other species
template <typename T>
void gather_b(const Plan& p, const Type& ty, const T* g, T scale, T* G) {
  const int64_t d = ty.d, nb = ty.nb, F = p.C_b * nb;
  const int64_t* off = p.b_off + ty.b_start;
  at::parallel_for(0, p.N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t z = p.species ? p.species[n] : 0;
      for (int64_t m = 0; m < d; ++m) {
        T* row = G + (n * d + m) * F * p.Z;
        if (p.Z > 1) std::fill(row, row + F * p.Z, T(0));
        row += z * F;
        for (int64_t o = 0; o < p.C_b; ++o) {
          const T* go = g + (n * p.C_b + o) * p.D_b + m;
          for (int64_t q = 0; q < nb; ++q) row[o * nb + q] = scale * go[off[q]];
        }
      }
    }
  });
}

torch::Tensor apply(const torch::Tensor& x_in, const std::vector<torch::Tensor>& weights, const torch::Tensor& species,
                    const torch::Tensor& types, const torch::Tensor& a_off, const torch::Tensor& b_off,
                    const std::vector<double>& scales, int64_t C_b, int64_t D_b, int64_t Z) {
  TORCH_CHECK(x_in.dim() == 3, "tensorfuse linear kernel: x must be [N, C, D]");
  const torch::Tensor x = x_in.contiguous();
  const int64_t N = x.size(0);
  check_weights(weights, x);
  const Plan p = make_plan(types, a_off, b_off, scales, species, N, x.size(1), x.size(2), C_b, D_b, Z, weights);
  torch::Tensor y = torch::zeros({N, C_b, D_b}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tensorfuse_linear_apply", [&] {
    for (size_t t = 0; t < p.types.size(); ++t) {
      const Type& ty = p.types[t];
      if (ty.weight < 0) continue;
      const int64_t d = ty.d, nb = ty.nb, F = C_b * nb;
      torch::Tensor X = torch::empty({N * d, p.C_a * ty.na}, x.options());
      gather_a<scalar_t>(p, ty, x.data_ptr<scalar_t>(), static_cast<scalar_t>(p.scales[t]), X.data_ptr<scalar_t>());
      const torch::Tensor Y = torch::mm(X, weights[ty.weight]).contiguous();  // [N d, Z F]
      const scalar_t* Yv = Y.data_ptr<scalar_t>();
      scalar_t* yv = y.data_ptr<scalar_t>();
      const int64_t* off = p.b_off + ty.b_start;
      at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          const int64_t z = p.species ? p.species[n] : 0;
          for (int64_t m = 0; m < d; ++m) {
            const scalar_t* row = Yv + (n * d + m) * F * Z + z * F;
            for (int64_t o = 0; o < C_b; ++o) {
              scalar_t* yo = yv + (n * C_b + o) * D_b + m;
              for (int64_t q = 0; q < nb; ++q) yo[off[q]] = row[o * nb + q];
            }
          }
        }
      });
    }
  });
  return y;
}

// side B -> side A with every W_t transposed: the map's derivative in x applied to g
torch::Tensor transpose(const torch::Tensor& g_in, const std::vector<torch::Tensor>& weights,
                        const torch::Tensor& species, const torch::Tensor& types, const torch::Tensor& a_off,
                        const torch::Tensor& b_off, const std::vector<double>& scales, int64_t C_a, int64_t D_a,
                        int64_t Z) {
  TORCH_CHECK(g_in.dim() == 3, "tensorfuse linear kernel: g must be [N, C, D]");
  const torch::Tensor g = g_in.contiguous();
  const int64_t N = g.size(0);
  check_weights(weights, g);
  const Plan p = make_plan(types, a_off, b_off, scales, species, N, C_a, D_a, g.size(1), g.size(2), Z, weights);
  torch::Tensor out = torch::zeros({N, C_a, D_a}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "tensorfuse_linear_transpose", [&] {
    for (size_t t = 0; t < p.types.size(); ++t) {
      const Type& ty = p.types[t];
      if (ty.weight < 0) continue;
      const int64_t d = ty.d, na = ty.na, K = C_a * na;
      torch::Tensor G = torch::empty({N * d, Z * p.C_b * ty.nb}, g.options());
      gather_b<scalar_t>(p, ty, g.data_ptr<scalar_t>(), static_cast<scalar_t>(p.scales[t]), G.data_ptr<scalar_t>());
      const torch::Tensor X = torch::mm(G, weights[ty.weight].t()).contiguous();  // [N d, C_a na]
      const scalar_t* Xv = X.data_ptr<scalar_t>();
      scalar_t* ov = out.data_ptr<scalar_t>();
      const int64_t* off = p.a_off + ty.a_start;
      at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n)
          for (int64_t m = 0; m < d; ++m) {
            const scalar_t* row = Xv + (n * d + m) * K;
            for (int64_t c = 0; c < C_a; ++c) {
              scalar_t* oc = ov + (n * C_a + c) * D_a + m;
              for (int64_t s = 0; s < na; ++s) oc[off[s]] = row[c * na + s];
            }
          }
      });
    }
  });
  return out;
}

// dW_t = scale_t X_t(x)^T G_t(g), one per weight (x on side A, g on side B)
std::vector<torch::Tensor> weight_grad(const torch::Tensor& x_in, const torch::Tensor& g_in,
                                       const torch::Tensor& species, const torch::Tensor& types,
                                       const torch::Tensor& a_off, const torch::Tensor& b_off,
                                       const std::vector<double>& scales, int64_t num_weights, int64_t Z) {
  TORCH_CHECK(x_in.dim() == 3 && g_in.dim() == 3 && x_in.size(0) == g_in.size(0) &&
                  x_in.scalar_type() == g_in.scalar_type(),
              "tensorfuse linear kernel: x [N, C_a, D_a] and g [N, C_b, D_b] of one dtype expected");
  const torch::Tensor x = x_in.contiguous(), g = g_in.contiguous();
  const int64_t N = x.size(0);
  const Plan p = make_plan(types, a_off, b_off, scales, species, N, x.size(1), x.size(2), g.size(1), g.size(2), Z, {}, false);
  std::vector<torch::Tensor> grads(num_weights);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tensorfuse_linear_weight_grad", [&] {
    for (size_t t = 0; t < p.types.size(); ++t) {
      const Type& ty = p.types[t];
      if (ty.weight < 0) continue;
      TORCH_CHECK(ty.weight < num_weights, "tensorfuse linear kernel: types[", t, "] names a missing weight");
      torch::Tensor X = torch::empty({N * ty.d, p.C_a * ty.na}, x.options());
      torch::Tensor G = torch::empty({N * ty.d, Z * p.C_b * ty.nb}, x.options());
      gather_a<scalar_t>(p, ty, x.data_ptr<scalar_t>(), static_cast<scalar_t>(p.scales[t]), X.data_ptr<scalar_t>());
      gather_b<scalar_t>(p, ty, g.data_ptr<scalar_t>(), scalar_t(1), G.data_ptr<scalar_t>());
      grads[ty.weight] = torch::mm(X.t(), G);
    }
  });
  for (int64_t k = 0; k < num_weights; ++k)
    TORCH_CHECK(grads[k].defined(), "tensorfuse linear kernel: weight ", k, " belongs to no type");
  return grads;
}

}  // namespace

void bind_linear_kernel(pybind11::module_ m) {  // the Python module: _kernels_module.cpp
  m.def("apply", &apply, "irreps linear map, side A -> side B");
  m.def("transpose", &transpose, "its transpose, side B -> side A");
  m.def("weight_grad", &weight_grad, "its derivative in the weights");
}
