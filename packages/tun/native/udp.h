/* UdpBatchSocket's native half (see udp.c). */
#ifndef FAKE_TCP_TUN_UDP_H
#define FAKE_TCP_TUN_UDP_H
#include "napi-util.h"

/* Defines the NativeUdp class on `exports`. */
bool udp_define_class(napi_env env, napi_value exports);
#endif
