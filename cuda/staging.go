//go:build cuda

package cuda

/*
#cgo linux CFLAGS: -I/usr/local/cuda/include
#cgo linux LDFLAGS: -L/usr/local/cuda/lib64 -L/usr/local/cuda/lib64/stubs -lcuda
#include <cuda.h>
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"gorgonia.org/cu"
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
