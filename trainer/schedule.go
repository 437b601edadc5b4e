package trainer

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// ResolveOrder turns an order rule into the list of binarizable layer names
// in the order they become binary. layers is the forward order; ranking is
// the sensitivity ranking, least sensitive first (needed by the guided
// rules only).
func ResolveOrder(o Order, layers []string, seed uint64, ranking []string) ([]string, error) {
	switch o.Rule {
	case OrderForward:
		return append([]string(nil), layers...), nil
	case OrderReverse:
		out := make([]string, len(layers))
		for i, l := range layers {
			out[len(layers)-1-i] = l
		}
		return out, nil
	case OrderRandom:
		rng := rand.New(rand.NewPCG(seed, 0x0e1de7))
		out := make([]string, len(layers))
		for i, p := range rng.Perm(len(layers)) {
			out[i] = layers[p]
		}
		return out, nil
	case OrderGuided, OrderGuidedReverse:
		if err := checkPermutation(ranking, layers, "the sensitivity ranking"); err != nil {
			return nil, err
		}
		out := append([]string(nil), ranking...)
		if o.Rule == OrderGuidedReverse {
			for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
				out[i], out[j] = out[j], out[i]
			}
		}
		return out, nil
	case "":
		if err := checkPermutation(o.Layers, layers, "binarize.order"); err != nil {
			return nil, err
		}
		return append([]string(nil), o.Layers...), nil
	}
	return nil, fmt.Errorf("unknown order %q", o.Rule)
}

func checkPermutation(got, layers []string, what string) error {
	known := map[string]bool{}
	for _, l := range layers {
		known[l] = true
	}
	seen := map[string]bool{}
	for _, g := range got {
		if !known[g] {
			return fmt.Errorf("%s names %q, which is not a binarizable layer; the layers are %s", what, g, strings.Join(layers, ", "))
		}
		if seen[g] {
			return fmt.Errorf("%s names %q twice", what, g)
		}
		seen[g] = true
	}
	if len(got) != len(layers) {
		var missing []string
		for _, l := range layers {
			if !seen[l] {
				missing = append(missing, l)
			}
		}
		return fmt.Errorf("%s must name every binarizable layer once; missing %s", what, strings.Join(missing, ", "))
	}
	return nil
}

// Schedule says which layers are binary in each epoch.
type Schedule struct {
	Mode           string   // float, binary, iterative, or "single" (sensitivity runs)
	Order          []string // binarization order (all layers for binary)
	EpochsPerLayer int
}

// BinaryAt returns the layers binary during epoch e (0-based), in order.
// In iterative mode, the first ⌊e / epochs_per_layer⌋ + 1 layers of the
// order are binary, so a layer once binary stays binary.
func (s Schedule) BinaryAt(e int) []string {
	switch s.Mode {
	case "float":
		return nil
	case "binary", "single":
		return s.Order
	}
	k := min(e/s.EpochsPerLayer+1, len(s.Order))
	return s.Order[:k]
}

// AllBinaryAt says whether every binarizable layer is binary in epoch e.
func (s Schedule) AllBinaryAt(e, layers int) bool {
	return s.Mode != "float" && len(s.BinaryAt(e)) == layers
}

// FullyBinaryFrom is the first epoch in which every layer is binary, or −1
// for float runs.
func (s Schedule) FullyBinaryFrom(layers int) int {
	switch s.Mode {
	case "float", "single":
		return -1
	case "binary":
		return 0
	}
	return (layers - 1) * s.EpochsPerLayer
}
