package trainer

import (
	"math"
	"testing"
)

// StepLosses is the CPU reference the CUDA parity tests compare against:
// deterministic, finite, and falling on a batch sequence it trains on.
func TestStepLossesAreDeterministicAndFinite(t *testing.T) {
	m := BenchModels()[0]
	a, err := StepLosses(m, "binary", "cpu", 6)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := StepLosses(m, "binary", "cpu", 6)
	for i := range a {
		if a[i] != b[i] || math.IsNaN(a[i]) || a[i] <= 0 {
			t.Fatalf("losses %v then %v", a, b)
		}
	}
}
