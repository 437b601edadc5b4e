package loaders

import (
	"math"
	"testing"
)

// fillTrainBatchPerPixel is the augmentation written per output pixel, as
// the torchvision transforms define it: the reference the row-wise,
// table-driven and parallel FillTrainBatch must equal bit for bit.
func fillTrainBatchPerPixel(d *Dataset, x, labels []float32, s *Split, idx []int, rng *BatchRNG) {
	ss := d.SampleSize()
	h, w, pad := d.Height, d.Width, d.Augment.CropPad
	for b, i := range idx {
		top, left := rng.rng.IntN(2*pad+1)-pad, rng.rng.IntN(2*pad+1)-pad
		flip := d.Augment.Flip && rng.rng.IntN(2) == 1
		src := s.Images[i*ss : (i+1)*ss]
		dst := x[b*ss : (b+1)*ss]
		for c := 0; c < d.Channels; c++ {
			mean, std := d.Mean[c], d.Std[c]
			zero := (0 - mean) / std
			for r := 0; r < h; r++ {
				sr := r + top
				for col := 0; col < w; col++ {
					cc := col
					if flip {
						cc = w - 1 - col
					}
					sc := cc + left
					v := zero
					if sr >= 0 && sr < h && sc >= 0 && sc < w {
						v = (float32(src[(c*h+sr)*w+sc])/255 - mean) / std
					}
					dst[(c*h+r)*w+col] = v
				}
			}
		}
		labels[b] = float32(s.Labels[i])
	}
}

func TestFillTrainBatchEqualsPerPixelAugmentation(t *testing.T) {
	cases := []struct {
		name                   string
		n, channels, side, pad int
		flip                   bool
	}{
		{"cifar-like", 64, 3, 32, 4, true},
		{"pad wider than the image", 16, 3, 5, 7, true},
		{"one channel, no flip", 32, 1, 28, 2, false},
		{"flip only", 8, 3, 9, 0, true},
		// Over 4 Mi elements: filled by several goroutines.
		{"parallel", 48, 3, 200, 4, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := Synthetic(tc.n, tc.channels, tc.side, 10, 3)
			d.Augment = Augmentation{CropPad: tc.pad, Flip: tc.flip}
			idx := EpochOrder(tc.n, 5, 1)
			ss := d.SampleSize()
			got, want := make([]float32, tc.n*ss), make([]float32, tc.n*ss)
			gotY, wantY := make([]float32, tc.n), make([]float32, tc.n)
			for i := range got {
				got[i] = float32(math.NaN()) // every element must be written
			}
			for batch := range 3 {
				rng, ref := NewBatchRNG(), NewBatchRNG()
				rng.Seed(9, 2, batch)
				ref.Seed(9, 2, batch)
				if n := d.FillTrainBatch(got, gotY, &d.Train, idx, rng); n != tc.n {
					t.Fatalf("filled %d samples, want %d", n, tc.n)
				}
				fillTrainBatchPerPixel(d, want, wantY, &d.Train, idx, ref)
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						b, rest := i/ss, i%ss
						t.Fatalf("batch %d: sample %d element %d = %v, want %v", batch, b, rest, got[i], want[i])
					}
				}
				for i := range wantY {
					if gotY[i] != wantY[i] {
						t.Fatalf("label %d = %v, want %v", i, gotY[i], wantY[i])
					}
				}
			}
		})
	}
}

func BenchmarkFillTrainBatchImageNet(b *testing.B) {
	d := Synthetic(64, 3, 224, 1000, 1)
	d.Augment = Augmentation{CropPad: 4, Flip: true}
	idx := EpochOrder(64, 1, 0)
	x, y := make([]float32, 64*d.SampleSize()), make([]float32, 64)
	rng := NewBatchRNG()
	b.SetBytes(int64(4 * len(x)))
	for i := 0; b.Loop(); i++ {
		rng.Seed(1, 0, i)
		d.FillTrainBatch(x, y, &d.Train, idx, rng)
	}
}
