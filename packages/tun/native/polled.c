/*
 * The shared lifecycle of polled native objects; see polled.h.
 */
#define _GNU_SOURCE /* recvmmsg */
#include "polled.h"

#include <sys/socket.h>

#include <stdlib.h>
#include <unistd.h>

void polled_init(polled_t* p, napi_env env, int fd, uv_poll_cb on_readable,
                 void (*free_object)(polled_t*), const char* what, const char* resource,
                 const char* closed_code) {
  p->env = env;
  p->fd = fd;
  p->owners = 1;
  p->on_readable = on_readable;
  p->free_object = free_object;
  p->what = what;
  p->resource = resource;
  p->closed_code = closed_code;
}

bool polled_share_buffer(polled_t* p, napi_value self, const char* name, size_t bytes,
                         void** data) {
  size_t slot = 0;
  while (slot < POLLED_MAX_BUFFERS && p->buffers[slot] != NULL) slot++;
  napi_value ab;
  return slot < POLLED_MAX_BUFFERS &&
         napi_create_arraybuffer(p->env, bytes, data, &ab) == napi_ok &&
         napi_create_reference(p->env, ab, 1, &p->buffers[slot]) == napi_ok &&
         napi_set_named_property(p->env, self, name, ab) == napi_ok;
}

bool polled_adopt_buffer(polled_t* p, napi_value self, const char* name, napi_value ab,
                         size_t min_bytes, void** data) {
  size_t slot = 0;
  while (slot < POLLED_MAX_BUFFERS && p->buffers[slot] != NULL) slot++;
  bool is_ab = false;
  size_t bytes = 0;
  if (napi_is_arraybuffer(p->env, ab, &is_ab) != napi_ok || !is_ab ||
      napi_get_arraybuffer_info(p->env, ab, data, &bytes) != napi_ok || bytes < min_bytes) {
    napi_throw_range_error(p->env, "ERR_INVALID_ARG_VALUE",
                           "receive area: an ArrayBuffer is missing or too small");
    return false;
  }
  return slot < POLLED_MAX_BUFFERS &&
         napi_create_reference(p->env, ab, 1, &p->buffers[slot]) == napi_ok &&
         napi_set_named_property(p->env, self, name, ab) == napi_ok;
}

static void release(polled_t* p) {
  if (--p->owners == 0) p->free_object(p);
}

static void delete_refs(polled_t* p) {
  for (size_t i = 0; i < POLLED_MAX_BUFFERS; i++) {
    if (p->buffers[i] != NULL) {
      napi_delete_reference(p->env, p->buffers[i]);
      p->buffers[i] = NULL;
    }
  }
  if (p->handler != NULL) {
    napi_delete_reference(p->env, p->handler);
    p->handler = NULL;
  }
}

void polled_discard(polled_t* p) {
  delete_refs(p);
  p->free_object(p);
}

static void on_poll_closed(uv_handle_t* h) {
  polled_t* p = h->data;
  /* The handle is gone: only now is teardown complete, so the env may finish exiting. */
  if (p->cleanup != NULL) {
    napi_remove_async_cleanup_hook(p->cleanup);
    p->cleanup = NULL;
  }
  release(p);
}

/* The fd is closed right after uv_poll_stop (which removes it from epoll), so no further read
 * callback can fire for it. */
void polled_close(polled_t* p) {
  if (p->closed) return;
  if (p->before_close != NULL) p->before_close(p);
  p->closed = true;
  if (p->poll_started) uv_poll_stop(&p->poll);
  if (p->fd >= 0) {
    close(p->fd);
    p->fd = -1;
  }
  delete_refs(p);
  if (p->async_ctx != NULL) {
    napi_async_destroy(p->env, p->async_ctx);
    p->async_ctx = NULL;
  }
  if (p->poll_started) {
    uv_close((uv_handle_t*)&p->poll, on_poll_closed);
  } else if (p->cleanup != NULL) {
    napi_remove_async_cleanup_hook(p->cleanup);
    p->cleanup = NULL;
  }
}

/* Env teardown (worker exit, process exit): close like close() and let Node wait for the
 * handle close before it tears down the loop. */
static void on_env_cleanup(napi_async_cleanup_hook_handle handle, void* arg) {
  (void)handle;
  polled_close((polled_t*)arg);
}

static void finalize(napi_env env, void* data, void* hint) {
  (void)env;
  (void)hint;
  polled_t* p = data;
  polled_close(p);
  release(p);
}

bool polled_wrap(polled_t* p, napi_value self) {
  if (napi_wrap(p->env, self, p, finalize, NULL, NULL) != napi_ok) return false;
  napi_add_async_cleanup_hook(p->env, on_env_cleanup, p, &p->cleanup);
  return true;
}

polled_t* polled_unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv) {
  napi_value self;
  void* data = NULL;
  if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok) return NULL;
  if (napi_unwrap(env, self, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_THIS", "not a native TUN queue or UDP socket");
    return NULL;
  }
  return data;
}

bool polled_require_open(napi_env env, polled_t* p) {
  if (!p->closed) return true;
  char msg[64];
  snprintf(msg, sizeof msg, "%s is closed", p->what);
  napi_throw_error(env, p->closed_code, msg);
  return false;
}

void polled_deliver(polled_t* p, uint32_t count) {
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, recv, arg, result;
  if (napi_get_reference_value(env, p->handler, &fn) == napi_ok && fn != NULL) {
    /* napi_make_callback needs an object receiver: the handler itself serves (the handlers
     * are arrow functions, which ignore it), sparing a look-up of the global object on every
     * wake-up. */
    recv = fn;
    napi_create_uint32(env, count, &arg);
    if (napi_make_callback(env, p->async_ctx, recv, fn, 1, &arg, &result) != napi_ok) {
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value exc;
        napi_get_and_clear_last_exception(env, &exc);
        napi_fatal_exception(env, exc);
      }
    }
  }
  napi_close_handle_scope(env, scope);
}

uint32_t polled_receive(polled_t* p, int status, struct mmsghdr* msgs, uint32_t n,
                        double* errors) {
  if (p->closed) return 0; /* a wake-up that raced close(): nothing to read, nothing to call */
  if (status < 0) *errors += 1;
  int got;
  do {
    got = recvmmsg(p->fd, msgs, n, MSG_DONTWAIT, NULL);
  } while (got < 0 && errno == EINTR);
  if (got < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) *errors += 1;
    return 0;
  }
  return (uint32_t)got;
}

/* stats() -> { counter: value, ... } (the object's `counters`; they survive close()). */
static napi_value polled_stats_js(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  polled_t* p = polled_unwrap(env, info, &argc, NULL);
  if (p == NULL) return NULL;
  polled_counter_t counters[POLLED_MAX_COUNTERS];
  size_t n = p->counters != NULL ? p->counters(p, counters) : 0;
  napi_value out, v;
  NAPI_CALL(env, napi_create_object(env, &out));
  for (size_t i = 0; i < n; i++) {
    napi_create_double(env, counters[i].value, &v);
    napi_set_named_property(env, out, counters[i].name, v);
  }
  return out;
}

/* start(handler): (re)places the batch handler and starts polling. */
static napi_value polled_start_js(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  polled_t* p = polled_unwrap(env, info, &argc, argv);
  if (p == NULL || !polled_require_open(env, p)) return NULL;
  napi_valuetype t;
  if (argc < 1 || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "handler must be a function");
    return NULL;
  }
  if (p->handler != NULL) napi_delete_reference(env, p->handler);
  NAPI_CALL(env, napi_create_reference(env, argv[0], 1, &p->handler));
  if (p->async_ctx == NULL) {
    napi_value name;
    NAPI_CALL(env, napi_create_string_utf8(env, p->resource, NAPI_AUTO_LENGTH, &name));
    NAPI_CALL(env, napi_async_init(env, NULL, name, &p->async_ctx));
  }
  if (!p->poll_started) {
    uv_loop_t* loop;
    NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
    int rc = uv_poll_init(loop, &p->poll, p->fd);
    if (rc < 0) {
      throw_errno(env, -rc, "uv_poll_init", p->what);
      return NULL;
    }
    p->poll.data = p;
    p->poll_started = true;
    p->owners++;
  }
  int rc = uv_poll_start(&p->poll, UV_READABLE, p->on_readable);
  if (rc < 0) throw_errno(env, -rc, "uv_poll_start", p->what);
  return NULL;
}

/* ref(keep): whether an active reader keeps the event loop (and so the thread) alive. */
static napi_value polled_ref_js(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  polled_t* p = polled_unwrap(env, info, &argc, argv);
  if (p == NULL) return NULL;
  bool keep = true;
  napi_get_value_bool(env, argv[0], &keep);
  if (p->poll_started && !p->closed) {
    if (keep)
      uv_ref((uv_handle_t*)&p->poll);
    else
      uv_unref((uv_handle_t*)&p->poll);
  }
  return NULL;
}

/* close(): idempotent. */
static napi_value polled_close_js(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  polled_t* p = polled_unwrap(env, info, &argc, NULL);
  if (p != NULL) polled_close(p);
  return NULL;
}

/* fd getter: -1 once closed. */
static napi_value polled_fd_js(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  polled_t* p = polled_unwrap(env, info, &argc, NULL);
  if (p == NULL) return NULL;
  napi_value out;
  napi_create_int32(env, p->fd, &out);
  return out;
}

#define MAX_CLASS_PROPERTIES 16

bool polled_define_class(napi_env env, napi_value exports, const char* name, napi_callback ctor,
                         const napi_property_descriptor* own, size_t n_own) {
  const napi_property_descriptor shared[] = {
      METHOD("start", polled_start_js),
      METHOD("ref", polled_ref_js),
      METHOD("stats", polled_stats_js),
      METHOD("close", polled_close_js),
      {"fd", NULL, NULL, polled_fd_js, NULL, NULL, napi_default, NULL},
  };
  const size_t n_shared = sizeof shared / sizeof shared[0];
  napi_property_descriptor props[MAX_CLASS_PROPERTIES];
  if (n_own + n_shared > MAX_CLASS_PROPERTIES) return false;
  memcpy(props, own, n_own * sizeof props[0]);
  memcpy(props + n_own, shared, sizeof shared);
  napi_value cls;
  return napi_define_class(env, name, NAPI_AUTO_LENGTH, ctor, NULL, n_own + n_shared, props,
                           &cls) == napi_ok &&
         napi_set_named_property(env, exports, name, cls) == napi_ok;
}
