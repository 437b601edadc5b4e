package loaders

import (
	"errors"
	"fmt"
	"image"
	stddraw "image/draw"
	_ "image/jpeg" // JPEG decoding (colour, grayscale, CMYK)
	_ "image/png"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/image/draw"
)

// ImageSource is a split whose images are decoded on demand (a JPEG
// folder or a packed dataset) instead of held in memory.
type ImageSource interface {
	// Sample writes sample i as Channels×Height×Width bytes (RGB planes)
	// into dst, transformed for training with rng, or for evaluation when
	// rng is nil, and returns its label.
	Sample(i int, dst []byte, rng *rand.Rand) (int, error)
	// Path names sample i in messages.
	Path(i int) string
}

// ImageTransform is ImageNet's preprocessing: RandomResizedCrop(Size)
// (scale 0.08–1, aspect 3/4–4/3) and a horizontal flip for training;
// resize of the shorter side to Resize and a center crop of Size for
// evaluation. Resizing is bilinear.
type ImageTransform struct {
	Size, Resize int
}

// toRGBA converts any decoded image (YCbCr, grayscale, CMYK, paletted…)
// to RGBA through its colour model.
func toRGBA(img image.Image) *image.RGBA {
	if r, ok := img.(*image.RGBA); ok && r.Rect.Min == (image.Point{}) {
		return r
	}
	b := img.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	stddraw.Draw(out, out.Rect, img, b.Min, stddraw.Src)
	return out
}

// ResizeShorter scales img so its shorter side is side pixels.
func ResizeShorter(img *image.RGBA, side int) *image.RGBA {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	nw, nh := side, side
	if w < h {
		nh = int(math.Round(float64(h) * float64(side) / float64(w)))
	} else {
		nw = int(math.Round(float64(w) * float64(side) / float64(h)))
	}
	out := image.NewRGBA(image.Rect(0, 0, nw, nh))
	draw.BiLinear.Scale(out, out.Rect, img, img.Rect, draw.Src, nil)
	return out
}

// writeCHW writes the size×size region of img at (x0, y0), resized from
// cw×ch if they differ, as RGB planes, flipped horizontally if flip.
func writeCHW(dst []byte, img *image.RGBA, x0, y0, cw, ch, size int, flip bool) {
	src := img
	if cw != size || ch != size {
		src = image.NewRGBA(image.Rect(0, 0, size, size))
		draw.BiLinear.Scale(src, src.Rect, img, image.Rect(x0, y0, x0+cw, y0+ch), draw.Src, nil)
		x0, y0 = 0, 0
	}
	plane := size * size
	for y := 0; y < size; y++ {
		for x := 0; x < size; x++ {
			sx := x
			if flip {
				sx = size - 1 - x
			}
			o := src.PixOffset(x0+sx, y0+y)
			p := y*size + x
			dst[p], dst[plane+p], dst[2*plane+p] = src.Pix[o], src.Pix[o+1], src.Pix[o+2]
		}
	}
}

// Apply transforms a decoded image into dst (3×Size×Size bytes).
func (t ImageTransform) Apply(img *image.RGBA, dst []byte, rng *rand.Rand) {
	if rng == nil {
		r := ResizeShorter(img, t.Resize)
		t.CenterCrop(r, dst)
		return
	}
	w, h := img.Rect.Dx(), img.Rect.Dy()
	area := float64(w * h)
	for attempt := 0; attempt < 10; attempt++ {
		target := area * (0.08 + rng.Float64()*(1-0.08))
		aspect := math.Exp(math.Log(3.0/4) + rng.Float64()*(math.Log(4.0/3)-math.Log(3.0/4)))
		cw := int(math.Round(math.Sqrt(target * aspect)))
		ch := int(math.Round(math.Sqrt(target / aspect)))
		if cw > 0 && ch > 0 && cw <= w && ch <= h {
			x0, y0 := rng.IntN(w-cw+1), rng.IntN(h-ch+1)
			writeCHW(dst, img, x0, y0, cw, ch, t.Size, rng.IntN(2) == 1)
			return
		}
	}
	// Fallback, as torchvision: the whole image, clamped to the ratio
	// range, centred.
	cw, ch := w, h
	if r := float64(w) / float64(h); r < 3.0/4 {
		ch = int(math.Round(float64(w) / (3.0 / 4)))
	} else if r > 4.0/3 {
		cw = int(math.Round(float64(h) * (4.0 / 3)))
	}
	writeCHW(dst, img, (w-cw)/2, (h-ch)/2, cw, ch, t.Size, rng.IntN(2) == 1)
}

// CenterCrop writes the centred Size×Size crop of img (at least that big).
func (t ImageTransform) CenterCrop(img *image.RGBA, dst []byte) {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	x0, y0 := int(math.Round(float64(w-t.Size)/2)), int(math.Round(float64(h-t.Size)/2))
	writeCHW(dst, img, x0, y0, t.Size, t.Size, t.Size, false)
}

// DecodeImage reads an image file as RGBA.
func DecodeImage(path string) (*image.RGBA, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() < 1 || b.Dy() < 1 {
		return nil, fmt.Errorf("%s: empty image", path)
	}
	return toRGBA(img), nil
}

// ImageFolder is an ImageNet-style folder: ROOT/<class>/<image>, classes
// in sorted order of their folder names.
type ImageFolder struct {
	Root      string
	Classes   []string
	Files     []string
	Labels    []int
	Transform ImageTransform
}

// ScanImageFolder lists the class folders of root and their files (hidden
// files skipped).
func ScanImageFolder(root string, t ImageTransform) (*ImageFolder, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	f := &ImageFolder{Root: root, Transform: t}
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			f.Classes = append(f.Classes, e.Name())
		}
	}
	sort.Strings(f.Classes)
	if len(f.Classes) == 0 {
		return nil, fmt.Errorf("%s has no class folders (expected ROOT/<class>/*.JPEG)", root)
	}
	for label, c := range f.Classes {
		files, err := os.ReadDir(filepath.Join(root, c))
		if err != nil {
			return nil, err
		}
		for _, file := range files {
			if file.Type().IsRegular() && !strings.HasPrefix(file.Name(), ".") {
				f.Files = append(f.Files, filepath.Join(root, c, file.Name()))
				f.Labels = append(f.Labels, label)
			}
		}
	}
	if len(f.Files) == 0 {
		return nil, fmt.Errorf("%s: the class folders hold no files", root)
	}
	return f, nil
}

// Sample decodes and transforms file i.
func (f *ImageFolder) Sample(i int, dst []byte, rng *rand.Rand) (int, error) {
	img, err := DecodeImage(f.Files[i])
	if err != nil {
		return 0, err
	}
	f.Transform.Apply(img, dst, rng)
	return f.Labels[i], nil
}

// Path is file i's path.
func (f *ImageFolder) Path(i int) string { return f.Files[i] }

// subset is a view of some samples of a source.
type subset struct {
	src ImageSource
	idx []int
}

func (s subset) Sample(i int, dst []byte, rng *rand.Rand) (int, error) {
	return s.src.Sample(s.idx[i], dst, rng)
}
func (s subset) Path(i int) string { return s.src.Path(s.idx[i]) }

// Skips counts and reports unreadable samples: each path once, on the
// log writer, never a crash and never a silent drop.
type Skips struct {
	mu       sync.Mutex
	reported map[string]bool
	Log      io.Writer
}

func (s *Skips) record(path string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reported == nil {
		s.reported = map[string]bool{}
	}
	if !s.reported[path] {
		s.reported[path] = true
		if s.Log != nil {
			fmt.Fprintf(s.Log, "skipping unreadable image %s: %v\n", path, err)
		}
	}
}

// Paths is the number of distinct unreadable files met.
func (s *Skips) Paths() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reported)
}

// fillFromSource decodes the samples idx of a streamed split in parallel
// into x and labels, normalized, leaving out unreadable ones; it returns
// how many it wrote. Training samples draw their augmentation from seeds
// taken in order from rng, so the result does not depend on the number of
// decoding goroutines.
func (d *Dataset) fillFromSource(x, labels []float32, src ImageSource, idx []int, rng *BatchRNG) int {
	ss := d.SampleSize()
	seeds := make([]uint64, len(idx))
	if rng != nil {
		for i := range seeds {
			seeds[i] = rng.rng.Uint64()
		}
	}
	type result struct {
		ok    bool
		label int
	}
	results := make([]result, len(idx))
	raw := make([][]byte, len(idx))
	var next atomic.Int64
	var wg sync.WaitGroup
	workers := min(runtime.GOMAXPROCS(0), len(idx))
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, ss)
			for {
				i := int(next.Add(1) - 1)
				if i >= len(idx) {
					return
				}
				var r *rand.Rand
				if rng != nil {
					r = rand.New(rand.NewPCG(seeds[i], uint64(idx[i])))
				}
				label, err := src.Sample(idx[i], buf, r)
				if err != nil {
					d.Skipped.record(src.Path(idx[i]), err)
					continue
				}
				if label < 0 || label >= d.Classes {
					d.Skipped.record(src.Path(idx[i]), fmt.Errorf("label %d is not a class in [0, %d)", label, d.Classes))
					continue
				}
				raw[i] = append([]byte(nil), buf...)
				results[i] = result{ok: true, label: label}
			}
		}()
	}
	wg.Wait()
	n := 0
	plane := d.Height * d.Width
	for i, r := range results {
		if !r.ok {
			continue
		}
		dst := x[n*ss : (n+1)*ss]
		for c := 0; c < d.Channels; c++ {
			mean, std := d.Mean[c], d.Std[c]
			for p := c * plane; p < (c+1)*plane; p++ {
				dst[p] = (float32(raw[i][p])/255 - mean) / std
			}
		}
		labels[n] = float32(r.label)
		n++
	}
	return n
}

// ImageNetMean and ImageNetStd are the usual per-channel statistics.
func ImageNetMean() []float32 { return []float32{0.485, 0.456, 0.406} }

// ImageNetStd is the per-channel standard deviation.
func ImageNetStd() []float32 { return []float32{0.229, 0.224, 0.225} }

// LoadImageNet opens ROOT/train and ROOT/val (JPEG class folders) or a
// packed dataset made by PackImageFolder (ROOT/index.json), holds out
// validation training images drawn with splitSeed, and uses val as the
// test split.
func LoadImageNet(root string, validation int, splitSeed uint64, t ImageTransform, classes int, log io.Writer) (*Dataset, error) {
	if root == "" {
		return nil, errors.New("imagenet: set data.dir to the folder holding train/ and val/ (or a packed dataset)")
	}
	var train, test ImageSource
	var trainN, testN int
	var names []string
	if _, err := os.Stat(filepath.Join(root, PackIndexFile)); err == nil {
		p, err := OpenPacked(root, t)
		if err != nil {
			return nil, err
		}
		if p.Index.ShortSide != t.Resize {
			return nil, fmt.Errorf("imagenet: %s was packed with shorter side %d but data.resize = %d: set data.resize = %d or pack again with --short-side %d", root, p.Index.ShortSide, t.Resize, p.Index.ShortSide, t.Resize)
		}
		train, test = p.Split("train"), p.Split("val")
		if train == nil || test == nil {
			return nil, fmt.Errorf("imagenet: packed dataset %s needs train and val splits", root)
		}
		trainN, testN, names = p.Len("train"), p.Len("val"), p.Index.Classes
	} else {
		tr, err := ScanImageFolder(filepath.Join(root, "train"), t)
		if err != nil {
			return nil, fmt.Errorf("imagenet: %w", err)
		}
		va, err := ScanImageFolder(filepath.Join(root, "val"), t)
		if err != nil {
			return nil, fmt.Errorf("imagenet: %w", err)
		}
		if strings.Join(tr.Classes, ",") != strings.Join(va.Classes, ",") {
			return nil, fmt.Errorf("imagenet: %s/train and %s/val have different class folders", root, root)
		}
		train, test, trainN, testN, names = tr, va, len(tr.Files), len(va.Files), tr.Classes
	}
	if len(names) > classes {
		return nil, fmt.Errorf("imagenet: %s has %d classes, the model has %d (set data.classes)", root, len(names), classes)
	}
	if validation < 0 || validation >= trainN {
		return nil, fmt.Errorf("imagenet: validation split of %d images must be in [0, %d)", validation, trainN)
	}
	perm := rand.New(rand.NewPCG(splitSeed, 0x1a6e)).Perm(trainN)
	valIdx := append([]int(nil), perm[:validation]...)
	sort.Ints(valIdx)
	inVal := make([]bool, trainN)
	for _, i := range valIdx {
		inVal[i] = true
	}
	var trainIdx []int
	for i := 0; i < trainN; i++ {
		if !inVal[i] {
			trainIdx = append(trainIdx, i)
		}
	}
	d := &Dataset{Name: "imagenet", Dir: root, Channels: 3, Height: t.Size, Width: t.Size, Classes: classes,
		Mean: ImageNetMean(), Std: ImageNetStd(),
		Train:     Split{N: len(trainIdx), Source: subset{train, trainIdx}},
		Val:       Split{N: validation, Source: subset{train, valIdx}},
		Test:      Split{N: testN, Source: test},
		SplitNote: fmt.Sprintf("validation = %d training images drawn with seed %d; test = val/", validation, splitSeed),
		Skipped:   &Skips{Log: log}, Augment: Augmentation{Random: true}}
	return d, nil
}
