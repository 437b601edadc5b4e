#include "textflag.h"

// The AVX-512 convolution kernels, for processors with 16-float vector
// registers (see simdConvKernels and simdDirectKernels): the implicit-GEMM
// micro-kernel of forward passes and input gradients, and the
// channels-last filter-gradient kernel (direct.go).

// STORE512 stores (ADD512 adds) one 16-wide row of the tile and steps DX.
#define STORE512(z) VMOVUPS z, (DX); ADDQ R10, DX
#define ADD512(z) VADDPS (DX), z, z; VMOVUPS z, (DX); ADDQ R10, DX

// The implicit kernels share their accumulators Z0–Z7 (the tile's rows),
// the B row in Z8, the A panel at SI, C at DX, ldc in R10 and add in R11.
#define ZERO8 VXORPS Z0, Z0, Z0; VXORPS Z1, Z1, Z1; VXORPS Z2, Z2, Z2; VXORPS Z3, Z3, Z3; VXORPS Z4, Z4, Z4; VXORPS Z5, Z5, Z5; VXORPS Z6, Z6, Z6; VXORPS Z7, Z7, Z7

// FMA8 multiplies the B row in Z8 by the 8 elements of the A panel column
// at SI (broadcast by the multiply-adds) into Z0–Z7.
#define FMA8 \
	VFMADD231PS.BCST (SI), Z8, Z0; VFMADD231PS.BCST 4(SI), Z8, Z1 \
	VFMADD231PS.BCST 8(SI), Z8, Z2; VFMADD231PS.BCST 12(SI), Z8, Z3 \
	VFMADD231PS.BCST 16(SI), Z8, Z4; VFMADD231PS.BCST 20(SI), Z8, Z5 \
	VFMADD231PS.BCST 24(SI), Z8, Z6; VFMADD231PS.BCST 28(SI), Z8, Z7

// STORE8 writes the tile, or adds it when R11 ≠ 0, then returns.
#define STORE8(label) \
	SHLQ $2, R10 \
	TESTQ R11, R11 \
	JNE label \
	STORE512(Z0); STORE512(Z1); STORE512(Z2); STORE512(Z3) \
	STORE512(Z4); STORE512(Z5); STORE512(Z6); STORE512(Z7) \
	VZEROUPPER \
	RET \
label: \
	ADD512(Z0); ADD512(Z1); ADD512(Z2); ADD512(Z3) \
	ADD512(Z4); ADD512(Z5); ADD512(Z6); ADD512(Z7) \
	VZEROUPPER \
	RET

// func kernel8x16OffsetsAVX512(k int, a, b *float32, offs *int64, c *float32, ldc, add int)
//
// c[i*ldc+j] (+)= Σ_p a[p*8+i] · b[offs[p]+j] for i < 8, j < 16: the
// implicit-convolution micro-kernel over a packed 8-row panel of weights
// and shifted input rows, fused multiply-adds in p order. Z0–Z7
// accumulate the rows, Z8 holds a row of B, and the elements of A are
// broadcast from memory by the multiply-adds themselves.
TEXT ·kernel8x16OffsetsAVX512(SB), NOSPLIT, $0-56
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ offs+24(FP), R8
	MOVQ c+32(FP), DX
	MOVQ ldc+40(FP), R10
	MOVQ add+48(FP), R11
	ZERO8
	TESTQ CX, CX
	JE    store

loop:
	MOVQ    (R8), R9
	VMOVUPS (DI)(R9*4), Z8
	FMA8
	ADDQ    $32, SI
	ADDQ    $8, R8
	DECQ    CX
	JNZ     loop

store:
	STORE8(addstore)

// func kernel8x16Offsets2RowsAVX512(k int, a, b *float32, offs *int64, gap int, c *float32, ldc, add int)
//
// As kernel8x16OffsetsAVX512, but row p of B is the 8 floats at
// b + offs[p] followed by the 8 at b + offs[p] + gap: two output rows 8
// positions wide, gap floats apart in the padded input, make one 16-wide
// tile.
TEXT ·kernel8x16Offsets2RowsAVX512(SB), NOSPLIT, $0-64
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ offs+24(FP), R8
	MOVQ gap+32(FP), R12
	LEAQ (DI)(R12*4), R12 // b + gap
	MOVQ c+40(FP), DX
	MOVQ ldc+48(FP), R10
	MOVQ add+56(FP), R11
	ZERO8
	TESTQ CX, CX
	JE    store2

loop2:
	MOVQ         (R8), R9
	VMOVUPS      (DI)(R9*4), Y8
	VINSERTF32X8 $1, (R12)(R9*4), Z8, Z8
	FMA8
	ADDQ         $32, SI
	ADDQ         $8, R8
	DECQ         CX
	JNZ          loop2

store2:
	STORE8(addstore2)

// func transposeBlocksAVX512(dst *float32, ldd int, src *float32, lds int, blocks int)
//
// dst[(16b+j)*ldd+i] = src[i*lds+16b+j] for i, j < 16 and b < blocks:
// 16×16 blocks side by side in src transposed into blocks one above the
// other in dst, each in registers. A block's rows go to Z0–Z15; unpacking
// pairs of rows, then 64-bit and 128-bit shuffles leave column c of the
// block in one register. (Building the registers from 128-bit chunks of
// four rows, so that the loads make the lane moves, was slower: it reads
// each line of a plane four times, and the 16 planes share L1 sets.)
TEXT ·transposeBlocksAVX512(SB), NOSPLIT, $0-40
	MOVQ  dst+0(FP), DI
	MOVQ  ldd+8(FP), DX
	SHLQ  $2, DX
	MOVQ  src+16(FP), SI
	MOVQ  lds+24(FP), CX
	SHLQ  $2, CX
	MOVQ  blocks+32(FP), R14
	TESTQ R14, R14
	JE    tdone

tblock:
	MOVQ    DI, R13
	MOVQ    SI, R11
	VMOVUPS (R11), Z0
	ADDQ    CX, R11
	VMOVUPS (R11), Z1
	ADDQ    CX, R11
	VMOVUPS (R11), Z2
	ADDQ    CX, R11
	VMOVUPS (R11), Z3
	ADDQ    CX, R11
	VMOVUPS (R11), Z4
	ADDQ    CX, R11
	VMOVUPS (R11), Z5
	ADDQ    CX, R11
	VMOVUPS (R11), Z6
	ADDQ    CX, R11
	VMOVUPS (R11), Z7
	ADDQ    CX, R11
	VMOVUPS (R11), Z8
	ADDQ    CX, R11
	VMOVUPS (R11), Z9
	ADDQ    CX, R11
	VMOVUPS (R11), Z10
	ADDQ    CX, R11
	VMOVUPS (R11), Z11
	ADDQ    CX, R11
	VMOVUPS (R11), Z12
	ADDQ    CX, R11
	VMOVUPS (R11), Z13
	ADDQ    CX, R11
	VMOVUPS (R11), Z14
	ADDQ    CX, R11
	VMOVUPS (R11), Z15

	// Pairs of rows, per 128-bit lane L: Z16+2p = (r[4L], r'[4L], r[4L+1],
	// r'[4L+1]) and Z17+2p the same for elements 4L+2, 4L+3.
	VUNPCKLPS Z1, Z0, Z16
	VUNPCKHPS Z1, Z0, Z17
	VUNPCKLPS Z3, Z2, Z18
	VUNPCKHPS Z3, Z2, Z19
	VUNPCKLPS Z5, Z4, Z20
	VUNPCKHPS Z5, Z4, Z21
	VUNPCKLPS Z7, Z6, Z22
	VUNPCKHPS Z7, Z6, Z23
	VUNPCKLPS Z9, Z8, Z24
	VUNPCKHPS Z9, Z8, Z25
	VUNPCKLPS Z11, Z10, Z26
	VUNPCKHPS Z11, Z10, Z27
	VUNPCKLPS Z13, Z12, Z28
	VUNPCKHPS Z13, Z12, Z29
	VUNPCKLPS Z15, Z14, Z30
	VUNPCKHPS Z15, Z14, Z31

	// Z(4g+m), lane L: column 4L+m of rows 4g..4g+3.
	VSHUFPS $0x44, Z18, Z16, Z0
	VSHUFPS $0xEE, Z18, Z16, Z1
	VSHUFPS $0x44, Z19, Z17, Z2
	VSHUFPS $0xEE, Z19, Z17, Z3
	VSHUFPS $0x44, Z22, Z20, Z4
	VSHUFPS $0xEE, Z22, Z20, Z5
	VSHUFPS $0x44, Z23, Z21, Z6
	VSHUFPS $0xEE, Z23, Z21, Z7
	VSHUFPS $0x44, Z26, Z24, Z8
	VSHUFPS $0xEE, Z26, Z24, Z9
	VSHUFPS $0x44, Z27, Z25, Z10
	VSHUFPS $0xEE, Z27, Z25, Z11
	VSHUFPS $0x44, Z30, Z28, Z12
	VSHUFPS $0xEE, Z30, Z28, Z13
	VSHUFPS $0x44, Z31, Z29, Z14
	VSHUFPS $0xEE, Z31, Z29, Z15

	// For each m: lanes 0–1 (Z16+m) and 2–3 (Z20+m) of rows 0–7, and the
	// same of rows 8–15 (Z24+m, Z28+m).
	VSHUFF32X4 $0x44, Z4, Z0, Z16
	VSHUFF32X4 $0x44, Z5, Z1, Z17
	VSHUFF32X4 $0x44, Z6, Z2, Z18
	VSHUFF32X4 $0x44, Z7, Z3, Z19
	VSHUFF32X4 $0xEE, Z4, Z0, Z20
	VSHUFF32X4 $0xEE, Z5, Z1, Z21
	VSHUFF32X4 $0xEE, Z6, Z2, Z22
	VSHUFF32X4 $0xEE, Z7, Z3, Z23
	VSHUFF32X4 $0x44, Z12, Z8, Z24
	VSHUFF32X4 $0x44, Z13, Z9, Z25
	VSHUFF32X4 $0x44, Z14, Z10, Z26
	VSHUFF32X4 $0x44, Z15, Z11, Z27
	VSHUFF32X4 $0xEE, Z12, Z8, Z28
	VSHUFF32X4 $0xEE, Z13, Z9, Z29
	VSHUFF32X4 $0xEE, Z14, Z10, Z30
	VSHUFF32X4 $0xEE, Z15, Z11, Z31

	// Column 4q+m: Z(4q+m) from the lanes q of the four groups.
	VSHUFF32X4 $0x88, Z24, Z16, Z0
	VSHUFF32X4 $0x88, Z25, Z17, Z1
	VSHUFF32X4 $0x88, Z26, Z18, Z2
	VSHUFF32X4 $0x88, Z27, Z19, Z3
	VSHUFF32X4 $0xDD, Z24, Z16, Z4
	VSHUFF32X4 $0xDD, Z25, Z17, Z5
	VSHUFF32X4 $0xDD, Z26, Z18, Z6
	VSHUFF32X4 $0xDD, Z27, Z19, Z7
	VSHUFF32X4 $0x88, Z28, Z20, Z8
	VSHUFF32X4 $0x88, Z29, Z21, Z9
	VSHUFF32X4 $0x88, Z30, Z22, Z10
	VSHUFF32X4 $0x88, Z31, Z23, Z11
	VSHUFF32X4 $0xDD, Z28, Z20, Z12
	VSHUFF32X4 $0xDD, Z29, Z21, Z13
	VSHUFF32X4 $0xDD, Z30, Z22, Z14
	VSHUFF32X4 $0xDD, Z31, Z23, Z15

	VMOVUPS Z0, (R13)
	ADDQ    DX, R13
	VMOVUPS Z1, (R13)
	ADDQ    DX, R13
	VMOVUPS Z2, (R13)
	ADDQ    DX, R13
	VMOVUPS Z3, (R13)
	ADDQ    DX, R13
	VMOVUPS Z4, (R13)
	ADDQ    DX, R13
	VMOVUPS Z5, (R13)
	ADDQ    DX, R13
	VMOVUPS Z6, (R13)
	ADDQ    DX, R13
	VMOVUPS Z7, (R13)
	ADDQ    DX, R13
	VMOVUPS Z8, (R13)
	ADDQ    DX, R13
	VMOVUPS Z9, (R13)
	ADDQ    DX, R13
	VMOVUPS Z10, (R13)
	ADDQ    DX, R13
	VMOVUPS Z11, (R13)
	ADDQ    DX, R13
	VMOVUPS Z12, (R13)
	ADDQ    DX, R13
	VMOVUPS Z13, (R13)
	ADDQ    DX, R13
	VMOVUPS Z14, (R13)
	ADDQ    DX, R13
	VMOVUPS Z15, (R13)
	ADDQ    $64, SI     // the next block of src
	LEAQ    (R13)(DX*1), DI // and of dst
	DECQ    R14
	JNZ     tblock

tdone:
	VZEROUPPER
	RET

// func filterNCHW8x16AVX512(rows, cols int, dy *float32, dyRow, dyPlane int, x *float32, xRow, xCol int, acc *float32)
//
// The filter-gradient kernel on an output gradient left in NCHW:
// acc[r*16+j] += Σ_i Σ_q dy[r*dyPlane + i*dyRow + q] · x[i*xRow + q*xCol + j]
// for r < 8, j < 16, over rows i < rows and columns q < cols of the
// output, in (i, q) order: 8 output channels (planes of dy, broadcast) by
// 16 input channels (contiguous in the channels-last x) of one tap.
// Z0–Z7 accumulate, Z16 holds 16 values of x.
TEXT ·filterNCHW8x16AVX512(SB), NOSPLIT, $0-72
	MOVQ    rows+0(FP), CX
	MOVQ    cols+8(FP), DX
	MOVQ    dy+16(FP), SI
	MOVQ    dyRow+24(FP), R12
	SHLQ    $2, R12
	MOVQ    dyPlane+32(FP), R10
	SHLQ    $2, R10             // one plane, bytes
	LEAQ    (R10)(R10*2), R11   // three planes
	MOVQ    x+40(FP), DI
	MOVQ    xRow+48(FP), R13
	SHLQ    $2, R13
	MOVQ    xCol+56(FP), R14
	SHLQ    $2, R14
	MOVQ    acc+64(FP), AX
	VMOVUPS (AX), Z0
	VMOVUPS 64(AX), Z1
	VMOVUPS 128(AX), Z2
	VMOVUPS 192(AX), Z3
	VMOVUPS 256(AX), Z4
	VMOVUPS 320(AX), Z5
	VMOVUPS 384(AX), Z6
	VMOVUPS 448(AX), Z7
	TESTQ   CX, CX
	JE      tstore
	TESTQ   DX, DX
	JE      tstore

trow:
	MOVQ SI, R8
	LEAQ (SI)(R10*4), R9 // plane 4
	MOVQ DI, BX
	MOVQ DX, R15

tcol:
	VMOVUPS          (BX), Z16
	VFMADD231PS.BCST (R8), Z16, Z0
	VFMADD231PS.BCST (R8)(R10*1), Z16, Z1
	VFMADD231PS.BCST (R8)(R10*2), Z16, Z2
	VFMADD231PS.BCST (R8)(R11*1), Z16, Z3
	VFMADD231PS.BCST (R9), Z16, Z4
	VFMADD231PS.BCST (R9)(R10*1), Z16, Z5
	VFMADD231PS.BCST (R9)(R10*2), Z16, Z6
	VFMADD231PS.BCST (R9)(R11*1), Z16, Z7
	ADDQ             $4, R8
	ADDQ             $4, R9
	ADDQ             R14, BX
	DECQ             R15
	JNZ              tcol
	ADDQ             R12, SI
	ADDQ             R13, DI
	DECQ             CX
	JNZ              trow

tstore:
	VMOVUPS Z0, (AX)
	VMOVUPS Z1, 64(AX)
	VMOVUPS Z2, 128(AX)
	VMOVUPS Z3, 192(AX)
	VMOVUPS Z4, 256(AX)
	VMOVUPS Z5, 320(AX)
	VMOVUPS Z6, 384(AX)
	VMOVUPS Z7, 448(AX)
	VZEROUPPER
	RET
