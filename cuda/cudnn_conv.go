//go:build cuda

package cuda

// Convolutions on cuDNN (bindings in cudnn.go). Each convolution shape gets
// a plan per direction the first time that direction runs: descriptors, an
// algorithm chosen by timing every algorithm cuDNN has for it (Find…Ex, on
// the op's own buffers and the backend's one workspace; for a convolution
// that takes under 2 ms, the fastest few again over several runs, algo.go),
// and the workspace size that algorithm needs. Plans live until Close; the workspace is the
// one the im2col path also uses (scratch), grown to the largest need.
//
// Semantics are the CPU backend's: cross-correlation, zero padding,
// weights OC×C×KH×KW, no bias; every direction overwrites its output
// (beta = 0), as the Backend interface requires of Conv2DBackwardData and
// Conv2DBackwardFilter, except where Conv2DBackwardDataAdd adds to its
// output in place (beta = 1, convolveAdd). With channels-last on (layout.go) a convolution
// runs on NHWC tensors and OC×KH×KW×C filters, its operands transposed
// there first where they are not; a direction cuDNN does not support so
// runs on NCHW tensors, as every convolution does otherwise. A shape has
// separate plans in each layout.
//
// Batch norm and max pooling stay on the custom kernels, on purpose:
//   - cudnnBatchNormalizationForwardTraining does not produce the xhat that
//     BatchNormTrain must save, and cudnnBatchNormalizationBackward wants x,
//     the mean and invStd where BatchNormBackward is given xhat; matching
//     the interface would take extra passes over the activations, which is
//     all these memory-bound ops cost. Evaluation is one elementwise pass
//     either way. The kernels also sum in double in a fixed order, which
//     the parity tests rely on, and cuDNN 9 marks these calls deprecated.
//   - cudnnPoolingForward does not return the argmax tensor
//     MaxPool2DForward must fill, and cudnnPoolingBackward recomputes the
//     maxima from x and y without the "first maximum on ties" rule.

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"gorgonia.org/cu"

	"iterbin/backend"
)

// maxWorkspaceBytes bounds the workspace of a cuDNN algorithm: the same
// 1 GiB the im2col path may use. Algorithms that need more are not timed.
const maxWorkspaceBytes = 4 * maxWorkspaceFloats

// dnnConvKey identifies a convolution: its shape and the data type of its
// tensors.
type dnnConvKey struct {
	shape backend.ConvShape
	dtype dnnDataType
	nhwc  bool
}

// dnnConv holds the descriptors of one convolution and a plan per
// direction.
type dnnConv struct {
	key   dnnConvKey
	seq   int     // how many convolutions cuDNN saw before this one
	x, y  uintptr // tensor descriptors: N×C×H×W and N×OC×OH×OW
	w     uintptr // filter descriptor: OC×C×KH×KW
	plans [dnnDirections]dnnPlan
}

// dnnPlan is how one direction of a convolution runs.
type dnnPlan struct {
	conv   uintptr // its convolution descriptor
	chosen bool    // whether the algorithm below was chosen yet
	// im2col says why this direction runs on the im2col path instead:
	// cuDNN does not support it (dnnUnsupported), e.g. some shapes in
	// 16-bit formats, or im2col timed faster (raced).
	im2col string
	// raced says the im2col path was timed against cuDNN's choice.
	raced bool
	dnnResult
}

// useCudnn says whether convolution s runs on cuDNN. At precision bf16 or
// fp16 its
// operands and output also go through the conversion kernels whole, which
// launchN limits to maxLaunchN elements; larger convolutions take the
// im2col path, which converts them a chunk of samples at a time.
func (b *Backend) useCudnn(s backend.ConvShape) bool {
	if b.dnn == nil || !dnnShapeOK(s) {
		return false
	}
	if b.half.on() {
		x, w, y := dnnOperandSizes(dnnForward, s)
		return max(x, w, y) <= maxLaunchN
	}
	return true
}

// scratchBytes returns the shared workspace grown to n bytes; 0 for none.
func (b *Backend) scratchBytes(n int) cu.DevicePtr {
	if n <= 0 {
		return 0
	}
	return b.scratch((n + 3) / 4)
}

// dnnOperand is a device buffer an operand of a cuDNN convolution is in,
// float32 or (half) in the precision's 16-bit format: activations stored
// so (16-bit storage, layout.go).
type dnnOperand struct {
	ptr  cu.DevicePtr
	half bool
}

// float32Operands are the operands of a convolution whose buffers are all
// float32.
func float32Operands(in1, in2, out cu.DevicePtr) [3]dnnOperand {
	return [3]dnnOperand{{ptr: in1}, {ptr: in2}, {ptr: out}}
}

// dnnConvolve runs direction dir of convolution s (NHWC tensors where nhwc
// says so, else NCHW) on cuDNN: operands in1, in2 → out as dnnDirection
// lists them, float32 unless an operand says it is 16-bit. At precision
// bf16 or fp16 it runs cuDNN's 16-bit configuration (x, w and y all
// CUDNN_DATA_BFLOAT16 or CUDNN_DATA_HALF, compute type float; the legacy
// API has no 16-bit-in, float-out one): inputs held in float32 are
// rounded into 16-bit copies, and a float32 output is written as 16-bit
// into scratch and widened into it.
//
// beta = 1 adds the result to what out holds (convolveAdd: out must then
// be stored in the precision's 16-bit format, and the plan chosen
// already); beta = 0 overwrites it.
//
// Errors are recorded, except that a convolution cuDNN does not support
// (a descriptor or every algorithm refused with a "bad parameter" or "not
// supported" status, dnnUnsupported; in practice some shapes in 16-bit
// formats)
// returns false, for the caller to run it in NCHW or on the im2col path,
// then and every later time (Name counts these). Anything else (out of memory,
// an internal or execution error, an earlier CUDA error) is a failure,
// never a fallback.
func (b *Backend) dnnConvolve(dir dnnDirection, s backend.ConvShape, nhwc bool, operands [3]dnnOperand, beta float32) bool {
	if b.err != nil {
		return true
	}
	d := b.dnn
	key := b.dnnKey(s, nhwc)
	c, ok := d.convs[key]
	if !ok {
		var err error
		if c, err = d.newConv(key); err != nil {
			if !dnnUnsupported(err) {
				b.fail(fmt.Errorf("cuda: cuDNN convolution %+v (%s): %w", s, key.dtype, err))
				return true
			}
			// Keep the shape, every direction on im2col.
			c = &dnnConv{key: key, seq: len(d.convs)}
			for i := range c.plans {
				c.plans[i].im2col = err.Error()
			}
			d.convs[key] = c
			d.noteFallback(nhwc, int(dnnDirections), fmt.Sprintf("convolution %+v (%s): %v", s, key.dtype, err))
			return false
		}
		c.seq = len(d.convs)
		d.convs[key] = c
	}
	p := &c.plans[dir]
	if p.im2col != "" {
		return false
	}
	in1, in2, out := operands[0].ptr, operands[1].ptr, operands[2].ptr
	out32, widen := out, 0
	if b.half.on() {
		var sizes [3]int
		sizes[0], sizes[1], sizes[2] = dnnOperandSizes(dir, s)
		var copies [3]int // the 16-bit copies each operand needs: none where it is 16-bit
		for i, o := range operands {
			if !o.half {
				copies[i] = sizes[i]
			}
		}
		h1, h2, h3 := b.halfScratch(copies[0], copies[1], copies[2])
		if b.err != nil {
			return true
		}
		if copies[0] > 0 {
			b.toHalf(h1, in1, copies[0])
			in1 = h1
		}
		if copies[1] > 0 {
			b.toHalf(h2, in2, copies[1])
			in2 = h2
		}
		if copies[2] > 0 {
			if beta != 0 {
				b.fail(fmt.Errorf("cuda: internal error: a %s convolution adding to a float32 output (%+v)", b.half, s))
				return true
			}
			out, widen = h3, copies[2]
		}
	}
	if !p.chosen {
		if err := b.dnnChoose(dir, c, in1, in2, out); err != nil {
			if !dnnUnsupported(err) {
				b.fail(fmt.Errorf("cuda: cuDNN convolution %+v (%s): %w", s, key.dtype, err))
				return true
			}
			p.im2col = err.Error()
			d.noteFallback(nhwc, 1, fmt.Sprintf("%s %+v (%s): %v", dnnCalls[dir][3], s, key.dtype, err))
			return false
		}
		if b.err != nil {
			return true
		}
	}
	ws := b.scratchBytes(p.workspace)
	if b.err != nil {
		return true
	}
	if err := d.convolve(dir, c, 1, beta, uintptr(in1), uintptr(in2), uintptr(out), uintptr(ws)); err != nil {
		b.fail(fmt.Errorf("cuda: cuDNN convolution %+v (%s), algorithm %d: %w", s, key.dtype, p.algo, err))
		return true
	}
	if widen > 0 {
		b.fromHalf(out32, out, widen)
	}
	return true
}

// dnnChoose times the algorithms of direction dir of c on the op's own
// buffers (out is overwritten; the op then computes it) and records the
// chosen one in c's plan. The search gets a workspace as large as the
// hungriest algorithm that supports the convolution asks for, up to
// maxWorkspaceBytes. When no algorithm can run the convolution only
// because none supports it (or none fits the workspace and math limits),
// the error is a *dnnError that dnnUnsupported accepts.
func (b *Backend) dnnChoose(dir dnnDirection, c *dnnConv, in1, in2, out cu.DevicePtr) error {
	d := b.dnn
	limit := 0
	for algo := 0; algo < dnnAlgoCounts[dir]; algo++ {
		// An algorithm that does not support the convolution answers
		// with a "not supported" or "bad parameter" status; it is simply
		// not a candidate. Any other status is a failure.
		n, err := d.workspaceBytes(dir, c, algo)
		if err != nil {
			if dnnUnsupported(err) {
				continue
			}
			return err
		}
		if n <= maxWorkspaceBytes {
			limit = max(limit, n)
		}
	}
	ws := b.scratchBytes(limit)
	if b.err != nil {
		return nil
	}
	results, err := d.find(dir, c, uintptr(in1), uintptr(in2), uintptr(out), uintptr(ws), limit)
	if err != nil {
		return err
	}
	dt := c.key.dtype
	// In 16 bits only deterministic algorithms run: the others add
	// partial sums with atomics, in an order that varies from run to run,
	// and into a 16-bit output each add may round. (With them allowed, an
	// H100 gave one bf16 backward-data result past the bound of a single
	// rounding, by an algorithm it did not log; none since, in two runs:
	// docs/gpu/2026-11-28.)
	usable := func(r dnnResult) bool {
		return r.status == dnnStatusSuccess && r.workspace <= limit && d.allowsMath(dt, r.mathType) && (r.deterministic || dt == dnnFloat)
	}
	if set := retimeSet(results, usable); len(set) > 0 {
		if results, err = b.retime(dir, c, results, set, in1, in2, out, limit); err != nil || b.err != nil {
			return err
		}
	}
	best, ok := chooseAlgo(results, usable)
	if !ok {
		// Unsupported only if every algorithm was refused as such or
		// left out by the limits here (one that needs more workspace
		// than the search had counts as left out, whatever status it
		// reports); one that failed otherwise (out of memory within the
		// workspace it asked for, an internal or execution error) makes
		// this a failure.
		var tried []string
		unsupported, status := true, dnnStatusSuccess
		for _, r := range results {
			det := ""
			if !r.deterministic {
				det = ", nondeterministic"
			}
			tried = append(tried, fmt.Sprintf("algorithm %d: %s, %d bytes, math type %d%s", r.algo, d.statusString(r.status), r.workspace, r.mathType, det))
			if r.status != dnnStatusSuccess && r.workspace <= limit {
				status = r.status
				unsupported = unsupported && d.unsupportedStatus(r.status)
			}
		}
		kind := "no algorithm"
		if dt != dnnFloat {
			kind = "no deterministic algorithm"
		}
		return &dnnError{call: dnnCalls[dir][1], status: status, unsupported: unsupported,
			text: fmt.Sprintf("%s runs within %d bytes of workspace in the allowed math (%s)", kind, limit, strings.Join(tried, "; "))}
	}
	p := &c.plans[dir]
	// Run the algorithm as it was timed (PyTorch does the same). Strict
	// fp32 keeps CUDNN_FMA_MATH whatever cuDNN reports.
	if d.mathType(dt) != dnnFMAMath {
		if err := d.setMathType(p.conv, best.mathType); err != nil {
			return err
		}
	}
	// The size a search reports has been known to fall short of what the
	// algorithm then asks for; take the larger of the two.
	if n, err := d.workspaceBytes(dir, c, best.algo); err == nil {
		best.workspace = max(best.workspace, n)
	}
	p.dnnResult, p.chosen = best, true
	return nil
}

// retime times the results at set again (retimeSet) on the op's buffers,
// each retimeRuns runs after an untimed one with its own math type and a
// workspace of at least limit bytes, and returns them with those times
// (the mean of the runs), the only candidates for chooseAlgo. A candidate
// cuDNN refuses as unsupported now (dnnUnsupported) is left out; where
// that leaves none, results are returned as they are.
func (b *Backend) retime(dir dnnDirection, c *dnnConv, results []dnnResult, set []int, in1, in2, out cu.DevicePtr, limit int) ([]dnnResult, error) {
	d := b.dnn
	p := &c.plans[dir]
	var timed []dnnResult
	for _, i := range set {
		r := results[i]
		if d.mathType(c.key.dtype) != dnnFMAMath {
			if err := d.setMathType(p.conv, r.mathType); err != nil {
				return nil, err
			}
		}
		need, err := d.workspaceBytes(dir, c, r.algo)
		if dnnUnsupported(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		p.algo, p.workspace = r.algo, max(need, limit)
		ws := b.scratchBytes(p.workspace)
		if b.err != nil {
			return nil, nil
		}
		var runErr error
		run := func() {
			if err := d.convolve(dir, c, 1, 0, uintptr(in1), uintptr(in2), uintptr(out), uintptr(ws)); err != nil && runErr == nil {
				runErr = err
			}
		}
		run()
		ms := b.timeOnStream(func() {
			for range retimeRuns {
				run()
			}
		})
		if dnnUnsupported(runErr) && b.err == nil {
			continue
		}
		if runErr != nil || b.err != nil {
			return nil, runErr
		}
		r.ms = float32(ms / retimeRuns)
		timed = append(timed, r)
	}
	if len(timed) == 0 {
		return results, nil
	}
	return timed, nil
}

func (dir dnnDirection) String() string {
	switch dir {
	case dnnForward:
		return "forward"
	case dnnBackwardData:
		return "backward data"
	case dnnBackwardFilter:
		return "backward filter"
	}
	return fmt.Sprintf("direction %d", int(dir))
}

// convPlan says how one direction of a convolution runs on cuDNN, for
// tests and diagnostics (export_test.go hands it to the cuda_test
// package).
type convPlan struct {
	Direction string
	// Layout is the order the direction runs in: "NHWC" or "NCHW".
	Layout string
	// Chosen says cuDNN chose an algorithm: Algo (a
	// cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t) in MathType (a
	// cudnnMathType_t), with WorkspaceBytes of workspace, timed at Ms.
	Chosen         bool
	Algo, MathType int
	WorkspaceBytes int
	Deterministic  bool
	Ms             float32
	// Im2col, if not empty, says why cuDNN does not run the direction in
	// this layout: cuDNN does not support it (in NHWC the direction then
	// runs in NCHW, in NCHW on the im2col path), or im2col timed faster.
	Im2col string
}

func (p convPlan) String() string {
	switch {
	case p.Im2col != "":
		return "not on cuDNN: " + p.Im2col
	case !p.Chosen:
		return "not run yet"
	}
	det := "nondeterministic"
	if p.Deterministic {
		det = "deterministic"
	}
	return fmt.Sprintf("%s, algorithm %d, math type %d, %d bytes of workspace, %s, %.3g ms", p.Layout, p.Algo, p.MathType, p.WorkspaceBytes, det, p.Ms)
}

// convPlans returns the plans cuDNN made for convolution s at the
// backend's precision, one per direction in dnnDirection's order: the
// NHWC plan where channels-last is on and cuDNN runs the direction so,
// else the NCHW one; nil where cuDNN did not see s (or is not loaded).
func (b *Backend) convPlans(s backend.ConvShape) []convPlan {
	if b.dnn == nil {
		return nil
	}
	nchw, hasNCHW := b.dnn.convs[b.dnnKey(s, false)]
	nhwc, hasNHWC := b.dnn.convs[b.dnnKey(s, true)]
	if !hasNCHW && !hasNHWC {
		return nil
	}
	plans := make([]convPlan, dnnDirections)
	for dir := range plans {
		c, lay := nchw, "NCHW"
		if hasNHWC && (nhwc.plans[dir].im2col == "" || !hasNCHW) {
			c, lay = nhwc, "NHWC"
		}
		p := &c.plans[dir]
		plans[dir] = convPlan{Direction: dnnDirection(dir).String(), Layout: lay, Chosen: p.chosen, Algo: p.algo, MathType: p.mathType,
			WorkspaceBytes: p.workspace, Deterministic: p.deterministic, Ms: p.ms, Im2col: p.im2col}
	}
	return plans
}

// dnnAlgoNames are short names of the values of each direction's
// algorithm enum (cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t): what
// follows _ALGO_ in cuDNN's name, or ALGO_n for the numbered ones.
var dnnAlgoNames = [dnnDirections][]string{
	dnnForward:        {"IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT", "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"},
	dnnBackwardData:   {"ALGO_0", "ALGO_1", "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"},
	dnnBackwardFilter: {"ALGO_0", "ALGO_1", "FFT", "ALGO_3", "WINOGRAD", "WINOGRAD_NONFUSED", "FFT_TILING"},
}

// dnnMathNames name the values of cudnnMathType_t.
var dnnMathNames = []string{dnnDefaultMath: "default math", dnnTensorOpMath: "tensor-op math",
	dnnTensorOpMathAllowConversion: "tensor-op math with conversion", dnnFMAMath: "FMA math"}

// enumName is names[v], or v as a number where names has none.
func enumName(names []string, v int) string {
	if v >= 0 && v < len(names) {
		return names[v]
	}
	return fmt.Sprint(v)
}

// byteSize writes n bytes in B, KiB or MiB.
func byteSize(n int) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// op is the Backend method a direction serves.
func (dir dnnDirection) op() string {
	return [dnnDirections]string{"Conv2DForward", "Conv2DBackwardData", "Conv2DBackwardFilter"}[dir]
}

// ConvChoices lists how each direction of each convolution cuDNN has seen
// runs (backend.ConvPlanner), in the order the backend first ran each
// shape and layout, then by direction: the cuDNN algorithm chosen, its
// math type, workspace and the time it was chosen on; or, in NCHW, the
// im2col path and why (cuDNN refused it, or im2col timed faster); or, in
// NHWC, that cuDNN refused it there and it runs in NCHW (whose own line
// says how). Directions not run yet are left out; so is everything where
// cuDNN is not loaded. Conv2DBackwardDataAdd's convolutions are listed
// as Conv2DBackwardData, which they run.
func (b *Backend) ConvChoices() []backend.ConvChoice {
	if b.dnn == nil {
		return nil
	}
	convs := make([]*dnnConv, 0, len(b.dnn.convs))
	for _, c := range b.dnn.convs {
		convs = append(convs, c)
	}
	slices.SortFunc(convs, func(x, y *dnnConv) int { return cmp.Compare(x.seq, y.seq) })
	var out []backend.ConvChoice
	for _, c := range convs {
		lay := "NCHW"
		if c.key.nhwc {
			lay = "NHWC"
		}
		for dir := range dnnDirections {
			p := &c.plans[dir]
			var how string
			switch {
			case p.im2col != "" && c.key.nhwc:
				how = "refused by cuDNN, runs in NCHW: " + p.im2col
			case p.im2col != "" && p.raced:
				how = p.im2col // "im2col timed faster (…)"
			case p.im2col != "":
				how = "im2col, refused by cuDNN: " + p.im2col
			case !p.chosen:
				continue
			default:
				det := "nondeterministic"
				if p.deterministic {
					det = "deterministic"
				}
				how = fmt.Sprintf("cuDNN algorithm %d (%s), %s, %s of workspace, %s, %.3f ms when chosen",
					p.algo, enumName(dnnAlgoNames[dir], p.algo), enumName(dnnMathNames, p.mathType), byteSize(p.workspace), det, p.ms)
				if p.raced {
					how += ", faster than im2col"
				}
			}
			out = append(out, backend.ConvChoice{Op: backend.ConvLabel(dir.op(), c.key.shape), How: lay + ", " + how})
		}
	}
	return out
}

// convFallbacks is how many convolution directions run on the im2col
// path because cuDNN does not support them, and why the first does.
func (b *Backend) convFallbacks() (int, string) {
	if b.dnn == nil {
		return 0, ""
	}
	return b.dnn.fallbacks, b.dnn.firstFallback
}

// convOperand is one tensor of a convolution direction and its name.
type convOperand struct {
	name string
	t    backend.Tensor
}

// convOperandShapes are the n×c×s shapes of direction dir's operands in
// cuDNN's order (dnnDirection): activations N×C×H·W and N×OC×OH·OW,
// filters OC×C×KH·KW.
func convOperandShapes(dir dnnDirection, s backend.ConvShape) [3][3]int {
	x, y, w := [3]int{s.N, s.C, s.H * s.W}, [3]int{s.N, s.OC, s.OutH() * s.OutW()}, [3]int{s.OC, s.C, s.KH * s.KW}
	switch dir {
	case dnnForward:
		return [3][3]int{x, w, y}
	case dnnBackwardData:
		return [3][3]int{w, y, x}
	}
	return [3][3]int{x, y, w}
}

// convolve checks and runs direction dir of convolution s for op, its
// operands in cuDNN's order (forward x, w → y; backward data w, dy → dx;
// backward filter x, dy → dw): in NHWC on cuDNN where channels-last is on
// and cuDNN supports the direction so (layout.go), else in NCHW
// (convolveNCHW). A batch of no samples writes nothing, except the
// filter gradient, which is zero.
func (b *Backend) convolve(op string, dir dnnDirection, s backend.ConvShape, operands [3]convOperand) {
	if !convShapeOK(s) {
		b.fail(fmt.Errorf("backend: %s: bad shape %+v", op, s))
		return
	}
	shapes := convOperandShapes(dir, s)
	var ts [3]*tensor
	for i, o := range operands {
		sh := shapes[i]
		if ts[i] = b.tensorArg(op, o.name, o.t, sh[0]*sh[1]*sh[2]); ts[i] == nil {
			return
		}
	}
	if s.N == 0 {
		if dir == dnnBackwardFilter {
			b.Fill(operands[2].t, 0, s.OC*s.C*s.KH*s.KW)
		}
		return
	}
	var p [3]cu.DevicePtr
	lay := func(i int, nhwc bool) layout { return layoutIf(nhwc, shapes[i][0], shapes[i][1], shapes[i][2]) }
	out := shapes[2][0] * shapes[2][1] * shapes[2][2]
	if b.channelsLast && b.useCudnn(s) && transposable(s) && !b.dnnRefused(dir, s, true) {
		ops := b.dnnInputsNHWC(ts, shapes)
		// With 16-bit storage, activation outputs (not filter
		// gradients) are written as cuDNN computes them, in 16 bits.
		outLay := lay(2, true)
		if dir != dnnBackwardFilter {
			outLay = outLay.inHalf(b.storage)
		}
		b.noteWrite(ts[2], out, outLay)
		ops[2] = dnnOperand{ptr: ts[2].ptr, half: outLay.half.on()}
		if b.err != nil || b.dnnConvolve(dir, s, true, ops, 0) {
			return
		}
	}
	p[0], p[1] = b.arrange(ts[0], layout{}), b.arrange(ts[1], layout{})
	b.noteWrite(ts[2], out, layout{})
	p[2] = ts[2].ptr
	if b.err == nil {
		b.convolveNCHW(dir, s, p[0], p[1], p[2])
	}
}

// dnnInputsNHWC arranges the inputs of a convolution (ts[0] and ts[1],
// of shapes as convOperandShapes gives) for cuDNN in NHWC: one stored in
// the precision's 16-bit format is read as it is, others are float32
// NHWC.
func (b *Backend) dnnInputsNHWC(ts [3]*tensor, shapes [3][3]int) (ops [3]dnnOperand) {
	for i := range 2 {
		l := nhwcLayout(shapes[i][0], shapes[i][1], shapes[i][2])
		if h := l.inHalf(b.half); h.half.on() && ts[i].lay.holds(h) {
			l = h
		}
		ops[i] = dnnOperand{ptr: b.arrange(ts[i], l), half: l.half.on()}
	}
	return ops
}

// convolveAdd runs direction dir of convolution s for op, as convolve
// does, but adds its output to the values the output tensor holds (cuDNN's
// beta = 1), where that can run in place: with 16-bit storage, the
// output held in 16-bit NHWC, on cuDNN in NHWC, whose plan for the direction has
// its algorithm already (choosing one times the algorithms on the output
// buffer, which would lose its values). Otherwise it does nothing and
// returns false, for the caller to convolve into scratch and add. A
// write of no samples is done (true).
func (b *Backend) convolveAdd(op string, dir dnnDirection, s backend.ConvShape, operands [3]convOperand) bool {
	if !b.storage.on() || !convShapeOK(s) || !b.useCudnn(s) || !transposable(s) || dir == dnnBackwardFilter {
		return false // useCudnn also says there are samples
	}
	c, ok := b.dnn.convs[b.dnnKey(s, true)]
	if !ok || !c.plans[dir].chosen || c.plans[dir].im2col != "" {
		return false
	}
	shapes := convOperandShapes(dir, s)
	var ts [3]*tensor
	for i, o := range operands {
		sh := shapes[i]
		if ts[i] = b.tensorArg(op, o.name, o.t, sh[0]*sh[1]*sh[2]); ts[i] == nil {
			return true
		}
	}
	// The output must hold 16-bit NHWC already, and be neither input
	// (which cuDNN would read as it writes, and which arranging could
	// reorder).
	outLay := nhwcLayout(shapes[2][0], shapes[2][1], shapes[2][2]).inHalf(b.storage)
	if !outLay.half.on() || !ts[2].lay.holds(outLay) || ts[2] == ts[0] || ts[2] == ts[1] {
		return false
	}
	ops := b.dnnInputsNHWC(ts, shapes)
	ops[2] = dnnOperand{ptr: ts[2].ptr, half: true}
	if b.err != nil {
		return true
	}
	// The plan exists and is chosen: this runs on cuDNN or fails.
	b.dnnConvolve(dir, s, true, ops, 1)
	if b.err == nil {
		b.dnn.accumulated++
	}
	return true
}

// transposable says whether every operand of s is small enough for the
// transposes between layouts (maxLaunchN elements); a larger convolution
// runs in NCHW.
func transposable(s backend.ConvShape) bool {
	x, w, y := dnnOperandSizes(dnnForward, s)
	return max(x, w, y) <= maxLaunchN
}

// dnnRefused says whether cuDNN refused direction dir of s in NHWC
// (nhwc) or NCHW when it first ran.
func (b *Backend) dnnRefused(dir dnnDirection, s backend.ConvShape, nhwc bool) bool {
	c, ok := b.dnn.convs[b.dnnKey(s, nhwc)]
	return ok && c.plans[dir].im2col != ""
}

// convolveNCHW runs direction dir of convolution s on NCHW operands
// (order as in convolve): on cuDNN, unless it cannot run it or, unless
// Options.CuDNNOnly, the im2col path timed faster for this shape and
// direction. That race runs once, the first time cuDNN has run the
// direction: cuDNN's choice once more and the im2col path twice (a
// warm-up that also grows the workspace, then the timed run), each timed
// with events on the op's own buffers. Both paths write the whole output.
// It pays where cuDNN's NCHW kernels are slow, such as a first layer of
// three input channels.
func (b *Backend) convolveNCHW(dir dnnDirection, s backend.ConvShape, in1, in2, out cu.DevicePtr) {
	operands := float32Operands(in1, in2, out)
	if !b.useCudnn(s) || !b.dnnConvolve(dir, s, false, operands, 0) {
		b.convIm2col(dir, s, in1, in2, out)
		return
	}
	if b.cudnnOnly || b.err != nil {
		return
	}
	p := b.dnnPlan(dir, s)
	if p == nil || p.raced || p.im2col != "" {
		return
	}
	p.raced = true
	dnnMs := b.timeOnStream(func() { b.dnnConvolve(dir, s, false, operands, 0) })
	b.convIm2col(dir, s, in1, in2, out)
	im2colMs := b.timeOnStream(func() { b.convIm2col(dir, s, in1, in2, out) })
	if b.err == nil && im2colMs < dnnMs {
		p.im2col = fmt.Sprintf("im2col timed faster (%.3f ms, cuDNN's choice %.3f ms)", im2colMs, dnnMs)
		b.dnn.im2colFaster++
	}
}

// convIm2col runs direction dir of s on the im2col path (operands as in
// convolve).
func (b *Backend) convIm2col(dir dnnDirection, s backend.ConvShape, in1, in2, out cu.DevicePtr) {
	switch dir {
	case dnnForward:
		b.conv2DForwardIm2col(out, in1, in2, s)
	case dnnBackwardData:
		b.conv2DBackwardDataIm2col(out, in2, in1, s)
	case dnnBackwardFilter:
		b.conv2DBackwardFilterIm2col(out, in2, in1, s)
	}
}

// dnnKey is convolution s's key in cuDNN's plans at the backend's
// precision, in NHWC (nhwc) or NCHW.
func (b *Backend) dnnKey(s backend.ConvShape, nhwc bool) dnnConvKey {
	if b.half.on() {
		return dnnConvKey{shape: s, dtype: b.half.dnnType(), nhwc: nhwc}
	}
	return dnnConvKey{shape: s, dtype: dnnFloat, nhwc: nhwc}
}

// dnnPlan returns cuDNN's NCHW plan for direction dir of s at the
// backend's precision; nil where cuDNN has none.
func (b *Backend) dnnPlan(dir dnnDirection, s backend.ConvShape) *dnnPlan {
	key := b.dnnKey(s, false)
	c, ok := b.dnn.convs[key]
	if !ok {
		return nil
	}
	return &c.plans[dir]
}

// timeOnStream returns the milliseconds the work f queues takes on the
// stream (events around it; waits for it). +Inf, with the error recorded,
// where timing fails.
func (b *Backend) timeOnStream(f func()) float64 {
	if b.timing[0] == (cu.Event{}) {
		for i := range b.timing {
			ev, err := cu.MakeEvent(cu.DefaultEvent)
			if err != nil {
				b.fail(fmt.Errorf("cuda: cuEventCreate: %v", err))
				return math.Inf(1)
			}
			b.timing[i] = ev
		}
	}
	start, end := b.timing[0], b.timing[1]
	if err := start.Record(b.stream); err != nil {
		b.fail(fmt.Errorf("cuda: cuEventRecord: %v", err))
		return math.Inf(1)
	}
	f()
	if err := end.Record(b.stream); err != nil {
		b.fail(fmt.Errorf("cuda: cuEventRecord: %v", err))
		return math.Inf(1)
	}
	if err := end.Synchronize(); err != nil {
		b.fail(fmt.Errorf("cuda: cuEventSynchronize: %v", err))
		return math.Inf(1)
	}
	ms, err := start.Elapsed(end)
	if err != nil {
		b.fail(fmt.Errorf("cuda: cuEventElapsedTime: %v", err))
		return math.Inf(1)
	}
	return ms
}
