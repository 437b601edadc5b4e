#include "textflag.h"

// The AVX-512 implicit-convolution kernel, for processors with 16-float
// vector registers (see simdConvKernels). An AVX-512 filter-gradient
// kernel (4 output channels × 6 weight rows × 16 lanes) was measured too
// and was no faster than dot2x6AVX2 on the AMD EPYC (Zen 4) here, so the
// filter gradient stays on AVX2.

// STORE512 stores (ADD512 adds) one 16-wide row of the tile and steps DX.
#define STORE512(z) VMOVUPS z, (DX); ADDQ R10, DX
#define ADD512(z) VADDPS (DX), z, z; VMOVUPS z, (DX); ADDQ R10, DX

// func kernel8x16OffsetsAVX512(k int, a, b *float32, offs *int64, c *float32, ldc, add int)
//
// c[i*ldc+j] (+)= Σ_p a[p*8+i] · b[offs[p]+j] for i < 8, j < 16: the
// implicit-convolution micro-kernel over a packed 8-row panel of weights
// and shifted input rows, fused multiply-adds in p order. Z0–Z7
// accumulate the rows, Z8 holds a row of B, and the elements of A are
// broadcast from memory by the multiply-adds themselves.
TEXT ·kernel8x16OffsetsAVX512(SB), NOSPLIT, $0-56
	MOVQ   k+0(FP), CX
	MOVQ   a+8(FP), SI
	MOVQ   b+16(FP), DI
	MOVQ   offs+24(FP), R8
	MOVQ   c+32(FP), DX
	MOVQ   ldc+40(FP), R10
	MOVQ   add+48(FP), R11
	VXORPS Z0, Z0, Z0
	VXORPS Z1, Z1, Z1
	VXORPS Z2, Z2, Z2
	VXORPS Z3, Z3, Z3
	VXORPS Z4, Z4, Z4
	VXORPS Z5, Z5, Z5
	VXORPS Z6, Z6, Z6
	VXORPS Z7, Z7, Z7
	TESTQ  CX, CX
	JE     store

loop:
	MOVQ             (R8), R9
	VMOVUPS          (DI)(R9*4), Z8
	VFMADD231PS.BCST (SI), Z8, Z0
	VFMADD231PS.BCST 4(SI), Z8, Z1
	VFMADD231PS.BCST 8(SI), Z8, Z2
	VFMADD231PS.BCST 12(SI), Z8, Z3
	VFMADD231PS.BCST 16(SI), Z8, Z4
	VFMADD231PS.BCST 20(SI), Z8, Z5
	VFMADD231PS.BCST 24(SI), Z8, Z6
	VFMADD231PS.BCST 28(SI), Z8, Z7
	ADDQ             $32, SI
	ADDQ             $8, R8
	DECQ             CX
	JNZ              loop

store:
	SHLQ  $2, R10
	TESTQ R11, R11
	JNE   addstore
	STORE512(Z0); STORE512(Z1); STORE512(Z2); STORE512(Z3)
	STORE512(Z4); STORE512(Z5); STORE512(Z6); STORE512(Z7)
	VZEROUPPER
	RET

addstore:
	ADD512(Z0); ADD512(Z1); ADD512(Z2); ADD512(Z3)
	ADD512(Z4); ADD512(Z5); ADD512(Z6); ADD512(Z7)
	VZEROUPPER
	RET
