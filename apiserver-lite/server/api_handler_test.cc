// The floor under the API server's dispatch: a handler path that throws (here
// a store that throws on one key, standing in for any bug) answers a 500
// Status, is counted in /metrics, and the server goes on serving.
#include "apiserver-lite/server/api_handler.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <future>
#include <stdexcept>

#include "apiserver-lite/storage/sqlite_store.h"
#include "common/testing/testing.h"

namespace trellis::apiserver {
namespace {

// A real SQLite store that throws on writes of keys containing "boom".
class ThrowingStore : public storage::Store {
 public:
  explicit ThrowingStore(std::unique_ptr<storage::Store> inner) : inner_(std::move(inner)) {}
  void write(storage::Write w, storage::WriteCallback done) override {
    if (w.key.find("boom") != std::string::npos) throw std::runtime_error("injected failure for " + w.key);
    inner_->write(std::move(w), std::move(done));
  }
  base::Result<storage::KeyValue> get(const std::string& key) override { return inner_->get(key); }
  base::Result<storage::Snapshot> list(const std::string& prefix, storage::Revision at) override {
    return inner_->list(prefix, at);
  }
  base::Result<std::vector<storage::Event>> eventsSince(storage::Revision after, size_t max) override {
    return inner_->eventsSince(after, max);
  }
  storage::Revision currentRevision() override { return inner_->currentRevision(); }
  storage::Revision compactedRevision() override { return inner_->compactedRevision(); }
  base::Status compact(storage::Revision upTo) override { return inner_->compact(upTo); }
  void setListener(storage::CommitListener listener) override { inner_->setListener(std::move(listener)); }

 private:
  std::unique_ptr<storage::Store> inner_;
};

// Collects the one response a request gets.
class Capture : public http::ResponseWriter {
 public:
  void respond(http::Response r) override { promise_.set_value(std::move(r)); }
  void begin(int status, http::Headers) override { streamed_.status = status; }
  void write(std::string data) override { streamed_.body += data; }
  void finish(http::Headers) override { promise_.set_value(streamed_); }
  void abort() override { promise_.set_value(streamed_); }
  bool closed() const override { return false; }
  void onClose(std::function<void()>) override {}
  size_t pendingBytes() const override { return 0; }
  http::Response get() { return promise_.get_future().get(); }

 private:
  std::promise<http::Response> promise_;
  http::Response streamed_;
};

http::Response serve(ApiHandler& h, const std::string& method, const std::string& target, const std::string& body = "") {
  http::Request req;
  req.method = method;
  req.target = target;
  req.scheme = "https";
  req.body = body;
  req.headers.add("content-type", "application/json");
  auto w = std::make_shared<Capture>();
  h.handle(req, UserInfo{"admin", "1", {"system:masters", "system:authenticated"}}, w);
  return w->get();
}

TEST(ApiHandlerFloor, AnExceptionIsA500AndTheServerServesOn) {
  testing::TempDir dir;
  auto sqlite = storage::SqliteStore::open(dir.file("store.db"));
  ASSERT_TRUE(sqlite) << sqlite.error().message();
  ThrowingStore store(std::move(*sqlite));
  storage::WatchCache cache(store);
  ASSERT_TRUE(cache.start());
  base::Registry metrics;
  ApiHandler handler(store, cache, ApiOptions{.metrics = &metrics});
  ASSERT_TRUE(handler.bootstrap());
  auto boom = serve(handler, "POST", "/api/v1/namespaces/default/configmaps", R"({"metadata":{"name":"boom"}})");
  EXPECT_EQ(boom.status, 500) << boom.body;
  EXPECT_NE(boom.body.find("\"kind\":\"Status\""), std::string::npos) << boom.body;
  EXPECT_NE(boom.body.find("\"reason\":\"InternalError\""), std::string::npos) << boom.body;
  EXPECT_NE(boom.body.find("injected failure"), std::string::npos) << boom.body;
  // Counted, and the next request is served as usual.
  EXPECT_NE(metrics.render().find("apiserver_request_exceptions_total 1"), std::string::npos) << metrics.render();
  auto ok = serve(handler, "POST", "/api/v1/namespaces/default/configmaps", R"({"metadata":{"name":"fine"}})");
  EXPECT_EQ(ok.status, 201) << ok.body;
  EXPECT_EQ(serve(handler, "GET", "/api/v1/namespaces/default/configmaps/fine").status, 200);
}

// DeleteOptions: preconditions, propagation finalizers, bad policies.
TEST(ApiHandlerDelete, PreconditionsAndPropagation) {
  testing::TempDir dir;
  auto sqlite = storage::SqliteStore::open(dir.file("store.db"));
  ASSERT_TRUE(sqlite) << sqlite.error().message();
  storage::WatchCache cache(**sqlite);
  ASSERT_TRUE(cache.start());
  ApiHandler handler(**sqlite, cache, ApiOptions{});
  ASSERT_TRUE(handler.bootstrap());
  const std::string cms = "/api/v1/namespaces/default/configmaps";
  for (const char* n : {"a", "b", "c"}) {
    ASSERT_EQ(serve(handler, "POST", cms, fmt::format(R"({{"metadata":{{"name":"{}"}}}})", n)).status, 201);
  }
  auto wrongUid = serve(handler, "DELETE", cms + "/a", R"({"preconditions":{"uid":"nope"}})");
  EXPECT_EQ(wrongUid.status, 409) << wrongUid.body;
  EXPECT_NE(wrongUid.body.find("Precondition failed: UID in precondition: nope"), std::string::npos) << wrongUid.body;
  EXPECT_EQ(serve(handler, "GET", cms + "/a").status, 200) << "a failed precondition deleted the object";
  auto bad = serve(handler, "DELETE", cms + "/a", R"({"propagationPolicy":"Sideways"})");
  EXPECT_EQ(bad.status, 422) << bad.body;
  EXPECT_NE(bad.body.find("Unsupported value: \\\"Sideways\\\""), std::string::npos) << bad.body;
  // Foreground and Orphan keep the object, marked, with the collector's finalizer.
  auto fg = serve(handler, "DELETE", cms + "/b", R"({"propagationPolicy":"Foreground"})");
  EXPECT_EQ(fg.status, 200) << fg.body;
  auto b = serve(handler, "GET", cms + "/b");
  EXPECT_NE(b.body.find("\"finalizers\":[\"foregroundDeletion\"]"), std::string::npos) << b.body;
  EXPECT_NE(b.body.find("deletionTimestamp"), std::string::npos) << b.body;
  EXPECT_EQ(serve(handler, "DELETE", cms + "/c?propagationPolicy=Orphan").status, 200);
  EXPECT_NE(serve(handler, "GET", cms + "/c").body.find("\"finalizers\":[\"orphan\"]"), std::string::npos);
  // Background: gone at once.
  EXPECT_EQ(serve(handler, "DELETE", cms + "/a", R"({"propagationPolicy":"Background"})").status, 200);
  EXPECT_EQ(serve(handler, "GET", cms + "/a").status, 404);
}

}  // namespace
}  // namespace trellis::apiserver
