package trainer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"iterbin/loaders"
)

// syntheticMNIST is an in-memory dataset of MNIST's shape with random
// pixels, so benchmarks measure training, not file reading.
func syntheticMNIST(n int) *loaders.Dataset { return syntheticImages(n, 1, 28) }

// syntheticImages is a random dataset of n c×side×side images.
func syntheticImages(n, c, side int) *loaders.Dataset {
	rng := rand.New(rand.NewPCG(1, 2))
	size := c * side * side
	split := func(n int) loaders.Split {
		s := loaders.Split{Images: make([]byte, n*size), Labels: make([]byte, n), N: n}
		for i := range s.Images {
			s.Images[i] = byte(rng.IntN(256))
		}
		for i := range s.Labels {
			s.Labels[i] = byte(rng.IntN(10))
		}
		return s
	}
	name, mean, std := "mnist", []float32{0.1307}, []float32{0.3081}
	if c == 3 {
		name, mean, std = "cifar10", []float32{0.4914, 0.4822, 0.4465}, []float32{0.2023, 0.1994, 0.2010}
	}
	return &loaders.Dataset{Name: name, Channels: c, Height: side, Width: side, Classes: 10,
		Mean: mean, Std: std, Train: split(n), Val: split(100), Test: split(100)}
}

// BenchmarkTrainStep measures whole training steps (batch fill and upload,
// forward, backward, optimizer update, binarization) at the paper's batch
// sizes. img/s is the figure to compare; allocs/op is per step.
func BenchmarkTrainStep(b *testing.B) {
	type model struct {
		name     string
		arch     string
		hidden   []int
		channels int
		side     int
		batch    int
	}
	for _, m := range []model{
		{"mlp-784-300-100-10", "mlp", []int{300, 100}, 1, 28, 100},
		{"mlp-784-784-784-10", "mlp", []int{784, 784}, 1, 28, 100},
		{"vgg5-cifar10", "vgg5", nil, 3, 32, 100},
		{"resnet20-cifar10", "resnet20", nil, 3, 32, 128},
	} {
		for _, mode := range []string{"float", "binary"} {
			b.Run(m.name+"/"+mode, func(b *testing.B) {
				cfg := Default()
				cfg.Model.Arch, cfg.Model.Hidden = m.arch, m.hidden
				if m.channels == 3 {
					cfg.Data.Dataset = "cifar10"
				}
				cfg.Binarize.Mode = mode
				cfg.Train.BatchSize, cfg.Train.TestBatchSize = m.batch, m.batch
				const steps = 8
				data := syntheticImages(m.batch*steps, m.channels, m.side)
				data.Augment = loaders.Augmentation{CropPad: 4, Flip: m.channels == 3}
				be, _ := OpenBackend("cpu")
				layers, _ := binarizableLayers(&cfg)
				s, err := newSession(&cfg, be, data, Schedule{Mode: mode, Order: layers}, 1, cfg.Train.ScheduleConfig, false, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer s.free()
				set := map[string]bool{}
				for _, l := range s.sched.BinaryAt(0) {
					set[l] = true
				}
				s.model.SetBinary(set)
				order := loaders.EpochOrder(data.Train.N, 1, 0)
				size := data.SampleSize()
				step := func(i int) {
					lo := (i % steps) * m.batch
					s.augRNG.Seed(1, 0, i)
					data.FillTrainBatch(s.xHost, s.yHost, &data.Train, order[lo:lo+m.batch], s.augRNG)
					be.Upload(s.x, s.xHost[:m.batch*size])
					be.Upload(s.labels, s.yHost[:m.batch])
					s.model.Forward(s.sums, s.x, s.labels, m.batch, true)
					s.model.Backward(s.labels, m.batch)
					s.opt.Step(0.1)
					s.model.ClipLatent()
				}
				step(0)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					step(i)
				}
				b.StopTimer()
				if err := be.Err(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N*m.batch)/b.Elapsed().Seconds(), "img/s")
			})
		}
	}
}

// BenchmarkEpoch measures epochs of 55,000 synthetic images with
// evaluation, as a run reports them; iterative mode cycles through its three
// stages (one, two, three binary layers).
func BenchmarkEpoch(b *testing.B) {
	for _, hidden := range [][]int{{300, 100}, {784, 784}} {
		for _, mode := range []string{"float", "iterative"} {
			b.Run(fmt.Sprintf("mlp-784-%d-%d-10/%s", hidden[0], hidden[1], mode), func(b *testing.B) {
				cfg := Default()
				cfg.Model.Hidden = hidden
				data := syntheticMNIST(55000)
				be, _ := OpenBackend("cpu")
				layers, _ := binarizableLayers(&cfg)
				s, err := newSession(&cfg, be, data, Schedule{Mode: mode, Order: layers, EpochsPerLayer: 1}, 3, cfg.Train.ScheduleConfig, true, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer s.free()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := s.runEpoch(context.Background(), i%3, nil, nil); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/epoch")
			})
		}
	}
}
