// Package cuda owns iterbin's NVIDIA GPU backend: backend.Backend on the
// CUDA driver API (gorgonia.org/cu), cuBLAS and cuDNN loaded at run time
// through thin cgo bindings of our own (no headers or link-time libraries
// needed), and custom kernels (kernels/*.cu) compiled to PTX, committed
// and embedded.
//
// Convolutions run on cuDNN (9, else 8) where it loads, with algorithms
// timed once per shape, and each shape and direction raced once against
// im2col + cuBLAS GEMMs, the faster kept (Options.CuDNNOnly turns the race
// off); without cuDNN, or with Options.NoCuDNN, on im2col. Name says which
// path is active, how many directions im2col won and why cuDNN is not used.
// Batch norm and pooling always use the custom kernels (cudnn_conv.go says
// why).
//
// Options.Layout picks the order convolutional activations are stored in
// on the device: channels-last (NHWC) where cuDNN runs the convolutions,
// by default, else NCHW; each tensor notes its order and ops transpose
// their arguments where needed, so the Backend interface stays NCHW
// (layout.go).
//
// Options.Precision picks how GEMMs and convolutions compute: true fp32
// (the default), TF32 tensor cores, or bf16 or fp16 mixed precision, where
// their operands are rounded to the 16-bit format and accumulated in fp32
// while every tensor stays float32 (half.go), except channels-last
// activations the layout stores in that format (auto at bf16 and fp16,
// nhwc-bf16, nhwc-fp16; layout.go). At fp16 the backend scales
// the loss dynamically, on the device (backend.LossScaler, lossscale.go).
// Name says which.
//
// The backend exists only in builds with -tags cuda; the default build is
// pure Go and never links gorgonia.org/cu (whose package init exits the
// process when no GPU is present). Without the tag, New returns an error
// saying how to rebuild. The API is the same under both tags. Without a
// GPU, the tests run on emulator/: a CPU stand-in for the driver library
// with these kernels compiled by g++, and test doubles of cuBLAS and
// cuDNN (make test-cuda-emulated).
//
// A Backend owns one context on one device, made current on the OS thread
// of the goroutine that called New, which stays locked to that thread
// until Close: use a backend from the goroutine that created it. All ops
// go to one compute stream; uploads of 1 MB or more cross on a second
// stream that the compute stream waits for (staging.go). Ops are
// asynchronous: Sync and Download wait for everything queued,
// WaitDownload only for its DownloadAsync.
package cuda
