// The subcommands of the narwhal binary; each parses its own flags from argv[2..].
#pragma once

namespace narwhal {

int run_generate(int argc, char** argv);
int run_make_model(int argc, char** argv);
int run_tokenize(int argc, char** argv);
int run_chat_template(int argc, char** argv);
int run_serve(int argc, char** argv);
int run_bench_one_batch(int argc, char** argv);
int run_bench_serving(int argc, char** argv);
int run_bench_one_batch_server(int argc, char** argv);
int run_bench_accuracy(int argc, char** argv);

}  // namespace narwhal
