package trainer

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"iterbin/backend"
	"iterbin/backend/cpu"
)

// Optional tensors (the loss scaler's state, which only an fp16 run has)
// may be missing on either side of a checkpoint read; required ones must
// match name for name, length for length.
func TestCheckpointOptionalTensors(t *testing.T) {
	be := cpu.New()
	defer be.Close()
	tensor := func(v ...float32) backend.Tensor {
		x := be.Alloc(len(v))
		be.Upload(x, v)
		return x
	}
	values := func(x backend.Tensor) []float32 {
		v := make([]float32, x.Len())
		be.Download(v, x)
		return v
	}
	dir := t.TempDir()
	write := func(name string, ts []NamedTensor) string {
		path := filepath.Join(dir, name)
		if err := WriteCheckpoint(path, be, CheckpointHeader{NextEpoch: 1}, ts); err != nil {
			t.Fatal(err)
		}
		return path
	}
	withScale := write("fp16.bin", []NamedTensor{
		{Name: "w", Len: 2, T: tensor(1, 2)},
		{Name: "w.adam_m", Len: 2, T: tensor(3, 4)},
		{Name: LossScaleName, Len: 4, T: tensor(1024, 0, 7, 2), Optional: true},
	})
	plain := write("fp32.bin", []NamedTensor{
		{Name: "w", Len: 2, T: tensor(5, 6)},
		{Name: "w.adam_m", Len: 2, T: tensor(7, 8)},
	})

	// An fp16 checkpoint read where there is no scaler (export on the CPU).
	w, m := be.Alloc(2), be.Alloc(2)
	if _, err := ReadCheckpoint(withScale, be, []NamedTensor{{Name: "w", Len: 2, T: w}, {Name: "w.adam_m", Len: 2, T: m}}); err != nil {
		t.Fatalf("reading an optional tensor's checkpoint without it: %v", err)
	}
	if !slices.Equal(values(w), []float32{1, 2}) || !slices.Equal(values(m), []float32{3, 4}) {
		t.Errorf("read %v %v, want [1 2] [3 4]", values(w), values(m))
	}

	// Both have it: it is read.
	scale := tensor(65536, 0, 0, 0)
	ts := []NamedTensor{{Name: "w", Len: 2, T: w}, {Name: "w.adam_m", Len: 2, T: m}, {Name: LossScaleName, Len: 4, T: scale, Optional: true}}
	if _, err := ReadCheckpoint(withScale, be, ts); err != nil {
		t.Fatal(err)
	}
	if got := values(scale); !slices.Equal(got, []float32{1024, 0, 7, 2}) {
		t.Errorf("loss scale read as %v, want [1024 0 7 2]", got)
	}

	// A checkpoint without it leaves the reader's as it is.
	be.Upload(scale, []float32{65536, 0, 0, 0})
	if _, err := ReadCheckpoint(plain, be, ts); err != nil {
		t.Fatalf("reading a checkpoint that lacks an optional tensor: %v", err)
	}
	if got := values(scale); !slices.Equal(got, []float32{65536, 0, 0, 0}) || !slices.Equal(values(w), []float32{5, 6}) {
		t.Errorf("after reading the fp32 checkpoint: scale %v, w %v", got, values(w))
	}

	// Required tensors still must match.
	for _, c := range []struct {
		name string
		ts   []NamedTensor
		want string
	}{
		{"one missing", []NamedTensor{{Name: "w", Len: 2, T: w}}, "holds 2 tensors, this model has 1"},
		{"one more", append(slices.Clone(ts[:2]), NamedTensor{Name: "b", Len: 1, T: be.Alloc(1)}), "holds 2 tensors, this model has 3"},
		{"renamed", []NamedTensor{{Name: "v", Len: 2, T: w}, {Name: "w.adam_m", Len: 2, T: m}}, "tensor 0 is w (2 values), this model expects v (2 values)"},
		{"resized", []NamedTensor{{Name: "w", Len: 3, T: be.Alloc(3)}, {Name: "w.adam_m", Len: 2, T: m}}, "tensor 0 is w (2 values), this model expects w (3 values)"},
	} {
		if _, err := ReadCheckpoint(withScale, be, c.ts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
	if data, err := os.ReadFile(withScale); err != nil || !strings.Contains(string(data), `"optional":true`) {
		t.Errorf("the checkpoint's header does not mark the optional tensor (%v)", err)
	}
}
