// NcclLibrary: finding libnccl.so.2 and resolving its symbols.
#include "parallel/nccl_library.h"

#include <dlfcn.h>
#include <glob.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "core/error.h"
#include "core/logging.h"

namespace narwhal {

namespace {

constexpr const char* kName = "libnccl.so.2";

// Where to look, in order, each with the way a reader would recognise it in the error.
std::vector<std::pair<std::string, std::string>> candidates() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const char* var : {"NARWHAL_NCCL_PATH", "NCCL_LIBRARY"}) {
    const char* value = std::getenv(var);
    if (!value || !*value) continue;
    std::string path = value;
    if (std::filesystem::is_directory(path)) path += std::string("/") + kName;
    out.push_back({path, cat("$", var, " = ", value)});
  }
  out.push_back({kName, "the loader's path (LD_LIBRARY_PATH, ld.so.cache)"});
  out.push_back({std::string("/usr/local/cuda/lib64/") + kName, "the CUDA toolkit"});
  // PyTorch's wheel carries NCCL as nvidia-nccl-cu*: system, user and virtual-environment Pythons.
  std::vector<std::string> roots = {"/usr/local/lib", "/usr/lib", "/opt/conda/lib"};
  for (const char* var : {"HOME", "VIRTUAL_ENV", "CONDA_PREFIX"})
    if (const char* value = std::getenv(var)) roots.push_back(std::string(value) + (var[0] == 'H' ? "/.local/lib" : "/lib"));
  for (const std::string& root : roots) {
    for (const char* packages : {"site-packages", "dist-packages"}) {
      const std::string pattern = cat(root, "/python3*/", packages, "/nvidia/nccl/lib/", kName);
      glob_t found{};
      if (::glob(pattern.c_str(), 0, nullptr, &found) == 0)
        for (size_t i = 0; i < found.gl_pathc; ++i) out.push_back({found.gl_pathv[i], "PyTorch's wheel"});
      ::globfree(&found);
    }
  }
  return out;
}

NcclLibrary load() {
  void* handle = nullptr;
  NcclLibrary lib;
  std::string tried;
  for (const auto& [path, why] : candidates()) {
    handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle) {
      lib.path = path;
      break;
    }
    const char* error = ::dlerror();
    tried += cat("\n  ", path, " (", why, "): ", error ? error : "not loadable");
  }
  const bool saw_wheel = tried.find("PyTorch's wheel") != std::string::npos;
  NW_CHECK(handle, "NCCL was not found; tried:", tried,
           saw_wheel ? "" : "\n  .../python3*/site-packages/nvidia/nccl/lib (PyTorch's wheel): none installed",
           "\nSet NARWHAL_NCCL_PATH to libnccl.so.2 or its folder.");
  auto resolve = [&](auto& fn, const char* symbol) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(handle, symbol));
    NW_CHECK(fn, lib.path, " has no ", symbol, ": narwhal needs NCCL 2.18 or newer");
  };
  resolve(lib.GetVersion, "ncclGetVersion");
  resolve(lib.GetUniqueId, "ncclGetUniqueId");
  resolve(lib.CommInitRankConfig, "ncclCommInitRankConfig");
  resolve(lib.CommSplit, "ncclCommSplit");
  resolve(lib.CommGetAsyncError, "ncclCommGetAsyncError");
  resolve(lib.CommFinalize, "ncclCommFinalize");
  resolve(lib.CommDestroy, "ncclCommDestroy");
  resolve(lib.CommAbort, "ncclCommAbort");
  resolve(lib.CommCount, "ncclCommCount");
  resolve(lib.CommUserRank, "ncclCommUserRank");
  resolve(lib.GetErrorString, "ncclGetErrorString");
  resolve(lib.GetLastError, "ncclGetLastError");
  resolve(lib.AllReduce, "ncclAllReduce");
  resolve(lib.AllGather, "ncclAllGather");
  resolve(lib.ReduceScatter, "ncclReduceScatter");
  resolve(lib.Broadcast, "ncclBroadcast");
  resolve(lib.Send, "ncclSend");
  resolve(lib.Recv, "ncclRecv");
  resolve(lib.GroupStart, "ncclGroupStart");
  resolve(lib.GroupEnd, "ncclGroupEnd");
  lib.GetVersion(&lib.version);
  NW_LOG(Info) << "NCCL " << lib.version << " from " << lib.path;
  return lib;
}

}  // namespace

const NcclLibrary& NcclLibrary::get() {
  static const NcclLibrary lib = load();
  return lib;
}

}  // namespace narwhal
