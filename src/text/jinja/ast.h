// Syntax tree of a parsed Jinja template.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja/value.h"

namespace narwhal::text::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;
using Kwargs = std::vector<std::pair<std::string, ExprPtr>>;

struct Expr {
  enum class Kind {
    kLiteral,   // value
    kName,      // name
    kList,      // args: items
    kTuple,     // args: items
    kDict,      // kwargs-like pairs in `entries`
    kAttribute, // args[0].name
    kItem,      // args[0][args[1]]
    kSlice,     // args[0][args[1]:args[2]:args[3]], missing parts are null
    kCall,      // args[0](args[1..], kwargs)
    kFilter,    // args[0] | name(args[1..], kwargs)
    kTest,      // args[0] is [not] name(args[1..])
    kUnary,     // op args[0]: "-", "+", "not"
    kBinary,    // args[0] op args[1]: arithmetic, "~", "and", "or", comparisons, "in", "not in"
    kCondition, // args[0] if args[1] else args[2] (args[2] may be null)
  };
  Kind kind;
  int line = 0;
  Value value;
  std::string name;  // kName, kAttribute, kFilter, kTest; the operator of kUnary / kBinary
  bool negated = false;  // kTest: "is not"
  std::vector<ExprPtr> args;
  Kwargs kwargs;
  std::vector<std::pair<ExprPtr, ExprPtr>> entries;  // kDict
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
  enum class Kind { kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kBreak, kContinue, kGeneration };
  Kind kind;
  int line = 0;
  std::string text;                 // kText
  ExprPtr expr;                     // kOutput, kFor (iterable), kSet (value)
  ExprPtr filter;                   // kFor: `if` condition
  std::vector<std::string> targets; // kFor / kSet / kSetBlock names; kMacro: name
  std::string attribute;            // kSet / kSetBlock: `set ns.attribute = ...`
  std::vector<std::pair<ExprPtr, Body>> branches;  // kIf: (condition, body) for if and each elif
  Body body;                        // kFor, kSetBlock, kMacro, kGeneration
  Body else_body;                   // kIf, kFor
  std::vector<std::pair<std::string, ExprPtr>> params;  // kMacro: name and default (may be null)
};

struct Template {
  Body body;
};

}  // namespace narwhal::text::jinja
