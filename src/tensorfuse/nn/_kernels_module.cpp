// The Python module of the fused CPU kernels: one extension built from every kernel's source at
// once (the sources compile in parallel), each kernel's functions in a submodule of its name.
#include <torch/extension.h>

void bind_message_kernel(pybind11::module_ m);
void bind_product_kernel(pybind11::module_ m);
void bind_linear_kernel(pybind11::module_ m);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  bind_message_kernel(m.def_submodule("message"));
  bind_product_kernel(m.def_submodule("product"));
  bind_linear_kernel(m.def_submodule("linear"));
}
