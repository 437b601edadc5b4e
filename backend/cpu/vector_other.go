//go:build !amd64

package cpu

// simdVectorOps has no assembly on this architecture.
func simdVectorOps() vectorOps { return vectorOps{} }
