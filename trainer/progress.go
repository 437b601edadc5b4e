package trainer

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Progress reports an epoch while it runs: on a terminal a live bar,
// redrawn up to five times a second; elsewhere (a log file, docker logs)
// one plain line a minute, for epochs that take that long. A nil *Progress
// reports nothing.
type Progress struct {
	w        io.Writer
	terminal bool
	every    time.Duration
	last     time.Time
	drew     bool
}

// NewProgress returns a Progress on f: a bar if f is a terminal, plain
// lines every minute otherwise.
func NewProgress(f *os.File) *Progress {
	fi, err := f.Stat()
	if err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		return &Progress{w: f, terminal: true, every: 200 * time.Millisecond}
	}
	return &Progress{w: f, every: time.Minute, last: time.Now()}
}

// due says whether it is time to report again.
func (p *Progress) due() bool {
	if p == nil {
		return false
	}
	now := time.Now()
	if now.Sub(p.last) < p.every {
		return false
	}
	p.last = now
	return true
}

func (p *Progress) step(epoch, epochs, done, total int, loss float64, elapsed time.Duration) {
	if p == nil {
		return
	}
	rate := float64(done) / max(elapsed.Seconds(), 1e-9)
	eta := time.Duration(float64(total-done) / max(rate, 1e-9) * float64(time.Second)).Round(time.Second)
	pct := 100 * done / max(total, 1)
	if !p.terminal {
		fmt.Fprintf(p.w, "  epoch %d/%d: %d/%d images (%d%%), loss %.4f, %.0f img/s, eta %v\n", epoch, epochs, done, total, pct, loss, rate, eta)
		return
	}
	const width = 30
	filled := width * done / max(total, 1)
	fmt.Fprintf(p.w, "\r  epoch %d/%d [%s%s] %3d%%  loss %.4f  %.0f img/s  eta %v \x1b[K",
		epoch, epochs, strings.Repeat("=", filled), strings.Repeat(" ", width-filled), pct, loss, rate, eta)
	p.drew = true
}

func (p *Progress) clear() {
	if p == nil || !p.drew {
		return
	}
	fmt.Fprint(p.w, "\r\x1b[K")
	p.drew = false
}
