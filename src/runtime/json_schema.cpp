// JsonGrammar::from_schema: a JSON Schema's supported keywords as grammar nodes; anything else is refused by name.
#include <map>
#include <set>

#include "core/error.h"
#include "runtime/json_grammar.h"

namespace narwhal {

class SchemaCompiler {
 public:
  SchemaCompiler(JsonGrammar& g, const SchemaJson& root) : g_(g), root_(root) {}

  // Schemas nest at most this deep, counting each $ref followed (a chain of definitions would recurse as deep).
  static constexpr int kMaxSchemaDepth = 128;

  int compile(const SchemaJson& s, const std::string& where) {
    NW_CHECK(depth_ < kMaxSchemaDepth, where, ": the schema nests deeper than ", kMaxSchemaDepth,
             " levels (subschemas and $ref's followed)");
    ++depth_;
    const int id = compile_at(s, where);
    --depth_;
    return id;
  }

 private:
  int compile_at(const SchemaJson& s, const std::string& where) {
    if (s.is_boolean()) {
      NW_CHECK(s.get<bool>(), where, ": the schema false admits no value");
      return g_.any_value();
    }
    NW_CHECK(s.is_object(), where, ": a schema must be an object or a boolean");
    for (const auto& [key, value] : s.items()) {
      (void)value;
      NW_CHECK(kKnown.contains(key) || kAnnotations.contains(key), where, ": the keyword '", key,
               "' is not supported in structured output (supported: type, properties, required, "
               "additionalProperties, items, minItems, maxItems, enum, const, anyOf, oneOf, allOf, $ref, $defs)");
    }
    if (s.contains("$ref")) {
      NW_CHECK(s.size() == 1 + count_annotations(s) + (s.contains("$defs") || s.contains("definitions") ? 1 : 0),
               where, ": '$ref' beside other constraints is not supported");
      return reference(s["$ref"], where);
    }
    if (s.contains("const")) return literal(s["const"]);
    if (s.contains("enum")) {
      const SchemaJson& values = s["enum"];
      NW_CHECK(values.is_array() && !values.empty(), where, ".enum: must be a non-empty array");
      std::vector<std::string> literals;
      for (const SchemaJson& v : values) literals.push_back(v.dump());
      return g_.add(GrammarNode::one_of(std::move(literals)));
    }
    for (const char* key : {"anyOf", "oneOf"}) {  // oneOf's "exactly one" is not enforced: its options are anyOf's
      if (!s.contains(key)) continue;
      const SchemaJson& list = s[key];
      NW_CHECK(list.is_array() && !list.empty(), where, ".", key, ": must be a non-empty array");
      std::vector<int> options;
      for (size_t i = 0; i < list.size(); ++i) options.push_back(compile(list[i], cat(where, ".", key, "[", i, "]")));
      return g_.add(GrammarNode::any_of(std::move(options)));
    }
    if (s.contains("allOf")) {
      const SchemaJson& list = s["allOf"];
      NW_CHECK(list.is_array() && list.size() == 1, where, ".allOf: only a list of one schema is supported");
      return compile(list[0], where + ".allOf[0]");
    }
    if (!s.contains("type")) return typeless(s, where);
    const SchemaJson& type = s["type"];
    if (type.is_string()) return typed(s, type.get<std::string>(), where);
    NW_CHECK(type.is_array() && !type.empty(), where, ".type: must be a string or a non-empty array of strings");
    std::vector<int> options;
    for (const SchemaJson& t : type) {
      NW_CHECK(t.is_string(), where, ".type: must be a string or a non-empty array of strings");
      options.push_back(typed(s, t.get<std::string>(), where));
    }
    return g_.add(GrammarNode::any_of(std::move(options)));
  }

  using Kind = GrammarNode::Kind;

  static inline const std::set<std::string> kKnown = {
      "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "enum",
      "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions"};
  static inline const std::set<std::string> kAnnotations = {
      "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly",
      "writeOnly"};

  static size_t count_annotations(const SchemaJson& s) {
    size_t n = 0;
    for (const auto& [key, value] : s.items()) n += kAnnotations.contains(key) ? 1 : 0;
    return n;
  }

  int literal(const SchemaJson& value) { return g_.add(GrammarNode::one_of({value.dump()})); }

  // No type: properties or items say an object or an array; otherwise any value.
  int typeless(const SchemaJson& s, const std::string& where) {
    if (s.contains("properties") || s.contains("required") || s.contains("additionalProperties"))
      return object(s, where);
    if (s.contains("items") || s.contains("minItems") || s.contains("maxItems")) return array(s, where);
    return g_.any_value();
  }

  int typed(const SchemaJson& s, const std::string& type, const std::string& where) {
    if (type == "object") return object(s, where);
    if (type == "array") return array(s, where);
    if (type == "string") return g_.string_;
    if (type == "number") return g_.add(GrammarNode::of(Kind::kNumber));
    if (type == "integer") return g_.add(GrammarNode::of(Kind::kInteger));
    if (type == "boolean") return g_.add(GrammarNode::one_of({"true", "false"}));
    if (type == "null") return literal(nullptr);
    throw Error(cat(where, ".type: '", type, "' is not a JSON Schema type"));
  }

  int object(const SchemaJson& s, const std::string& where) {
    GrammarNode n = GrammarNode::of(Kind::kObject);
    const SchemaJson none = SchemaJson::object();
    const SchemaJson& props = s.contains("properties") ? s["properties"] : none;
    NW_CHECK(props.is_object(), where, ".properties: must be an object");
    NW_CHECK(props.size() <= JsonGrammar::kMaxProperties, where, ".properties: ", props.size(),
             " properties; structured output takes at most ", JsonGrammar::kMaxProperties, " in one object");
    std::set<std::string> required;
    if (s.contains("required")) {
      NW_CHECK(s["required"].is_array(), where, ".required: must be an array of property names");
      for (const SchemaJson& r : s["required"]) {
        NW_CHECK(r.is_string() && props.contains(r.get<std::string>()), where, ".required: ", r.dump(),
                 " is not one of the properties");
        required.insert(r.get<std::string>());
      }
    }
    const SchemaJson extra =
        s.contains("additionalProperties") ? s["additionalProperties"] : SchemaJson(props.empty());
    if (props.empty()) {  // keys of any name: the additional properties' schema for every value
      n.free_keys = !(extra.is_boolean() && !extra.get<bool>());
      if (n.free_keys) n.value = extra.is_boolean() ? g_.any_value() : compile(extra, where + ".additionalProperties");
      return g_.add(std::move(n));
    }
    NW_CHECK(extra.is_boolean() && !extra.get<bool>(), where, ".additionalProperties: only false is supported "
             "beside properties (the output lists the properties in their order, and no others)");
    const int id = g_.add({});  // reserved first: a property may refer back to this object through $ref
    for (const auto& [name, schema] : props.items()) {
      const int value = compile(schema, cat(where, ".properties.", name));
      n.properties.push_back({SchemaJson(name).dump(), value, required.contains(name)});
    }
    g_.nodes_[static_cast<size_t>(id)] = std::move(n);
    return id;
  }

  int array(const SchemaJson& s, const std::string& where) {
    GrammarNode n = GrammarNode::of(Kind::kArray);
    n.value = s.contains("items") ? compile(s["items"], where + ".items") : g_.any_value();
    const auto count = [&](const char* key, int64_t fallback) {
      if (!s.contains(key)) return fallback;
      NW_CHECK(s[key].is_number_integer() && s[key].get<int64_t>() >= 0, where, ".", key,
               ": must be a non-negative integer");
      return s[key].get<int64_t>();
    };
    n.min_items = count("minItems", 0);
    n.max_items = count("maxItems", -1);
    NW_CHECK(n.max_items < 0 || n.max_items >= n.min_items, where, ": maxItems is below minItems");
    return g_.add(std::move(n));
  }

  // "#/$defs/Name" or "#/definitions/Name" (or "#", the whole schema): compiled once, so recursion refers back.
  int reference(const SchemaJson& ref, const std::string& where) {
    NW_CHECK(ref.is_string(), where, ".$ref: must be a string");
    const std::string path = ref.get<std::string>();
    if (auto it = refs_.find(path); it != refs_.end()) return it->second;
    const SchemaJson* target = nullptr;
    if (path == "#") {
      target = &root_;
    } else {
      for (const std::string table : {"$defs", "definitions"}) {
        const std::string prefix = "#/" + table + "/";
        if (path.rfind(prefix, 0) != 0) continue;
        const auto defs = root_.find(table);
        if (defs == root_.end() || !defs->is_object()) continue;
        const auto entry = defs->find(path.substr(prefix.size()));
        if (entry != defs->end()) target = &*entry;
      }
    }
    NW_CHECK(target, where, ".$ref: '", path, "' is not in this schema's $defs or definitions");
    const int id = g_.add({});  // a union of one option, filled once compiled
    refs_[path] = id;
    const int body = compile(*target, path);
    g_.nodes_[static_cast<size_t>(id)].options = {body};
    return id;
  }

  JsonGrammar& g_;
  const SchemaJson& root_;
  std::map<std::string, int> refs_;
  int depth_ = 0;
};

std::shared_ptr<const JsonGrammar> JsonGrammar::from_schema(const SchemaJson& schema, std::string suffix) {
  auto g = std::make_shared<JsonGrammar>();
  SchemaCompiler compiler(*g, schema);
  g->root_ = compiler.compile(schema, "schema");
  if (!suffix.empty()) g->suffix_ = g->add(GrammarNode::one_of({std::move(suffix)}));
  return g;
}

}  // namespace narwhal
