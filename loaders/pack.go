package loaders

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
)

// A packed dataset is a folder with index.json and shard files of
// pre-resized images, read with one positioned read per image instead of
// a JPEG decode. Shard layout (little-endian):
//
//	magic   8 bytes  "IBPACK\r\n"
//	version uint32   packVersion
//	count   uint32   images in the shard
//	table   count × {offset uint64, width uint16, height uint16, label uint32}
//	pixels           each image as RGB, row-major (width·height·3 bytes) at its offset
const (
	packMagic     = "IBPACK\r\n"
	packVersion   = 1
	packEntrySize = 16
	// PackIndexFile names a packed dataset's index.
	PackIndexFile = "index.json"
)

// PackIndex describes a packed dataset.
type PackIndex struct {
	Version    int                  `json:"version"`
	ShortSide  int                  `json:"short_side"`
	Classes    []string             `json:"classes"`
	Splits     map[string]PackSplit `json:"splits"`
	Unreadable []string             `json:"unreadable,omitempty"`
}

// PackSplit lists one split's shards.
type PackSplit struct {
	Shards []string `json:"shards"`
	Counts []int    `json:"counts"`
}

type packEntry struct {
	shard  int
	offset int64
	w, h   int
	label  int
}

// Packed is an opened packed dataset.
type Packed struct {
	Dir       string
	Index     PackIndex
	transform ImageTransform
	files     map[string][]*os.File
	entries   map[string][]packEntry
}

// PackImageFolder packs ROOT/train and ROOT/val (whichever exist) into dst:
// each image decoded, its shorter side resized to shortSide, stored as RGB
// in shards of shardSize images. Unreadable files are reported on log,
// listed in the index and left out.
func PackImageFolder(src, dst string, shortSide, shardSize int, log io.Writer) (*PackIndex, error) {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return nil, err
	}
	idx := &PackIndex{Version: packVersion, ShortSide: shortSide, Splits: map[string]PackSplit{}}
	for _, split := range []string{"train", "val"} {
		dir := filepath.Join(src, split)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		f, err := ScanImageFolder(dir, ImageTransform{})
		if err != nil {
			return nil, err
		}
		if idx.Classes == nil {
			idx.Classes = f.Classes
		} else if fmt.Sprint(idx.Classes) != fmt.Sprint(f.Classes) {
			return nil, fmt.Errorf("pack: %s has other class folders than train/", dir)
		}
		var ps PackSplit
		for start := 0; start < len(f.Files); start += shardSize {
			end := min(start+shardSize, len(f.Files))
			name := fmt.Sprintf("%s-%05d.ibp", split, len(ps.Shards))
			n, bad, err := writeShard(filepath.Join(dst, name), f, start, end, shortSide)
			if err != nil {
				return nil, err
			}
			for _, b := range bad {
				fmt.Fprintf(log, "skipping unreadable image %s\n", b)
			}
			idx.Unreadable = append(idx.Unreadable, bad...)
			ps.Shards, ps.Counts = append(ps.Shards, name), append(ps.Counts, n)
		}
		idx.Splits[split] = ps
	}
	if len(idx.Splits) == 0 {
		return nil, fmt.Errorf("pack: %s has neither train/ nor val/", src)
	}
	js, _ := json.MarshalIndent(idx, "", "  ")
	tmp := filepath.Join(dst, PackIndexFile+".tmp")
	if err := os.WriteFile(tmp, js, 0o644); err != nil {
		return nil, err
	}
	return idx, os.Rename(tmp, filepath.Join(dst, PackIndexFile))
}

// writeShard decodes files [start, end) in parallel and writes the shard.
func writeShard(path string, f *ImageFolder, start, end, shortSide int) (int, []string, error) {
	imgs := make([]*image.RGBA, end-start)
	errs := make([]error, end-start)
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				img, err := DecodeImage(f.Files[start+i])
				if err == nil {
					img = ResizeShorter(img, shortSide)
				}
				imgs[i], errs[i] = img, err
			}
		}()
	}
	for i := range imgs {
		next <- i
	}
	close(next)
	wg.Wait()
	var bad []string
	var table, pixels []byte
	count := 0
	for i, img := range imgs {
		if errs[i] != nil {
			bad = append(bad, errs[i].Error())
			continue
		}
		w, h := img.Rect.Dx(), img.Rect.Dy()
		if w > 65535 || h > 65535 {
			return 0, nil, fmt.Errorf("pack: %s is %dx%d after resizing, too large", f.Files[start+i], w, h)
		}
		entry := make([]byte, packEntrySize)
		binary.LittleEndian.PutUint64(entry[0:], uint64(len(pixels)))
		binary.LittleEndian.PutUint16(entry[8:], uint16(w))
		binary.LittleEndian.PutUint16(entry[10:], uint16(h))
		binary.LittleEndian.PutUint32(entry[12:], uint32(f.Labels[start+i]))
		table = append(table, entry...)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				o := img.PixOffset(x, y)
				pixels = append(pixels, img.Pix[o], img.Pix[o+1], img.Pix[o+2])
			}
		}
		count++
	}
	head := make([]byte, len(packMagic)+8)
	copy(head, packMagic)
	binary.LittleEndian.PutUint32(head[len(packMagic):], packVersion)
	binary.LittleEndian.PutUint32(head[len(packMagic)+4:], uint32(count))
	dataStart := int64(len(head) + len(table))
	for i := 0; i < count; i++ { // offsets relative to the file
		e := table[i*packEntrySize:]
		binary.LittleEndian.PutUint64(e, binary.LittleEndian.Uint64(e)+uint64(dataStart))
	}
	tmp := path + ".tmp"
	out, err := os.Create(tmp)
	if err != nil {
		return 0, nil, err
	}
	for _, b := range [][]byte{head, table, pixels} {
		if _, err := out.Write(b); err != nil {
			out.Close()
			return 0, nil, err
		}
	}
	if err := out.Close(); err != nil {
		return 0, nil, err
	}
	return count, bad, os.Rename(tmp, path)
}

// OpenPacked opens a packed dataset and reads its shard tables.
func OpenPacked(dir string, t ImageTransform) (*Packed, error) {
	js, err := os.ReadFile(filepath.Join(dir, PackIndexFile))
	if err != nil {
		return nil, err
	}
	p := &Packed{Dir: dir, transform: t, files: map[string][]*os.File{}, entries: map[string][]packEntry{}}
	if err := json.Unmarshal(js, &p.Index); err != nil {
		return nil, fmt.Errorf("%s: %v", filepath.Join(dir, PackIndexFile), err)
	}
	if p.Index.Version != packVersion {
		return nil, fmt.Errorf("%s: version %d; this iterbin reads version %d", filepath.Join(dir, PackIndexFile), p.Index.Version, packVersion)
	}
	for split, ps := range p.Index.Splits {
		for si, name := range ps.Shards {
			path := filepath.Join(dir, name)
			f, err := os.Open(path)
			if err != nil {
				return nil, err
			}
			p.files[split] = append(p.files[split], f)
			head := make([]byte, len(packMagic)+8)
			if _, err := io.ReadFull(f, head); err != nil || string(head[:len(packMagic)]) != packMagic {
				return nil, fmt.Errorf("%s: not an iterbin pack shard (bad magic or too short); pack the dataset again", path)
			}
			if v := binary.LittleEndian.Uint32(head[len(packMagic):]); v != packVersion {
				return nil, fmt.Errorf("%s: shard version %d; this iterbin reads version %d", path, v, packVersion)
			}
			count := int(binary.LittleEndian.Uint32(head[len(packMagic)+4:]))
			fi, err := f.Stat()
			if err != nil {
				return nil, err
			}
			tableEnd := int64(len(head) + count*packEntrySize)
			if tableEnd > fi.Size() {
				return nil, fmt.Errorf("%s: its table of %d images runs past the end: truncated or corrupt; pack the dataset again", path, count)
			}
			if si < len(ps.Counts) && ps.Counts[si] != count {
				return nil, fmt.Errorf("%s: %d images, the index says %d; pack the dataset again", path, count, ps.Counts[si])
			}
			table := make([]byte, count*packEntrySize)
			if _, err := io.ReadFull(f, table); err != nil {
				return nil, fmt.Errorf("%s: truncated table: %v", path, err)
			}
			for i := 0; i < count; i++ {
				e := table[i*packEntrySize:]
				pe := packEntry{shard: si, offset: int64(binary.LittleEndian.Uint64(e)), w: int(binary.LittleEndian.Uint16(e[8:])),
					h: int(binary.LittleEndian.Uint16(e[10:])), label: int(binary.LittleEndian.Uint32(e[12:]))}
				if pe.offset < tableEnd || pe.offset+int64(3*pe.w*pe.h) > fi.Size() {
					return nil, fmt.Errorf("%s: image %d runs past the end of the shard: truncated; pack the dataset again", path, i)
				}
				p.entries[split] = append(p.entries[split], pe)
			}
		}
	}
	return p, nil
}

// Len is the number of images of a split.
func (p *Packed) Len(split string) int { return len(p.entries[split]) }

// Split returns a split as an ImageSource, nil if absent.
func (p *Packed) Split(split string) ImageSource {
	if _, ok := p.entries[split]; !ok {
		return nil
	}
	return packedSplit{p, split}
}

type packedSplit struct {
	p     *Packed
	split string
}

func (s packedSplit) Path(i int) string {
	return fmt.Sprintf("%s/%s image %d", s.p.Dir, s.split, i)
}

// Image returns a stored image.
func (s packedSplit) Image(i int) (*image.RGBA, int, error) {
	e := s.p.entries[s.split][i]
	buf := make([]byte, 3*e.w*e.h)
	if _, err := s.p.files[s.split][e.shard].ReadAt(buf, e.offset); err != nil {
		return nil, 0, err
	}
	img := image.NewRGBA(image.Rect(0, 0, e.w, e.h))
	for j := 0; j < e.w*e.h; j++ {
		img.Pix[4*j], img.Pix[4*j+1], img.Pix[4*j+2], img.Pix[4*j+3] = buf[3*j], buf[3*j+1], buf[3*j+2], 255
	}
	return img, e.label, nil
}

func (s packedSplit) Sample(i int, dst []byte, rng *rand.Rand) (int, error) {
	img, label, err := s.Image(i)
	if err != nil {
		return 0, err
	}
	t := s.p.transform
	if rng == nil && img.Rect.Dx() >= t.Size && img.Rect.Dy() >= t.Size && min(img.Rect.Dx(), img.Rect.Dy()) == t.Resize {
		// Stored at the evaluation size already: only the crop is left.
		t.CenterCrop(img, dst)
		return label, nil
	}
	t.Apply(img, dst, rng)
	return label, nil
}
