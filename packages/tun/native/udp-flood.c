/*
 * Benchmark packet source and sink for `pnpm bench:tun` (not part of the addon).
 *
 *   udp-flood send DST_IPV4 PORT IP_PACKET_BYTES SECONDS FLOWS THREADS
 *     Floods UDP datagrams (IP packet of IP_PACKET_BYTES) to DST with sendmmsg, FLOWS source
 *     ports per thread, until SECONDS elapse. Prints {"sent":N,"seconds":S}.
 *   udp-flood sink BIND_IPV4 PORT SECONDS
 *     Receives with recvmmsg until SECONDS elapse. Prints {"received":N,"seconds":S}.
 *
 * Node's dgram (one send per call through libuv) is far too slow to saturate a TUN reader,
 * hence this small C program, compiled by the benchmark itself.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_FLOWS 64

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct sender {
  struct sockaddr_in dst;
  size_t payload;
  double seconds;
  int flows;
  int index;
  uint64_t sent;
};

static void* send_loop(void* arg) {
  struct sender* s = arg;
  int socks[MAX_FLOWS];
  for (int f = 0; f < s->flows; f++) {
    socks[f] = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 4 << 20;
    setsockopt(socks[f], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    struct sockaddr_in src = {.sin_family = AF_INET,
                              .sin_port = htons(30000 + s->index * MAX_FLOWS + f)};
    if (bind(socks[f], (struct sockaddr*)&src, sizeof src) < 0 ||
        connect(socks[f], (struct sockaddr*)&s->dst, sizeof s->dst) < 0) {
      perror("socket setup");
      exit(1);
    }
  }
  char* payload = calloc(1, s->payload);
  struct iovec iov = {.iov_base = payload, .iov_len = s->payload};
  struct mmsghdr msgs[BATCH];
  memset(msgs, 0, sizeof msgs);
  for (int i = 0; i < BATCH; i++) {
    msgs[i].msg_hdr.msg_iov = &iov;
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  double end = now() + s->seconds;
  uint64_t rounds = 0;
  while ((rounds & 63) != 0 || now() < end) {
    int n = sendmmsg(socks[rounds % s->flows], msgs, BATCH, 0);
    if (n > 0) s->sent += (uint64_t)n;
    rounds++;
  }
  for (int f = 0; f < s->flows; f++) close(socks[f]);
  free(payload);
  return NULL;
}

static int run_send(int argc, char** argv) {
  if (argc < 8) return 2;
  struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
  inet_pton(AF_INET, argv[2], &dst.sin_addr);
  int ip_bytes = atoi(argv[4]);
  double seconds = atof(argv[5]);
  int flows = atoi(argv[6]), threads = atoi(argv[7]);
  if (flows < 1 || flows > MAX_FLOWS || threads < 1 || threads > 16 || ip_bytes < 28) return 2;
  struct sender senders[16];
  pthread_t tids[16];
  double start = now();
  for (int t = 0; t < threads; t++) {
    senders[t] = (struct sender){.dst = dst, .payload = (size_t)ip_bytes - 28,
                                 .seconds = seconds, .flows = flows, .index = t};
    pthread_create(&tids[t], NULL, send_loop, &senders[t]);
  }
  uint64_t total = 0;
  for (int t = 0; t < threads; t++) {
    pthread_join(tids[t], NULL);
    total += senders[t].sent;
  }
  printf("{\"sent\":%llu,\"seconds\":%.3f}\n", (unsigned long long)total, now() - start);
  return 0;
}

static int run_sink(int argc, char** argv) {
  if (argc < 5) return 2;
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  int big = 8 << 20;
  setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
  inet_pton(AF_INET, argv[2], &addr.sin_addr);
  if (bind(s, (struct sockaddr*)&addr, sizeof addr) < 0) {
    perror("bind");
    return 1;
  }
  struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  static char bufs[BATCH][2048];
  struct iovec iov[BATCH];
  struct mmsghdr msgs[BATCH];
  memset(msgs, 0, sizeof msgs);
  for (int i = 0; i < BATCH; i++) {
    iov[i].iov_base = bufs[i];
    iov[i].iov_len = sizeof bufs[i];
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  printf("{\"ready\":true}\n");
  fflush(stdout);
  double start = now(), end = start + atof(argv[4]);
  uint64_t received = 0;
  while (now() < end) {
    int n = recvmmsg(s, msgs, BATCH, 0, NULL);
    if (n > 0) received += (uint64_t)n;
  }
  printf("{\"received\":%llu,\"seconds\":%.3f}\n", (unsigned long long)received, now() - start);
  return 0;
}

int main(int argc, char** argv) {
  int rc = 2;
  if (argc > 1 && strcmp(argv[1], "send") == 0) rc = run_send(argc, argv);
  if (argc > 1 && strcmp(argv[1], "sink") == 0) rc = run_sink(argc, argv);
  if (rc == 2)
    fprintf(stderr, "usage: udp-flood send DST PORT BYTES SECONDS FLOWS THREADS | sink ADDR PORT SECONDS\n");
  return rc;
}
