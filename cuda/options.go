package cuda

// Options tune a CUDA backend.
type Options struct {
	// TF32 lets cuBLAS and cuDNN use TF32 tensor cores for float32 GEMMs
	// and convolutions (faster, 10-bit mantissa products). Without it both
	// compute in true fp32.
	TF32 bool
	// NoCuDNN keeps convolutions on im2col + cuBLAS GEMMs even where cuDNN
	// loads (by default cuDNN runs them when libcudnn.so.9 or .so.8 is
	// found); tests use it to compare the two paths. Builds without the
	// cuda tag ignore it.
	NoCuDNN bool
}
