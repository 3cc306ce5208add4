/*
 * Device half of fake-tcp-tun's native addon: opens TUN queue fds (IFF_TUN, multi-queue,
 * virtio header, offload flags) and configures the interface (MTU, txqueuelen, up) with
 * ioctls on a throw-away socket of the calling thread's network namespace.
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
#include "tun.h"

/* openQueue(devicePath, name, multiQueue, vnetHdr, exclusive, receiveOffload) -> { fd, name }
 * exclusive (IFF_TUN_EXCL) makes the kernel refuse a name that exists already, instead of
 * silently adding a queue to another process's multi-queue device. receiveOffload (vnetHdr
 * only) lets the kernel hand over TCP packets of up to 64 KiB that it did not segment; the
 * setting is device-wide, so every queue of a device must be opened with the same value. */
static napi_value open_queue(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char path[256], name[IFNAMSIZ];
  bool multi = false, vnet = false, excl = false, tso = false;
  if (!get_string(env, argv[0], path, sizeof path, "device path")) return NULL;
  if (!get_string(env, argv[1], name, sizeof name, "interface name")) return NULL;
  napi_get_value_bool(env, argv[2], &multi);
  napi_get_value_bool(env, argv[3], &vnet);
  if (argc >= 5) napi_get_value_bool(env, argv[4], &excl);
  if (argc >= 6) napi_get_value_bool(env, argv[5], &tso);

  int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    throw_errno(env, errno, "open", path);
    return NULL;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (multi ? IFF_MULTI_QUEUE : 0) | (vnet ? IFF_VNET_HDR : 0) |
                  (excl ? IFF_TUN_EXCL : 0);
  memcpy(ifr.ifr_name, name, strlen(name));
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    throw_errno(env, err, "ioctl(TUNSETIFF)", name[0] ? name : "a new TUN device");
    return NULL;
  }
  if (vnet) {
    int hdr_size = VNET_HDR_LEN;
    /* Never USO: UDP super-packets are not something a fake-TCP reader can use. */
    unsigned long offload = TUN_F_CSUM | (tso ? TUN_F_TSO4 | TUN_F_TSO6 : 0);
    if (ioctl(fd, TUNSETVNETHDRSZ, &hdr_size) < 0 || ioctl(fd, TUNSETOFFLOAD, offload) < 0) {
      int err = errno;
      close(fd);
      throw_errno(env, err, "ioctl(TUNSETOFFLOAD)", ifr.ifr_name);
      return NULL;
    }
  }
  napi_value result, jfd, jname;
  NAPI_CALL(env, napi_create_object(env, &result));
  NAPI_CALL(env, napi_create_int32(env, fd, &jfd));
  NAPI_CALL(env, napi_create_string_utf8(env, ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ), &jname));
  NAPI_CALL(env, napi_set_named_property(env, result, "fd", jfd));
  NAPI_CALL(env, napi_set_named_property(env, result, "name", jname));
  return result;
}

/* queueInfo(fd) -> { name, flags }: what TUN device (and mode) an fd is attached to. */
static napi_value queue_info(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  NAPI_CALL(env, napi_get_value_int32(env, argv[0], &fd));
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (ioctl(fd, TUNGETIFF, &ifr) < 0) {
    throw_errno(env, errno, "ioctl(TUNGETIFF)", "the given fd");
    return NULL;
  }
  napi_value result, jname, jflags;
  NAPI_CALL(env, napi_create_object(env, &result));
  NAPI_CALL(env, napi_create_string_utf8(env, ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ), &jname));
  NAPI_CALL(env, napi_create_uint32(env, (uint16_t)ifr.ifr_flags, &jflags));
  NAPI_CALL(env, napi_set_named_property(env, result, "name", jname));
  NAPI_CALL(env, napi_set_named_property(env, result, "flags", jflags));
  return result;
}

/* dupFd(fd) -> new fd (close-on-exec, non-blocking) */
static napi_value dup_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  int32_t fd = -1;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  NAPI_CALL(env, napi_get_value_int32(env, argv[0], &fd));
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) {
    throw_errno(env, errno, "fcntl(F_DUPFD_CLOEXEC)", "the given fd");
    return NULL;
  }
  int fl = fcntl(copy, F_GETFL);
  if (fl >= 0) fcntl(copy, F_SETFL, fl | O_NONBLOCK);
  NAPI_CALL(env, napi_create_int32(env, copy, &out));
  return out;
}

/* closeFd(fd): used to release fds when a later setup step fails. */
static napi_value close_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  NAPI_CALL(env, napi_get_value_int32(env, argv[0], &fd));
  if (fd >= 0) close(fd);
  return NULL;
}

/* Runs one interface ioctl on a throw-away socket of the current network namespace. */
static int if_ioctl(unsigned long req, struct ifreq* ifr) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -errno;
  int rc = ioctl(s, req, ifr) < 0 ? -errno : 0;
  close(s);
  return rc;
}

/* if_ioctl, with a failure thrown as `what` on the interface; false when it failed. */
static bool if_ioctl_or_throw(napi_env env, unsigned long req, struct ifreq* ifr, const char* what) {
  int rc = if_ioctl(req, ifr);
  if (rc < 0) throw_errno(env, -rc, what, ifr->ifr_name);
  return rc == 0;
}

/* Parses (name, value) arguments shared by the interface setters. */
static bool if_args(napi_env env, napi_callback_info info, struct ifreq* ifr, int32_t* value) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return false;
  memset(ifr, 0, sizeof *ifr);
  if (!get_string(env, argv[0], ifr->ifr_name, IFNAMSIZ, "interface name")) return false;
  if (value != NULL && napi_get_value_int32(env, argv[1], value) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "value must be a number");
    return false;
  }
  return true;
}

/* deviceReceiveOffload(name) -> boolean: whether the device (in this network namespace) has
 * TSO on, i.e. whether its queues were opened with receiveOffload. TUN devices turn TSO on
 * only through TUNSETOFFLOAD, so the ethtool view of the features reads the mode back. */
static napi_value device_receive_offload(napi_env env, napi_callback_info info) {
  struct ifreq ifr;
  if (!if_args(env, info, &ifr, NULL)) return NULL;
  struct ethtool_value ev = {.cmd = ETHTOOL_GTSO, .data = 0};
  ifr.ifr_data = (void*)&ev;
  if (!if_ioctl_or_throw(env, SIOCETHTOOL, &ifr, "ioctl(SIOCETHTOOL)")) return NULL;
  napi_value out;
  NAPI_CALL(env, napi_get_boolean(env, ev.data != 0, &out));
  return out;
}

/* setMtu(name, mtu) */
static napi_value set_mtu(napi_env env, napi_callback_info info) {
  struct ifreq ifr;
  int32_t mtu;
  if (!if_args(env, info, &ifr, &mtu)) return NULL;
  ifr.ifr_mtu = mtu;
  if_ioctl_or_throw(env, SIOCSIFMTU, &ifr, "ioctl(SIOCSIFMTU)");
  return NULL;
}

/* getMtu(name) -> mtu */
static napi_value get_mtu(napi_env env, napi_callback_info info) {
  struct ifreq ifr;
  if (!if_args(env, info, &ifr, NULL)) return NULL;
  if (!if_ioctl_or_throw(env, SIOCGIFMTU, &ifr, "ioctl(SIOCGIFMTU)")) return NULL;
  napi_value out;
  NAPI_CALL(env, napi_create_int32(env, ifr.ifr_mtu, &out));
  return out;
}

/* setTxQueueLen(name, len) */
static napi_value set_txqueuelen(napi_env env, napi_callback_info info) {
  struct ifreq ifr;
  int32_t len;
  if (!if_args(env, info, &ifr, &len)) return NULL;
  ifr.ifr_qlen = len;
  if_ioctl_or_throw(env, SIOCSIFTXQLEN, &ifr, "ioctl(SIOCSIFTXQLEN)");
  return NULL;
}

/* setUp(name, up) */
static napi_value set_up(napi_env env, napi_callback_info info) {
  struct ifreq ifr;
  int32_t up;
  if (!if_args(env, info, &ifr, &up)) return NULL;
  int rc = if_ioctl(SIOCGIFFLAGS, &ifr);
  if (rc == 0) {
    if (up)
      ifr.ifr_flags |= IFF_UP;
    else
      ifr.ifr_flags &= ~IFF_UP;
    rc = if_ioctl(SIOCSIFFLAGS, &ifr);
  }
  if (rc < 0) throw_errno(env, -rc, "ioctl(SIOCSIFFLAGS)", ifr.ifr_name);
  return NULL;
}

bool device_define_functions(napi_env env, napi_value exports) {
  napi_property_descriptor fns[] = {
      METHOD("openQueue", open_queue),
      METHOD("queueInfo", queue_info),
      METHOD("dupFd", dup_fd),
      METHOD("closeFd", close_fd),
      METHOD("setMtu", set_mtu),
      METHOD("getMtu", get_mtu),
      METHOD("deviceReceiveOffload", device_receive_offload),
      METHOD("setTxQueueLen", set_txqueuelen),
      METHOD("setUp", set_up),
  };
  return napi_define_properties(env, exports, sizeof fns / sizeof fns[0], fns) == napi_ok;
}
