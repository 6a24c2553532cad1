/*
 * flock(2) for Node, as a tiny N-API addon embedded in the SEA (deploy/build.mjs compiles it when gcc is present).
 * exports.flock(fd, op) -> 0 or errno. Used by flock.ts; without it, flock.ts falls back to util-linux flock(1).
 */
#include <errno.h>
#include <sys/file.h>
#include <node_api.h>

static napi_value do_flock(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd = -1, op = 0;
  napi_value out;
  int r;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) return NULL;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int32(env, argv[1], &op) != napi_ok) return NULL;
  do {
    r = flock(fd, op);
  } while (r != 0 && errno == EINTR);
  napi_create_int32(env, r == 0 ? 0 : errno, &out);
  return out;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "flock", NAPI_AUTO_LENGTH, do_flock, NULL, &fn);
  napi_set_named_property(env, exports, "flock", fn);
  return exports;
}
