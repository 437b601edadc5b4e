//go:build cuda

package cuda_test

import (
	"strings"
	"testing"

	"iterbin/backend"
	"iterbin/cuda"
)

// The CUDA backend times ops on the device for the profiler
// (backend.DeviceTimer): one positive span per op, read at Sync, the
// results the same as unprofiled; unbalanced marks are reported, not
// read.
func TestProfileTimesOpsOnTheDevice(t *testing.T) {
	gpu := openGPU(t, cuda.Options{}, false)
	defer gpu.Close()
	if _, ok := gpu.(backend.DeviceTimer); !ok {
		t.Fatal("the CUDA backend is not a backend.DeviceTimer")
	}
	be, times := backend.Profile(gpu)
	if !times.Device {
		t.Fatal("the profile of the CUDA backend does not time ops on the device")
	}
	const n = 1 << 16
	x, y := be.Alloc(n), be.Alloc(n)
	values := make([]float32, n)
	for i := range values {
		values[i] = float32(i%7) - 3
	}
	be.Upload(x, values)
	for range 3 {
		be.ReLUForward(y, x, n)
	}
	be.Add(y, y, x, n)
	got := make([]float32, n)
	be.Download(got, y)
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	for i, v := range values {
		if want := max(v, 0) + v; got[i] != want {
			t.Fatalf("element %d: %v, want %v", i, got[i], want)
		}
	}
	rows := map[string]backend.OpTime{}
	for _, r := range times.Rows() {
		rows[r.Op] = r
		if r.Total <= 0 {
			t.Errorf("%s: %v on the device", r.Op, r.Total)
		}
	}
	for op, calls := range map[string]int{"Upload": 1, "ReLUForward": 3, "Add": 1, "Download": 1} {
		if rows[op].Calls != calls {
			t.Errorf("%s: %d calls timed, want %d (rows %v)", op, rows[op].Calls, calls, times.Rows())
		}
	}
	t.Logf("device times: %v", times.Rows())

	timer := gpu.(backend.DeviceTimer)
	timer.EndSpan()
	if err := gpu.Sync(); err == nil || !strings.Contains(err.Error(), "EndSpan without StartSpan") {
		t.Errorf("an EndSpan without StartSpan: Sync says %v", err)
	}
}
