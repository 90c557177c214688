// JsonGrammar and JsonMatcher: which texts a JSON object or a schema admits, byte by byte, and what is refused.
#include <gtest/gtest.h>

#include "core/error.h"
#include "runtime/json_grammar.h"

namespace narwhal {
namespace {

std::shared_ptr<const JsonGrammar> schema(const char* text) { return JsonGrammar::from_schema(SchemaJson::parse(text)); }

// The whole text is a complete value of the grammar.
bool admits(const std::shared_ptr<const JsonGrammar>& g, std::string_view text) {
  JsonMatcher m(g);
  return m.advance(text) && m.can_end();
}

// The text may start a value (every byte taken), complete or not.
bool starts(const std::shared_ptr<const JsonGrammar>& g, std::string_view text) { return JsonMatcher(g).advance(text); }

TEST(JsonGrammar, AnyObjectTakesJsonObjectsOnly) {
  const auto g = JsonGrammar::any_object();
  for (const char* ok : {"{}", "{\"a\":1}", "{ \"a\" : [true, null, \"x\\\"y\", -0.5e+3, {}], \"b\": {\"c\": []} }",
                         "{\"k\":\"\\u00e9\\n\"}", "{\n  \"a\": 1,\n  \"b\": 2\n}"})
    EXPECT_TRUE(admits(g, ok)) << ok;
  for (const char* bad : {"[]", " {}", "{} ", "{\"a\" 1}", "{\"a\":01}", "{\"a\":1,}", "{,}", "{\"a\":\"\\q\"}",
                          "{\"a\":\"line\nbreak\"}", "{\"a\":tru}", "{\"a\":-}", "{\"a\":1.}", "{a:1}"})
    EXPECT_FALSE(admits(g, bad)) << bad;
  JsonMatcher m(g);
  ASSERT_TRUE(m.advance("{\"a\":"));
  EXPECT_FALSE(m.advance("}")) << "a value is missing";
  EXPECT_FALSE(m.can_end());
  ASSERT_TRUE(m.advance("12}"));
  EXPECT_TRUE(m.finished());
  EXPECT_FALSE(m.advance(" ")) << "nothing after the value";
}

TEST(JsonGrammar, WhitespaceRunsAreBounded) {
  const auto g = JsonGrammar::any_object();
  EXPECT_TRUE(admits(g, "{" + std::string(JsonGrammar::kMaxSpaceRun, ' ') + "}"));
  EXPECT_FALSE(starts(g, "{" + std::string(JsonGrammar::kMaxSpaceRun + 1, ' ')));
  EXPECT_TRUE(admits(g, "{\"a\":" + std::string(JsonGrammar::kMaxSpaceRun, '\n') + "1}"));
}

TEST(JsonGrammar, SchemaPropertiesComeInOrderRequiredOnesAlways) {
  const auto g = schema(R"({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}},
                            "required": ["name", "age"]})");
  EXPECT_TRUE(admits(g, R"({"name":"x","age":3})"));
  EXPECT_TRUE(admits(g, R"({ "name": "x", "age": -3, "tags": ["a", "b"] })"));
  EXPECT_TRUE(admits(g, R"({"name":"x","age":3,"tags":[]})"));
  EXPECT_FALSE(admits(g, R"({"name":"x"})")) << "age is required";
  EXPECT_FALSE(admits(g, R"({"age":3,"name":"x"})")) << "the schema's order";
  EXPECT_FALSE(admits(g, R"({"name":"x","age":3,"other":1})"));
  EXPECT_FALSE(admits(g, R"({"name":"x","age":3,"tags":["a","b","c"]})"));
  EXPECT_FALSE(admits(g, R"({"name":"x","age":3.5})"));
  EXPECT_FALSE(admits(g, R"({"name":1,"age":3})"));
}

TEST(JsonGrammar, OptionalPropertiesMayBeLeftOutEvenWhereKeysShareAPrefix) {
  const auto g = schema(R"({"properties": {"a": {"type": "integer"}, "ab": {"type": "boolean"},
                            "b": {"type": "null"}}, "required": ["b"]})");
  for (const char* ok : {R"({"b":null})", R"({"a":1,"b":null})", R"({"ab":true,"b":null})",
                         R"({"a":1,"ab":false,"b":null})"})
    EXPECT_TRUE(admits(g, ok)) << ok;
  EXPECT_FALSE(admits(g, R"({"ab":1,"b":null})"));
  EXPECT_FALSE(admits(g, R"({})"));
}

TEST(JsonGrammar, EnumConstUnionsAndTypeLists) {
  EXPECT_TRUE(admits(schema(R"({"enum": ["red", "green", 3, null]})"), "\"green\""));
  EXPECT_TRUE(admits(schema(R"({"enum": ["red", "green", 3, null]})"), "null"));
  EXPECT_FALSE(admits(schema(R"({"enum": ["red", "green"]})"), "\"blue\""));
  EXPECT_FALSE(admits(schema(R"({"enum": ["red", "green"]})"), "\"gree\""));
  EXPECT_TRUE(admits(schema(R"({"const": {"a": [1, 2]}})"), R"({"a":[1,2]})"));
  const auto either = schema(R"({"anyOf": [{"type": "integer"}, {"type": "null"}]})");
  EXPECT_TRUE(admits(either, "-12"));
  EXPECT_TRUE(admits(either, "null"));
  EXPECT_FALSE(admits(either, "1.5"));
  const auto types = schema(R"({"type": ["string", "boolean"]})");
  EXPECT_TRUE(admits(types, "\"x\""));
  EXPECT_TRUE(admits(types, "false"));
  EXPECT_FALSE(admits(types, "0"));
}

TEST(JsonGrammar, ASuffixMustFollowTheValue) {
  const auto g = JsonGrammar::from_schema(SchemaJson::parse(R"({"type": "integer"})"), "\n```<end>");
  JsonMatcher m(g);
  ASSERT_TRUE(m.advance("42"));
  EXPECT_FALSE(m.can_end()) << "the suffix is still to come";
  EXPECT_FALSE(JsonMatcher(m).advance("x"));
  ASSERT_TRUE(m.advance("\n```<e"));
  EXPECT_FALSE(m.can_end());
  ASSERT_TRUE(m.advance("nd>"));
  EXPECT_TRUE(m.finished());
  EXPECT_TRUE(admits(JsonGrammar::from_schema(SchemaJson::parse(R"({"type": "object"})"), "!"), "{\"a\": 1}!"));
}

TEST(JsonGrammar, AnEnumOfAnySizeIsOneParse) {
  SchemaJson values = SchemaJson::array();
  for (int i = 0; i < 1000; ++i) values.push_back("v" + std::to_string(i));
  const auto g = JsonGrammar::from_schema({{"enum", values}});
  JsonMatcher m(g);
  ASSERT_TRUE(m.advance("\"v9"));
  EXPECT_EQ(m.state().size(), 1u);
  EXPECT_TRUE(admits(g, "\"v999\""));
  EXPECT_TRUE(admits(g, "\"v0\""));
  EXPECT_FALSE(admits(g, "\"v1000\""));
  const auto prefixes = schema(R"({"enum": [123, 1, 12]})");  // each a prefix of the next
  JsonMatcher n(prefixes);
  ASSERT_TRUE(n.advance("1"));
  EXPECT_TRUE(n.can_end());
  EXPECT_FALSE(n.finished());
  ASSERT_TRUE(n.advance("23"));
  EXPECT_TRUE(n.finished());
  EXPECT_FALSE(starts(prefixes, "13"));
}

TEST(JsonGrammar, NumbersAtTheRootMayEndOrGoOn) {
  const auto g = schema(R"({"type": "number"})");
  JsonMatcher m(g);
  ASSERT_TRUE(m.advance("12"));
  EXPECT_TRUE(m.can_end());
  EXPECT_FALSE(m.finished());
  ASSERT_TRUE(m.advance("."));
  EXPECT_FALSE(m.can_end());
  EXPECT_TRUE(m.advance("5e-2"));
  EXPECT_TRUE(m.can_end());
}

TEST(JsonGrammar, RecursiveReferences) {
  const auto g = schema(R"({"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
                            "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["v"]}},
                            "$ref": "#/$defs/node"})");
  EXPECT_TRUE(admits(g, R"({"v":1,"kids":[{"v":2},{"v":3,"kids":[{"v":4}]}]})"));
  EXPECT_FALSE(admits(g, R"({"v":1,"kids":[{"w":2}]})"));
  EXPECT_TRUE(admits(schema(R"({"type": "object", "additionalProperties": {"type": "integer"}})"), R"({"x":1,"y":2})"));
  EXPECT_FALSE(admits(schema(R"({"type": "object", "additionalProperties": {"type": "integer"}})"), R"({"x":"1"})"));
}

// Unions that refer back to themselves along several paths: entered once each, not once per path (2^64 here).
TEST(JsonGrammar, SelfReferringUnionsEnterOnce) {
  const auto g = schema(R"({"$defs": {"d": {"anyOf": [{"anyOf": [{"$ref": "#/$defs/d"}]},
                            {"anyOf": [{"$ref": "#/$defs/d"}]}, {"type": "integer"}]}}, "$ref": "#/$defs/d"})");
  EXPECT_TRUE(admits(g, "5"));
  EXPECT_EQ(JsonMatcher(g).state().size(), 1u);
}

TEST(JsonGrammar, DeepNestingIsCut) {
  const auto g = JsonGrammar::any_object();
  std::string deep = "{\"a\":";
  for (size_t i = 0; i < JsonGrammar::kMaxDepth; ++i) deep += "[";
  EXPECT_FALSE(starts(g, deep));
}

TEST(JsonGrammar, UnenforceableKeywordsAreRefusedByName) {
  const auto refusal = [](const char* text) {
    try {
      schema(text);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(refusal(R"({"type": "string", "pattern": "a+"})").find("'pattern'"), std::string::npos);
  EXPECT_NE(refusal(R"({"properties": {"d": {"type": "string", "format": "date"}}})").find("schema.properties.d"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"type": "object", "properties": {"a": {}}, "additionalProperties": true})")
                .find("additionalProperties"), std::string::npos);
  EXPECT_NE(refusal(R"({"$ref": "#/$defs/missing"})").find("missing"), std::string::npos);
  EXPECT_NE(refusal(R"({"type": "text"})").find("'text'"), std::string::npos);
  EXPECT_NE(refusal(R"({"required": ["x"], "properties": {}})").find("\"x\""), std::string::npos);
  SchemaJson chain = {{"$ref", "#/$defs/d0"}, {"$defs", SchemaJson::object()}};
  for (int i = 0; i < 10000; ++i)
    chain["$defs"]["d" + std::to_string(i)] = {{"$ref", "#/$defs/d" + std::to_string(i + 1)}};
  chain["$defs"]["d10000"] = {{"type", "integer"}};
  EXPECT_THROW(JsonGrammar::from_schema(chain), Error) << "a chain of 10,000 definitions";
  SchemaJson wide = {{"type", "object"}, {"properties", SchemaJson::object()}};
  for (size_t i = 0; i <= JsonGrammar::kMaxProperties; ++i) wide["properties"]["p" + std::to_string(i)] = true;
  EXPECT_NE(refusal(wide.dump().c_str()).find("at most"), std::string::npos);
  EXPECT_EQ(refusal(R"({"title": "T", "description": "d", "type": "object", "properties": {"a": {"type": "integer",
                       "description": "x"}}})"), "accepted") << "annotations are ignored";
}

}  // namespace
}  // namespace narwhal
