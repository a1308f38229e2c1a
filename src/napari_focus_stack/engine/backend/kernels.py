"""CUDA source of the GPU backend's fused kernels, compiled by CuPy on first use."""

from functools import lru_cache

WARP_PREAMBLE = r"""
__device__ void keys_weights(const float t, float* w) {
    // NdimageBackend's _keys_weights, operation by operation, rounded to nearest
    const float a = -0.75f;
    const float u = __fadd_rn(t, 1.0f);
    float p = __fsub_rn(__fmul_rn(a, u), -3.75f);          // a*u - 5a
    p = __fadd_rn(__fmul_rn(p, u), -6.0f);                 // * u + 8a
    w[0] = __fsub_rn(__fmul_rn(p, u), -3.0f);              // * u - 4a
    p = __fsub_rn(__fmul_rn(1.25f, t), 2.25f);             // (a+2) t - (a+3)
    w[1] = __fadd_rn(__fmul_rn(__fmul_rn(p, t), t), 1.0f);
    const float s = __fsub_rn(1.0f, t);
    p = __fsub_rn(__fmul_rn(1.25f, s), 2.25f);
    w[2] = __fadd_rn(__fmul_rn(__fmul_rn(p, s), s), 1.0f);
    w[3] = __fsub_rn(__fsub_rn(__fsub_rn(1.0f, w[0]), w[1]), w[2]);
}
"""

WARP_BODY = r"""
    const long long c = i % channels;
    const long long pixel = i / channels;
    const float x = (float)(col0 + pixel % out_cols);
    const float y = (float)(row0 + pixel / out_cols);
    const float sx = __fsub_rn(__fadd_rn(__fmul_rn(x, m00), __fadd_rn(__fmul_rn(y, m01), m02)), ox);
    const float sy = __fsub_rn(__fadd_rn(__fmul_rn(x, m10), __fadd_rn(__fmul_rn(y, m11), m12)), oy);
    const float fx = floorf(sx), fy = floorf(sy);
    float wx[4], wy[4];
    keys_weights(__fsub_rn(sx, fx), wx);
    keys_weights(__fsub_rn(sy, fy), wy);
    const long long x0 = (long long)fx, y0 = (long long)fy;
    float band = 0.0f;
    for (int r = 0; r < 4; ++r) {
        const long long yy = min(max(y0 + r - 1, 0LL), height - 1);
        float row = 0.0f;
        for (int k = 0; k < 4; ++k) {
            const long long xx = min(max(x0 + k - 1, 0LL), width - 1);
            row = __fadd_rn(row, __fmul_rn((float)image[(yy * width + xx) * channels + c], wx[k]));
        }
        band = __fadd_rn(band, __fmul_rn(row, wy[r]));
    }
    out = band;
"""


#: Why the fused warp kernel did not compile, if it did not (then never tried again).
WARP_KERNEL_FAILED = []


@lru_cache(maxsize=4)
def warp_kernel(cupy):
    """The fused bicubic warp as a CuPy ElementwiseKernel (CuPy compiles it on its first call)."""
    return cupy.ElementwiseKernel(
        "raw T image, float32 m00, float32 m01, float32 m02, float32 m10, float32 m11, float32 m12, "
        "float32 ox, float32 oy, int64 row0, int64 col0, int64 out_cols, int64 height, int64 width, "
        "int64 channels",
        "float32 out",
        WARP_BODY,
        "napari_focus_stack_warp_cubic",
        preamble=WARP_PREAMBLE,
    )
