#include "textflag.h"

// AVX2 loops of the memory-bound float32 ops (see vector.go). Each
// processes n8·8 elements, n8 ≥ 1; the Go wrappers handle the tails.

// func reluAVX2(y, x *float32, n8 int)
// y = max(x, 0); NaN gives 0, as the Go loop.
TEXT ·reluAVX2(SB), NOSPLIT, $0-24
	MOVQ   y+0(FP), DI
	MOVQ   x+8(FP), SI
	MOVQ   n8+16(FP), CX
	VXORPS Y15, Y15, Y15

reluloop:
	VMOVUPS (SI), Y0
	VMAXPS  Y15, Y0, Y0 // the second source (0) when x is NaN
	VMOVUPS Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     reluloop
	VZEROUPPER
	RET

// func reluBackwardAVX2(dx, dy, y *float32, n8 int)
// dx = dy where y > 0, else 0.
TEXT ·reluBackwardAVX2(SB), NOSPLIT, $0-32
	MOVQ   dx+0(FP), DI
	MOVQ   dy+8(FP), SI
	MOVQ   y+16(FP), DX
	MOVQ   n8+24(FP), CX
	VXORPS Y15, Y15, Y15

relubloop:
	VMOVUPS (DX), Y1
	VCMPPS  $0x1e, Y15, Y1, Y1 // y > 0 (ordered, quiet)
	VANDPS  (SI), Y1, Y1
	VMOVUPS Y1, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	ADDQ    $32, DX
	DECQ    CX
	JNZ     relubloop
	VZEROUPPER
	RET

// func addAVX2(y, a, b *float32, n8 int)
// y = a + b.
TEXT ·addAVX2(SB), NOSPLIT, $0-32
	MOVQ y+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ n8+24(FP), CX

addloop:
	VMOVUPS (SI), Y0
	VADDPS  (DX), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	ADDQ    $32, DX
	DECQ    CX
	JNZ     addloop
	VZEROUPPER
	RET

// REDUCE4 adds the 4×4 doubles of Y0–Y3 into the low double of X0.
#define REDUCE4 \
	VADDPD       Y1, Y0, Y0 \
	VADDPD       Y3, Y2, Y2 \
	VADDPD       Y2, Y0, Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPD       X1, X0, X0 \
	VHADDPD      X0, X0, X0

// func sumF64AVX2(x *float32, n8 int) float64
// Σ x in float64, four partial sums per lane.
TEXT ·sumF64AVX2(SB), NOSPLIT, $0-24
	MOVQ   x+0(FP), SI
	MOVQ   n8+8(FP), CX
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	VXORPD Y2, Y2, Y2
	VXORPD Y3, Y3, Y3
	TESTQ  $1, CX
	JE     sumpairs
	VCVTPS2PD (SI), Y4
	VCVTPS2PD 16(SI), Y5
	VADDPD    Y4, Y0, Y0
	VADDPD    Y5, Y1, Y1
	ADDQ      $32, SI

sumpairs:
	SHRQ $1, CX
	JE   sumdone

sumloop:
	VCVTPS2PD (SI), Y4
	VCVTPS2PD 16(SI), Y5
	VCVTPS2PD 32(SI), Y6
	VCVTPS2PD 48(SI), Y7
	VADDPD    Y4, Y0, Y0
	VADDPD    Y5, Y1, Y1
	VADDPD    Y6, Y2, Y2
	VADDPD    Y7, Y3, Y3
	ADDQ      $64, SI
	DECQ      CX
	JNZ       sumloop

sumdone:
	REDUCE4
	VMOVSD X0, ret+16(FP)
	VZEROUPPER
	RET

// func sumSqDevF64AVX2(x *float32, n8 int, mu float64) float64
// Σ (x − mu)² in float64.
TEXT ·sumSqDevF64AVX2(SB), NOSPLIT, $0-32
	MOVQ         x+0(FP), SI
	MOVQ         n8+8(FP), CX
	VBROADCASTSD mu+16(FP), Y8
	VXORPD       Y0, Y0, Y0
	VXORPD       Y1, Y1, Y1
	VXORPD       Y2, Y2, Y2
	VXORPD       Y3, Y3, Y3
	TESTQ        $1, CX
	JE           sqpairs
	VCVTPS2PD    (SI), Y4
	VCVTPS2PD    16(SI), Y5
	VSUBPD       Y8, Y4, Y4
	VSUBPD       Y8, Y5, Y5
	VFMADD231PD  Y4, Y4, Y0
	VFMADD231PD  Y5, Y5, Y1
	ADDQ         $32, SI

sqpairs:
	SHRQ $1, CX
	JE   sqdone

sqloop:
	VCVTPS2PD   (SI), Y4
	VCVTPS2PD   16(SI), Y5
	VCVTPS2PD   32(SI), Y6
	VCVTPS2PD   48(SI), Y7
	VSUBPD      Y8, Y4, Y4
	VSUBPD      Y8, Y5, Y5
	VSUBPD      Y8, Y6, Y6
	VSUBPD      Y8, Y7, Y7
	VFMADD231PD Y4, Y4, Y0
	VFMADD231PD Y5, Y5, Y1
	VFMADD231PD Y6, Y6, Y2
	VFMADD231PD Y7, Y7, Y3
	ADDQ        $64, SI
	DECQ        CX
	JNZ         sqloop

sqdone:
	REDUCE4
	VMOVSD X0, ret+24(FP)
	VZEROUPPER
	RET

// func dySumsF64AVX2(dy, xhat *float32, n8 int) (sumDy, sumDyXhat float64)
// Σ dy and Σ dy·xhat in float64.
TEXT ·dySumsF64AVX2(SB), NOSPLIT, $0-40
	MOVQ   dy+0(FP), SI
	MOVQ   xhat+8(FP), DX
	MOVQ   n8+16(FP), CX
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	VXORPD Y2, Y2, Y2
	VXORPD Y3, Y3, Y3
	VXORPD Y8, Y8, Y8
	VXORPD Y9, Y9, Y9
	VXORPD Y10, Y10, Y10
	VXORPD Y11, Y11, Y11

dsloop:
	VCVTPS2PD   (SI), Y4
	VCVTPS2PD   16(SI), Y5
	VCVTPS2PD   (DX), Y6
	VCVTPS2PD   16(DX), Y7
	VADDPD      Y4, Y0, Y0
	VADDPD      Y5, Y1, Y1
	VFMADD231PD Y6, Y4, Y8
	VFMADD231PD Y7, Y5, Y9
	ADDQ        $32, SI
	ADDQ        $32, DX
	DECQ        CX
	JNZ         dsloop
	VADDPD      Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPD      X1, X0, X0
	VHADDPD     X0, X0, X0
	VMOVSD      X0, sumDy+24(FP)
	VADDPD      Y9, Y8, Y8
	VEXTRACTF128 $1, Y8, X9
	VADDPD      X9, X8, X8
	VHADDPD     X8, X8, X8
	VMOVSD      X8, sumDyXhat+32(FP)
	VZEROUPPER
	RET

// func bnNormalizeAVX2(y, xhat, x *float32, n8 int, mu, inv, gamma, beta float32)
// xhat = (x − mu)·inv, y = gamma·xhat + beta.
TEXT ·bnNormalizeAVX2(SB), NOSPLIT, $0-48
	MOVQ         y+0(FP), DI
	MOVQ         xhat+8(FP), R8
	MOVQ         x+16(FP), SI
	MOVQ         n8+24(FP), CX
	VBROADCASTSS mu+32(FP), Y12
	VBROADCASTSS inv+36(FP), Y13
	VBROADCASTSS gamma+40(FP), Y14
	VBROADCASTSS beta+44(FP), Y15

normloop:
	VMOVUPS     (SI), Y0
	VSUBPS      Y12, Y0, Y0
	VMULPS      Y13, Y0, Y0
	VMOVUPS     Y0, (R8)
	VMOVAPS     Y15, Y1
	VFMADD231PS Y14, Y0, Y1
	VMOVUPS     Y1, (DI)
	ADDQ        $32, SI
	ADDQ        $32, DI
	ADDQ        $32, R8
	DECQ        CX
	JNZ         normloop
	VZEROUPPER
	RET

// func bnDxAVX2(dx, dy, xhat *float32, n8 int, m, sumDy, sumDyXhat, k float32)
// dx = k·((m·dy − sumDy) − xhat·sumDyXhat).
TEXT ·bnDxAVX2(SB), NOSPLIT, $0-48
	MOVQ         dx+0(FP), DI
	MOVQ         dy+8(FP), SI
	MOVQ         xhat+16(FP), DX
	MOVQ         n8+24(FP), CX
	VBROADCASTSS m+32(FP), Y12
	VBROADCASTSS sumDy+36(FP), Y13
	VBROADCASTSS sumDyXhat+40(FP), Y14
	VBROADCASTSS k+44(FP), Y15

dxloop:
	VMULPS       (SI), Y12, Y0
	VSUBPS       Y13, Y0, Y0
	VMOVUPS      (DX), Y1
	VFNMADD231PS Y14, Y1, Y0
	VMULPS       Y15, Y0, Y0
	VMOVUPS      Y0, (DI)
	ADDQ         $32, SI
	ADDQ         $32, DI
	ADDQ         $32, DX
	DECQ         CX
	JNZ          dxloop
	VZEROUPPER
	RET

// The fused batch norm + ReLU keeps no xhat: its backward recomputes
// xhat = (x − mu)·inv and the ReLU mask gamma·xhat + beta > 0 with the
// same instructions as the forward pass, so both are the same bits.
// BNRELU leaves xhat in Y0 and gamma·xhat + beta in Y1 for the 8 values of
// x at SI, with mu, inv, gamma, beta broadcast in Y12–Y15.
#define BNRELU VMOVUPS (SI), Y0; VSUBPS Y12, Y0, Y0; VMULPS Y13, Y0, Y0; VMOVAPS Y15, Y1; VFMADD231PS Y14, Y0, Y1

// func bnNormalizeReLUAVX2(y, x *float32, n8 int, mu, inv, gamma, beta float32)
// y = max(gamma·(x − mu)·inv + beta, 0) (NaN gives 0).
TEXT ·bnNormalizeReLUAVX2(SB), NOSPLIT, $0-40
	MOVQ         y+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         n8+16(FP), CX
	VBROADCASTSS mu+24(FP), Y12
	VBROADCASTSS inv+28(FP), Y13
	VBROADCASTSS gamma+32(FP), Y14
	VBROADCASTSS beta+36(FP), Y15
	VXORPS       Y11, Y11, Y11

normrloop:
	BNRELU
	VMAXPS  Y11, Y1, Y1
	VMOVUPS Y1, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     normrloop
	VZEROUPPER
	RET

// DYSUMS adds the 8 masked dy in Y1 and xhat in Y0 to the float64 sums
// Σdy (Y2, Y3) and Σdy·xhat (Y8, Y9), as dySumsF64AVX2 adds them; it
// leaves Y0 and Y1 changed. DYSUMS_TOTALS reduces the sums into the low
// doubles of X2 and X8.
#define DYSUMS \
	VCVTPS2PD    X1, Y4 \
	VEXTRACTF128 $1, Y1, X1 \
	VCVTPS2PD    X1, Y5 \
	VCVTPS2PD    X0, Y6 \
	VEXTRACTF128 $1, Y0, X0 \
	VCVTPS2PD    X0, Y7 \
	VADDPD       Y4, Y2, Y2 \
	VADDPD       Y5, Y3, Y3 \
	VFMADD231PD  Y6, Y4, Y8 \
	VFMADD231PD  Y7, Y5, Y9

#define DYSUMS_TOTALS \
	VADDPD       Y3, Y2, Y2 \
	VEXTRACTF128 $1, Y2, X3 \
	VADDPD       X3, X2, X2 \
	VHADDPD      X2, X2, X2 \
	VADDPD       Y9, Y8, Y8 \
	VEXTRACTF128 $1, Y8, X9 \
	VADDPD       X9, X8, X8 \
	VHADDPD      X8, X8, X8

// func dySumsReLUF64AVX2(dy, x *float32, n8 int, mu, inv, gamma, beta float32) (sumDy, sumDyXhat float64)
// dySumsF64AVX2 of dy·[gamma·xhat + beta > 0] and the recomputed xhat.
TEXT ·dySumsReLUF64AVX2(SB), NOSPLIT, $0-56
	MOVQ         dy+0(FP), DX
	MOVQ         x+8(FP), SI
	MOVQ         n8+16(FP), CX
	VBROADCASTSS mu+24(FP), Y12
	VBROADCASTSS inv+28(FP), Y13
	VBROADCASTSS gamma+32(FP), Y14
	VBROADCASTSS beta+36(FP), Y15
	VXORPS       Y11, Y11, Y11
	VXORPD       Y2, Y2, Y2
	VXORPD       Y3, Y3, Y3
	VXORPD       Y8, Y8, Y8
	VXORPD       Y9, Y9, Y9

dsrloop:
	BNRELU
	VCMPPS       $0x1e, Y11, Y1, Y1 // gamma·xhat + beta > 0
	VANDPS       (DX), Y1, Y1       // dy there, else 0
	DYSUMS
	ADDQ         $32, SI
	ADDQ         $32, DX
	DECQ         CX
	JNZ          dsrloop
	DYSUMS_TOTALS
	VMOVSD       X2, sumDy+40(FP)
	VMOVSD       X8, sumDyXhat+48(FP)
	VZEROUPPER
	RET

// func bnDxReLUAVX2(dx, dy, x *float32, n8 int, mu, inv, gamma, beta, m, sumDy, sumDyXhat, k float32)
// bnDxAVX2 of dy·[gamma·xhat + beta > 0] and the recomputed xhat.
TEXT ·bnDxReLUAVX2(SB), NOSPLIT, $0-64
	MOVQ         dx+0(FP), DI
	MOVQ         dy+8(FP), DX
	MOVQ         x+16(FP), SI
	MOVQ         n8+24(FP), CX
	VBROADCASTSS mu+32(FP), Y12
	VBROADCASTSS inv+36(FP), Y13
	VBROADCASTSS gamma+40(FP), Y14
	VBROADCASTSS beta+44(FP), Y15
	VBROADCASTSS m+48(FP), Y7
	VBROADCASTSS sumDy+52(FP), Y8
	VBROADCASTSS sumDyXhat+56(FP), Y9
	VBROADCASTSS k+60(FP), Y10
	VXORPS       Y11, Y11, Y11

dxrloop:
	BNRELU
	VCMPPS       $0x1e, Y11, Y1, Y1
	VANDPS       (DX), Y1, Y1
	VMULPS       Y1, Y7, Y2
	VSUBPS       Y8, Y2, Y2
	VFNMADD231PS Y9, Y0, Y2
	VMULPS       Y10, Y2, Y2
	VMOVUPS      Y2, (DI)
	ADDQ         $32, SI
	ADDQ         $32, DI
	ADDQ         $32, DX
	DECQ         CX
	JNZ          dxrloop
	VZEROUPPER
	RET

// func addReLUAVX2(y, a, b *float32, n8 int)
// y = max(a + b, 0) (NaN gives 0).
TEXT ·addReLUAVX2(SB), NOSPLIT, $0-32
	MOVQ   y+0(FP), DI
	MOVQ   a+8(FP), SI
	MOVQ   b+16(FP), DX
	MOVQ   n8+24(FP), CX
	VXORPS Y15, Y15, Y15

addrloop:
	VMOVUPS (SI), Y0
	VADDPS  (DX), Y0, Y0
	VMAXPS  Y15, Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	ADDQ    $32, DX
	DECQ    CX
	JNZ     addrloop
	VZEROUPPER
	RET

// func padRowsAVX2(dst, src *float32, rows, w8, wp, pad int)
// For each r < rows: pad zeros at dst + r·wp, then the 8·w8 floats of row
// r of src (rows contiguous) after them. rows, w8 ≥ 1.
TEXT ·padRowsAVX2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ rows+16(FP), CX
	MOVQ w8+24(FP), DX
	MOVQ wp+32(FP), R8
	SHLQ $2, R8         // row stride, bytes
	MOVQ pad+40(FP), R9

padrow:
	MOVQ DI, R11
	MOVQ R9, R10

padzero:
	TESTQ R10, R10
	JE    padcopy
	MOVL  $0, (R11)
	ADDQ  $4, R11
	DECQ  R10
	JMP   padzero

padcopy:
	MOVQ DX, R10

padcol:
	VMOVUPS (SI), Y0
	VMOVUPS Y0, (R11)
	ADDQ    $32, SI
	ADDQ    $32, R11
	DECQ    R10
	JNZ     padcol
	ADDQ    R8, DI
	DECQ    CX
	JNZ     padrow
	VZEROUPPER
	RET

// func deinterleaveAVX2(even, odd, src *float32, rows, n8, ld, ls int)
//
// For each row r < rows: even[r·ld + j] = src[r·ls + 2j] and odd[r·ld + j]
// = src[r·ls + 2j + 1] for j < 8·n8. Each 16 source floats are shuffled
// within 128-bit lanes, then their 64-bit pairs put in order.
TEXT ·deinterleaveAVX2(SB), NOSPLIT, $0-56
	MOVQ even+0(FP), DI
	MOVQ odd+8(FP), R8
	MOVQ src+16(FP), SI
	MOVQ rows+24(FP), CX
	MOVQ n8+32(FP), DX
	MOVQ ld+40(FP), R9
	SHLQ $2, R9
	MOVQ ls+48(FP), R10
	SHLQ $2, R10

deintrow:
	MOVQ DI, R11
	MOVQ R8, R12
	MOVQ SI, R13
	MOVQ DX, AX

deint:
	VMOVUPS (R13), Y0
	VMOVUPS 32(R13), Y1
	VSHUFPS $0x88, Y1, Y0, Y2 // s0 s2 s8 s10 | s4 s6 s12 s14
	VSHUFPS $0xDD, Y1, Y0, Y3 // s1 s3 s9 s11 | s5 s7 s13 s15
	VPERMPD $0xD8, Y2, Y2     // s0 s2 s4 s6 s8 s10 s12 s14
	VPERMPD $0xD8, Y3, Y3
	VMOVUPS Y2, (R11)
	VMOVUPS Y3, (R12)
	ADDQ    $64, R13
	ADDQ    $32, R11
	ADDQ    $32, R12
	DECQ    AX
	JNZ     deint
	ADDQ    R9, DI
	ADDQ    R9, R8
	ADDQ    R10, SI
	DECQ    CX
	JNZ     deintrow
	VZEROUPPER
	RET

// func interleaveAVX2(dst, even, odd *float32, rows, n8, ld, le, lo int)
//
// For each row r < rows: dst[r·ld + 2j] = even[r·le + j] and
// dst[r·ld + 2j + 1] = odd[r·lo + j] for j < 8·n8.
TEXT ·interleaveAVX2(SB), NOSPLIT, $0-64
	MOVQ dst+0(FP), DI
	MOVQ even+8(FP), SI
	MOVQ odd+16(FP), R8
	MOVQ rows+24(FP), CX
	MOVQ n8+32(FP), DX
	MOVQ ld+40(FP), R9
	SHLQ $2, R9
	MOVQ le+48(FP), R10
	SHLQ $2, R10
	MOVQ lo+56(FP), R14
	SHLQ $2, R14

interrow:
	MOVQ DI, R11
	MOVQ SI, R12
	MOVQ R8, R13
	MOVQ DX, AX

inter:
	VMOVUPS    (R12), Y0
	VMOVUPS    (R13), Y1
	VUNPCKLPS  Y1, Y0, Y2        // e0 o0 e1 o1 | e4 o4 e5 o5
	VUNPCKHPS  Y1, Y0, Y3        // e2 o2 e3 o3 | e6 o6 e7 o7
	VPERM2F128 $0x20, Y3, Y2, Y4 // e0 o0 … e3 o3
	VPERM2F128 $0x31, Y3, Y2, Y5 // e4 o4 … e7 o7
	VMOVUPS    Y4, (R11)
	VMOVUPS    Y5, 32(R11)
	ADDQ       $32, R12
	ADDQ       $32, R13
	ADDQ       $64, R11
	DECQ       AX
	JNZ        inter
	ADDQ       R9, DI
	ADDQ       R10, SI
	ADDQ       R14, R8
	DECQ       CX
	JNZ        interrow
	VZEROUPPER
	RET

// The residual block's end (backend.FusedResidual): batch norm, the
// shortcut added, ReLU; and its backward, which takes the ReLU's mask from
// the block's output and recomputes xhat from x with the instructions of
// BNRELU, so that every value has the bits of the unfused ops.

// func bnNormalizeAddReLUAVX2(y, x, skip *float32, n8 int, mu, inv, gamma, beta float32)
// y = max(gamma·(x − mu)·inv + beta + skip, 0) (NaN gives 0).
TEXT ·bnNormalizeAddReLUAVX2(SB), NOSPLIT, $0-48
	MOVQ         y+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         skip+16(FP), DX
	MOVQ         n8+24(FP), CX
	VBROADCASTSS mu+32(FP), Y12
	VBROADCASTSS inv+36(FP), Y13
	VBROADCASTSS gamma+40(FP), Y14
	VBROADCASTSS beta+44(FP), Y15
	VXORPS       Y11, Y11, Y11

normaddloop:
	BNRELU
	VADDPS  (DX), Y1, Y1
	VMAXPS  Y11, Y1, Y1
	VMOVUPS Y1, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DX
	ADDQ    $32, DI
	DECQ    CX
	JNZ     normaddloop
	VZEROUPPER
	RET

// func dySumsMaskedF64AVX2(dSum, dy, out, x *float32, n8 int, mu, inv float32) (sumDy, sumDyXhat float64)
// dSum = dy where out > 0, else 0; returns Σ dSum and Σ dSum·xhat with
// xhat = (x − mu)·inv, summed as dySumsF64AVX2 sums.
TEXT ·dySumsMaskedF64AVX2(SB), NOSPLIT, $0-64
	MOVQ         dSum+0(FP), DI
	MOVQ         dy+8(FP), DX
	MOVQ         out+16(FP), R8
	MOVQ         x+24(FP), SI
	MOVQ         n8+32(FP), CX
	VBROADCASTSS mu+40(FP), Y12
	VBROADCASTSS inv+44(FP), Y13
	VXORPS       Y11, Y11, Y11
	VXORPD       Y2, Y2, Y2
	VXORPD       Y3, Y3, Y3
	VXORPD       Y8, Y8, Y8
	VXORPD       Y9, Y9, Y9

dsmloop:
	VMOVUPS      (SI), Y0
	VSUBPS       Y12, Y0, Y0
	VMULPS       Y13, Y0, Y0        // xhat
	VMOVUPS      (R8), Y1
	VCMPPS       $0x1e, Y11, Y1, Y1 // out > 0 (ordered, quiet)
	VANDPS       (DX), Y1, Y1       // dy there, else 0
	VMOVUPS      Y1, (DI)
	DYSUMS
	ADDQ         $32, SI
	ADDQ         $32, DX
	ADDQ         $32, R8
	ADDQ         $32, DI
	DECQ         CX
	JNZ          dsmloop
	DYSUMS_TOTALS
	VMOVSD       X2, sumDy+48(FP)
	VMOVSD       X8, sumDyXhat+56(FP)
	VZEROUPPER
	RET

// func bnDxRecomputeAVX2(dx, dy, x *float32, n8 int, mu, inv, m, sumDy, sumDyXhat, k float32)
// dx = k·((m·dy − sumDy) − xhat·sumDyXhat), as bnDxAVX2, with xhat =
// (x − mu)·inv.
TEXT ·bnDxRecomputeAVX2(SB), NOSPLIT, $0-56
	MOVQ         dx+0(FP), DI
	MOVQ         dy+8(FP), DX
	MOVQ         x+16(FP), SI
	MOVQ         n8+24(FP), CX
	VBROADCASTSS mu+32(FP), Y10
	VBROADCASTSS inv+36(FP), Y11
	VBROADCASTSS m+40(FP), Y12
	VBROADCASTSS sumDy+44(FP), Y13
	VBROADCASTSS sumDyXhat+48(FP), Y14
	VBROADCASTSS k+52(FP), Y15

dxrcloop:
	VMOVUPS      (SI), Y1
	VSUBPS       Y10, Y1, Y1
	VMULPS       Y11, Y1, Y1 // xhat
	VMULPS       (DX), Y12, Y0
	VSUBPS       Y13, Y0, Y0
	VFNMADD231PS Y14, Y1, Y0
	VMULPS       Y15, Y0, Y0
	VMOVUPS      Y0, (DI)
	ADDQ         $32, SI
	ADDQ         $32, DI
	ADDQ         $32, DX
	DECQ         CX
	JNZ          dxrcloop
	VZEROUPPER
	RET

// func maxPool2x2AVX2(y, arg, r0, r1, idx *float32, n8 int, w float32)
//
// 2×2 windows at stride 2 over rows r0 and r1 (w apart in their plane):
// for j < 8·n8, y[j] is the largest of r0[2j], r0[2j+1], r1[2j],
// r1[2j+1], the first in that order on ties (a later one wins only when
// greater, so a NaN wins only when first), and arg[j] its index in the
// plane: the index of r0[2j] plus 0, 1, w or w + 1. idx holds the indices
// of r0[0], r0[2], …, r0[14].
TEXT ·maxPool2x2AVX2(SB), NOSPLIT, $0-52
	MOVQ         y+0(FP), DI
	MOVQ         arg+8(FP), R8
	MOVQ         r0+16(FP), SI
	MOVQ         r1+24(FP), DX
	MOVQ         idx+32(FP), AX
	VMOVUPS      (AX), Y11      // the even columns' indices
	MOVQ         n8+40(FP), CX
	VBROADCASTSS w+48(FP), Y9
	MOVL         $0x3f800000, AX // 1.0
	MOVQ         AX, X8
	VBROADCASTSS X8, Y8
	VADDPS       Y8, Y9, Y10     // w + 1
	MOVL         $0x41800000, AX // 16.0: the next 8 outputs' columns
	MOVQ         AX, X14
	VBROADCASTSS X14, Y14
	VXORPS       Y13, Y13, Y13

mploop:
	VMOVUPS   (SI), Y0
	VMOVUPS   32(SI), Y1
	VSHUFPS   $0x88, Y1, Y0, Y2
	VSHUFPS   $0xDD, Y1, Y0, Y3
	VPERMPD   $0xD8, Y2, Y2         // r0 even columns: the best so far
	VPERMPD   $0xD8, Y3, Y3         // r0 odd columns
	VMOVUPS   (DX), Y0
	VMOVUPS   32(DX), Y1
	VSHUFPS   $0x88, Y1, Y0, Y4
	VSHUFPS   $0xDD, Y1, Y0, Y5
	VPERMPD   $0xD8, Y4, Y4         // r1 even columns
	VPERMPD   $0xD8, Y5, Y5         // r1 odd columns
	VMOVAPS   Y13, Y6               // offset 0
	VCMPPS    $0x1e, Y2, Y3, Y7     // r0 odd > best (ordered, quiet)
	VBLENDVPS Y7, Y3, Y2, Y2
	VBLENDVPS Y7, Y8, Y6, Y6
	VCMPPS    $0x1e, Y2, Y4, Y7
	VBLENDVPS Y7, Y4, Y2, Y2
	VBLENDVPS Y7, Y9, Y6, Y6
	VCMPPS    $0x1e, Y2, Y5, Y7
	VBLENDVPS Y7, Y5, Y2, Y2
	VBLENDVPS Y7, Y10, Y6, Y6
	VADDPS    Y11, Y6, Y6
	VMOVUPS   Y2, (DI)
	VMOVUPS   Y6, (R8)
	VADDPS    Y14, Y11, Y11
	ADDQ      $64, SI
	ADDQ      $64, DX
	ADDQ      $32, DI
	ADDQ      $32, R8
	DECQ      CX
	JNZ       mploop
	VZEROUPPER
	RET

// func adamAVX2(w, grad, m1, m2 *float32, n8 int, b1, c1, b2, c2, bc2Sqrt, eps, stepSize, wd float32)
//
// adamPart's update, 8 weights at a time with the same float32 operations
// in the same order (no fused multiply-add), so every bit is the same:
// gi = g + wd·w (only when wd ≠ 0); m = b1·m + c1·gi; v = b2·v + (c2·gi)·gi;
// w −= (stepSize·m) / (sqrt(v)/bc2Sqrt + eps), with c1 = 1 − b1 and
// c2 = 1 − b2.
TEXT ·adamAVX2(SB), NOSPLIT, $0-72
	MOVQ         w+0(FP), DI
	MOVQ         grad+8(FP), SI
	MOVQ         m1+16(FP), DX
	MOVQ         m2+24(FP), R8
	MOVQ         n8+32(FP), CX
	VBROADCASTSS b1+40(FP), Y8
	VBROADCASTSS c1+44(FP), Y9
	VBROADCASTSS b2+48(FP), Y10
	VBROADCASTSS c2+52(FP), Y11
	VBROADCASTSS bc2Sqrt+56(FP), Y12
	VBROADCASTSS eps+60(FP), Y13
	VBROADCASTSS stepSize+64(FP), Y14
	VBROADCASTSS wd+68(FP), Y15
	MOVL         wd+68(FP), R9
	SHLL         $1, R9 // drop the sign: zero when wd is ±0

adamloop:
	VMOVUPS (SI), Y0    // gi
	VMOVUPS (DI), Y1    // w
	TESTL   R9, R9
	JE      adamnowd
	VMULPS  Y1, Y15, Y2
	VADDPS  Y2, Y0, Y0

adamnowd:
	VMULPS  (DX), Y8, Y2
	VMULPS  Y0, Y9, Y3
	VADDPS  Y3, Y2, Y2  // m
	VMOVUPS Y2, (DX)
	VMULPS  (R8), Y10, Y3
	VMULPS  Y0, Y11, Y4
	VMULPS  Y0, Y4, Y4
	VADDPS  Y4, Y3, Y3  // v
	VMOVUPS Y3, (R8)
	VSQRTPS Y3, Y3
	VDIVPS  Y12, Y3, Y3
	VADDPS  Y13, Y3, Y3 // denom
	VMULPS  Y2, Y14, Y2
	VDIVPS  Y3, Y2, Y2
	VSUBPS  Y2, Y1, Y1
	VMOVUPS Y1, (DI)
	ADDQ    $32, DI
	ADDQ    $32, SI
	ADDQ    $32, DX
	ADDQ    $32, R8
	DECQ    CX
	JNZ     adamloop
	VZEROUPPER
	RET

// func addScalarAVX2(y *float32, n8 int, b float32)
// y += b, 8 at a time.
TEXT ·addScalarAVX2(SB), NOSPLIT, $0-20
	MOVQ         y+0(FP), DI
	MOVQ         n8+8(FP), CX
	VBROADCASTSS b+16(FP), Y1

addsloop:
	VADDPS  (DI), Y1, Y0
	VMOVUPS Y0, (DI)
	ADDQ    $32, DI
	DECQ    CX
	JNZ     addsloop
	VZEROUPPER
	RET
