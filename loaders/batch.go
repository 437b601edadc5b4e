package loaders

import (
	"math/rand/v2"
	"runtime"
	"sync"
)

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
	// Scratch reused from batch to batch: each sample's crop, and the
	// normalized value of each pixel value per channel.
	crops []sampleCrop
	lut   []float32
}

// sampleCrop is one sample's augmentation: the crop's offset in the padded
// image and whether it is flipped.
type sampleCrop struct {
	top, left int
	flip      bool
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
	// Draw every sample's crop and flip first, in order, so that the batch
	// is the same however many goroutines fill it.
	pad := d.Augment.CropPad
	rng.crops = rng.crops[:0]
	for range idx {
		top, left := rng.rng.IntN(2*pad+1)-pad, rng.rng.IntN(2*pad+1)-pad
		flip := d.Augment.Flip && rng.rng.IntN(2) == 1
		rng.crops = append(rng.crops, sampleCrop{top: top, left: left, flip: flip})
	}
	// Normalized values of the 256 pixel values per channel, computed as
	// the per-pixel formula would.
	rng.lut = rng.lut[:0]
	for c := 0; c < d.Channels; c++ {
		mean, std := d.Mean[c], d.Std[c]
		for v := 0; v < 256; v++ {
			rng.lut = append(rng.lut, (float32(v)/255-mean)/std)
		}
	}
	// Large batches (ImageNet-sized images) are filled by several
	// goroutines; small ones are not worth the start-up (nor its
	// allocations).
	workers := min(runtime.GOMAXPROCS(0), len(idx)/4)
	if workers < 2 || len(idx)*d.SampleSize() < 1<<22 {
		d.fillCroppedRange(x, labels, s, idx, rng, 0, len(idx))
		return len(idx)
	}
	d.fillCroppedParallel(x, labels, s, idx, rng, workers)
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

// fillCroppedParallel fills the batch in workers goroutines. (Its own
// function: the goroutines' captured arguments would otherwise move
// FillTrainBatch's parameters to the heap on every call.)
func (d *Dataset) fillCroppedParallel(x, labels []float32, s *Split, idx []int, rng *BatchRNG, workers int) {
	var wg sync.WaitGroup
	for k := range workers {
		wg.Go(func() { d.fillCroppedRange(x, labels, s, idx, rng, k*len(idx)/workers, (k+1)*len(idx)/workers) })
	}
	wg.Wait()
}

// fillCroppedRange fills batch positions [lo, hi) with their samples'
// crops (drawn into rng.crops) and labels.
func (d *Dataset) fillCroppedRange(x, labels []float32, s *Split, idx []int, rng *BatchRNG, lo, hi int) {
	ss := d.SampleSize()
	for b := lo; b < hi; b++ {
		i := idx[b]
		d.fillCropped(x[b*ss:(b+1)*ss], s.Images[i*ss:(i+1)*ss], rng.crops[b], rng.lut)
		labels[b] = float32(s.Labels[i])
	}
}

// fillCropped writes one sample's crop (rows and columns shifted by the
// crop's offset, zero-padded, then flipped if asked) of src, normalized
// through lut (256 values per channel), into dst.
func (d *Dataset) fillCropped(dst []float32, src []uint8, crop sampleCrop, lut []float32) {
	h, w := d.Height, d.Width
	// Output columns [c0, c1) read source columns in range.
	c0, c1 := max(0, -crop.left), min(w, w-crop.left)
	if crop.flip {
		c0, c1 = max(0, crop.left), min(w, w+crop.left)
	}
	for c := 0; c < d.Channels; c++ {
		table := lut[c*256 : (c+1)*256]
		zero := table[0] // what zero padding normalizes to
		for r := 0; r < h; r++ {
			out := dst[(c*h+r)*w : (c*h+r+1)*w]
			sr := r + crop.top
			if sr < 0 || sr >= h || c0 >= c1 {
				for col := range out {
					out[col] = zero
				}
				continue
			}
			in := src[(c*h+sr)*w : (c*h+sr+1)*w]
			for col := 0; col < c0; col++ {
				out[col] = zero
			}
			if crop.flip {
				for col := c0; col < c1; col++ {
					out[col] = table[in[w-1-col+crop.left]]
				}
			} else {
				for col := c0; col < c1; col++ {
					out[col] = table[in[col+crop.left]]
				}
			}
			for col := c1; col < w; col++ {
				out[col] = zero
			}
		}
	}
}
