/* eBPF queue steering for multi-queue TUN devices (see steering.c). */
#ifndef FAKE_TCP_TUN_STEERING_H
#define FAKE_TCP_TUN_STEERING_H
#include "napi-util.h"

/* setSteering(fd, mode): mode "port-sum" attaches the port-sum program, null detaches. */
napi_value steering_set(napi_env env, napi_callback_info info);
/* steeringProbe() -> null when steering programs load here, else { code, message }. */
napi_value steering_probe(napi_env env, napi_callback_info info);
#endif
