/* What the TUN device and queue halves of the addon share (see device.c, queue.c). */
#ifndef FAKE_TCP_TUN_TUN_H
#define FAKE_TCP_TUN_TUN_H
#include "napi-util.h"

#define VNET_HDR_LEN 10 /* sizeof(struct virtio_net_hdr): no mergeable buffers, no v1 hash */
/* Largest read with receive offload: a coalesced TCP packet is at most the device's
 * gso_max_size (64 KiB unless BIG TCP is configured), plus the virtio header. */
#define OFFLOAD_READ_MAX (65536 + VNET_HDR_LEN)

/* Defines the device functions (openQueue, queueInfo, dupFd, closeFd, setMtu, getMtu,
 * deviceReceiveOffload, setTxQueueLen, setUp) on `exports`. */
bool device_define_functions(napi_env env, napi_value exports);
/* Defines the NativeQueue class (one queue fd: batched reads, writes, GSO) on `exports`. */
bool queue_define_class(napi_env env, napi_value exports);
#endif
