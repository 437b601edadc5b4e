package trainer

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"sort"

	"iterbin/backend"
)

// Checkpoint file layout (little-endian):
//
//	magic    8 bytes  "IBCKPT\r\n"
//	version  uint32   checkpointVersion
//	hdrLen   uint32   length of the JSON header
//	header   JSON     CheckpointHeader
//	tensors  float32s each tensor of header.Tensors, in order
//	crc      uint32   CRC-32 (IEEE) of everything before it
const (
	checkpointMagic   = "IBCKPT\r\n"
	checkpointVersion = 1
)

// CheckpointHeader is the checkpoint's metadata.
type CheckpointHeader struct {
	// NextEpoch is the first epoch not yet finished.
	NextEpoch int `json:"next_epoch"`
	// Partial, when set, is how far NextEpoch had come: a mid-epoch
	// checkpoint.
	Partial *epochState `json:"partial,omitempty"`
	// Steps is the number of optimizer updates made.
	Steps   int            `json:"steps"`
	Order   []string       `json:"order"`
	History []EpochMetrics `json:"history"`
	Tensors []TensorEntry  `json:"tensors"`
}

// TensorEntry names one stored tensor.
type TensorEntry struct {
	Name string `json:"name"`
	Len  int    `json:"len"`
	// Optional says a reader that has no such tensor skips it
	// (NamedTensor.Optional).
	Optional bool `json:"optional,omitempty"`
}

// WriteCheckpoint writes the tensors and header to path atomically: the
// data goes to a temporary file in the same folder, is synced, and is
// renamed over path, so a crash leaves either the old or the new file.
func WriteCheckpoint(path string, be backend.Backend, hdr CheckpointHeader, tensors []NamedTensor) error {
	hdr.Tensors = hdr.Tensors[:0]
	for _, t := range tensors {
		hdr.Tensors = append(hdr.Tensors, TensorEntry{Name: t.Name, Len: t.Len, Optional: t.Optional})
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	buf.WriteString(checkpointMagic)
	binary.Write(&buf, binary.LittleEndian, uint32(checkpointVersion))
	binary.Write(&buf, binary.LittleEndian, uint32(len(js)))
	buf.Write(js)
	var host []float32
	var raw [4]byte
	for _, t := range tensors {
		host = append(host[:0], make([]float32, t.Len)...)
		be.Download(host, t.T)
		for _, v := range host {
			binary.LittleEndian.PutUint32(raw[:], math.Float32bits(v))
			buf.Write(raw[:])
		}
	}
	if err := be.Sync(); err != nil {
		return fmt.Errorf("checkpoint %s: reading tensors: %w", path, err)
	}
	binary.Write(&buf, binary.LittleEndian, crc32.ChecksumIEEE(buf.Bytes()))
	return WriteFileAtomic(path, buf.Bytes())
}

// WriteFileAtomic replaces path with data through a synced temporary file
// and a rename.
func WriteFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// LoadCheckpointFile reads and verifies a checkpoint and returns its header
// and its tensors' values in stored order.
func LoadCheckpointFile(path string) (*CheckpointHeader, [][]float32, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("checkpoint %s: %s", path, fmt.Sprintf(format, args...))
	}
	if len(data) < len(checkpointMagic)+12 || string(data[:len(checkpointMagic)]) != checkpointMagic {
		return nil, nil, fail("not an iterbin checkpoint (bad magic number or too short)")
	}
	body, stored := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.ChecksumIEEE(body) != stored {
		return nil, nil, fail("checksum mismatch: the file is truncated or corrupt; resume from an earlier copy or start the run again")
	}
	p := len(checkpointMagic)
	if v := binary.LittleEndian.Uint32(data[p:]); v != checkpointVersion {
		return nil, nil, fail("version %d; this iterbin reads version %d", v, checkpointVersion)
	}
	hl := int(binary.LittleEndian.Uint32(data[p+4:]))
	p += 8
	if hl > len(body)-p {
		return nil, nil, fail("header length %d runs past the end", hl)
	}
	var hdr CheckpointHeader
	if err := json.Unmarshal(body[p:p+hl], &hdr); err != nil {
		return nil, nil, fail("header: %v", err)
	}
	p += hl
	values := make([][]float32, len(hdr.Tensors))
	for i, e := range hdr.Tensors {
		if e.Len < 0 || p+4*e.Len > len(body) {
			return nil, nil, fail("tensor %s runs past the end of the file", e.Name)
		}
		v := make([]float32, e.Len)
		for j := range v {
			v[j] = math.Float32frombits(binary.LittleEndian.Uint32(body[p+4*j:]))
		}
		values[i] = v
		p += 4 * e.Len
	}
	if p != len(body) {
		return nil, nil, fail("%d unexpected bytes after the tensors", len(body)-p)
	}
	return &hdr, values, nil
}

// ReadCheckpoint reads and verifies path and uploads its tensors into the
// given ones, which must match the stored names and sizes exactly, in
// order, apart from optional tensors either side lacks (the loss scaler's
// state, which only an fp16 run has).
func ReadCheckpoint(path string, be backend.Backend, tensors []NamedTensor) (*CheckpointHeader, error) {
	hdr, values, err := LoadCheckpointFile(path)
	if err != nil {
		return nil, err
	}
	stored, i, j := hdr.Tensors, 0, 0
	for i < len(stored) || j < len(tensors) {
		switch {
		case i < len(stored) && j < len(tensors) && stored[i].Name == tensors[j].Name && stored[i].Len == tensors[j].Len:
			be.Upload(tensors[j].T, values[i])
			i, j = i+1, j+1
		case i < len(stored) && stored[i].Optional && (j == len(tensors) || stored[i].Name != tensors[j].Name):
			i++
		case j < len(tensors) && tensors[j].Optional && (i == len(stored) || stored[i].Name != tensors[j].Name):
			j++
		case i < len(stored) && j < len(tensors):
			return nil, fmt.Errorf("checkpoint %s: tensor %d is %s (%d values), this model expects %s (%d values): it was written for a different model", path, i, stored[i].Name, stored[i].Len, tensors[j].Name, tensors[j].Len)
		default:
			return nil, fmt.Errorf("checkpoint %s holds %d tensors, this model has %d: it was written for a different model", path,
				required(stored, func(e TensorEntry) bool { return e.Optional }), required(tensors, func(t NamedTensor) bool { return t.Optional }))
		}
	}
	if err := be.Sync(); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	return hdr, nil
}

// required counts the elements of xs that optional does not mark.
func required[T any](xs []T, optional func(T) bool) int {
	n := 0
	for _, x := range xs {
		if !optional(x) {
			n++
		}
	}
	return n
}

// errCheckpointMissing is wrapped when a run folder has no checkpoint.
var errCheckpointMissing = errors.New("no checkpoint")

// checkpointName is a kept checkpoint's file name: the epoch and batch it
// resumes at, so names sort in training order.
func checkpointName(hdr CheckpointHeader) string {
	batch := 0
	if hdr.Partial != nil {
		batch = hdr.Partial.Batch
	}
	return fmt.Sprintf("checkpoint-e%06d-b%07d.bin", hdr.NextEpoch, batch)
}

// saveCheckpoint writes a checkpoint under its own name, points
// checkpoint.bin at it (a hard link renamed into place, so both are whole
// files at every moment) and removes all but the newest keep.
func saveCheckpoint(dir string, be backend.Backend, hdr CheckpointHeader, tensors []NamedTensor, keep int) error {
	named := filepath.Join(dir, checkpointName(hdr))
	if err := WriteCheckpoint(named, be, hdr, tensors); err != nil {
		return err
	}
	tmp := filepath.Join(dir, ".checkpoint.bin.link")
	os.Remove(tmp)
	if err := os.Link(named, tmp); err != nil {
		// No hard links on this file system: write the file again.
		if err := WriteCheckpoint(filepath.Join(dir, CheckpointFile), be, hdr, tensors); err != nil {
			return err
		}
	} else if err := os.Rename(tmp, filepath.Join(dir, CheckpointFile)); err != nil {
		return err
	}
	old, err := filepath.Glob(filepath.Join(dir, "checkpoint-e*-b*.bin"))
	if err != nil {
		return err
	}
	sort.Strings(old)
	for len(old) > keep {
		os.Remove(old[0])
		old = old[1:]
	}
	return nil
}

// readLatestCheckpoint loads checkpoint.bin, or when it is damaged the
// newest kept checkpoint that loads.
func readLatestCheckpoint(dir string, be backend.Backend, tensors []NamedTensor) (*CheckpointHeader, error) {
	hdr, err := ReadCheckpoint(filepath.Join(dir, CheckpointFile), be, tensors)
	if err == nil {
		return hdr, nil
	}
	kept, _ := filepath.Glob(filepath.Join(dir, "checkpoint-e*-b*.bin"))
	sort.Sort(sort.Reverse(sort.StringSlice(kept)))
	for _, k := range kept {
		if h, kerr := ReadCheckpoint(k, be, tensors); kerr == nil {
			return h, nil
		}
	}
	return nil, err
}
