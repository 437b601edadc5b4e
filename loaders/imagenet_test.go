package loaders

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The CMYK JPEG and its PNG rendering in testdata/ come from the Go
// distribution's image test data (video-001.cmyk.*).

func colourJPEG(t testing.TB, w, h int, seed byte) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{byte(x*5) + seed, byte(y * 3), byte(x + y), 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func grayJPEG(t testing.TB, w, h int) []byte {
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 7)
	}
	var buf bytes.Buffer
	jpeg.Encode(&buf, img, nil)
	return buf.Bytes()
}

// imageFolder writes ROOT/{train,val}/{n01,n02}: colour, grayscale and CMYK
// JPEGs, a truncated JPEG and a text file.
func imageFolder(t *testing.T) (root string, corrupt, text string) {
	root = t.TempDir()
	cmyk, err := os.ReadFile("testdata/cmyk.jpeg")
	if err != nil {
		t.Fatal(err)
	}
	for _, split := range []string{"train", "val"} {
		for _, c := range []string{"n01", "n02"} {
			os.MkdirAll(filepath.Join(root, split, c), 0o755)
		}
		writeFile(t, filepath.Join(root, split, "n01"), "a.JPEG", colourJPEG(t, 50, 40, 1))
		writeFile(t, filepath.Join(root, split, "n01"), "gray.JPEG", grayJPEG(t, 30, 45))
		writeFile(t, filepath.Join(root, split, "n02"), "cmyk.JPEG", cmyk)
		writeFile(t, filepath.Join(root, split, "n02"), "b.JPEG", colourJPEG(t, 33, 61, 9))
	}
	full := colourJPEG(t, 40, 40, 3)
	corrupt = writeFile(t, filepath.Join(root, "train", "n02"), "broken.JPEG", full[:len(full)/2])
	text = writeFile(t, filepath.Join(root, "train", "n01"), "notes.txt", []byte("not an image"))
	return root, corrupt, text
}

func TestDecodeCMYKAndGrayscaleJPEGs(t *testing.T) {
	img, err := DecodeImage("testdata/cmyk.jpeg")
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open("testdata/cmyk.png")
	defer f.Close()
	ref, _, err := image.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	b := ref.Bounds()
	if img.Rect.Dx() != b.Dx() || img.Rect.Dy() != b.Dy() {
		t.Fatalf("decoded %v, reference %v", img.Rect, b)
	}
	var diff, n float64
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			r, g, bl, _ := ref.At(b.Min.X+x, b.Min.Y+y).RGBA()
			o := img.PixOffset(x, y)
			for i, v := range []uint32{r >> 8, g >> 8, bl >> 8} {
				d := float64(v) - float64(img.Pix[o+i])
				diff += d * d
				n++
			}
		}
	}
	if rms := diff / n; rms > 100 {
		t.Errorf("CMYK JPEG decodes %v (mean squared difference per channel) away from its PNG rendering", rms)
	}
	dir := t.TempDir()
	g, err := DecodeImage(writeFile(t, dir, "g.jpeg", grayJPEG(t, 8, 8)))
	if err != nil {
		t.Fatal(err)
	}
	if o := g.PixOffset(3, 2); g.Pix[o] != g.Pix[o+1] || g.Pix[o] != g.Pix[o+2] {
		t.Errorf("a grayscale pixel decoded to unequal RGB %v", g.Pix[o:o+3])
	}
}

func TestImageNetFolderSkipsUnreadableFilesOnceAndCounted(t *testing.T) {
	root, corrupt, text := imageFolder(t)
	var log bytes.Buffer
	d, err := LoadImageNet(root, 1, 7, ImageTransform{Size: 16, Resize: 20}, 2, &log)
	if err != nil {
		t.Fatal(err)
	}
	if d.Train.N+d.Val.N != 6 || d.Test.N != 4 {
		t.Fatalf("train %d + val %d files, test %d", d.Train.N, d.Val.N, d.Test.N)
	}
	x, y := make([]float32, 6*d.SampleSize()), make([]float32, 6)
	all := []int{0, 1, 2, 3, 4}
	rng := NewBatchRNG()
	for epoch := 0; epoch < 2; epoch++ {
		rng.Seed(1, epoch, 0)
		n := d.FillTrainBatch(x, y, &d.Train, all, rng)
		if n > 5 {
			t.Fatalf("filled %d of 5", n)
		}
	}
	n := d.FillBatch(x, y, &d.Val, []int{0}) + d.FillBatch(x, y, &d.Test, []int{0, 1, 2, 3})
	if n != 5 {
		t.Errorf("validation and test filled %d of 5 readable images", n)
	}
	if d.Skipped.Paths() != 2 || strings.Count(log.String(), "skipping") != 2 {
		t.Errorf("%d unreadable files recorded, log:\n%s", d.Skipped.Paths(), log.String())
	}
	for _, p := range []string{corrupt, text} {
		if !strings.Contains(log.String(), p) {
			t.Errorf("the log does not name %s", p)
		}
	}
	for i := 0; i < n; i++ {
		if y[i] != 0 && y[i] != 1 {
			t.Fatalf("label %v", y[i])
		}
	}
	// A missing split or too few classes fail clearly.
	os.RemoveAll(filepath.Join(root, "val"))
	if _, err := LoadImageNet(root, 1, 7, ImageTransform{Size: 16, Resize: 20}, 2, nil); err == nil || !strings.Contains(err.Error(), "val") {
		t.Errorf("missing val/: %v", err)
	}
}

func TestPackedEvaluationEqualsDirectDecoding(t *testing.T) {
	root, _, _ := imageFolder(t)
	tr := ImageTransform{Size: 16, Resize: 20}
	dst := t.TempDir()
	var log bytes.Buffer
	idx, err := PackImageFolder(root, dst, tr.Resize, 3, &log)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Unreadable) != 2 || idx.Splits["train"].Counts[0]+idx.Splits["train"].Counts[1] != 4 {
		t.Fatalf("index %+v", idx)
	}
	p, err := OpenPacked(dst, tr)
	if err != nil {
		t.Fatal(err)
	}
	for _, split := range []string{"train", "val"} {
		folder, _ := ScanImageFolder(filepath.Join(root, split), tr)
		src := p.Split(split)
		j := 0
		for i := range folder.Files {
			want := make([]byte, 3*16*16)
			wl, err := folder.Sample(i, want, nil)
			if err != nil {
				continue // the unreadable ones are not in the pack
			}
			got := make([]byte, len(want))
			gl, err := src.Sample(j, got, nil)
			if err != nil {
				t.Fatal(err)
			}
			if gl != wl || !bytes.Equal(got, want) {
				t.Fatalf("%s image %d (%s): packed evaluation transform differs from decoding the JPEG", split, j, folder.Files[i])
			}
			j++
		}
		if j != p.Len(split) {
			t.Errorf("%s: %d readable images, %d packed", split, j, p.Len(split))
		}
	}
	// Training crops are drawn from the seed alone.
	a, b := make([]byte, 768), make([]byte, 768)
	p.Split("train").Sample(0, a, rand.New(rand.NewPCG(1, 2)))
	p.Split("train").Sample(0, b, rand.New(rand.NewPCG(1, 2)))
	if !bytes.Equal(a, b) {
		t.Error("the same seed gave different training crops")
	}
	// A truncated shard is refused with its path.
	shard := filepath.Join(dst, idx.Splits["train"].Shards[0])
	data, _ := os.ReadFile(shard)
	os.WriteFile(shard, data[:len(data)-10], 0o644)
	if _, err := OpenPacked(dst, tr); err == nil || !strings.Contains(err.Error(), shard) || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("truncated shard: %v", err)
	}
}

// BenchmarkImageLoading compares one core reading training samples from
// a JPEG folder and from its packed form (ImageNet-sized photos).
func BenchmarkImageLoading(b *testing.B) {
	root := b.TempDir()
	for _, split := range []string{"train", "val"} {
		dir := filepath.Join(root, split, "n01")
		os.MkdirAll(dir, 0o755)
		for i := 0; i < 16; i++ {
			os.WriteFile(filepath.Join(dir, string(rune('a'+i))+".JPEG"), colourJPEG(b, 500, 375, byte(i)), 0o644)
		}
	}
	tr := ImageTransform{Size: 224, Resize: 256}
	packed := filepath.Join(b.TempDir(), "packed")
	if _, err := PackImageFolder(root, packed, 256, 8, nil); err != nil {
		b.Fatal(err)
	}
	folder, _ := ScanImageFolder(filepath.Join(root, "train"), tr)
	p, _ := OpenPacked(packed, tr)
	for _, c := range []struct {
		name string
		src  ImageSource
	}{{"jpeg-folder", folder}, {"packed", p.Split("train")}} {
		b.Run(c.name, func(b *testing.B) {
			dst := make([]byte, 3*224*224)
			rng := rand.New(rand.NewPCG(1, 1))
			for i := 0; i < b.N; i++ {
				if _, err := c.src.Sample(i%16, dst, rng); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "img/s/core")
		})
	}
}
