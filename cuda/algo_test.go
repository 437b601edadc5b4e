// Runs in both builds: which cuDNN algorithm a convolution runs (algo.go),
// on made-up timings.

package cuda

import (
	"slices"
	"testing"
)

func usableIfOK(r dnnResult) bool { return r.status == 0 }

func TestChooseAlgo(t *testing.T) {
	const failed = 3
	for _, c := range []struct {
		name    string
		results []dnnResult
		want    int // algo; -1 for none
	}{
		{"none", nil, -1},
		{"none usable", []dnnResult{{algo: 1, status: failed, ms: 1}}, -1},
		{"the fastest", []dnnResult{{algo: 1, ms: 2}, {algo: 2, ms: 1}, {algo: 3, ms: 3}}, 2},
		{"an unusable one is never chosen", []dnnResult{{algo: 1, status: failed, ms: 0.1}, {algo: 2, ms: 1}}, 2},
		{"deterministic within 10%", []dnnResult{{algo: 1, ms: 1}, {algo: 2, ms: 1.09, deterministic: true}}, 2},
		{"deterministic beyond 10%", []dnnResult{{algo: 1, ms: 1}, {algo: 2, ms: 1.2, deterministic: true}}, 1},
		{"deterministic within 0.01 ms", []dnnResult{{algo: 1, ms: 0.02}, {algo: 2, ms: 0.029, deterministic: true}}, 2},
	} {
		got, ok := chooseAlgo(c.results, usableIfOK)
		if !ok && c.want != -1 || ok && got.algo != c.want {
			t.Errorf("%s: chose %d (found %v), want %d", c.name, got.algo, ok, c.want)
		}
	}
}

func TestRetimeSet(t *testing.T) {
	const failed = 3
	for _, c := range []struct {
		name    string
		results []dnnResult
		want    []int // indices
	}{
		{"none usable", []dnnResult{{status: failed, ms: 0.1}}, nil},
		{"one candidate", []dnnResult{{ms: 0.1}, {ms: 0.5}}, nil},
		{"slow convolutions time steadily", []dnnResult{{ms: 3}, {ms: 3.1}}, nil},
		{"within 1.5×, fastest first", []dnnResult{{ms: 0.145}, {ms: 0.1}, {ms: 0.2}, {ms: 0.14}, {ms: 0.16}}, []int{1, 3, 0}},
		{"or 0.02 ms", []dnnResult{{ms: 0.01}, {ms: 0.03}, {ms: 0.031}}, []int{0, 1}},
		{"unusable ones left out", []dnnResult{{ms: 0.1}, {status: failed, ms: 0.05}, {ms: 0.11}}, []int{0, 2}},
		{"at most four", []dnnResult{{ms: 0.1}, {ms: 0.11}, {ms: 0.12}, {ms: 0.13}, {ms: 0.14}}, []int{0, 1, 2, 3}},
		{"and the fastest deterministic one in reach", []dnnResult{{ms: 0.1}, {ms: 0.11}, {ms: 0.12}, {ms: 0.13}, {ms: 0.14},
			{ms: 0.145, deterministic: true}, {ms: 0.146, deterministic: true}}, []int{0, 1, 2, 3, 5}},
		{"not one out of reach", []dnnResult{{ms: 0.1}, {ms: 0.11}, {ms: 0.5, deterministic: true}}, []int{0, 1}},
	} {
		if got := retimeSet(c.results, usableIfOK); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
