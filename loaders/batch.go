package loaders

import "math/rand/v2"

// EpochOrder returns the order in which an epoch visits n training samples:
// a permutation drawn from (seed, epoch) alone, so a resumed run sees the
// same order as an uninterrupted one.
func EpochOrder(n int, seed uint64, epoch int) []int {
	rng := rand.New(rand.NewPCG(seed, 0x5eed0000+uint64(epoch)))
	return rng.Perm(n)
}

// FillBatch writes the normalized images (pixel/255 − mean) / std and the
// labels of the samples idx of s into x and labels, which hold at least
// len(idx) samples. Labels are written as float32 class indices.
func (d *Dataset) FillBatch(x, labels []float32, s *Split, idx []int) {
	ss := d.SampleSize()
	plane := d.Height * d.Width
	for b, i := range idx {
		src := s.Images[i*ss : (i+1)*ss]
		dst := x[b*ss : (b+1)*ss]
		for c := 0; c < d.Channels; c++ {
			mean, std := d.Mean[c], d.Std[c]
			for p := c * plane; p < (c+1)*plane; p++ {
				dst[p] = (float32(src[p])/255 - mean) / std
			}
		}
		labels[b] = float32(s.Labels[i])
	}
}

// Batches splits n samples into consecutive batches of size (the last may be
// smaller, as PyTorch's DataLoader without drop_last) and calls fn with the
// index range of each.
func Batches(n, size int, fn func(lo, hi int) error) error {
	for lo := 0; lo < n; lo += size {
		if err := fn(lo, min(lo+size, n)); err != nil {
			return err
		}
	}
	return nil
}
