//go:build cuda

package cuda_test

import (
	"strings"
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

// TestAsyncDownloadKeepsTheValuesWhenQueued: DownloadAsync's copy holds
// the values of the time it was queued, not those of work queued after
// it, and WaitDownload reports a bad label from the work before the copy.
func TestAsyncDownloadKeepsTheValuesWhenQueued(t *testing.T) {
	gpu, err := cuda.New(0, cuda.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer gpu.Close()
	async, ok := gpu.(backend.AsyncDownloader)
	if !ok {
		t.Fatalf("%s does not implement backend.AsyncDownloader", gpu.Name())
	}
	const n = 1 << 24 // later work long enough to still run at the wait
	x, big := gpu.Alloc(5), gpu.Alloc(n)
	gpu.Fill(x, 1.5, 5)
	async.DownloadAsync(0, x, 3)
	gpu.Fill(x, -2, 5)
	async.DownloadAsync(1, x, 2)
	for range 20 {
		gpu.ReLUForward(big, big, n)
	}
	gpu.Fill(x, 7, 5)
	got0, got1 := make([]float32, 3), make([]float32, 2)
	if err := async.WaitDownload(0, got0); err != nil {
		t.Fatal(err)
	}
	if err := async.WaitDownload(1, got1); err != nil {
		t.Fatal(err)
	}
	if got0[0] != 1.5 || got0[2] != 1.5 || got1[0] != -2 || got1[1] != -2 {
		t.Fatalf("slot 0 %v (want 1.5s), slot 1 %v (want -2s)", got0, got1)
	}
	// A label that is no class, then a copy: WaitDownload reports it.
	logp, labels, sums := gpu.Alloc(20), gpu.Alloc(2), gpu.Alloc(3)
	gpu.Upload(labels, []float32{1, 12})
	gpu.NLLLoss(sums, logp, labels, 2, 10)
	async.DownloadAsync(0, sums, 3)
	if err := async.WaitDownload(0, make([]float32, 3)); err == nil || !strings.Contains(err.Error(), "label") {
		t.Fatalf("WaitDownload after a bad label: %v", err)
	}
}
