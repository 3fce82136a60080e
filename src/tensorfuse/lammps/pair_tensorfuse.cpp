// pair_style tensorfuse: a tensorfuse model (compiled ahead of time by `tensorfuse export ... --for lammps`) as a
// LAMMPS pair style, loaded at run time with `plugin load`.
//
//   plugin load   /path/to/tensorfuseplugin.so        # `tensorfuse lammps-plugin` prints the path
//   pair_style    tensorfuse [state NAME]
//   pair_coeff    * * model.pt2 C H O                 # the element of each atom type
//
// The model is message passing over `num_layers` layers of cutoff `r_max`: an owned atom's site
// energy depends on atoms up to num_layers * r_max away, so the ghost cutoff is raised to that
// (plus the skin). The model sees the owned atoms, the ghost atoms owned by other processes and
// the edges into them; ghosts that are periodic images of this process's own atoms are folded onto
// them (the edge keeps the image's vector), so one process evaluates exactly the periodic graph
// of the ASE calculator. Forces on ghost atoms go to their owners by LAMMPS's reverse
// communication (newton_pair on); per-atom energies are the site energies; the virial and
// per-atom virials come from the gradient of the energy with respect to every edge vector.
//
// This library links libtorch and is loaded by the plugin (tensorfuse_plugin.cpp) with its own
// symbols first: liblammps exports a reference BLAS (dgemm_, ...) that would otherwise replace
// libtorch's own and make every matrix product several times slower.
//
// Written for tensorfuse from the documented Pair interface; no LAMMPS source is copied.

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "lammps.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "pair.h"
#include "update.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <malloc.h>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

using namespace LAMMPS_NS;

namespace {

std::vector<std::string> split_words(const std::string &text)
{
  std::istringstream stream(text);
  std::vector<std::string> words;
  std::string word;
  while (stream >> word) words.push_back(word);
  return words;
}

// the instruction-set flags of this CPU (/proc/cpuinfo; empty where the system does not say)
std::vector<std::string> cpu_flags()
{
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    auto key = split_words(line.substr(0, colon));
    if (key.size() == 1 && (key[0] == "flags" || key[0] == "Features")) return split_words(line.substr(colon + 1));
  }
  return {};
}

}    // namespace

class PairTensorfuse : public Pair {
 public:
  explicit PairTensorfuse(LAMMPS *lmp) : Pair(lmp)
  {
    // a model call allocates and frees tensors of tens of MB: glibc would map and unmap each one
    // (page faults on every call: 3x slower on 10,000 atoms); keep freed memory in the heap
    // instead, as tensorfuse.utils.tune_malloc does for Python processes
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, INT_MAX);
    single_enable = 0;
    restartinfo = 0;
    one_coeff = 1;
    manybody_flag = 1;
    no_virial_fdotr_compute = 1;    // the virial comes from the edge gradients
    ghostneigh = 1;                 // ghost atoms need neighbour lists: the halo's edges
    centroidstressflag = CENTROID_NOTAVAIL;
  }

  ~PairTensorfuse() override
  {
    if (allocated) {
      memory->destroy(setflag);
      memory->destroy(cutsq);
      memory->destroy(cutghost);
    }
  }

  void settings(int narg, char **arg) override
  {
    state_name.clear();
    for (int i = 0; i < narg; i += 2) {
      if (i + 1 >= narg) error->all(FLERR, "pair_style tensorfuse: keyword {} needs a value", arg[i]);
      if (strcmp(arg[i], "state") == 0)
        state_name = arg[i + 1];
      else
        error->all(FLERR, "pair_style tensorfuse: unknown keyword {} (known: state)", arg[i]);
    }
  }

  void coeff(int narg, char **arg) override
  {
    if (!allocated) allocate();
    int ntypes = atom->ntypes;
    if (narg != 3 + ntypes)
      error->all(FLERR, "pair_coeff * * MODEL.pt2 needs one element per atom type: {} types, {} elements given",
                 ntypes, narg - 3);
    if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
      error->all(FLERR, "pair_coeff for pair_style tensorfuse is 'pair_coeff * * MODEL.pt2 ELEMENTS...'");
    load_model(arg[2]);
    type_number.assign(ntypes + 1, -1);
    type_mass.assign(ntypes + 1, 0.0);
    type_element.assign(ntypes + 1, "");
    for (int t = 1; t <= ntypes; t++) {
      std::string element = arg[2 + t];
      int k = 0;
      while (k < (int) elements.size() && elements[k] != element) k++;
      if (k == (int) elements.size())
        error->all(FLERR, "pair_coeff: element {} of atom type {} is not among the model's elements ({})",
                   element, t, metadata["elements"]);
      type_number[t] = numbers[k];
      type_mass[t] = masses[k];
      type_element[t] = element;
    }
    for (int i = 1; i <= ntypes; i++)
      for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;
  }

  void init_style() override
  {
    if (strcmp(update->unit_style, "metal") != 0)
      error->all(FLERR, "pair_style tensorfuse needs units metal (eV, Angstrom, ps): the script has units {}",
                 update->unit_style);
    if (force->newton_pair == 0)
      error->all(FLERR, "pair_style tensorfuse needs newton_pair on (forces on ghost atoms go to their owners)");
    if (atom->tag_enable == 0) error->all(FLERR, "pair_style tensorfuse needs atom IDs");
    check_masses();
    if (states.size() > 1 && metadata["state_energies"] != "independent" && comm->nprocs > 1)
      error->all(FLERR, "pair_style tensorfuse: this model's {} state energies are ordered over the whole structure, "
                 "which no single process holds: run it on one process", metadata["state_energies"]);
    neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
    double halo = num_layers * r_max + neighbor->skin;
    if (comm->cutghostuser < halo) {
      comm->cutghostuser = halo;
      if (comm->me == 0)
        utils::logmesg(lmp, "pair_style tensorfuse: ghost cutoff {:.4g} A ({} layers x {:.4g} A + skin)\n", halo,
                       num_layers, r_max);
    }
  }

  double init_one(int i, int j) override
  {
    cutghost[i][j] = cutghost[j][i] = r_max;
    return r_max;
  }

  void compute(int eflag, int vflag) override;

 private:
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> model;
  std::unordered_map<std::string, std::string> metadata;
  std::vector<std::string> elements, states, type_element;
  std::vector<int> numbers, type_number;
  std::vector<double> masses, type_mass;
  std::string state_name;
  at::ScalarType dtype = at::kDouble;
  double r_max = 0.0;
  int num_layers = 1;
  at::Tensor state_weights;
  std::unordered_map<tagint, int> owned_index;    // atom ID -> local index of this process's atoms

  void allocate()
  {
    allocated = 1;
    int n = atom->ntypes + 1;
    memory->create(setflag, n, n, "pair:setflag");
    for (int i = 1; i < n; i++)
      for (int j = i; j < n; j++) setflag[i][j] = 0;
    memory->create(cutsq, n, n, "pair:cutsq");
    memory->create(cutghost, n, n, "pair:cutghost");
  }

  void load_model(const std::string &path)
  {
    if (!std::ifstream(path).good())
      error->all(FLERR, "pair_coeff: the model file {} does not exist or cannot be read (make it with "
                 "'tensorfuse export MODEL.pt {} --for lammps')", path, path);
    try {
      metadata = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, "model");
    } catch (const std::exception &e) {
      error->all(FLERR, "pair_coeff: cannot read {} as a compiled tensorfuse model ({})", path,
                 std::string(e.what()).substr(0, 200));
    }
    if (metadata["format"] != "tensorfuse-compiled")
      error->all(FLERR, "pair_coeff: {} is not a compiled tensorfuse model: make one with "
                 "'tensorfuse export MODEL.pt OUT.pt2 --for lammps'", path);
    if (std::stoi(metadata["format_version"]) != 2)
      error->all(FLERR, "pair_coeff: {} is compiled for another version of the plugin (format {}, this plugin reads 2): "
                 "export it again with this tensorfuse, or rebuild the plugin of the tensorfuse that made it",
                 path, metadata["format_version"]);
    // compiled for the CPU it was made on: loading it where an instruction is missing would die with SIGILL
    auto here = cpu_flags();
    if (!here.empty()) {
      std::string missing;
      for (auto &flag : split_words(metadata["cpu_flags"]))
        if (std::find(here.begin(), here.end(), flag) == here.end()) missing += " " + flag;
      if (!missing.empty())
        error->all(FLERR, "pair_coeff: {} was compiled on a CPU with instructions this one lacks ({}): compile "
                   "the model file again on this machine (tensorfuse export MODEL.pt OUT.pt2 --for lammps)", path,
                   missing.substr(1, 120));
    }
    try {
      model = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, "model", true);
    } catch (const std::exception &e) {
      error->all(FLERR, "pair_coeff: cannot load {} ({})", path, std::string(e.what()).substr(0, 300));
    }
    elements = split_words(metadata["elements"]);
    states = split_words(metadata["states"]);
    numbers.clear();
    masses.clear();
    for (auto &z : split_words(metadata["species"])) numbers.push_back(std::stoi(z));
    for (auto &m : split_words(metadata["masses"])) masses.push_back(std::stod(m));
    r_max = std::stod(metadata["r_max"]);
    num_layers = std::stoi(metadata["num_layers"]);
    dtype = metadata["dtype"] == "float32" ? at::kFloat : at::kDouble;
    cutforce = r_max;
    int num_states = states.empty() ? 1 : (int) states.size();
    std::vector<double> weights(num_states, 0.0);
    if (state_name.empty()) {
      weights[0] = 1.0;
      if (num_states > 1 && comm->me == 0)
        utils::logmesg(lmp, "pair_style tensorfuse: a model of states {}: state {} (pair_style tensorfuse state NAME)\n",
                       metadata["states"], states[0]);
    } else {
      int k = 0;
      while (k < (int) states.size() && states[k] != state_name) k++;
      if (k == (int) states.size())
        error->all(FLERR, "pair_style tensorfuse: state {} is not among the model's states ({})", state_name,
                   states.empty() ? std::string("a single-state model") : metadata["states"]);
      weights[k] = 1.0;
    }
    state_weights = at::empty({num_states}, at::TensorOptions().dtype(at::kDouble));
    std::memcpy(state_weights.data_ptr<double>(), weights.data(), num_states * sizeof(double));
    state_weights = state_weights.to(dtype);
  }

  void check_masses()
  {
    for (int t = 1; t <= atom->ntypes; t++) {
      if (!atom->mass || !atom->mass_setflag || !atom->mass_setflag[t]) continue;    // per-atom masses
      double mass = atom->mass[t];
      if (std::fabs(mass - type_mass[t]) > 0.6)
        error->all(FLERR, "pair_coeff: atom type {} has mass {:.6g} but is given element {} (mass {:.6g}): "
                   "is the element order of pair_coeff the order of the types?", t, mass, type_element[t],
                   type_mass[t]);
    }
  }
};

void PairTensorfuse::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  double **x = atom->x;
  double **f = atom->f;
  const int *type = atom->type;
  const tagint *tag = atom->tag;

  // owned atoms keep their indices; a ghost that is an image of an owned atom is folded onto it,
  // other ghosts (owned by other processes) get the next indices
  owned_index.clear();
  for (int i = 0; i < nlocal; i++) owned_index[tag[i]] = i;
  std::vector<int> node(nall);
  std::vector<char> folded(nall, 0);
  int nodes = nlocal;
  for (int i = 0; i < nall; i++) {
    if (i < nlocal) {
      node[i] = i;
      continue;
    }
    auto it = owned_index.find(tag[i]);
    if (it != owned_index.end()) {
      node[i] = it->second;
      folded[i] = 1;
    } else {
      node[i] = nodes++;
    }
  }
  std::vector<int> atom_of(nodes);
  for (int i = 0; i < nall; i++)
    if (!folded[i]) atom_of[node[i]] = i;

  // edges (sender j -> receiver i) into the owned atoms and the other processes' ghosts; the image
  // ghosts' own lists repeat their owned atom's edges and are left out
  const double cut2 = r_max * r_max;
  std::vector<int64_t> senders, receivers;
  std::vector<double> offsets;    // r_ij minus the difference of the two nodes' positions
  const int listed = list->inum + list->gnum;
  for (int ii = 0; ii < listed; ii++) {
    int i = list->ilist[ii];
    if (folded[i]) continue;
    int *neighbors = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; jj++) {
      int j = neighbors[jj] & NEIGHMASK;
      double d[3] = {x[j][0] - x[i][0], x[j][1] - x[i][1], x[j][2] - x[i][2]};
      if (d[0] * d[0] + d[1] * d[1] + d[2] * d[2] >= cut2) continue;
      int sj = node[j];
      const double *xs = x[atom_of[sj]];
      senders.push_back(sj);
      receivers.push_back(node[i]);
      for (int k = 0; k < 3; k++) offsets.push_back(x[j][k] - xs[k]);
    }
  }
  // hops from the owned atoms against the edges' direction: layer t of L updates the atoms within
  // L - t hops, from the edges into them; the embedding reaches L hops; nothing beyond (halo atoms
  // the ghost cutoff brought in). The model's atoms: the owned ones (their own indices), the two
  // phantoms, then the ghosts by hops; its edges: those into atoms within L - 1 hops, by the hops of
  // their receiver, the phantoms' two first. Then every layer's atoms and edges are prefixes.
  const int L = num_layers;
  std::vector<int> hops(nodes, L + 1);
  for (int a = 0; a < nlocal; a++) hops[a] = 0;
  if (nodes > nlocal) {
    std::vector<int> start(nodes + 1, 0), by_receiver(senders.size());
    for (auto r : receivers) start[r + 1]++;
    for (int a = 0; a < nodes; a++) start[a + 1] += start[a];
    std::vector<int> fill(start.begin(), start.end() - 1);
    for (size_t e = 0; e < senders.size(); e++) by_receiver[fill[receivers[e]]++] = (int) e;
    std::vector<int> frontier(nlocal), next;
    for (int a = 0; a < nlocal; a++) frontier[a] = a;
    for (int h = 1; h <= L && !frontier.empty(); h++) {
      next.clear();
      for (int r : frontier)
        for (int k = start[r]; k < start[r + 1]; k++) {
          int s = (int) senders[by_receiver[k]];
          if (hops[s] > h) {
            hops[s] = h;
            next.push_back(s);
          }
        }
      frontier.swap(next);
    }
  }
  std::vector<int> at_hops(L + 2, 0);    // ghost atoms per hop count
  for (int a = nlocal; a < nodes; a++) at_hops[hops[a]]++;
  std::vector<int> renumber(nodes, -1), first(L + 2, 0);
  first[1] = nlocal + 2;
  for (int h = 1; h <= L; h++) first[h + 1] = first[h] + at_hops[h];
  const int n = first[L + 1];
  for (int a = 0; a < nlocal; a++) renumber[a] = a;
  for (int a = nlocal; a < nodes; a++)
    if (hops[a] <= L) renumber[a] = first[hops[a]]++;
  const int phantom = nlocal;
  std::vector<int> atom_of_node(n, -1);    // the LAMMPS atom of each model atom (-1: a phantom)
  for (int a = 0; a < nodes; a++)
    if (renumber[a] >= 0) atom_of_node[renumber[a]] = atom_of[a];
  atom_of.swap(atom_of_node);
  std::vector<int64_t> edge_hops(L + 1, 0);
  for (size_t e = 0; e < receivers.size(); e++)
    if (hops[receivers[e]] < L) edge_hops[hops[receivers[e]]]++;
  edge_hops[0] += 2;    // the phantoms'
  std::vector<int64_t> edge_first(L + 1, 0);
  for (int h = 1; h <= L; h++) edge_first[h] = edge_first[h - 1] + edge_hops[h - 1];
  const int64_t nedges = edge_first[L];
  std::vector<int64_t> model_senders(nedges), model_receivers(nedges);
  std::vector<double> model_offsets(3 * nedges, 0.0);
  model_senders[0] = phantom;
  model_receivers[0] = phantom + 1;
  model_senders[1] = phantom + 1;
  model_receivers[1] = phantom;
  std::vector<int64_t> slot(edge_first.begin(), edge_first.end());
  slot[0] = 2;
  for (size_t e = 0; e < receivers.size(); e++) {
    int h = hops[receivers[e]];
    if (h >= L) continue;
    int64_t m = slot[h]++;
    model_senders[m] = renumber[senders[e]];
    model_receivers[m] = renumber[receivers[e]];
    for (int k = 0; k < 3; k++) model_offsets[3 * m + k] = offsets[3 * e + k];
  }
  senders.swap(model_senders);
  receivers.swap(model_receivers);
  offsets.swap(model_offsets);
  // layer t (1..L) updates the atoms within L - t hops and takes the edges into them
  std::vector<at::Tensor> reach;
  for (int t = 1; t <= L; t++) {
    int64_t atoms_t = nlocal + 2, edges_t = 0;
    for (int h = 1; h <= L - t; h++) atoms_t += at_hops[h];
    for (int h = 0; h <= L - t; h++) edges_t += edge_hops[h];
    reach.push_back(at::empty({atoms_t}, at::TensorOptions().dtype(at::kByte)));
    reach.push_back(at::empty({edges_t}, at::TensorOptions().dtype(at::kByte)));
  }

  auto options = at::TensorOptions().dtype(at::kDouble);
  at::Tensor positions = at::empty({n, 3}, options);
  at::Tensor atomic_numbers = at::empty({n}, at::TensorOptions().dtype(at::kLong));
  at::Tensor owned = at::zeros({n}, options);
  double *p = positions.data_ptr<double>();
  int64_t *z = atomic_numbers.data_ptr<int64_t>();
  double *o = owned.data_ptr<double>();
  for (int a = 0; a < n; a++) {
    int i = atom_of[a];
    if (i < 0) {    // a phantom: half a cutoff from the other one
      for (int k = 0; k < 3; k++) p[3 * a + k] = 0.0;
      p[3 * a] = 0.5 * r_max * (a - phantom);
      z[a] = numbers[0];
      continue;
    }
    for (int k = 0; k < 3; k++) p[3 * a + k] = x[i][k];
    z[a] = type_number[type[i]];
    o[a] = a < nlocal ? 1.0 : 0.0;
  }
  at::Tensor edge_index = at::empty({2, nedges}, at::TensorOptions().dtype(at::kLong));
  std::memcpy(edge_index.data_ptr<int64_t>(), senders.data(), nedges * sizeof(int64_t));
  std::memcpy(edge_index.data_ptr<int64_t>() + nedges, receivers.data(), nedges * sizeof(int64_t));
  at::Tensor edge_offsets = at::empty({nedges, 3}, options);
  std::memcpy(edge_offsets.data_ptr<double>(), offsets.data(), 3 * nedges * sizeof(double));
  std::vector<at::Tensor> outputs;
  std::vector<at::Tensor> inputs = {positions.to(dtype), atomic_numbers, edge_index, edge_offsets.to(dtype),
                                    owned.to(dtype), state_weights};
  inputs.insert(inputs.end(), reach.begin(), reach.end());
  try {
    outputs = model->run(inputs);
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style tensorfuse: the model failed: {}", std::string(e.what()).substr(0, 300));
  }
  at::Tensor site = outputs[1].to(at::kDouble).contiguous();
  at::Tensor forces = outputs[2].to(at::kDouble).contiguous();
  at::Tensor edge_gradient = outputs[3].to(at::kDouble).contiguous();
  const double *fs = forces.data_ptr<double>();
  for (int a = 0; a < n; a++) {
    int i = atom_of[a];
    if (i >= 0)
      for (int k = 0; k < 3; k++) f[i][k] += fs[3 * a + k];
  }
  if (eflag_global) eng_vdwl += outputs[0].item<double>();
  if (eflag_atom) {
    const double *e = site.data_ptr<double>();
    for (int a = 0; a < nlocal; a++) eatom[a] += e[a];
  }
  if (vflag_either) {
    const double *g = edge_gradient.data_ptr<double>();
    for (int64_t e = 2; e < nedges; e++) {    // the phantoms' two first edges left out
      const double *xs = x[atom_of[senders[e]]];
      const double *xr = x[atom_of[receivers[e]]];
      double r[3];
      for (int k = 0; k < 3; k++) r[k] = xs[k] + offsets[3 * e + k] - xr[k];
      const double *ge = g + 3 * e;
      double w[6] = {-r[0] * ge[0], -r[1] * ge[1], -r[2] * ge[2], -r[0] * ge[1], -r[0] * ge[2], -r[1] * ge[2]};
      if (vflag_global)
        for (int k = 0; k < 6; k++) virial[k] += w[k];
      if (vflag_atom) {
        int s = atom_of[senders[e]], t = atom_of[receivers[e]];
        for (int k = 0; k < 6; k++) {
          vatom[s][k] += 0.5 * w[k];
          vatom[t][k] += 0.5 * w[k];
        }
      }
    }
  }
}

// what the plugin's loader (tensorfuse_plugin.cpp) calls: the pair style of this library
extern "C" void *tensorfuse_create_pair(void *lmp)
{
  return new PairTensorfuse((LAMMPS *) lmp);
}
