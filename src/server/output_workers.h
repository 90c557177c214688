// OutputWorkers: threads that turn engine outputs into response bytes, so the engine loop never formats JSON.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace narwhal::server {

// The engine calls a request's output callback on its loop thread, once per sequence per step: at 512 running
// streams, building and writing each chunk there (a native /generate chunk carries all the text and ids so far)
// costs more than the GPU step itself. The callback only posts here; a worker runs the formatting and the write.
// A key's tasks run on one worker, in the order posted, so one response's chunks never reorder.
class OutputWorkers {
 public:
  explicit OutputWorkers(int threads);
  ~OutputWorkers();  // runs what is queued, then joins
  OutputWorkers(const OutputWorkers&) = delete;
  OutputWorkers& operator=(const OutputWorkers&) = delete;

  void post(uint64_t key, std::function<void()> task);
  // Runs everything posted so far and stops the threads; later posts run on the caller's thread.
  void stop();
  int threads() const { return static_cast<int>(workers_.size()); }

  // The default count: a quarter of the cores, 1 to 4 (each worker keeps up with a few hundred streams).
  static int default_threads();

 private:
  struct Worker {
    std::mutex mutex;
    std::condition_variable wake;
    std::deque<std::function<void()>> tasks;
    bool stopping = false;
    std::thread thread;
  };
  static void run(Worker& worker);

  std::vector<std::unique_ptr<Worker>> workers_;
  std::mutex stop_mutex_;
  bool stopped_ = false;
};

}  // namespace narwhal::server
