package backend_test

import (
	"testing"
	"time"

	"iterbin/backend"
	"iterbin/backend/cpu"
)

// TestProfileTimesEveryOpAndKeepsResults runs ops through a profiled CPU
// backend: each op is counted under its name (with the shape for
// convolutions), results equal the plain backend's, and the wrapper offers
// the fused ops exactly when the backend has them.
func TestProfileTimesEveryOpAndKeepsResults(t *testing.T) {
	plain := cpu.New()
	defer plain.Close()
	be, times := backend.Profile(cpu.New())
	defer be.Close()
	if _, ok := be.(backend.FusedResidual); !ok {
		t.Fatal("the profiled CPU backend hides the CPU's fused ops")
	}
	s := backend.ConvShape{N: 2, C: 3, H: 5, W: 5, OC: 4, KH: 3, KW: 3, Stride: 1, Pad: 1}
	run := func(b backend.Backend) []float32 {
		x, w, y := b.Alloc(2*3*25), b.Alloc(4*3*9), b.Alloc(2*4*25)
		xs, ws := make([]float32, 150), make([]float32, 108)
		for i := range xs {
			xs[i] = float32(i%7) - 3
		}
		for i := range ws {
			ws[i] = float32(i%5) - 2
		}
		b.Upload(x, xs)
		b.Upload(w, ws)
		for range 3 {
			b.Conv2DForward(y, x, w, s)
		}
		b.ReLUForward(y, y, 200)
		out := make([]float32, 200)
		b.Download(out, y)
		if err := b.Sync(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	want, got := run(plain), run(be)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("output %d: profiled %v, plain %v", i, got[i], want[i])
		}
	}
	calls := map[string]int{}
	for _, r := range times.Rows() {
		calls[r.Op] = r.Calls
	}
	conv := "Conv2DForward n2 3→4 5x5 k3x3 s1"
	if calls[conv] != 3 || calls["ReLUForward"] != 1 || calls["Upload"] != 2 || calls["Download"] != 1 {
		t.Fatalf("calls %v: want 3 × %q, 1 ReLUForward, 2 Uploads, 1 Download", calls, conv)
	}
	times.Add("fill batch (host)", 5)
	times.Add("fill batch (host)", 7)
	found := false
	for _, r := range times.Rows() {
		if r.Op == "fill batch (host)" {
			found = r.Calls == 2 && r.Total == 12
		}
	}
	if !found {
		t.Fatalf("host stage not recorded as 2 calls of 12ns in all: %+v", times.Rows())
	}
	times.Reset()
	if n := len(times.Rows()); n != 0 {
		t.Fatalf("%d rows after Reset", n)
	}
}

// fakeScaler is a CPU backend that says it scales the loss and counts the
// scaler's calls.
type fakeScaler struct {
	backend.Backend
	state         backend.Tensor
	checks, steps int
}

func (f *fakeScaler) ScalesLoss() bool                      { return true }
func (f *fakeScaler) CheckGradient(g backend.Tensor, n int) { f.checks++ }
func (f *fakeScaler) EndStep()                              { f.steps++ }
func (f *fakeScaler) LossScaleState() backend.Tensor        { return f.state }

// A profiled backend passes the loss scaler on, timing its calls, and
// scales nothing where the backend does not.
func TestProfilePassesTheLossScalerOn(t *testing.T) {
	be, _ := backend.Profile(cpu.New())
	defer be.Close()
	if ls, ok := be.(backend.LossScaler); !ok || ls.ScalesLoss() || ls.LossScaleState() != nil {
		t.Error("the profiled CPU backend scales the loss")
	}
	inner := cpu.New()
	f := &fakeScaler{Backend: inner, state: inner.Alloc(backend.LossScaleStateLen)}
	wrapped, times := backend.Profile(f)
	defer wrapped.Close()
	ls, ok := wrapped.(backend.LossScaler)
	if !ok || !ls.ScalesLoss() || ls.LossScaleState() != f.state {
		t.Fatal("the profiled backend hides its loss scaler")
	}
	ls.CheckGradient(f.state, 4)
	ls.EndStep()
	if f.checks != 1 || f.steps != 1 {
		t.Errorf("the scaler got %d checks and %d step ends, want 1 and 1", f.checks, f.steps)
	}
	names := map[string]bool{}
	for _, r := range times.Rows() {
		names[r.Op] = true
	}
	if !names["CheckGradient"] || !names["EndStep"] {
		t.Errorf("profile rows %v lack the scaler's calls", names)
	}
}

// fakeTimer is a CPU backend that times spans on a pretend device: span
// k of each read lasts k+1 ms.
type fakeTimer struct {
	backend.Backend
	open, marked int
	reads        int
}

func (f *fakeTimer) StartSpan() { f.open++ }
func (f *fakeTimer) EndSpan()   { f.open--; f.marked++ }
func (f *fakeTimer) Spans() ([]time.Duration, error) {
	spans := make([]time.Duration, f.marked)
	for k := range spans {
		spans[k] = time.Duration(k+1) * time.Millisecond
	}
	f.marked = 0
	f.reads++
	return spans, nil
}

// On a DeviceTimer the profile marks a span around each op without
// waiting, and adds the spans' device times, read at Sync, in op order.
func TestProfileUsesDeviceSpans(t *testing.T) {
	f := &fakeTimer{Backend: cpu.New()}
	be, times := backend.Profile(f)
	defer be.Close()
	if !times.Device {
		t.Fatal("OpTimes.Device is false for a DeviceTimer")
	}
	x := be.Alloc(8)
	be.Fill(x, 1, 8)        // span 1: 1 ms
	be.ReLUForward(x, x, 8) // span 2: 2 ms
	be.ReLUForward(x, x, 8) // span 3: 3 ms
	if rows := times.Rows(); len(rows) != 0 || f.reads != 0 {
		t.Fatalf("spans read before Sync: %v, %d reads", rows, f.reads)
	}
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	got := map[string]backend.OpTime{}
	for _, r := range times.Rows() {
		got[r.Op] = r
	}
	if r := got["Fill"]; r.Calls != 1 || r.Total != time.Millisecond {
		t.Errorf("Fill: %+v, want 1 call of 1 ms", r)
	}
	if r := got["ReLUForward"]; r.Calls != 2 || r.Total != 5*time.Millisecond {
		t.Errorf("ReLUForward: %+v, want 2 calls, 5 ms", r)
	}
	if f.open != 0 || f.reads != 1 {
		t.Errorf("%d spans left open, %d reads; want 0 and 1", f.open, f.reads)
	}
	if err := be.Sync(); err != nil || f.reads != 1 {
		t.Errorf("a Sync with no spans pending read them (%d reads, %v)", f.reads, err)
	}
	// Without a Sync, the spans are read every 4096 ops, so the device's
	// marks stay bounded.
	times.Reset()
	for range 4096 {
		be.Fill(x, 1, 8)
	}
	if f.reads != 2 || f.marked != 0 {
		t.Errorf("after 4096 ops: %d reads, %d spans unread; want 2 and 0", f.reads, f.marked)
	}
	if rows := times.Rows(); len(rows) != 1 || rows[0].Calls != 4096 {
		t.Errorf("after 4096 ops: rows %v, want 4096 Fills", rows)
	}
}
