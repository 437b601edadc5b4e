package loaders

import "math/rand/v2"

// EpochOrder returns the order in which an epoch visits n training samples:
// a permutation drawn from (seed, epoch) alone, so a resumed run sees the
// same order as an uninterrupted one.
func EpochOrder(n int, seed uint64, epoch int) []int {
	rng := rand.New(rand.NewPCG(seed, 0x5eed0000+uint64(epoch)))
	return rng.Perm(n)
}

// Augmentation is the random transformation of training images: a crop
// of the original size from the image zero-padded by CropPad pixels on each
// side, then a horizontal flip with probability ½ (torchvision's
// RandomCrop(size, padding) and RandomHorizontalFlip, in that order).
type Augmentation struct {
	CropPad int
	Flip    bool
	// Random asks a streamed split's source for its training transform
	// (ImageNet's RandomResizedCrop and flip); without it, training images
	// get the evaluation transform.
	Random bool
}

// On says whether the augmentation changes anything.
func (a Augmentation) On() bool { return a.CropPad > 0 || a.Flip || a.Random }

// BatchRNG is the random source of one training batch's augmentation,
// reseeded per (seed, epoch, batch) so a resumed run augments exactly as an
// uninterrupted one. It allocates nothing after NewBatchRNG.
type BatchRNG struct {
	pcg *rand.PCG
	rng *rand.Rand
}

// NewBatchRNG returns an unseeded BatchRNG.
func NewBatchRNG() *BatchRNG {
	pcg := rand.NewPCG(0, 0)
	return &BatchRNG{pcg: pcg, rng: rand.New(pcg)}
}

// Seed positions the source for one batch.
func (r *BatchRNG) Seed(seed uint64, epoch, batch int) {
	r.pcg.Seed(seed^0xa06e, uint64(epoch)<<32|uint64(batch))
}

// FillTrainBatch is FillBatch with the dataset's training augmentation
// drawn from rng.
func (d *Dataset) FillTrainBatch(x, labels []float32, s *Split, idx []int, rng *BatchRNG) int {
	if s.Source != nil {
		if !d.Augment.Random {
			rng = nil
		}
		return d.fillFromSource(x, labels, s.Source, idx, rng)
	}
	if !d.Augment.On() {
		return d.FillBatch(x, labels, s, idx)
	}
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
	return len(idx)
}

// FillBatch writes the normalized images (pixel/255 − mean) / std and the
// labels of the samples idx of s into x and labels, which hold at least
// len(idx) samples, and returns how many it wrote: all of them, except
// unreadable images of a streamed split, which are reported and left out.
// Labels are written as float32 class indices.
func (d *Dataset) FillBatch(x, labels []float32, s *Split, idx []int) int {
	if s.Source != nil {
		return d.fillFromSource(x, labels, s.Source, idx, nil)
	}
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
	return len(idx)
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
