package trainer

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Progress draws a live bar during each epoch when its writer is a
// terminal; otherwise it draws nothing and runs print one plain line per
// epoch. A nil *Progress draws nothing.
type Progress struct {
	w    io.Writer
	last time.Time
	drew bool
}

// NewProgress returns a Progress drawing on f if f is a terminal, else nil.
func NewProgress(f *os.File) *Progress {
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return &Progress{w: f}
}

// due says whether it is time to redraw (at most five times a second).
func (p *Progress) due() bool {
	if p == nil {
		return false
	}
	now := time.Now()
	if now.Sub(p.last) < 200*time.Millisecond {
		return false
	}
	p.last = now
	return true
}

func (p *Progress) step(epoch, epochs, done, total int, loss float64, elapsed time.Duration) {
	if p == nil {
		return
	}
	const width = 30
	filled := width * done / max(total, 1)
	rate := float64(done) / max(elapsed.Seconds(), 1e-9)
	eta := time.Duration(float64(total-done) / max(rate, 1e-9) * float64(time.Second)).Round(time.Second)
	fmt.Fprintf(p.w, "\r  epoch %d/%d [%s%s] %3d%%  loss %.4f  %.0f img/s  eta %v \x1b[K",
		epoch, epochs, strings.Repeat("=", filled), strings.Repeat(" ", width-filled), 100*done/max(total, 1), loss, rate, eta)
	p.drew = true
}

func (p *Progress) clear() {
	if p == nil || !p.drew {
		return
	}
	fmt.Fprint(p.w, "\r\x1b[K")
	p.drew = false
}
