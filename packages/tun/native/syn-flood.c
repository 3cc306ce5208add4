/*
 * SYN source for `pnpm bench:nfqueue` (not part of the addon): writes TCP SYNs into an
 * existing TUN device, so they enter the device's namespace like SYNs from many remote hosts
 * (every SYN has its own source address and port, hence its own new conntrack entry).
 *
 *   syn-flood IFNAME FAMILY(4|6) DST DPORT SECONDS RATE KEYED_PERCENT [COUNT]
 *     RATE: SYNs per second (0 = as fast as writes go); COUNT: stop after that many SYNs. KEYED_PERCENT of the SYNs carry the
 *     marker option (kind 253, "FTKY"), the rest only MSS. Sources: 10.100.0.0/16 or
 *     fd00:100::/64, ports 1024..61023. Prints {"sent":N,"seconds":S,"writeErrors":E}.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint32_t sum16(const uint8_t* p, size_t n, uint32_t acc) {
  for (size_t i = 0; i + 1 < n; i += 2) acc += (uint32_t)(p[i] << 8 | p[i + 1]);
  if (n & 1) acc += (uint32_t)p[n - 1] << 8;
  return acc;
}

static uint16_t fold(uint32_t s) {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint16_t)~s;
}

int main(int argc, char** argv) {
  if (argc != 8 && argc != 9) {
    fprintf(stderr, "usage: syn-flood IFNAME FAMILY DST DPORT SECONDS RATE KEYED_PERCENT [COUNT]\n");
    return 2;
  }
  int family = atoi(argv[2]);
  int dport = atoi(argv[4]);
  double seconds = atof(argv[5]);
  double rate = atof(argv[6]);
  int keyed_pct = atoi(argv[7]);
  unsigned long long count = argc == 9 ? strtoull(argv[8], NULL, 10) : 0;
  uint8_t dst[16];
  if (inet_pton(family == 6 ? AF_INET6 : AF_INET, argv[3], dst) != 1) {
    fprintf(stderr, "bad destination %s\n", argv[3]);
    return 2;
  }
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
  if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) < 0) {
    perror("attach to the TUN device");
    return 1;
  }
  const uint8_t marker[8] = {253, 6, 'F', 'T', 'K', 'Y', 0, 0};
  uint8_t pkt[40 + 32];
  size_t ip_len = family == 6 ? 40 : 20;
  double start = now(), deadline = start + seconds;
  uint64_t sent = 0, errors = 0;
  for (uint64_t c = 0; count == 0 || c < count; c++) {
    if ((c & 63) == 0) {
      double t = now();
      if (t >= deadline) break;
      if (rate > 0) {
        double due = start + (double)c / rate; /* paced: never ahead of schedule */
        if (due > t) {
          struct timespec d = {0, (long)((due - t) * 1e9)};
          nanosleep(&d, NULL);
        }
      }
    }
    bool keyed = (int)(c % 100) < keyed_pct;
    size_t tcp_len = 24 + (keyed ? 8 : 0);
    memset(pkt, 0, sizeof pkt);
    uint8_t* t = pkt + ip_len;
    uint16_t sport = (uint16_t)(1024 + c % 60000);
    uint32_t host = (uint32_t)(c / 60000);
    t[0] = sport >> 8;
    t[1] = sport & 0xff;
    t[2] = (uint8_t)(dport >> 8);
    t[3] = (uint8_t)dport;
    uint32_t isn = (uint32_t)(c * 2654435761u);
    t[4] = isn >> 24;
    t[5] = isn >> 16;
    t[6] = isn >> 8;
    t[7] = isn;
    t[12] = (uint8_t)((tcp_len / 4) << 4);
    t[13] = 0x02;
    t[14] = 0xff;
    t[15] = 0xff;
    t[20] = 2;
    t[21] = 4;
    t[22] = 0x05;
    t[23] = 0xb4;
    if (keyed) memcpy(t + 24, marker, sizeof marker);
    uint8_t src[16];
    memset(src, 0, sizeof src);
    if (family == 6) {
      src[0] = 0xfd;
      src[2] = 0x01; /* fd00:100:: */
      src[12] = host >> 24;
      src[13] = host >> 16;
      src[14] = host >> 8;
      src[15] = host;
      pkt[0] = 0x60;
      pkt[4] = (uint8_t)(tcp_len >> 8);
      pkt[5] = (uint8_t)tcp_len;
      pkt[6] = 6;
      pkt[7] = 64;
      memcpy(pkt + 8, src, 16);
      memcpy(pkt + 24, dst, 16);
    } else {
      src[0] = 10;
      src[1] = 100;
      src[2] = host >> 8;
      src[3] = host;
      pkt[0] = 0x45;
      pkt[2] = (uint8_t)((20 + tcp_len) >> 8);
      pkt[3] = (uint8_t)(20 + tcp_len);
      pkt[6] = 0x40;
      pkt[8] = 64;
      pkt[9] = 6;
      memcpy(pkt + 12, src, 4);
      memcpy(pkt + 16, dst, 4);
      uint16_t ipc = fold(sum16(pkt, 20, 0));
      pkt[10] = ipc >> 8;
      pkt[11] = ipc & 0xff;
    }
    size_t alen = family == 6 ? 16 : 4;
    uint32_t ph = sum16(src, alen, 0);
    ph = sum16(dst, alen, ph) + 6 + (uint32_t)tcp_len;
    uint16_t tc = fold(sum16(t, tcp_len, ph));
    t[16] = tc >> 8;
    t[17] = tc & 0xff;
    if (write(fd, pkt, ip_len + tcp_len) < 0) {
      errors++;
      if (errno != EAGAIN && errno != ENOBUFS && errno != EINTR) {
        perror("write");
        return 1;
      }
    } else {
      sent++;
    }
  }
  printf("{\"sent\":%llu,\"seconds\":%.3f,\"writeErrors\":%llu}\n", (unsigned long long)sent,
         now() - start, (unsigned long long)errors);
  return 0;
}
