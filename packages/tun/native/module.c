/*
 * Entry point of fake-tcp-tun's native addon: plain C on Node-API (ABI-stable: one build
 * loads on every Node >= 20). The parts: device.c (open and configure TUN queues), queue.c
 * (NativeQueue: batched reads and writes of one queue), steering.c (eBPF queue steering),
 * udp.c (NativeUdp: batched UDP sockets), nfqueue.c (NativeNfQueue: netfilter queue verdicts
 * over raw nfnetlink), polled.c (the uv_poll lifecycle they share); yieldCore here.
 */
#define NAPI_VERSION 8

#include <node_api.h>

#include <sched.h>

#include "napi-util.h"
#include "nfqueue.h"
#include "steering.h"
#include "tun.h"
#include "udp.h"

/* yieldCore(): sched_yield() for the calling thread. A program that has just sent datagrams
 * to a receiver on this host has woken it, often onto this very core (socket wake-ups are
 * "sync": the kernel expects the waker to sleep soon); yielding lets it read before the next
 * send instead of waiting for this thread's time slice to end. Costs one cheap system call
 * when nothing else is runnable here. */
static napi_value yield_core(napi_env env, napi_callback_info info) {
  (void)info;
  sched_yield();
  napi_value undefined;
  NAPI_CALL(env, napi_get_undefined(env, &undefined));
  return undefined;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor fns[] = {
      METHOD("setSteering", steering_set),
      METHOD("steeringProbe", steering_probe),
      METHOD("yieldCore", yield_core),
  };
  NAPI_CALL(env, napi_define_properties(env, exports, sizeof fns / sizeof fns[0], fns));
  if (!device_define_functions(env, exports) || !queue_define_class(env, exports) ||
      !udp_define_class(env, exports) || !nfqueue_define_class(env, exports)) {
    napi_throw_error(env, "ERR_TUN_NATIVE", "could not define the addon's exports");
    return NULL;
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
