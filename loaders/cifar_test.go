package loaders

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cifarRecords returns n records in the real binary format whose label is
// (first+i)%10 and whose pixels encode the record and position.
func cifarRecords(first, n int) []byte {
	var b []byte
	for i := 0; i < n; i++ {
		rec := make([]byte, cifarRecord)
		rec[0] = byte((first + i) % 10)
		for p := 1; p < cifarRecord; p++ {
			rec[p] = byte(first + i + p)
		}
		b = append(b, rec...)
	}
	return b
}

func writeCIFAR(t *testing.T, dir string, perFile int) {
	t.Helper()
	for k, name := range CIFAR10TrainFiles() {
		writeFile(t, dir, name, cifarRecords(k*perFile, perFile))
	}
	writeFile(t, dir, CIFAR10TestFile, cifarRecords(1000, perFile))
}

func TestLoadCIFAR10SplitsWithASeed(t *testing.T) {
	dir := t.TempDir()
	writeCIFAR(t, dir, 8) // 40 training images
	a, err := LoadCIFAR10(dir, 6, 316)
	if err != nil {
		t.Fatal(err)
	}
	if a.Train.N != 34 || a.Val.N != 6 || a.Test.N != 8 || a.SampleSize() != 3072 {
		t.Fatalf("splits %d/%d/%d", a.Train.N, a.Val.N, a.Test.N)
	}
	b, _ := LoadCIFAR10(dir, 6, 316)
	c, _ := LoadCIFAR10(dir, 6, 317)
	if !bytes.Equal(a.Val.Labels, b.Val.Labels) || !bytes.Equal(a.Val.Images, b.Val.Images) {
		t.Error("the same seed gave different validation splits")
	}
	if bytes.Equal(a.Val.Images, c.Val.Images) {
		t.Error("another seed gave the same validation split")
	}
	// Every training image is in exactly one of the splits.
	seen := map[byte]int{}
	for _, s := range []Split{a.Train, a.Val} {
		for i := 0; i < s.N; i++ {
			seen[s.Images[i*3072]-1]++ // first pixel = index + 1
		}
	}
	if len(seen) != 40 {
		t.Errorf("%d distinct images across train and validation, want 40", len(seen))
	}
	if !strings.Contains(a.SplitNote, "seed 316") {
		t.Errorf("split note %q does not record the seed", a.SplitNote)
	}
}

func TestLoadCIFAR10RejectsTruncatedAndCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	writeCIFAR(t, dir, 4)
	good := cifarRecords(0, 4)
	writeFile(t, dir, "data_batch_3.bin", good[:len(good)-100])
	_, err := LoadCIFAR10(dir, 2, 1)
	if err == nil || !strings.Contains(err.Error(), "data_batch_3.bin") || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("truncated: %v", err)
	}
	// CIFAR-100's records have two label bytes: 3,074 bytes each.
	writeFile(t, dir, "data_batch_3.bin", make([]byte, 4*3074))
	if _, err := LoadCIFAR10(dir, 2, 1); err == nil || !strings.Contains(err.Error(), "not a whole number of 3073-byte records") {
		t.Errorf("wrong record size: %v", err)
	}
	bad := append([]byte{}, good...)
	bad[cifarRecord] = 12
	writeFile(t, dir, "data_batch_3.bin", bad)
	if _, err := LoadCIFAR10(dir, 2, 1); err == nil || !strings.Contains(err.Error(), "record 1 has label 12") {
		t.Errorf("bad label: %v", err)
	}
	os.Remove(filepath.Join(dir, "data_batch_3.bin"))
	if _, err := LoadCIFAR10(dir, 2, 1); err == nil || !strings.Contains(err.Error(), "data_batch_3.bin") {
		t.Errorf("missing file: %v", err)
	}
}

// Each augmented image must be the padded original, cropped at one offset
// in [−4, 4]² and maybe flipped; offsets and flips must vary.
func TestAugmentationIsPaddedCropAndFlip(t *testing.T) {
	dir := t.TempDir()
	writeCIFAR(t, dir, 8)
	d, err := LoadCIFAR10(dir, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	x, y := make([]float32, n*3072), make([]float32, n)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	rng := NewBatchRNG()
	rng.Seed(1, 0, 0)
	d.FillTrainBatch(x, y, &d.Train, idx, rng)
	kinds := map[[3]int]bool{}
	for b := 0; b < n; b++ {
		src := d.Train.Images[b*3072 : (b+1)*3072]
		match := [3]int{99, 99, 99}
		for top := -4; top <= 4 && match[0] == 99; top++ {
			for left := -4; left <= 4 && match[0] == 99; left++ {
				for flip := 0; flip < 2; flip++ {
					if augmentedEquals(d, x[b*3072:(b+1)*3072], src, top, left, flip == 1) {
						match = [3]int{top, left, flip}
						break
					}
				}
			}
		}
		if match[0] == 99 {
			t.Fatalf("image %d is no padded crop or flip of its source", b)
		}
		kinds[match] = true
		if y[b] != float32(d.Train.Labels[b]) {
			t.Fatalf("label %v, want %d", y[b], d.Train.Labels[b])
		}
	}
	if len(kinds) < 4 {
		t.Errorf("16 images used only %d crop/flip combinations", len(kinds))
	}
	// Reseeding reproduces the batch exactly.
	x2 := make([]float32, len(x))
	rng.Seed(1, 0, 0)
	d.FillTrainBatch(x2, y, &d.Train, idx, rng)
	for i := range x {
		if x[i] != x2[i] {
			t.Fatal("the same seed, epoch and batch augmented differently")
		}
	}
}

func augmentedEquals(d *Dataset, got []float32, src []byte, top, left int, flip bool) bool {
	for c := 0; c < 3; c++ {
		for r := 0; r < 32; r++ {
			for col := 0; col < 32; col++ {
				cc := col
				if flip {
					cc = 31 - col
				}
				sr, sc := r+top, cc+left
				var pix float32
				if sr >= 0 && sr < 32 && sc >= 0 && sc < 32 {
					pix = float32(src[(c*32+sr)*32+sc])
				}
				if want := (pix/255 - d.Mean[c]) / d.Std[c]; got[(c*32+r)*32+col] != want {
					return false
				}
			}
		}
	}
	return true
}

func TestDownloadCIFAR10VerifiesAndUnpacks(t *testing.T) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	add := func(name string, data []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	for k, name := range CIFAR10TrainFiles() {
		add(CIFAR10Folder+"/"+name, cifarRecords(k*3, 3))
	}
	add(CIFAR10Folder+"/"+CIFAR10TestFile, cifarRecords(100, 3))
	add(CIFAR10Folder+"/batches.meta.txt", []byte("airplane\n"))
	tw.Close()
	gz.Close()
	archive := buf.Bytes()
	sum := md5.Sum(archive)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(archive) }))
	defer srv.Close()
	dir := t.TempDir()
	rf := RemoteFile{Name: "cifar-10-binary.tar.gz", MD5: hex.EncodeToString(sum[:])}
	if err := DownloadCIFAR10(context.Background(), srv.Client(), dir, []string{srv.URL + "/"}, rf, nil); err != nil {
		t.Fatal(err)
	}
	d, err := LoadCIFAR10(dir, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d.Train.N != 12 || d.Test.N != 3 {
		t.Errorf("unpacked release has %d/%d images", d.Train.N, d.Test.N)
	}
	rf.MD5 = strings.Repeat("0", 32)
	err = DownloadCIFAR10(context.Background(), srv.Client(), t.TempDir(), []string{srv.URL + "/"}, rf, nil)
	if err == nil || !strings.Contains(err.Error(), "MD5") {
		t.Errorf("bad checksum: %v", err)
	}
}
