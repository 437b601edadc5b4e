#include "textflag.h"

// The two GEMM micro-kernels end alike: the 6×16 tile in Y0–Y11 (row i in
// Y(2i), Y(2i+1)) is stored to, or with add ≠ 0 added to, six rows of C
// at DX, DX+ldc, … (ldc in bytes in R10).
#define STOREROW(lo, hi) VMOVUPS lo, (DX); VMOVUPS hi, 32(DX); ADDQ R10, DX
#define ADDROW(lo, hi) VADDPS (DX), lo, lo; VADDPS 32(DX), hi, hi; VMOVUPS lo, (DX); VMOVUPS hi, 32(DX); ADDQ R10, DX
#define ZEROTILE VXORPS Y0, Y0, Y0; VXORPS Y1, Y1, Y1; VXORPS Y2, Y2, Y2; VXORPS Y3, Y3, Y3; VXORPS Y4, Y4, Y4; VXORPS Y5, Y5, Y5; VXORPS Y6, Y6, Y6; VXORPS Y7, Y7, Y7; VXORPS Y8, Y8, Y8; VXORPS Y9, Y9, Y9; VXORPS Y10, Y10, Y10; VXORPS Y11, Y11, Y11

// FMAROWS multiplies the row of B in Y12–Y13 by the six elements of the
// A panel column at SI and accumulates into Y0–Y11.
#define FMAROWS \
	VBROADCASTSS (SI), Y14; VFMADD231PS Y14, Y12, Y0; VFMADD231PS Y14, Y13, Y1 \
	VBROADCASTSS 4(SI), Y15; VFMADD231PS Y15, Y12, Y2; VFMADD231PS Y15, Y13, Y3 \
	VBROADCASTSS 8(SI), Y14; VFMADD231PS Y14, Y12, Y4; VFMADD231PS Y14, Y13, Y5 \
	VBROADCASTSS 12(SI), Y15; VFMADD231PS Y15, Y12, Y6; VFMADD231PS Y15, Y13, Y7 \
	VBROADCASTSS 16(SI), Y14; VFMADD231PS Y14, Y12, Y8; VFMADD231PS Y14, Y13, Y9 \
	VBROADCASTSS 20(SI), Y15; VFMADD231PS Y15, Y12, Y10; VFMADD231PS Y15, Y13, Y11

// STORETILE writes the tile, or adds it when R11 ≠ 0, then returns.
#define STORETILE(label) \
	SHLQ $2, R10 \
	TESTQ R11, R11 \
	JNE label \
	STOREROW(Y0, Y1); STOREROW(Y2, Y3); STOREROW(Y4, Y5); STOREROW(Y6, Y7); STOREROW(Y8, Y9); STOREROW(Y10, Y11) \
	VZEROUPPER \
	RET \
label: \
	ADDROW(Y0, Y1); ADDROW(Y2, Y3); ADDROW(Y4, Y5); ADDROW(Y6, Y7); ADDROW(Y8, Y9); ADDROW(Y10, Y11) \
	VZEROUPPER \
	RET

// func kernel6x16AVX2(k int, a, b, c *float32, ldc, add int)
//
// c[i*ldc+j] (+)= Σ_p a[p*6+i] · b[p*16+j] for i < 6, j < 16: the GEMM
// micro-kernel over a packed 6-row panel of A and a packed 16-column panel
// of B, with fused multiply-adds in p order. Y0–Y11 accumulate the 6×16
// tile, Y12–Y13 hold a row of B, Y14–Y15 broadcast elements of A.
TEXT ·kernel6x16AVX2(SB), NOSPLIT, $0-48
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R10
	MOVQ add+40(FP), R11
	ZEROTILE
	TESTQ CX, CX
	JE    store

loop:
	VMOVUPS (DI), Y12
	VMOVUPS 32(DI), Y13
	FMAROWS
	ADDQ    $24, SI
	ADDQ    $64, DI
	DECQ    CX
	JNZ     loop

store:
	STORETILE(addstore)

// func kernel6x16OffsetsAVX2(k int, a, b *float32, offs *int64, c *float32, ldc, add int)
//
// As kernel6x16AVX2, but row p of B is the 16 floats at b + offs[p]
// (an implicit matrix: a convolution's shifted input rows).
TEXT ·kernel6x16OffsetsAVX2(SB), NOSPLIT, $0-56
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ offs+24(FP), R8
	MOVQ c+32(FP), DX
	MOVQ ldc+40(FP), R10
	MOVQ add+48(FP), R11
	ZEROTILE
	TESTQ CX, CX
	JE    ostore

oloop:
	MOVQ    (R8), R9
	VMOVUPS (DI)(R9*4), Y12
	VMOVUPS 32(DI)(R9*4), Y13
	FMAROWS
	ADDQ    $24, SI
	ADDQ    $8, R8
	DECQ    CX
	JNZ     oloop

ostore:
	STORETILE(oaddstore)

// func dot2x6AVX2(n8 int, dy0, dy1, x *float32, offs *int64, acc *float32)
//
// The filter-gradient kernel: for i < 2, j < 6 and lanes l < 8,
// acc[(j*2+i)*8+l] += Σ_t dy_i[t*8+l] · x[offs[j]+t*8+l] over t < n8,
// in t order, with fused multiply-adds. Rows of dy and the six shifted
// rows of x are read in place: nothing is packed. Y0–Y11 accumulate,
// Y12–Y13 hold 8 values of each dy row, Y14–Y15 8 values of an x row.
TEXT ·dot2x6AVX2(SB), NOSPLIT, $0-48
	MOVQ n8+0(FP), CX
	MOVQ dy0+8(FP), SI
	MOVQ dy1+16(FP), DI
	MOVQ x+24(FP), BX
	MOVQ offs+32(FP), DX
	MOVQ acc+40(FP), AX
	MOVQ (DX), R8
	LEAQ (BX)(R8*4), R8
	MOVQ 8(DX), R9
	LEAQ (BX)(R9*4), R9
	MOVQ 16(DX), R10
	LEAQ (BX)(R10*4), R10
	MOVQ 24(DX), R11
	LEAQ (BX)(R11*4), R11
	MOVQ 32(DX), R12
	LEAQ (BX)(R12*4), R12
	MOVQ 40(DX), R13
	LEAQ (BX)(R13*4), R13
	VMOVUPS (AX), Y0
	VMOVUPS 32(AX), Y1
	VMOVUPS 64(AX), Y2
	VMOVUPS 96(AX), Y3
	VMOVUPS 128(AX), Y4
	VMOVUPS 160(AX), Y5
	VMOVUPS 192(AX), Y6
	VMOVUPS 224(AX), Y7
	VMOVUPS 256(AX), Y8
	VMOVUPS 288(AX), Y9
	VMOVUPS 320(AX), Y10
	VMOVUPS 352(AX), Y11
	XORQ    BX, BX
	TESTQ   CX, CX
	JE      dstore

dloop:
	VMOVUPS     (SI)(BX*1), Y12
	VMOVUPS     (DI)(BX*1), Y13
	VMOVUPS     (R8)(BX*1), Y14
	VFMADD231PS Y14, Y12, Y0
	VFMADD231PS Y14, Y13, Y1
	VMOVUPS     (R9)(BX*1), Y15
	VFMADD231PS Y15, Y12, Y2
	VFMADD231PS Y15, Y13, Y3
	VMOVUPS     (R10)(BX*1), Y14
	VFMADD231PS Y14, Y12, Y4
	VFMADD231PS Y14, Y13, Y5
	VMOVUPS     (R11)(BX*1), Y15
	VFMADD231PS Y15, Y12, Y6
	VFMADD231PS Y15, Y13, Y7
	VMOVUPS     (R12)(BX*1), Y14
	VFMADD231PS Y14, Y12, Y8
	VFMADD231PS Y14, Y13, Y9
	VMOVUPS     (R13)(BX*1), Y15
	VFMADD231PS Y15, Y12, Y10
	VFMADD231PS Y15, Y13, Y11
	ADDQ        $32, BX
	DECQ        CX
	JNZ         dloop

dstore:
	VMOVUPS Y0, (AX)
	VMOVUPS Y1, 32(AX)
	VMOVUPS Y2, 64(AX)
	VMOVUPS Y3, 96(AX)
	VMOVUPS Y4, 128(AX)
	VMOVUPS Y5, 160(AX)
	VMOVUPS Y6, 192(AX)
	VMOVUPS Y7, 224(AX)
	VMOVUPS Y8, 256(AX)
	VMOVUPS Y9, 288(AX)
	VMOVUPS Y10, 320(AX)
	VMOVUPS Y11, 352(AX)
	VZEROUPPER
	RET
