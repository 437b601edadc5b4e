package loaders

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// RemoteFile is a file to download and the checksum it must have: SHA256,
// or MD5 where only that is published.
type RemoteFile struct {
	Name   string
	SHA256 string
	MD5    string
}

func (f RemoteFile) hash() (hash.Hash, string, string) {
	if f.SHA256 != "" {
		return sha256.New(), f.SHA256, "SHA-256"
	}
	return md5.New(), f.MD5, "MD5"
}

// MNISTMirrors returns the usual places MNIST is served from, in the order
// they are tried.
func MNISTMirrors() []string {
	return []string{
		"https://ossci-datasets.s3.amazonaws.com/mnist/",
		"https://storage.googleapis.com/cvdf-datasets/mnist/",
		"http://yann.lecun.com/exdb/mnist/",
	}
}

// MNISTFiles returns the four MNIST files with their published checksums
// (they equal the files in the GoMNIST module).
func MNISTFiles() []RemoteFile {
	return []RemoteFile{
		{Name: "train-images-idx3-ubyte.gz", SHA256: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"},
		{Name: "train-labels-idx1-ubyte.gz", SHA256: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"},
		{Name: "t10k-images-idx3-ubyte.gz", SHA256: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"},
		{Name: "t10k-labels-idx1-ubyte.gz", SHA256: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"},
	}
}

// Download fetches each file into dir from the first mirror that serves it
// with the right checksum. A file already present with the right checksum
// is kept; a file is only renamed into place once verified, so an
// interrupted download never leaves a partial file under the real name.
// progress, if not nil, receives one line per file.
func Download(ctx context.Context, client *http.Client, dir string, mirrors []string, files []RemoteFile, progress io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		dst := filepath.Join(dir, f.Name)
		if sum, err := fileSum(dst, f); err == nil && sum == f.want() {
			logf(progress, "%s: present, checksum ok\n", dst)
			continue
		}
		var failures []string
		done := false
		for _, m := range mirrors {
			url := m + f.Name
			err := fetchVerified(ctx, client, url, dst, f)
			if err == nil {
				logf(progress, "%s: downloaded from %s, checksum ok\n", dst, url)
				done = true
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			failures = append(failures, err.Error())
		}
		if !done {
			return fmt.Errorf("could not download %s from any mirror:\n  %s", f.Name, strings.Join(failures, "\n  "))
		}
	}
	return nil
}

func logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format, args...)
	}
}

func (f RemoteFile) want() string { _, w, _ := f.hash(); return w }

func fetchVerified(ctx context.Context, client *http.Client, url, dst string, f RemoteFile) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %s", url, resp.Status)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), filepath.Base(dst)+".part-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h, want, kind := f.hash()
	if _, err := io.Copy(io.MultiWriter(tmp, h), resp.Body); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %v", url, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%s: checksum mismatch: %s %s, expected %s", url, kind, got, want)
	}
	return os.Rename(tmp.Name(), dst)
}

func fileSum(path string, rf RemoteFile) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h, _, _ := rf.hash()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
