/*
 * NativeUdp: a non-blocking UDP socket whose receive side drains up to `batch` datagrams per
 * wake-up with one recvmmsg into a buffer shared with JS (one JS call per batch), and whose
 * send side is synchronous (sendto / sendmmsg), so the caller may reuse its buffer as soon as
 * the call returns. Readiness comes from uv_poll on the calling thread's loop, so a socket
 * works the same in the main thread and in a worker_thread; env teardown closes it (async
 * cleanup hook), exactly like the TUN queues in queue.c.
 *
 * Source address records (ADDR_RECORD bytes per datagram, little-endian like every JS typed
 * array on Linux):
 *   [0, 16)  address bytes (IPv4: the 4 bytes in [0, 4), rest zero; v4-mapped IPv6 peers of a
 *            dual-stack socket are reported as IPv4)
 *   [16, 18) port (u16)            [18] family (4 or 6)      [19] zero
 *   [20, 24) hash (u32, FNV-1a over family, address and port)
 *   [24, 32) key (f64): exact for IPv4 (address * 65536 + port, < 2^48); for IPv6
 *            2^52 + hash(address) * 65536 + port (compare the bytes on a match)
 * The same layout is accepted by send() and sendBatch() as a destination.
 */
#define _GNU_SOURCE /* recvmmsg, sendmmsg */
#include "udp.h"

#include "polled.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define ADDR_RECORD 32
#define SEND_CHUNK 64 /* messages per sendmmsg call */

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103 /* linux/udp.h, Linux >= 4.18 */
#endif
/* Segmentation offload limits, the same on every kernel that has UDP_SEGMENT: the kernel's
 * UDP_MAX_SEGMENTS was 64 until 6.10 raised it, and one send is one IPv4 packet before it is
 * cut (65535 - 20 IP - 8 UDP; IPv6 would allow 20 more, kept common for simplicity). */
#define GSO_MAX_SEGMENTS 64
#define GSO_MAX_BYTES 65507
/* Consecutive EINVAL refusals of UDP_SEGMENT before a socket stops trying. Kernels before 6.x
 * also answer EINVAL when a segment does not fit the route's MTU (later ones EMSGSIZE, which
 * never counts), which is about the call, not the kernel. */
#define GSO_REFUSALS_LIMIT 3
/* Room for one IP_PKTINFO or IPV6_PKTINFO control message (the larger, in6_pktinfo, plus
 * slack for a second one, since a dual-stack socket may report both). */
#define CTRL_SPACE 128

typedef struct {
  polled_t base; /* first: fd, poll handle, handler, lifecycle (polled.h) */
  int family;    /* AF_INET or AF_INET6 */
  bool connected;

  uint8_t* buf;
  uint32_t* offsets;
  uint8_t* records;
  uint32_t batch;
  uint32_t slot;
  struct mmsghdr* msgs;
  struct iovec* iovs;
  struct sockaddr_storage* froms;
  bool pktinfo;        /* IP_PKTINFO / IPV6_RECVPKTINFO on: report each datagram's destination */
  uint16_t local_port; /* after bind: the port of destination records */
  uint8_t* ctrl;       /* batch * CTRL_SPACE control buffers for recvmmsg */
  uint8_t* dst_records;

  bool shared_area;      /* msgs, iovs, froms, ctrl live in a receive area JS made (not ours) */
  bool gso_off;          /* the kernel refused UDP_SEGMENT: send segments one by one */
  uint8_t gso_refusals;  /* consecutive EINVAL refusals */

  double dgrams_in, bytes_in, dgrams_out, bytes_out, send_drops, batches, truncated, recv_errors;
  double gso_sends, gso_fallbacks;
} udp_t;

/* ------------------------------------------------------------------------------------------ */
/* Address records                                                                            */
/* ------------------------------------------------------------------------------------------ */

static uint32_t fnv1a(uint32_t h, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 16777619u;
  }
  return h;
}

static void fill_record(uint8_t* rec, const struct sockaddr_storage* ss) {
  memset(rec, 0, ADDR_RECORD);
  uint16_t port = 0;
  uint8_t fam = 0;
  const uint8_t* a = NULL;
  size_t alen = 0;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in* in = (const struct sockaddr_in*)ss;
    port = ntohs(in->sin_port);
    fam = 4;
    a = (const uint8_t*)&in->sin_addr;
    alen = 4;
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6* in6 = (const struct sockaddr_in6*)ss;
    port = ntohs(in6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      fam = 4;
      a = (const uint8_t*)&in6->sin6_addr + 12;
      alen = 4;
    } else {
      fam = 6;
      a = (const uint8_t*)&in6->sin6_addr;
      alen = 16;
    }
  } else {
    return;
  }
  memcpy(rec, a, alen);
  memcpy(rec + 16, &port, 2);
  rec[18] = fam;
  uint32_t h = fnv1a(2166136261u, &fam, 1);
  h = fnv1a(h, a, alen);
  h = fnv1a(h, (const uint8_t*)&port, 2);
  memcpy(rec + 20, &h, 4);
  double key;
  if (fam == 4) {
    uint32_t v4 = ((uint32_t)a[0] << 24) | ((uint32_t)a[1] << 16) | ((uint32_t)a[2] << 8) | a[3];
    key = (double)v4 * 65536.0 + port;
  } else {
    key = 4503599627370496.0 /* 2^52 */ + (double)fnv1a(2166136261u, a, 16) * 65536.0 + port;
  }
  memcpy(rec + 24, &key, 8);
}

/* Builds the sockaddr for `sock_family` from a record; false for a record that is not one. */
static bool record_to_sockaddr(int sock_family, const uint8_t* rec, struct sockaddr_storage* ss,
                               socklen_t* len) {
  uint16_t port;
  memcpy(&port, rec + 16, 2);
  uint8_t fam = rec[18];
  memset(ss, 0, sizeof *ss);
  if (fam == 4 && sock_family == AF_INET) {
    struct sockaddr_in* in = (struct sockaddr_in*)ss;
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    memcpy(&in->sin_addr, rec, 4);
    *len = sizeof *in;
    return true;
  }
  if (sock_family == AF_INET6 && (fam == 4 || fam == 6)) {
    struct sockaddr_in6* in6 = (struct sockaddr_in6*)ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    if (fam == 4) { /* IPv4 peer of a dual-stack socket: v4-mapped */
      uint8_t* b = (uint8_t*)&in6->sin6_addr;
      b[10] = 0xff;
      b[11] = 0xff;
      memcpy(b + 12, rec, 4);
    } else {
      memcpy(&in6->sin6_addr, rec, 16);
    }
    *len = sizeof *in6;
    return true;
  }
  return false;
}

/* Parses "address" + port for a socket of `sock_family`; -errno-like code on failure. */
static bool parse_sockaddr(int sock_family, const char* str, uint32_t port,
                           struct sockaddr_storage* ss, socklen_t* len) {
  uint8_t rec[ADDR_RECORD];
  memset(rec, 0, sizeof rec);
  uint16_t p = (uint16_t)port;
  memcpy(rec + 16, &p, 2);
  if (inet_pton(AF_INET, str, rec) == 1) {
    rec[18] = 4;
  } else if (inet_pton(AF_INET6, str, rec) == 1) {
    rec[18] = 6;
    if (IN6_IS_ADDR_V4MAPPED((struct in6_addr*)rec) && sock_family == AF_INET) {
      memmove(rec, rec + 12, 4);
      memset(rec + 4, 0, 12);
      rec[18] = 4;
    }
  } else {
    return false;
  }
  return record_to_sockaddr(sock_family, rec, ss, len);
}

/* ------------------------------------------------------------------------------------------ */
/* Lifecycle                                                                                  */
/* ------------------------------------------------------------------------------------------ */

static void on_udp_readable(uv_poll_t* h, int status, int events);

static void udp_free(polled_t* p) {
  udp_t* u = (udp_t*)p;
  if (u->shared_area) {
    free(u);
    return;
  }
  free(u->msgs);
  free(u->iovs);
  free(u->froms);
  free(u->ctrl);
  free(u);
}

static udp_t* udp_unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv) {
  return (udp_t*)polled_unwrap(env, info, argc, argv);
}

static bool require_open(napi_env env, udp_t* u) {
  return polled_require_open(env, &u->base);
}

/* Per datagram slot, the receive bookkeeping in a shared area's scratch buffer: message header,
 * iovec, source address and control space, in that order (each part 8-byte aligned). */
#define SCRATCH_PER_SLOT \
  (sizeof(struct mmsghdr) + sizeof(struct iovec) + sizeof(struct sockaddr_storage) + CTRL_SPACE)

/* Points the receive side at a receive area JS made (several sockets of one thread share it:
 * a batch is only valid while its handler runs, so they never need it at the same time):
 * `area` has ArrayBuffers buffer, offsets, addresses, destinations and scratch. */
static bool adopt_area(napi_env env, udp_t* u, napi_value self, napi_value area) {
  static const char* const names[] = {"buffer", "offsets", "addresses", "destinations", "scratch"};
  static const char* const exposed[] = {"readBuffer", "readOffsets", "readAddresses",
                                        "readDestinations", "readScratch"};
  const size_t b = u->batch;
  const size_t need[] = {(size_t)u->slot * b, b * 2 * sizeof(uint32_t), b * ADDR_RECORD,
                         b * ADDR_RECORD, b * SCRATCH_PER_SLOT};
  void* data[5];
  for (int i = 0; i < 5; i++) {
    napi_value ab;
    if (napi_get_named_property(env, area, names[i], &ab) != napi_ok ||
        !polled_adopt_buffer(&u->base, self, exposed[i], ab, need[i], &data[i]))
      return false;
  }
  u->buf = data[0];
  u->offsets = data[1];
  u->records = data[2];
  u->dst_records = data[3];
  uint8_t* scratch = data[4];
  u->msgs = (struct mmsghdr*)scratch;
  u->iovs = (struct iovec*)(scratch + b * sizeof(struct mmsghdr));
  u->froms = (struct sockaddr_storage*)((uint8_t*)u->iovs + b * sizeof(struct iovec));
  u->ctrl = (uint8_t*)u->froms + b * sizeof(struct sockaddr_storage);
  u->shared_area = true;
  return true;
}

/* new NativeUdp(family 4|6, slotSize, batchSize[, area]): creates the socket (not yet bound)
 * and its receive buffers, exposed as readBuffer, readOffsets, readAddresses, or receives into
 * `area` (see adopt_area) when given. */
static napi_value udp_new(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4] = {NULL, NULL, NULL, NULL}, self;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  uint32_t fam = 0, slot = 0, batch = 0;
  if (argc < 3 || napi_get_value_uint32(env, argv[0], &fam) != napi_ok ||
      napi_get_value_uint32(env, argv[1], &slot) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &batch) != napi_ok || (fam != 4 && fam != 6) ||
      slot < 1 || slot > 65536 || batch < 1 || batch > 1024) {
    napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE", "NativeUdp(family 4|6, slot 1..65536, batch 1..1024)");
    return NULL;
  }
  napi_value area = NULL;
  if (argc >= 4 && argv[3] != NULL) {
    napi_valuetype t;
    NAPI_CALL(env, napi_typeof(env, argv[3], &t));
    if (t == napi_object) area = argv[3];
    else if (t != napi_undefined && t != napi_null) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "NativeUdp: area must be an object");
      return NULL;
    }
  }
  int family = fam == 4 ? AF_INET : AF_INET6;
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw_errno(env, errno, "socket", fam == 4 ? "an IPv4 UDP socket" : "an IPv6 UDP socket");
    return NULL;
  }
  udp_t* u = calloc(1, sizeof *u);
  if (u != NULL && area == NULL) {
    u->msgs = calloc(batch, sizeof *u->msgs);
    u->iovs = calloc(batch, sizeof *u->iovs);
    u->froms = calloc(batch, sizeof *u->froms);
    u->ctrl = calloc(batch, CTRL_SPACE);
  }
  if (u == NULL || (area == NULL && (u->msgs == NULL || u->iovs == NULL || u->froms == NULL ||
                                     u->ctrl == NULL))) {
    close(fd);
    if (u) {
      free(u->msgs);
      free(u->iovs);
      free(u->froms);
      free(u->ctrl);
      free(u);
    }
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  polled_init(&u->base, env, fd, on_udp_readable, udp_free, "the UDP socket", "UdpBatchSocket",
              "ERR_SOCKET_CLOSED");
  u->family = family;
  /* A kernel without UDP_SEGMENT (< 4.18) would not refuse the cmsg but ignore it and send one
   * big datagram; the socket option (0 = no default segment size) tells them apart. */
  int no_default = 0;
  u->gso_off = setsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &no_default, sizeof no_default) < 0;
  u->slot = slot;
  u->batch = batch;
  if (area != NULL) {
    bool exception = false;
    if (!adopt_area(env, u, self, area) || !polled_wrap(&u->base, self)) {
      close(fd);
      u->base.fd = -1;
      polled_discard(&u->base);
      napi_is_exception_pending(env, &exception);
      if (!exception) napi_throw_error(env, "ERR_UDP_NATIVE", "could not set up the socket buffers");
      return NULL;
    }
  } else {
    void *buf_data, *off_data, *rec_data, *dst_data;
    if (!polled_share_buffer(&u->base, self, "readBuffer", (size_t)slot * batch, &buf_data) ||
        !polled_share_buffer(&u->base, self, "readOffsets", (size_t)batch * 2 * sizeof(uint32_t),
                             &off_data) ||
        !polled_share_buffer(&u->base, self, "readAddresses", (size_t)batch * ADDR_RECORD,
                             &rec_data) ||
        !polled_share_buffer(&u->base, self, "readDestinations", (size_t)batch * ADDR_RECORD,
                             &dst_data) ||
        !polled_wrap(&u->base, self)) {
      close(fd);
      polled_discard(&u->base);
      napi_throw_error(env, "ERR_UDP_NATIVE", "could not set up the socket buffers");
      return NULL;
    }
    u->buf = buf_data;
    u->offsets = off_data;
    u->records = rec_data;
    u->dst_records = dst_data;
  }
  return self;
}

/* Sets a buffer size, trying the privileged variant (ignores net.core.*mem_max) first. */
static int set_buffer(int fd, int force_opt, int opt, int bytes) {
  if (setsockopt(fd, SOL_SOCKET, force_opt, &bytes, sizeof bytes) == 0) return 0;
  return setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof bytes) == 0 ? 0 : errno;
}

/* bind(address, port, reusePort, recvBufferBytes, sendBufferBytes, packetInfo) (buffer sizes:
 * 0 = leave the default) */
static napi_value udp_bind(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
  udp_t* u = udp_unwrap(env, info, &argc, argv);
  if (u == NULL || !require_open(env, u)) return NULL;
  char addr[64];
  uint32_t port = 0;
  int32_t rcv = 0, snd = 0;
  bool reuse = false, pktinfo = false;
  if (!get_string(env, argv[0], addr, sizeof addr, "address")) return NULL;
  if (argv[5] != NULL) napi_get_value_bool(env, argv[5], &pktinfo);
  napi_get_value_uint32(env, argv[1], &port);
  napi_get_value_bool(env, argv[2], &reuse);
  napi_get_value_int32(env, argv[3], &rcv);
  napi_get_value_int32(env, argv[4], &snd);
  struct sockaddr_storage ss;
  socklen_t len;
  if (port > 65535 || !parse_sockaddr(u->family, addr, port, &ss, &len)) {
    throw_errno(env, EINVAL, "bind", "an address that is not valid for this socket's family");
    return NULL;
  }
  int one = 1;
  if (reuse && setsockopt(u->base.fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
    throw_errno(env, errno, "setsockopt(SO_REUSEPORT)", addr);
    return NULL;
  }
  int err;
  if (rcv > 0 && (err = set_buffer(u->base.fd, SO_RCVBUFFORCE, SO_RCVBUF, rcv)) != 0) {
    throw_errno(env, err, "setsockopt(SO_RCVBUF)", addr);
    return NULL;
  }
  if (snd > 0 && (err = set_buffer(u->base.fd, SO_SNDBUFFORCE, SO_SNDBUF, snd)) != 0) {
    throw_errno(env, err, "setsockopt(SO_SNDBUF)", addr);
    return NULL;
  }
  if (pktinfo) {
    /* IPv4 sockets: IP_PKTINFO. IPv6: IPV6_RECVPKTINFO, plus IP_PKTINFO for the IPv4 traffic
     * of a dual-stack socket (refused on a v6-only socket, which needs none). */
    int rc = u->family == AF_INET ? setsockopt(u->base.fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one)
                                  : setsockopt(u->base.fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
    if (rc < 0) {
      throw_errno(env, errno, u->family == AF_INET ? "setsockopt(IP_PKTINFO)" : "setsockopt(IPV6_RECVPKTINFO)", addr);
      return NULL;
    }
    if (u->family == AF_INET6) setsockopt(u->base.fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
    u->pktinfo = true;
  }
  if (bind(u->base.fd, (struct sockaddr*)&ss, len) < 0) {
    throw_errno(env, errno, "bind", addr);
    return NULL;
  }
  struct sockaddr_storage bound;
  socklen_t blen = sizeof bound;
  memset(&bound, 0, sizeof bound);
  if (getsockname(u->base.fd, (struct sockaddr*)&bound, &blen) == 0)
    u->local_port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in*)&bound)->sin_port
                                                     : ((struct sockaddr_in6*)&bound)->sin6_port);
  return NULL;
}

/* connect(address, port) */
static napi_value udp_connect(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  udp_t* u = udp_unwrap(env, info, &argc, argv);
  if (u == NULL || !require_open(env, u)) return NULL;
  char addr[64];
  uint32_t port = 0;
  if (!get_string(env, argv[0], addr, sizeof addr, "address")) return NULL;
  napi_get_value_uint32(env, argv[1], &port);
  struct sockaddr_storage ss;
  socklen_t len;
  if (port == 0 || port > 65535 || !parse_sockaddr(u->family, addr, port, &ss, &len)) {
    throw_errno(env, EINVAL, "connect", "an address or port that is not valid for this socket");
    return NULL;
  }
  if (connect(u->base.fd, (struct sockaddr*)&ss, len) < 0) {
    throw_errno(env, errno, "connect", addr);
    return NULL;
  }
  u->connected = true;
  return NULL;
}

/* Writes {address, port, family} of a sockaddr into a new JS object. */
static napi_value sockaddr_object(napi_env env, const struct sockaddr_storage* ss) {
  uint8_t rec[ADDR_RECORD];
  fill_record(rec, ss);
  char text[INET6_ADDRSTRLEN] = "";
  inet_ntop(rec[18] == 4 ? AF_INET : AF_INET6, rec, text, sizeof text);
  uint16_t port;
  memcpy(&port, rec + 16, 2);
  napi_value out, a, p, f;
  NAPI_CALL(env, napi_create_object(env, &out));
  NAPI_CALL(env, napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &a));
  NAPI_CALL(env, napi_create_uint32(env, port, &p));
  NAPI_CALL(env, napi_create_uint32(env, rec[18], &f));
  NAPI_CALL(env, napi_set_named_property(env, out, "address", a));
  NAPI_CALL(env, napi_set_named_property(env, out, "port", p));
  NAPI_CALL(env, napi_set_named_property(env, out, "family", f));
  return out;
}

/* localAddress() -> { address, port, family } */
static napi_value udp_local_address(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  udp_t* u = udp_unwrap(env, info, &argc, NULL);
  if (u == NULL || !require_open(env, u)) return NULL;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (getsockname(u->base.fd, (struct sockaddr*)&ss, &len) < 0) {
    throw_errno(env, errno, "getsockname", "the UDP socket");
    return NULL;
  }
  return sockaddr_object(env, &ss);
}

/* ------------------------------------------------------------------------------------------ */
/* Receive                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* Destination record of a received datagram from its IP_PKTINFO / IPV6_PKTINFO control
 * message (address it was sent to, with the socket's port); all zero when there is none. */
static void fill_destination(const udp_t* u, struct msghdr* m, uint8_t* rec) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  for (struct cmsghdr* c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
      struct in_pktinfo pi;
      memcpy(&pi, CMSG_DATA(c), sizeof pi);
      struct sockaddr_in* in = (struct sockaddr_in*)&ss;
      in->sin_family = AF_INET;
      in->sin_port = htons(u->local_port);
      in->sin_addr = pi.ipi_addr;
      break;
    }
    if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
      struct in6_pktinfo pi;
      memcpy(&pi, CMSG_DATA(c), sizeof pi);
      struct sockaddr_in6* in6 = (struct sockaddr_in6*)&ss;
      in6->sin6_family = AF_INET6;
      in6->sin6_port = htons(u->local_port);
      in6->sin6_addr = pi.ipi6_addr;
      break;
    }
  }
  fill_record(rec, &ss); /* zero record for an unknown family */
}

/* Writes a control message making `rec` (an address record) the source address of a send;
 * returns its length, 0 when the record does not fit the socket. */
static size_t source_cmsg(const udp_t* u, const uint8_t* rec, uint8_t* ctrl) {
  struct sockaddr_storage ss;
  socklen_t len;
  if (!record_to_sockaddr(u->family, rec, &ss, &len)) return 0;
  memset(ctrl, 0, CTRL_SPACE);
  struct msghdr m;
  memset(&m, 0, sizeof m);
  m.msg_control = ctrl;
  if (u->family == AF_INET) {
    m.msg_controllen = CMSG_SPACE(sizeof(struct in_pktinfo));
    struct cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
    struct in_pktinfo pi;
    memset(&pi, 0, sizeof pi);
    pi.ipi_spec_dst = ((struct sockaddr_in*)&ss)->sin_addr;
    memcpy(CMSG_DATA(c), &pi, sizeof pi);
  } else {
    /* Also right for IPv4 peers of a dual-stack socket: the kernel accepts a v4-mapped
     * IPV6_PKTINFO address on their path. */
    m.msg_controllen = CMSG_SPACE(sizeof(struct in6_pktinfo));
    struct cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(struct in6_pktinfo));
    struct in6_pktinfo pi;
    memset(&pi, 0, sizeof pi);
    pi.ipi6_addr = ((struct sockaddr_in6*)&ss)->sin6_addr;
    memcpy(CMSG_DATA(c), &pi, sizeof pi);
  }
  return m.msg_controllen;
}

/* Reads the index of a record in an array of `len` bytes (absent: 0). False when it is not a
 * whole number naming a whole record inside the array. The index is taken as a double, not
 * with napi_get_value_uint32, which would wrap -1 or 2^32 + k silently, and it is compared
 * with the number of records rather than by computing (index + 1) * ADDR_RECORD, which
 * overflows 32 bits for huge indices. */
static bool record_index(napi_env env, napi_value value, size_t len, size_t* out) {
  double d = 0;
  if (value != NULL) {
    napi_valuetype t;
    if (napi_typeof(env, value, &t) != napi_ok) return false;
    if (t != napi_undefined && napi_get_value_double(env, value, &d) != napi_ok) return false;
  }
  /* Bounds first: converting a double beyond size_t's range to it is undefined. */
  if (!(d >= 0) || !(d < (double)(len / ADDR_RECORD)) || d != (double)(size_t)d) return false;
  *out = (size_t)d;
  return true;
}

/* Reads an optional source record argument: (records, index) -> pointer or NULL. False (JS
 * error thrown) when malformed. */
static bool get_source(napi_env env, napi_value recs, napi_value index, const uint8_t** out) {
  *out = NULL;
  if (recs == NULL) return true;
  napi_valuetype t;
  if (napi_typeof(env, recs, &t) != napi_ok) return false;
  if (t == napi_undefined || t == napi_null) return true;
  uint8_t* data;
  size_t len;
  if (!get_bytes(env, recs, &data, &len, "source address records")) return false;
  size_t i = 0;
  if (!record_index(env, index, len, &i)) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "source record index out of range");
    return false;
  }
  *out = data + i * ADDR_RECORD;
  return true;
}

static void on_udp_readable(uv_poll_t* h, int status, int events) {
  (void)events;
  udp_t* u = h->data;
  if (u->base.closed) return;
  if (status < 0) {
    u->recv_errors += 1; /* e.g. a pending ICMP error; reading clears it, keep polling */
  }
  for (uint32_t i = 0; i < u->batch; i++) {
    struct msghdr* m = &u->msgs[i].msg_hdr;
    m->msg_name = &u->froms[i];
    m->msg_namelen = sizeof u->froms[i];
    /* Set each time: a shared area's slots serve several sockets (same buffer, same slots). */
    u->iovs[i].iov_base = u->buf + (size_t)i * u->slot;
    u->iovs[i].iov_len = u->slot;
    m->msg_iov = &u->iovs[i];
    m->msg_iovlen = 1;
    m->msg_control = u->pktinfo ? u->ctrl + (size_t)i * CTRL_SPACE : NULL;
    m->msg_controllen = u->pktinfo ? CTRL_SPACE : 0;
    m->msg_flags = 0;
  }
  int n;
  do {
    n = recvmmsg(u->base.fd, u->msgs, u->batch, MSG_DONTWAIT, NULL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    /* EAGAIN: spurious wake-up. Anything else (ECONNREFUSED from an ICMP error on a connected
     * socket) is reported once by the kernel and cleared: count it and keep polling. */
    if (errno != EAGAIN && errno != EWOULDBLOCK) u->recv_errors += 1;
    return;
  }
  uint32_t count = 0;
  for (int i = 0; i < n; i++) {
    if (u->msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
      u->truncated += 1; /* larger than maxDatagramBytes: never deliver a cut datagram */
      continue;
    }
    uint32_t len = u->msgs[i].msg_len;
    u->offsets[2 * count] = (uint32_t)i * u->slot;
    u->offsets[2 * count + 1] = len;
    fill_record(u->records + (size_t)count * ADDR_RECORD, &u->froms[i]);
    if (u->pktinfo) fill_destination(u, &u->msgs[i].msg_hdr, u->dst_records + (size_t)count * ADDR_RECORD);
    u->bytes_in += len;
    count++;
  }
  if (count == 0) return;
  u->dgrams_in += count;
  u->batches += 1;
  polled_deliver(&u->base, count);
}

/* ------------------------------------------------------------------------------------------ */
/* Send                                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* Reads a destination argument: a record array + index, or a string + port. *has = false when
 * no destination was given (connected sockets). False (JS error thrown) when malformed. */
static bool get_destination(napi_env env, udp_t* u, napi_value addr, napi_value second,
                            struct sockaddr_storage* ss, socklen_t* len, bool* has) {
  *has = false;
  if (addr == NULL) return true;
  napi_valuetype t;
  if (napi_typeof(env, addr, &t) != napi_ok) return false;
  if (t == napi_undefined || t == napi_null) return true;
  if (u->connected) return true; /* a connected socket has its one destination */
  if (t == napi_string) {
    uint32_t n = 0;
    if (second != NULL) napi_get_value_uint32(env, second, &n);
    char text[64];
    if (!get_string(env, addr, text, sizeof text, "address")) return false;
    if (n == 0 || n > 65535 || !parse_sockaddr(u->family, text, n, ss, len)) {
      napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE",
                             "destination must be an address of the socket's family and a port 1..65535");
      return false;
    }
  } else {
    uint8_t* rec;
    size_t rlen;
    if (!get_bytes(env, addr, &rec, &rlen, "address record")) return false;
    size_t n = 0;
    if (!record_index(env, second, rlen, &n) ||
        !record_to_sockaddr(u->family, rec + n * ADDR_RECORD, ss, len)) {
      napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE",
                             "address record index out of range, or not an address of this socket's family");
      return false;
    }
  }
  *has = true;
  return true;
}

/* Sends the `segs` datagrams of data[0, len) (each `seg` bytes, the last shorter) one by one
 * through sendmmsg, all to one destination with one control block. Returns how many went. */
static uint32_t send_each(udp_t* u, uint8_t* data, size_t len, uint32_t seg, uint32_t segs,
                          struct msghdr* proto) {
  struct mmsghdr msgs[GSO_MAX_SEGMENTS];
  struct iovec iovs[GSO_MAX_SEGMENTS];
  for (uint32_t k = 0; k < segs; k++) {
    size_t start = (size_t)k * seg;
    iovs[k].iov_base = data + start;
    iovs[k].iov_len = len - start < seg ? len - start : seg;
    msgs[k].msg_hdr = *proto;
    msgs[k].msg_hdr.msg_iov = &iovs[k];
    msgs[k].msg_hdr.msg_iovlen = 1;
    msgs[k].msg_len = 0;
  }
  uint32_t done = 0;
  while (done < segs) {
    int rc = sendmmsg(u->base.fd, msgs + done, segs - done, MSG_DONTWAIT);
    if (rc > 0) {
      for (int k = 0; k < rc; k++) u->bytes_out += iovs[done + k].iov_len;
      done += (uint32_t)rc;
      continue;
    }
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) break;
    /* This datagram failed on its own (e.g. a pending ICMP error): skip it, try the rest. */
    u->send_drops += 1;
    segs--;
    memmove(&msgs[done], &msgs[done + 1], (segs - done) * sizeof msgs[0]);
    memmove(&iovs[done], &iovs[done + 1], (segs - done) * sizeof iovs[0]);
    for (uint32_t k = done; k < segs; k++) msgs[k].msg_hdr.msg_iov = &iovs[k];
  }
  u->send_drops += segs - done;
  u->dgrams_out += done;
  return done;
}

/* Sends data[0, len) as `segs` datagrams of `seg` bytes (the last shorter) to the destination
 * (or the connected peer), from the source record `src` if given: one sendmsg, with UDP_SEGMENT
 * when there are several datagrams (the kernel cuts them; one trip through the stack). Returns
 * true when every datagram was sent; drops are counted, never thrown. */
static bool send_run(udp_t* u, uint8_t* data, uint32_t len, uint32_t seg, uint32_t segs,
                     struct sockaddr_storage* ss, socklen_t slen, bool has, const uint8_t* src) {
  if (u->base.closed || !(has || u->connected)) {
    u->send_drops += segs;
    return false;
  }
  /* Room for the source cmsg plus the UDP_SEGMENT one (CMSG_SPACE(2) = 24 on 64-bit). */
  uint8_t ctrl[CTRL_SPACE + 32];
  size_t clen = src != NULL ? source_cmsg(u, src, ctrl) : 0;
  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr m;
  memset(&m, 0, sizeof m);
  m.msg_name = has ? ss : NULL;
  m.msg_namelen = has ? slen : 0;
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  bool ok = false;
  if (segs > 1 && !u->gso_off) {
    /* The source cmsg (if any) ends CMSG_ALIGNed, so the segment size follows directly. */
    struct cmsghdr* c = (struct cmsghdr*)(ctrl + clen);
    memset(c, 0, CMSG_SPACE(sizeof(uint16_t)));
    c->cmsg_level = IPPROTO_UDP; /* SOL_UDP */
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t gso = (uint16_t)seg;
    memcpy(CMSG_DATA(c), &gso, sizeof gso);
    m.msg_control = ctrl;
    m.msg_controllen = clen + CMSG_SPACE(sizeof(uint16_t));
    ssize_t rc;
    do {
      rc = sendmsg(u->base.fd, &m, MSG_DONTWAIT);
    } while (rc < 0 && errno == EINTR);
    if (rc >= 0) {
      u->gso_refusals = 0;
      u->gso_sends += 1;
      u->dgrams_out += segs;
      u->bytes_out += len;
      return true;
    }
    int err = errno;
    /* Every refusal falls back to single datagrams for this call: one by one they may still
     * go (e.g. IPv4 fragments a datagram larger than the route's MTU, GSO never does). */
    if (err == EIO || err == ENOPROTOOPT || err == EOPNOTSUPP) {
      /* No UDP_SEGMENT here (old kernel, no checksum offload on the route, UDP-Lite...). */
      u->gso_off = true;
    } else if (err == EINVAL) {
      if (++u->gso_refusals >= GSO_REFUSALS_LIMIT) u->gso_off = true;
    } else if (err != EMSGSIZE) {
      /* A full buffer or a pending error: single sends would fail the same way. */
      u->send_drops += segs;
      return false;
    }
  }
  m.msg_control = clen > 0 ? ctrl : NULL;
  m.msg_controllen = clen;
  if (segs > 1) {
    u->gso_fallbacks += 1;
    ok = send_each(u, data, len, seg, segs, &m) == segs;
  } else {
    ssize_t rc;
    do {
      rc = sendmsg(u->base.fd, &m, MSG_DONTWAIT);
    } while (rc < 0 && errno == EINTR);
    ok = rc >= 0;
    if (ok) {
      u->dgrams_out += 1;
      u->bytes_out += len;
    } else {
      u->send_drops += 1;
    }
  }
  return ok;
}


/* send(buffer, offset, length, address?, portOrRecordIndex?, sourceRecords?, sourceIndex?)
 * -> boolean */
static napi_value udp_send(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL};
  udp_t* u = udp_unwrap(env, info, &argc, argv);
  if (u == NULL) return NULL;
  uint8_t* data;
  size_t cap;
  if (!get_bytes(env, argv[0], &data, &cap, "buffer")) return NULL;
  uint32_t off = 0, len = (uint32_t)cap;
  if (argv[1] != NULL) napi_get_value_uint32(env, argv[1], &off);
  if (argv[2] != NULL && napi_get_value_uint32(env, argv[2], &len) != napi_ok) len = (uint32_t)(cap - (off < cap ? off : cap));
  if (off > cap || len > cap - off) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "offset/length outside the buffer");
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t slen = 0;
  bool has;
  if (!get_destination(env, u, argv[3], argv[4], &ss, &slen, &has)) return NULL;
  const uint8_t* src;
  if (!get_source(env, argv[5], argv[6], &src)) return NULL;
  napi_value out;
  napi_get_boolean(env, send_run(u, data + off, len, len, 1, &ss, slen, has, src), &out);
  return out;
}


/* sendSegmented(buffer, offset, length, segmentSize, address?, portOrRecordIndex?,
 * sourceRecords?, sourceIndex?) -> boolean: buffer[offset, +length) as consecutive datagrams
 * of segmentSize bytes (the last shorter) to one destination, in one sendmsg with UDP_SEGMENT
 * (the kernel cuts them; one trip through the stack). True when every datagram was sent. */
static napi_value udp_send_segmented(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
  udp_t* u = udp_unwrap(env, info, &argc, argv);
  if (u == NULL) return NULL;
  uint8_t* data;
  size_t cap;
  if (!get_bytes(env, argv[0], &data, &cap, "buffer")) return NULL;
  uint32_t off = 0, len = 0;
  double segd = 0;
  if (argv[1] == NULL || napi_get_value_uint32(env, argv[1], &off) != napi_ok ||
      argv[2] == NULL || napi_get_value_uint32(env, argv[2], &len) != napi_ok || off > cap ||
      len > cap - off) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "offset/length outside the buffer");
    return NULL;
  }
  if (argv[3] == NULL || napi_get_value_double(env, argv[3], &segd) != napi_ok || !(segd >= 1) ||
      segd > GSO_MAX_BYTES || segd != (double)(uint32_t)segd) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "segmentSize must be an integer from 1 to 65507");
    return NULL;
  }
  uint32_t seg = (uint32_t)segd;
  uint32_t segs = len <= seg ? 1 : (len + seg - 1) / seg;
  if (len > GSO_MAX_BYTES || segs > GSO_MAX_SEGMENTS) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE",
                           "length exceeds 65507 bytes or 64 segments (UDP_MAX_SEGMENTED_BYTES, "
                           "UDP_MAX_SEGMENTS)");
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t slen = 0;
  bool has;
  if (!get_destination(env, u, argv[4], argv[5], &ss, &slen, &has)) return NULL;
  const uint8_t* src;
  if (!get_source(env, argv[6], argv[7], &src)) return NULL;
  napi_value out;
  napi_get_boolean(env, send_run(u, data + off, len, seg, segs, &ss, slen, has, src), &out);
  return out;
}

/* segmentationOffload getter: false once the kernel refused UDP_SEGMENT on this socket. */
static napi_value udp_gso_getter(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  udp_t* u = udp_unwrap(env, info, &argc, NULL);
  if (u == NULL) return NULL;
  napi_value out;
  napi_get_boolean(env, !u->gso_off, &out);
  return out;
}

/* sendBatch(buffer, offsets, count, records?, sourceRecords?) -> datagrams sent. Datagram i
 * is buffer[offsets[2i], +offsets[2i+1]) to record i (or the connected peer), from source
 * record i when sourceRecords is given. */
static napi_value udp_send_batch(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5] = {NULL, NULL, NULL, NULL, NULL};
  udp_t* u = udp_unwrap(env, info, &argc, argv);
  if (u == NULL) return NULL;
  uint8_t* buf;
  size_t cap;
  if (!get_bytes(env, argv[0], &buf, &cap, "buffer")) return NULL;
  const uint32_t* off;
  uint32_t count;
  if (!get_batch_offsets(env, argv[1], argv[2], &off, &count)) return NULL;
  uint8_t* recs = NULL;
  size_t rec_len = 0;
  napi_valuetype t = napi_undefined;
  if (argv[3] != NULL) napi_typeof(env, argv[3], &t);
  if (t != napi_undefined && t != napi_null) {
    if (!get_bytes(env, argv[3], &recs, &rec_len, "address records")) return NULL;
    if (!u->connected && rec_len < (size_t)count * ADDR_RECORD) {
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "address records hold fewer than count records");
      return NULL;
    }
  }
  uint8_t* srcs = NULL;
  size_t src_len = 0;
  t = napi_undefined;
  if (argv[4] != NULL) napi_typeof(env, argv[4], &t);
  if (t != napi_undefined && t != napi_null) {
    if (!get_bytes(env, argv[4], &srcs, &src_len, "source address records")) return NULL;
    if (src_len < (size_t)count * ADDR_RECORD) {
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "source records hold fewer than count records");
      return NULL;
    }
  }
  uint8_t ctrls[SEND_CHUNK][CTRL_SPACE];
  struct mmsghdr msgs[SEND_CHUNK];
  struct iovec iovs[SEND_CHUNK];
  struct sockaddr_storage dests[SEND_CHUNK];
  uint32_t sent = 0, i = 0;
  while (i < count && !u->base.closed) {
    uint32_t n = 0;
    /* Fill a chunk with valid datagrams; malformed entries are dropped and counted. */
    for (; i < count && n < SEND_CHUNK; i++) {
      size_t start = off[2 * i], len = off[2 * i + 1];
      socklen_t slen = 0;
      bool to_record = !u->connected;
      if (start > cap || len > cap - start ||
          (to_record && (recs == NULL || !record_to_sockaddr(u->family, recs + (size_t)i * ADDR_RECORD, &dests[n], &slen)))) {
        u->send_drops += 1;
        continue;
      }
      iovs[n].iov_base = buf + start;
      iovs[n].iov_len = len;
      memset(&msgs[n], 0, sizeof msgs[n]);
      msgs[n].msg_hdr.msg_iov = &iovs[n];
      msgs[n].msg_hdr.msg_iovlen = 1;
      if (to_record) {
        msgs[n].msg_hdr.msg_name = &dests[n];
        msgs[n].msg_hdr.msg_namelen = slen;
      }
      if (srcs != NULL) {
        size_t clen = source_cmsg(u, srcs + (size_t)i * ADDR_RECORD, ctrls[n]);
        if (clen > 0) {
          msgs[n].msg_hdr.msg_control = ctrls[n];
          msgs[n].msg_hdr.msg_controllen = clen;
        }
      }
      n++;
    }
    uint32_t done = 0;
    while (done < n) {
      int rc = sendmmsg(u->base.fd, msgs + done, n - done, MSG_DONTWAIT);
      if (rc > 0) {
        for (int k = 0; k < rc; k++) u->bytes_out += iovs[done + k].iov_len;
        done += (uint32_t)rc;
        sent += (uint32_t)rc;
        continue;
      }
      if (rc < 0 && errno == EINTR) continue;
      if (rc < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
        /* The socket buffer is full: the rest of the batch would fail the same way. */
        u->send_drops += (double)(n - done) + (count - i);
        i = count;
        break;
      }
      u->send_drops += 1; /* this one datagram failed (e.g. EMSGSIZE): skip it */
      done++;
    }
  }
  u->dgrams_out += sent;
  napi_value out;
  napi_create_uint32(env, sent, &out);
  return out;
}

/* stats() -> [datagramsIn, bytesIn, datagramsOut, bytesOut, sendDrops, receiveBatches,
 *             truncated, receiveErrors, segmentedSends, segmentationFallbacks] */
static napi_value udp_stats(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  udp_t* u = udp_unwrap(env, info, &argc, NULL);
  if (u == NULL) return NULL;
  double values[] = {u->dgrams_in,  u->bytes_in,  u->dgrams_out, u->bytes_out,
                     u->send_drops, u->batches,   u->truncated,  u->recv_errors,
                     u->gso_sends,  u->gso_fallbacks};
  const uint32_t n = sizeof values / sizeof values[0];
  napi_value arr, v;
  NAPI_CALL(env, napi_create_array_with_length(env, n, &arr));
  for (uint32_t i = 0; i < n; i++) {
    napi_create_double(env, values[i], &v);
    napi_set_element(env, arr, i, v);
  }
  return arr;
}

/* encodeAddress(address, port) -> Uint8Array record (for a peer table / send). */
static napi_value udp_encode_address(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char text[64];
  uint32_t port = 0;
  if (argc < 2 || !get_string(env, argv[0], text, sizeof text, "address")) return NULL;
  napi_get_value_uint32(env, argv[1], &port);
  struct sockaddr_storage ss;
  socklen_t len;
  if (port > 65535 || !parse_sockaddr(AF_INET6, text, port, &ss, &len)) {
    napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE", "not an IP address and port 0..65535");
    return NULL;
  }
  napi_value ab, arr;
  void* data;
  NAPI_CALL(env, napi_create_arraybuffer(env, ADDR_RECORD, &data, &ab));
  fill_record(data, &ss);
  NAPI_CALL(env, napi_create_typedarray(env, napi_uint8_array, ADDR_RECORD, ab, 0, &arr));
  return arr;
}

#define UMETHOD(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_default_method, NULL}

bool udp_define_class(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      UMETHOD("bind", udp_bind),
      UMETHOD("connect", udp_connect),
      UMETHOD("localAddress", udp_local_address),
      UMETHOD("start", polled_start_js),
      UMETHOD("ref", polled_ref_js),
      UMETHOD("send", udp_send),
      UMETHOD("sendBatch", udp_send_batch),
      UMETHOD("sendSegmented", udp_send_segmented),
      UMETHOD("stats", udp_stats),
      UMETHOD("close", polled_close_js),
      {"fd", NULL, NULL, polled_fd_js, NULL, NULL, napi_default, NULL},
      {"segmentationOffload", NULL, NULL, udp_gso_getter, NULL, NULL, napi_default, NULL},
  };
  napi_value cls, enc;
  if (napi_define_class(env, "NativeUdp", NAPI_AUTO_LENGTH, udp_new, NULL,
                        sizeof props / sizeof props[0], props, &cls) != napi_ok ||
      napi_set_named_property(env, exports, "NativeUdp", cls) != napi_ok ||
      napi_create_function(env, "encodeUdpAddress", NAPI_AUTO_LENGTH, udp_encode_address, NULL, &enc) != napi_ok ||
      napi_set_named_property(env, exports, "encodeUdpAddress", enc) != napi_ok)
    return false;
  return true;
}
