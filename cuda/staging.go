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
// copy, two uploads back) and queues an asynchronous copy to the device on
// the stream. So an upload does not wait for the step that is running, and
// the caller may reuse its slice at once.

type stagingSlot struct {
	ptr   unsafe.Pointer
	bytes int
	event cu.Event
	used  bool
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

func (b *Backend) freeStaging() {
	for i := range b.staging.slots {
		s := &b.staging.slots[i]
		if s.ptr != nil {
			C.cuMemFreeHost(s.ptr)
		}
		if s.event != (cu.Event{}) {
			cu.DestroyEvent(&s.event)
		}
		*s = stagingSlot{}
	}
}
