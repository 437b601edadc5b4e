//go:build cuda

package cuda

/*
#include <pthread.h>
#include <stdint.h>

static uintptr_t iterbin_thread(void) { return (uintptr_t)pthread_self(); }
static int iterbin_on_thread(uintptr_t t) { return pthread_equal((pthread_t)t, pthread_self()); }
*/
import "C"

import (
	"embed"
	"errors"
	"fmt"
	"math"
	"path"
	"runtime"
	"strings"
	"unsafe"

	"gorgonia.org/cu"

	"iterbin/backend"
)

//go:embed kernels/*.ptx
var ptxFiles embed.FS

// Built says whether this build has the CUDA backend.
const Built = true

const blockSize = 256

// maxLaunchN is the most elements launchN runs a kernel over: the kernels
// index with 32-bit ints, and a grid-stride loop's last index may pass n
// by up to a grid's worth of threads (65535 blocks of blockSize).
const maxLaunchN = math.MaxInt32 - blockSize*65535

// Backend is backend.Backend on one NVIDIA GPU.
type Backend struct {
	ordinal int
	name    string
	device  cu.Device
	ctx     cu.CUContext
	stream  cu.Stream
	// cudnnOnly is Options.CuDNNOnly; timing are the events convolve
	// times the two convolution paths with.
	cudnnOnly bool
	timing    [2]cu.Event
	// spans are the profiler's timing marks (spans.go).
	spans spanMarks
	// copyStream carries large uploads, so that they overlap the compute
	// stream's work (staging.go).
	copyStream cu.Stream
	modules    []cu.Module
	fns        map[string]cu.Function
	blas       *cublas
	// dnn runs the convolutions when cuDNN loaded (nil: im2col+cuBLAS).
	dnn *cudnn
	err error
	// precision is the checked Options.Precision; half is its 16-bit
	// format at bf16 and fp16 (half.go).
	precision string
	half      halfFormat
	// lossScale is the loss scaler's state at precision fp16
	// (lossscale.go); nil otherwise.
	lossScale *tensor

	// workspace holds im2col columns or cuDNN's workspace, grown as
	// needed.
	workspace     cu.DevicePtr
	workspaceSize int
	// halves holds the 16-bit copies of GEMM and convolution operands at
	// precision bf16 and fp16 (half.go), grown as needed; halvesSize is in
	// bytes.
	halves     cu.DevicePtr
	halvesSize int
	// bnPartials holds batch norm's per-block partial sums (double2,
	// batchnorm.cu), grown as needed.
	bnPartials     cu.DevicePtr
	bnPartialsSize int
	// channelsLast says convolutions store their activations NHWC
	// (Options.Layout, layout.go); layoutScratch is where tensors are
	// transposed between orders (in floats), grown as needed.
	channelsLast      bool
	layoutScratch     cu.DevicePtr
	layoutScratchSize int
	// storage is the 16-bit format channels-last activations are stored
	// in (16-bit storage, layout.go); "" for float32.
	storage halfFormat
	// gradScratch holds Conv2DBackwardDataAdd's input gradient before it
	// is added (backend.FusedResidual), grown as needed.
	gradScratch tensor
	// badLabel is set by the NLL kernel when a label is not a class.
	badLabel cu.DevicePtr
	staging  staging
	// async are DownloadAsync's host slots (staging.go).
	async [2]asyncSlot
	// locked says New locked the OS thread, thread (a pthread_t), which
	// Close unlocks when it runs there.
	locked bool
	thread C.uintptr_t
	// params is the arena kernel arguments are written to (8 bytes each).
	params [24]uint64
	ptrs   [24]unsafe.Pointer
}

// tensor is a device buffer of n float32s; lay is the order its first
// elements are in (layout.go).
type tensor struct {
	ptr   cu.DevicePtr
	n     int
	owner *Backend
	freed bool
	lay   layout
}

func (t *tensor) Len() int { return t.n }

var _ backend.Backend = (*Backend)(nil)

// New creates a context on device ordinal, current on the calling
// goroutine's OS thread (locked until Close), a stream, the kernels, a
// cuBLAS handle and, where cuDNN loads (and opts.NoCuDNN is not set), a
// cuDNN handle for the convolutions. Name says which precision and
// convolution path are active and, without cuDNN, why. An unknown
// opts.Precision is an error.
func New(ordinal int, opts Options) (backend.Backend, error) {
	if _, err := opts.precision(); err != nil {
		return nil, err
	}
	if _, err := opts.layout(); err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	b, err := open(ordinal, opts)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	b.locked, b.thread = true, C.iterbin_thread()
	return b, nil
}

func open(ordinal int, opts Options) (*Backend, error) {
	precision, err := opts.precision()
	if err != nil {
		return nil, err
	}
	layoutOpt, err := opts.layout()
	if err != nil {
		return nil, err
	}
	n, err := cu.NumDevices()
	if err != nil {
		return nil, fmt.Errorf("cuda: cuDeviceGetCount: %v", err)
	}
	if ordinal < 0 || ordinal >= n {
		return nil, fmt.Errorf("cuda: device cuda:%d does not exist; this machine has %d CUDA devices", ordinal, n)
	}
	b := &Backend{ordinal: ordinal, fns: map[string]cu.Function{}, precision: precision, cudnnOnly: opts.CuDNNOnly}
	if precision == BF16 || precision == FP16 {
		b.half = halfFormat(precision)
	}
	if b.device, err = cu.GetDevice(ordinal); err != nil {
		return nil, fmt.Errorf("cuda: cuDeviceGet(%d): %v", ordinal, err)
	}
	devName, _ := b.device.Name()
	if b.ctx, err = b.device.MakeContext(cu.SchedAuto); err != nil {
		return nil, fmt.Errorf("cuda: cuCtxCreate on %s: %v", devName, err)
	}
	if b.stream, err = cu.MakeStream(cu.NonBlocking); err != nil {
		b.release()
		return nil, fmt.Errorf("cuda: cuStreamCreate: %v", err)
	}
	if b.copyStream, err = cu.MakeStream(cu.NonBlocking); err != nil {
		b.release()
		return nil, fmt.Errorf("cuda: cuStreamCreate: %v", err)
	}
	if err := b.loadKernels(); err != nil {
		b.release()
		return nil, err
	}
	stream := uintptr(unsafe.Pointer(b.stream.C()))
	if b.blas, err = openCublas(stream, precision); err != nil {
		b.release()
		return nil, fmt.Errorf("cuda: %w", err)
	}
	if b.badLabel, err = cu.MemAlloc(4); err != nil {
		b.release()
		return nil, fmt.Errorf("cuda: cuMemAlloc: %v", err)
	}
	if err := cu.MemsetD32Async(b.badLabel, 0, 1, b.stream); err != nil {
		b.release()
		return nil, fmt.Errorf("cuda: cuMemsetD32Async: %v", err)
	}
	if err := b.openLossScale(); err != nil {
		b.release()
		return nil, fmt.Errorf("cuda: the loss scaler: %w", err)
	}
	convolutions := "im2col+cuBLAS convolutions"
	if opts.NoCuDNN {
		convolutions += " (cuDNN off: Options.NoCuDNN)"
	} else if dnn, err := openCudnn(stream, precision == TF32); err != nil {
		convolutions = "no cuDNN: " + convolutions + "; " + err.Error()
	} else {
		b.dnn = dnn
		convolutions = "cuDNN " + dnn.version + " convolutions"
		if !opts.CuDNNOnly {
			convolutions += ", raced against im2col per shape"
		}
	}
	activations := "NCHW activations"
	switch {
	case b.dnn != nil && (layoutOpt == NHWCBF16 || layoutOpt == NHWCFP16 || layoutOpt == LayoutAuto && b.half.on()):
		b.channelsLast, b.storage = true, b.half
		activations = fmt.Sprintf("channels-last (NHWC) %s activations in the convolutional layers", b.half)
	case b.dnn != nil && (layoutOpt == NHWC || layoutOpt == LayoutAuto && precision != FP32):
		b.channelsLast = true
		activations = "channels-last (NHWC) activations in the convolutional layers"
	case layoutOpt == NHWC || layoutOpt == NHWCBF16 || layoutOpt == NHWCFP16:
		activations += fmt.Sprintf(" (layout %s needs cuDNN, which does not run the convolutions)", layoutOpt)
	}
	b.name = fmt.Sprintf("cuda:%d %s (driver API, %s, %s, %s, %s)", ordinal, devName, b.blas.name, b.describePrecision(), convolutions, activations)
	return b, nil
}

// describePrecision says, for Name, how GEMMs and convolutions compute.
func (b *Backend) describePrecision() string {
	switch {
	case b.precision == TF32:
		return "precision tf32: TF32 tensor-core GEMMs and convolutions, fp32 accumulation"
	case b.storage.on():
		return fmt.Sprintf("precision %[1]s: GEMM and convolution inputs in %[1]s, fp32 accumulation; float32 GEMM outputs and filter gradients, convolutions' activations kept in %[1]s%[2]s", b.half, b.describeLossScale())
	case b.half.on() && b.dnn != nil:
		return fmt.Sprintf("precision %[1]s: GEMM and convolution inputs rounded to %[1]s, fp32 accumulation; float32 GEMM outputs, cuDNN's %[1]s convolution outputs widened to float32%[2]s", b.half, b.describeLossScale())
	case b.half.on():
		return fmt.Sprintf("precision %[1]s: GEMM and convolution inputs rounded to %[1]s, fp32 accumulation, float32 outputs%[2]s", b.half, b.describeLossScale())
	}
	return "precision fp32: true fp32 GEMMs and convolutions"
}

// loadKernels JIT-loads every embedded PTX module and looks up its
// kernels (every `.entry` in it).
func (b *Backend) loadKernels() error {
	entries, err := ptxFiles.ReadDir("kernels")
	if err != nil {
		return err
	}
	for _, e := range entries {
		data, err := ptxFiles.ReadFile(path.Join("kernels", e.Name()))
		if err != nil {
			return err
		}
		log := &cu.JITErrorLogBuffer{Buffer: make([]byte, 16384)}
		mod, err := cu.LoadDataEx(string(data), log)
		if err != nil {
			return fmt.Errorf("cuda: loading kernels/%s: %v: %s", e.Name(), err, strings.TrimRight(string(log.Buffer), "\x00"))
		}
		b.modules = append(b.modules, mod)
		for _, name := range ptxEntries(string(data)) {
			fn, err := mod.Function(name)
			if err != nil {
				return fmt.Errorf("cuda: kernels/%s: cuModuleGetFunction(%s): %v", e.Name(), name, err)
			}
			b.fns[name] = fn
		}
	}
	return nil
}

// Name says which device, libraries, precision and paths are active. It
// also counts the convolution directions cuDNN does not support (in
// practice some shapes in bf16), which run on the im2col path, once there
// are any.
func (b *Backend) Name() string {
	name := b.name
	if b.dnn != nil && b.dnn.im2colFaster > 0 {
		name += fmt.Sprintf("; %d convolution directions on im2col, which timed faster", b.dnn.im2colFaster)
	}
	if b.dnn != nil && b.dnn.nchwFallbacks > 0 {
		name += fmt.Sprintf("; %d convolution directions in NCHW, cuDNN does not support them in NHWC (first: %s)", b.dnn.nchwFallbacks, b.dnn.firstNCHWFallback)
	}
	if b.dnn != nil && b.dnn.fallbacks > 0 {
		name += fmt.Sprintf("; %d convolution directions on im2col, cuDNN does not support them (first: %s)", b.dnn.fallbacks, b.dnn.firstFallback)
	}
	return name
}

func (b *Backend) fail(err error) {
	if b.err == nil && err != nil {
		b.err = err
	}
}

// Err returns the first recorded error.
func (b *Backend) Err() error { return b.err }

// Sync waits for the stream and reports the first error, including a bad
// label seen by the loss kernel.
func (b *Backend) Sync() error {
	if err := b.stream.Synchronize(); err != nil {
		b.fail(fmt.Errorf("cuda: cuStreamSynchronize: %v", err))
	}
	if b.err == nil && b.badLabel != 0 {
		var flag uint32
		if err := cu.MemcpyDtoH(unsafe.Pointer(&flag), b.badLabel, 4); err != nil {
			b.fail(fmt.Errorf("cuda: cuMemcpyDtoH: %v", err))
		} else if flag != 0 {
			b.fail(errors.New("backend: NLLLoss: a label is not a class index"))
		}
	}
	return b.err
}

// Close waits for queued work (reporting its errors), frees the backend's
// own memory, the kernels, cuDNN's descriptors and handle, cuBLAS, the
// stream and the context, and unlocks the OS thread New locked. Tensors
// must be freed first; the backend is unusable afterwards.
//
// Close belongs on New's goroutine like every other call, but one from
// another goroutine still releases everything: it holds its own OS thread
// meanwhile and makes the context current there (release). It cannot
// unlock New's goroutine from its thread, which then stays locked until
// that goroutine exits.
func (b *Backend) Close() error {
	if b.ctx == (cu.CUContext{}) {
		return b.err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if b.makeCurrent() {
		b.Sync()
	}
	err := b.err
	b.release()
	// New's lock belongs to New's goroutine, the only one that runs on
	// New's thread while it is locked there.
	if b.locked && C.iterbin_on_thread(b.thread) != 0 {
		runtime.UnlockOSThread()
	}
	b.locked = false
	b.fail(errors.New("cuda: the backend is closed"))
	return err
}

// makeCurrent makes the backend's context current on the calling OS thread
// (which the caller keeps locked): where another context, or none, is
// current there, as on a goroutine other than New's, it pushes it onto
// the thread's context stack, from which destroying the context (release)
// pops it again. false, with the error recorded, where that fails.
func (b *Backend) makeCurrent() bool {
	if cur, err := cu.CurrentContext(); err == nil && cur == b.ctx {
		return true
	}
	if err := cu.PushCurrentCtx(b.ctx); err != nil {
		b.fail(fmt.Errorf("cuda: cuCtxPushCurrent: %v", err))
		return false
	}
	return true
}

// release frees everything the backend owns, in reverse order of creation.
// cuDNN, cuBLAS and the memory, modules and stream are released with the
// backend's context current (makeCurrent): cudnnDestroy and cublasDestroy
// act on the current context's device state. Where it cannot be made
// current they are left to the context's destruction, which frees its
// memory, modules and streams regardless (the libraries' host-side handle
// state leaks).
func (b *Backend) release() {
	if b.ctx == (cu.CUContext{}) {
		return
	}
	if b.makeCurrent() {
		// Uploads queued on the copy stream normally end before work the
		// compute stream (which Close waits for) has queued after them,
		// but not when an upload failed halfway.
		if b.copyStream != (cu.Stream{}) {
			b.copyStream.Synchronize()
		}
		b.freeStaging()
		b.freeAsync()
		for i := range b.timing {
			if b.timing[i] != (cu.Event{}) {
				cu.DestroyEvent(&b.timing[i])
			}
		}
		b.freeSpans()
		if b.dnn != nil {
			b.dnn.close()
		}
		if b.blas != nil {
			b.blas.close()
		}
		if b.lossScale != nil { // Free ignores the backend's own tensor
			cu.MemFree(b.lossScale.ptr)
			b.lossScale.ptr, b.lossScale.freed = 0, true
			b.lossScale = nil
		}
		for _, p := range []*cu.DevicePtr{&b.workspace, &b.halves, &b.bnPartials, &b.layoutScratch, &b.gradScratch.ptr, &b.badLabel} {
			if *p != 0 {
				cu.MemFree(*p)
			}
		}
		for _, m := range b.modules {
			m.Unload()
		}
		if b.stream != (cu.Stream{}) {
			b.stream.Destroy()
		}
		if b.copyStream != (cu.Stream{}) {
			b.copyStream.Destroy()
		}
	}
	b.staging = staging{}
	b.dnn, b.blas = nil, nil
	b.workspace, b.workspaceSize, b.halves, b.halvesSize, b.badLabel = 0, 0, 0, 0, 0
	b.bnPartials, b.bnPartialsSize = 0, 0
	b.layoutScratch, b.layoutScratchSize = 0, 0
	b.gradScratch = tensor{}
	b.modules = nil
	b.stream, b.copyStream = cu.Stream{}, cu.Stream{}
	// Destroying the context also pops it from this thread's context
	// stack, where it is current (cuCtxDestroy).
	b.ctx.Destroy()
	b.ctx = cu.CUContext{}
}

// Alloc returns a zeroed device buffer.
func (b *Backend) Alloc(n int) backend.Tensor {
	t := &tensor{n: n, owner: b}
	if n <= 0 {
		return t
	}
	p, err := cu.MemAlloc(int64(4 * n))
	if err != nil {
		b.fail(fmt.Errorf("cuda: cuMemAlloc(%d floats): %v", n, err))
		return t
	}
	t.ptr = p
	if err := cu.MemsetD32Async(p, 0, int64(n), b.stream); err != nil {
		b.fail(fmt.Errorf("cuda: cuMemsetD32Async: %v", err))
	}
	return t
}

// Free releases a device buffer.
func (b *Backend) Free(t backend.Tensor) {
	ct, ok := t.(*tensor)
	if !ok || ct == nil || ct.freed || ct.owner != b || ct == b.lossScale {
		return
	}
	if ct.ptr != 0 {
		b.stream.Synchronize()
		cu.MemFree(ct.ptr)
	}
	ct.ptr, ct.freed = 0, true
}

// tensorArg returns the tensor behind t after checking it holds need
// elements; nil (with the error recorded) otherwise.
func (b *Backend) tensorArg(op, arg string, t backend.Tensor, need int) *tensor {
	ct, ok := t.(*tensor)
	switch {
	case !ok || ct == nil || ct.owner != b:
		b.fail(fmt.Errorf("backend: %s: tensor %s is not a tensor of this backend (%T)", op, arg, t))
	case ct.freed:
		b.fail(fmt.Errorf("backend: %s: tensor %s was freed", op, arg))
	case need < 0 || ct.n < need:
		b.fail(&backend.SizeError{Op: op, Arg: arg, Need: need, Have: ct.n})
	case need > 0 && ct.ptr == 0:
		b.fail(fmt.Errorf("backend: %s: tensor %s has no device memory", op, arg))
	default:
		return ct
	}
	return nil
}

// dev returns the device pointer behind t after checking it holds need
// elements, its elements in flat order (transposed there if they were
// not); 0 (with the error recorded) where a check fails. Ops that read
// or write activations in NHWC use tensorArg, arrange and output instead.
func (b *Backend) dev(op, arg string, t backend.Tensor, need int) cu.DevicePtr {
	if ct := b.tensorArg(op, arg, t, need); ct != nil {
		return b.arrange(ct, layout{})
	}
	return 0
}

// output returns the device pointer behind t, an op's output, after
// checking it holds need elements, and notes that the op writes them in
// layout lay (noteWrite); 0 (with the error recorded) where a check
// fails.
func (b *Backend) output(op, arg string, t backend.Tensor, need int, lay layout) cu.DevicePtr {
	ct := b.tensorArg(op, arg, t, need)
	if ct == nil {
		return 0
	}
	b.noteWrite(ct, need, lay)
	return ct.ptr
}

// noteWrite notes that an op writes t's first need elements in layout
// lay. What it overwrites is not reordered; elements past need that t
// held NHWC are put back in flat float32 first (prepareWrite), so that
// they keep their values, as the Backend interface requires of what an
// op does not write.
func (b *Backend) noteWrite(t *tensor, need int, lay layout) {
	switch w := prepareWrite(t.lay, need, lay); {
	case w.all:
		b.arrange(t, layout{})
	case w.tail.from.n > 0:
		b.reorderAt(t.ptr, w.tailAt, w.tail)
	}
	t.lay = lay
}

// arrange reorders t's first elements in place into layout want where
// they are not in it already (layout.go), and returns its device
// pointer; 0 (with the error recorded) where a reordering fails or would
// round to 16 bits.
func (b *Backend) arrange(t *tensor, want layout) cu.DevicePtr {
	steps, k, err := reorders(t.lay, want)
	if err != nil {
		b.fail(err)
		return 0
	}
	for _, st := range steps[:k] {
		if n, c, s := st.shape(); n*c*s > t.n {
			b.fail(fmt.Errorf("cuda: reordering %v to %v in a tensor of %d elements", st.from, st.to, t.n))
			return 0
		}
		if !b.reorderAt(t.ptr, 0, st) {
			return 0
		}
		t.lay = st.to
	}
	return t.ptr
}

// reorderAt runs r on the elements of the buffer at p from element at on:
// read in r.from at byte at·from.elemBytes(), written through the layout
// scratch (float32) and copied to byte 4·at.
func (b *Backend) reorderAt(p cu.DevicePtr, at int, r reorder) bool {
	n, c, s := r.shape()
	cnt := n * c * s
	if cnt > maxLaunchN {
		b.fail(fmt.Errorf("cuda: reordering %d×%d×%d elements: kernels index with 32-bit ints", n, c, s))
		return false
	}
	if cnt == 0 {
		return b.err == nil
	}
	tmp := b.grow(&b.layoutScratch, &b.layoutScratchSize, cnt, 4, maxLaunchN, "layout scratch")
	if tmp == 0 || b.err != nil {
		return false
	}
	src := p + cu.DevicePtr(at*r.from.elemBytes())
	switch {
	case r.from.nhwc && r.to.nhwc: // the same NHWC shape, widened
		b.widen(r.from.half, tmp, src, cnt)
	case r.from.nhwc:
		b.transposeBatched(tmp, src, n, s, c, r.from.half)
	default:
		b.transposeBatched(tmp, src, n, c, s, "")
	}
	if err := cu.MemcpyDtoDAsync(off(p, at), tmp, int64(4*cnt), b.stream); err != nil {
		b.fail(fmt.Errorf("cuda: cuMemcpyDtoDAsync: %v", err))
	}
	return b.err == nil
}

// transposeBatched sets dst[i] = src[i]ᵀ for batch rows×cols matrices
// (layout.cu), dst float32, src float32 or in 16-bit format srcHalf
// (widened): 32×32 tiles through shared memory, or for fewer than 8 rows
// (an image's colour channels) a thread per element.
func (b *Backend) transposeBatched(dst, src cu.DevicePtr, batch, rows, cols int, srcHalf halfFormat) {
	const tile, maxGrid = 32, 65535
	from := srcHalf.kernelSuffix()
	if rows < 8 {
		total := batch * rows * cols
		b.launch("transpose_narrow_"+from, min((total+blockSize-1)/blockSize, maxGrid), blockSize, 0,
			ptrArg(dst), ptrArg(src), intArg(rows), intArg(cols), intArg(total), divMul(rows*cols), divShift(rows*cols), divMul(rows), divShift(rows))
		return
	}
	gx, gy := (cols+tile-1)/tile, (rows+tile-1)/tile
	if gx > math.MaxInt32 || gy > maxGrid {
		b.fail(fmt.Errorf("cuda: transposing %d×%d matrices: more rows than a grid holds", rows, cols))
		return
	}
	size := 4
	if srcHalf.on() {
		size = 2
	}
	for b0 := 0; b0 < batch; b0 += maxGrid {
		nb := min(maxGrid, batch-b0)
		b.launchDims("transpose_batched_"+from, [3]int{gx, gy, nb}, [3]int{tile, 8, 1}, 0,
			ptrArg(off(dst, b0*rows*cols)), ptrArg(src+cu.DevicePtr(size*b0*rows*cols)), intArg(rows), intArg(cols))
	}
}

// Upload copies host values to the device asynchronously through a
// page-locked staging buffer (staging.go); src may be reused at once and
// the copy is ordered on the stream before later ops.
func (b *Backend) Upload(dst backend.Tensor, src []float32) {
	d := b.output("Upload", "dst", dst, len(src), layout{})
	if d == 0 || len(src) == 0 || b.err != nil {
		return
	}
	slot, err := b.stage(src)
	if err != nil {
		b.fail(err)
		return
	}
	if bytes := 4 * len(src); bytes >= largeUploadBytes {
		if err := b.uploadOverlapped(d, slot, bytes); err != nil {
			b.fail(err)
		}
		return
	}
	if err := cu.MemcpyHtoDAsync(d, slot.ptr, int64(4*len(src)), b.stream); err != nil {
		b.fail(fmt.Errorf("cuda: cuMemcpyHtoDAsync: %v", err))
		return
	}
	if err := slot.event.Record(b.stream); err != nil {
		b.fail(fmt.Errorf("cuda: cuEventRecord: %v", err))
		return
	}
	slot.used = true
}

// Download copies device values to the host, waiting for queued work.
func (b *Backend) Download(dst []float32, src backend.Tensor) {
	s := b.dev("Download", "src", src, len(dst))
	if s == 0 || len(dst) == 0 || b.err != nil {
		return
	}
	if err := cu.MemcpyDtoHAsync(unsafe.Pointer(&dst[0]), s, int64(4*len(dst)), b.stream); err != nil {
		b.fail(fmt.Errorf("cuda: cuMemcpyDtoHAsync: %v", err))
		return
	}
	if err := b.stream.Synchronize(); err != nil {
		b.fail(fmt.Errorf("cuda: cuStreamSynchronize: %v", err))
	}
}

// arg writes one kernel argument into the parameter arena.
type arg = uint64

func ptrArg(p cu.DevicePtr) arg { return uint64(p) }
func intArg(v int) arg          { return uint64(uint32(int32(v))) }
func floatArg(v float32) arg    { return uint64(math.Float32bits(v)) }

// divMul and divShift are the two kernel arguments with which a kernel
// divides by d (divide.go, kernels/divide.cuh).
func divMul(d int) arg   { m, _ := divider(d); return uint64(m) }
func divShift(d int) arg { _, s := divider(d); return uint64(s) }

// launch runs kernel name on a grid of blocks×threads with the arguments.
func (b *Backend) launch(name string, blocks, threads, shared int, args ...arg) {
	b.launchGrid(name, blocks, 1, threads, shared, args...)
}

// launch2 runs a kernel on a gx×gy grid of blocks.
func (b *Backend) launch2(name string, gx, gy, threads int, args ...arg) {
	b.launchGrid(name, gx, gy, threads, 0, args...)
}

// launchGrid runs a kernel on a gx×gy grid (each at least 1) of blocks of
// threads threads with shared bytes of dynamic shared memory.
func (b *Backend) launchGrid(name string, gx, gy, threads, shared int, args ...arg) {
	b.launchDims(name, [3]int{gx, gy, 1}, [3]int{threads, 1, 1}, shared, args...)
}

// launchDims runs a kernel on a grid of blocks (each dimension at least
// 1), block threads each, with shared bytes of dynamic shared memory.
func (b *Backend) launchDims(name string, grid, block [3]int, shared int, args ...arg) {
	if b.err != nil {
		return
	}
	fn, ok := b.fns[name]
	if !ok {
		b.fail(fmt.Errorf("cuda: kernel %s is not in the embedded PTX", name))
		return
	}
	if len(args) > len(b.params) {
		b.fail(fmt.Errorf("cuda: kernel %s: %d arguments, at most %d", name, len(args), len(b.params)))
		return
	}
	for i, a := range args {
		b.params[i] = a
		b.ptrs[i] = unsafe.Pointer(&b.params[i])
	}
	for i := range grid {
		grid[i] = max(grid[i], 1)
	}
	if err := fn.Launch(grid[0], grid[1], grid[2], block[0], block[1], block[2], shared, b.stream, b.ptrs[:len(args)]); err != nil {
		b.fail(fmt.Errorf("cuda: launching %s (%v blocks × %v threads): %v", name, grid, block, err))
	}
}

// launchN runs a grid-stride kernel over n elements.
func (b *Backend) launchN(name string, n int, args ...arg) {
	if n <= 0 {
		return
	}
	if n > maxLaunchN {
		b.fail(fmt.Errorf("cuda: %s over %d elements: kernels index with 32-bit ints", name, n))
		return
	}
	blocks := min((n+blockSize-1)/blockSize, 65535)
	b.launch(name, blocks, blockSize, 0, args...)
}

// launchPacked runs a kernel over n elements with threads threads, for
// kernels that take several elements a thread (packedPass, packThreads):
// launchN's limit holds for n, which the kernels index.
func (b *Backend) launchPacked(name string, n, threads int, args ...arg) {
	if n > maxLaunchN {
		b.fail(fmt.Errorf("cuda: %s over %d elements: kernels index with 32-bit ints", name, n))
		return
	}
	b.launchN(name, threads, args...)
}

// scratch returns a device workspace of at least n floats (the im2col
// columns, or cuDNN's workspace), grown as needed up to
// maxWorkspaceFloats (or n, where one needs more).
func (b *Backend) scratch(n int) cu.DevicePtr {
	return b.grow(&b.workspace, &b.workspaceSize, n, 4, maxWorkspaceFloats, "workspace")
}

// grow returns *buf, a device buffer of *have units of unit bytes, after
// making it hold at least need units. A smaller one is replaced (a stream
// synchronization, a free and an allocation) by one of max(need,
// 1.5·have) units, the growth capped at ceiling units, so that a run of
// slowly growing needs reallocates a logarithmic number of times rather
// than every time, for at most half again the largest need. If that
// allocation fails it tries need exactly; 0, with the error recorded,
// where that fails too.
func (b *Backend) grow(buf *cu.DevicePtr, have *int, need, unit, ceiling int, what string) cu.DevicePtr {
	if need <= *have {
		return *buf
	}
	old := *have
	if *buf != 0 {
		// Queued work may still use the old buffer.
		if err := b.stream.Synchronize(); err != nil {
			b.fail(fmt.Errorf("cuda: cuStreamSynchronize: %v", err))
		}
		cu.MemFree(*buf)
		*buf, *have = 0, 0
	}
	size := max(need, min(old+old/2, ceiling))
	p, err := cu.MemAlloc(int64(unit * size))
	if err != nil && size > need {
		size = need
		p, err = cu.MemAlloc(int64(unit * size))
	}
	if err != nil {
		b.fail(fmt.Errorf("cuda: %s of %d bytes: cuMemAlloc: %v", what, unit*size, err))
		return 0
	}
	*buf, *have = p, size
	return p
}
