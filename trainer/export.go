package trainer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"slices"

	"iterbin/backend"
	"iterbin/backend/cpu"
	"iterbin/loaders"
	"iterbin/models"
)

// Exported model file layout (little-endian):
//
//	magic    8 bytes  "IBMODEL\n"
//	version  uint32   exportVersion
//	hdrLen   uint32   length of the JSON header
//	header   JSON     ExportHeader: architecture and layer table
//	payload           every parameter and buffer of the model in its fixed
//	                  order: the weights of binary layers as sign bits
//	                  (models.PackSigns), everything else as float32
//	crc      uint32   CRC-32 (IEEE) of everything before it
const (
	exportMagic   = "IBMODEL\n"
	exportVersion = 1
)

// ExportHeader names the architecture (enough to rebuild the model) and
// the binarizable layers, each binary (1 bit a weight) or float32.
type ExportHeader struct {
	Arch    string `json:"arch"`
	Hidden  []int  `json:"hidden,omitempty"`
	Dataset string `json:"dataset"`
	// Input settings that change the model or its preprocessing.
	ImageSize int           `json:"image_size,omitempty"`
	Resize    int           `json:"resize,omitempty"`
	Classes   int           `json:"classes,omitempty"`
	Epoch     int           `json:"epoch"`
	Layers    []ExportLayer `json:"layers"`
}

// ExportLayer is one row of the layer table.
type ExportLayer struct {
	Name   string `json:"name"`
	Shape  []int  `json:"shape"`
	Binary bool   `json:"binary"`
}

// LayerSize is one binarizable layer in a model summary.
type LayerSize struct {
	Name    string
	Shape   []int
	Weights int
	Bits    int // 1 when binary, else 32
	Bytes   int
	MACs    int
	Binary  bool
}

// SizeSummary is what `iterbin summary` prints: per layer and in total,
// the memory the model takes with its binary layers packed.
type SizeSummary struct {
	Arch   string
	Layers []LayerSize
	// FloatParams counts the other float32 values the model needs:
	// biases, batch-norm parameters and running statistics.
	FloatParams int
	// PayloadBytes is the packed weights plus the float32 values;
	// FileBytes is the exported file's exact size (payload, header,
	// magic, version, checksum).
	PayloadBytes, FileBytes int
	// Float32Bytes is the same model stored entirely as float32.
	Float32Bytes int
	// Compression is Float32Bytes / FileBytes.
	Compression float64
	// BinaryMACShare is the share of multiply-accumulates per sample done
	// with binary weights.
	BinaryMACShare float64
	Header         ExportHeader
}

// SizeOf summarizes cfg's model with the named layers binary.
func SizeOf(cfg *Config, binary map[string]bool, epoch int) (*SizeSummary, error) {
	be := cpu.New()
	defer be.Close()
	m, err := buildModel(cfg, be, 2)
	if err != nil {
		return nil, err
	}
	defer m.Free()
	return sizeOf(cfg, m, binary, epoch)
}

func sizeOf(cfg *Config, m *models.Model, binary map[string]bool, epoch int) (*SizeSummary, error) {
	s := &SizeSummary{Arch: m.Arch}
	h := ExportHeader{Arch: cfg.Model.Arch, Dataset: cfg.Data.Dataset, Epoch: epoch}
	if cfg.Model.Arch == "mlp" {
		h.Hidden = cfg.Model.Hidden
	}
	if cfg.Data.Dataset == "imagenet" {
		h.ImageSize, h.Resize = cfg.Data.ImageSize, cfg.Data.Resize
	}
	if cfg.Data.Classes > 0 {
		h.Classes = cfg.Data.Classes
	}
	latent := map[*models.Param]bool{}
	macs, binMACs := 0, 0
	for _, l := range m.Binarizable() {
		p := l.Latent()
		latent[p] = true
		ls := LayerSize{Name: l.Name(), Shape: p.Shape, Weights: p.Len(), Bits: 32, Bytes: 4 * p.Len(), MACs: l.MACs(), Binary: binary[l.Name()]}
		if ls.Binary {
			ls.Bits, ls.Bytes = 1, (p.Len()+7)/8
			binMACs += ls.MACs
		}
		macs += ls.MACs
		s.Layers = append(s.Layers, ls)
		s.PayloadBytes += ls.Bytes
		s.Float32Bytes += 4 * p.Len()
		h.Layers = append(h.Layers, ExportLayer{Name: l.Name(), Shape: p.Shape, Binary: ls.Binary})
	}
	for name := range binary {
		if binary[name] && !slices.ContainsFunc(s.Layers, func(l LayerSize) bool { return l.Name == name }) {
			return nil, fmt.Errorf("%s has no binarizable layer %q", m.Arch, name)
		}
	}
	for _, p := range m.Params() {
		if !latent[p] {
			s.FloatParams += p.Len()
		}
	}
	for _, b := range m.Buffers() {
		s.FloatParams += b.Len
	}
	s.PayloadBytes += 4 * s.FloatParams
	s.Float32Bytes += 4 * s.FloatParams
	js, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	s.Header = h
	s.FileBytes = len(exportMagic) + 8 + len(js) + s.PayloadBytes + 4
	s.Compression = float64(s.Float32Bytes) / float64(s.FileBytes)
	if macs > 0 {
		s.BinaryMACShare = float64(binMACs) / float64(macs)
	}
	return s, nil
}

// binaryAtEnd says which layers a configuration's schedule leaves binary
// after its last epoch.
func binaryAtEnd(cfg *Config) (map[string]bool, error) {
	out := map[string]bool{}
	if cfg.Binarize.Mode == "float" {
		return out, nil
	}
	layers, err := binarizableLayers(cfg)
	if err != nil {
		return nil, err
	}
	order := layers
	if cfg.Binarize.Mode == "iterative" {
		var err error
		switch cfg.Binarize.Order.Rule {
		case OrderGuided, OrderGuidedReverse:
			// Without the ranking the order is unknown, not the count.
			order = layers
		default:
			if order, err = ResolveOrder(cfg.Binarize.Order, layers, cfg.Run.Seed, nil); err != nil {
				return nil, err
			}
		}
	}
	sched := Schedule{Mode: cfg.Binarize.Mode, Order: order, EpochsPerLayer: cfg.Binarize.EpochsPerLayer}
	for _, l := range sched.BinaryAt(cfg.Train.Epochs - 1) {
		out[l] = true
	}
	return out, nil
}

// SummarizeConfig summarizes the model a configuration trains, with the
// layers binary that its schedule binarizes by the last epoch.
func SummarizeConfig(cfg *Config) (*SizeSummary, error) {
	binary, err := binaryAtEnd(cfg)
	if err != nil {
		return nil, err
	}
	return SizeOf(cfg, binary, cfg.Train.Epochs-1)
}

// runOf finds the run folder of a run folder or of its checkpoint file.
func runOf(path string) string {
	if fi, err := os.Stat(path); err == nil && !fi.IsDir() {
		return filepath.Dir(path)
	}
	return path
}

// loadRun rebuilds a run's model on a CPU backend from its folder (or its
// checkpoint file) and returns it with the checkpoint's header.
func loadRun(path string, be backend.Backend, maxBatch int) (*Config, *models.Model, *CheckpointHeader, error) {
	dir := runOf(path)
	cfg, err := LoadConfig(filepath.Join(dir, ConfigFile), nil)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w (a run folder or its checkpoint.bin is needed)", path, err)
	}
	m, err := buildModel(cfg, be, maxBatch)
	if err != nil {
		return nil, nil, nil, err
	}
	opt := NewOptimizer(be, m.Params(), cfg.Train)
	defer opt.Free()
	var tensors []NamedTensor
	for _, p := range m.Params() {
		tensors = append(tensors, NamedTensor{Name: p.Name, Len: p.Len(), T: p.Value})
	}
	for _, b := range m.Buffers() {
		tensors = append(tensors, NamedTensor{Name: b.Name, Len: b.Len, T: b.Value})
	}
	tensors = append(tensors, opt.StateTensors()...)
	path, err = epochEndCheckpoint(dir)
	if err != nil {
		m.Free()
		return nil, nil, nil, err
	}
	hdr, err := ReadCheckpoint(path, be, tensors)
	if err != nil {
		m.Free()
		return nil, nil, nil, err
	}
	if len(hdr.History) == 0 {
		m.Free()
		return nil, nil, nil, fmt.Errorf("%s: the checkpoint has no finished epoch", path)
	}
	set := map[string]bool{}
	for _, l := range hdr.History[len(hdr.History)-1].BinaryLayers {
		set[l] = true
	}
	if err := m.SetBinary(set); err != nil {
		m.Free()
		return nil, nil, nil, err
	}
	return cfg, m, hdr, nil
}

// epochEndCheckpoint returns the newest checkpoint of a run written at
// the end of an epoch: checkpoint.bin, or when that is mid-epoch, the
// newest kept epoch-end one. Models are exported as an epoch left them, so
// that their layers' binary state and metrics agree.
func epochEndCheckpoint(dir string) (string, error) {
	latest := filepath.Join(dir, CheckpointFile)
	hdr, _, err := LoadCheckpointFile(latest)
	if err == nil && hdr.Partial == nil {
		return latest, nil
	}
	kept, _ := filepath.Glob(filepath.Join(dir, "checkpoint-e*-b0000000.bin"))
	slices.Sort(kept)
	for i := len(kept) - 1; i >= 0; i-- {
		if h, _, kerr := LoadCheckpointFile(kept[i]); kerr == nil && h.Partial == nil {
			return kept[i], nil
		}
	}
	if err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s: the latest checkpoint is in the middle of epoch %d and no epoch-end checkpoint is kept; finish the epoch with iterbin run --resume %s", dir, hdr.NextEpoch, dir)
}

// SummarizeCheckpoint summarizes a trained run's model as its last epoch
// left it.
func SummarizeCheckpoint(path string) (*SizeSummary, error) {
	be := cpu.New()
	defer be.Close()
	cfg, m, hdr, err := loadRun(path, be, 2)
	if err != nil {
		return nil, err
	}
	defer m.Free()
	return sizeOf(cfg, m, binaryLayers(m), hdr.NextEpoch-1)
}

// binaryLayers says which of a model's binarizable layers are binary now.
func binaryLayers(m *models.Model) map[string]bool {
	binary := map[string]bool{}
	for _, l := range m.Binarizable() {
		binary[l.Name()] = l.IsBinary()
	}
	return binary
}

// Export writes a run's trained model (from its folder or checkpoint) to
// out: binary layers as packed sign bits, everything else as float32. A
// model with float binarizable layers is refused unless allowFloat, which
// stores them as float32.
func Export(path, out string, allowFloat bool) (*SizeSummary, error) {
	be := cpu.New()
	defer be.Close()
	cfg, m, hdr, err := loadRun(path, be, 2)
	if err != nil {
		return nil, err
	}
	defer m.Free()
	isBinary := binaryLayers(m)
	var float []string
	for _, l := range m.Binarizable() {
		if !l.IsBinary() {
			float = append(float, l.Name())
		}
	}
	if len(float) > 0 && !allowFloat {
		return nil, fmt.Errorf("%s: layers %v are not binary in the last epoch (%d); export --allow-float stores them as float32", path, float, hdr.NextEpoch-1)
	}
	sum, err := sizeOf(cfg, m, isBinary, hdr.NextEpoch-1)
	if err != nil {
		return nil, err
	}
	js, err := json.Marshal(sum.Header)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.WriteString(exportMagic)
	binary32 := func(v uint32) { binary.Write(&buf, binary.LittleEndian, v) }
	binary32(exportVersion)
	binary32(uint32(len(js)))
	buf.Write(js)
	packed := map[*models.Param]bool{}
	for _, l := range m.Binarizable() {
		if l.IsBinary() {
			packed[l.Latent()] = true
		}
	}
	host := func(t backend.Tensor, n int) []float32 {
		v := make([]float32, n)
		be.Download(v, t)
		return v
	}
	for _, p := range m.Params() {
		v := host(p.Value, p.Len())
		if packed[p] {
			buf.Write(models.PackSigns(v))
			continue
		}
		writeFloats(&buf, v)
	}
	for _, b := range m.Buffers() {
		writeFloats(&buf, host(b.Value, b.Len))
	}
	if err := be.Sync(); err != nil {
		return nil, err
	}
	binary32(crc32.ChecksumIEEE(buf.Bytes()))
	if buf.Len() != sum.FileBytes {
		return nil, fmt.Errorf("export: wrote %d bytes, the summary predicts %d", buf.Len(), sum.FileBytes)
	}
	if err := WriteFileAtomic(out, buf.Bytes()); err != nil {
		return nil, err
	}
	return sum, nil
}

func writeFloats(buf *bytes.Buffer, v []float32) {
	var raw [4]byte
	for _, f := range v {
		binary.LittleEndian.PutUint32(raw[:], math.Float32bits(f))
		buf.Write(raw[:])
	}
}

// LoadExport reads an exported model onto backend be, with buffers for
// maxBatch samples; binary layers get ±1 weights and are switched to
// binary.
func LoadExport(path string, be backend.Backend, maxBatch int) (*Config, *models.Model, *ExportHeader, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, nil, err
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("model file %s: %s", path, fmt.Sprintf(format, args...))
	}
	if len(data) < len(exportMagic)+12 || string(data[:len(exportMagic)]) != exportMagic {
		return nil, nil, nil, fail("not an iterbin model (bad magic number or too short); export one with iterbin export")
	}
	body, stored := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.ChecksumIEEE(body) != stored {
		return nil, nil, nil, fail("checksum mismatch: the file is truncated or corrupt; export it again")
	}
	p := len(exportMagic)
	if v := binary.LittleEndian.Uint32(data[p:]); v != exportVersion {
		return nil, nil, nil, fail("version %d; this iterbin reads version %d", v, exportVersion)
	}
	hl := int(binary.LittleEndian.Uint32(data[p+4:]))
	p += 8
	if hl > len(body)-p {
		return nil, nil, nil, fail("header length %d runs past the end", hl)
	}
	var h ExportHeader
	if err := json.Unmarshal(body[p:p+hl], &h); err != nil {
		return nil, nil, nil, fail("header: %v", err)
	}
	p += hl
	cfg := Default()
	cfg.Model.Arch, cfg.Data.Dataset = h.Arch, h.Dataset
	if h.Hidden != nil {
		cfg.Model.Hidden = h.Hidden
	}
	if h.ImageSize > 0 {
		cfg.Data.ImageSize, cfg.Data.Resize = h.ImageSize, h.Resize
	}
	cfg.Data.Classes = h.Classes
	m, err := buildModel(&cfg, be, maxBatch)
	if err != nil {
		return nil, nil, nil, fail("%v", err)
	}
	layers := m.Binarizable()
	if len(layers) != len(h.Layers) {
		m.Free()
		return nil, nil, nil, fail("layer table has %d layers, %s has %d", len(h.Layers), h.Arch, len(layers))
	}
	packed := map[*models.Param]bool{}
	set := map[string]bool{}
	for i, l := range layers {
		if l.Name() != h.Layers[i].Name || !slices.Equal(l.Latent().Shape, h.Layers[i].Shape) {
			m.Free()
			return nil, nil, nil, fail("layer %d is %s %v, %s has %s %v", i, h.Layers[i].Name, h.Layers[i].Shape, h.Arch, l.Name(), l.Latent().Shape)
		}
		if h.Layers[i].Binary {
			packed[l.Latent()] = true
			set[l.Name()] = true
		}
	}
	read := func(name string, n int, bits bool) ([]float32, error) {
		if bits {
			nb := (n + 7) / 8
			if p+nb > len(body) {
				return nil, fail("%s runs past the end of the file", name)
			}
			v := models.UnpackSigns(body[p:p+nb], n)
			p += nb
			return v, nil
		}
		if p+4*n > len(body) {
			return nil, fail("%s runs past the end of the file", name)
		}
		v := make([]float32, n)
		for j := range v {
			v[j] = math.Float32frombits(binary.LittleEndian.Uint32(body[p+4*j:]))
		}
		p += 4 * n
		return v, nil
	}
	for _, prm := range m.Params() {
		v, err := read(prm.Name, prm.Len(), packed[prm])
		if err != nil {
			m.Free()
			return nil, nil, nil, err
		}
		be.Upload(prm.Value, v)
	}
	for _, b := range m.Buffers() {
		v, err := read(b.Name, b.Len, false)
		if err != nil {
			m.Free()
			return nil, nil, nil, err
		}
		be.Upload(b.Value, v)
	}
	if p != len(body) {
		m.Free()
		return nil, nil, nil, fail("%d unexpected bytes after the tensors", len(body)-p)
	}
	if err := m.SetBinary(set); err != nil {
		m.Free()
		return nil, nil, nil, fail("%v", err)
	}
	return &cfg, m, &h, be.Sync()
}

// EvalResult is a model's evaluation on a split.
type EvalResult struct {
	Loss, Acc   float64
	Predictions []int
}

// evaluateModel runs m in evaluation mode over a split and returns the
// mean loss, the accuracy and each sample's predicted class.
func evaluateModel(be backend.Backend, m *models.Model, data *loaders.Dataset, split *loaders.Split, batch int) (EvalResult, error) {
	x, labels, sums := be.Alloc(batch*data.SampleSize()), be.Alloc(batch), be.Alloc(3)
	defer func() { be.Free(x); be.Free(labels); be.Free(sums) }()
	xh, yh := make([]float32, batch*data.SampleSize()), make([]float32, batch)
	logp := make([]float32, batch*m.Classes)
	idx := make([]int, batch)
	res := EvalResult{Predictions: make([]int, 0, split.N)}
	be.Fill(sums, 0, 3)
	evaluated := 0
	err := loaders.Batches(split.N, batch, func(lo, hi int) error {
		for i := range hi - lo {
			idx[i] = lo + i
		}
		n := data.FillBatch(xh, yh, split, idx[:hi-lo])
		if n == 0 {
			return nil
		}
		evaluated += n
		be.Upload(x, xh[:n*data.SampleSize()])
		be.Upload(labels, yh[:n])
		lp := m.Forward(sums, x, labels, n, false)
		be.Download(logp[:n*m.Classes], lp)
		for r := 0; r < n; r++ {
			row := logp[r*m.Classes : (r+1)*m.Classes]
			best := 0
			for c, v := range row {
				if v > row[best] {
					best = c
				}
			}
			res.Predictions = append(res.Predictions, best)
		}
		return be.Err()
	})
	if err != nil {
		return res, err
	}
	s := make([]float32, 3)
	be.Download(s, sums)
	if err := be.Sync(); err != nil {
		return res, err
	}
	if evaluated == 0 {
		return res, fmt.Errorf("no readable image in the split")
	}
	res.Loss, res.Acc = float64(s[0])/float64(evaluated), float64(s[1])/float64(evaluated)
	return res, nil
}

// EvalExport evaluates an exported model on the test split of its dataset
// with the CPU backend; data, if not nil, overrides where the dataset is
// read from.
func EvalExport(ctx context.Context, path string, data *DataConfig) (EvalResult, *ExportHeader, error) {
	be := cpu.New()
	defer be.Close()
	const batch = 1000
	cfg, m, h, err := LoadExport(path, be, batch)
	if err != nil {
		return EvalResult{}, nil, err
	}
	defer m.Free()
	if data != nil {
		model := cfg.Data
		cfg.Data = *data
		cfg.Data.Dataset, cfg.Data.ImageSize, cfg.Data.Resize, cfg.Data.Classes = h.Dataset, model.ImageSize, model.Resize, model.Classes
	}
	// Only the test split is evaluated; any valid hold-out will do.
	cfg.Data.Validation = 1
	ds, err := LoadData(ctx, cfg)
	if err != nil {
		return EvalResult{}, nil, err
	}
	res, err := evaluateModel(be, m, ds, &ds.Test, batch)
	return res, h, err
}

// EvalCheckpoint evaluates a run's checkpoint on its test split the same
// way, for comparison with its export.
func EvalCheckpoint(ctx context.Context, path string) (EvalResult, error) {
	be := cpu.New()
	defer be.Close()
	const batch = 1000
	cfg, m, _, err := loadRun(path, be, batch)
	if err != nil {
		return EvalResult{}, err
	}
	defer m.Free()
	ds, err := LoadData(ctx, cfg)
	if err != nil {
		return EvalResult{}, err
	}
	return evaluateModel(be, m, ds, &ds.Test, batch)
}
