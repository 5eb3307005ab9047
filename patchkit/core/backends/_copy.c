/* Strided patch copy with streaming stores: the inner loop of patchkit's numpy backend.
 *
 * copy_runs(dst, src, shape, dst_strides, src_strides, run, nontemporal) copies
 * shape[0] x shape[1] x shape[2] x shape[3] runs of `run` contiguous bytes from src to dst, the
 * address of run (i0, i1, i2, i3) being base + sum(i_k * strides[k]) on each side. It releases the
 * GIL, so several threads copy at once.
 *
 * numpy copies each run with memmove, whose ordinary stores first read every destination cache line
 * they write. With `nontemporal`, 16-byte aligned parts of each run are written with streaming
 * stores (SSE2), which skip that read: what glibc's memcpy does for copies larger than the cache,
 * and why one large memcpy is faster than many small ones. Elsewhere than x86-64, memcpy.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define HAVE_STREAM 1
#else
#define HAVE_STREAM 0
#endif

static void copy_run(char *dst, const char *src, Py_ssize_t run, int nontemporal)
{
#if HAVE_STREAM
    if (nontemporal && run >= 64) {
        Py_ssize_t head = (Py_ssize_t)((16 - ((uintptr_t)dst & 15)) & 15);
        memcpy(dst, src, (size_t)head);
        dst += head;
        src += head;
        run -= head;
        Py_ssize_t body = run & ~(Py_ssize_t)63;
        for (Py_ssize_t k = 0; k < body; k += 64) {
            __m128i a = _mm_loadu_si128((const __m128i *)(src + k));
            __m128i b = _mm_loadu_si128((const __m128i *)(src + k + 16));
            __m128i c = _mm_loadu_si128((const __m128i *)(src + k + 32));
            __m128i d = _mm_loadu_si128((const __m128i *)(src + k + 48));
            _mm_stream_si128((__m128i *)(dst + k), a);
            _mm_stream_si128((__m128i *)(dst + k + 16), b);
            _mm_stream_si128((__m128i *)(dst + k + 32), c);
            _mm_stream_si128((__m128i *)(dst + k + 48), d);
        }
        memcpy(dst + body, src + body, (size_t)(run - body));
        return;
    }
#endif
    (void)nontemporal;
    memcpy(dst, src, (size_t)run);
}

static int parse4(PyObject *seq, Py_ssize_t out[4], const char *name)
{
    if (!PyTuple_Check(seq) || PyTuple_GET_SIZE(seq) != 4) {
        PyErr_Format(PyExc_ValueError, "%s must be a tuple of 4 integers", name);
        return -1;
    }
    for (int k = 0; k < 4; k++) {
        out[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(seq, k));
        if (out[k] == -1 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

static PyObject *copy_runs(PyObject *self, PyObject *args)
{
    Py_ssize_t dst_addr, src_addr, run;
    PyObject *shape_obj, *dst_obj, *src_obj;
    int nontemporal;
    Py_ssize_t shape[4], ds[4], ss[4];
    (void)self;
    if (!PyArg_ParseTuple(args, "nnOOOnp", &dst_addr, &src_addr, &shape_obj, &dst_obj, &src_obj, &run, &nontemporal))
        return NULL;
    if (parse4(shape_obj, shape, "shape") || parse4(dst_obj, ds, "dst_strides") || parse4(src_obj, ss, "src_strides"))
        return NULL;
    char *dst = (char *)dst_addr;
    const char *src = (const char *)src_addr;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i0 = 0; i0 < shape[0]; i0++)
        for (Py_ssize_t i1 = 0; i1 < shape[1]; i1++)
            for (Py_ssize_t i2 = 0; i2 < shape[2]; i2++) {
                char *d = dst + i0 * ds[0] + i1 * ds[1] + i2 * ds[2];
                const char *s = src + i0 * ss[0] + i1 * ss[1] + i2 * ss[2];
                for (Py_ssize_t i3 = 0; i3 < shape[3]; i3++)
                    copy_run(d + i3 * ds[3], s + i3 * ss[3], run, nontemporal);
            }
#if HAVE_STREAM
    if (nontemporal)
        _mm_sfence();
#endif
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"copy_runs", copy_runs, METH_VARARGS,
     "copy_runs(dst_addr, src_addr, shape4, dst_strides4, src_strides4, run_bytes, nontemporal)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_copy", "Strided patch copies with streaming stores.", -1, methods};

PyMODINIT_FUNC PyInit__copy(void) { return PyModule_Create(&module); }
