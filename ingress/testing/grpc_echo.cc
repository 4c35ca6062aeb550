// trellis-grpc-echo: the gRPC server and client the ingress tests use (the
// project's gRPC, grpc++).
//
//   trellis-grpc-echo serve --name N --port-file F     a server on 127.0.0.1 (port 0: a free one)
//   trellis-grpc-echo chat --target 127.0.0.1:P --authority HOST --count N --interval-ms M
//       one Say, then N notes on one Chat stream, M ms apart, each answer
//       checked as it comes; prints "ok N SERVER" or the error (exit 1)
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "ingress/testing/echo.grpc.pb.h"

namespace {

using trellis::ingress::testing::Echo;
using trellis::ingress::testing::Note;

class Service final : public Echo::Service {
 public:
  explicit Service(std::string name) : name_(std::move(name)) {}

  grpc::Status Say(grpc::ServerContext*, const Note* in, Note* out) override {
    out->set_text(name_ + ": " + in->text());
    return grpc::Status::OK;
  }

  grpc::Status Chat(grpc::ServerContext*, grpc::ServerReaderWriter<Note, Note>* stream) override {
    Note in;
    while (stream->Read(&in)) {
      Note out;
      out.set_text(name_ + ": " + in.text());
      if (!stream->Write(out)) break;
    }
    return grpc::Status::OK;
  }

 private:
  std::string name_;
};

std::string flag(int argc, char** argv, const std::string& name, const std::string& otherwise = "") {
  for (int i = 2; i + 1 < argc; ++i) {
    if (argv[i] == "--" + name) return argv[i + 1];
  }
  return otherwise;
}

int serve(int argc, char** argv) {
  Service service(flag(argc, argv, "name", "echo"));
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:" + flag(argc, argv, "port", "0"), grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    std::fprintf(stderr, "cannot listen\n");
    return 1;
  }
  std::string portFile = flag(argc, argv, "port-file");
  if (!portFile.empty()) {
    std::string tmp = portFile + ".tmp";
    if (FILE* f = std::fopen(tmp.c_str(), "w")) {
      std::fprintf(f, "%d\n", port);
      std::fclose(f);
      std::rename(tmp.c_str(), portFile.c_str());
    }
  }
  std::printf("listening %d\n", port);
  std::fflush(stdout);
  server->Wait();
  return 0;
}

int chat(int argc, char** argv) {
  grpc::ChannelArguments args;
  std::string authority = flag(argc, argv, "authority");
  if (!authority.empty()) args.SetString(GRPC_ARG_DEFAULT_AUTHORITY, authority);
  auto channel = grpc::CreateCustomChannel(flag(argc, argv, "target"), grpc::InsecureChannelCredentials(), args);
  auto stub = Echo::NewStub(channel);
  int count = std::stoi(flag(argc, argv, "count", "10"));
  int interval = std::stoi(flag(argc, argv, "interval-ms", "100"));
  auto deadline = [] { return std::chrono::system_clock::now() + std::chrono::seconds(30); };

  grpc::ClientContext unary;
  unary.set_deadline(deadline());
  Note hello, answer;
  hello.set_text("hello");
  grpc::Status st = stub->Say(&unary, hello, &answer);
  if (!st.ok()) {
    std::printf("error Say: %d %s\n", st.error_code(), st.error_message().c_str());
    return 1;
  }
  std::string server = answer.text().substr(0, answer.text().find(": "));
  std::printf("said %s\n", answer.text().c_str());
  std::fflush(stdout);

  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stream = stub->Chat(&ctx);
  for (int i = 0; i < count; ++i) {
    Note out, in;
    out.set_text("m" + std::to_string(i));
    if (!stream->Write(out)) {
      std::printf("error write %d\n", i);
      return 1;
    }
    // The answer comes while the stream stays open: both ways at once.
    if (!stream->Read(&in) || in.text() != server + ": m" + std::to_string(i)) {
      std::printf("error read %d: %s\n", i, in.text().c_str());
      return 1;
    }
    if (i == 0) {
      std::printf("open\n");
      std::fflush(stdout);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(interval));
  }
  stream->WritesDone();
  st = stream->Finish();
  if (!st.ok()) {
    std::printf("error Chat: %d %s\n", st.error_code(), st.error_message().c_str());
    return 1;
  }
  std::printf("ok %d %s\n", count, server.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "serve") return serve(argc, argv);
  if (mode == "chat") return chat(argc, argv);
  std::fprintf(stderr, "usage: trellis-grpc-echo serve|chat [flags]\n");
  return 2;
}
