// OutputWorkers: a queue and a thread per worker; tasks keyed to a worker by request.
#include "server/output_workers.h"

#include <algorithm>

namespace narwhal::server {

OutputWorkers::OutputWorkers(int threads) {
  for (int i = 0; i < std::max(threads, 1); ++i) {
    auto worker = std::make_unique<Worker>();
    Worker& w = *worker;
    w.thread = std::thread([&w] { run(w); });
    workers_.push_back(std::move(worker));
  }
}

OutputWorkers::~OutputWorkers() { stop(); }

int OutputWorkers::default_threads() {
  return std::clamp(static_cast<int>(std::thread::hardware_concurrency()) / 4, 1, 4);
}

void OutputWorkers::post(uint64_t key, std::function<void()> task) {
  Worker& w = *workers_[key % workers_.size()];
  {
    std::lock_guard<std::mutex> lock(w.mutex);
    if (!w.stopping) {
      w.tasks.push_back(std::move(task));
      if (w.tasks.size() == 1) w.wake.notify_one();  // more tasks: the worker is awake already
      return;
    }
  }
  task();
}

void OutputWorkers::run(Worker& w) {
  std::deque<std::function<void()>> batch;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(w.mutex);
      w.wake.wait(lock, [&] { return w.stopping || !w.tasks.empty(); });
      if (w.tasks.empty()) return;  // stopping, and nothing left
      batch.swap(w.tasks);
    }
    for (auto& task : batch) task();
    batch.clear();
  }
}

void OutputWorkers::stop() {
  std::lock_guard<std::mutex> stop_lock(stop_mutex_);
  if (stopped_) return;
  stopped_ = true;
  for (auto& w : workers_) {
    std::lock_guard<std::mutex> lock(w->mutex);
    w->stopping = true;
    w->wake.notify_one();
  }
  for (auto& w : workers_) w->thread.join();
}

}  // namespace narwhal::server
