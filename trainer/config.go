package trainer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"iterbin/cuda"
)

// Config is one experiment, decoded strictly from a TOML file. The README's
// TOML reference documents every key; Default gives each key's default.
type Config struct {
	Run         RunConfig         `toml:"run"`
	Data        DataConfig        `toml:"data"`
	Model       ModelConfig       `toml:"model"`
	Binarize    BinarizeConfig    `toml:"binarize"`
	Train       TrainConfig       `toml:"train"`
	Sensitivity SensitivityConfig `toml:"sensitivity"`
	Checkpoint  CheckpointConfig  `toml:"checkpoint"`
}

// CheckpointConfig says when checkpoints are written and how many are
// kept. Every epoch end writes one; EverySteps > 0 adds one every that
// many optimizer steps (mid-epoch, resumable).
type CheckpointConfig struct {
	EverySteps int `toml:"every_steps"`
	Keep       int `toml:"keep"`
}

// RunConfig names the run and says where it runs and writes.
type RunConfig struct {
	Name   string `toml:"name"`
	Seed   uint64 `toml:"seed"`
	Device string `toml:"device"`
	// Precision is how CUDA GEMMs and convolutions compute: "fp32" (true
	// fp32), "tf32" (TF32 tensor cores), "bf16" (operands rounded to
	// bf16, fp32 accumulation; weights, batch norm and optimizer state stay
	// float32, activations too unless Layout stores them in bf16) or
	// "fp16" (the same in IEEE half precision, with dynamic loss
	// scaling). See cuda.Options.Precision. The CPU computes in fp32
	// only.
	Precision string `toml:"precision"`
	// TF32 is the old spelling of precision = "tf32". Configurations
	// written by earlier versions carry tf32 = false, which is accepted;
	// true is an error that says to use precision instead.
	TF32 bool `toml:"tf32,omitempty"`
	// Layout is the order CUDA stores convolutional activations in, and
	// their format: "nhwc" or "nchw" (float32; results are the same up to
	// rounding), "nhwc-bf16" (precision bf16) and "nhwc-fp16" (precision
	// fp16), channels-last with the activations themselves stored in that
	// 16-bit format, or "auto": channels-last where cuDNN runs the
	// convolutions at precision tf32, bf16 or fp16, else NCHW, with 16-bit
	// activations at bf16 and fp16. See cuda.Options.Layout. The CPU
	// computes NCHW ("auto" or "nchw").
	Layout string `toml:"layout"`
	OutDir string `toml:"out_dir"`
}

// DataConfig picks the dataset and its splits.
type DataConfig struct {
	Dataset    string `toml:"dataset"`
	Dir        string `toml:"dir"`
	Validation int    `toml:"validation"`
	// Augment is "auto" (crop and flip for CIFAR-10, none for MNIST),
	// "none" or "crop-flip".
	Augment string `toml:"augment"`
	// ImageNet: the crop size, the shorter side evaluation resizes to, and
	// the number of classes (0: 1000).
	ImageSize int `toml:"image_size"`
	Resize    int `toml:"resize"`
	Classes   int `toml:"classes"`
	// Limits keep only the first N samples of a split (0 = all), for quick
	// runs; the paper's runs use all.
	TrainLimit int `toml:"train_limit"`
	ValLimit   int `toml:"val_limit"`
	TestLimit  int `toml:"test_limit"`
}

// ModelConfig picks the architecture.
type ModelConfig struct {
	Arch   string `toml:"arch"`
	Hidden []int  `toml:"hidden"`
}

// BinarizeConfig is the binarization method.
type BinarizeConfig struct {
	Mode                 string `toml:"mode"`
	Order                Order  `toml:"order"`
	EpochsPerLayer       int    `toml:"epochs_per_layer"`
	STE                  string `toml:"ste"`
	ClipLatent           bool   `toml:"clip_latent"`
	ResetLatentEachEpoch bool   `toml:"reset_latent_each_epoch"`
}

// ScheduleConfig is a learning-rate schedule over epochs.
type ScheduleConfig struct {
	LRSchedule string  `toml:"lr_schedule"`
	Milestones []int   `toml:"milestones"`
	Gamma      float64 `toml:"gamma"`
}

// TrainConfig is the optimization.
type TrainConfig struct {
	Epochs        int       `toml:"epochs"`
	BatchSize     int       `toml:"batch_size"`
	TestBatchSize int       `toml:"test_batch_size"`
	Optimizer     string    `toml:"optimizer"`
	LR            float64   `toml:"lr"`
	Momentum      float64   `toml:"momentum"`
	Nesterov      bool      `toml:"nesterov"`
	WeightDecay   float64   `toml:"weight_decay"`
	Betas         []float64 `toml:"betas"`
	Eps           float64   `toml:"eps"`
	ScheduleConfig
}

// SensitivityConfig is sensitivity pre-training (for guided orders).
type SensitivityConfig struct {
	Epochs int    `toml:"epochs"`
	Metric string `toml:"metric"`
	File   string `toml:"file"`
	ScheduleConfig
}

// Order is the binarization order: a named rule or an explicit list of
// layer names.
type Order struct {
	Rule   string   // forward, reverse, random, guided, guided-reverse, or "" for Layers
	Layers []string // the explicit order when Rule is ""
}

// Order rules.
const (
	OrderForward       = "forward"
	OrderReverse       = "reverse"
	OrderRandom        = "random"
	OrderGuided        = "guided"
	OrderGuidedReverse = "guided-reverse"
)

// UnmarshalTOML accepts a rule name or an array of layer names.
func (o *Order) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		*o = Order{Rule: v}
		return nil
	case []any:
		names := make([]string, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("order[%d] is %v, not a layer name", i, e)
			}
			names[i] = s
		}
		*o = Order{Layers: names}
		return nil
	}
	return fmt.Errorf("order must be a rule name (forward, reverse, random, guided, guided-reverse) or an array of layer names, not %T", v)
}

// MarshalTOML writes the rule name or the list.
func (o Order) MarshalTOML() ([]byte, error) {
	if o.Rule != "" {
		return []byte(strconv.Quote(o.Rule)), nil
	}
	q := make([]string, len(o.Layers))
	for i, n := range o.Layers {
		q[i] = strconv.Quote(n)
	}
	return []byte("[" + strings.Join(q, ", ") + "]"), nil
}

func (o Order) String() string {
	if o.Rule != "" {
		return o.Rule
	}
	return "[" + strings.Join(o.Layers, ", ") + "]"
}

// Default returns the configuration every file starts from: the paper's
// MNIST experiment with the 784-300-100-10 MLP and the forward order.
func Default() Config {
	return Config{
		Run:      RunConfig{Name: "run", Seed: 316, Device: "cpu", Precision: "fp32", Layout: cuda.LayoutAuto, OutDir: "runs"},
		Data:     DataConfig{Dataset: "mnist", Validation: 5000, Augment: "auto", ImageSize: 224, Resize: 256},
		Model:    ModelConfig{Arch: "mlp", Hidden: []int{300, 100}},
		Binarize: BinarizeConfig{Mode: "iterative", Order: Order{Rule: OrderForward}, EpochsPerLayer: 150, STE: "identity"},
		Train: TrainConfig{Epochs: 450, BatchSize: 100, TestBatchSize: 1000, Optimizer: "adam", LR: 0.1,
			Betas: []float64{0.9, 0.999}, Eps: 1e-8, ScheduleConfig: ScheduleConfig{LRSchedule: "constant", Gamma: 0.1}},
		Sensitivity: SensitivityConfig{Epochs: 150, Metric: "accuracy", ScheduleConfig: ScheduleConfig{LRSchedule: "constant", Gamma: 0.1}},
		Checkpoint:  CheckpointConfig{Keep: 2},
	}
}

// LoadConfig reads path over the defaults, applies the -set overrides
// ("section.key=value", value in TOML syntax or a bare string) and checks
// every value. Errors name the file and the key.
func LoadConfig(path string, sets []string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg := Default()
	if err := decodeStrict(path, string(data), &cfg); err != nil {
		return nil, err
	}
	for _, s := range sets {
		if err := applySet(&cfg, s); err != nil {
			return nil, err
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &cfg, nil
}

func decodeStrict(source, text string, cfg *Config) error {
	md, err := toml.Decode(text, cfg)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			msg := pe.Message
			if pe.LastKey != "" {
				msg = fmt.Sprintf("key %s: %s", pe.LastKey, pe.Message)
			}
			return fmt.Errorf("%s:%d: %s", source, pe.Position.Line, msg)
		}
		return fmt.Errorf("%s: %s", source, strings.TrimPrefix(err.Error(), "toml: "))
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0]
		return fmt.Errorf("%s: unknown key %q; %s", source, k.String(), allowedKeys(k))
	}
	return nil
}

// allowedKeys lists the keys allowed beside an unknown key.
func allowedKeys(k toml.Key) string {
	t := reflect.TypeOf(Config{})
	where := "top level"
	for _, part := range k[:len(k)-1] {
		f, ok := fieldByTag(t, part)
		if !ok || f.Kind() != reflect.Struct {
			break
		}
		t, where = f, "["+part+"]"
	}
	keys := tomlKeys(t)
	if near := nearest(k[len(k)-1], keys); near != "" {
		return fmt.Sprintf("did you mean %q? Keys allowed in %s: %s", near, where, strings.Join(keys, ", "))
	}
	return fmt.Sprintf("keys allowed in %s: %s", where, strings.Join(keys, ", "))
}

func tomlKeys(t reflect.Type) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous {
			keys = append(keys, tomlKeys(f.Type)...)
			continue
		}
		if tag := tomlName(f); tag != "" {
			keys = append(keys, tag)
		}
	}
	sort.Strings(keys)
	return keys
}

func fieldByTag(t reflect.Type, tag string) (reflect.Type, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous {
			if ft, ok := fieldByTag(f.Type, tag); ok {
				return ft, true
			}
		}
		if tomlName(f) == tag {
			return f.Type, true
		}
	}
	return nil, false
}

// tomlName is a field's TOML key: its tag without options (",omitempty").
func tomlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	return name
}

// nearest returns the allowed key closest to a misspelt one, or "".
func nearest(word string, keys []string) string {
	best, bestD := "", 3
	for _, k := range keys {
		if d := editDistance(word, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var setPattern = regexp.MustCompile(`^([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*)=(.*)$`)

// applySet applies one "-set section.key=value" override.
func applySet(cfg *Config, s string) error {
	m := setPattern.FindStringSubmatch(s)
	if m == nil {
		return fmt.Errorf("-set %q: expected section.key=value, e.g. -set train.lr=0.01", s)
	}
	key, value := m[1], strings.TrimSpace(m[3])
	source := "-set " + key
	// A value that is not valid TOML (forward, a path) is taken as a string.
	if _, err := toml.Decode("v = "+value, new(map[string]any)); err != nil {
		value = strconv.Quote(value)
	}
	return decodeStrict(source, key+" = "+value, cfg)
}

// Validate checks every value and says what is allowed.
func (c *Config) Validate() error {
	var errs []string
	bad := func(key, format string, args ...any) {
		errs = append(errs, "key "+key+": "+fmt.Sprintf(format, args...))
	}
	oneOf := func(key, v string, allowed ...string) {
		for _, a := range allowed {
			if v == a {
				return
			}
		}
		bad(key, "%q is not allowed; use one of %s", v, strings.Join(allowed, ", "))
	}
	if c.Run.Name == "" || strings.ContainsAny(c.Run.Name, `/\`) {
		bad("run.name", "%q must be a non-empty name without slashes", c.Run.Name)
	}
	if !deviceOK(c.Run.Device) {
		bad("run.device", "%q is not allowed; use cpu, cuda or cuda:N", c.Run.Device)
	}
	if err := checkPrecision(c.Run.Device, c.Run.Precision); err != nil {
		bad("run.precision", "%v", err)
	}
	if err := checkLayout(c.Run.Device, c.Run.Precision, c.Run.Layout); err != nil {
		bad("run.layout", "%v", err)
	}
	if c.Run.TF32 {
		bad("run.tf32", "is replaced by run.precision: write precision = \"tf32\" in [run] and remove tf32")
	}
	if c.Run.OutDir == "" {
		bad("run.out_dir", "must not be empty")
	}
	oneOf("data.dataset", c.Data.Dataset, "mnist", "fashion-mnist", "cifar10", "imagenet")
	if c.Data.ImageSize < 8 || c.Data.Resize < c.Data.ImageSize {
		bad("data.image_size", "%d must be at least 8 and at most data.resize (%d)", c.Data.ImageSize, c.Data.Resize)
	}
	if c.Data.Classes < 0 {
		bad("data.classes", "%d must be 0 (the dataset's) or positive", c.Data.Classes)
	}
	oneOf("data.augment", c.Data.Augment, "auto", "none", "crop-flip")
	if c.Data.Validation < 1 {
		bad("data.validation", "%d must be at least 1: the headline result is picked on the validation split", c.Data.Validation)
	}
	for k, v := range map[string]int{"data.train_limit": c.Data.TrainLimit, "data.val_limit": c.Data.ValLimit, "data.test_limit": c.Data.TestLimit} {
		if v < 0 {
			bad(k, "%d must be 0 (all) or positive", v)
		}
	}
	oneOf("model.arch", c.Model.Arch, "mlp", "vgg5", "vgg9", "resnet20", "resnet18", "resnet34", "resnet50")
	if c.Model.Arch == "mlp" && len(c.Model.Hidden) == 0 {
		bad("model.hidden", "an MLP needs at least one hidden layer, e.g. [300, 100]")
	}
	for i, h := range c.Model.Hidden {
		if h < 1 {
			bad("model.hidden", "width %d at position %d must be at least 1", h, i)
		}
	}
	oneOf("binarize.mode", c.Binarize.Mode, "float", "binary", "iterative")
	if c.Binarize.Order.Rule != "" {
		oneOf("binarize.order", c.Binarize.Order.Rule, OrderForward, OrderReverse, OrderRandom, OrderGuided, OrderGuidedReverse)
	} else if len(c.Binarize.Order.Layers) == 0 {
		bad("binarize.order", "an explicit order must list the binarizable layers, e.g. [\"fc1\", \"fc3\", \"fc2\"]")
	}
	if c.Binarize.EpochsPerLayer < 1 {
		bad("binarize.epochs_per_layer", "%d must be at least 1", c.Binarize.EpochsPerLayer)
	}
	oneOf("binarize.ste", c.Binarize.STE, "identity", "clipped")
	if c.Train.Epochs < 1 {
		bad("train.epochs", "%d must be at least 1", c.Train.Epochs)
	}
	if c.Train.BatchSize < 2 {
		bad("train.batch_size", "%d must be at least 2 (batch norm needs two samples)", c.Train.BatchSize)
	}
	if c.Train.TestBatchSize < 1 {
		bad("train.test_batch_size", "%d must be at least 1", c.Train.TestBatchSize)
	}
	oneOf("train.optimizer", c.Train.Optimizer, "adam", "sgd")
	if !(c.Train.LR > 0) {
		bad("train.lr", "%v must be positive", c.Train.LR)
	}
	if c.Train.Momentum < 0 || c.Train.Momentum >= 1 {
		bad("train.momentum", "%v must be in [0, 1)", c.Train.Momentum)
	}
	if c.Train.WeightDecay < 0 {
		bad("train.weight_decay", "%v must not be negative", c.Train.WeightDecay)
	}
	if len(c.Train.Betas) != 2 || c.Train.Betas[0] < 0 || c.Train.Betas[0] >= 1 || c.Train.Betas[1] < 0 || c.Train.Betas[1] >= 1 {
		bad("train.betas", "%v must be two numbers in [0, 1), e.g. [0.9, 0.999]", c.Train.Betas)
	}
	if !(c.Train.Eps > 0) {
		bad("train.eps", "%v must be positive", c.Train.Eps)
	}
	c.Train.ScheduleConfig.check("train", bad, oneOf)
	if c.Sensitivity.Epochs < 1 {
		bad("sensitivity.epochs", "%d must be at least 1", c.Sensitivity.Epochs)
	}
	oneOf("sensitivity.metric", c.Sensitivity.Metric, "accuracy", "loss")
	c.Sensitivity.ScheduleConfig.check("sensitivity", bad, oneOf)
	if c.Checkpoint.EverySteps < 0 {
		bad("checkpoint.every_steps", "%d must be 0 (epoch ends only) or positive", c.Checkpoint.EverySteps)
	}
	if c.Checkpoint.Keep < 1 {
		bad("checkpoint.keep", "%d must be at least 1", c.Checkpoint.Keep)
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "\n"))
	}
	return nil
}

func (s ScheduleConfig) check(section string, bad func(string, string, ...any), oneOf func(string, string, ...string)) {
	oneOf(section+".lr_schedule", s.LRSchedule, "constant", "multistep", "cosine")
	for i, m := range s.Milestones {
		if m < 1 || (i > 0 && m <= s.Milestones[i-1]) {
			bad(section+".milestones", "%v must be increasing epochs ≥ 1", s.Milestones)
			break
		}
	}
	if s.LRSchedule == "multistep" && len(s.Milestones) == 0 {
		bad(section+".milestones", "multistep needs at least one milestone epoch")
	}
	if !(s.Gamma > 0) {
		bad(section+".gamma", "%v must be positive", s.Gamma)
	}
}

// checkPrecision checks a run.precision value for a device: fp32
// anywhere; tf32, bf16 and fp16 only on CUDA. Its errors start with the
// value.
func checkPrecision(device, precision string) error {
	switch precision {
	case cuda.FP32:
		return nil
	case cuda.TF32, cuda.BF16, cuda.FP16:
		if device == "cpu" {
			what := map[string]string{
				cuda.TF32: "TF32 tensor-core GEMMs and convolutions",
				cuda.BF16: "bf16 GEMM and convolution inputs, fp32 accumulation",
				cuda.FP16: "fp16 GEMM and convolution inputs, fp32 accumulation, loss scaling",
			}[precision]
			return fmt.Errorf("%q is a CUDA option (%s); the CPU backend computes in fp32: use %q, or device cuda", precision, what, cuda.FP32)
		}
		return nil
	}
	return fmt.Errorf("%q is not allowed; use one of %s, %s, %s, %s", precision, cuda.FP32, cuda.TF32, cuda.BF16, cuda.FP16)
}

// checkLayout checks a run.layout value for a device and precision: auto
// and nchw anywhere ("" is auto), nhwc only on CUDA, nhwc-bf16 and
// nhwc-fp16 only on CUDA at precision bf16 and fp16. Its errors start
// with the value.
func checkLayout(device, precision, layout string) error {
	switch layout {
	case "", cuda.LayoutAuto, cuda.NCHW:
		return nil
	case cuda.NHWC, cuda.NHWCBF16, cuda.NHWCFP16:
		if device == "cpu" {
			return fmt.Errorf("%q is a CUDA option (channels-last activations for cuDNN); the CPU backend computes NCHW: use %q or %q, or device cuda", layout, cuda.LayoutAuto, cuda.NCHW)
		}
		if f := cuda.StorageFormat(layout); f != "" && precision != f {
			return fmt.Errorf("%q stores activations as %s, which needs run.precision = %q (not %q); or use %q", layout, f, f, precision, cuda.NHWC)
		}
		return nil
	}
	return fmt.Errorf("%q is not allowed; use one of %s, %s, %s, %s (precision %s), %s (precision %s)", layout, cuda.LayoutAuto, cuda.NHWC, cuda.NCHW, cuda.NHWCBF16, cuda.BF16, cuda.NHWCFP16, cuda.FP16)
}

var devicePattern = regexp.MustCompile(`^(cpu|cuda|cuda:[0-9]+)$`)

func deviceOK(d string) bool { return devicePattern.MatchString(d) }

// LRAt is the learning rate of epoch e (0-based) of a run of total epochs
// under a schedule starting at base: multistep is base·gamma^(number of
// milestones ≤ e) (PyTorch's MultiStepLR); cosine is
// base·(1 + cos(π·e/total))/2 (CosineAnnealingLR, T_max = total, stepped
// per epoch).
func (s ScheduleConfig) LRAt(base float64, e, total int) float64 {
	lr := base
	if s.LRSchedule == "cosine" {
		return base * (1 + math.Cos(math.Pi*float64(e)/float64(max(total, 1)))) / 2
	}
	if s.LRSchedule == "multistep" {
		for _, m := range s.Milestones {
			if e >= m {
				lr *= s.Gamma
			}
		}
	}
	return lr
}

// Encode writes the configuration as TOML (every key, defaults included).
func (c *Config) Encode() ([]byte, error) {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// SensitivityFingerprint identifies everything that changes a sensitivity
// ranking: data, model, binarizer, optimization, the sensitivity settings
// and a precision other than fp32 (not the order, the budget of the main
// run, the device or where it writes). An fp32 run's fingerprint is what it
// was before precisions existed, so saved rankings stay valid.
func (c *Config) SensitivityFingerprint() string {
	key := struct {
		Seed        uint64
		Data        DataConfig
		Model       ModelConfig
		STE         string
		ClipLatent  bool
		Reset       bool
		Train       TrainConfig
		Sensitivity SensitivityConfig
		Precision   string `json:",omitempty"`
	}{c.Run.Seed, c.Data, c.Model, c.Binarize.STE, c.Binarize.ClipLatent, c.Binarize.ResetLatentEachEpoch, c.Train, c.Sensitivity, c.Run.Precision}
	if key.Precision == "fp32" {
		key.Precision = ""
	}
	key.Data.Dir = ""
	key.Train.Epochs = 0
	key.Train.ScheduleConfig = ScheduleConfig{}
	key.Sensitivity.File = ""
	b, _ := json.Marshal(key)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:6])
}
