/*
 * Queue half of fake-tcp-tun's native addon: NativeQueue, one open TUN queue fd. Reads drain
 * up to `batch` packets per wake-up (uv_poll on the calling thread's own loop, see polled.c)
 * into one buffer shared with JS and call JS once per batch. Writes are single syscalls
 * (write/writev); with IFF_VNET_HDR a 10-byte virtio_net_hdr is prepended through the iovec,
 * never copied next to the packet, and a run of TCP segments can go as one GSO write.
 */
#define NAPI_VERSION 8

#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "napi-util.h"
#include "polled.h"
#include "tun.h"

typedef struct {
  polled_t base; /* first: fd, poll handle, handler, lifecycle (polled.h) */
  bool vnet;
  bool offload;       /* receive offload: packets may be coalesced TCP (GSO) */
  uint8_t* buf;
  size_t buf_len;
  uint32_t* offsets;
  uint16_t* seg_sizes; /* receive offload only: gso_size per packet, 0 for a plain one */
  uint32_t batch;
  uint32_t slot;     /* largest packet without offload, virtio header included */
  uint32_t read_max; /* largest single read: slot, or OFFLOAD_READ_MAX */

  double packets_read, bytes_read, packets_written, bytes_written, write_drops, read_batches;
  double read_errors, segmented_writes, read_drops, coalesced_reads;
} queue_t;

static void on_readable(uv_poll_t* h, int status, int events);
static size_t queue_counters(const polled_t* p, polled_counter_t* out);

static void queue_free(polled_t* p) { free(p); }

/* new NativeQueue(fd, vnetHdr, slotSize, batchSize, receiveOffload): takes ownership of fd.
 * Exposes the shared read buffer and offsets as `readBuffer` and `readOffsets`, and with
 * receiveOffload the segment sizes as `readSegmentSizes` (ArrayBuffers). */
static napi_value queue_new(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5] = {NULL, NULL, NULL, NULL, NULL}, self;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  int32_t fd = -1;
  bool vnet = false, offload = false;
  uint32_t slot = 0, batch = 0;
  if (argc >= 5) napi_get_value_bool(env, argv[4], &offload);
  if (argc < 4 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      napi_get_value_bool(env, argv[1], &vnet) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &slot) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &batch) != napi_ok || slot < 64 || slot > 65536 + 64 ||
      batch < 1 || batch > 4096 || (offload && !vnet)) {
    napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE",
                           "NativeQueue(fd, vnetHdr, slot, batch, receiveOffload)");
    return NULL;
  }
  queue_t* q = calloc(1, sizeof *q);
  if (q == NULL) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  polled_init(&q->base, env, fd, on_readable, queue_free, "the TUN queue", "TunQueue",
              "ERR_TUN_CLOSED");
  q->base.counters = queue_counters;
  q->vnet = vnet;
  q->offload = offload;
  q->slot = slot;
  q->batch = batch;
  q->read_max = offload && slot < OFFLOAD_READ_MAX ? OFFLOAD_READ_MAX : slot;
  /* `batch` ordinary packets always fit, plus room for one maximal read at the end: a batch
   * of coalesced packets ends early instead of every slot being 64 KiB. */
  q->buf_len = (size_t)slot * batch + (q->read_max - slot);
  void *buf_data, *off_data, *seg_data = NULL;
  if (!polled_share_buffer(&q->base, self, "readBuffer", q->buf_len, &buf_data) ||
      !polled_share_buffer(&q->base, self, "readOffsets", (size_t)batch * 2 * sizeof(uint32_t),
                           &off_data) ||
      (offload && !polled_share_buffer(&q->base, self, "readSegmentSizes",
                                       (size_t)batch * sizeof(uint16_t), &seg_data)) ||
      !polled_wrap(&q->base, self)) {
    polled_discard(&q->base); /* the fd stays the caller's */
    napi_throw_error(env, "ERR_TUN_NATIVE", "could not set up the queue buffers");
    return NULL;
  }
  q->buf = buf_data;
  q->offsets = off_data;
  q->seg_sizes = seg_data;
  return self;
}

/* Whether an IP packet of which `len` bytes were read is longer than that by its own header. */
static bool packet_cut(const uint8_t* p, size_t len) {
  size_t ip_len = len;
  if ((p[0] >> 4) == 4 && len >= 4)
    ip_len = ((size_t)p[2] << 8) | p[3];
  else if ((p[0] >> 4) == 6 && len >= 6)
    ip_len = 40 + (((size_t)p[4] << 8) | p[5]);
  return ip_len > len;
}

static void on_readable(uv_poll_t* h, int status, int events) {
  (void)events;
  queue_t* q = h->data;
  if (q->base.closed) return; /* a wake-up that raced close(): nothing to read, nothing to call */
  if (status < 0) {
    /* EPOLLERR (e.g. the device was deleted): libuv already stopped the handle. */
    q->read_errors += 1;
    uv_poll_stop(h);
    return;
  }
  uint32_t count = 0;
  size_t cursor = 0;
  size_t hdr = q->vnet ? VNET_HDR_LEN : 0;
  /* Packets are packed back to back; each read may be as large as read_max. */
  while (count < q->batch && cursor + q->read_max <= q->buf_len) {
    ssize_t n = read(q->base.fd, q->buf + cursor, q->read_max);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        /* The device is gone or broken (e.g. EBADFD after deletion): the fd would stay
         * readable-with-error forever, so stop polling instead of spinning. */
        q->read_errors += 1;
        uv_poll_stop(h);
      }
      break;
    }
    if ((size_t)n <= hdr) continue; /* nothing but a header: malformed, skip */
    if ((size_t)n >= q->read_max && packet_cut(q->buf + cursor + hdr, (size_t)n - hdr)) {
      /* TUN silently cuts a packet to the read size (the MTU grew after the queue was opened,
       * or a coalesced packet reached a queue opened without receive offload). */
      q->read_drops += 1;
      continue;
    }
    if (q->offload) {
      const uint8_t* vh = q->buf + cursor;
      uint8_t type = vh[1] & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
      uint16_t gso = 0;
      if (type == VIRTIO_NET_HDR_GSO_TCPV4 || type == VIRTIO_NET_HDR_GSO_TCPV6) {
        gso = (uint16_t)(vh[4] | (vh[5] << 8));
        q->coalesced_reads += 1;
      } else if (type != VIRTIO_NET_HDR_GSO_NONE) {
        q->read_drops += 1; /* e.g. UDP GSO, never enabled: nothing a TCP reader can use */
        continue;
      }
      q->seg_sizes[count] = gso;
    }
    q->offsets[2 * count] = (uint32_t)(cursor + hdr);
    q->offsets[2 * count + 1] = (uint32_t)(n - hdr);
    q->bytes_read += (double)(n - hdr);
    cursor += (size_t)n;
    count++;
  }
  if (count == 0) return;
  q->packets_read += count;
  q->read_batches += 1;
  polled_deliver(&q->base, count);
}

/* Byte `i` of the logical packet a ++ b. */
static inline uint8_t byte_at(const uint8_t* a, size_t alen, const uint8_t* b, size_t i) {
  return i < alen ? a[i] : b[i - alen];
}

/* Fills the virtio_net_hdr for a packet (split in a ++ b). With `partial`, asks the kernel to
 * finish the TCP/UDP checksum, locating it from the packet's own IP header. Returns false when
 * the packet cannot carry a partial checksum (not IPv4/IPv6 TCP/UDP, or truncated). */
static bool fill_vnet_hdr(uint8_t* vh, const uint8_t* a, size_t alen, const uint8_t* b, size_t blen,
                          bool partial) {
  memset(vh, 0, VNET_HDR_LEN);
  if (!partial) return true;
  size_t total = alen + blen;
  if (total < 20) return false;
  uint8_t v0 = byte_at(a, alen, b, 0);
  size_t ip_len;
  uint8_t proto;
  if ((v0 >> 4) == 4) {
    ip_len = (size_t)(v0 & 0x0f) * 4;
    if (ip_len < 20) return false;
    proto = byte_at(a, alen, b, 9);
  } else if ((v0 >> 4) == 6) {
    if (total < 40) return false;
    ip_len = 40;
    proto = byte_at(a, alen, b, 6);
  } else {
    return false;
  }
  size_t csum_off = proto == 6 ? 16 : proto == 17 ? 6 : 0;
  if (csum_off == 0 || ip_len + csum_off + 2 > total) return false;
  vh[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  vh[1] = VIRTIO_NET_HDR_GSO_NONE;
  vh[6] = (uint8_t)(ip_len & 0xff); /* csum_start, little-endian */
  vh[7] = (uint8_t)(ip_len >> 8);
  vh[8] = (uint8_t)csum_off; /* csum_offset, little-endian */
  vh[9] = 0;
  return true;
}

/* One packet = a ++ b, in one syscall. EAGAIN/ENOBUFS (and any other failure) count as a
 * drop: the hot path never throws. */
static bool queue_send(queue_t* q, const uint8_t* a, size_t alen, const uint8_t* b, size_t blen,
                       bool partial) {
  if (q->base.closed || alen + blen == 0) {
    q->write_drops += 1;
    return false;
  }
  uint8_t vh[VNET_HDR_LEN];
  struct iovec iov[3];
  int n = 0;
  if (q->vnet) {
    if (!fill_vnet_hdr(vh, a, alen, b, blen, partial)) {
      q->write_drops += 1;
      return false;
    }
    iov[n].iov_base = vh;
    iov[n++].iov_len = VNET_HDR_LEN;
  }
  if (alen > 0) {
    iov[n].iov_base = (void*)a;
    iov[n++].iov_len = alen;
  }
  if (blen > 0) {
    iov[n].iov_base = (void*)b;
    iov[n++].iov_len = blen;
  }
  ssize_t rc;
  do {
    rc = n == 1 ? write(q->base.fd, iov[0].iov_base, iov[0].iov_len) : writev(q->base.fd, iov, n);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    q->write_drops += 1;
    return false;
  }
  q->packets_written += 1;
  q->bytes_written += (double)(alen + blen);
  return true;
}

/* Largest TCP payload of one super-packet: the IP length fields are 16 bits. IPv4 total length
 * counts both headers (65535 - 20 - 20); IPv6 payload length counts only the TCP header
 * (65535 - 20). TCP or IPv4 options lower these by their size. */
#define SEG_MAX_PAYLOAD_V4 65495
#define SEG_MAX_PAYLOAD_V6 65515
/* VIRTIO_NET_HDR gso_size is 16 bits and the kernel reserves 0xFFFF (GSO_BY_FRAGS). */
#define SEG_MAX_SEGMENT 65534

/* Checks a super-packet header (IPv4 without fragments or IPv6 without extension headers, then
 * TCP) and fills the GSO virtio header for it. Returns the number of segments the kernel will
 * cut, or 0 when the header does not describe `plen` bytes of TCP payload. */
static uint32_t fill_gso_hdr(uint8_t* vh, const uint8_t* h, size_t hlen, size_t plen,
                             uint32_t seg) {
  size_t ip_len;
  uint8_t gso_type;
  if (hlen < 40) return 0;
  if ((h[0] >> 4) == 4) {
    ip_len = (size_t)(h[0] & 0x0f) * 4;
    if (ip_len < 20 || h[9] != 6) return 0;
    if ((((size_t)h[2] << 8) | h[3]) != hlen + plen) return 0;
    if ((h[6] & 0x3f) != 0 || h[7] != 0) return 0; /* MF or a fragment offset */
    gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
  } else if ((h[0] >> 4) == 6) {
    ip_len = 40;
    if (h[6] != 6) return 0;
    if ((((size_t)h[4] << 8) | h[5]) != hlen - 40 + plen) return 0;
    gso_type = VIRTIO_NET_HDR_GSO_TCPV6;
  } else {
    return 0;
  }
  /* The header must end exactly where the TCP header (options included) ends: the kernel copies
   * hdr_len bytes in front of every segment. */
  if (ip_len + 20 > hlen || ip_len + (size_t)(h[ip_len + 12] >> 4) * 4 != hlen) return 0;
  memset(vh, 0, VNET_HDR_LEN);
  vh[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  vh[6] = (uint8_t)(ip_len & 0xff); /* csum_start */
  vh[7] = (uint8_t)(ip_len >> 8);
  vh[8] = 16; /* csum_offset: TCP checksum */
  if (plen <= seg) {
    vh[1] = VIRTIO_NET_HDR_GSO_NONE; /* one segment: an ordinary partial-checksum write */
    return 1;
  }
  vh[1] = gso_type;
  vh[2] = (uint8_t)(hlen & 0xff); /* hdr_len */
  vh[3] = (uint8_t)(hlen >> 8);
  vh[4] = (uint8_t)(seg & 0xff); /* gso_size */
  vh[5] = (uint8_t)(seg >> 8);
  return (uint32_t)((plen + seg - 1) / seg);
}

/* Partial checksums need the virtio header: asking for one without it is a programming error. */
static bool check_partial(napi_env env, queue_t* q, napi_value v, bool* partial) {
  *partial = false;
  napi_valuetype t;
  if (v == NULL || napi_typeof(env, v, &t) != napi_ok || t != napi_boolean) return true;
  napi_get_value_bool(env, v, partial);
  if (*partial && !q->vnet) {
    napi_throw_error(env, "ERR_TUN_NO_CHECKSUM_OFFLOAD",
                     "partialChecksum needs a queue opened with vnetHdr: true "
                     "(checksumOffload is false; write complete checksums instead)");
    return false;
  }
  return true;
}

/* write(packet, partialChecksum) -> boolean */
static napi_value queue_write(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2] = {NULL, NULL};
  queue_t* q = (queue_t*)polled_unwrap(env, info, &argc, argv);
  if (q == NULL) return NULL;
  uint8_t* data;
  size_t len;
  bool partial;
  if (!get_bytes(env, argv[0], &data, &len, "packet")) return NULL;
  if (!check_partial(env, q, argc > 1 ? argv[1] : NULL, &partial)) return NULL;
  napi_value out;
  napi_get_boolean(env, queue_send(q, data, len, NULL, 0, partial), &out);
  return out;
}

/* writeGather(header, payload, partialChecksum) -> boolean */
static napi_value queue_write_gather(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3] = {NULL, NULL, NULL};
  queue_t* q = (queue_t*)polled_unwrap(env, info, &argc, argv);
  if (q == NULL) return NULL;
  uint8_t *h, *p;
  size_t hlen, plen;
  bool partial;
  if (!get_bytes(env, argv[0], &h, &hlen, "header")) return NULL;
  if (!get_bytes(env, argv[1], &p, &plen, "payload")) return NULL;
  if (!check_partial(env, q, argc > 2 ? argv[2] : NULL, &partial)) return NULL;
  napi_value out;
  napi_get_boolean(env, queue_send(q, h, hlen, p, plen, partial), &out);
  return out;
}

/* writeSegmented(header, payload, segmentSize) -> boolean. One writev of a TCP super-packet that
 * the kernel cuts into segments of segmentSize payload bytes (GSO), completing every checksum
 * and IPv4 header. A malformed header is a drop (false, counted) like any other bad write;
 * argument ranges and a queue without the virtio header are programming errors and throw. */
static napi_value queue_write_segmented(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3] = {NULL, NULL, NULL};
  queue_t* q = (queue_t*)polled_unwrap(env, info, &argc, argv);
  if (q == NULL) return NULL;
  uint8_t *h, *p;
  size_t hlen, plen;
  double segd = 0;
  if (!get_bytes(env, argv[0], &h, &hlen, "header")) return NULL;
  if (!get_bytes(env, argv[1], &p, &plen, "payload")) return NULL;
  if (argv[2] == NULL || napi_get_value_double(env, argv[2], &segd) != napi_ok || !(segd >= 1) ||
      segd > SEG_MAX_SEGMENT || segd != (double)(uint32_t)segd) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "segmentSize must be an integer from 1 to 65534");
    return NULL;
  }
  uint32_t seg = (uint32_t)segd;
  if (!q->vnet) {
    napi_throw_error(env, "ERR_TUN_NO_SEGMENTATION_OFFLOAD",
                     "writeSegmented needs a queue opened with vnetHdr: true "
                     "(segmentationOffload is false; write one packet per segment instead)");
    return NULL;
  }
  bool v6 = hlen > 0 && (h[0] >> 4) == 6;
  if (plen > (v6 ? SEG_MAX_PAYLOAD_V6 : SEG_MAX_PAYLOAD_V4)) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE",
                           v6 ? "payload exceeds 65515 bytes (IPv6 payload length limit)"
                              : "payload exceeds 65495 bytes (IPv4 total length limit)");
    return NULL;
  }
  napi_value out;
  uint8_t vh[VNET_HDR_LEN];
  uint32_t segs = q->base.closed || plen == 0 ? 0 : fill_gso_hdr(vh, h, hlen, plen, seg);
  if (segs == 0) {
    q->write_drops += 1;
    napi_get_boolean(env, false, &out);
    return out;
  }
  struct iovec iov[3] = {{vh, VNET_HDR_LEN}, {h, hlen}, {p, plen}};
  ssize_t rc;
  do {
    rc = writev(q->base.fd, iov, 3);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    q->write_drops += 1; /* the whole super-packet: one drop, as the kernel saw one write */
  } else {
    q->packets_written += segs;
    q->bytes_written += (double)segs * (double)hlen + (double)plen;
    if (segs > 1) q->segmented_writes += 1;
  }
  napi_get_boolean(env, rc >= 0, &out);
  return out;
}

/* writeBatch(buffer, offsets, count, partialChecksum) -> number of packets written */
static napi_value queue_write_batch(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4] = {NULL, NULL, NULL, NULL};
  queue_t* q = (queue_t*)polled_unwrap(env, info, &argc, argv);
  if (q == NULL) return NULL;
  uint8_t* buf;
  size_t len;
  if (!get_bytes(env, argv[0], &buf, &len, "buffer")) return NULL;
  const uint32_t* off;
  uint32_t count;
  if (!get_batch_offsets(env, argv[1], argv[2], &off, &count)) return NULL;
  bool partial;
  if (!check_partial(env, q, argc > 3 ? argv[3] : NULL, &partial)) return NULL;
  uint32_t written = 0;
  for (uint32_t i = 0; i < count; i++) {
    size_t start = off[2 * i], plen = off[2 * i + 1];
    if (start > len || plen > len - start) {
      q->write_drops += 1; /* out-of-bounds entry: dropped, never read past the buffer */
      continue;
    }
    if (queue_send(q, buf + start, plen, NULL, 0, partial)) written++;
  }
  napi_value out;
  napi_create_uint32(env, written, &out);
  return out;
}

/* The counters of stats() (TunQueueStats). */
static size_t queue_counters(const polled_t* p, polled_counter_t* out) {
  const queue_t* q = (const queue_t*)p;
  const polled_counter_t all[] = {
      {"packetsRead", q->packets_read},       {"bytesRead", q->bytes_read},
      {"packetsWritten", q->packets_written}, {"bytesWritten", q->bytes_written},
      {"writeDrops", q->write_drops},         {"readBatches", q->read_batches},
      {"readErrors", q->read_errors},         {"segmentedWrites", q->segmented_writes},
      {"readDrops", q->read_drops},           {"coalescedReads", q->coalesced_reads},
  };
  memcpy(out, all, sizeof all);
  return sizeof all / sizeof all[0];
}

bool queue_define_class(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      METHOD("write", queue_write),
      METHOD("writeGather", queue_write_gather),
      METHOD("writeBatch", queue_write_batch),
      METHOD("writeSegmented", queue_write_segmented),
  };
  return polled_define_class(env, exports, "NativeQueue", queue_new, props,
                             sizeof props / sizeof props[0]);
}
