package cuda

// Which cuDNN algorithm a convolution runs (dnnChoose, cudnn_conv.go):
// pure functions over the timings, tested on the CPU.

import (
	"cmp"
	"slices"
)

// A deterministic algorithm is preferred to the fastest one when it is at
// most deterministicSlack times as slow, or deterministicSlackMs slower
// (timings of tiny convolutions are noise).
const (
	deterministicSlack   = 1.10
	deterministicSlackMs = 0.01
)

// dnnResult is one timed algorithm (a cudnnConvolution…AlgoPerf_t).
type dnnResult struct {
	algo          int
	status        int
	ms            float32
	workspace     int // bytes
	deterministic bool
	mathType      int
}

// chooseAlgo returns the fastest usable result, except that the fastest
// deterministic one wins when it is within the slack: cuDNN's
// nondeterministic algorithms (backward data and filter ALGO_0 and
// BWD_FILTER_ALGO_3 sum with atomics) make two runs of the same step
// differ, which neither the CPU backend nor the im2col path ever do.
func chooseAlgo(results []dnnResult, usable func(dnnResult) bool) (dnnResult, bool) {
	var fastest, fastestDeterministic dnnResult
	found, foundDeterministic := false, false
	for _, r := range results {
		if !usable(r) {
			continue
		}
		if !found || r.ms < fastest.ms {
			fastest, found = r, true
		}
		if r.deterministic && (!foundDeterministic || r.ms < fastestDeterministic.ms) {
			fastestDeterministic, foundDeterministic = r, true
		}
	}
	if foundDeterministic && fastestDeterministic.ms <= max(fastest.ms*deterministicSlack, fastest.ms+deterministicSlackMs) {
		return fastestDeterministic, true
	}
	return fastest, found
}

// Find…Ex times each algorithm once, which for a convolution of tens of
// microseconds is noise: two processes could pick algorithms twice as
// fast as each other for the same shape. So where the fastest usable one
// takes under retimeBelowMs, the usable ones within retimeSpread of it
// (or retimeSlackMs, for the tiniest), at most retimeMost of them, are
// timed again, retimeRuns runs each after one untimed run, and the
// choice is made among them on those times.
const (
	retimeBelowMs = 2.0
	retimeSpread  = 1.5
	retimeSlackMs = 0.02
	retimeMost    = 4
	retimeRuns    = 5
)

// retimeSet returns the indices of the results to time again, fastest
// first: the usable ones within retimeSpread (or retimeSlackMs) of the
// fastest usable, at most retimeMost, and the fastest deterministic one
// among those within reach even where it ranks below them (chooseAlgo
// may prefer it). None where the fastest takes retimeBelowMs or more, or
// where fewer than two are within reach.
func retimeSet(results []dnnResult, usable func(dnnResult) bool) []int {
	var near []int
	fastest := -1
	for i, r := range results {
		if usable(r) && (fastest < 0 || r.ms < results[fastest].ms) {
			fastest = i
		}
	}
	if fastest < 0 || results[fastest].ms >= retimeBelowMs {
		return nil
	}
	reach := max(results[fastest].ms*retimeSpread, results[fastest].ms+retimeSlackMs)
	for i, r := range results {
		if usable(r) && r.ms <= reach {
			near = append(near, i)
		}
	}
	// Fastest first (cuDNN sorts its results so, but need not).
	slices.SortStableFunc(near, func(i, j int) int { return cmp.Compare(results[i].ms, results[j].ms) })
	if len(near) < 2 {
		return nil
	}
	set := near[:min(len(near), retimeMost)]
	for _, i := range set {
		if results[i].deterministic {
			return set
		}
	}
	for _, i := range near[len(set):] {
		if results[i].deterministic {
			return append(set[:len(set):len(set)], i)
		}
	}
	return set
}
