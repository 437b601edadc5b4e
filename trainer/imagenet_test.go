package trainer

import (
	"bytes"
	"image"
	"image/jpeg"
	"io"
	"os"
	"path/filepath"
	"testing"

	"iterbin/loaders"
)

// A whole ResNet-18 run over a tiny ImageNet-style folder (with one file
// that is not an image), through a packed copy too.
func TestImageNetResNet18RunsOnAFolderAndItsPack(t *testing.T) {
	root := t.TempDir()
	for _, split := range []string{"train", "val"} {
		for c, class := range []string{"n01", "n02"} {
			dir := filepath.Join(root, split, class)
			os.MkdirAll(dir, 0o755)
			for i := 0; i < 4; i++ {
				img := image.NewRGBA(image.Rect(0, 0, 40+i, 36))
				for p := 0; p < len(img.Pix); p += 4 {
					img.Pix[p], img.Pix[p+1], img.Pix[p+2], img.Pix[p+3] = byte(c*200+p), byte(i*50), byte(p/7), 255
				}
				var buf bytes.Buffer
				jpeg.Encode(&buf, img, nil)
				os.WriteFile(filepath.Join(dir, string(rune('a'+i))+".JPEG"), buf.Bytes(), 0o644)
			}
		}
	}
	os.WriteFile(filepath.Join(root, "train", "n01", "README"), []byte("not an image"), 0o644)
	for _, packed := range []bool{false, true} {
		cfg := Default()
		cfg.Run.OutDir = t.TempDir()
		cfg.Run.Name = "tiny-imagenet"
		cfg.Data = DataConfig{Dataset: "imagenet", Dir: root, Validation: 2, Augment: "auto", ImageSize: 32, Resize: 36, Classes: 2}
		if packed {
			dst := filepath.Join(t.TempDir(), "packed")
			if _, err := packFolder(root, dst); err != nil {
				t.Fatal(err)
			}
			cfg.Data.Dir = dst
		}
		cfg.Model.Arch = "resnet18"
		cfg.Binarize.Mode = "binary"
		cfg.Train.Epochs, cfg.Train.BatchSize, cfg.Train.TestBatchSize = 1, 3, 4
		cfg.Train.Optimizer, cfg.Train.Momentum, cfg.Train.LR = "sgd", 0.9, 0.01
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		res := runQuiet(t, &cfg)
		m := res.History[0]
		wantSkipped := 1
		if packed {
			wantSkipped = 0 // left out when packing
		}
		if m.UnreadableImages != wantSkipped || m.TestTop5 != 1 || m.TestAcc < 0 || len(m.Layers) != 21 {
			t.Errorf("packed=%v: metrics %+v", packed, m)
		}
	}
}

func packFolder(src, dst string) (int, error) {
	idx, err := loaders.PackImageFolder(src, dst, 36, 5, io.Discard)
	if err != nil {
		return 0, err
	}
	return len(idx.Unreadable), nil
}
