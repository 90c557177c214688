// NcclLibrary: the NCCL functions narwhal calls, loaded with dlopen at first use (nccl.h gives their types only),
// so the binary starts, and the host and device-local backends work, where NCCL is absent.
#pragma once

#include <nccl.h>

#include <string>

namespace narwhal {

struct NcclLibrary {
  decltype(&ncclGetVersion) GetVersion = nullptr;
  decltype(&ncclGetUniqueId) GetUniqueId = nullptr;
  decltype(&ncclCommInitRankConfig) CommInitRankConfig = nullptr;
  decltype(&ncclCommSplit) CommSplit = nullptr;
  decltype(&ncclCommGetAsyncError) CommGetAsyncError = nullptr;
  decltype(&ncclCommFinalize) CommFinalize = nullptr;
  decltype(&ncclCommDestroy) CommDestroy = nullptr;
  decltype(&ncclCommAbort) CommAbort = nullptr;
  decltype(&ncclCommCount) CommCount = nullptr;
  decltype(&ncclCommUserRank) CommUserRank = nullptr;
  decltype(&ncclGetErrorString) GetErrorString = nullptr;
  decltype(&ncclGetLastError) GetLastError = nullptr;
  decltype(&ncclAllReduce) AllReduce = nullptr;
  decltype(&ncclAllGather) AllGather = nullptr;
  decltype(&ncclReduceScatter) ReduceScatter = nullptr;
  decltype(&ncclBroadcast) Broadcast = nullptr;
  decltype(&ncclSend) Send = nullptr;
  decltype(&ncclRecv) Recv = nullptr;
  decltype(&ncclGroupStart) GroupStart = nullptr;
  decltype(&ncclGroupEnd) GroupEnd = nullptr;
  std::string path;  // the file it came from
  int version = 0;   // NCCL_VERSION_CODE of that file

  // Loads NCCL once, looking in $NARWHAL_NCCL_PATH and $NCCL_LIBRARY (the library or its folder), the loader's
  // path, /usr/local/cuda/lib64 and PyTorch's wheel (.../site-packages/nvidia/nccl/lib); throws an Error that
  // names every place it looked.
  static const NcclLibrary& get();
};

}  // namespace narwhal
