//go:build cuda

package cuda

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

// The cuDNN entry points iterbin uses, declared here from the cuDNN
// headers so that building needs neither cudnn.h nor the library: they are
// looked up with dlsym in libcudnn.so.9 or libcudnn.so.8 (in both, the
// library of that name is the shim that exports the whole legacy API) and
// called through the static wrappers below. Handles and descriptors are
// opaque pointers (void*, passed around as uintptr_t), C enums are int,
// cudnnStatus_t is an int enum. Each declaration names the header it
// mirrors: cuDNN 9 first (cudnn_graph.h, cudnn_ops.h, cudnn_cnn.h), then
// cuDNN 8 (cudnn_ops_infer.h, cudnn_cnn_infer.h, cudnn_cnn_train.h); the
// two agree on every signature and enum value used here.

// size_t cudnnGetVersion(void);                       cudnn_graph.h / cudnn_ops_infer.h
typedef size_t (*dnn_get_version_fn)(void);
// const char *cudnnGetErrorString(cudnnStatus_t);      cudnn_graph.h / cudnn_ops_infer.h
typedef const char* (*dnn_error_string_fn)(int);
// cudnnStatus_t cudnnOpsVersionCheck(void), cudnnCnnVersionCheck(void)  cudnn_ops.h, cudnn_cnn.h
// cudnnStatus_t cudnnOpsInferVersionCheck(void), cudnnCnnInferVersionCheck(void),
//               cudnnCnnTrainVersionCheck(void)       cudnn_ops_infer.h, cudnn_cnn_infer.h, cudnn_cnn_train.h
typedef int (*dnn_version_check_fn)(void);
// cudnnStatus_t cudnnCreate(cudnnHandle_t*);           cudnn_graph.h / cudnn_ops_infer.h
// cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t*);       cudnn_ops.h / cudnn_ops_infer.h
// cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t*);       cudnn_ops.h / cudnn_ops_infer.h
// cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t*); cudnn_cnn.h / cudnn_cnn_infer.h
typedef int (*dnn_create_fn)(void**);
// cudnnStatus_t cudnnDestroy(cudnnHandle_t), cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t),
// cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t),
// cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t)   same headers as their Create
typedef int (*dnn_destroy_fn)(void*);
// cudnnStatus_t cudnnSetStream(cudnnHandle_t, cudaStream_t);   cudnn_graph.h / cudnn_ops_infer.h
typedef int (*dnn_set_stream_fn)(void*, void*);
// cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t, cudnnTensorFormat_t format,
//     cudnnDataType_t dataType, int n, int c, int h, int w);   cudnn_ops.h / cudnn_ops_infer.h
typedef int (*dnn_set_tensor4d_fn)(void*, int, int, int, int, int, int);
// cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t, cudnnDataType_t dataType,
//     cudnnTensorFormat_t format, int k, int c, int h, int w);   cudnn_ops.h / cudnn_ops_infer.h
typedef int (*dnn_set_filter4d_fn)(void*, int, int, int, int, int, int);
// cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t, int pad_h, int pad_w,
//     int u, int v, int dilation_h, int dilation_w, cudnnConvolutionMode_t mode,
//     cudnnDataType_t computeType);   cudnn_cnn.h / cudnn_cnn_infer.h
typedef int (*dnn_set_conv2d_fn)(void*, int, int, int, int, int, int, int, int);
// cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t, cudnnMathType_t);
//     cudnn_cnn.h / cudnn_cnn_infer.h
typedef int (*dnn_set_conv_math_fn)(void*, int);
// cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t,
//     const cudnnTensorDescriptor_t inputTensorDesc, const cudnnFilterDescriptor_t filterDesc,
//     int *n, int *c, int *h, int *w);   cudnn_cnn.h / cudnn_cnn_infer.h
typedef int (*dnn_conv_output_dim_fn)(void*, void*, void*, int*, int*, int*, int*);
// cudnnStatus_t cudnnGetConvolutionForwardAlgorithmMaxCount(cudnnHandle_t, int *count), and the
// BackwardData / BackwardFilter twins   cudnn_cnn.h / cudnn_cnn_infer.h, cudnn_cnn_train.h
typedef int (*dnn_max_count_fn)(void*, int*);

// cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionBwdDataAlgoPerf_t and
// cudnnConvolutionBwdFilterAlgoPerf_t share this layout: cudnn_cnn.h (9);
// cudnn_cnn_infer.h and cudnn_cnn_train.h (8).
typedef struct {
	int algo;        // cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t
	int status;      // cudnnStatus_t
	float time;      // milliseconds
	size_t memory;   // workspace bytes
	int determinism; // cudnnDeterminism_t
	int mathType;    // cudnnMathType_t
	int reserved[3];
} iterbin_dnn_perf;

// cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(cudnnHandle_t, const cudnnTensorDescriptor_t xDesc,
//     const void *x, const cudnnFilterDescriptor_t wDesc, const void *w,
//     const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t yDesc, void *y,
//     const int requestedAlgoCount, int *returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t *perfResults,
//     void *workSpace, size_t workSpaceSizeInBytes);   cudnn_cnn.h / cudnn_cnn_infer.h
// cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithmEx(cudnnHandle_t, const cudnnFilterDescriptor_t wDesc,
//     const void *w, const cudnnTensorDescriptor_t dyDesc, const void *dy,
//     const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t dxDesc, void *dx,
//     const int requestedAlgoCount, int *returnedAlgoCount, cudnnConvolutionBwdDataAlgoPerf_t *perfResults,
//     void *workSpace, size_t workSpaceSizeInBytes);   cudnn_cnn.h / cudnn_cnn_infer.h
// cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithmEx(cudnnHandle_t, const cudnnTensorDescriptor_t xDesc,
//     const void *x, const cudnnTensorDescriptor_t dyDesc, const void *y,
//     const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t dwDesc, void *dw,
//     const int requestedAlgoCount, int *returnedAlgoCount, cudnnConvolutionBwdFilterAlgoPerf_t *perfResults,
//     void *workSpace, size_t workSpaceSizeInBytes);   cudnn_cnn.h / cudnn_cnn_train.h
// All three: (handle, in1 desc, in1, in2 desc, in2, conv desc, out desc, out, requested, returned*,
// perf*, workspace, bytes).
typedef int (*dnn_find_fn)(void*, void*, const void*, void*, const void*, void*, void*, void*,
                           int, int*, iterbin_dnn_perf*, void*, size_t);

// cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t, const cudnnTensorDescriptor_t xDesc,
//     const cudnnFilterDescriptor_t wDesc, const cudnnConvolutionDescriptor_t convDesc,
//     const cudnnTensorDescriptor_t yDesc, cudnnConvolutionFwdAlgo_t algo, size_t *sizeInBytes);
//     cudnn_cnn.h / cudnn_cnn_infer.h
// cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t, const cudnnFilterDescriptor_t wDesc,
//     const cudnnTensorDescriptor_t dyDesc, const cudnnConvolutionDescriptor_t convDesc,
//     const cudnnTensorDescriptor_t dxDesc, cudnnConvolutionBwdDataAlgo_t algo, size_t *sizeInBytes);
//     cudnn_cnn.h / cudnn_cnn_infer.h
// cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t, const cudnnTensorDescriptor_t xDesc,
//     const cudnnTensorDescriptor_t dyDesc, const cudnnConvolutionDescriptor_t convDesc,
//     const cudnnFilterDescriptor_t gradDesc, cudnnConvolutionBwdFilterAlgo_t algo, size_t *sizeInBytes);
//     cudnn_cnn.h / cudnn_cnn_train.h
// All three: (handle, the operation's first input descriptor, second input descriptor, convolution
// descriptor, output descriptor, algo, size_t*).
typedef int (*dnn_workspace_fn)(void*, void*, void*, void*, void*, int, size_t*);

// cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t, const void *alpha, const cudnnTensorDescriptor_t xDesc,
//     const void *x, const cudnnFilterDescriptor_t wDesc, const void *w,
//     const cudnnConvolutionDescriptor_t convDesc, cudnnConvolutionFwdAlgo_t algo, void *workSpace,
//     size_t workSpaceSizeInBytes, const void *beta, const cudnnTensorDescriptor_t yDesc, void *y);
//     cudnn_cnn.h / cudnn_cnn_infer.h
// cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t, const void *alpha, const cudnnFilterDescriptor_t wDesc,
//     const void *w, const cudnnTensorDescriptor_t dyDesc, const void *dy,
//     const cudnnConvolutionDescriptor_t convDesc, cudnnConvolutionBwdDataAlgo_t algo, void *workSpace,
//     size_t workSpaceSizeInBytes, const void *beta, const cudnnTensorDescriptor_t dxDesc, void *dx);
//     cudnn_cnn.h / cudnn_cnn_infer.h
// cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t, const void *alpha, const cudnnTensorDescriptor_t xDesc,
//     const void *x, const cudnnTensorDescriptor_t dyDesc, const void *dy,
//     const cudnnConvolutionDescriptor_t convDesc, cudnnConvolutionBwdFilterAlgo_t algo, void *workSpace,
//     size_t workSpaceSizeInBytes, const void *beta, const cudnnFilterDescriptor_t dwDesc, void *dw);
//     cudnn_cnn.h / cudnn_cnn_train.h
// All three: (handle, alpha, in1 desc, in1, in2 desc, in2, conv desc, algo, workspace, bytes, beta,
// out desc, out).
typedef int (*dnn_convolve_fn)(void*, const void*, void*, const void*, void*, const void*, void*, int,
                               void*, size_t, const void*, void*, void*);

static void* iterbin_dnn_dlopen(const char* name) { return dlopen(name, RTLD_NOW | RTLD_LOCAL); }
static const char* iterbin_dnn_dlerror(void) { const char* e = dlerror(); return e ? e : ""; }
static void* iterbin_dnn_dlsym(void* lib, const char* name) { return dlsym(lib, name); }

static size_t iterbin_dnn_get_version(void* fn) { return ((dnn_get_version_fn)fn)(); }
static const char* iterbin_dnn_error_string(void* fn, int status) {
	const char* s = ((dnn_error_string_fn)fn)(status);
	return s ? s : "";
}
static int iterbin_dnn_version_check(void* fn) { return ((dnn_version_check_fn)fn)(); }
static int iterbin_dnn_create(void* fn, uintptr_t* out) {
	void* p = 0;
	int st = ((dnn_create_fn)fn)(&p);
	*out = (uintptr_t)p;
	return st;
}
static int iterbin_dnn_destroy(void* fn, uintptr_t p) { return ((dnn_destroy_fn)fn)((void*)p); }
static int iterbin_dnn_set_stream(void* fn, uintptr_t h, uintptr_t stream) {
	return ((dnn_set_stream_fn)fn)((void*)h, (void*)stream);
}
static int iterbin_dnn_set_tensor4d(void* fn, uintptr_t d, int format, int dtype, int n, int c, int h, int w) {
	return ((dnn_set_tensor4d_fn)fn)((void*)d, format, dtype, n, c, h, w);
}
static int iterbin_dnn_set_filter4d(void* fn, uintptr_t d, int dtype, int format, int k, int c, int h, int w) {
	return ((dnn_set_filter4d_fn)fn)((void*)d, dtype, format, k, c, h, w);
}
static int iterbin_dnn_set_conv2d(void* fn, uintptr_t d, int pad_h, int pad_w, int u, int v,
                                  int dil_h, int dil_w, int mode, int compute) {
	return ((dnn_set_conv2d_fn)fn)((void*)d, pad_h, pad_w, u, v, dil_h, dil_w, mode, compute);
}
static int iterbin_dnn_set_conv_math(void* fn, uintptr_t d, int math) {
	return ((dnn_set_conv_math_fn)fn)((void*)d, math);
}
static int iterbin_dnn_conv_output_dim(void* fn, uintptr_t conv, uintptr_t x, uintptr_t w,
                                       int* n, int* c, int* h, int* wd) {
	return ((dnn_conv_output_dim_fn)fn)((void*)conv, (void*)x, (void*)w, n, c, h, wd);
}
static int iterbin_dnn_max_count(void* fn, uintptr_t h, int* count) {
	return ((dnn_max_count_fn)fn)((void*)h, count);
}
static int iterbin_dnn_find(void* fn, uintptr_t h, uintptr_t in1d, uintptr_t in1, uintptr_t in2d, uintptr_t in2,
                            uintptr_t cd, uintptr_t outd, uintptr_t out, int requested, int* returned,
                            iterbin_dnn_perf* perf, uintptr_t ws, size_t ws_bytes) {
	return ((dnn_find_fn)fn)((void*)h, (void*)in1d, (const void*)in1, (void*)in2d, (const void*)in2, (void*)cd,
	                         (void*)outd, (void*)out, requested, returned, perf, (void*)ws, ws_bytes);
}
static int iterbin_dnn_workspace(void* fn, uintptr_t h, uintptr_t in1, uintptr_t in2, uintptr_t cd, uintptr_t out,
                                 int algo, size_t* bytes) {
	return ((dnn_workspace_fn)fn)((void*)h, (void*)in1, (void*)in2, (void*)cd, (void*)out, algo, bytes);
}
static int iterbin_dnn_convolve(void* fn, uintptr_t h, float alpha, uintptr_t in1d, uintptr_t in1, uintptr_t in2d,
                                uintptr_t in2, uintptr_t cd, int algo, uintptr_t ws, size_t ws_bytes, float beta,
                                uintptr_t outd, uintptr_t out) {
	return ((dnn_convolve_fn)fn)((void*)h, &alpha, (void*)in1d, (const void*)in1, (void*)in2d, (const void*)in2,
	                             (void*)cd, algo, (void*)ws, ws_bytes, &beta, (void*)outd, (void*)out);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"iterbin/backend"
)

// cudnnLibraries are tried in order: cuDNN 9, then 8.
var cudnnLibraries = [...]string{"libcudnn.so.9", "libcudnn.so.8"}

// cuDNN enum values, from cudnn_graph.h, cudnn_ops.h and cudnn_cnn.h (9)
// and cudnn_ops_infer.h and cudnn_cnn_infer.h (8), which agree on them.
// Status codes other than success differ between 8 and 9: see
// unsupportedStatus.
const (
	dnnStatusSuccess    = 0 // CUDNN_STATUS_SUCCESS
	dnnTensorNCHW       = 0 // CUDNN_TENSOR_NCHW
	dnnTensorNHWC       = 1 // CUDNN_TENSOR_NHWC
	dnnCrossCorrelation = 1 // CUDNN_CROSS_CORRELATION
	dnnDeterministic    = 1 // CUDNN_DETERMINISTIC

	// cudnnMathType_t. DEFAULT permits TF32 tensor cores for float data on
	// Ampere and newer (so strict fp32 uses FMA instead), TENSOR_OP permits
	// tensor cores without converting the data type (float data then runs
	// as TF32), ALLOW_CONVERSION may also convert float data to FP16 (never
	// used), FMA restricts to FMA kernels: true fp32.
	dnnDefaultMath                 = 0 // CUDNN_DEFAULT_MATH
	dnnTensorOpMath                = 1 // CUDNN_TENSOR_OP_MATH
	dnnTensorOpMathAllowConversion = 2 // CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION
	dnnFMAMath                     = 3 // CUDNN_FMA_MATH

	// Algorithm enum sizes: CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
	// CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT.
	dnnFwdAlgoCount       = 8
	dnnBwdDataAlgoCount   = 6
	dnnBwdFilterAlgoCount = 7
)

// dnnDataType is a cudnnDataType_t (cudnn_graph.h / cudnn_ops_infer.h).
// Convolutions run on float data, or on bfloat16 or half copies at
// precision bf16 or fp16 (cudnn_conv.go, half.go): cuDNN's 16-bit
// configurations have x, w and y all 16-bit with a float compute type,
// the ones PyTorch's cuDNN descriptors use (aten/src/ATen/cudnn/
// Descriptors.h).
type dnnDataType int

const (
	dnnFloat    dnnDataType = 0 // CUDNN_DATA_FLOAT
	dnnHalf     dnnDataType = 2 // CUDNN_DATA_HALF
	dnnBFloat16 dnnDataType = 9 // CUDNN_DATA_BFLOAT16
)

func (t dnnDataType) String() string {
	switch t {
	case dnnFloat:
		return "float32"
	case dnnHalf:
		return "float16"
	case dnnBFloat16:
		return "bfloat16"
	}
	return fmt.Sprintf("cudnnDataType %d", int(t))
}

// computeType is the convolution descriptor's accumulation type: float for
// every storage type used here (fp16 and bf16 accumulate in fp32).
func (t dnnDataType) computeType() dnnDataType { return dnnFloat }

// cudnnSymbols are the entry points looked up in the library.
type cudnnSymbols struct {
	getVersion, errorString, create, destroy, setStream unsafe.Pointer

	createTensor, setTensor4d, destroyTensor unsafe.Pointer
	createFilter, setFilter4d, destroyFilter unsafe.Pointer
	createConv, setConv2d, setConvMath       unsafe.Pointer
	destroyConv, convOutputDim               unsafe.Pointer

	// dir holds each direction's algorithm count, search, workspace size
	// and convolution call.
	dir [dnnDirections]struct{ maxCount, find, workspace, run unsafe.Pointer }
}

// dnnDirection is one of the three convolution computations. Each reads
// two operands and writes one (in1, in2 → out), in the argument order of
// its cuDNN calls:
//
//	forward          x,  w  → y
//	backward data    w,  dy → dx
//	backward filter  x,  dy → dw
type dnnDirection int

const (
	dnnForward dnnDirection = iota
	dnnBackwardData
	dnnBackwardFilter
	dnnDirections
)

// dnnCalls names each direction's cuDNN functions: algorithm count,
// search, workspace size, convolution.
var dnnCalls = [dnnDirections][4]string{
	dnnForward: {"cudnnGetConvolutionForwardAlgorithmMaxCount", "cudnnFindConvolutionForwardAlgorithmEx",
		"cudnnGetConvolutionForwardWorkspaceSize", "cudnnConvolutionForward"},
	dnnBackwardData: {"cudnnGetConvolutionBackwardDataAlgorithmMaxCount", "cudnnFindConvolutionBackwardDataAlgorithmEx",
		"cudnnGetConvolutionBackwardDataWorkspaceSize", "cudnnConvolutionBackwardData"},
	dnnBackwardFilter: {"cudnnGetConvolutionBackwardFilterAlgorithmMaxCount", "cudnnFindConvolutionBackwardFilterAlgorithmEx",
		"cudnnGetConvolutionBackwardFilterWorkspaceSize", "cudnnConvolutionBackwardFilter"},
}

// dnnAlgoCounts are the sizes of the algorithm enums, per direction.
var dnnAlgoCounts = [dnnDirections]int{dnnFwdAlgoCount, dnnBwdDataAlgoCount, dnnBwdFilterAlgoCount}

// cudnn is a cuDNN handle bound to the backend's stream, the entry points
// it calls and the convolution plans made so far (cudnn_conv.go).
type cudnn struct {
	lib     unsafe.Pointer // never dlclosed: see cublasLibraries
	library string         // the file that was loaded, e.g. libcudnn.so.9
	version string         // e.g. 9.1.0
	major   int            // e.g. 9: which status numbering it uses
	handle  C.uintptr_t
	tf32    bool
	fn      cudnnSymbols
	convs   map[dnnConvKey]*dnnConv
	// fallbacks counts the convolution directions cuDNN does not support
	// (dnnUnsupported), which run on the im2col path; firstFallback says
	// why the first does.
	fallbacks     int
	firstFallback string
	// nchwFallbacks counts the convolution directions cuDNN does not
	// support in NHWC with channels-last on, which run in NCHW instead;
	// firstNCHWFallback says why the first does.
	nchwFallbacks     int
	firstNCHWFallback string
	// im2colFaster counts the convolution directions the im2col path
	// timed faster on (convolve).
	im2colFaster int
	// accumulated counts the convolutions that added their output to
	// their output tensor's values in place (beta = 1, convolveAdd).
	accumulated int
}

// noteFallback records n convolution directions cuDNN refused: refused
// in NHWC (nhwc), they run in NCHW; in NCHW, on im2col.
func (d *cudnn) noteFallback(nhwc bool, n int, why string) {
	count, first := &d.fallbacks, &d.firstFallback
	if nhwc {
		count, first = &d.nchwFallbacks, &d.firstNCHWFallback
	}
	if *count == 0 {
		*first = why
	}
	*count += n
}

// openCudnn loads the newest cuDNN found, checks that its sub-libraries
// load, and creates a handle bound to stream. Any error means the backend
// keeps its im2col+cuBLAS convolutions; the error says why.
func openCudnn(stream uintptr, tf32 bool) (*cudnn, error) {
	var tried []string
	d := &cudnn{tf32: tf32, convs: map[dnnConvKey]*dnnConv{}}
	for _, name := range cudnnLibraries {
		cname := C.CString(name)
		lib := C.iterbin_dnn_dlopen(cname)
		C.free(unsafe.Pointer(cname))
		if lib != nil {
			d.lib, d.library = lib, name
			break
		}
		tried = append(tried, C.GoString(C.iterbin_dnn_dlerror()))
	}
	if d.lib == nil {
		return nil, fmt.Errorf("%s", strings.Join(tried, "; "))
	}
	f := &d.fn
	type symbolRef struct {
		dst  *unsafe.Pointer
		name string
	}
	symbols := []symbolRef{
		{&f.getVersion, "cudnnGetVersion"}, {&f.errorString, "cudnnGetErrorString"},
		{&f.create, "cudnnCreate"}, {&f.destroy, "cudnnDestroy"}, {&f.setStream, "cudnnSetStream"},
		{&f.createTensor, "cudnnCreateTensorDescriptor"}, {&f.setTensor4d, "cudnnSetTensor4dDescriptor"},
		{&f.destroyTensor, "cudnnDestroyTensorDescriptor"},
		{&f.createFilter, "cudnnCreateFilterDescriptor"}, {&f.setFilter4d, "cudnnSetFilter4dDescriptor"},
		{&f.destroyFilter, "cudnnDestroyFilterDescriptor"},
		{&f.createConv, "cudnnCreateConvolutionDescriptor"}, {&f.setConv2d, "cudnnSetConvolution2dDescriptor"},
		{&f.setConvMath, "cudnnSetConvolutionMathType"}, {&f.destroyConv, "cudnnDestroyConvolutionDescriptor"},
		{&f.convOutputDim, "cudnnGetConvolution2dForwardOutputDim"},
	}
	for dir := range f.dir {
		sym := &f.dir[dir]
		for i, dst := range []*unsafe.Pointer{&sym.maxCount, &sym.find, &sym.workspace, &sym.run} {
			symbols = append(symbols, symbolRef{dst, dnnCalls[dir][i]})
		}
	}
	for _, s := range symbols {
		if *s.dst = d.symbol(s.name); *s.dst == nil {
			return nil, fmt.Errorf("%s has no %s", d.library, s.name)
		}
	}
	d.major, d.version = cudnnVersion(uint64(C.iterbin_dnn_get_version(f.getVersion)))
	// The shim loads its sub-libraries (ops, cnn) lazily; their version
	// checks load them now, so a missing or mismatched one falls back here
	// rather than failing the first convolution. Where the shim does not
	// export a check, the first call into that sub-library reports instead.
	for _, check := range []string{"cudnnOpsVersionCheck", "cudnnCnnVersionCheck", // 9
		"cudnnOpsInferVersionCheck", "cudnnCnnInferVersionCheck", "cudnnCnnTrainVersionCheck"} { // 8
		if fn := d.symbol(check); fn != nil {
			if err := d.check(check, C.iterbin_dnn_version_check(fn)); err != nil {
				return nil, fmt.Errorf("%s %s: %w", d.library, d.version, err)
			}
		}
	}
	if err := d.check("cudnnCreate", C.iterbin_dnn_create(f.create, &d.handle)); err != nil {
		return nil, fmt.Errorf("%s %s: %w", d.library, d.version, err)
	}
	if err := d.check("cudnnSetStream", C.iterbin_dnn_set_stream(f.setStream, d.handle, C.uintptr_t(stream))); err != nil {
		d.close()
		return nil, fmt.Errorf("%s %s: %w", d.library, d.version, err)
	}
	return d, nil
}

// symbol looks name up in the library; nil if it is not there.
func (d *cudnn) symbol(name string) unsafe.Pointer {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	return C.iterbin_dnn_dlsym(d.lib, cname)
}

// cudnnVersion decodes cudnnGetVersion into the major version and
// major.minor.patch: CUDNN_MAJOR·10000 + CUDNN_MINOR·100 +
// CUDNN_PATCHLEVEL from cuDNN 9 on, CUDNN_MAJOR·1000 + CUDNN_MINOR·100 +
// CUDNN_PATCHLEVEL before (cudnn_version.h of each).
func cudnnVersion(v uint64) (major int, version string) {
	if v >= 10000 {
		return int(v / 10000), fmt.Sprintf("%d.%d.%d", v/10000, v/100%100, v%100)
	}
	return int(v / 1000), fmt.Sprintf("%d.%d.%d", v/1000, v/100%10, v%100)
}

// dnnError is a cuDNN call that returned a status other than success.
type dnnError struct {
	call   string
	status int
	text   string // cudnnGetErrorString's description
	// unsupported says the status means cuDNN does not support what it
	// was asked (dnnUnsupportedStatus), not that something failed.
	unsupported bool
}

func (e *dnnError) Error() string {
	if e.status == dnnStatusSuccess { // dnnChoose: no algorithm, none failed
		return e.call + ": " + e.text
	}
	return fmt.Sprintf("%s: %s (status %d)", e.call, e.text, e.status)
}

// dnnUnsupported says whether err means that cuDNN cannot run a
// convolution as asked (a parameter or configuration it does not take),
// as opposed to a failure (out of memory, an execution or internal error,
// an earlier CUDA error): the convolution may then run on im2col instead.
func dnnUnsupported(err error) bool {
	var e *dnnError
	return errors.As(err, &e) && e.unsupported
}

// unsupportedStatus says whether st is a "bad parameter" or "not
// supported" status of the loaded cuDNN. The numbers differ by version:
//
//   - cuDNN 9 (cudnn_graph.h) groups statuses by thousands
//     (CUDNN_STATUS_CATEGORY(code) = code / 1000 * 1000):
//     CUDNN_STATUS_BAD_PARAM = 2000 with its sub-codes (…_NULL_POINTER =
//     2002, …, and the deprecated CUDNN_STATUS_INVALID_VALUE = 2001) and
//     CUDNN_STATUS_NOT_SUPPORTED = 3000 with its sub-codes (…_SHAPE =
//     3002, …_DATA_TYPE = 3003, …_ARCH_MISMATCH = 3007, …). Out of memory
//     (CUDNN_STATUS_INTERNAL_ERROR_*_ALLOCATION_FAILED, 4003 and 4004),
//     internal errors (4000s) and execution failures (5000s) are not in
//     either.
//   - cuDNN 8 (cudnn_ops_infer.h) numbers them 0 to 14:
//     CUDNN_STATUS_BAD_PARAM = 3 and CUDNN_STATUS_NOT_SUPPORTED = 9, plus
//     the ones cuDNN 9 files under those two categories (its deprecated
//     aliases say so): CUDNN_STATUS_INVALID_VALUE = 5,
//     CUDNN_STATUS_ARCH_MISMATCH = 6 and
//     CUDNN_STATUS_RUNTIME_PREREQUISITE_MISSING = 11. ALLOC_FAILED (2),
//     INTERNAL_ERROR (4), MAPPING_ERROR (7) and EXECUTION_FAILED (8) are
//     failures.
func (d *cudnn) unsupportedStatus(st int) bool {
	if d.major >= 9 {
		category := st / 1000 * 1000
		return category == 2000 || category == 3000
	}
	switch st {
	case 3, 5, 6, 9, 11:
		return true
	}
	return false
}

// check turns a cuDNN status into a *dnnError naming the call and the
// status's own description; nil for success.
func (d *cudnn) check(call string, st C.int) error {
	if st == dnnStatusSuccess {
		return nil
	}
	return &dnnError{call: call, status: int(st), text: d.statusString(int(st)), unsupported: d.unsupportedStatus(int(st))}
}

// close destroys every descriptor and the handle; the backend's context
// must be current (release makes it so) and the stream idle (Close
// synchronizes first). The library stays loaded: see cublasLibraries.
func (d *cudnn) close() {
	for key, c := range d.convs {
		d.destroyConv(c)
		delete(d.convs, key)
	}
	if d.handle != 0 {
		C.iterbin_dnn_destroy(d.fn.destroy, d.handle)
		d.handle = 0
	}
}

// mathType is the math type a convolution descriptor starts with (and,
// for strict fp32, keeps): CUDNN_FMA_MATH for float data unless TF32 is
// allowed, since CUDNN_DEFAULT_MATH would let cuDNN 8+ run float
// convolutions as TF32 on Ampere and newer; otherwise
// CUDNN_TENSOR_OP_MATH, which permits tensor cores (TF32 for float data)
// without down-converting float data to FP16, as
// CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION may.
func (d *cudnn) mathType(dt dnnDataType) int {
	if dt == dnnFloat && !d.tf32 {
		return dnnFMAMath
	}
	return dnnTensorOpMath
}

// allowsMath says whether an algorithm timed with math type m may be
// used for data type dt: strict fp32 takes FMA (or default math, which
// cuDNN may report for kernels that use no tensor cores) only; no data
// (float, or bf16 at precision bf16) is ever down-converted to FP16.
// (Half data is FP16 already.)
func (d *cudnn) allowsMath(dt dnnDataType, m int) bool {
	if dt == dnnFloat && !d.tf32 {
		return m == dnnFMAMath || m == dnnDefaultMath
	}
	return m != dnnTensorOpMathAllowConversion
}

// dnnShapeOK says whether cuDNN's 4-d descriptors (int dimensions,
// int-indexed tensors) can describe s; larger convolutions keep the
// chunked im2col path.
func dnnShapeOK(s backend.ConvShape) bool {
	const limit = 1<<31 - 1
	return s.N >= 1 && s.N*s.C*s.H*s.W <= limit && s.N*s.OC*s.OutH()*s.OutW() <= limit && s.OC*s.C*s.KH*s.KW <= limit
}

// statusString is cuDNN's description of a status.
func (d *cudnn) statusString(st int) string {
	return C.GoString(C.iterbin_dnn_error_string(d.fn.errorString, C.int(st)))
}

// newDescriptor makes a descriptor with create, a cudnnCreate*Descriptor
// named call.
func (d *cudnn) newDescriptor(create unsafe.Pointer, call string) (uintptr, error) {
	var p C.uintptr_t
	if err := d.check(call, C.iterbin_dnn_create(create, &p)); err != nil {
		return 0, err
	}
	return uintptr(p), nil
}

// newConv makes the descriptors of one convolution: the x and y tensors
// (NCHW, or NHWC where key.nhwc says so), the w filter (OC×C×KH×KW, or
// OC×KH×KW×C) and, per direction, a convolution
// descriptor (cross-correlation, zero padding, no dilation), each of which
// later takes the math type its algorithm was timed with. It checks that
// cuDNN's output size is the backend's.
func (d *cudnn) newConv(key dnnConvKey) (c *dnnConv, err error) {
	s, dt := key.shape, key.dtype
	format := C.int(dnnTensorNCHW)
	if key.nhwc {
		format = dnnTensorNHWC
	}
	c = &dnnConv{key: key}
	defer func() {
		if err != nil {
			d.destroyConv(c)
			c = nil
		}
	}()
	tensor := func(dst *uintptr, name string, n, ch, h, w int) error {
		var err error
		if *dst, err = d.newDescriptor(d.fn.createTensor, "cudnnCreateTensorDescriptor"); err != nil {
			return err
		}
		return d.check("cudnnSetTensor4dDescriptor("+name+")", C.iterbin_dnn_set_tensor4d(d.fn.setTensor4d, C.uintptr_t(*dst),
			format, C.int(dt), C.int(n), C.int(ch), C.int(h), C.int(w)))
	}
	if err = tensor(&c.x, "x", s.N, s.C, s.H, s.W); err != nil {
		return
	}
	if err = tensor(&c.y, "y", s.N, s.OC, s.OutH(), s.OutW()); err != nil {
		return
	}
	if c.w, err = d.newDescriptor(d.fn.createFilter, "cudnnCreateFilterDescriptor"); err != nil {
		return
	}
	if err = d.check("cudnnSetFilter4dDescriptor", C.iterbin_dnn_set_filter4d(d.fn.setFilter4d, C.uintptr_t(c.w),
		C.int(dt), format, C.int(s.OC), C.int(s.C), C.int(s.KH), C.int(s.KW))); err != nil {
		return
	}
	for dir := range c.plans {
		p := &c.plans[dir]
		if p.conv, err = d.newDescriptor(d.fn.createConv, "cudnnCreateConvolutionDescriptor"); err != nil {
			return
		}
		if err = d.check("cudnnSetConvolution2dDescriptor", C.iterbin_dnn_set_conv2d(d.fn.setConv2d, C.uintptr_t(p.conv),
			C.int(s.Pad), C.int(s.Pad), C.int(s.Stride), C.int(s.Stride), 1, 1,
			dnnCrossCorrelation, C.int(dt.computeType()))); err != nil {
			return
		}
		if err = d.setMathType(p.conv, d.mathType(dt)); err != nil {
			return
		}
	}
	var n, ch, h, w C.int
	if err = d.check("cudnnGetConvolution2dForwardOutputDim", C.iterbin_dnn_conv_output_dim(d.fn.convOutputDim,
		C.uintptr_t(c.plans[dnnForward].conv), C.uintptr_t(c.x), C.uintptr_t(c.w), &n, &ch, &h, &w)); err != nil {
		return
	}
	if int(n) != s.N || int(ch) != s.OC || int(h) != s.OutH() || int(w) != s.OutW() {
		err = fmt.Errorf("cuDNN's output is %d×%d×%d×%d, the backend's %d×%d×%d×%d", n, ch, h, w, s.N, s.OC, s.OutH(), s.OutW())
	}
	return
}

// setMathType sets a convolution descriptor's cudnnMathType_t.
func (d *cudnn) setMathType(conv uintptr, m int) error {
	return d.check(fmt.Sprintf("cudnnSetConvolutionMathType(%d)", m), C.iterbin_dnn_set_conv_math(d.fn.setConvMath, C.uintptr_t(conv), C.int(m)))
}

// destroyConv destroys the descriptors newConv made.
func (d *cudnn) destroyConv(c *dnnConv) {
	for _, t := range []*uintptr{&c.x, &c.y} {
		if *t != 0 {
			C.iterbin_dnn_destroy(d.fn.destroyTensor, C.uintptr_t(*t))
			*t = 0
		}
	}
	if c.w != 0 {
		C.iterbin_dnn_destroy(d.fn.destroyFilter, C.uintptr_t(c.w))
		c.w = 0
	}
	for dir := range c.plans {
		if p := &c.plans[dir]; p.conv != 0 {
			C.iterbin_dnn_destroy(d.fn.destroyConv, C.uintptr_t(p.conv))
			p.conv = 0
		}
	}
}

// operands are the descriptors of a direction's inputs and output, in the
// order its cuDNN calls take them.
func (c *dnnConv) operands(dir dnnDirection) (in1, in2, out C.uintptr_t) {
	switch dir {
	case dnnForward:
		return C.uintptr_t(c.x), C.uintptr_t(c.w), C.uintptr_t(c.y)
	case dnnBackwardData:
		return C.uintptr_t(c.w), C.uintptr_t(c.y), C.uintptr_t(c.x)
	}
	return C.uintptr_t(c.x), C.uintptr_t(c.y), C.uintptr_t(c.w)
}

// workspaceBytes is the workspace algo needs for direction dir of c; an
// error where the algorithm does not support the convolution.
func (d *cudnn) workspaceBytes(dir dnnDirection, c *dnnConv, algo int) (int, error) {
	in1, in2, out := c.operands(dir)
	var n C.size_t
	st := C.iterbin_dnn_workspace(d.fn.dir[dir].workspace, d.handle, in1, in2, C.uintptr_t(c.plans[dir].conv), out, C.int(algo), &n)
	if err := d.check(dnnCalls[dir][2], st); err != nil {
		return 0, err
	}
	return int(n), nil
}

// find times every algorithm of direction dir on the given buffers (out
// is overwritten) with a workspace of wsBytes at ws. It blocks until done.
func (d *cudnn) find(dir dnnDirection, c *dnnConv, in1, in2, out, ws uintptr, wsBytes int) ([]dnnResult, error) {
	var count C.int
	if err := d.check(dnnCalls[dir][0], C.iterbin_dnn_max_count(d.fn.dir[dir].maxCount, d.handle, &count)); err != nil {
		return nil, err
	}
	perf := make([]C.iterbin_dnn_perf, max(int(count), 1))
	var got C.int
	in1d, in2d, outd := c.operands(dir)
	st := C.iterbin_dnn_find(d.fn.dir[dir].find, d.handle, in1d, C.uintptr_t(in1), in2d, C.uintptr_t(in2),
		C.uintptr_t(c.plans[dir].conv), outd, C.uintptr_t(out), C.int(len(perf)), &got, &perf[0],
		C.uintptr_t(ws), C.size_t(wsBytes))
	if err := d.check(dnnCalls[dir][1], st); err != nil {
		return nil, err
	}
	results := make([]dnnResult, min(int(got), len(perf)))
	for i := range results {
		p := perf[i]
		results[i] = dnnResult{algo: int(p.algo), status: int(p.status), ms: float32(p.time), workspace: int(p.memory),
			deterministic: p.determinism == dnnDeterministic, mathType: int(p.mathType)}
	}
	return results, nil
}

// convolve runs direction dir of c with its chosen algorithm: out =
// alpha·op(in1, in2) + beta·out.
func (d *cudnn) convolve(dir dnnDirection, c *dnnConv, alpha, beta float32, in1, in2, out, ws uintptr) error {
	p := &c.plans[dir]
	in1d, in2d, outd := c.operands(dir)
	st := C.iterbin_dnn_convolve(d.fn.dir[dir].run, d.handle, C.float(alpha), in1d, C.uintptr_t(in1), in2d, C.uintptr_t(in2),
		C.uintptr_t(p.conv), C.int(p.algo), C.uintptr_t(ws), C.size_t(p.workspace), C.float(beta), outd, C.uintptr_t(out))
	return d.check(dnnCalls[dir][3], st)
}
