package cuda

// Options tune a CUDA backend.
type Options struct {
	// TF32 lets cuBLAS use TF32 tensor cores for float32 GEMMs (faster,
	// 10-bit mantissa products).
	TF32 bool
}
