/*
 * Entry point of fake-tcp-tun's native addon: plain C on Node-API (ABI-stable: one build
 * loads on every Node >= 20). The parts: device.c (open and configure TUN queues), queue.c
 * (NativeQueue: batched reads and writes of one queue), steering.c (eBPF queue steering),
 * udp.c (NativeUdp: batched UDP sockets), nfqueue.c (NativeNfQueue: netfilter queue verdicts
 * over raw nfnetlink), polled.c (the uv_poll lifecycle they share); yieldCore and setTimeSlice
 * here.
 */
#define NAPI_VERSION 8

#include <node_api.h>

#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

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

/* The kernel's struct sched_attr, first published layout (its header clashes with <sched.h>). */
struct thread_sched_attr {
  uint32_t size;
  uint32_t sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime;
  uint64_t sched_deadline;
  uint64_t sched_period;
};

/* setTimeSlice(ns): asks the scheduler for a time slice of `ns` for the calling thread
 * (sched_attr.sched_runtime of a SCHED_OTHER thread, Linux >= 6.12; 0: the default), keeping
 * its policy and nice value. Returns the slice the kernel then reports, 0 where the kernel
 * keeps no per-thread slice. Why a longer one: on a wake-up, a thread with a shorter slice
 * than the running one may preempt it (EEVDF's PREEMPT_SHORT); a receiver this thread's sends
 * woke on its core then reads at once instead of when the slice ends (the tick: up to 4 ms). */
static napi_value set_time_slice(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t ns = 0;
  if (argc < 1 || napi_get_value_int64(env, argv[0], &ns) != napi_ok || ns < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "setTimeSlice(ns): ns must be a number >= 0");
    return NULL;
  }
  struct thread_sched_attr attr;
  memset(&attr, 0, sizeof attr);
  if (syscall(SYS_sched_getattr, 0, &attr, sizeof attr, 0) != 0)
    return throw_errno(env, errno, "sched_getattr", "the calling thread"), NULL;
  attr.size = sizeof attr;
  attr.sched_flags = 0;
  attr.sched_runtime = (uint64_t)ns;
  if (syscall(SYS_sched_setattr, 0, &attr, 0) != 0)
    return throw_errno(env, errno, "sched_setattr", "the calling thread"), NULL;
  memset(&attr, 0, sizeof attr);
  if (syscall(SYS_sched_getattr, 0, &attr, sizeof attr, 0) != 0)
    return throw_errno(env, errno, "sched_getattr", "the calling thread"), NULL;
  napi_value result;
  NAPI_CALL(env, napi_create_double(env, (double)attr.sched_runtime, &result));
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor fns[] = {
      METHOD("setSteering", steering_set),
      METHOD("steeringProbe", steering_probe),
      METHOD("yieldCore", yield_core),
      METHOD("setTimeSlice", set_time_slice),
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
