//go:build cuda

package cuda

/*
#cgo linux CFLAGS: -I/usr/local/cuda/include
#cgo linux LDFLAGS: -L/usr/local/cuda/lib64 -L/usr/local/cuda/lib64/stubs -lcuda
#include <cuda.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"gorgonia.org/cu"

	"iterbin/backend"
)

// Uploads go through two page-locked staging buffers: Upload copies the
// host slice into the next one (waiting only for that buffer's previous
// copy, two uploads back) and queues an asynchronous copy to the device.
// So an upload does not wait for the step that is running, and the caller
// may reuse its slice at once.
//
// A small upload is copied on the compute stream. A large one (a batch of
// images) is copied on a second stream into the slot's device buffer, so
// that the transfer runs while the previous step still computes; the
// compute stream then waits for it and copies device to device (a 154 MB
// ImageNet batch crosses PCIe in about 6 ms, and on-device in 0.1 ms).

// largeUploadBytes is the size from which uploads overlap computation.
const largeUploadBytes = 1 << 20

type stagingSlot struct {
	ptr   unsafe.Pointer
	bytes int
	// event follows the slot's last copy from ptr; used says one was
	// queued.
	event cu.Event
	used  bool
	// dev is the slot's device buffer (large uploads); consumed follows
	// the compute stream's last copy out of it, which the copy stream
	// waits for before it writes dev again.
	dev          cu.DevicePtr
	devBytes     int
	consumed     cu.Event
	consumedUsed bool
}

type staging struct {
	slots [2]stagingSlot
	next  int
}

// stage copies src into the next page-locked slot and returns it.
func (b *Backend) stage(src []float32) (*stagingSlot, error) {
	s := &b.staging.slots[b.staging.next]
	b.staging.next ^= 1
	if s.used {
		if err := s.event.Synchronize(); err != nil {
			return nil, fmt.Errorf("cuda: cuEventSynchronize: %v", err)
		}
	}
	need := 4 * len(src)
	if s.bytes < need {
		if s.ptr != nil {
			C.cuMemFreeHost(s.ptr)
			s.ptr, s.bytes = nil, 0
		}
		var p unsafe.Pointer
		if st := C.cuMemAllocHost(&p, C.size_t(need)); st != C.CUDA_SUCCESS {
			return nil, fmt.Errorf("cuda: cuMemAllocHost(%d bytes): error %d", need, int(st))
		}
		s.ptr, s.bytes = p, need
	}
	if s.event == (cu.Event{}) {
		ev, err := cu.MakeEvent(cu.DisableTiming)
		if err != nil {
			return nil, fmt.Errorf("cuda: cuEventCreate: %v", err)
		}
		s.event = ev
	}
	parallelCopy(unsafe.Slice((*float32)(s.ptr), len(src)), src)
	return s, nil
}

// parallelCopy is copy(dst, src), split among goroutines for large batches
// (an ImageNet batch is 154 MB, which one core copies in tens of
// milliseconds: as long as a whole bf16 training step).
func parallelCopy(dst, src []float32) {
	const chunk = 1 << 20 // floats per goroutine at least
	workers := min(runtime.GOMAXPROCS(0), len(src)/chunk)
	if workers < 2 {
		copy(dst, src)
		return
	}
	copyInParallel(dst, src, workers)
}

// copyInParallel is copy(dst, src) by workers goroutines. (Its own
// function: the goroutines' captured arguments would otherwise move
// parallelCopy's parameters to the heap on every upload.)
func copyInParallel(dst, src []float32, workers int) {
	var wg sync.WaitGroup
	for k := range workers {
		lo, hi := k*len(src)/workers, (k+1)*len(src)/workers
		wg.Go(func() { copy(dst[lo:hi], src[lo:hi]) })
	}
	wg.Wait()
}

// uploadOverlapped queues a large upload from slot (already filled by
// stage) to d: host to the slot's device buffer on the copy stream, then,
// once that is done, device to device on the compute stream.
func (b *Backend) uploadOverlapped(d cu.DevicePtr, slot *stagingSlot, bytes int) error {
	if slot.consumed == (cu.Event{}) {
		ev, err := cu.MakeEvent(cu.DisableTiming)
		if err != nil {
			return fmt.Errorf("cuda: cuEventCreate: %v", err)
		}
		slot.consumed = ev
	}
	if slot.devBytes < bytes {
		if slot.dev != 0 {
			// The compute stream may still be copying out of it.
			if err := slot.consumed.Synchronize(); err != nil {
				return fmt.Errorf("cuda: cuEventSynchronize: %v", err)
			}
			cu.MemFree(slot.dev)
			slot.dev, slot.devBytes = 0, 0
		}
		p, err := cu.MemAlloc(int64(bytes))
		if err != nil {
			return fmt.Errorf("cuda: cuMemAlloc(%d bytes) for an upload buffer: %v", bytes, err)
		}
		slot.dev, slot.devBytes = p, bytes
	}
	if slot.consumedUsed {
		if err := b.copyStream.Wait(slot.consumed, 0); err != nil {
			return fmt.Errorf("cuda: cuStreamWaitEvent: %v", err)
		}
	}
	if err := cu.MemcpyHtoDAsync(slot.dev, slot.ptr, int64(bytes), b.copyStream); err != nil {
		return fmt.Errorf("cuda: cuMemcpyHtoDAsync: %v", err)
	}
	if err := slot.event.Record(b.copyStream); err != nil {
		return fmt.Errorf("cuda: cuEventRecord: %v", err)
	}
	slot.used = true
	if err := b.stream.Wait(slot.event, 0); err != nil {
		return fmt.Errorf("cuda: cuStreamWaitEvent: %v", err)
	}
	if err := cu.MemcpyDtoDAsync(d, slot.dev, int64(bytes), b.stream); err != nil {
		return fmt.Errorf("cuda: cuMemcpyDtoDAsync: %v", err)
	}
	if err := slot.consumed.Record(b.stream); err != nil {
		return fmt.Errorf("cuda: cuEventRecord: %v", err)
	}
	slot.consumedUsed = true
	return nil
}

func (b *Backend) freeStaging() {
	for i := range b.staging.slots {
		s := &b.staging.slots[i]
		if s.ptr != nil {
			C.cuMemFreeHost(s.ptr)
		}
		if s.event != (cu.Event{}) {
			cu.DestroyEvent(&s.event)
		}
		if s.dev != 0 {
			cu.MemFree(s.dev)
		}
		if s.consumed != (cu.Event{}) {
			cu.DestroyEvent(&s.consumed)
		}
		*s = stagingSlot{}
	}
}

// asyncSlot is a page-locked host slot of DownloadAsync: room for
// backend.MaxAsyncDownload values, then the bad-label flag copied beside
// them, and the event that follows the copies.
type asyncSlot struct {
	host  unsafe.Pointer
	event cu.Event
	n     int
	used  bool
}

// asyncFlagOffset is where a slot keeps its copy of the bad-label flag.
const asyncFlagOffset = 4 * backend.MaxAsyncDownload

// DownloadAsync queues a copy of src's first n values into host slot slot
// on the stream and returns at once (backend.AsyncDownloader).
func (b *Backend) DownloadAsync(slot int, src backend.Tensor, n int) {
	if slot < 0 || slot >= len(b.async) || n < 0 || n > backend.MaxAsyncDownload {
		b.fail(fmt.Errorf("backend: DownloadAsync: slot %d, %d values: use slot 0 or 1 and at most %d values", slot, n, backend.MaxAsyncDownload))
		return
	}
	d := b.dev("DownloadAsync", "src", src, n)
	if d == 0 || b.err != nil {
		return
	}
	s := &b.async[slot]
	if s.host == nil {
		var p unsafe.Pointer
		if st := C.cuMemAllocHost(&p, C.size_t(asyncFlagOffset+4)); st != C.CUDA_SUCCESS {
			b.fail(fmt.Errorf("cuda: cuMemAllocHost: error %d", int(st)))
			return
		}
		s.host = p
		ev, err := cu.MakeEvent(cu.DisableTiming)
		if err != nil {
			b.fail(fmt.Errorf("cuda: cuEventCreate: %v", err))
			return
		}
		s.event = ev
	}
	if n > 0 {
		if err := cu.MemcpyDtoHAsync(s.host, d, int64(4*n), b.stream); err != nil {
			b.fail(fmt.Errorf("cuda: cuMemcpyDtoHAsync: %v", err))
			return
		}
	}
	flag := unsafe.Add(s.host, asyncFlagOffset)
	*(*uint32)(flag) = 0
	if b.badLabel != 0 {
		if err := cu.MemcpyDtoHAsync(flag, b.badLabel, 4, b.stream); err != nil {
			b.fail(fmt.Errorf("cuda: cuMemcpyDtoHAsync: %v", err))
			return
		}
	}
	if err := s.event.Record(b.stream); err != nil {
		b.fail(fmt.Errorf("cuda: cuEventRecord: %v", err))
		return
	}
	s.n, s.used = n, true
}

// WaitDownload waits for slot's copy, not for work queued after it, and
// copies its values into dst (backend.AsyncDownloader).
func (b *Backend) WaitDownload(slot int, dst []float32) error {
	switch {
	case slot < 0 || slot >= len(b.async):
		b.fail(fmt.Errorf("backend: WaitDownload: slot %d: use slot 0 or 1", slot))
		return b.err
	case !b.async[slot].used || len(dst) > b.async[slot].n:
		b.fail(fmt.Errorf("backend: WaitDownload: slot %d holds %d values, %d asked for", slot, b.async[slot].n, len(dst)))
		return b.err
	}
	s := &b.async[slot]
	if err := s.event.Synchronize(); err != nil {
		b.fail(fmt.Errorf("cuda: cuEventSynchronize: %v", err))
		return b.err
	}
	if *(*uint32)(unsafe.Add(s.host, asyncFlagOffset)) != 0 {
		b.fail(errors.New("backend: NLLLoss: a label is not a class index"))
	}
	copy(dst, unsafe.Slice((*float32)(s.host), len(dst)))
	return b.err
}

func (b *Backend) freeAsync() {
	for i := range b.async {
		s := &b.async[i]
		if s.host != nil {
			C.cuMemFreeHost(s.host)
		}
		if s.event != (cu.Event{}) {
			cu.DestroyEvent(&s.event)
		}
		*s = asyncSlot{}
	}
}

var _ backend.AsyncDownloader = (*Backend)(nil)
