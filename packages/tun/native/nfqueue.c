/*
 * NativeNfQueue: one netfilter queue (NFQUEUE) bound over a raw nfnetlink socket, so a rule
 * can hand selected packets (e.g. the new SYNs to a shared port) to JS, which answers each with
 * a verdict and optionally a packet mark. No library: the messages are built and parsed here.
 *
 * Receive: each wake-up drains up to `batch` queued packets with one recvmmsg into a buffer
 * shared with JS (one datagram slot per packet; the packet bytes are left where the kernel put
 * them) and fills a shared metadata array; JS is called once per batch.
 *
 * Verdicts: during the handler JS writes a decision per packet into a shared array (accept as
 * is, accept with a mark, drop, or defer). When the handler returns, every decided packet is
 * answered in ONE sendmsg: a single NFQNL_MSG_VERDICT_BATCH when the whole batch got the same
 * decision and nothing older is still held (the kernel then settles every packet up to the
 * last id), else one NFQNL_MSG_VERDICT per packet, concatenated. Deferred packets are kept in a
 * list and answered later one by one (verdict()); only those ids are accepted there.
 *
 * Failure policy: the queue is configured fail-open by default (a full queue or a full socket
 * buffer lets packets through instead of dropping them), undecided packets are accepted
 * unchanged, and close() (or thread/process exit) accepts everything still held before the
 * socket goes away (the kernel would otherwise drop what is left on unbind).
 */
#define _GNU_SOURCE /* recvmmsg */
#include "nfqueue.h"

#include "polled.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/netfilter.h> /* NF_ACCEPT, NF_DROP */
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#ifndef NETLINK_NO_ENOBUFS
#define NETLINK_NO_ENOBUFS 5
#endif

/* u32 words of per-packet metadata shared with JS (see nfqueue.ts for the layout). */
#define META_WORDS 8
/* u32 words of per-packet decision shared with JS: [code, mark]. */
#define DECISION_WORDS 2
enum { D_ACCEPT = 0, D_ACCEPT_MARK = 1, D_DROP = 2, D_DEFER = 3 };

/* Room in a slot for everything the kernel puts around the copied bytes (netlink and nfnetlink
 * headers, packet header, mark, timestamp, interfaces, hardware address, lengths, skb info,
 * VLAN, L2 header...): generous, so a datagram is never cut. */
#define SLOT_OVERHEAD 1024
/* One verdict message: nlmsghdr + nfgenmsg + NFQA_VERDICT_HDR + NFQA_MARK. */
#define VERDICT_MSG_BYTES (NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg)) + NLA_HDRLEN + \
                           NLA_ALIGN(sizeof(struct nfqnl_msg_verdict_hdr)) + NLA_HDRLEN + 4)
#define SETUP_TIMEOUT_MS 2000
#define MAX_BATCH 1024

typedef struct {
  polled_t base; /* first: fd, poll handle, handler, lifecycle (polled.h) */
  uint16_t queue_num;
  uint32_t batch, slot;

  uint8_t* buf;        /* batch * slot: receive datagrams (shared as readBuffer) */
  uint32_t* meta;      /* batch * META_WORDS (shared as readMeta) */
  uint32_t* decisions; /* batch * DECISION_WORDS (shared as decisions) */
  struct mmsghdr* msgs;
  struct iovec* iovs;
  uint8_t* out; /* batch * VERDICT_MSG_BYTES: verdict messages of one sendmsg */

  uint32_t* deferred; /* ids held for a later verdict() */
  uint32_t n_deferred, cap_deferred;
  bool in_handler;    /* between delivery and the answer of the current batch */
  bool no_batch;      /* a verdict send failed: its packets may still be held, so a
                       * VERDICT_BATCH ("every id up to N") could answer them by accident */
  uint32_t current;   /* packets in the current batch */
  uint32_t seq;

  double packets, batches, accepted, dropped, marked, verdict_msgs, batch_verdicts, sends,
      send_errors, kernel_errors, truncated, malformed, recv_errors;
  int last_kernel_error; /* errno of the latest error the kernel reported for a verdict */
} nfq_t;

/* ------------------------------------------------------------------------------------------ */
/* Message building                                                                           */
/* ------------------------------------------------------------------------------------------ */

static uint8_t* put_attr(uint8_t* p, uint16_t type, const void* data, uint16_t len) {
  struct nlattr* a = (struct nlattr*)p;
  a->nla_type = type;
  a->nla_len = NLA_HDRLEN + len;
  memcpy(p + NLA_HDRLEN, data, len);
  size_t total = NLA_ALIGN(NLA_HDRLEN + len);
  memset(p + NLA_HDRLEN + len, 0, total - NLA_HDRLEN - len);
  return p + total;
}

/* Starts a queue-subsystem message of `type` at p; returns where attributes go. */
static uint8_t* put_header(nfq_t* q, uint8_t* p, uint16_t type, uint16_t flags, uint8_t family) {
  struct nlmsghdr* h = (struct nlmsghdr*)p;
  h->nlmsg_len = 0;
  h->nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | type;
  h->nlmsg_flags = NLM_F_REQUEST | flags;
  h->nlmsg_seq = ++q->seq;
  h->nlmsg_pid = 0;
  struct nfgenmsg* g = (struct nfgenmsg*)(p + NLMSG_HDRLEN);
  g->nfgen_family = family;
  g->version = NFNETLINK_V0;
  g->res_id = htons(q->queue_num);
  return p + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof *g);
}

static void finish(uint8_t* start, uint8_t* end) {
  ((struct nlmsghdr*)start)->nlmsg_len = (uint32_t)(end - start);
}

/* Appends one verdict message (VERDICT, or VERDICT_BATCH meaning "every id up to this one");
 * returns the end. `mark` is sent only for D_ACCEPT_MARK. */
static uint8_t* put_verdict(nfq_t* q, uint8_t* p, uint16_t type, uint32_t id, int code,
                            uint32_t mark) {
  uint8_t* a = put_header(q, p, type, 0, AF_UNSPEC);
  struct nfqnl_msg_verdict_hdr vh;
  vh.verdict = htonl(code == D_DROP ? NF_DROP : NF_ACCEPT);
  vh.id = htonl(id);
  a = put_attr(a, NFQA_VERDICT_HDR, &vh, sizeof vh);
  if (code == D_ACCEPT_MARK) {
    uint32_t m = htonl(mark);
    a = put_attr(a, NFQA_MARK, &m, 4);
  }
  finish(p, a);
  return a;
}

/* Sends `len` bytes of messages in one sendmsg; counts a failure (the packets stay queued in
 * the kernel until close(), which accepts them). */
static bool send_out(nfq_t* q, const uint8_t* data, size_t len) {
  if (len == 0) return true;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  ssize_t rc;
  do {
    rc = sendto(q->base.fd, data, len, 0, (struct sockaddr*)&kernel, sizeof kernel);
  } while (rc < 0 && errno == EINTR);
  q->sends += 1;
  if (rc < 0) {
    int err = errno;
    q->send_errors += 1;
    q->no_batch = true;
    errno = err;
    return false;
  }
  return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Verdicts                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static void count_verdict(nfq_t* q, int code) {
  if (code == D_DROP)
    q->dropped += 1;
  else
    q->accepted += 1;
  if (code == D_ACCEPT_MARK) q->marked += 1;
}

/* Answers the current batch from the shared decisions (`defer_ok`: keep deferred ones held;
 * otherwise, as on close, they are accepted unchanged). One sendmsg. */
static void answer_batch(nfq_t* q, uint32_t count, bool defer_ok) {
  if (count == 0) return;
  bool uniform = q->n_deferred == 0 && !q->no_batch;
  int first_code = -1;
  uint32_t first_mark = 0;
  for (uint32_t i = 0; i < count; i++) {
    uint32_t code = q->decisions[DECISION_WORDS * i];
    uint32_t mark = q->decisions[DECISION_WORDS * i + 1];
    if (code > D_DEFER) code = D_ACCEPT; /* not a decision the wrapper writes: fail open */
    if (code == D_DEFER) {
      if (defer_ok && q->n_deferred < q->cap_deferred) {
        q->deferred[q->n_deferred++] = q->meta[META_WORDS * i + 2];
        uniform = false;
        continue;
      }
      code = D_ACCEPT;
    }
    q->decisions[DECISION_WORDS * i] = code;
    if (code != D_ACCEPT_MARK) mark = 0;
    if (first_code < 0) {
      first_code = (int)code;
      first_mark = mark;
    } else if ((int)code != first_code || mark != first_mark) {
      uniform = false;
    }
  }
  if (first_code < 0) return; /* everything deferred */
  uint8_t* p = q->out;
  if (uniform) {
    /* Nothing older is held (no deferral, and earlier batches were all answered), so "every
     * queued id up to the last one" is exactly this batch. */
    p = put_verdict(q, p, NFQNL_MSG_VERDICT_BATCH, q->meta[META_WORDS * (count - 1) + 2],
                    first_code, first_mark);
    q->batch_verdicts += 1;
    for (uint32_t i = 0; i < count; i++) count_verdict(q, first_code);
  } else {
    for (uint32_t i = 0; i < count; i++) {
      uint32_t code = q->decisions[DECISION_WORDS * i];
      if (code == D_DEFER) continue;
      p = put_verdict(q, p, NFQNL_MSG_VERDICT, q->meta[META_WORDS * i + 2], (int)code,
                      q->decisions[DECISION_WORDS * i + 1]);
      count_verdict(q, (int)code);
    }
  }
  q->verdict_msgs += 1;
  send_out(q, q->out, (size_t)(p - q->out));
}

/* Accepts every deferred packet unchanged (close). */
static void release_deferred(nfq_t* q) {
  uint32_t i = 0;
  while (i < q->n_deferred) {
    uint8_t* p = q->out;
    for (uint32_t k = 0; k < q->batch && i < q->n_deferred; k++, i++) {
      p = put_verdict(q, p, NFQNL_MSG_VERDICT, q->deferred[i], D_ACCEPT, 0);
      count_verdict(q, D_ACCEPT);
    }
    send_out(q, q->out, (size_t)(p - q->out));
  }
  q->n_deferred = 0;
}

static void before_close(polled_t* p) {
  nfq_t* q = (nfq_t*)p;
  if (p->fd < 0) return;
  if (q->in_handler) {
    answer_batch(q, q->current, false);
    q->in_handler = false;
    q->current = 0;
  }
  release_deferred(q);
}

/* ------------------------------------------------------------------------------------------ */
/* Receive                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* Reads a be32 attribute payload. */
static uint32_t attr_u32(const struct nlattr* a) {
  uint32_t v;
  memcpy(&v, (const uint8_t*)a + NLA_HDRLEN, 4);
  return ntohl(v);
}

/* Parses one packet message at `h` (inside the receive buffer) into metadata row `m`; the
 * packet's start is an offset into the whole buffer, as JS sees it. False when the message
 * carries no packet id (nothing to answer). */
static bool parse_packet(nfq_t* q, const struct nlmsghdr* h, uint32_t* m) {
  const uint8_t* end = (const uint8_t*)h + h->nlmsg_len;
  const uint8_t* a = (const uint8_t*)h + NLMSG_HDRLEN;
  if (a + NLMSG_ALIGN(sizeof(struct nfgenmsg)) > end) return false;
  const struct nfgenmsg* g = (const struct nfgenmsg*)a;
  a += NLMSG_ALIGN(sizeof *g);
  bool has_id = false;
  uint32_t cap_len = 0;
  memset(m, 0, META_WORDS * sizeof *m);
  while (a + NLA_HDRLEN <= end) {
    const struct nlattr* at = (const struct nlattr*)a;
    if (at->nla_len < NLA_HDRLEN || a + at->nla_len > end) break;
    uint16_t len = at->nla_len - NLA_HDRLEN;
    switch (at->nla_type & NLA_TYPE_MASK) {
      case NFQA_PACKET_HDR:
        if (len >= sizeof(struct nfqnl_msg_packet_hdr)) {
          struct nfqnl_msg_packet_hdr ph;
          memcpy(&ph, a + NLA_HDRLEN, sizeof ph);
          m[2] = ntohl(ph.packet_id);
          m[4] |= (uint32_t)ph.hook << 8;
          has_id = true;
        }
        break;
      case NFQA_MARK:
        if (len >= 4) m[3] = attr_u32(at);
        break;
      case NFQA_IFINDEX_INDEV:
        if (len >= 4) m[5] = attr_u32(at);
        break;
      case NFQA_IFINDEX_OUTDEV:
        if (len >= 4) m[7] = attr_u32(at);
        break;
      case NFQA_CAP_LEN:
        if (len >= 4) cap_len = attr_u32(at);
        break;
      case NFQA_PAYLOAD:
        m[0] = (uint32_t)(a + NLA_HDRLEN - q->buf);
        m[1] = len;
        break;
      default:
        break;
    }
    a += NLA_ALIGN(at->nla_len);
  }
  if (!has_id) return false;
  /* The family of the hook (inet tables hook both); the IP version nibble otherwise. */
  uint32_t fam = g->nfgen_family == AF_INET ? 4 : g->nfgen_family == AF_INET6 ? 6 : 0;
  if (fam == 0 && m[1] > 0) fam = q->buf[m[0]] >> 4;
  m[4] |= fam;
  m[6] = cap_len > 0 ? cap_len : m[1]; /* NFQA_CAP_LEN: the full length when cut to the range */
  return true;
}

/* Handles a datagram that is not a packet to deliver: kernel errors for earlier verdicts. */
static void note_control(nfq_t* q, const struct nlmsghdr* h) {
  if (h->nlmsg_type == NLMSG_ERROR && h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct nlmsgerr))) {
    const struct nlmsgerr* e = NLMSG_DATA(h);
    if (e->error != 0) {
      q->kernel_errors += 1;
      q->last_kernel_error = -e->error;
    }
  }
}

static void on_nfq_readable(uv_poll_t* h, int status, int events) {
  (void)events;
  nfq_t* q = h->data;
  for (uint32_t i = 0; i < q->batch; i++) {
    struct msghdr* mh = &q->msgs[i].msg_hdr;
    memset(mh, 0, sizeof *mh);
    mh->msg_iov = &q->iovs[i];
    mh->msg_iovlen = 1;
  }
  uint32_t n = polled_receive(&q->base, status, q->msgs, q->batch, &q->recv_errors);
  uint32_t count = 0;
  /* Packets that cannot be delivered (cut datagram, batch full) are answered at once,
   * unchanged, before the batch (so a later VERDICT_BATCH never has to cover them). */
  uint8_t* extra = q->out;
  uint32_t n_extra = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint8_t* base = q->iovs[i].iov_base;
    size_t got = q->msgs[i].msg_len < q->slot ? q->msgs[i].msg_len : q->slot;
    bool cut = (q->msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
    if (cut && got >= NLMSG_HDRLEN && ((struct nlmsghdr*)base)->nlmsg_len > got) {
      /* Parse what arrived: the packet header (with the id) comes first. */
      ((struct nlmsghdr*)base)->nlmsg_len = (uint32_t)got;
    }
    for (struct nlmsghdr* nh = (struct nlmsghdr*)base; NLMSG_OK(nh, got);
         nh = NLMSG_NEXT(nh, got)) {
      if (nh->nlmsg_type != ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET)) {
        note_control(q, nh);
        continue;
      }
      uint32_t* m = q->meta + (size_t)META_WORDS * (count < q->batch ? count : q->batch - 1);
      uint32_t row[META_WORDS];
      if (cut || count >= q->batch) m = row;
      if (!parse_packet(q, nh, m)) {
        q->malformed += 1;
        continue;
      }
      if (m == row) {
        q->truncated += 1;
        if (n_extra == q->batch) {
          send_out(q, q->out, (size_t)(extra - q->out));
          extra = q->out;
          n_extra = 0;
        }
        extra = put_verdict(q, extra, NFQNL_MSG_VERDICT, m[2], D_ACCEPT, 0);
        n_extra++;
        count_verdict(q, D_ACCEPT);
        continue;
      }
      q->decisions[DECISION_WORDS * count] = D_ACCEPT;
      q->decisions[DECISION_WORDS * count + 1] = 0;
      count++;
    }
  }
  if (extra != q->out) send_out(q, q->out, (size_t)(extra - q->out));
  if (count == 0) return;
  q->packets += count;
  q->batches += 1;
  q->in_handler = true;
  q->current = count;
  polled_deliver(&q->base, count);
  if (q->base.closed || !q->in_handler) return; /* close() in the handler answered already */
  q->in_handler = false;
  q->current = 0;
  answer_batch(q, count, true);
}

/* ------------------------------------------------------------------------------------------ */
/* Setup                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* Waits for the kernel's answer to message `seq`; packets that arrive meanwhile (the queue is
 * live as soon as it is bound) are accepted unchanged at once. 0 or a positive errno. */
static int await_ack(nfq_t* q, uint32_t seq) {
  uint8_t* buf = q->buf; /* slot 0 is free during setup */
  for (int rounds = 0; rounds < 10000; rounds++) {
    ssize_t n = recv(q->base.fd, buf, q->slot, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? ETIMEDOUT : errno;
    }
    size_t left = (size_t)n;
    for (struct nlmsghdr* h = (struct nlmsghdr*)buf; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_ERROR && h->nlmsg_seq == seq &&
          h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct nlmsgerr))) {
        return -((const struct nlmsgerr*)NLMSG_DATA(h))->error;
      }
      if (h->nlmsg_type == ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET)) {
        uint32_t m[META_WORDS];
        if (parse_packet(q, h, m)) {
          uint8_t msg[VERDICT_MSG_BYTES];
          uint8_t* end = put_verdict(q, msg, NFQNL_MSG_VERDICT, m[2], D_ACCEPT, 0);
          send_out(q, msg, (size_t)(end - msg));
        }
      }
    }
  }
  return ETIMEDOUT;
}

/* Sends one config message and waits for its answer: 0 or a positive errno. */
static int configure(nfq_t* q, uint8_t cmd, uint8_t family, uint32_t copy_range, uint32_t maxlen,
                     uint32_t flags, uint32_t flag_mask) {
  uint8_t msg[256];
  uint8_t* a = put_header(q, msg, NFQNL_MSG_CONFIG, NLM_F_ACK, family);
  uint32_t seq = q->seq;
  if (cmd != NFQNL_CFG_CMD_NONE) {
    struct nfqnl_msg_config_cmd c = {.command = cmd, ._pad = 0, .pf = htons(family)};
    a = put_attr(a, NFQA_CFG_CMD, &c, sizeof c);
  }
  if (copy_range > 0) {
    struct nfqnl_msg_config_params prm = {.copy_range = htonl(copy_range),
                                          .copy_mode = NFQNL_COPY_PACKET};
    a = put_attr(a, NFQA_CFG_PARAMS, &prm, sizeof prm);
  }
  if (maxlen > 0) {
    uint32_t v = htonl(maxlen);
    a = put_attr(a, NFQA_CFG_QUEUE_MAXLEN, &v, 4);
  }
  if (flag_mask != 0) {
    uint32_t m = htonl(flag_mask), f = htonl(flags);
    a = put_attr(a, NFQA_CFG_MASK, &m, 4);
    a = put_attr(a, NFQA_CFG_FLAGS, &f, 4);
  }
  finish(msg, a);
  if (!send_out(q, msg, (size_t)(a - msg))) return errno;
  return await_ack(q, seq);
}

/* ------------------------------------------------------------------------------------------ */
/* JS class                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static size_t nfq_counters(const polled_t* p, polled_counter_t* out);

static void nfq_free(polled_t* p) {
  nfq_t* q = (nfq_t*)p;
  free(q->msgs);
  free(q->iovs);
  free(q->out);
  free(q->deferred);
  free(q);
}

static const char NFQ_RESOURCE[] = "NfQueue";

/* The queue behind `this`; NULL (TypeError thrown) for anything else, including the other
 * polled classes, whose objects have another layout. */
static nfq_t* nfq_unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv) {
  polled_t* p = polled_unwrap(env, info, argc, argv);
  if (p != NULL && p->resource != NFQ_RESOURCE) {
    napi_throw_type_error(env, "ERR_INVALID_THIS", "not a native netfilter queue");
    return NULL;
  }
  return (nfq_t*)p;
}

/* Throws `syscall failed for queue N: strerror` with the errno code. */
static void throw_queue_errno(napi_env env, int err, const char* syscall, uint32_t queue_num) {
  char what[48];
  snprintf(what, sizeof what, "netfilter queue %u", queue_num);
  throw_errno(env, err, syscall, what);
}

/* new NativeNfQueue(queueNum, copyRange, maxLength, batchSize, failOpen, recvBufferBytes):
 * opens the socket, binds the queue (both families), sets copy mode, length and flags. */
static napi_value nfq_new(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
  napi_value self;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  uint32_t num = 0, range = 0, maxlen = 0, batch = 0;
  int32_t rcvbuf = 0;
  bool fail_open = true;
  if (argc < 6 || napi_get_value_uint32(env, argv[0], &num) != napi_ok ||
      napi_get_value_uint32(env, argv[1], &range) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &maxlen) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &batch) != napi_ok ||
      napi_get_value_bool(env, argv[4], &fail_open) != napi_ok ||
      napi_get_value_int32(env, argv[5], &rcvbuf) != napi_ok || num > 65535 || range < 1 ||
      range > 65531 || maxlen < 1 || batch < 1 || batch > MAX_BATCH || rcvbuf < 0) {
    napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE",
                           "NativeNfQueue(queue 0..65535, copyRange 1..65531, maxLength >= 1, "
                           "batch 1..1024, failOpen, recvBufferBytes >= 0)");
    return NULL;
  }
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) {
    throw_queue_errno(env, errno, "socket(AF_NETLINK, NETLINK_NETFILTER)", num);
    return NULL;
  }
  struct sockaddr_nl local = {.nl_family = AF_NETLINK};
  if (bind(fd, (struct sockaddr*)&local, sizeof local) < 0) {
    int err = errno;
    close(fd);
    throw_queue_errno(env, err, "bind(AF_NETLINK)", num);
    return NULL;
  }
  int one = 1;
  /* An overrun socket buffer must not turn into ENOBUFS on every read: with fail-open the
   * kernel accepts what it could not queue, so there is nothing to resynchronise. */
  setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
  if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0 &&
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) < 0) {
    int err = errno;
    close(fd);
    throw_queue_errno(env, err, "setsockopt(SO_RCVBUF)", num);
    return NULL;
  }
  struct timeval tv = {.tv_sec = SETUP_TIMEOUT_MS / 1000, .tv_usec = (SETUP_TIMEOUT_MS % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  nfq_t* q = calloc(1, sizeof *q);
  uint32_t slot = NLMSG_ALIGN(range + SLOT_OVERHEAD);
  if (q != NULL) {
    q->msgs = calloc(batch, sizeof *q->msgs);
    q->iovs = calloc(batch, sizeof *q->iovs);
    q->out = calloc(batch, VERDICT_MSG_BYTES);
    q->cap_deferred = maxlen < (1u << 20) ? maxlen : (1u << 20);
    q->deferred = calloc(q->cap_deferred, sizeof *q->deferred);
  }
  if (q == NULL || q->msgs == NULL || q->iovs == NULL || q->out == NULL || q->deferred == NULL) {
    close(fd);
    if (q != NULL) nfq_free(&q->base);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  polled_init(&q->base, env, fd, on_nfq_readable, nfq_free, "the netfilter queue", NFQ_RESOURCE,
              "ERR_NFQUEUE_CLOSED");
  q->base.before_close = before_close;
  q->base.counters = nfq_counters;
  q->queue_num = (uint16_t)num;
  q->batch = batch;
  q->slot = slot;
  void *buf, *meta, *dec;
  if (!polled_share_buffer(&q->base, self, "readBuffer", (size_t)slot * batch, &buf) ||
      !polled_share_buffer(&q->base, self, "readMeta", (size_t)batch * META_WORDS * 4, &meta) ||
      !polled_share_buffer(&q->base, self, "decisions", (size_t)batch * DECISION_WORDS * 4,
                           &dec) ||
      !polled_wrap(&q->base, self)) {
    close(fd);
    q->base.fd = -1;
    polled_discard(&q->base);
    napi_throw_error(env, "ERR_NFQUEUE_NATIVE", "could not set up the queue buffers");
    return NULL;
  }
  q->buf = buf;
  q->meta = meta;
  q->decisions = dec;
  for (uint32_t i = 0; i < batch; i++) {
    q->iovs[i].iov_base = q->buf + (size_t)i * slot;
    q->iovs[i].iov_len = slot;
  }

  /* Kernels before 3.8 route a family to queues only after PF_BIND; later ones ignore it
   * (answer 0), so it is sent for both families and any answer is fine. */
  configure(q, NFQNL_CFG_CMD_PF_BIND, AF_INET, 0, 0, 0, 0);
  configure(q, NFQNL_CFG_CMD_PF_BIND, AF_INET6, 0, 0, 0, 0);
  int err = configure(q, NFQNL_CFG_CMD_BIND, AF_UNSPEC, 0, 0, 0, 0);
  const char* step = "bind";
  if (err == 0) {
    step = "configure (copy range, queue length)";
    err = configure(q, NFQNL_CFG_CMD_NONE, AF_UNSPEC, range, maxlen, 0, 0);
  }
  if (err == 0 && fail_open) {
    step = "configure (fail-open)";
    err = configure(q, NFQNL_CFG_CMD_NONE, AF_UNSPEC, 0, 0, NFQA_CFG_F_FAIL_OPEN,
                    NFQA_CFG_F_FAIL_OPEN);
  }
  if (err == 0) {
    struct timeval none = {0, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
      step = "fcntl(O_NONBLOCK)";
      err = errno;
    }
  }
  if (err != 0) {
    polled_close(&q->base); /* closing the socket unbinds the queue */
    char what[96];
    snprintf(what, sizeof what, "netfilter queue %u (%s)", num, step);
    throw_errno(env, err, "nfnetlink", what);
    return NULL;
  }
  return self;
}

/* verdict(id, code, mark): answers a deferred packet. Throws for an id that is not held. */
static napi_value nfq_verdict(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3] = {NULL, NULL, NULL};
  nfq_t* q = nfq_unwrap(env, info, &argc, argv);
  if (q == NULL || !polled_require_open(env, &q->base)) return NULL;
  double idd = -1, coded = -1, markd = 0;
  if (argc < 3 || napi_get_value_double(env, argv[0], &idd) != napi_ok ||
      napi_get_value_double(env, argv[1], &coded) != napi_ok ||
      napi_get_value_double(env, argv[2], &markd) != napi_ok || !(idd >= 0) ||
      idd > 4294967295.0 || idd != (double)(uint32_t)idd ||
      (coded != D_ACCEPT && coded != D_ACCEPT_MARK && coded != D_DROP) || !(markd >= 0) ||
      markd > 4294967295.0 || markd != (double)(uint32_t)markd) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE",
                           "verdict(id: u32, code: 0 accept | 1 accept+mark | 2 drop, mark: u32)");
    return NULL;
  }
  uint32_t id = (uint32_t)idd;
  if (q->in_handler) {
    /* A packet of the batch being handled: the decision joins the batch's answer. */
    for (uint32_t i = 0; i < q->current; i++) {
      if (q->meta[META_WORDS * i + 2] == id) {
        q->decisions[DECISION_WORDS * i] = (uint32_t)coded;
        q->decisions[DECISION_WORDS * i + 1] = (uint32_t)markd;
        napi_value out;
        napi_get_boolean(env, true, &out);
        return out;
      }
    }
  }
  uint32_t k = 0;
  while (k < q->n_deferred && q->deferred[k] != id) k++;
  if (k == q->n_deferred) {
    char msg[128];
    snprintf(msg, sizeof msg,
             "packet %u is not held by this queue (only deferred packets take verdict(), once)",
             id);
    napi_throw_error(env, "ERR_NFQUEUE_UNKNOWN_PACKET", msg);
    return NULL;
  }
  q->deferred[k] = q->deferred[--q->n_deferred];
  uint8_t msg[VERDICT_MSG_BYTES];
  uint8_t* end = put_verdict(q, msg, NFQNL_MSG_VERDICT, id, (int)coded, (uint32_t)markd);
  count_verdict(q, (int)coded);
  q->verdict_msgs += 1;
  napi_value out;
  napi_get_boolean(env, send_out(q, msg, (size_t)(end - msg)), &out);
  return out;
}

/* The counters of stats() (NfQueueStats). */
static size_t nfq_counters(const polled_t* p, polled_counter_t* out) {
  const nfq_t* q = (const nfq_t*)p;
  const polled_counter_t all[] = {
      {"packets", q->packets},
      {"batches", q->batches},
      {"accepted", q->accepted},
      {"dropped", q->dropped},
      {"marked", q->marked},
      {"held", q->n_deferred},
      {"verdictSends", q->verdict_msgs},
      {"batchVerdicts", q->batch_verdicts},
      {"sendErrors", q->send_errors},
      {"kernelErrors", q->kernel_errors},
      {"truncated", q->truncated},
      {"malformed", q->malformed},
      {"receiveErrors", q->recv_errors},
      {"lastKernelError", q->last_kernel_error},
  };
  memcpy(out, all, sizeof all);
  return sizeof all / sizeof all[0];
}

bool nfqueue_define_class(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      METHOD("verdict", nfq_verdict),
  };
  return polled_define_class(env, exports, "NativeNfQueue", nfq_new, props,
                             sizeof props / sizeof props[0]);
}
