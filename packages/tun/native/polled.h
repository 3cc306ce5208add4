/*
 * What every polled native object of the addon shares (a TUN queue, a UDP socket, a netfilter
 * queue): a non-blocking fd watched by uv_poll on the loop of the env that made it (so it works
 * in worker_threads), the JS batch handler, the ArrayBuffers it shares with JS, one lifecycle
 * that is safe from JS close(), from a handler, from GC finalization and from env teardown
 * (worker or process exit), the batched receive of the socket ones, the counters array and the
 * JS class with its shared methods (start, ref, close, fd).
 *
 * An object embeds `polled_t` as its FIRST member, so the pointer napi_wrap stores is both.
 */
#ifndef FAKE_TCP_TUN_POLLED_H
#define FAKE_TCP_TUN_POLLED_H

#include "napi-util.h"

struct mmsghdr; /* <sys/socket.h> with _GNU_SOURCE, in the units that receive */

#define POLLED_MAX_BUFFERS 5

typedef struct polled polled_t;

/* One counter of stats(): its JS name (as in the TS stats interface) and value. */
typedef struct {
  const char* name;
  double value;
} polled_counter_t;
#define POLLED_MAX_COUNTERS 16

struct polled {
  napi_env env;
  int fd;
  bool closed;
  bool poll_started; /* uv_poll_init done: the handle must be uv_close()d */
  int owners;        /* JS wrapper + poll handle: freed when both are gone */

  uv_poll_t poll;
  uv_poll_cb on_readable;
  napi_ref handler;
  napi_async_context async_ctx;
  napi_async_cleanup_hook_handle cleanup;
  napi_ref buffers[POLLED_MAX_BUFFERS]; /* shared ArrayBuffers: kept alive while written */

  void (*free_object)(polled_t*); /* frees the enclosing object */
  /* Optional: runs once at the start of polled_close, while the fd is still open (e.g. to
   * hand back what the object still holds). NULL for none. */
  void (*before_close)(polled_t*);
  /* Fills `out` with the object's counters for stats() (at most POLLED_MAX_COUNTERS) and
   * returns how many; set by every object after polled_init. */
  size_t (*counters)(const polled_t*, polled_counter_t* out);
  const char* what;               /* "the TUN queue": for error messages */
  const char* resource;           /* async resource name: "TunQueue" */
  const char* closed_code;        /* error code when used after close */
};

/* Fills the shared part of a freshly calloc'ed object. */
void polled_init(polled_t* p, napi_env env, int fd, uv_poll_cb on_readable,
                 void (*free_object)(polled_t*), const char* what, const char* resource,
                 const char* closed_code);

/* Creates an ArrayBuffer of `bytes`, keeps it referenced and exposes it as `self[name]`. */
bool polled_share_buffer(polled_t* p, napi_value self, const char* name, size_t bytes,
                         void** data);
/* Like polled_share_buffer, but over an ArrayBuffer that JS made (shared by several objects):
 * keeps it alive while written, exposes it as `name`. False (JS error thrown) when `ab` is not
 * an ArrayBuffer of at least `min_bytes`. */
bool polled_adopt_buffer(polled_t* p, napi_value self, const char* name, napi_value ab,
                         size_t min_bytes, void** data);

/* Wraps `self` and registers env teardown. On failure the object is not wrapped and the caller
 * must call polled_discard. */
bool polled_wrap(polled_t* p, napi_value self);

/* Releases the references of an object that never got wrapped, then frees it. */
void polled_discard(polled_t* p);

/* Stops polling, closes the fd, drops the JS references. Idempotent; safe in a handler. */
void polled_close(polled_t* p);

/* The object behind `this` (any polled class), or NULL with a TypeError thrown. */
polled_t* polled_unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv);

/* Throws `closed_code` and returns false once the object is closed. */
bool polled_require_open(napi_env env, polled_t* p);

/* Calls the handler with the batch size (and itself as `this`: handlers must not use `this`);
 * an exception goes to 'uncaughtException'. */
void polled_deliver(polled_t* p, uint32_t count);

/* For a readable callback: nothing once closed; else one recvmmsg (retried on EINTR) of up to
 * `n` messages into `msgs`. An error reported with the wake-up (`status` < 0) and a receive
 * failure other than "nothing to read" each count one in `*errors` (e.g. a pending ICMP error
 * or ENOBUFS: the kernel reports it once and clears it, so polling goes on). Returns the
 * messages received, 0 for none. */
uint32_t polled_receive(polled_t* p, int status, struct mmsghdr* msgs, uint32_t n,
                        double* errors);

/* Defines the class `name` (constructor `ctor`) with its own properties `own` and the ones
 * every polled class shares (start, ref, stats, close, the fd getter), as exports[name]. */
bool polled_define_class(napi_env env, napi_value exports, const char* name, napi_callback ctor,
                         const napi_property_descriptor* own, size_t n_own);

#endif
