// Recursive-descent parser following jinja2.parser's grammar and operator precedence.
#include "text/jinja/parser.h"

#include <set>

#include "core/error.h"
#include "text/jinja/lexer.h"

namespace narwhal::text::jinja {
namespace {

using Kind = Expr::Kind;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  Template run() {
    Template tpl;
    std::string end_tag;
    tpl.body = parse_body({}, &end_tag);
    return tpl;
  }

 private:
  const Token& peek(size_t ahead = 0) const { return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)]; }
  const Token& next() { return tokens_[pos_ < tokens_.size() - 1 ? pos_++ : pos_]; }
  [[noreturn]] void fail(const std::string& why) const { throw Error(cat("template line ", peek().line, ": ", why)); }
  bool is_op(const char* op, size_t ahead = 0) const {
    return peek(ahead).type == Token::Type::kOperator && peek(ahead).text == op;
  }
  bool is_name(const char* name) const { return peek().type == Token::Type::kName && peek().text == name; }
  bool eat_op(const char* op) { return is_op(op) ? (next(), true) : false; }
  bool eat_name(const char* name) { return is_name(name) ? (next(), true) : false; }
  void expect_op(const char* op) {
    if (!eat_op(op)) fail(cat("expected '", op, "'"));
  }
  std::string expect_name() {
    if (peek().type != Token::Type::kName) fail("expected a name");
    return next().text;
  }
  void expect_block_end() {
    if (next().type != Token::Type::kBlockEnd) fail("expected '%}'");
  }
  ExprPtr node(Kind kind) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = peek().line;
    return e;
  }

  // Statements until one of `end_tags` opens a block; that tag's name goes to *end_tag (consumed).
  Body parse_body(const std::set<std::string>& end_tags, std::string* end_tag) {
    Body body;
    for (;;) {
      const Token& t = peek();
      if (t.type == Token::Type::kEnd) {
        if (!end_tags.empty()) fail(cat("missing end tag (", *end_tags.begin(), ")"));
        return body;
      }
      if (t.type == Token::Type::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kText;
        s->text = next().text;
        body.push_back(std::move(s));
      } else if (t.type == Token::Type::kVariableBegin) {
        next();
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kOutput;
        s->line = t.line;
        s->expr = parse_tuple(true);
        if (next().type != Token::Type::kVariableEnd) fail("expected '}}'");
        body.push_back(std::move(s));
      } else {
        next();  // block begin
        if (peek().type != Token::Type::kName) fail("expected a tag name");
        if (end_tags.count(peek().text)) {
          *end_tag = next().text;
          return body;
        }
        body.push_back(parse_statement());
      }
    }
  }

  std::unique_ptr<Stmt> parse_statement() {
    const Token tag = next();
    auto s = std::make_unique<Stmt>();
    s->line = tag.line;
    std::string end;
    if (tag.text == "if") {
      s->kind = Stmt::Kind::kIf;
      ExprPtr condition = parse_tuple(true);
      for (;;) {
        expect_block_end();
        Body body = parse_body({"elif", "else", "endif"}, &end);
        s->branches.emplace_back(std::move(condition), std::move(body));
        if (end != "elif") break;
        condition = parse_tuple(true);
      }
      if (end == "else") {
        expect_block_end();
        s->else_body = parse_body({"endif"}, &end);
      }
    } else if (tag.text == "for") {
      s->kind = Stmt::Kind::kFor;
      do s->targets.push_back(expect_name());
      while (eat_op(","));
      if (!eat_name("in")) fail("expected 'in'");
      s->expr = parse_tuple(false);
      if (eat_name("if")) s->filter = parse_expression(true);
      if (is_name("recursive")) fail("recursive loops are not supported");
      expect_block_end();
      s->body = parse_body({"else", "endfor"}, &end);
      if (end == "else") {
        expect_block_end();
        s->else_body = parse_body({"endfor"}, &end);
      }
    } else if (tag.text == "set") {
      s->targets.push_back(expect_name());
      if (eat_op(".")) s->attribute = expect_name();
      while (s->attribute.empty() && eat_op(",")) s->targets.push_back(expect_name());
      if (eat_op("=")) {
        s->kind = Stmt::Kind::kSet;
        s->expr = parse_tuple(true);
      } else {
        s->kind = Stmt::Kind::kSetBlock;
        expect_block_end();
        s->body = parse_body({"endset"}, &end);
      }
    } else if (tag.text == "macro") {
      s->kind = Stmt::Kind::kMacro;
      s->targets.push_back(expect_name());
      expect_op("(");
      while (!eat_op(")")) {
        if (!s->params.empty()) expect_op(",");
        std::string param = expect_name();
        s->params.emplace_back(param, eat_op("=") ? parse_expression(true) : nullptr);
      }
      expect_block_end();
      s->body = parse_body({"endmacro"}, &end);
    } else if (tag.text == "generation") {
      s->kind = Stmt::Kind::kGeneration;
      expect_block_end();
      s->body = parse_body({"endgeneration"}, &end);
    } else if (tag.text == "break" || tag.text == "continue") {
      s->kind = tag.text == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
    } else {
      fail(cat("unsupported tag '", tag.text, "'"));
    }
    expect_block_end();
    return s;
  }

  // jinja2's parse_tuple: a bare comma list makes a tuple.
  ExprPtr parse_tuple(bool with_condition) {
    ExprPtr first = parse_expression(with_condition);
    if (!is_op(",")) return first;
    ExprPtr tuple = node(Kind::kTuple);
    tuple->args.push_back(std::move(first));
    while (eat_op(",")) {
      if (peek().type == Token::Type::kBlockEnd || peek().type == Token::Type::kVariableEnd || is_op(")")) break;
      tuple->args.push_back(parse_expression(with_condition));
    }
    return tuple;
  }

  ExprPtr parse_expression(bool with_condition) {
    ExprPtr e = parse_or();
    if (!with_condition) return e;
    while (eat_name("if")) {
      ExprPtr cond = node(Kind::kCondition);
      cond->args.push_back(std::move(e));
      cond->args.push_back(parse_or());
      cond->args.push_back(eat_name("else") ? parse_expression(true) : nullptr);
      e = std::move(cond);
    }
    return e;
  }

  ExprPtr binary(const std::string& op, ExprPtr left, ExprPtr right) {
    ExprPtr e = node(Kind::kBinary);
    e->name = op;
    e->args.push_back(std::move(left));
    e->args.push_back(std::move(right));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (eat_name("or")) e = binary("or", std::move(e), parse_and());
    return e;
  }
  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (eat_name("and")) e = binary("and", std::move(e), parse_not());
    return e;
  }
  ExprPtr parse_not() {
    if (!is_name("not")) return parse_compare();
    ExprPtr e = node(Kind::kUnary);
    next();
    e->name = "not";
    e->args.push_back(parse_not());
    return e;
  }
  ExprPtr parse_compare() {
    ExprPtr e = parse_math1();
    for (;;) {
      std::string op;
      if (peek().type == Token::Type::kOperator &&
          (peek().text == "==" || peek().text == "!=" || peek().text == "<" || peek().text == ">" ||
           peek().text == "<=" || peek().text == ">=")) {
        op = next().text;
      } else if (eat_name("in")) {
        op = "in";
      } else if (is_name("not") && peek(1).type == Token::Type::kName && peek(1).text == "in") {
        next();
        next();
        op = "not in";
      } else {
        return e;
      }
      e = binary(op, std::move(e), parse_math1());
    }
  }
  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      const std::string op = next().text;
      e = binary(op, std::move(e), parse_concat());
    }
    return e;
  }
  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (eat_op("~")) e = binary("~", std::move(e), parse_math2());
    return e;
  }
  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string op = next().text;
      e = binary(op, std::move(e), parse_pow());
    }
    return e;
  }
  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (eat_op("**")) e = binary("**", std::move(e), parse_unary(true));
    return e;
  }
  ExprPtr parse_unary(bool with_filter) {
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      e = node(Kind::kUnary);
      e->name = next().text;
      e->args.push_back(parse_unary(false));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    return with_filter ? parse_filters(std::move(e)) : std::move(e);
  }

  ExprPtr parse_primary() {
    const Token& t = peek();
    ExprPtr e = node(Kind::kLiteral);
    switch (t.type) {
      case Token::Type::kName: {
        const std::string name = next().text;
        if (name == "true" || name == "True") e->value = Value(true);
        else if (name == "false" || name == "False") e->value = Value(false);
        else if (name == "none" || name == "None") e->value = Value(nullptr);
        else {
          e->kind = Kind::kName;
          e->name = name;
        }
        return e;
      }
      case Token::Type::kString: {
        std::string s;
        while (peek().type == Token::Type::kString) s += next().text;  // adjacent literals concatenate
        e->value = Value(std::move(s));
        return e;
      }
      case Token::Type::kInteger: e->value = Value(next().int_value); return e;
      case Token::Type::kFloat: e->value = Value(next().float_value); return e;
      default: break;
    }
    if (eat_op("(")) {
      if (eat_op(")")) {
        e->kind = Kind::kTuple;
        return e;
      }
      ExprPtr inner = parse_tuple(true);
      expect_op(")");
      return inner;
    }
    if (eat_op("[")) {
      e->kind = Kind::kList;
      while (!eat_op("]")) {
        if (!e->args.empty()) expect_op(",");
        if (eat_op("]")) break;
        e->args.push_back(parse_expression(true));
      }
      return e;
    }
    if (eat_op("{")) {
      e->kind = Kind::kDict;
      while (!eat_op("}")) {
        if (!e->entries.empty()) expect_op(",");
        if (eat_op("}")) break;
        ExprPtr key = parse_expression(true);
        expect_op(":");
        e->entries.emplace_back(std::move(key), parse_expression(true));
      }
      return e;
    }
    fail(cat("unexpected '", t.text, "'"));
  }

  ExprPtr parse_postfix(ExprPtr e) {
    for (;;) {
      if (eat_op(".")) {
        ExprPtr a = node(Kind::kAttribute);
        if (peek().type == Token::Type::kInteger) {  // x.0 means x[0]
          a->kind = Kind::kItem;
          a->args.push_back(std::move(e));
          ExprPtr index = node(Kind::kLiteral);
          index->value = Value(next().int_value);
          a->args.push_back(std::move(index));
        } else {
          a->name = expect_name();
          a->args.push_back(std::move(e));
        }
        e = std::move(a);
      } else if (eat_op("[")) {
        e = parse_subscript(std::move(e));
      } else if (is_op("(")) {
        ExprPtr call = node(Kind::kCall);
        call->args.push_back(std::move(e));
        parse_call_args(*call);
        e = std::move(call);
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr target) {
    ExprPtr parts[3];
    int colons = 0;
    for (;;) {
      if (eat_op("]")) break;
      if (eat_op(":")) {
        if (++colons > 2) fail("too many ':' in subscript");
        continue;
      }
      if (parts[colons]) fail("expected ':' or ']'");
      parts[colons] = parse_expression(true);
    }
    ExprPtr e = node(colons ? Kind::kSlice : Kind::kItem);
    e->args.push_back(std::move(target));
    if (!colons && !parts[0]) fail("empty subscript");
    for (int i = 0; i <= (colons ? 2 : 0); ++i) e->args.push_back(std::move(parts[i]));
    return e;
  }

  // "(" args ")" with name=value keywords; appends to call.args / call.kwargs.
  void parse_call_args(Expr& call) {
    expect_op("(");
    while (!eat_op(")")) {
      if (call.args.size() > 1 || !call.kwargs.empty()) expect_op(",");
      if (eat_op(")")) break;
      if (peek().type == Token::Type::kName && is_op("=", 1)) {
        std::string name = next().text;
        next();
        call.kwargs.emplace_back(std::move(name), parse_expression(true));
      } else {
        call.args.push_back(parse_expression(true));
      }
    }
  }

  ExprPtr parse_filters(ExprPtr e) {
    for (;;) {
      if (eat_op("|")) {
        ExprPtr f = node(Kind::kFilter);
        f->name = expect_name();
        while (eat_op(".")) f->name += "." + expect_name();
        f->args.push_back(std::move(e));
        if (is_op("(")) parse_call_args(*f);
        e = std::move(f);
      } else if (eat_name("is")) {
        ExprPtr t = node(Kind::kTest);
        t->negated = eat_name("not");
        t->name = expect_name();
        t->args.push_back(std::move(e));
        if (is_op("(")) {
          parse_call_args(*t);
        } else if ((peek().type == Token::Type::kName && !is_name("else") && !is_name("or") && !is_name("and")) ||
                   peek().type == Token::Type::kString || peek().type == Token::Type::kInteger ||
                   peek().type == Token::Type::kFloat || is_op("[") || is_op("{")) {
          t->args.push_back(parse_postfix(parse_primary()));  // `x is divisibleby 3`
        }
        e = std::move(t);
      } else {
        return e;
      }
    }
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
};

}  // namespace

Template parse(std::string_view source) { return Parser(lex(source)).run(); }

}  // namespace narwhal::text::jinja
