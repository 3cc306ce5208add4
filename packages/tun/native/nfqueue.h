/* NfQueue's native half (see nfqueue.c). */
#ifndef FAKE_TCP_TUN_NFQUEUE_H
#define FAKE_TCP_TUN_NFQUEUE_H
#include "napi-util.h"

/* Defines the NativeNfQueue class on `exports`. */
bool nfqueue_define_class(napi_env env, napi_value exports);
#endif
