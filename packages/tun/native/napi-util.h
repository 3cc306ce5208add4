/*
 * Small Node-API helpers shared by the addon's translation units (TUN queues, steering, UDP
 * sockets): errno-carrying errors and argument unpacking. Header-only, all `static`.
 */
#ifndef FAKE_TCP_TUN_NAPI_UTIL_H
#define FAKE_TCP_TUN_NAPI_UTIL_H

#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* A method (or plain function) property of a class or of the exports. */
#define METHOD(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_default_method, NULL}

/* ------------------------------------------------------------------------------------------ */
/* Error helpers                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* Throws an Error with message `msg` whose `code` is the errno name of `err` (e.g. "EBUSY"),
 * with `errno` and `syscall` properties. */
static inline void throw_errno_message(napi_env env, int err, const char* syscall,
                                       const char* msg) {
  napi_value message, error, code, num, sc;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_string_utf8(env, uv_err_name(-err), NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, err, &num);
  napi_set_named_property(env, error, "errno", num);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sc);
  napi_set_named_property(env, error, "syscall", sc);
  napi_throw(env, error);
}

/* The same, with the message "<syscall> failed for <what>: <strerror>". */
static inline void throw_errno(napi_env env, int err, const char* syscall, const char* what) {
  char msg[640];
  snprintf(msg, sizeof msg, "%s failed for %s: %s", syscall, what, strerror(err));
  throw_errno_message(env, err, syscall, msg);
}

#define NAPI_CALL(env, call)                                                                   \
  do {                                                                                         \
    if ((call) != napi_ok) {                                                                   \
      bool pending_;                                                                           \
      napi_is_exception_pending((env), &pending_);                                             \
      if (!pending_) napi_throw_error((env), "ERR_TUN_NATIVE", "Node-API call failed: " #call); \
      return NULL;                                                                             \
    }                                                                                          \
  } while (0)

/* Reads a JS string argument into buf (NUL-terminated); false (with a TypeError) if too long. */
static inline bool get_string(napi_env env, napi_value v, char* buf, size_t cap, const char* what) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, buf, cap, &len) != napi_ok) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a string", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return false;
  }
  if (len >= cap - 1) {
    /* napi truncates silently: a full buffer means the input may not have fitted. */
    size_t full = 0;
    napi_get_value_string_utf8(env, v, NULL, 0, &full);
    if (full >= cap) {
      char msg[96];
      snprintf(msg, sizeof msg, "%s is too long", what);
      napi_throw_range_error(env, "ENAMETOOLONG", msg);
      return false;
    }
  }
  return true;
}

/* Gets a byte view of any Uint8Array (Buffer included). False (with a TypeError) otherwise. */
static inline bool get_bytes(napi_env env, napi_value v, uint8_t** data, size_t* len, const char* what) {
  napi_typedarray_type type;
  size_t length;
  void* ptr;
  if (napi_get_typedarray_info(env, v, &type, &length, &ptr, NULL, NULL) != napi_ok ||
      (type != napi_uint8_array && type != napi_uint8_clamped_array)) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a Uint8Array or Buffer", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return false;
  }
  *data = ptr;
  *len = length;
  return true;
}

/* Unpacks the (offsets, count) arguments of a batch call: `offsets` a Uint32Array of
 * [start, length] pairs holding at least `count` pairs. Throws and returns false otherwise. */
static inline bool get_batch_offsets(napi_env env, napi_value offsets, napi_value count_value,
                                     const uint32_t** off, uint32_t* count) {
  napi_typedarray_type type;
  size_t n_off;
  void* data;
  if (offsets == NULL ||
      napi_get_typedarray_info(env, offsets, &type, &n_off, &data, NULL, NULL) != napi_ok ||
      type != napi_uint32_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "offsets must be a Uint32Array");
    return false;
  }
  *count = 0;
  if (count_value == NULL || napi_get_value_uint32(env, count_value, count) != napi_ok ||
      (size_t)*count * 2 > n_off) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE",
                           "count must be a number <= offsets.length / 2");
    return false;
  }
  *off = data;
  return true;
}

#endif
