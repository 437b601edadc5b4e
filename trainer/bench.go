package trainer

import (
	"cmp"
	"fmt"
	"runtime"
	"time"

	"iterbin/backend"
	"iterbin/loaders"
)

// BenchModel is a model benchmarked by `iterbin bench`, with the batch size
// and optimizer of the paper (and of the PyTorch anchor script).
type BenchModel struct {
	Name     string // the anchor script's name for it
	Arch     string
	Hidden   []int
	Channels int
	Side     int
	Batch    int
	SGD      bool
	Dataset  string // for the input shape; "" means MNIST's or CIFAR-10's by channels
}

// BenchModels lists the models `iterbin bench` knows.
func BenchModels() []BenchModel {
	return []BenchModel{
		{Name: "mlp300", Arch: "mlp", Hidden: []int{300, 100}, Channels: 1, Side: 28, Batch: 100},
		{Name: "mlp784", Arch: "mlp", Hidden: []int{784, 784}, Channels: 1, Side: 28, Batch: 100},
		{Name: "vgg5", Arch: "vgg5", Channels: 3, Side: 32, Batch: 100},
		{Name: "resnet20", Arch: "resnet20", Channels: 3, Side: 32, Batch: 128, SGD: true},
		{Name: "resnet18", Arch: "resnet18", Channels: 3, Side: 224, Batch: 256, SGD: true, Dataset: "imagenet"},
	}
}

func (m BenchModel) classes() int {
	if m.Dataset == "imagenet" {
		return 1000
	}
	return 10
}

// BenchResult is the throughput of training steps of one model and mode.
type BenchResult struct {
	Model         string  `json:"model"`
	Mode          string  `json:"mode"`
	Precision     string  `json:"precision"`
	Batch         int     `json:"batch"`
	ImgPerSec     float64 `json:"img_per_s"`
	MsPerStep     float64 `json:"ms_per_step"`
	AllocsPerStep float64 `json:"allocs_per_step"`
	Backend       string  `json:"backend"`
}

// BenchStep times whole training steps (batch fill, upload, forward,
// backward, optimizer, binarization) of a model on synthetic data, in
// "float" mode or "binary" (every layer binary), at precision "fp32", or
// on CUDA "tf32" (TF32 tensor cores), "bf16" (bf16 GEMM and convolution
// inputs, fp32 accumulation) or "fp16" (the same in fp16, loss scaled);
// see cuda.Options.Precision. Batches are
// filled and augmented one step ahead on another goroutine, as in
// training.
func BenchStep(m BenchModel, mode, device, precision, layout string, warmup, steps int) (BenchResult, error) {
	data := benchData(m)
	s, err := benchSession(m, mode, device, precision, layout, data, 0.001, nil)
	if err != nil {
		return BenchResult{}, err
	}
	defer s.close()
	be := s.be
	feed := s.startBenchFeed(m.Batch)
	defer feed.stop()
	// As in training, each step's loss sums are read one step late.
	async := asyncDownloader(be)
	slot, queued := 0, false
	var stepErr error
	step := func() {
		hb := <-feed.ready
		s.trainStep(hb, m.Batch, 0.001)
		feed.free <- hb
		async.DownloadAsync(slot, s.sums, len(s.sumsHost))
		if queued && stepErr == nil {
			stepErr = async.WaitDownload(slot^1, s.sumsHost)
		}
		slot, queued = slot^1, true
	}
	for i := 0; i < warmup; i++ {
		step()
	}
	if err := be.Sync(); err != nil {
		return BenchResult{}, err
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	for i := 0; i < steps; i++ {
		step()
	}
	if err := be.Sync(); stepErr != nil || err != nil {
		return BenchResult{}, fmt.Errorf("bench %s %s: %w", m.Name, mode, cmp.Or(stepErr, err))
	}
	elapsed := time.Since(start).Seconds()
	runtime.ReadMemStats(&after)
	return BenchResult{Model: m.Name, Mode: mode, Precision: precision, Batch: m.Batch, Backend: be.Name(),
		ImgPerSec: float64(steps*m.Batch) / elapsed, MsPerStep: 1000 * elapsed / float64(steps),
		AllocsPerStep: float64(after.Mallocs-before.Mallocs) / float64(steps)}, nil
}

// benchBatches is how many distinct batches the synthetic benchmark data
// holds; steps cycle through them.
const benchBatches = 4

func benchData(m BenchModel) *loaders.Dataset {
	data := loaders.Synthetic(m.Batch*benchBatches, m.Channels, m.Side, m.classes(), 1)
	if m.Channels == 3 {
		data.Augment = loaders.Augmentation{CropPad: 4, Flip: true}
	}
	return data
}

// startBenchFeed fills benchmark batches on its own goroutine, one step
// ahead, cycling through the synthetic data without end.
func (s *session) startBenchFeed(batch int) *batchFeed {
	f := &batchFeed{free: make(chan *hostBatch, 2), ready: make(chan *hostBatch, 2), quit: make(chan struct{}), done: make(chan struct{})}
	for _, hb := range s.hostBatches {
		f.free <- hb
	}
	order := loaders.EpochOrder(s.data.Train.N, 1, 0)
	go func() {
		defer close(f.done)
		for i := 0; ; i++ {
			var hb *hostBatch
			select {
			case hb = <-f.free:
			case <-f.quit:
				return
			}
			lo := (i % benchBatches) * batch
			s.augRNG.Seed(1, 0, i)
			hb.n = s.data.FillTrainBatch(hb.x, hb.y, &s.data.Train, order[lo:lo+batch], s.augRNG)
			select {
			case f.ready <- hb:
			case <-f.quit:
				return
			}
		}
	}()
	return f
}

// StepProfile is where the time of a training step goes: per op, and
// filling the batch on the host. On a backend that times its ops on the
// device (backend.DeviceTimer, DeviceTimes), an op's time is its time on
// the device, and the steps run as they do unprofiled; otherwise it is
// the op's wall time with the device waited for after it, so the ops add
// up to more than a real, asynchronous step.
type StepProfile struct {
	Model, Mode, Precision, Backend string
	Steps                           int
	Ops                             []backend.OpTime
	DeviceTimes                     bool
	// Wall is the wall time of the timed steps, the batches filled in
	// line.
	Wall time.Duration
	// ConvChoices says how each convolution ran, where the backend
	// chooses (backend.ConvPlanner: the CUDA backend with cuDNN).
	ConvChoices []backend.ConvChoice
}

// ProfileStep runs warmup and then steps training steps of a model as
// BenchStep does, but with every op timed (backend.Profile) and the batch
// filled in line, timed as "fill batch (host)".
func ProfileStep(m BenchModel, mode, device, precision, layout string, warmup, steps int) (StepProfile, error) {
	data := benchData(m)
	var times *backend.OpTimes
	var planner backend.ConvPlanner
	wrap := func(be backend.Backend) backend.Backend {
		planner, _ = be.(backend.ConvPlanner)
		var p backend.Backend
		p, times = backend.Profile(be)
		return p
	}
	s, err := benchSession(m, mode, device, precision, layout, data, 0.001, wrap)
	if err != nil {
		return StepProfile{}, err
	}
	defer s.close()
	order := loaders.EpochOrder(data.Train.N, 1, 0)
	hb := s.hostBatches[0]
	var timed time.Time
	for i := 0; i < warmup+steps; i++ {
		if i == warmup {
			if err := s.be.Sync(); err != nil {
				return StepProfile{}, err
			}
			times.Reset()
			timed = time.Now()
		}
		start := time.Now()
		lo := (i % benchBatches) * m.Batch
		s.augRNG.Seed(1, 0, i)
		data.FillTrainBatch(hb.x, hb.y, &data.Train, order[lo:lo+m.Batch], s.augRNG)
		times.Add("fill batch (host)", time.Since(start))
		s.trainStep(hb, m.Batch, 0.001)
	}
	if err := s.be.Sync(); err != nil {
		return StepProfile{}, fmt.Errorf("profile %s %s: %w", m.Name, mode, err)
	}
	prof := StepProfile{Model: m.Name, Mode: mode, Precision: precision, Backend: s.be.Name(), Steps: steps, Ops: times.Rows(),
		DeviceTimes: times.Device, Wall: time.Since(timed)}
	if planner != nil {
		prof.ConvChoices = planner.ConvChoices()
	}
	return prof, nil
}

// StepLosses trains steps steps of a model on fixed synthetic data on a
// device at a precision and layout and returns each step's mean training
// loss and the backend's name: the same sequence on every backend, up to
// rounding, which the CUDA parity tests compare.
func StepLosses(m BenchModel, mode, device, precision, layout string, steps int) (losses []float64, backendName string, err error) {
	return StepLossesWrapped(m, mode, device, precision, layout, steps, nil)
}

// StepLossesWrapped is StepLosses on the backend wrap returns for the one
// it opens (nil: that one): a test's way to set a backend's state before
// the model is built or to read it when the run closes the backend.
func StepLossesWrapped(m BenchModel, mode, device, precision, layout string, steps int, wrap func(backend.Backend) backend.Backend) (losses []float64, backendName string, err error) {
	data := loaders.Synthetic(m.Batch*steps, m.Channels, m.Side, m.classes(), 2)
	s, err := benchSession(m, mode, device, precision, layout, data, 0.01, wrap)
	if err != nil {
		return nil, "", err
	}
	defer s.close()
	be, cfg := s.be, s.cfg
	hb := s.hostBatches[0]
	idx := make([]int, m.Batch)
	for i := 0; i < steps; i++ {
		for j := range idx {
			idx[j] = i*m.Batch + j
		}
		data.FillBatch(hb.x, hb.y, &data.Train, idx)
		be.Fill(s.sums, 0, 3)
		s.trainStep(hb, m.Batch, cfg.Train.LR)
		be.Download(s.sumsHost, s.sums)
		if err := be.Sync(); err != nil {
			return nil, "", fmt.Errorf("step %d on %s: %w", i, device, err)
		}
		losses = append(losses, float64(s.sumsHost[0])/float64(m.Batch))
	}
	return losses, be.Name(), nil
}

// benchSession builds a session of a benchmark model on device with every
// layer binary in "binary" mode; close releases it and its backend. A
// non-nil wrap wraps the backend before the model is built on it.
func benchSession(m BenchModel, mode, device, precision, layout string, data *loaders.Dataset, lr float64, wrap func(backend.Backend) backend.Backend) (*session, error) {
	cfg := Default()
	cfg.Run.Device = device
	cfg.Model.Arch, cfg.Model.Hidden = m.Arch, m.Hidden
	switch {
	case m.Dataset != "":
		cfg.Data.Dataset, cfg.Data.ImageSize = m.Dataset, m.Side
	case m.Channels == 3:
		cfg.Data.Dataset = "cifar10"
	}
	cfg.Binarize.Mode = mode
	cfg.Train.BatchSize, cfg.Train.TestBatchSize = m.Batch, m.Batch
	cfg.Train.LR = lr
	if m.SGD {
		cfg.Train.Optimizer, cfg.Train.Momentum, cfg.Train.WeightDecay = "sgd", 0.9, 1e-4
	}
	layers, err := binarizableLayers(&cfg)
	if err != nil {
		return nil, err
	}
	cfg.Run.Precision, cfg.Run.Layout = precision, layout
	be, err := openBackend(device, precision, layout)
	if err != nil {
		return nil, err
	}
	if wrap != nil {
		be = wrap(be)
	}
	s, err := newSession(&cfg, be, data, Schedule{Mode: mode, Order: layers}, 1, cfg.Train.ScheduleConfig, false, nil)
	if err != nil {
		be.Close()
		return nil, err
	}
	set := map[string]bool{}
	for _, l := range s.sched.BinaryAt(0) {
		set[l] = true
	}
	if err := s.model.SetBinary(set); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}
