#include "textflag.h"

// The AVX2+FMA kernels of Winograd F(2×2, 3×3) convolutions (winograd.go)
// for processors without AVX-512: 8 channels per vector, 16 vector
// registers. Each does what its Go reference does, in the same order of
// operations, and what its AVX-512 twin (winograd_amd64.s) does 8 lanes
// at a time.

// HCOL combines two columns of the tile's four rows, h[r] = op(pa, pb)
// for rows at 0, R8, 2·R8 and R11 bytes from the column pointers, into
// Y0–Y3; then V[q][s] for q < 4 (h0−h2, h1+h2, h2−h1, h1−h3) goes to DI
// + q·4·vPlane (0, R13, R14, R15 bytes on) and DI steps one plane (R12).
#define HCOL(op, pa, pb) \
	VMOVUPS (pa), Y4; VMOVUPS (pb), Y5; op Y5, Y4, Y0 \
	VMOVUPS (pa)(R8*1), Y4; VMOVUPS (pb)(R8*1), Y5; op Y5, Y4, Y1 \
	VMOVUPS (pa)(R8*2), Y4; VMOVUPS (pb)(R8*2), Y5; op Y5, Y4, Y2 \
	VMOVUPS (pa)(R11*1), Y4; VMOVUPS (pb)(R11*1), Y5; op Y5, Y4, Y3 \
	VSUBPS  Y2, Y0, Y6; VADDPS Y2, Y1, Y7; VSUBPS Y1, Y2, Y8; VSUBPS Y3, Y1, Y9 \
	VMOVUPS Y6, (DI); VMOVUPS Y7, (DI)(R13*1); VMOVUPS Y8, (DI)(R14*1); VMOVUPS Y9, (DI)(R15*1) \
	ADDQ    R12, DI

// func winogradInputAVX2(n int, x *float32, xRow, xCol int, v *float32, vStep, vPlane int)
//
// As winogradInputGo with 8 lanes. SI, AX, BX and DX point at the tile's
// columns 0–3.
TEXT ·winogradInputAVX2(SB), NOSPLIT, $0-56
	MOVQ  n+0(FP), CX
	MOVQ  x+8(FP), SI
	MOVQ  xRow+16(FP), R8
	SHLQ  $2, R8
	LEAQ  (R8)(R8*2), R11 // three rows
	MOVQ  xCol+24(FP), R9
	SHLQ  $2, R9
	LEAQ  (SI)(R9*1), AX
	LEAQ  (SI)(R9*2), BX
	LEAQ  (AX)(R9*2), DX
	SHLQ  $1, R9          // two columns: the next tile
	MOVQ  v+32(FP), DI
	MOVQ  vStep+40(FP), R10
	SHLQ  $2, R10
	MOVQ  vPlane+48(FP), R12
	SHLQ  $2, R12
	LEAQ  (R12*4), R13     // 4 planes
	LEAQ  (R13)(R13*1), R14 // 8 planes
	LEAQ  (R14)(R13*1), R15 // 12 planes
	TESTQ CX, CX
	JE    in2done

in2tile:
	HCOL(VSUBPS, SI, BX) // d0 − d2
	HCOL(VADDPS, AX, BX) // d1 + d2
	HCOL(VSUBPS, BX, AX) // d2 − d1
	HCOL(VSUBPS, AX, DX) // d1 − d3
	SUBQ R13, DI         // back to plane 0
	ADDQ R10, DI
	ADDQ R9, SI
	ADDQ R9, AX
	ADDQ R9, BX
	ADDQ R9, DX
	DECQ CX
	JNZ  in2tile

in2done:
	VZEROUPPER
	RET

// OUTCOL2 loads column s of the 4×4 tile m (rows at BX + q·4·mPlane, 0,
// R10, R11, R12 bytes on) and combines its rows: s0 = m0+m1+m2,
// s1 = m1−m2−m3; then steps BX to the next column's plane.
#define OUTCOL2(s0, s1) \
	VMOVUPS (BX), Y0; VMOVUPS (BX)(R10*1), Y1; VMOVUPS (BX)(R11*1), Y2; VMOVUPS (BX)(R12*1), Y3 \
	VADDPS  Y1, Y0, s0; VADDPS Y2, s0, s0; VSUBPS Y2, Y1, s1; VSUBPS Y3, s1, s1 \
	ADDQ    R9, BX

// func winogradOutputAVX2(n int, m *float32, mStep, mPlane int, y *float32, yRow, yCol int)
//
// As winogradOutputGo with 8 lanes.
TEXT ·winogradOutputAVX2(SB), NOSPLIT, $0-56
	MOVQ  n+0(FP), CX
	MOVQ  m+8(FP), SI
	MOVQ  mStep+16(FP), R8
	SHLQ  $2, R8
	MOVQ  mPlane+24(FP), R9
	SHLQ  $2, R9
	LEAQ  (R9*4), R10       // 4 planes
	LEAQ  (R10)(R10*1), R11 // 8 planes
	LEAQ  (R11)(R10*1), R12 // 12 planes
	MOVQ  y+32(FP), DI
	MOVQ  yRow+40(FP), R13
	SHLQ  $2, R13
	MOVQ  yCol+48(FP), R14
	SHLQ  $2, R14
	TESTQ CX, CX
	JE    out2done

out2tile:
	MOVQ    SI, BX
	OUTCOL2(Y4, Y8)
	OUTCOL2(Y5, Y9)
	OUTCOL2(Y6, Y10)
	OUTCOL2(Y7, Y11)
	VADDPS  Y5, Y4, Y12
	VADDPS  Y6, Y12, Y12 // y00
	VSUBPS  Y6, Y5, Y13
	VSUBPS  Y7, Y13, Y13 // y01
	VADDPS  Y9, Y8, Y14
	VADDPS  Y10, Y14, Y14 // y10
	VSUBPS  Y10, Y9, Y15
	VSUBPS  Y11, Y15, Y15 // y11
	MOVQ    DI, AX
	VMOVUPS Y12, (AX)
	VMOVUPS Y13, (AX)(R14*1)
	ADDQ    R13, AX
	VMOVUPS Y14, (AX)
	VMOVUPS Y15, (AX)(R14*1)
	ADDQ    R8, SI
	LEAQ    (DI)(R14*2), DI
	DECQ    CX
	JNZ     out2tile

out2done:
	VZEROUPPER
	RET

// GRADROW2 stores row (p, q) of A·dy, expanded by Aᵀ: p, p+q, p−q, −q at
// BX + s·mPlane for s < 4 (0, R9, 2·R9, R10 bytes on), −q by flipping
// the sign bit with the mask in Y15; then steps BX four planes on.
#define GRADROW2(p, q) \
	VADDPS  q, p, Y10; VSUBPS q, p, Y11; VXORPS Y15, q, Y12 \
	VMOVUPS p, (BX); VMOVUPS Y10, (BX)(R9*1); VMOVUPS Y11, (BX)(R9*2); VMOVUPS Y12, (BX)(R10*1) \
	ADDQ    R11, BX

// func winogradGradAVX2(n int, dy *float32, dyRow, dyCol int, m *float32, mStep, mPlane int)
//
// As winogradGradGo with 8 lanes.
TEXT ·winogradGradAVX2(SB), NOSPLIT, $0-56
	MOVQ         n+0(FP), CX
	MOVQ         dy+8(FP), SI
	MOVQ         dyRow+16(FP), R12
	SHLQ         $2, R12
	MOVQ         dyCol+24(FP), R13
	SHLQ         $2, R13
	MOVQ         m+32(FP), DI
	MOVQ         mStep+40(FP), R8
	SHLQ         $2, R8
	MOVQ         mPlane+48(FP), R9
	SHLQ         $2, R9
	LEAQ         (R9)(R9*2), R10  // 3 planes
	LEAQ         (R9)(R10*1), R11 // 4 planes
	MOVL         $0x80000000, AX
	MOVD         AX, X15
	VPBROADCASTD X15, Y15
	TESTQ        CX, CX
	JE           grad2done

grad2tile:
	VMOVUPS (SI), Y0        // dy00
	VMOVUPS (SI)(R13*1), Y1 // dy01
	LEAQ    (SI)(R12*1), AX
	VMOVUPS (AX), Y2        // dy10
	VMOVUPS (AX)(R13*1), Y3 // dy11
	VADDPS  Y2, Y0, Y4
	VADDPS  Y3, Y1, Y5
	VSUBPS  Y2, Y0, Y6
	VSUBPS  Y3, Y1, Y7
	VXORPS  Y15, Y2, Y8
	VXORPS  Y15, Y3, Y9
	MOVQ    DI, BX
	GRADROW2(Y0, Y1)
	GRADROW2(Y4, Y5)
	GRADROW2(Y6, Y7)
	GRADROW2(Y8, Y9)
	LEAQ    (SI)(R13*2), SI
	ADDQ    R8, DI
	DECQ    CX
	JNZ     grad2tile

grad2done:
	VZEROUPPER
	RET

// The 8×8 matrix-product kernels keep a block's rows in Y0–Y7, at R9
// (R10 bytes apart), a row of b in Y8 and broadcast elements of a in Y9
// and Y10 by turns.
#define ZERO8Y VXORPS Y0, Y0, Y0; VXORPS Y1, Y1, Y1; VXORPS Y2, Y2, Y2; VXORPS Y3, Y3, Y3; VXORPS Y4, Y4, Y4; VXORPS Y5, Y5, Y5; VXORPS Y6, Y6, Y6; VXORPS Y7, Y7, Y7

#define LOADROWS8Y \
	MOVQ    R9, R15 \
	VMOVUPS (R15), Y0; ADDQ R10, R15; VMOVUPS (R15), Y1; ADDQ R10, R15 \
	VMOVUPS (R15), Y2; ADDQ R10, R15; VMOVUPS (R15), Y3; ADDQ R10, R15 \
	VMOVUPS (R15), Y4; ADDQ R10, R15; VMOVUPS (R15), Y5; ADDQ R10, R15 \
	VMOVUPS (R15), Y6; ADDQ R10, R15; VMOVUPS (R15), Y7

#define STOREROWS8Y \
	MOVQ    R9, R15 \
	VMOVUPS Y0, (R15); ADDQ R10, R15; VMOVUPS Y1, (R15); ADDQ R10, R15 \
	VMOVUPS Y2, (R15); ADDQ R10, R15; VMOVUPS Y3, (R15); ADDQ R10, R15 \
	VMOVUPS Y4, (R15); ADDQ R10, R15; VMOVUPS Y5, (R15); ADDQ R10, R15 \
	VMOVUPS Y6, (R15); ADDQ R10, R15; VMOVUPS Y7, (R15)

// BFMA broadcasts the float at addr into t and adds t·Y8 to acc.
#define BFMA(addr, t, acc) VBROADCASTSS addr, t; VFMADD231PS t, Y8, acc

// func winogradGemmAVX2(blocks, k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)
//
// As winogradGemmGo with 8 columns: blocks of 8 rows of c, a's rows lda
// floats apart.
TEXT ·winogradGemmAVX2(SB), NOSPLIT, $0-64
	MOVQ  blocks+0(FP), CX
	MOVQ  k+8(FP), DX
	MOVQ  a+16(FP), SI
	MOVQ  lda+24(FP), R12
	SHLQ  $2, R12
	LEAQ  (R12)(R12*2), R13 // three rows of a
	MOVQ  b+32(FP), DI
	MOVQ  ldb+40(FP), R8
	SHLQ  $2, R8
	MOVQ  c+48(FP), R9
	MOVQ  ldc+56(FP), R10
	SHLQ  $2, R10
	TESTQ CX, CX
	JE    g2done

g2block:
	ZERO8Y
	MOVQ  SI, AX
	LEAQ  (SI)(R12*4), BX // row 4 of the block
	MOVQ  DI, R11
	MOVQ  DX, R14
	TESTQ R14, R14
	JE    g2store

g2loop:
	VMOVUPS (R11), Y8
	BFMA((AX), Y9, Y0)
	BFMA((AX)(R12*1), Y10, Y1)
	BFMA((AX)(R12*2), Y9, Y2)
	BFMA((AX)(R13*1), Y10, Y3)
	BFMA((BX), Y9, Y4)
	BFMA((BX)(R12*1), Y10, Y5)
	BFMA((BX)(R12*2), Y9, Y6)
	BFMA((BX)(R13*1), Y10, Y7)
	ADDQ    $4, AX
	ADDQ    $4, BX
	ADDQ    R8, R11
	DECQ    R14
	JNZ     g2loop

g2store:
	STOREROWS8Y
	LEAQ (SI)(R12*8), SI
	LEAQ (R9)(R10*8), R9
	DECQ CX
	JNZ  g2block

g2done:
	VZEROUPPER
	RET

// func winogradFilterGemmAVX2(k, blocks int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)
//
// As winogradFilterGemmGo with 8 columns a block: 8 rows of c, the 8
// elements of a's row p contiguous.
TEXT ·winogradFilterGemmAVX2(SB), NOSPLIT, $0-64
	MOVQ  k+0(FP), DX
	MOVQ  blocks+8(FP), CX
	MOVQ  a+16(FP), SI
	MOVQ  lda+24(FP), R12
	SHLQ  $2, R12
	MOVQ  b+32(FP), DI
	MOVQ  ldb+40(FP), R8
	SHLQ  $2, R8
	MOVQ  c+48(FP), R9
	MOVQ  ldc+56(FP), R10
	SHLQ  $2, R10
	TESTQ CX, CX
	JE    fg2done

fg2block:
	LOADROWS8Y
	MOVQ  SI, AX
	MOVQ  DI, R11
	MOVQ  DX, R14
	TESTQ R14, R14
	JE    fg2store

fg2loop:
	VMOVUPS (R11), Y8
	BFMA((AX), Y9, Y0)
	BFMA(4(AX), Y10, Y1)
	BFMA(8(AX), Y9, Y2)
	BFMA(12(AX), Y10, Y3)
	BFMA(16(AX), Y9, Y4)
	BFMA(20(AX), Y10, Y5)
	BFMA(24(AX), Y9, Y6)
	BFMA(28(AX), Y10, Y7)
	ADDQ    R12, AX
	ADDQ    R8, R11
	DECQ    R14
	JNZ     fg2loop

fg2store:
	STOREROWS8Y
	ADDQ $32, DI
	ADDQ $32, R9
	DECQ CX
	JNZ  fg2block

fg2done:
	VZEROUPPER
	RET

// TRANSPOSE8 transposes the 8×8 block at SI (rows CX bytes apart) into
// DI (rows DX bytes apart), using R11 and R12. The loads do the 128-bit
// lane moves: Y(r) = (row r, row 4+r) of columns 0–3 and Y(4+r) the same
// of columns 4–7, for r < 4; a 4×4 transpose inside each lane (unpacks,
// then 64-bit shuffles) then leaves column c in one register.
#define TRANSPOSE8 \
	MOVQ SI, R11; LEAQ (SI)(CX*4), R12 \
	VMOVUPS (R11), X0; VINSERTF128 $1, (R12), Y0, Y0; VMOVUPS 16(R11), X4; VINSERTF128 $1, 16(R12), Y4, Y4 \
	ADDQ CX, R11; ADDQ CX, R12 \
	VMOVUPS (R11), X1; VINSERTF128 $1, (R12), Y1, Y1; VMOVUPS 16(R11), X5; VINSERTF128 $1, 16(R12), Y5, Y5 \
	ADDQ CX, R11; ADDQ CX, R12 \
	VMOVUPS (R11), X2; VINSERTF128 $1, (R12), Y2, Y2; VMOVUPS 16(R11), X6; VINSERTF128 $1, 16(R12), Y6, Y6 \
	ADDQ CX, R11; ADDQ CX, R12 \
	VMOVUPS (R11), X3; VINSERTF128 $1, (R12), Y3, Y3; VMOVUPS 16(R11), X7; VINSERTF128 $1, 16(R12), Y7, Y7 \
	VUNPCKLPS Y1, Y0, Y8; VUNPCKHPS Y1, Y0, Y9; VUNPCKLPS Y3, Y2, Y10; VUNPCKHPS Y3, Y2, Y11 \
	VUNPCKLPS Y5, Y4, Y12; VUNPCKHPS Y5, Y4, Y13; VUNPCKLPS Y7, Y6, Y14; VUNPCKHPS Y7, Y6, Y15 \
	VSHUFPS $0x44, Y10, Y8, Y0; VSHUFPS $0xEE, Y10, Y8, Y1; VSHUFPS $0x44, Y11, Y9, Y2; VSHUFPS $0xEE, Y11, Y9, Y3 \
	VSHUFPS $0x44, Y14, Y12, Y4; VSHUFPS $0xEE, Y14, Y12, Y5; VSHUFPS $0x44, Y15, Y13, Y6; VSHUFPS $0xEE, Y15, Y13, Y7 \
	MOVQ DI, R12 \
	VMOVUPS Y0, (R12); ADDQ DX, R12; VMOVUPS Y1, (R12); ADDQ DX, R12 \
	VMOVUPS Y2, (R12); ADDQ DX, R12; VMOVUPS Y3, (R12); ADDQ DX, R12 \
	VMOVUPS Y4, (R12); ADDQ DX, R12; VMOVUPS Y5, (R12); ADDQ DX, R12 \
	VMOVUPS Y6, (R12); ADDQ DX, R12; VMOVUPS Y7, (R12)

// func transposeBlocksAVX2(dst *float32, ldd int, src *float32, lds int, blocks int)
//
// As transposeGo: each 16×16 block as four 8×8 ones, (i, j) of src
// going to (j, i) of dst, in the order that completes each 64-byte row
// of dst before the next: rows of dst far apart (planes) share L1 sets,
// and a row written in two halves at different times is fetched twice.
TEXT ·transposeBlocksAVX2(SB), NOSPLIT, $0-40
	MOVQ  dst+0(FP), R8
	MOVQ  ldd+8(FP), DX
	SHLQ  $2, DX
	MOVQ  src+16(FP), R9
	MOVQ  lds+24(FP), CX
	SHLQ  $2, CX
	MOVQ  blocks+32(FP), R14
	MOVQ  DX, R10
	SHLQ  $3, R10        // 8 rows of dst
	MOVQ  CX, R13
	SHLQ  $3, R13        // 8 rows of src
	TESTQ R14, R14
	JE    t2done

t2block:
	MOVQ R9, SI
	MOVQ R8, DI
	TRANSPOSE8           // (0, 0)
	LEAQ (R9)(R13*1), SI
	LEAQ 32(R8), DI
	TRANSPOSE8           // src (1, 0) to dst (0, 1): dst's first 8 rows whole
	LEAQ 32(R9), SI
	LEAQ (R8)(R10*1), DI
	TRANSPOSE8           // src (0, 1) to dst (1, 0)
	LEAQ 32(R9)(R13*1), SI
	LEAQ 32(R8)(R10*1), DI
	TRANSPOSE8           // (1, 1)
	ADDQ $64, R9         // the next block of src
	LEAQ (R8)(R10*2), R8 // and of dst
	DECQ R14
	JNZ  t2block

t2done:
	VZEROUPPER
	RET
