// TpCommand's wire form: little-endian fields in a fixed order, the batches' vectors each led by its length.
#include "runtime/tp_command.h"

#include <cstring>
#include <vector>

#include "core/error.h"

namespace narwhal {

namespace {

constexpr uint32_t kMagic = 0x6e777463u;  // "nwtc"

class Writer {
 public:
  template <typename T>
  void put(const T& value) {
    const char* p = reinterpret_cast<const char*>(&value);
    out_.append(p, sizeof value);
  }
  template <typename T>
  void put_vector(const std::vector<T>& v) {
    put<uint64_t>(v.size());
    out_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(const std::string& bytes) : bytes_(bytes) {}
  template <typename T>
  T get() {
    T value;
    need(sizeof value);
    std::memcpy(&value, bytes_.data() + at_, sizeof value);
    at_ += sizeof value;
    return value;
  }
  template <typename T>
  std::vector<T> get_vector() {
    const uint64_t n = get<uint64_t>();
    NW_CHECK(n <= (bytes_.size() - at_) / sizeof(T), "TP command: a vector of ", n, " runs past the message's end");
    std::vector<T> v(n);
    std::memcpy(v.data(), bytes_.data() + at_, n * sizeof(T));
    at_ += n * sizeof(T);
    return v;
  }
  bool done() const { return at_ == bytes_.size(); }

 private:
  void need(size_t n) const {
    NW_CHECK(bytes_.size() - at_ >= n, "TP command: the message ends after ", at_, " of its bytes");
  }
  const std::string& bytes_;
  size_t at_ = 0;
};

}  // namespace

std::string encode_command(const TpCommand& c) {
  Writer w;
  w.put(kMagic);
  w.put(static_cast<uint8_t>(c.kind));
  w.put(static_cast<uint8_t>(c.return_logits));
  w.put(c.group);
  w.put(c.src);
  w.put(c.dst);
  w.put<uint64_t>(c.batches.size());
  for (const ForwardBatch& b : c.batches) {
    w.put_vector(b.token_ids);
    w.put_vector(b.positions);
    w.put_vector(b.dp_tokens);
    w.put(static_cast<uint8_t>(b.dp_decode));
    w.put<uint64_t>(b.seqs.size());
    for (const SequenceInfo& s : b.seqs) {
      w.put(s.prefix_len);
      w.put(s.new_len);
      w.put_vector(s.page_table);
      w.put(s.draft_len);
      w.put(s.next_token);
    }
  }
  return w.take();
}

TpCommand decode_command(const std::string& bytes) {
  Reader r(bytes);
  NW_CHECK(r.get<uint32_t>() == kMagic, "TP command: not a command message");
  TpCommand c;
  const uint8_t kind = r.get<uint8_t>();
  NW_CHECK(kind <= static_cast<uint8_t>(TpCommand::Kind::kStop), "TP command: unknown kind ", int{kind});
  c.kind = static_cast<TpCommand::Kind>(kind);
  c.return_logits = r.get<uint8_t>() != 0;
  c.group = r.get<int32_t>();
  c.src = r.get<int32_t>();
  c.dst = r.get<int32_t>();
  const uint64_t batches = r.get<uint64_t>();
  NW_CHECK(batches <= bytes.size(), "TP command: ", batches, " batches in a message of ", bytes.size(), " bytes");
  c.batches.resize(batches);
  for (ForwardBatch& b : c.batches) {
    b.token_ids = r.get_vector<int32_t>();
    b.positions = r.get_vector<int32_t>();
    b.dp_tokens = r.get_vector<int64_t>();
    b.dp_decode = r.get<uint8_t>() != 0;
    const uint64_t seqs = r.get<uint64_t>();
    NW_CHECK(seqs <= bytes.size(), "TP command: ", seqs, " sequences in a message of ", bytes.size(), " bytes");
    b.seqs.resize(seqs);
    for (SequenceInfo& s : b.seqs) {
      s.prefix_len = r.get<int64_t>();
      s.new_len = r.get<int64_t>();
      s.page_table = r.get_vector<int32_t>();
      s.draft_len = r.get<int64_t>();
      s.next_token = r.get<int32_t>();
    }
  }
  NW_CHECK(r.done(), "TP command: bytes left after the command");
  return c;
}

}  // namespace narwhal
