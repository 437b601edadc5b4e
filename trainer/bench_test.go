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
func syntheticMNIST(n int) *loaders.Dataset {
	rng := rand.New(rand.NewPCG(1, 2))
	split := func(n int) loaders.Split {
		s := loaders.Split{Images: make([]byte, n*784), Labels: make([]byte, n), N: n}
		for i := range s.Images {
			s.Images[i] = byte(rng.IntN(256))
		}
		for i := range s.Labels {
			s.Labels[i] = byte(rng.IntN(10))
		}
		return s
	}
	return &loaders.Dataset{Name: "mnist", Channels: 1, Height: 28, Width: 28, Classes: 10,
		Mean: []float32{0.1307}, Std: []float32{0.3081}, Train: split(n), Val: split(100), Test: split(100)}
}

// BenchmarkTrainStep measures whole training steps (batch fill and upload,
// forward, backward, Adam update, binarization) at the paper's batch size
// 100. img/s is the figure to compare; allocs/op is per step.
func BenchmarkTrainStep(b *testing.B) {
	for _, hidden := range [][]int{{300, 100}, {784, 784}} {
		for _, mode := range []string{"float", "binary"} {
			name := fmt.Sprintf("mlp-784-%d-%d-10/%s", hidden[0], hidden[1], mode)
			b.Run(name, func(b *testing.B) {
				cfg := Default()
				cfg.Model.Hidden = hidden
				cfg.Binarize.Mode = mode
				cfg.Train.TestBatchSize = 100
				data := syntheticMNIST(100 * 20)
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
				step := func(i int) {
					lo := (i % 20) * 100
					data.FillBatch(s.xHost, s.yHost, &data.Train, order[lo:lo+100])
					be.Upload(s.x, s.xHost[:100*784])
					be.Upload(s.labels, s.yHost[:100])
					s.model.Forward(s.sums, s.x, s.labels, 100, true)
					s.model.Backward(s.labels, 100)
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
				b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "img/s")
			})
		}
	}
}

// BenchmarkEpoch measures one epoch of 55,000 synthetic images with
// evaluation, as a run reports it, for iterative mode.
func BenchmarkEpoch(b *testing.B) {
	for _, hidden := range [][]int{{300, 100}, {784, 784}} {
		b.Run(fmt.Sprintf("mlp-784-%d-%d-10/iterative", hidden[0], hidden[1]), func(b *testing.B) {
			cfg := Default()
			cfg.Model.Hidden = hidden
			data := syntheticMNIST(55000)
			be, _ := OpenBackend("cpu")
			layers, _ := binarizableLayers(&cfg)
			s, err := newSession(&cfg, be, data, Schedule{Mode: "iterative", Order: layers, EpochsPerLayer: 1}, 3, cfg.Train.ScheduleConfig, true, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.free()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.runEpoch(context.Background(), i%3); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/epoch")
		})
	}
}
