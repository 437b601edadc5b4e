//go:build cuda

package cuda_test

import (
	"testing"

	"iterbin/backend"
	"iterbin/cuda"
)

// TestLargeUploadsKeepStreamOrder checks the overlapped path of large
// uploads (a copy stream, then a device-to-device copy): each op sees the
// data uploaded before it was queued and not the next upload into the same
// tensor, even when the host slice is rewritten at once, and small and
// large uploads interleave.
func TestLargeUploadsKeepStreamOrder(t *testing.T) {
	gpu, err := cuda.New(0, cuda.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer gpu.Close()
	const n = 3 << 20 // 12 MB: the overlapped path
	x, small := gpu.Alloc(n), gpu.Alloc(1000)
	const rounds = 6
	ys := make([]backend.Tensor, rounds)
	host := make([]float32, n)
	smallHost := make([]float32, 1000)
	for r := range rounds {
		for i := range host {
			host[i] = float32(r*7 + i%1000)
		}
		gpu.Upload(x, host)
		for i := range smallHost {
			smallHost[i] = float32(-r)
		}
		gpu.Upload(small, smallHost)
		// The op reads x after the upload; the next round's upload into x
		// must wait for it. Nothing waits for the device until the end.
		ys[r] = gpu.Alloc(n)
		gpu.ReLUForward(ys[r], x, n)
	}
	lastSmall := make([]float32, 1000)
	gpu.Download(lastSmall, small)
	if err := gpu.Sync(); err != nil {
		t.Fatal(err)
	}
	out := make([]float32, n)
	for r, y := range ys {
		gpu.Download(out, y)
		if err := gpu.Sync(); err != nil {
			t.Fatal(err)
		}
		for i, v := range out {
			if want := float32(r*7 + i%1000); v != want {
				t.Fatalf("round %d: element %d = %v, want %v", r, i, v, want)
			}
		}
	}
	if lastSmall[0] != -(rounds-1) || lastSmall[999] != -(rounds-1) {
		t.Fatalf("small upload: got %v…%v, want %d", lastSmall[0], lastSmall[999], -(rounds - 1))
	}
}
