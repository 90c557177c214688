// fit_to_context: a prompt and its completion against the context, refused (400) or with --allow-auto-truncate cut.
#include <gtest/gtest.h>

#include "server/generation_job.h"

namespace narwhal::server {
namespace {

constexpr int64_t kContext = 16;

std::string refusal(int64_t prompt_len, std::optional<int64_t> max_tokens) {
  try {
    fit_to_context(prompt_len, kContext, max_tokens, false);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    return e.body()["error"]["code"].get<std::string>();
  }
  return "accepted";
}

TEST(ContextFit, WhatFitsIsUnchanged) {
  for (bool truncate : {false, true}) {
    const PromptFit fit = fit_to_context(10, kContext, 6, truncate);
    EXPECT_EQ(fit.prompt_len, 10);
    EXPECT_EQ(fit.max_tokens, 6);
    const PromptFit open = fit_to_context(15, kContext, std::nullopt, truncate);
    EXPECT_EQ(open.prompt_len, 15);
    EXPECT_FALSE(open.max_tokens);
  }
}

TEST(ContextFit, WithoutAutoTruncateAPromptOrLimitPastTheContextIsA400) {
  EXPECT_EQ(refusal(16, std::nullopt), "context_length_exceeded");  // no room for one token
  EXPECT_EQ(refusal(20, 1), "context_length_exceeded");
  EXPECT_EQ(refusal(10, 7), "context_length_exceeded");
  EXPECT_EQ(refusal(10, 6), "accepted");
}

TEST(ContextFit, AutoTruncateKeepsThePromptsStartAndRoomForTheCompletion) {
  PromptFit fit = fit_to_context(40, kContext, 4, true);  // the prompt leaves the 4 tokens asked for
  EXPECT_EQ(fit.prompt_len, 12);
  EXPECT_EQ(fit.max_tokens, 4);
  fit = fit_to_context(40, kContext, std::nullopt, true);  // no limit: one token of room
  EXPECT_EQ(fit.prompt_len, 15);
  EXPECT_FALSE(fit.max_tokens);
  fit = fit_to_context(16, kContext, 100, true);  // a limit past the context keeps one prompt token
  EXPECT_EQ(fit.prompt_len, 1);
  EXPECT_EQ(fit.max_tokens, 15);
  fit = fit_to_context(10, kContext, 100, true);  // a prompt that fits keeps itself; the limit is clipped
  EXPECT_EQ(fit.prompt_len, 10);
  EXPECT_EQ(fit.max_tokens, 6);
  EXPECT_THROW(fit_to_context(3, 1, std::nullopt, true), ApiError) << "a context of one token holds nothing";
}

}  // namespace
}  // namespace narwhal::server
