// HTTP messages shared by the HTTP/1.1 and HTTP/2 paths, server and client.
// Header names are stored lower-case (HTTP/2 requires it; HTTP/1.1 names are
// case-insensitive), in arrival order, repeats kept.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace trellis::http {

class Headers {
 public:
  using Field = std::pair<std::string, std::string>;

  // `name` must already be lower-case.
  void add(std::string name, std::string value) { fields_.emplace_back(std::move(name), std::move(value)); }
  // Replaces every field of that name with one.
  void set(std::string_view name, std::string value);
  void remove(std::string_view name);
  // Removes every field whose name satisfies `pred`.
  template <typename Pred>
  void removeIf(Pred pred) {
    std::erase_if(fields_, [&](const Field& f) { return pred(std::string_view(f.first)); });
  }
  // The first value of a field, if any.
  std::optional<std::string_view> get(std::string_view name) const;
  size_t count(std::string_view name) const;
  bool has(std::string_view name) const { return get(name).has_value(); }

  size_t size() const { return fields_.size(); }
  bool empty() const { return fields_.empty(); }
  void clear() { fields_.clear(); }
  void reserve(size_t n) { fields_.reserve(n); }
  auto begin() const { return fields_.begin(); }
  auto end() const { return fields_.end(); }

 private:
  std::vector<Field> fields_;
};

enum class Version { kHttp10, kHttp11, kHttp2 };
std::string_view versionName(Version v);

struct Request {
  std::string method;
  std::string target;     // request-target as sent: path plus optional ?query
  std::string scheme;     // "http" or "https"
  std::string authority;  // Host header or :authority
  Version version = Version::kHttp11;
  Headers headers;
  std::string body;
  // The body is not all here. Client side: `body` goes first, then what
  // Client::write() adds, until Client::endBody() (HTTP/2 origins only).
  // Server side: it arrives through ResponseWriter::onRequestBody.
  bool streamBody = false;
  Headers trailers;
  std::string peer;       // remote address "ip:port"; empty for client-side requests
  // The TLS client certificate, when one was presented and verified against
  // the server's client CA: subject CN and O values (Kubernetes reads them as
  // user and groups). Empty otherwise.
  std::string clientCommonName;
  std::vector<std::string> clientOrganizations;

  std::string_view path() const;
  std::string_view query() const;  // without the '?'
};

struct Response {
  int status = 200;
  Headers headers;
  std::string body;
  Headers trailers;
};

// The reason phrase HTTP/1.1 sends with a status ("Not Found").
std::string_view reasonPhrase(int status);

// Lower-cases ASCII in place.
void toLower(std::string& s);
bool equalsIgnoreCase(std::string_view a, std::string_view b);

}  // namespace trellis::http
