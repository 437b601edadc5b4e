package trainer

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"iterbin/backend"
	"iterbin/loaders"
	"iterbin/models"
)

// session is one training run on one backend: the model, its optimizer,
// the data and the schedule of binary layers. Main runs and each
// sensitivity run are sessions.
type session struct {
	cfg     *Config
	be      backend.Backend
	data    *loaders.Dataset
	model   *models.Model
	opt     *Optimizer
	sched   Schedule
	lrSched ScheduleConfig
	epochs  int
	// evalTest is false for sensitivity runs, which need validation only.
	evalTest bool

	x, labels, sums backend.Tensor
	xHost, yHost    []float32
	sumsHost        []float32
	idx             []int
	augRNG          *loaders.BatchRNG // used by the feeding goroutine only
	hostBatches     [2]*hostBatch

	history  []EpochMetrics
	progress *Progress

	// prevSign holds, per binarizable layer, whether each latent weight
	// was negative at the end of the previous epoch (for flip ratios);
	// latentHost is a download buffer.
	prevSign   [][]bool
	latentHost []float32
	// startSigns caches prevSign packed, for the epoch's checkpoints.
	startSigns [][]byte
}

// buildModel builds the configured architecture with the run's seed, with
// buffers for maxBatch samples.
func buildModel(cfg *Config, be backend.Backend, maxBatch int) (*models.Model, error) {
	c, h, w, classes, err := inputShape(cfg)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(cfg.Run.Seed, 0x1417))
	bin := models.Binarizer{STE: models.STE(cfg.Binarize.STE), ClipLatent: cfg.Binarize.ClipLatent}
	in := models.Shape{C: c, H: h, W: w}
	switch cfg.Model.Arch {
	case "mlp":
		return models.NewMLP(be, models.MLPSpec{Input: in.Size(), Hidden: cfg.Model.Hidden, Classes: classes}, maxBatch, bin, rng)
	case "vgg5":
		return models.NewVGG(be, models.VGG5(in, classes), maxBatch, bin, rng)
	case "vgg9":
		return models.NewVGG(be, models.VGG9(in, classes), maxBatch, bin, rng)
	case "resnet20":
		return models.NewResNetCIFAR(be, models.ResNet20(in, classes), maxBatch, bin, rng)
	case "resnet18":
		return models.NewResNet(be, models.ResNet18(in, classes), maxBatch, bin, rng)
	case "resnet34":
		return models.NewResNet(be, models.ResNet34(in, classes), maxBatch, bin, rng)
	case "resnet50":
		return models.NewResNet(be, models.ResNet50(in, classes), maxBatch, bin, rng)
	}
	return nil, fmt.Errorf("unknown model.arch %q", cfg.Model.Arch)
}

// inputShape is the per-sample shape and class count cfg's data has.
func inputShape(cfg *Config) (c, h, w, classes int, err error) {
	if cfg.Data.Dataset == "imagenet" {
		classes = cfg.Data.Classes
		if classes == 0 {
			classes = 1000
		}
		return 3, cfg.Data.ImageSize, cfg.Data.ImageSize, classes, nil
	}
	c, h, w, classes, err = loaders.Shape(cfg.Data.Dataset)
	if cfg.Data.Classes > 0 {
		classes = cfg.Data.Classes
	}
	return c, h, w, classes, err
}

// LayerInfo describes one binarizable layer.
type LayerInfo struct {
	Name    string
	Shape   []int
	Weights int
	MACs    int
}

// Describe lists the binarizable layers of cfg's model, in forward order,
// without reading the dataset.
func Describe(cfg *Config) ([]LayerInfo, error) {
	be, err := OpenBackend("cpu")
	if err != nil {
		return nil, err
	}
	m, err := buildModel(cfg, be, 2)
	if err != nil {
		return nil, err
	}
	defer m.Free()
	var out []LayerInfo
	for _, l := range m.Binarizable() {
		p := l.Latent()
		out = append(out, LayerInfo{Name: l.Name(), Shape: p.Shape, Weights: p.Len(), MACs: l.MACs()})
	}
	return out, nil
}

func newSession(cfg *Config, be backend.Backend, data *loaders.Dataset, sched Schedule, epochs int, lrSched ScheduleConfig, evalTest bool, progress *Progress) (*session, error) {
	model, err := buildModel(cfg, be, max(cfg.Train.BatchSize, cfg.Train.TestBatchSize))
	if err != nil {
		return nil, err
	}
	s := &session{cfg: cfg, be: be, data: data, model: model, sched: sched, lrSched: lrSched, epochs: epochs, evalTest: evalTest, progress: progress}
	s.opt = NewOptimizer(be, model.Params(), cfg.Train)
	maxBatch := model.MaxBatch
	s.x = be.Alloc(maxBatch * data.SampleSize())
	s.labels = be.Alloc(maxBatch)
	s.sums = be.Alloc(3)
	s.xHost = make([]float32, maxBatch*data.SampleSize())
	s.yHost = make([]float32, maxBatch)
	s.sumsHost = make([]float32, 3)
	s.idx = make([]int, maxBatch)
	s.augRNG = loaders.NewBatchRNG()
	for i := range s.hostBatches {
		s.hostBatches[i] = &hostBatch{x: make([]float32, cfg.Train.BatchSize*data.SampleSize()), y: make([]float32, cfg.Train.BatchSize)}
	}
	if err := be.Err(); err != nil {
		s.free()
		return nil, err
	}
	return s, nil
}

// close frees the session and closes its backend.
func (s *session) close() {
	s.free()
	s.be.Close()
}

func (s *session) free() {
	s.model.Free()
	s.opt.Free()
	for _, t := range []backend.Tensor{s.x, s.labels, s.sums} {
		s.be.Free(t)
	}
}

// tensors lists everything a checkpoint stores, in a fixed order.
func (s *session) tensors() []NamedTensor {
	var out []NamedTensor
	for _, p := range s.model.Params() {
		out = append(out, NamedTensor{Name: p.Name, Len: p.Len(), T: p.Value})
	}
	for _, b := range s.model.Buffers() {
		out = append(out, NamedTensor{Name: b.Name, Len: b.Len, T: b.Value})
	}
	return append(out, s.opt.StateTensors()...)
}

// epochState is where an unfinished epoch stands: the next batch to train,
// the training sums so far, and the signs the epoch started from (packed
// per binarizable layer, for its flip ratios). A mid-epoch checkpoint
// stores it; resuming from it continues bit-identically on the CPU.
type epochState struct {
	Batch      int       `json:"batch"`
	Sums       []float32 `json:"sums"`
	Samples    int       `json:"samples"`
	Seconds    float64   `json:"seconds"`
	StartSigns [][]byte  `json:"start_signs"`
}

// interrupted is returned when the context ends an epoch between steps;
// state is where it stopped.
type interrupted struct {
	epoch int
	state epochState
	err   error
}

func (e *interrupted) Error() string { return fmt.Sprintf("epoch %d interrupted: %v", e.epoch, e.err) }
func (e *interrupted) Unwrap() error { return e.err }

// packedStartSigns packs the signs the current epoch started from (once an
// epoch).
func (s *session) packedStartSigns() [][]byte {
	if s.startSigns != nil {
		return s.startSigns
	}
	out := make([][]byte, len(s.prevSign))
	for i, neg := range s.prevSign {
		w := make([]float32, len(neg))
		for j, n := range neg {
			if n {
				w[j] = -1
			}
		}
		out[i] = models.PackSigns(w)
	}
	s.startSigns = out
	return out
}

// stepInfo is passed to runEpoch's onStep after every step; state builds
// the epoch's position (for a checkpoint) only when asked, waiting for the
// device, and fails if the step's loss is not finite.
type stepInfo struct {
	last  bool // the epoch's last batch
	state func() (epochState, error)
}

// runEpoch trains epoch e (from resume's position when not nil) and
// evaluates; it returns the epoch's metrics. onStep, if set, is called
// after every step.
func (s *session) runEpoch(ctx context.Context, e int, resume *epochState, onStep func(stepInfo) error) (EpochMetrics, error) {
	binary := s.sched.BinaryAt(e)
	set := map[string]bool{}
	for _, name := range binary {
		set[name] = true
	}
	if err := s.model.SetBinary(set); err != nil {
		return EpochMetrics{}, err
	}
	lr := s.lrSched.LRAt(s.cfg.Train.LR, e, s.epochs)
	train := &s.data.Train
	bs := s.cfg.Train.BatchSize
	s.be.Fill(s.sums, 0, 3)
	first, done, before := 0, 0, 0.0
	clear(s.sumsHost)
	if resume != nil {
		first, done, before = resume.Batch, resume.Samples, resume.Seconds
		copy(s.sumsHost, resume.Sums)
		s.be.Upload(s.sums, s.sumsHost)
		s.prevSign = make([][]bool, len(resume.StartSigns))
		for i, l := range s.model.Binarizable() {
			if i >= len(resume.StartSigns) {
				return EpochMetrics{}, fmt.Errorf("checkpoint: epoch start signs for %d layers, the model has more", len(resume.StartSigns))
			}
			signs := models.UnpackSigns(resume.StartSigns[i], l.Latent().Len())
			s.prevSign[i] = make([]bool, len(signs))
			for j, v := range signs {
				s.prevSign[i][j] = v < 0
			}
		}
	}
	if s.prevSign == nil {
		s.layerStats(nil) // the signs the epoch starts from
	}
	s.startSigns = nil
	start := time.Now()
	order := loaders.EpochOrder(train.N, s.cfg.Run.Seed, e)
	feed := s.startFeed(e, order, first)
	defer feed.stop()
	batches := (train.N + bs - 1) / bs
	// Each step's loss sums are read one step late (backend.AsyncDownloader),
	// so an asynchronous device runs the next step while the host checks
	// this one. pending is the step queued but not yet checked, where
	// queued says there is one.
	async := asyncDownloader(s.be)
	type queuedStep struct {
		slot, batch, samples, step int
	}
	var pending queuedStep
	queued := false
	slot := 0
	check := func(q queuedStep) error {
		if err := async.WaitDownload(q.slot, s.sumsHost); err != nil {
			return fmt.Errorf("epoch %d, batch %d (step %d): %w", e, q.batch, q.step, err)
		}
		if l := float64(s.sumsHost[0]); math.IsNaN(l) || math.IsInf(l, 0) {
			return fmt.Errorf("epoch %d, batch %d (step %d): the training loss became %v; the run stopped there (%s)", e, q.batch, q.step, l, s.divergedHint())
		}
		if s.progress.due() {
			s.progress.step(e, s.epochs, q.samples, train.N, float64(s.sumsHost[0])/float64(q.samples), time.Since(start))
		}
		return nil
	}
	for b := first; b < batches; b++ {
		hb := <-feed.ready
		if err := ctx.Err(); err != nil {
			feed.free <- hb
			state, serr := s.position(b, done, before+time.Since(start).Seconds())
			if serr != nil {
				return EpochMetrics{}, fmt.Errorf("epoch %d, %w", e, serr)
			}
			return EpochMetrics{}, &interrupted{epoch: e, state: state, err: err}
		}
		n := hb.n
		if n < 2 {
			feed.free <- hb
			continue // batch norm cannot train on one sample (PyTorch errors; we skip it)
		}
		s.trainStep(hb, n, lr)
		feed.free <- hb
		done += n
		// An error recorded while this step was queued (a bad size or
		// label, a failed launch) is this step's: earlier steps' were
		// caught here in their turn. Errors the device reports later
		// surface at a step's check.
		if err := s.be.Err(); err != nil {
			return EpochMetrics{}, fmt.Errorf("epoch %d, batch %d (step %d): %w", e, b, s.opt.Steps, err)
		}
		async.DownloadAsync(slot, s.sums, len(s.sumsHost))
		if queued {
			if err := check(pending); err != nil {
				return EpochMetrics{}, err
			}
		}
		pending, queued = queuedStep{slot: slot, batch: b, samples: done, step: s.opt.Steps}, true
		slot ^= 1
		if onStep != nil {
			next, samples, elapsed := b+1, done, before+time.Since(start).Seconds()
			info := stepInfo{last: next == batches, state: func() (epochState, error) { return s.position(next, samples, elapsed) }}
			if err := onStep(info); err != nil {
				return EpochMetrics{}, err
			}
		}
	}
	if queued {
		if err := check(pending); err != nil {
			return EpochMetrics{}, err
		}
	}
	start = start.Add(-time.Duration(before * float64(time.Second)))
	s.be.Download(s.sumsHost, s.sums)
	if err := s.be.Sync(); err != nil {
		return EpochMetrics{}, err
	}
	trainSecs := time.Since(start).Seconds()
	if done == 0 {
		return EpochMetrics{}, fmt.Errorf("epoch %d trained no batch (%d training samples, batch size %d)", e, train.N, bs)
	}
	m := EpochMetrics{Epoch: e, LR: lr, BinaryLayers: append([]string{}, binary...),
		AllBinary: s.sched.AllBinaryAt(e, len(s.model.Binarizable())),
		TrainLoss: float64(s.sumsHost[0]) / float64(done), TrainAcc: float64(s.sumsHost[1]) / float64(done),
		ImgPerSec: float64(done) / trainSecs}
	if st, ok := s.opt.LossScale(); ok {
		m.LossScale, m.SkippedSteps = float64(st[backend.LossScale]), int(st[backend.LossScaleSkipped])
	}
	if s.cfg.Binarize.ResetLatentEachEpoch {
		s.model.ResetLatentToSign()
	}
	m.Layers, m.FlipRatio = s.layerStats(set)
	var err error
	if m.ValLoss, m.ValAcc, m.ValTop5, err = s.evaluate(&s.data.Val); err != nil {
		return m, err
	}
	if s.evalTest {
		if m.TestLoss, m.TestAcc, m.TestTop5, err = s.evaluate(&s.data.Test); err != nil {
			return m, err
		}
	}
	for name, v := range map[string]float64{"validation": m.ValLoss, "test": m.TestLoss} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return m, fmt.Errorf("epoch %d: the %s loss is %v: the model diverged (lower train.lr)", e, name, v)
		}
	}
	m.Seconds = time.Since(start).Seconds()
	if s.data.Skipped != nil {
		m.UnreadableImages = s.data.Skipped.Paths()
	}
	s.progress.clear()
	return m, nil
}

// layerStats downloads each binarizable layer's latent weights, describes
// them, counts sign flips since the last call for the layers in binary,
// and remembers the signs.
func (s *session) layerStats(binary map[string]bool) ([]LayerStat, float64) {
	layers := s.model.Binarizable()
	first := s.prevSign == nil
	if first {
		s.prevSign = make([][]bool, len(layers))
	}
	var stats []LayerStat
	flips, weights := 0, 0
	for i, l := range layers {
		p := l.Latent()
		n := p.Len()
		if cap(s.latentHost) < n {
			s.latentHost = make([]float32, n)
		}
		w := s.latentHost[:n]
		s.be.Download(w, p.Value)
		if first {
			s.prevSign[i] = make([]bool, n)
		}
		prev := s.prevSign[i]
		st := LayerStat{Name: l.Name(), Binary: binary[l.Name()], Min: math.Inf(1), Max: math.Inf(-1)}
		var sum, sq float64
		changed, outside := 0, 0
		for j, v := range w {
			f := float64(v)
			sum += f
			sq += f * f
			st.Min, st.Max = math.Min(st.Min, f), math.Max(st.Max, f)
			if f > 1 || f < -1 {
				outside++
			}
			neg := v < 0
			if !first && neg != prev[j] {
				changed++
			}
			prev[j] = neg
		}
		st.Mean = sum / float64(n)
		st.Std = math.Sqrt(math.Max(0, sq/float64(n)-st.Mean*st.Mean))
		st.OutsideUnit = float64(outside) / float64(n)
		if st.Binary {
			st.FlipRatio = float64(changed) / float64(n)
			flips += changed
			weights += n
		}
		stats = append(stats, st)
	}
	if weights == 0 {
		return stats, 0
	}
	return stats, float64(flips) / float64(weights)
}

// trainStep uploads a filled batch of n samples and makes one update:
// forward, backward, optimizer step, latent clipping.
func (s *session) trainStep(hb *hostBatch, n int, lr float64) {
	s.be.Upload(s.x, hb.x[:n*s.data.SampleSize()])
	s.be.Upload(s.labels, hb.y[:n])
	s.model.Forward(s.sums, s.x, s.labels, n, true)
	s.model.Backward(s.labels, n)
	s.opt.Step(lr)
	s.model.ClipLatent()
}

// position describes the epoch after batch-1 batches, with the loss sums
// of every step queued so far (it waits for the device); an error if they
// are not finite, so that no checkpoint keeps a diverged model.
func (s *session) position(batch, samples int, seconds float64) (epochState, error) {
	s.be.Download(s.sumsHost, s.sums)
	if err := s.be.Sync(); err != nil {
		return epochState{}, fmt.Errorf("batch %d: %w", batch-1, err)
	}
	if l := float64(s.sumsHost[0]); math.IsNaN(l) || math.IsInf(l, 0) {
		return epochState{}, fmt.Errorf("batch %d: the training loss became %v; the run stopped there (%s)", batch-1, l, s.divergedHint())
	}
	return epochState{Batch: batch, Sums: append([]float32(nil), s.sumsHost...), Samples: samples, Seconds: seconds, StartSigns: s.packedStartSigns()}, nil
}

// divergedHint says what to try when the training loss stops being
// finite. Loss scaling skips the steps whose gradients overflow fp16, but
// not a forward pass that does: at fp16 that is the likelier cause.
func (s *session) divergedHint() string {
	if s.cfg.Run.Precision == "fp16" {
		return `at precision fp16 a value beyond ±65504 in the forward pass becomes Inf: use run.precision = "bf16", which has float32's range; or lower train.lr, or check the data`
	}
	return "lower train.lr, or check the data"
}

// asyncDownloader returns be's backend.AsyncDownloader, or for a backend
// without one an adapter that downloads at once (waiting for the device).
func asyncDownloader(be backend.Backend) backend.AsyncDownloader {
	if a, ok := be.(backend.AsyncDownloader); ok {
		return a
	}
	return &syncDownloader{be: be}
}

// syncDownloader is backend.AsyncDownloader over plain Download.
type syncDownloader struct {
	be    backend.Backend
	slots [2][]float32
}

func (d *syncDownloader) DownloadAsync(slot int, src backend.Tensor, n int) {
	if cap(d.slots[slot]) < n {
		d.slots[slot] = make([]float32, n)
	}
	d.slots[slot] = d.slots[slot][:n]
	d.be.Download(d.slots[slot], src)
}

func (d *syncDownloader) WaitDownload(slot int, dst []float32) error {
	if err := d.be.Sync(); err != nil {
		return err
	}
	copy(dst, d.slots[slot])
	return nil
}

// hostBatch is one training batch filled on the host; n samples were
// readable.
type hostBatch struct {
	x, y []float32
	n    int
}

// batchFeed fills training batches on its own goroutine, one step ahead of
// training, so reading and augmenting data stays off the step's critical
// path. Two buffers circulate between free and ready.
type batchFeed struct {
	free, ready chan *hostBatch
	quit, done  chan struct{}
}

func (s *session) startFeed(e int, order []int, firstBatch int) *batchFeed {
	f := &batchFeed{free: make(chan *hostBatch, 2), ready: make(chan *hostBatch, 2), quit: make(chan struct{}), done: make(chan struct{})}
	for _, hb := range s.hostBatches {
		f.free <- hb
	}
	bs, train := s.cfg.Train.BatchSize, &s.data.Train
	go func() {
		defer close(f.done)
		loaders.Batches(train.N, bs, func(lo, hi int) error {
			if lo < firstBatch*bs {
				return nil
			}
			var hb *hostBatch
			select {
			case hb = <-f.free:
			case <-f.quit:
				return context.Canceled
			}
			hb.n = 0
			if hi-lo >= 2 {
				s.augRNG.Seed(s.cfg.Run.Seed, e, lo/bs)
				hb.n = s.data.FillTrainBatch(hb.x, hb.y, train, order[lo:hi], s.augRNG)
			}
			f.ready <- hb
			return nil
		})
	}()
	return f
}

// stop ends the feeding goroutine and waits for it.
func (f *batchFeed) stop() {
	close(f.quit)
	<-f.done
}

// evaluate returns the mean loss and the accuracy on a split, with batch
// norm in evaluation mode.
func (s *session) evaluate(split *loaders.Split) (loss, acc, top5 float64, err error) {
	s.be.Fill(s.sums, 0, 3)
	bs := s.cfg.Train.TestBatchSize
	evaluated := 0
	err = loaders.Batches(split.N, bs, func(lo, hi int) error {
		for i := range hi - lo {
			s.idx[i] = lo + i
		}
		n := s.data.FillBatch(s.xHost, s.yHost, split, s.idx[:hi-lo])
		if n == 0 {
			return nil
		}
		evaluated += n
		s.be.Upload(s.x, s.xHost[:n*s.data.SampleSize()])
		s.be.Upload(s.labels, s.yHost[:n])
		s.model.Forward(s.sums, s.x, s.labels, n, false)
		return s.be.Err()
	})
	if err != nil {
		return 0, 0, 0, err
	}
	s.be.Download(s.sumsHost, s.sums)
	if err := s.be.Sync(); err != nil {
		return 0, 0, 0, err
	}
	if evaluated == 0 {
		return 0, 0, 0, fmt.Errorf("no readable image in a split of %d", split.N)
	}
	n := float64(evaluated)
	return float64(s.sumsHost[0]) / n, float64(s.sumsHost[1]) / n, float64(s.sumsHost[2]) / n, nil
}
