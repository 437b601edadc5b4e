// Package cuda owns iterbin's NVIDIA GPU backend: backend.Backend on the
// CUDA driver API (gorgonia.org/cu), cuBLAS loaded at run time through a
// thin cgo binding of our own, and custom kernels (kernels/*.cu) compiled
// to PTX, committed and embedded.
//
// The backend exists only in builds with -tags cuda; the default build is
// pure Go and never links gorgonia.org/cu (whose package init exits the
// process when no GPU is present). Without the tag, New returns an error
// saying how to rebuild. The API is the same under both tags.
//
// A Backend owns one context on one device, made current on the OS thread
// of the goroutine that called New, which stays locked to that thread
// until Close: use a backend from the goroutine that created it. All work
// goes to one stream; ops are asynchronous and Sync or Download wait.
package cuda
