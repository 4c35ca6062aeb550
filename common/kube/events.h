// Records core/v1 Events about objects, as kubectl describe shows them, with
// repeats aggregated the way client-go's recorder does: the same (object,
// type, reason, message) within 10 minutes bumps `count` and
// `lastTimestamp` on one Event instead of writing a new one.
//
//   kube::EventRecorder events(client, {.component = "trellis-provisioner"});
//   events.record(pvc, "Normal", "Provisioned", "volume pv-1 created");
//
// record() never blocks on the network: a background thread writes, and a
// failed write is logged and dropped (events are best effort, as in
// Kubernetes). flush() waits until everything recorded so far is written.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <boost/json/object.hpp>

#include "common/kube/client.h"

namespace trellis::kube {

struct EventSource {
  std::string component;  // source.component and reportingComponent
  std::string host;       // source.host (the node), optional
};

class EventRecorder {
 public:
  EventRecorder(Client& client, EventSource source);
  ~EventRecorder();  // writes what is pending, then stops

  // `type`: "Normal" or "Warning"; `reason`: UpperCamelCase.
  void record(const boost::json::object& involved, std::string_view type, std::string_view reason,
              std::string message);
  void flush();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis::kube
