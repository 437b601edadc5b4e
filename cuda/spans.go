//go:build cuda

package cuda

// Device timing of ops for the profiler (backend.DeviceTimer): events
// recorded on the compute stream around each op, read back in one wait.

import (
	"errors"
	"fmt"
	"time"

	"gorgonia.org/cu"
)

// spanMarks are the timing events of the profiler's spans: marks[2k] and
// marks[2k+1] bound span k; used counts the marks queued since the last
// Spans. The events are made as needed and kept for the next spans.
type spanMarks struct {
	events []cu.Event
	used   int
}

// mark records the next span event on the compute stream.
func (b *Backend) mark() {
	if b.err != nil {
		return
	}
	m := &b.spans
	if m.used == len(m.events) {
		ev, err := cu.MakeEvent(cu.DefaultEvent)
		if err != nil {
			b.fail(fmt.Errorf("cuda: cuEventCreate: %v", err))
			return
		}
		m.events = append(m.events, ev)
	}
	if err := m.events[m.used].Record(b.stream); err != nil {
		b.fail(fmt.Errorf("cuda: cuEventRecord: %v", err))
		return
	}
	m.used++
}

// StartSpan queues the start of a span after the work queued so far
// (backend.DeviceTimer).
func (b *Backend) StartSpan() {
	if b.spans.used%2 != 0 {
		b.fail(errors.New("cuda: internal error: StartSpan inside a span"))
		return
	}
	b.mark()
}

// EndSpan queues the end of the span StartSpan began.
func (b *Backend) EndSpan() {
	if b.spans.used%2 != 1 {
		b.fail(errors.New("cuda: internal error: EndSpan without StartSpan"))
		return
	}
	b.mark()
}

// Spans waits for the last span to end and returns each span's device
// time since the last call, in order. Its errors are recorded, as any
// op's are.
func (b *Backend) Spans() ([]time.Duration, error) {
	m := &b.spans
	defer func() { m.used = 0 }()
	if b.err != nil {
		return nil, b.err
	}
	if m.used%2 != 0 {
		b.fail(errors.New("cuda: internal error: Spans inside a span"))
		return nil, b.err
	}
	if m.used == 0 {
		return nil, nil
	}
	if err := m.events[m.used-1].Synchronize(); err != nil {
		b.fail(fmt.Errorf("cuda: cuEventSynchronize: %v", err))
		return nil, b.err
	}
	spans := make([]time.Duration, m.used/2)
	for k := range spans {
		ms, err := m.events[2*k].Elapsed(m.events[2*k+1])
		if err != nil {
			b.fail(fmt.Errorf("cuda: cuEventElapsedTime: %v", err))
			return nil, b.err
		}
		spans[k] = time.Duration(float64(ms) * float64(time.Millisecond))
	}
	return spans, nil
}

// freeSpans destroys the span events.
func (b *Backend) freeSpans() {
	for i := range b.spans.events {
		cu.DestroyEvent(&b.spans.events[i])
	}
	b.spans = spanMarks{}
}
