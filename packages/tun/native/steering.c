/*
 * Deterministic queue steering for multi-queue TUN devices. The kernel picks the queue of a
 * packet it transmits into the TUN (kernel -> userspace direction) by running a
 * BPF_PROG_TYPE_SOCKET_FILTER program attached with TUNSETSTEERINGEBPF and taking its return
 * value modulo the number of queues. Our program returns source port + destination port of the
 * transport header, so a TCP flow always lands on queue ((sport + dport) mod 2^16) % N (the kernel
 * keeps the result in 16 bits before the modulo), which lets each
 * shard choose local ports whose replies come back to its own queue.
 *
 * The program is hand-assembled (a dozen instructions) so no compiler or libbpf is needed.
 * The legacy packet loads (BPF_LD | BPF_ABS / BPF_IND) read from the skb held in r6, convert
 * from network byte order, and end the program with return value 0 when out of bounds, so a
 * truncated packet simply goes to queue 0.
 */
#include "steering.h"

#include <linux/bpf.h>
#include <linux/if_tun.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Instruction builders (struct bpf_insn: code, dst_reg:4, src_reg:4, off, imm). */
#define INSN(c, d, s, o, i) ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})
#define MOV_REG(d, s) INSN(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0)
#define MOV_IMM(d, i) INSN(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, i)
#define ALU_IMM(op, d, i) INSN(BPF_ALU64 | (op) | BPF_K, d, 0, 0, i)
#define ALU_REG(op, d, s) INSN(BPF_ALU64 | (op) | BPF_X, d, s, 0, 0)
#define JEQ_IMM(d, i, o) INSN(BPF_JMP | BPF_JEQ | BPF_K, d, 0, o, i)
#define JA(o) INSN(BPF_JMP | BPF_JA, 0, 0, o, 0)
#define LD_ABS(size, i) INSN(BPF_LD | (size) | BPF_ABS, 0, 0, 0, i)
#define LD_IND(size, s, i) INSN(BPF_LD | (size) | BPF_IND, 0, s, 0, i)
#define EXIT() INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

/* r0 = sport + dport of the IPv4 or IPv6 packet at skb->data, 0 for anything else. Registers:
 * r6 = skb (required by LD_ABS/LD_IND), r7 = transport header offset, r8 = source port
 * (r1-r5 are clobbered by the packet loads; r6-r9 survive them). */
static const struct bpf_insn port_sum_prog[] = {
    /* 0 */ MOV_REG(BPF_REG_6, BPF_REG_1),
    /* 1 */ LD_ABS(BPF_B, 0),                 /* r0 = version << 4 | IHL */
    /* 2 */ MOV_REG(BPF_REG_2, BPF_REG_0),
    /* 3 */ ALU_IMM(BPF_RSH, BPF_REG_2, 4),   /* r2 = IP version */
    /* 4 */ JEQ_IMM(BPF_REG_2, 4, 3),         /* IPv4 -> 8 */
    /* 5 */ JEQ_IMM(BPF_REG_2, 6, 6),         /* IPv6 -> 12 */
    /* 6 */ MOV_IMM(BPF_REG_0, 0),            /* anything else: queue 0 */
    /* 7 */ EXIT(),
    /* 8 */ ALU_IMM(BPF_AND, BPF_REG_0, 0xf), /* IPv4: header length = IHL * 4 */
    /* 9 */ ALU_IMM(BPF_LSH, BPF_REG_0, 2),
    /* 10 */ MOV_REG(BPF_REG_7, BPF_REG_0),
    /* 11 */ JA(1),                           /* -> 13 */
    /* 12 */ MOV_IMM(BPF_REG_7, 40),          /* IPv6: fixed header (extension headers unused) */
    /* 13 */ LD_IND(BPF_H, BPF_REG_7, 0),     /* r0 = source port */
    /* 14 */ MOV_REG(BPF_REG_8, BPF_REG_0),
    /* 15 */ LD_IND(BPF_H, BPF_REG_7, 2),     /* r0 = destination port */
    /* 16 */ ALU_REG(BPF_ADD, BPF_REG_0, BPF_REG_8),
    /* 17 */ EXIT(),
};

#define LOG_SIZE 8192

/* Loads the program; returns its fd, or -errno with the verifier's log (if any) in `log`. */
static int load_port_sum(char* log, size_t log_size) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
  attr.insns = (uint64_t)(uintptr_t)port_sum_prog;
  attr.insn_cnt = sizeof port_sum_prog / sizeof port_sum_prog[0];
  attr.license = (uint64_t)(uintptr_t) "GPL";
  log[0] = '\0';
  int fd = (int)syscall(__NR_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
  if (fd >= 0) return fd;
  int err = errno;
  if (err == EINVAL || err == EACCES) {
    /* Load again with the log on: only a rejected program needs it, and logging costs. */
    attr.log_level = 1;
    attr.log_buf = (uint64_t)(uintptr_t)log;
    attr.log_size = (uint32_t)log_size;
    fd = (int)syscall(__NR_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    if (fd >= 0) return fd; /* should not happen, but a program is a program */
  }
  return -err;
}

/* Explains a load failure: errno name in `code`, advice (and the verifier log) in `msg`. */
static void explain_load(int err, const char* log, char* msg, size_t cap) {
  const char* hint;
  switch (err) {
    case EPERM:
      hint = "loading eBPF programs is not permitted: run as root or grant CAP_BPF (kernel >= 5.8) "
             "or CAP_SYS_ADMIN (without them, kernel.unprivileged_bpf_disabled forbids it)";
      break;
    case ENOSYS:
      hint = "this kernel has no bpf() system call (CONFIG_BPF_SYSCALL off)";
      break;
    case EINVAL:
    case EACCES:
      hint = "the kernel verifier rejected the program";
      break;
    default:
      hint = strerror(err);
  }
  snprintf(msg, cap, "cannot load the port-sum steering program: %s (%s)%s%s", hint, strerror(err),
           log[0] ? "; verifier log: " : "", log);
}

napi_value steering_set(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd = -1;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "setSteering(fd, mode): fd must be an open fd");
    return NULL;
  }
  napi_valuetype t;
  NAPI_CALL(env, napi_typeof(env, argv[1], &t));
  int prog = -1; /* -1 detaches */
  if (t != napi_null && t != napi_undefined) {
    char mode[16];
    if (!get_string(env, argv[1], mode, sizeof mode, "steering mode")) return NULL;
    if (strcmp(mode, "port-sum") != 0) {
      napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE", "steering mode must be \"port-sum\" or null");
      return NULL;
    }
    char* log = calloc(1, LOG_SIZE);
    if (log == NULL) {
      napi_throw_error(env, "ENOMEM", "out of memory");
      return NULL;
    }
    prog = load_port_sum(log, LOG_SIZE);
    if (prog < 0) {
      char msg[LOG_SIZE + 512];
      explain_load(-prog, log, msg, sizeof msg);
      free(log);
      throw_errno_message(env, -prog, "bpf(BPF_PROG_LOAD)", msg);
      return NULL;
    }
    free(log);
  }
  int rc = ioctl(fd, TUNSETSTEERINGEBPF, &prog);
  int err = errno;
  if (prog >= 0) close(prog); /* the device holds its own reference to the program */
  if (rc < 0) {
    char msg[256];
    snprintf(msg, sizeof msg,
             "cannot %s eBPF queue steering: ioctl(TUNSETSTEERINGEBPF) failed: %s%s",
             prog >= 0 ? "attach" : "detach", strerror(err),
             err == EINVAL || err == ENOTTY ? " (kernel older than 4.16, or not a TUN queue fd)" : "");
    throw_errno_message(env, err, "ioctl(TUNSETSTEERINGEBPF)", msg);
  }
  return NULL;
}

napi_value steering_probe(napi_env env, napi_callback_info info) {
  (void)info;
  char* log = calloc(1, LOG_SIZE);
  if (log == NULL) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  int prog = load_port_sum(log, LOG_SIZE);
  napi_value out;
  if (prog >= 0) {
    close(prog);
    free(log);
    napi_get_null(env, &out);
    return out;
  }
  char msg[LOG_SIZE + 512];
  explain_load(-prog, log, msg, sizeof msg);
  free(log);
  napi_value code, message;
  NAPI_CALL(env, napi_create_object(env, &out));
  NAPI_CALL(env, napi_create_string_utf8(env, uv_err_name(prog), NAPI_AUTO_LENGTH, &code));
  NAPI_CALL(env, napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message));
  NAPI_CALL(env, napi_set_named_property(env, out, "code", code));
  NAPI_CALL(env, napi_set_named_property(env, out, "message", message));
  return out;
}
