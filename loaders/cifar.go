package loaders

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// CIFAR-10's binary release: each record is one label byte and 3,072 pixel
// bytes (the red, green and blue 32×32 planes).
const (
	cifarSide   = 32
	cifarRecord = 1 + 3*cifarSide*cifarSide
	// CIFAR10Folder is the folder the release's archive unpacks to.
	CIFAR10Folder = "cifar-10-batches-bin"
)

// CIFAR10TrainFiles returns the names of the five training batches.
func CIFAR10TrainFiles() []string {
	return []string{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"}
}

// CIFAR10TestFile is the name of the test batch.
const CIFAR10TestFile = "test_batch.bin"

// LoadCIFAR10 reads the binary release from dir (or dir/cifar-10-batches-bin)
// and holds out `validation` training images chosen by a permutation drawn
// from splitSeed; the rest keep their original order. Images are normalized
// per channel (mean 0.4914, 0.4822, 0.4465; std 0.2023, 0.1994, 0.2010) and
// training batches are augmented with a 4-pixel-padded random crop and a
// horizontal flip.
func LoadCIFAR10(dir string, validation int, splitSeed uint64) (*Dataset, error) {
	if dir == "" {
		return nil, fmt.Errorf("cifar10: set data.dir to the folder of the binary release (%s); `iterbin download cifar10 DIR` fetches it", CIFAR10Folder)
	}
	if _, err := os.Stat(filepath.Join(dir, CIFAR10Folder, CIFAR10TestFile)); err == nil {
		dir = filepath.Join(dir, CIFAR10Folder)
	}
	var train Split
	for _, name := range CIFAR10TrainFiles() {
		s, err := readCIFARFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		train.Images = append(train.Images, s.Images...)
		train.Labels = append(train.Labels, s.Labels...)
		train.N += s.N
	}
	test, err := readCIFARFile(filepath.Join(dir, CIFAR10TestFile))
	if err != nil {
		return nil, err
	}
	if validation < 0 || validation >= train.N {
		return nil, fmt.Errorf("cifar10: validation split of %d images must be in [0, %d)", validation, train.N)
	}
	d := &Dataset{Name: "cifar10", Dir: dir, Channels: 3, Height: cifarSide, Width: cifarSide, Classes: 10,
		Mean: []float32{0.4914, 0.4822, 0.4465}, Std: []float32{0.2023, 0.1994, 0.2010},
		Test: test, Augment: Augmentation{CropPad: 4, Flip: true}}
	valIdx := rand.New(rand.NewPCG(splitSeed, 0xc1fa)).Perm(train.N)[:validation]
	slices.Sort(valIdx)
	d.Train, d.Val = train.partition(valIdx, d.SampleSize())
	d.SplitNote = fmt.Sprintf("validation = %d training images drawn by a permutation with seed %d (first indices %v)", validation, splitSeed, valIdx[:min(5, len(valIdx))])
	return d, nil
}

// partition moves the samples at the sorted indices out into a second split.
func (s Split) partition(out []int, sampleSize int) (rest, picked Split) {
	j := 0
	for i := 0; i < s.N; i++ {
		img := s.Images[i*sampleSize : (i+1)*sampleSize]
		if j < len(out) && out[j] == i {
			picked.Images = append(picked.Images, img...)
			picked.Labels = append(picked.Labels, s.Labels[i])
			picked.N++
			j++
			continue
		}
		rest.Images = append(rest.Images, img...)
		rest.Labels = append(rest.Labels, s.Labels[i])
		rest.N++
	}
	return rest, picked
}

func readCIFARFile(path string) (Split, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Split{}, fmt.Errorf("cifar10: %v; set data.dir to the folder of the binary release or run `iterbin download cifar10 DIR`", err)
	}
	if len(data) == 0 || len(data)%cifarRecord != 0 {
		return Split{}, fmt.Errorf("%s: %d bytes is not a whole number of %d-byte records: the file is truncated or not CIFAR-10's binary release; download it again", path, len(data), cifarRecord)
	}
	n := len(data) / cifarRecord
	s := Split{Images: make([]byte, 0, n*(cifarRecord-1)), Labels: make([]byte, n), N: n}
	for i := 0; i < n; i++ {
		rec := data[i*cifarRecord : (i+1)*cifarRecord]
		if rec[0] > 9 {
			return Split{}, fmt.Errorf("%s: record %d has label %d, CIFAR-10 has classes 0-9: the file is corrupt", path, i, rec[0])
		}
		s.Labels[i] = rec[0]
		s.Images = append(s.Images, rec[1:]...)
	}
	return s, nil
}

// CIFAR10Archive is the binary release's archive with its published MD5.
func CIFAR10Archive() RemoteFile {
	return RemoteFile{Name: "cifar-10-binary.tar.gz", MD5: "c32a1d4ab5d03f1284b67883e8d87530"}
}

// CIFAR10Mirrors returns where the archive is served.
func CIFAR10Mirrors() []string { return []string{"https://www.cs.toronto.edu/~kriz/"} }

// DownloadCIFAR10 fetches the binary release's archive into dir, verifies
// it, and unpacks the batch files into dir/cifar-10-batches-bin.
func DownloadCIFAR10(ctx context.Context, client *http.Client, dir string, mirrors []string, archive RemoteFile, progress io.Writer) error {
	if err := Download(ctx, client, dir, mirrors, []RemoteFile{archive}, progress); err != nil {
		return err
	}
	return extractCIFAR(filepath.Join(dir, archive.Name), dir)
}

// extractCIFAR unpacks the .bin files of the archive's CIFAR-10 folder,
// each through a temporary file and a rename.
func extractCIFAR(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %v", archive, err)
	}
	tr := tar.NewReader(gz)
	dst := filepath.Join(dir, CIFAR10Folder)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	found := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %v", archive, err)
		}
		name := filepath.Base(h.Name)
		if h.Typeflag != tar.TypeReg || !strings.HasSuffix(name, ".bin") || filepath.Base(filepath.Dir(h.Name)) != CIFAR10Folder {
			continue
		}
		tmp, err := os.CreateTemp(dst, name+".part-*")
		if err != nil {
			return err
		}
		_, err = io.Copy(tmp, tr)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), filepath.Join(dst, name))
		}
		if err != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("%s: %s: %v", archive, h.Name, err)
		}
		found++
	}
	if found == 0 {
		return fmt.Errorf("%s holds no %s/*.bin files", archive, CIFAR10Folder)
	}
	return nil
}
