package loaders

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadIDXPlainAndGzipRoundTrip(t *testing.T) {
	dir := t.TempDir()
	data := []byte{1, 2, 3, 4, 5, 6}
	file := EncodeIDX([]int{3, 2}, data)
	for _, p := range []string{writeFile(t, dir, "plain", file), writeFile(t, dir, "packed.gz", gz(file))} {
		idx, err := ReadIDX(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(idx.Dims) != 2 || idx.Dims[0] != 3 || idx.Dims[1] != 2 || !bytes.Equal(idx.Data, data) {
			t.Errorf("%s: got dims %v data %v", p, idx.Dims, idx.Data)
		}
	}
}

func TestReadIDXRejectsBadFilesWithClearErrors(t *testing.T) {
	good := EncodeIDX([]int{2, 3}, []byte{1, 2, 3, 4, 5, 6})
	gzGood := gz(good)
	cases := []struct {
		name, want string
		data       []byte
	}{
		{"empty", "too short", nil},
		{"magic", "magic number", append([]byte{1, 2}, good[2:]...)},
		{"type", "not unsigned byte", append([]byte{0, 0, 0x0d}, good[3:]...)},
		{"dims", "dimension 2 of 2 missing", good[:9]},
		{"truncated data", "truncated: shape [2 3] needs 6 bytes of data, the file has 4", good[:len(good)-2]},
		{"trailing", "beyond the 6", append(append([]byte{}, good...), 9, 9)},
		{"zero dim", "dimension 1 is zero", EncodeIDX([]int{0}, nil)},
		{"corrupt gzip", "corrupt gzip", []byte{0x1f, 0x8b, 0, 1, 2}},
		{"truncated gzip", "truncated", gzGood[:len(gzGood)-12]},
	}
	dir := t.TempDir()
	for _, c := range cases {
		p := writeFile(t, dir, strings.ReplaceAll(c.name, " ", "_"), c.data)
		_, err := ReadIDX(p)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %v, want one naming %s and saying %q", c.name, err, p, c.want)
		}
	}
}

// writeMNIST writes a small dataset in the real MNIST layout: n training
// and m test images of 28×28 whose pixels encode their index.
func writeMNIST(t *testing.T, dir string, n, m int, gzipped bool) {
	t.Helper()
	names := IDXFileNames()
	for i, count := range []int{n, m} {
		img := make([]byte, count*28*28)
		lab := make([]byte, count)
		for s := 0; s < count; s++ {
			lab[s] = byte(s % 10)
			for p := 0; p < 28*28; p++ {
				img[s*784+p] = byte(s + p)
			}
		}
		imgs, labs := EncodeIDX([]int{count, 28, 28}, img), EncodeIDX([]int{count}, lab)
		in, ln := names[2*i], names[2*i+1]
		if gzipped {
			imgs, labs, in, ln = gz(imgs), gz(labs), in+".gz", ln+".gz"
		}
		writeFile(t, dir, in, imgs)
		writeFile(t, dir, ln, labs)
	}
}

func TestLoadMNISTLikeSplitsAndNormalizes(t *testing.T) {
	for _, gzipped := range []bool{false, true} {
		dir := t.TempDir()
		writeMNIST(t, dir, 30, 12, gzipped)
		d, err := LoadMNISTLike(context.Background(), "mnist", dir, 5)
		if err != nil {
			t.Fatal(err)
		}
		if d.Train.N != 25 || d.Val.N != 5 || d.Test.N != 12 || d.SampleSize() != 784 {
			t.Fatalf("splits %d/%d/%d, want 25/5/12", d.Train.N, d.Val.N, d.Test.N)
		}
		// The validation split is the last 5 training images (25..29).
		if d.Val.Labels[0] != 25%10 || d.Val.Images[0] != 25 {
			t.Errorf("validation starts with label %d pixel %d, want image 25", d.Val.Labels[0], d.Val.Images[0])
		}
		x, y := make([]float32, 2*784), make([]float32, 2)
		d.FillBatch(x, y, &d.Val, []int{1, 0})
		want := (float32(26)/255 - 0.1307) / 0.3081
		if x[0] != want || y[0] != 6 || y[1] != 5 {
			t.Errorf("batch x[0]=%v y=%v, want %v and [6 5]", x[0], y, want)
		}
	}
}

func TestLoadMNISTLikeReportsMissingAndInconsistentFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadMNISTLike(context.Background(), "mnist", dir, 5); err == nil || !strings.Contains(err.Error(), "train-images-idx3-ubyte") {
		t.Errorf("empty folder: %v", err)
	}
	writeMNIST(t, dir, 30, 12, false)
	writeFile(t, dir, "t10k-labels-idx1-ubyte", EncodeIDX([]int{11}, make([]byte, 11)))
	if _, err := LoadMNISTLike(context.Background(), "mnist", dir, 5); err == nil || !strings.Contains(err.Error(), "12 images but 11 labels") {
		t.Errorf("count mismatch: %v", err)
	}
	writeFile(t, dir, "t10k-labels-idx1-ubyte", EncodeIDX([]int{12}, bytes.Repeat([]byte{10}, 12)))
	if _, err := LoadMNISTLike(context.Background(), "mnist", dir, 5); err == nil || !strings.Contains(err.Error(), "label 10") {
		t.Errorf("bad label: %v", err)
	}
	if _, err := LoadMNISTLike(context.Background(), "cifar", dir, 5); err == nil {
		t.Error("unknown dataset accepted")
	}
}

func TestEpochOrderIsAPermutationFixedBySeedAndEpoch(t *testing.T) {
	a, b, c := EpochOrder(100, 316, 3), EpochOrder(100, 316, 3), EpochOrder(100, 316, 4)
	seen := make([]bool, 100)
	same := true
	for i := range a {
		seen[a[i]] = true
		if a[i] != b[i] {
			t.Fatal("same seed and epoch gave different orders")
		}
		same = same && a[i] == c[i]
	}
	for i, s := range seen {
		if !s {
			t.Fatalf("sample %d missing from the permutation", i)
		}
	}
	if same {
		t.Error("epochs 3 and 4 got the same order")
	}
}

func TestDownloadVerifiesChecksumsAndFallsBackToTheNextMirror(t *testing.T) {
	content := gz(EncodeIDX([]int{2}, []byte{1, 2}))
	sum := sha256.Sum256(content)
	files := []RemoteFile{{Name: "labels.gz", SHA256: hex.EncodeToString(sum[:])}}
	mux := http.NewServeMux()
	mux.HandleFunc("/broken/", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	mux.HandleFunc("/wrong/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("not the file")) })
	mux.HandleFunc("/good/", func(w http.ResponseWriter, r *http.Request) { w.Write(content) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	dir := t.TempDir()
	var log bytes.Buffer
	err := Download(context.Background(), srv.Client(), dir, []string{srv.URL + "/broken/", srv.URL + "/wrong/", srv.URL + "/good/"}, files, &log)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "labels.gz"))
	if !bytes.Equal(got, content) || !strings.Contains(log.String(), "/good/") {
		t.Fatalf("downloaded %d bytes, log %q", len(got), log.String())
	}
	// A second call keeps the verified file without fetching.
	log.Reset()
	if err := Download(context.Background(), srv.Client(), dir, []string{srv.URL + "/broken/"}, files, &log); err != nil || !strings.Contains(log.String(), "present") {
		t.Fatalf("second download: %v, log %q", err, log.String())
	}
	// Only wrong content: an error naming the mismatch, and no file left.
	dir2 := t.TempDir()
	err = Download(context.Background(), srv.Client(), dir2, []string{srv.URL + "/wrong/"}, files, nil)
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("wrong content: %v", err)
	}
	if entries, _ := os.ReadDir(dir2); len(entries) != 0 {
		t.Fatalf("a failed download left %v", entries)
	}
}

// Fashion-MNIST goes through the same loader; the real files come from
// Debian's dataset-fashion-mnist, which .ci/run installs.
func TestRealFashionMNISTFromDebianPackage(t *testing.T) {
	if _, err := os.Stat(FashionMNISTDebianDir); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s missing in CI: .ci/run must install dataset-fashion-mnist", FashionMNISTDebianDir)
		}
		t.Skipf("%s missing: apt-get install dataset-fashion-mnist", FashionMNISTDebianDir)
	}
	d, err := LoadMNISTLike(context.Background(), "fashion-mnist", "", 5000)
	if err != nil {
		t.Fatal(err)
	}
	if d.Train.N != 55000 || d.Val.N != 5000 || d.Test.N != 10000 || d.SampleSize() != 784 {
		t.Fatalf("splits %d/%d/%d", d.Train.N, d.Val.N, d.Test.N)
	}
	counts := make([]int, 10)
	for _, l := range d.Test.Labels {
		counts[l]++
	}
	for c, n := range counts {
		if n != 1000 {
			t.Errorf("class %d has %d test images, Fashion-MNIST has 1000 of each", c, n)
		}
	}
}
