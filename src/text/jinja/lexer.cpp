// Tokenizing template source the way jinja2.lexer does for trim_blocks=True, lstrip_blocks=True.
#include "text/jinja/lexer.h"

#include <cstring>

#include "core/error.h"
#include "text/jinja/value.h"
#include "text/utf8.h"

namespace narwhal::text::jinja {
namespace {

// jinja2 normalizes \r\n and \r to \n and drops one trailing newline (keep_trailing_newline=False).
std::string normalize_newlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// Python's str.rstrip() with no argument.
void rstrip_unicode(std::string& text) {
  size_t end = text.size(), start;
  while (end > 0 && python_isspace(previous_code_point(text, end, &start))) end = start;
  text.resize(end);
}

// Skips Python-regex \s* from pos.
size_t skip_unicode_space(std::string_view text, size_t pos) {
  while (pos < text.size()) {
    size_t next = pos;
    if (!python_isspace(next_code_point(text, next))) break;
    pos = next;
  }
  return pos;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) : src_(normalize_newlines(source)) {}

  std::vector<Token> run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t tag = pos_;
      while ((tag = src_.find('{', tag)) != std::string::npos && tag + 1 < src_.size() &&
             !std::strchr("{%#", src_[tag + 1])) {
        ++tag;
      }
      if (tag == std::string::npos || tag + 1 >= src_.size()) {
        add_text(src_.substr(pos_));
        break;
      }
      std::string text = src_.substr(pos_, tag - pos_);
      const char kind = src_[tag + 1];
      const char sign = tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+') ? src_[tag + 2] : 0;
      if (sign == '-') {
        rstrip_unicode(text);
      } else if (sign != '+' && kind != '{') {
        // lstrip_blocks: drop spaces and tabs between the line start and a block or comment tag.
        const size_t line_start = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
        if ((line_start > 0 || line_starting) && text.find_first_not_of(" \t", line_start) == std::string::npos) {
          text.resize(line_start);
        }
      }
      add_text(text);
      count_lines(pos_, tag);
      pos_ = tag + 2 + (sign ? 1 : 0);
      if (kind == '#') skip_comment();
      else lex_tag(kind);
      line_starting = pos_ > 0 && src_[pos_ - 1] == '\n';
    }
    tokens_.push_back({Token::Type::kEnd, "", 0, 0, line_});
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void fail(const std::string& why) const { throw Error(cat("template line ", line_, ": ", why)); }

  void add_text(std::string text) {
    if (!text.empty()) tokens_.push_back({Token::Type::kText, std::move(text), 0, 0, line_});
  }
  void count_lines(size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) line_ += src_[i] == '\n';
  }

  // After a tag: `-` strips all following whitespace, and trim_blocks drops one newline after `%}` / `#}`.
  void after_tag_end(bool strip, bool trim_newline) {
    const size_t start = pos_;
    if (strip) pos_ = skip_unicode_space(src_, pos_);
    else if (trim_newline && pos_ < src_.size() && src_[pos_] == '\n') ++pos_;
    count_lines(start, pos_);
  }

  void skip_comment() {
    const size_t end = src_.find("#}", pos_);
    if (end == std::string::npos) fail("unclosed comment");
    const bool strip = end > pos_ && src_[end - 1] == '-';
    count_lines(pos_, end);
    pos_ = end + 2;
    after_tag_end(strip, true);
  }

  void lex_tag(char kind) {
    const bool block = kind == '%';
    tokens_.push_back({block ? Token::Type::kBlockBegin : Token::Type::kVariableBegin, "", 0, 0, line_});
    const std::string_view close = block ? "%}" : "}}";
    int open_brackets = 0;  // jinja2 does not end a tag inside brackets: {{ {'a': {'b': 1}} }}
    for (;;) {
      while (pos_ < src_.size() && std::strchr(" \t\n\r\f\v", src_[pos_])) line_ += src_[pos_++] == '\n';
      if (pos_ >= src_.size()) fail(cat("missing '", close, "'"));
      if (open_brackets == 0) {
        const bool strip = src_.compare(pos_, 1, "-") == 0 && src_.compare(pos_ + 1, 2, close) == 0;
        if (strip || src_.compare(pos_, 2, close) == 0) {
          pos_ += strip ? 3 : 2;
          tokens_.push_back({block ? Token::Type::kBlockEnd : Token::Type::kVariableEnd, "", 0, 0, line_});
          after_tag_end(strip, block);
          return;
        }
      }
      const char c = src_[pos_];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        const size_t start = pos_;
        while (pos_ < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) ++pos_;
        tokens_.push_back({Token::Type::kName, src_.substr(start, pos_ - start), 0, 0, line_});
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        lex_number();
      } else if (c == '\'' || c == '"') {
        lex_string(c);
      } else {
        static const char* const kOperators[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~",
                                                 "<", ">", "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", ";"};
        bool found = false;
        for (const char* op : kOperators) {
          if (src_.compare(pos_, std::strlen(op), op) == 0) {
            tokens_.push_back({Token::Type::kOperator, op, 0, 0, line_});
            pos_ += std::strlen(op);
            if (std::strchr("([{", op[0]) && op[1] == 0) ++open_brackets;
            if (std::strchr(")]}", op[0]) && op[1] == 0 && open_brackets > 0) --open_brackets;
            found = true;
            break;
          }
        }
        if (!found) fail(cat("unexpected character '", c, "'"));
      }
    }
  }

  void lex_number() {
    const size_t start = pos_;
    auto digits = [&] {
      while (pos_ < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) ++pos_;
    };
    digits();
    bool is_float = false;
    if (pos_ + 1 < src_.size() && src_[pos_] == '.' && std::isdigit(static_cast<unsigned char>(src_[pos_ + 1]))) {
      is_float = true;
      ++pos_;
      digits();
    }
    if (pos_ < src_.size() && (src_[pos_] == 'e' || src_[pos_] == 'E')) {
      size_t p = pos_ + 1;
      if (p < src_.size() && (src_[p] == '+' || src_[p] == '-')) ++p;
      if (p < src_.size() && std::isdigit(static_cast<unsigned char>(src_[p]))) {
        is_float = true;
        pos_ = p;
        digits();
      }
    }
    std::string text;
    for (size_t i = start; i < pos_; ++i) {
      if (src_[i] != '_') text += src_[i];
    }
    Token token{is_float ? Token::Type::kFloat : Token::Type::kInteger, text, 0, 0, line_};
    if (is_float) token.float_value = std::stod(text);
    else token.int_value = std::stoll(text);
    tokens_.push_back(token);
  }

  // A string literal with Python's escapes (jinja2 decodes them with "unicode-escape").
  void lex_string(char quote) {
    std::string value;
    ++pos_;
    for (;;) {
      if (pos_ >= src_.size()) fail("unterminated string");
      const char c = src_[pos_++];
      if (c == quote) break;
      if (c == '\n') ++line_;
      if (c != '\\') {
        value += c;
        continue;
      }
      if (pos_ >= src_.size()) fail("unterminated string");
      const char e = src_[pos_++];
      auto hex = [&](int n) {
        char32_t cp = 0;
        for (int i = 0; i < n; ++i) {
          if (pos_ >= src_.size() || !std::isxdigit(static_cast<unsigned char>(src_[pos_]))) fail("bad \\x/\\u escape");
          cp = cp * 16 + std::stoi(std::string(1, src_[pos_++]), nullptr, 16);
        }
        append_utf8(value, cp);
      };
      switch (e) {
        case 'n': value += '\n'; break;
        case 't': value += '\t'; break;
        case 'r': value += '\r'; break;
        case 'b': value += '\b'; break;
        case 'f': value += '\f'; break;
        case 'v': value += '\v'; break;
        case 'a': value += '\a'; break;
        case '0': value += '\0'; break;
        case '\\': value += '\\'; break;
        case '\'': value += '\''; break;
        case '"': value += '"'; break;
        case '\n': ++line_; break;  // a line continuation
        case 'x': hex(2); break;
        case 'u': hex(4); break;
        case 'U': hex(8); break;
        default: value += '\\', value += e;  // unknown escapes stay as written
      }
    }
    tokens_.push_back({Token::Type::kString, std::move(value), 0, 0, line_});
  }

  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> lex(std::string_view source) { return Lexer(source).run(); }

}  // namespace narwhal::text::jinja
