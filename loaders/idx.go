// Package loaders owns iterbin's datasets: parsing the files they ship in
// (IDX for MNIST and Fashion-MNIST), finding or downloading them, the
// train/validation/test splits, normalization and batching in a seeded,
// reproducible order. It knows nothing of backends or models.
package loaders

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// IDX is a parsed IDX file of unsigned bytes (the MNIST format): a shape
// and the values in row-major order.
type IDX struct {
	Dims []int
	Data []byte
}

const maxIDXBytes = 1 << 31

// ReadIDX reads an IDX file of unsigned bytes, gzip-compressed or plain
// (detected from the content, not the name). Errors name the file and say
// what is wrong with it.
func ReadIDX(path string) (*IDX, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var r io.Reader = br
	if head, _ := br.Peek(2); len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%s: corrupt gzip stream: %v; delete the file and fetch it again", path, err)
		}
		defer gz.Close()
		r = gz
	}
	idx, err := parseIDX(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %v; delete the file and fetch it again (iterbin download)", path, err)
	}
	return idx, nil
}

func parseIDX(r io.Reader) (*IDX, error) {
	var magic [4]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return nil, fmt.Errorf("not an IDX file: too short for its 4-byte magic number (%v)", err)
	}
	if magic[0] != 0 || magic[1] != 0 {
		return nil, fmt.Errorf("not an IDX file: magic number %x does not start with two zero bytes", magic)
	}
	if magic[2] != 0x08 {
		return nil, fmt.Errorf("IDX element type 0x%02x is not unsigned byte (0x08), the only type MNIST files use", magic[2])
	}
	nd := int(magic[3])
	if nd < 1 || nd > 4 {
		return nil, fmt.Errorf("IDX file has %d dimensions; expected 1 to 4", nd)
	}
	dims := make([]int, nd)
	total := 1
	for i := range dims {
		var d uint32
		if err := binary.Read(r, binary.BigEndian, &d); err != nil {
			return nil, fmt.Errorf("truncated IDX header: dimension %d of %d missing", i+1, nd)
		}
		if d == 0 {
			return nil, fmt.Errorf("IDX dimension %d is zero", i+1)
		}
		dims[i] = int(d)
		total *= int(d)
		if total > maxIDXBytes {
			return nil, fmt.Errorf("IDX shape %v is larger than %d bytes", dims[:i+1], maxIDXBytes)
		}
	}
	data := make([]byte, total)
	n, err := io.ReadFull(r, data)
	if err != nil {
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			return nil, fmt.Errorf("truncated: shape %v needs %d bytes of data, the file has %d", dims, total, n)
		}
		return nil, fmt.Errorf("reading IDX data: %v", err)
	}
	// Read to the end: a gzip stream reports truncation and checksum
	// errors only there.
	rest, err := io.Copy(io.Discard, r)
	if err != nil {
		return nil, fmt.Errorf("truncated or corrupt after the data: %v", err)
	}
	if rest > 0 {
		return nil, fmt.Errorf("%d bytes beyond the %d that shape %v holds", rest, total, dims)
	}
	return &IDX{Dims: dims, Data: data}, nil
}

// EncodeIDX writes values of the given shape as a plain IDX file of
// unsigned bytes (the inverse of ReadIDX; tests use it to write files in
// the real format).
func EncodeIDX(dims []int, data []byte) []byte {
	var buf bytes.Buffer
	buf.Write([]byte{0, 0, 0x08, byte(len(dims))})
	for _, d := range dims {
		binary.Write(&buf, binary.BigEndian, uint32(d))
	}
	buf.Write(data)
	return buf.Bytes()
}
