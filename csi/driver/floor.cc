#include "csi/driver/floor.h"

#include <grpcpp/support/server_interceptor.h>

#include "common/base/log.h"

namespace trellis::csi {

namespace {

namespace gx = grpc::experimental;

// What grpcpp/support/method_handler.h answers for an escaped exception.
constexpr std::string_view kEscaped = "Unexpected error in RPC handling";

class FloorInterceptor final : public gx::Interceptor {
 public:
  FloorInterceptor(std::string method, base::Counter& counter) : method_(std::move(method)), counter_(counter) {}
  void Intercept(gx::InterceptorBatchMethods* m) override {
    if (m->QueryInterceptionHookPoint(gx::InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status st = m->GetSendStatus();
      if (st.error_code() == grpc::StatusCode::UNKNOWN && st.error_message() == kEscaped) {
        static const base::Logger log("csi");
        log.error("unexpected exception in a CSI call (a bug)", {{"method", method_}});
        counter_.inc();
        m->ModifySendStatus(floorStatus(method_));
      }
    }
    m->Proceed();
  }

 private:
  std::string method_;
  base::Counter& counter_;
};

class FloorFactory final : public gx::ServerInterceptorFactoryInterface {
 public:
  explicit FloorFactory(base::Counter& counter) : counter_(counter) {}
  gx::Interceptor* CreateServerInterceptor(gx::ServerRpcInfo* info) override {
    return new FloorInterceptor(info->method(), counter_);
  }

 private:
  base::Counter& counter_;
};

}  // namespace

grpc::Status floorStatus(const std::string& method) {
  return grpc::Status(grpc::StatusCode::INTERNAL, "unexpected error in " + method + " (see the driver's log)");
}

void installFloor(grpc::ServerBuilder& builder, base::Counter& counter) {
  std::vector<std::unique_ptr<gx::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(std::make_unique<FloorFactory>(counter));
  builder.experimental().SetInterceptorCreators(std::move(creators));
}

}  // namespace trellis::csi
