{
  "targets": [
    {
      "target_name": "tun",
      "sources": ["native/module.c", "native/device.c", "native/queue.c", "native/polled.c", "native/steering.c", "native/udp.c", "native/nfqueue.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
