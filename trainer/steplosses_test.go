package trainer

import (
	"math"
	"strings"
	"testing"

	"iterbin/cuda"
)

// StepLosses is the CPU reference the CUDA parity tests compare against:
// deterministic, finite, and falling on a batch sequence it trains on.
func TestStepLossesAreDeterministicAndFinite(t *testing.T) {
	m := BenchModels()[0]
	a, name, err := StepLosses(m, "binary", "cpu", "fp32", cuda.LayoutAuto, 6)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(name, "cpu") {
		t.Errorf("backend name %q", name)
	}
	b, _, _ := StepLosses(m, "binary", "cpu", "fp32", cuda.LayoutAuto, 6)
	for i := range a {
		if a[i] != b[i] || math.IsNaN(a[i]) || a[i] <= 0 {
			t.Fatalf("losses %v then %v", a, b)
		}
	}
	if _, _, err := StepLosses(m, "binary", "cpu", "bf16", cuda.LayoutAuto, 1); err == nil || !strings.Contains(err.Error(), "CUDA option") {
		t.Errorf("bf16 on the CPU: %v", err)
	}
}
