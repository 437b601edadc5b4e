package backend

import (
	"fmt"
	"sort"
	"time"
)

// OpTime is the wall time spent in one kind of op (an op name, with the
// shape for convolutions, GEMMs, batch norms and pools).
type OpTime struct {
	Op    string
	Calls int
	Total time.Duration
}

// OpTimes collects the time of every op run through a backend made by
// Profile. Not safe for concurrent use (neither are backends).
type OpTimes struct {
	byOp map[string]*OpTime
	// Device says the ops' times are their spans on the device
	// (DeviceTimer), not wall times with the device waited for.
	Device bool
}

// Rows returns the ops, most time first.
func (t *OpTimes) Rows() []OpTime {
	rows := make([]OpTime, 0, len(t.byOp))
	for _, r := range t.byOp {
		rows = append(rows, *r)
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Total != rows[j].Total {
			return rows[i].Total > rows[j].Total
		}
		return rows[i].Op < rows[j].Op
	})
	return rows
}

// Reset forgets what was collected (after warm-up steps, say).
func (t *OpTimes) Reset() { clear(t.byOp) }

// Add records d spent outside the backend under op (host-side stages such
// as filling a batch), so that one table holds a whole step.
func (t *OpTimes) Add(op string, d time.Duration) {
	r := t.byOp[op]
	if r == nil {
		r = &OpTime{Op: op}
		t.byOp[op] = r
	}
	r.Calls++
	r.Total += d
}

// Profile returns a backend that runs every op on b and adds its time to
// the returned OpTimes. Where b is a DeviceTimer, that is the op's time
// on the device, marked around it without waiting (OpTimes.Device): the
// spans are read at each Sync (and every maxPendingSpans ops), so the
// device runs as it does unprofiled. Otherwise Profile waits for the
// device after each op (Sync) and adds the wall time, launch and wait
// included; the waits serialise an asynchronous device, so a profiled
// step is then slower than a real one, and the table says where a step's
// time goes, not how fast it is. The result implements Fused exactly when
// b does, and FusedResidual exactly when b does, so layers take the same
// path as on b. It is a LossScaler whose ScalesLoss is b's (false where b
// is none).
func Profile(b Backend) (Backend, *OpTimes) {
	times := &OpTimes{byOp: map[string]*OpTime{}}
	p := &profiled{Backend: b, times: times}
	if dt, ok := b.(DeviceTimer); ok {
		p.timer = dt
		times.Device = true
	}
	if r, ok := b.(FusedResidual); ok {
		return &profiledResidual{profiledFused: &profiledFused{profiled: p, fused: r}, residual: r}, times
	}
	if f, ok := b.(Fused); ok {
		return &profiledFused{profiled: p, fused: f}, times
	}
	return p, times
}

type profiled struct {
	Backend
	times *OpTimes
	// timer, where b has one, marks each op's span on the device; pending
	// names the spans not read yet, in order.
	timer   DeviceTimer
	pending []string
}

// maxPendingSpans bounds the spans a profile leaves unread (and the
// device's marks with them).
const maxPendingSpans = 4096

// timed runs op on the device and records its time: its span on the
// device, read later, or its wall time with the device waited for.
func (p *profiled) timed(name string, op func()) {
	if p.timer != nil {
		p.timer.StartSpan()
		op()
		p.timer.EndSpan()
		p.pending = append(p.pending, name)
		if len(p.pending) >= maxPendingSpans {
			p.readSpans()
		}
		return
	}
	start := time.Now()
	op()
	p.Backend.Sync() // an error stays recorded in the backend
	p.times.Add(name, time.Since(start))
}

// readSpans waits for the device and adds the pending ops' spans to the
// times. Where the spans cannot be read (the device failed, or the marks
// went wrong), the ops go uncounted; the backend reports why (Spans
// records its errors for Sync to return).
func (p *profiled) readSpans() {
	spans, err := p.timer.Spans()
	if err == nil && len(spans) == len(p.pending) {
		for i, name := range p.pending {
			p.times.Add(name, spans[i])
		}
	}
	p.pending = p.pending[:0]
}

// Sync waits for the device and, with a DeviceTimer, reads the spans.
func (p *profiled) Sync() error {
	err := p.Backend.Sync()
	if p.timer != nil && len(p.pending) > 0 {
		p.readSpans()
	}
	return err
}

// ConvLabel is how Profile labels convolution op (Conv2DForward,
// Conv2DBackwardData, …) of shape s; ConvPlanner's choices use it too.
func ConvLabel(op string, s ConvShape) string {
	return fmt.Sprintf("%s n%d %d→%d %dx%d k%dx%d s%d", op, s.N, s.C, s.OC, s.H, s.W, s.KH, s.KW, s.Stride)
}

func bnLabel(op string, s BNShape) string {
	return fmt.Sprintf("%s n%d c%d spatial %d", op, s.N, s.C, s.Spatial)
}

func poolLabel(op string, s PoolShape) string {
	return fmt.Sprintf("%s n%d c%d %dx%d k%d s%d", op, s.N, s.C, s.H, s.W, s.Kernel, s.Stride)
}

func (p *profiled) Upload(dst Tensor, src []float32) {
	p.timed("Upload", func() { p.Backend.Upload(dst, src) })
}
func (p *profiled) Download(dst []float32, src Tensor) {
	p.timed("Download", func() { p.Backend.Download(dst, src) })
}
func (p *profiled) Fill(t Tensor, v float32, n int) {
	p.timed("Fill", func() { p.Backend.Fill(t, v, n) })
}
func (p *profiled) Copy(dst, src Tensor, n int) {
	p.timed("Copy", func() { p.Backend.Copy(dst, src, n) })
}
func (p *profiled) Gemm(transA, transB bool, m, n, k int, alpha float32, a, b Tensor, beta float32, c Tensor) {
	p.timed(fmt.Sprintf("Gemm %dx%dx%d", m, n, k), func() { p.Backend.Gemm(transA, transB, m, n, k, alpha, a, b, beta, c) })
}
func (p *profiled) AddBias(y, bias Tensor, n, c, spatial int) {
	p.timed("AddBias", func() { p.Backend.AddBias(y, bias, n, c, spatial) })
}
func (p *profiled) BiasGrad(dBias, dy Tensor, n, c, spatial int) {
	p.timed("BiasGrad", func() { p.Backend.BiasGrad(dBias, dy, n, c, spatial) })
}
func (p *profiled) Conv2DForward(y, x, w Tensor, s ConvShape) {
	p.timed(ConvLabel("Conv2DForward", s), func() { p.Backend.Conv2DForward(y, x, w, s) })
}
func (p *profiled) Conv2DBackwardData(dx, dy, w Tensor, s ConvShape) {
	p.timed(ConvLabel("Conv2DBackwardData", s), func() { p.Backend.Conv2DBackwardData(dx, dy, w, s) })
}
func (p *profiled) Conv2DBackwardFilter(dw, dy, x Tensor, s ConvShape) {
	p.timed(ConvLabel("Conv2DBackwardFilter", s), func() { p.Backend.Conv2DBackwardFilter(dw, dy, x, s) })
}
func (p *profiled) MaxPool2DForward(y, argmax, x Tensor, s PoolShape) {
	p.timed(poolLabel("MaxPool2DForward", s), func() { p.Backend.MaxPool2DForward(y, argmax, x, s) })
}
func (p *profiled) MaxPool2DBackward(dx, dy, argmax Tensor, s PoolShape) {
	p.timed(poolLabel("MaxPool2DBackward", s), func() { p.Backend.MaxPool2DBackward(dx, dy, argmax, s) })
}
func (p *profiled) GlobalAvgPoolForward(y, x Tensor, n, c, spatial int) {
	p.timed("GlobalAvgPoolForward", func() { p.Backend.GlobalAvgPoolForward(y, x, n, c, spatial) })
}
func (p *profiled) GlobalAvgPoolBackward(dx, dy Tensor, n, c, spatial int) {
	p.timed("GlobalAvgPoolBackward", func() { p.Backend.GlobalAvgPoolBackward(dx, dy, n, c, spatial) })
}
func (p *profiled) Add(y, a, b Tensor, n int) {
	p.timed("Add", func() { p.Backend.Add(y, a, b, n) })
}
func (p *profiled) ShortcutAForward(y, x Tensor, s ShortcutShape) {
	p.timed("ShortcutAForward", func() { p.Backend.ShortcutAForward(y, x, s) })
}
func (p *profiled) ShortcutABackward(dx, dy Tensor, s ShortcutShape) {
	p.timed("ShortcutABackward", func() { p.Backend.ShortcutABackward(dx, dy, s) })
}
func (p *profiled) ReLUForward(y, x Tensor, n int) {
	p.timed("ReLUForward", func() { p.Backend.ReLUForward(y, x, n) })
}
func (p *profiled) ReLUBackward(dx, dy, y Tensor, n int) {
	p.timed("ReLUBackward", func() { p.Backend.ReLUBackward(dx, dy, y, n) })
}
func (p *profiled) BatchNormTrain(y, xhat, mean, invStd, runMean, runVar, x, gamma, beta Tensor, s BNShape, momentum, eps float32) {
	p.timed(bnLabel("BatchNormTrain", s), func() {
		p.Backend.BatchNormTrain(y, xhat, mean, invStd, runMean, runVar, x, gamma, beta, s, momentum, eps)
	})
}
func (p *profiled) BatchNormEval(y, x, gamma, beta, runMean, runVar Tensor, s BNShape, eps float32) {
	p.timed(bnLabel("BatchNormEval", s), func() { p.Backend.BatchNormEval(y, x, gamma, beta, runMean, runVar, s, eps) })
}
func (p *profiled) BatchNormBackward(dx, dGamma, dBeta, dy, xhat, invStd, gamma Tensor, s BNShape) {
	p.timed(bnLabel("BatchNormBackward", s), func() { p.Backend.BatchNormBackward(dx, dGamma, dBeta, dy, xhat, invStd, gamma, s) })
}
func (p *profiled) LogSoftmax(y, x Tensor, rows, cols int) {
	p.timed("LogSoftmax", func() { p.Backend.LogSoftmax(y, x, rows, cols) })
}
func (p *profiled) NLLLoss(sums, logp, labels Tensor, rows, cols int) {
	p.timed("NLLLoss", func() { p.Backend.NLLLoss(sums, logp, labels, rows, cols) })
}
func (p *profiled) LogSoftmaxNLLBackward(dx, logp, labels Tensor, rows, cols int, scale float32) {
	p.timed("LogSoftmaxNLLBackward", func() { p.Backend.LogSoftmaxNLLBackward(dx, logp, labels, rows, cols, scale) })
}
func (p *profiled) Sign(dst, src Tensor, n int) {
	p.timed("Sign", func() { p.Backend.Sign(dst, src, n) })
}
func (p *profiled) SignScaled(dst, src Tensor, rows, cols int) {
	p.timed("SignScaled", func() { p.Backend.SignScaled(dst, src, rows, cols) })
}
func (p *profiled) STEClippedMask(grad, latent Tensor, n int) {
	p.timed("STEClippedMask", func() { p.Backend.STEClippedMask(grad, latent, n) })
}
func (p *profiled) Clip(t Tensor, lo, hi float32, n int) {
	p.timed("Clip", func() { p.Backend.Clip(t, lo, hi, n) })
}
func (p *profiled) AdamStep(w, g, m, v Tensor, n int, a AdamParams) {
	p.timed("AdamStep", func() { p.Backend.AdamStep(w, g, m, v, n, a) })
}
func (p *profiled) SGDStep(w, g, buf Tensor, n int, s SGDParams) {
	p.timed("SGDStep", func() { p.Backend.SGDStep(w, g, buf, n, s) })
}

// lossScaler is the profiled backend's LossScaler, nil where it scales no
// loss.
func (p *profiled) lossScaler() LossScaler {
	if ls, ok := p.Backend.(LossScaler); ok && ls.ScalesLoss() {
		return ls
	}
	return nil
}
func (p *profiled) ScalesLoss() bool { return p.lossScaler() != nil }
func (p *profiled) CheckGradient(g Tensor, n int) {
	if ls := p.lossScaler(); ls != nil {
		p.timed("CheckGradient", func() { ls.CheckGradient(g, n) })
	}
}
func (p *profiled) EndStep() {
	if ls := p.lossScaler(); ls != nil {
		p.timed("EndStep", ls.EndStep)
	}
}
func (p *profiled) LossScaleState() Tensor {
	if ls := p.lossScaler(); ls != nil {
		return ls.LossScaleState()
	}
	return nil
}

var _ LossScaler = (*profiled)(nil)

type profiledFused struct {
	*profiled
	fused Fused
}

func (p *profiledFused) BatchNormReLUTrain(y, mean, invStd, runMean, runVar, x, gamma, beta Tensor, s BNShape, momentum, eps float32) {
	p.timed(bnLabel("BatchNormReLUTrain", s), func() {
		p.fused.BatchNormReLUTrain(y, mean, invStd, runMean, runVar, x, gamma, beta, s, momentum, eps)
	})
}
func (p *profiledFused) BatchNormReLUBackward(dx, dGamma, dBeta, dy, x, mean, invStd, gamma, beta Tensor, s BNShape) {
	p.timed(bnLabel("BatchNormReLUBackward", s), func() {
		p.fused.BatchNormReLUBackward(dx, dGamma, dBeta, dy, x, mean, invStd, gamma, beta, s)
	})
}
func (p *profiledFused) AddReLU(y, a, b Tensor, n int) {
	p.timed("AddReLU", func() { p.fused.AddReLU(y, a, b, n) })
}

var _ Fused = (*profiledFused)(nil)

type profiledResidual struct {
	*profiledFused
	residual FusedResidual
}

func (p *profiledResidual) BatchNormAddReLUTrain(y, mean, invStd, runMean, runVar, x, skip, gamma, beta Tensor, s BNShape, momentum, eps float32) {
	p.timed(bnLabel("BatchNormAddReLUTrain", s), func() {
		p.residual.BatchNormAddReLUTrain(y, mean, invStd, runMean, runVar, x, skip, gamma, beta, s, momentum, eps)
	})
}
func (p *profiledResidual) BatchNormAddReLUBackward(dx, dGamma, dBeta, dSum, dy, y, x, mean, invStd, gamma Tensor, s BNShape) {
	p.timed(bnLabel("BatchNormAddReLUBackward", s), func() {
		p.residual.BatchNormAddReLUBackward(dx, dGamma, dBeta, dSum, dy, y, x, mean, invStd, gamma, s)
	})
}

func (p *profiledResidual) Conv2DBackwardDataAdd(dx, dy, w Tensor, s ConvShape) {
	p.timed(ConvLabel("Conv2DBackwardDataAdd", s), func() { p.residual.Conv2DBackwardDataAdd(dx, dy, w, s) })
}

var _ FusedResidual = (*profiledResidual)(nil)
