package cuda

// The kernels' PTX (kernels/*.ptx, embedded and loaded by backend.go),
// read without a GPU too (kernel_launch_test.go).

import "strings"

// ptxEntries lists the kernel names a PTX module defines.
func ptxEntries(ptx string) []string {
	var names []string
	for _, line := range strings.Split(ptx, "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, ".visible .entry "); ok {
			if i := strings.IndexAny(rest, "( "); i > 0 {
				names = append(names, rest[:i])
			}
		}
	}
	return names
}
