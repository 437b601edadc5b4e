package trainer

import (
	"reflect"
	"strings"
	"testing"
)

var mlpLayers = []string{"fc1", "fc2", "fc3"}

func TestResolveOrderForEveryRule(t *testing.T) {
	ranking := []string{"fc3", "fc1", "fc2"} // least sensitive first
	for _, c := range []struct {
		order Order
		want  []string
	}{
		{Order{Rule: OrderForward}, []string{"fc1", "fc2", "fc3"}},
		{Order{Rule: OrderReverse}, []string{"fc3", "fc2", "fc1"}},
		{Order{Rule: OrderGuided}, []string{"fc3", "fc1", "fc2"}},
		{Order{Rule: OrderGuidedReverse}, []string{"fc2", "fc1", "fc3"}},
		{Order{Layers: []string{"fc2", "fc3", "fc1"}}, []string{"fc2", "fc3", "fc1"}},
	} {
		got, err := ResolveOrder(c.order, mlpLayers, 316, ranking)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%v: got %v, %v; want %v", c.order, got, err, c.want)
		}
	}
	// random: seeded, a permutation, recorded by the caller.
	a, _ := ResolveOrder(Order{Rule: OrderRandom}, mlpLayers, 316, nil)
	b, _ := ResolveOrder(Order{Rule: OrderRandom}, mlpLayers, 316, nil)
	if !reflect.DeepEqual(a, b) || checkPermutation(a, mlpLayers, "random") != nil {
		t.Errorf("random order %v / %v is not a fixed permutation", a, b)
	}
	distinct := map[string]bool{}
	for seed := uint64(0); seed < 30; seed++ {
		o, _ := ResolveOrder(Order{Rule: OrderRandom}, mlpLayers, seed, nil)
		distinct[strings.Join(o, ",")] = true
	}
	if len(distinct) < 4 {
		t.Errorf("30 seeds gave only %d distinct random orders", len(distinct))
	}
}

func TestResolveOrderRejectsBadLists(t *testing.T) {
	for _, c := range []struct {
		layers []string
		want   string
	}{
		{[]string{"fc1", "fc2"}, "missing fc3"},
		{[]string{"fc1", "fc1", "fc3"}, "twice"},
		{[]string{"fc1", "fc2", "fc9"}, `"fc9", which is not a binarizable layer`},
	} {
		_, err := ResolveOrder(Order{Layers: c.layers}, mlpLayers, 1, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.layers, err, c.want)
		}
	}
	if _, err := ResolveOrder(Order{Rule: OrderGuided}, mlpLayers, 1, nil); err == nil {
		t.Error("guided without a ranking accepted")
	}
}

func TestBinaryLayersAtEveryEpochForEveryMode(t *testing.T) {
	order := []string{"fc2", "fc3", "fc1"}
	iter := Schedule{Mode: "iterative", Order: order, EpochsPerLayer: 2}
	want := [][]string{{"fc2"}, {"fc2"}, {"fc2", "fc3"}, {"fc2", "fc3"}, {"fc2", "fc3", "fc1"}, {"fc2", "fc3", "fc1"}, {"fc2", "fc3", "fc1"}}
	for e, w := range want {
		got := iter.BinaryAt(e)
		if !reflect.DeepEqual(got, w) {
			t.Errorf("iterative epoch %d: %v, want %v", e, got, w)
		}
		if all := iter.AllBinaryAt(e, 3); all != (e >= 4) {
			t.Errorf("iterative epoch %d: all binary = %v", e, all)
		}
	}
	if f := iter.FullyBinaryFrom(3); f != 4 {
		t.Errorf("fully binary from %d, want 4", f)
	}
	// The paper's budget: 3 layers × 150 epochs.
	paper := Schedule{Mode: "iterative", Order: mlpLayers, EpochsPerLayer: 150}
	for e, n := range map[int]int{0: 1, 149: 1, 150: 2, 299: 2, 300: 3, 449: 3} {
		if got := len(paper.BinaryAt(e)); got != n {
			t.Errorf("paper budget epoch %d: %d binary layers, want %d", e, got, n)
		}
	}
	for e := 0; e < 5; e++ {
		if got := (Schedule{Mode: "float", Order: mlpLayers}).BinaryAt(e); len(got) != 0 {
			t.Errorf("float epoch %d: %v", e, got)
		}
		bin := Schedule{Mode: "binary", Order: mlpLayers}
		if got := bin.BinaryAt(e); !reflect.DeepEqual(got, mlpLayers) || !bin.AllBinaryAt(e, 3) {
			t.Errorf("binary epoch %d: %v", e, got)
		}
		single := Schedule{Mode: "single", Order: []string{"fc2"}}
		if got := single.BinaryAt(e); !reflect.DeepEqual(got, []string{"fc2"}) || single.AllBinaryAt(e, 3) {
			t.Errorf("sensitivity epoch %d: %v", e, got)
		}
	}
}
