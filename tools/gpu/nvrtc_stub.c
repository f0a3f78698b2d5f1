/* A stand-in for NVRTC (CUDA's runtime compiler) inside the spconv GPU bundle.
 *
 * cumm's core_cc links libnvrtc 12.4 (61 MB, 17 MB packed) only to compile kernels at run time for
 * GPUs its prebuilt kernels do not cover. On the device machine (an H200, sm_90, prebuilt) spconv
 * never compiles, and the packed library would take a quarter of what one device call may carry.
 * This stub exports the same versioned symbols (version node libnvrtc.so.12, see nvrtc_stub.map),
 * so cumm loads; every call fails with NVRTC_ERROR_INTERNAL_ERROR and a message that says why,
 * so a machine that does need run-time compilation gets a clear error instead of a wrong answer.
 * Built and packed by tools/gpu/slim_bundle.sh. */
#include <stddef.h>

typedef int nvrtcResult;
typedef void *nvrtcProgram;
enum { NVRTC_ERROR_INTERNAL_ERROR = 11 };

static const char kWhy[] =
    "NVRTC is not in this slim GPU bundle (tools/gpu/slim_bundle.sh): this GPU needs run-time "
    "compiled spconv kernels; rebuild .gpu with the full bundle";

const char *nvrtcGetErrorString(nvrtcResult r) { (void)r; return kWhy; }
nvrtcResult nvrtcCreateProgram(nvrtcProgram *p, const char *s, const char *n, int k, const char *const *h,
                               const char *const *i) {
  (void)s; (void)n; (void)k; (void)h; (void)i;
  if (p) *p = NULL;
  return NVRTC_ERROR_INTERNAL_ERROR;
}
nvrtcResult nvrtcDestroyProgram(nvrtcProgram *p) { if (p) *p = NULL; return NVRTC_ERROR_INTERNAL_ERROR; }
nvrtcResult nvrtcCompileProgram(nvrtcProgram p, int n, const char *const *o) {
  (void)p; (void)n; (void)o; return NVRTC_ERROR_INTERNAL_ERROR;
}
nvrtcResult nvrtcAddNameExpression(nvrtcProgram p, const char *e) { (void)p; (void)e; return NVRTC_ERROR_INTERNAL_ERROR; }
nvrtcResult nvrtcGetLoweredName(nvrtcProgram p, const char *e, const char **l) {
  (void)p; (void)e; if (l) *l = NULL; return NVRTC_ERROR_INTERNAL_ERROR;
}
nvrtcResult nvrtcGetPTXSize(nvrtcProgram p, size_t *s) { (void)p; if (s) *s = 0; return NVRTC_ERROR_INTERNAL_ERROR; }
nvrtcResult nvrtcGetPTX(nvrtcProgram p, char *b) { (void)p; (void)b; return NVRTC_ERROR_INTERNAL_ERROR; }
nvrtcResult nvrtcGetCUBINSize(nvrtcProgram p, size_t *s) { (void)p; if (s) *s = 0; return NVRTC_ERROR_INTERNAL_ERROR; }
nvrtcResult nvrtcGetCUBIN(nvrtcProgram p, char *b) { (void)p; (void)b; return NVRTC_ERROR_INTERNAL_ERROR; }
nvrtcResult nvrtcGetProgramLogSize(nvrtcProgram p, size_t *s) { (void)p; if (s) *s = sizeof kWhy; return 0; }
nvrtcResult nvrtcGetProgramLog(nvrtcProgram p, char *b) {
  (void)p;
  if (b) for (size_t i = 0; i < sizeof kWhy; ++i) b[i] = kWhy[i];
  return 0;
}
