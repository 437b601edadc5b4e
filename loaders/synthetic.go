package loaders

import "math/rand/v2"

// Synthetic returns a dataset of random c×side×side images and labels,
// normalized like MNIST (one channel) or CIFAR-10 (three), for benchmarks
// that must not depend on files.
func Synthetic(train, c, side, classes int, seed uint64) *Dataset {
	rng := rand.New(rand.NewPCG(seed, 0x5e7))
	size := c * side * side
	split := func(n int) Split {
		s := Split{Images: make([]byte, n*size), Labels: make([]byte, n), N: n}
		for i := range s.Images {
			s.Images[i] = byte(rng.IntN(256))
		}
		for i := range s.Labels {
			s.Labels[i] = byte(rng.IntN(classes))
		}
		return s
	}
	d := &Dataset{Name: "synthetic", Channels: c, Height: side, Width: side, Classes: classes,
		Mean: make([]float32, c), Std: make([]float32, c), Train: split(train), Val: split(100), Test: split(100),
		SplitNote: "synthetic random images"}
	for i := range d.Mean {
		d.Mean[i], d.Std[i] = 0.5, 0.25
	}
	return d
}
