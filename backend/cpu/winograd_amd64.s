#include "textflag.h"

// The AVX-512 kernels of Winograd F(2×2, 3×3) convolutions (winograd.go):
// the input, output and output-gradient transforms, 16 channels per
// vector, and the two matrix-product micro-kernels. Each does what its Go
// reference does, in the same order of operations.

// INROW loads row p of a 4×4 tile (columns 0, R9, 2·R9, R10 bytes on)
// into Z0–Z3 and combines its columns: h0 = d0−d2, h1 = d1+d2,
// h2 = d2−d1, h3 = d1−d3.
#define INROW(p, h0, h1, h2, h3) \
	VMOVUPS (p), Z0; VMOVUPS (p)(R9*1), Z1; VMOVUPS (p)(R9*2), Z2; VMOVUPS (p)(R10*1), Z3 \
	VSUBPS  Z2, Z0, h0; VADDPS Z2, Z1, h1; VSUBPS Z1, Z2, h2; VSUBPS Z3, Z1, h3

// INCOL combines column s of the four rows (h0–h3 of rows 0–3) and stores
// the four results at BX + q·4·vPlane for q < 4 (0, R13, R14, R15 bytes
// on), then steps BX to the next column's plane.
#define INCOL(h0, h1, h2, h3) \
	VSUBPS  h2, h0, Z4; VADDPS h2, h1, Z5; VSUBPS h1, h2, Z6; VSUBPS h3, h1, Z7 \
	VMOVUPS Z4, (BX); VMOVUPS Z5, (BX)(R13*1); VMOVUPS Z6, (BX)(R14*1); VMOVUPS Z7, (BX)(R15*1) \
	ADDQ    R12, BX

// func winogradInputAVX512(n int, x *float32, xRow, xCol int, v *float32, vStep, vPlane int)
//
// As winogradInputGo: Bᵀ·d·B of n tiles, 2·xCol floats apart.
TEXT ·winogradInputAVX512(SB), NOSPLIT, $0-56
	MOVQ n+0(FP), CX
	MOVQ x+8(FP), SI
	MOVQ xRow+16(FP), R8
	SHLQ $2, R8
	MOVQ xCol+24(FP), R9
	SHLQ $2, R9
	LEAQ (R9)(R9*2), R10 // three columns
	MOVQ v+32(FP), DI
	MOVQ vStep+40(FP), R11
	SHLQ $2, R11
	MOVQ vPlane+48(FP), R12
	SHLQ $2, R12
	MOVQ R12, R13
	SHLQ $2, R13         // 4 planes
	LEAQ (R13)(R13*1), R14 // 8 planes
	LEAQ (R14)(R13*1), R15 // 12 planes
	TESTQ CX, CX
	JE    indone

intile:
	MOVQ  SI, AX
	INROW(AX, Z16, Z17, Z18, Z19)
	ADDQ  R8, AX
	INROW(AX, Z20, Z21, Z22, Z23)
	ADDQ  R8, AX
	INROW(AX, Z24, Z25, Z26, Z27)
	ADDQ  R8, AX
	INROW(AX, Z28, Z29, Z30, Z31)
	MOVQ  DI, BX
	INCOL(Z16, Z20, Z24, Z28)
	INCOL(Z17, Z21, Z25, Z29)
	INCOL(Z18, Z22, Z26, Z30)
	INCOL(Z19, Z23, Z27, Z31)
	LEAQ  (SI)(R9*2), SI
	ADDQ  R11, DI
	DECQ  CX
	JNZ   intile

indone:
	VZEROUPPER
	RET

// OUTCOL loads column s of the 4×4 tile m (rows at BX + q·4·mPlane, 0,
// R10, R11, R12 bytes on) and combines its rows: s0 = m0+m1+m2,
// s1 = m1−m2−m3; then steps BX to the next column's plane.
#define OUTCOL(s0, s1) \
	VMOVUPS (BX), Z0; VMOVUPS (BX)(R10*1), Z1; VMOVUPS (BX)(R11*1), Z2; VMOVUPS (BX)(R12*1), Z3 \
	VADDPS  Z1, Z0, s0; VADDPS Z2, s0, s0; VSUBPS Z2, Z1, s1; VSUBPS Z3, s1, s1 \
	ADDQ    R9, BX

// func winogradOutputAVX512(n int, m *float32, mStep, mPlane int, y *float32, yRow, yCol int)
//
// As winogradOutputGo: Aᵀ·m·A of n tiles, written 2·yCol floats apart.
TEXT ·winogradOutputAVX512(SB), NOSPLIT, $0-56
	MOVQ n+0(FP), CX
	MOVQ m+8(FP), SI
	MOVQ mStep+16(FP), R8
	SHLQ $2, R8
	MOVQ mPlane+24(FP), R9
	SHLQ $2, R9
	MOVQ R9, R10
	SHLQ $2, R10           // 4 planes
	LEAQ (R10)(R10*1), R11 // 8 planes
	LEAQ (R11)(R10*1), R12 // 12 planes
	MOVQ y+32(FP), DI
	MOVQ yRow+40(FP), R13
	SHLQ $2, R13
	MOVQ yCol+48(FP), R14
	SHLQ $2, R14
	TESTQ CX, CX
	JE    outdone

outtile:
	MOVQ    SI, BX
	OUTCOL(Z16, Z20)
	OUTCOL(Z17, Z21)
	OUTCOL(Z18, Z22)
	OUTCOL(Z19, Z23)
	VADDPS  Z17, Z16, Z4
	VADDPS  Z18, Z4, Z4   // y00 = s0[0]+s0[1]+s0[2]
	VSUBPS  Z18, Z17, Z5
	VSUBPS  Z19, Z5, Z5   // y01 = s0[1]−s0[2]−s0[3]
	VADDPS  Z21, Z20, Z6
	VADDPS  Z22, Z6, Z6   // y10
	VSUBPS  Z22, Z21, Z7
	VSUBPS  Z23, Z7, Z7   // y11
	MOVQ    DI, AX
	VMOVUPS Z4, (AX)
	VMOVUPS Z5, (AX)(R14*1)
	ADDQ    R13, AX
	VMOVUPS Z6, (AX)
	VMOVUPS Z7, (AX)(R14*1)
	ADDQ    R8, SI
	LEAQ    (DI)(R14*2), DI
	DECQ    CX
	JNZ     outtile

outdone:
	VZEROUPPER
	RET

// LOADROWS8 loads Z0–Z7 from the 8 rows of 16 floats at R9, R10 bytes
// apart (using R15); STOREROWS8 stores them there.
#define LOADROWS8 \
	MOVQ    R9, R15 \
	VMOVUPS (R15), Z0; ADDQ R10, R15; VMOVUPS (R15), Z1; ADDQ R10, R15 \
	VMOVUPS (R15), Z2; ADDQ R10, R15; VMOVUPS (R15), Z3; ADDQ R10, R15 \
	VMOVUPS (R15), Z4; ADDQ R10, R15; VMOVUPS (R15), Z5; ADDQ R10, R15 \
	VMOVUPS (R15), Z6; ADDQ R10, R15; VMOVUPS (R15), Z7

#define STOREROWS8 \
	MOVQ    R9, R15 \
	VMOVUPS Z0, (R15); ADDQ R10, R15; VMOVUPS Z1, (R15); ADDQ R10, R15 \
	VMOVUPS Z2, (R15); ADDQ R10, R15; VMOVUPS Z3, (R15); ADDQ R10, R15 \
	VMOVUPS Z4, (R15); ADDQ R10, R15; VMOVUPS Z5, (R15); ADDQ R10, R15 \
	VMOVUPS Z6, (R15); ADDQ R10, R15; VMOVUPS Z7, (R15)

// func winogradGemmAVX512(blocks, k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)
//
// As winogradGemmGo: blocks of 8 rows of c, 16 wide. Z0–Z7 accumulate a
// block's rows, Z8 holds a row of b, and a's elements (rows lda floats
// apart) are broadcast by the multiply-adds themselves.
TEXT ·winogradGemmAVX512(SB), NOSPLIT, $0-64
	MOVQ blocks+0(FP), CX
	MOVQ k+8(FP), DX
	MOVQ a+16(FP), SI
	MOVQ lda+24(FP), R12
	SHLQ $2, R12
	LEAQ (R12)(R12*2), R13 // three rows of a
	MOVQ b+32(FP), DI
	MOVQ ldb+40(FP), R8
	SHLQ $2, R8
	MOVQ c+48(FP), R9
	MOVQ ldc+56(FP), R10
	SHLQ $2, R10
	TESTQ CX, CX
	JE    gdone

gblock:
	VXORPS Z0, Z0, Z0
	VXORPS Z1, Z1, Z1
	VXORPS Z2, Z2, Z2
	VXORPS Z3, Z3, Z3
	VXORPS Z4, Z4, Z4
	VXORPS Z5, Z5, Z5
	VXORPS Z6, Z6, Z6
	VXORPS Z7, Z7, Z7
	MOVQ   SI, AX
	LEAQ   (SI)(R12*4), BX // row 4 of the block
	MOVQ   DI, R11
	MOVQ   DX, R14
	TESTQ  R14, R14
	JE     gstore

gloop:
	VMOVUPS          (R11), Z8
	VFMADD231PS.BCST (AX), Z8, Z0
	VFMADD231PS.BCST (AX)(R12*1), Z8, Z1
	VFMADD231PS.BCST (AX)(R12*2), Z8, Z2
	VFMADD231PS.BCST (AX)(R13*1), Z8, Z3
	VFMADD231PS.BCST (BX), Z8, Z4
	VFMADD231PS.BCST (BX)(R12*1), Z8, Z5
	VFMADD231PS.BCST (BX)(R12*2), Z8, Z6
	VFMADD231PS.BCST (BX)(R13*1), Z8, Z7
	ADDQ             $4, AX
	ADDQ             $4, BX
	ADDQ             R8, R11
	DECQ             R14
	JNZ              gloop

gstore:
	STOREROWS8
	LEAQ    (SI)(R12*8), SI
	LEAQ    (R9)(R10*8), R9
	DECQ    CX
	JNZ     gblock

gdone:
	VZEROUPPER
	RET

// GRADROW stores row (p, q) of A·dy, expanded by Aᵀ: p, p+q, p−q, −q at
// BX + s·mPlane for s < 4 (0, R9, 2·R9, R10 bytes on), −q by flipping
// the sign bit with the mask in Z31; then steps BX four planes on.
#define GRADROW(p, q) \
	VADDPS  q, p, Z10; VSUBPS q, p, Z11; VPXORD Z31, q, Z12 \
	VMOVUPS p, (BX); VMOVUPS Z10, (BX)(R9*1); VMOVUPS Z11, (BX)(R9*2); VMOVUPS Z12, (BX)(R10*1) \
	ADDQ    R11, BX

// func winogradGradAVX512(n int, dy *float32, dyRow, dyCol int, m *float32, mStep, mPlane int)
//
// As winogradGradGo: A·dy·Aᵀ of n 2×2 blocks, 2·dyCol floats apart.
TEXT ·winogradGradAVX512(SB), NOSPLIT, $0-56
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
	LEAQ         (R9)(R9*2), R10 // 3 planes
	LEAQ         (R9)(R10*1), R11 // 4 planes
	MOVL         $0x80000000, AX
	VPBROADCASTD AX, Z31
	TESTQ        CX, CX
	JE           gradone

gradtile:
	VMOVUPS (SI), Z0        // dy00
	VMOVUPS (SI)(R13*1), Z1 // dy01
	LEAQ    (SI)(R12*1), AX
	VMOVUPS (AX), Z2        // dy10
	VMOVUPS (AX)(R13*1), Z3 // dy11
	VADDPS  Z2, Z0, Z4
	VADDPS  Z3, Z1, Z5
	VSUBPS  Z2, Z0, Z6
	VSUBPS  Z3, Z1, Z7
	VPXORD  Z31, Z2, Z8
	VPXORD  Z31, Z3, Z9
	MOVQ    DI, BX
	GRADROW(Z0, Z1)
	GRADROW(Z4, Z5)
	GRADROW(Z6, Z7)
	GRADROW(Z8, Z9)
	LEAQ    (SI)(R13*2), SI
	ADDQ    R8, DI
	DECQ    CX
	JNZ     gradtile

gradone:
	VZEROUPPER
	RET

// func winogradFilterGemmAVX512(k, blocks int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)
//
// As winogradFilterGemmGo: 8 rows of c, blocks of 16 columns, each
// element adding Σ_p a[p·lda + i]·b[p·ldb + j] in p order. Z0–Z7 hold a
// block's rows, Z8 a row of b; the 8 elements of a's row p are
// broadcast by the multiply-adds.
TEXT ·winogradFilterGemmAVX512(SB), NOSPLIT, $0-64
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
	JE    fgdone

fgblock:
	LOADROWS8
	MOVQ    SI, AX
	MOVQ    DI, R11
	MOVQ    DX, R14
	TESTQ   R14, R14
	JE      fgstore

fgloop:
	VMOVUPS          (R11), Z8
	VFMADD231PS.BCST (AX), Z8, Z0
	VFMADD231PS.BCST 4(AX), Z8, Z1
	VFMADD231PS.BCST 8(AX), Z8, Z2
	VFMADD231PS.BCST 12(AX), Z8, Z3
	VFMADD231PS.BCST 16(AX), Z8, Z4
	VFMADD231PS.BCST 20(AX), Z8, Z5
	VFMADD231PS.BCST 24(AX), Z8, Z6
	VFMADD231PS.BCST 28(AX), Z8, Z7
	ADDQ             R12, AX
	ADDQ             R8, R11
	DECQ             R14
	JNZ              fgloop

fgstore:
	STOREROWS8
	ADDQ    $64, DI
	ADDQ    $64, R9
	DECQ    CX
	JNZ     fgblock

fgdone:
	VZEROUPPER
	RET
