# One-off probe: does cuDNN run ResNet-18's convolutions faster channels-last?
import sys, time, json, torch, torch.nn as nn
import torch.nn.functional as F
dev = 'cuda'
torch.backends.cudnn.benchmark = True
shapes = [(3,64,224,7,2,3),(64,64,56,3,1,1),(64,128,56,3,2,1),(64,128,56,1,2,0),(128,128,28,3,1,1),
          (128,256,28,3,2,1),(256,256,14,3,1,1),(256,512,14,3,2,1),(512,512,7,3,1,1)]
def timeit(f, reps=8):
    for _ in range(3): f()
    torch.cuda.synchronize(); s=torch.cuda.Event(enable_timing=True); e=torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps): f()
    e.record(); torch.cuda.synchronize(); return s.elapsed_time(e)/reps
for prec in ['tf32','bf16']:
    torch.backends.cudnn.allow_tf32 = prec == 'tf32'
    dt = torch.bfloat16 if prec == 'bf16' else torch.float32
    for (c,oc,h,k,s,p) in shapes:
        row = []
        for cl in (False, True):
            fmt = torch.channels_last if cl else torch.contiguous_format
            x = torch.randn(256,c,h,h,device=dev,dtype=dt).to(memory_format=fmt).requires_grad_(c != 3)
            conv = nn.Conv2d(c,oc,k,s,p,bias=False).to(dev, dt).to(memory_format=fmt)
            y = conv(x); g = torch.randn_like(y)
            fwd = timeit(lambda: conv(x))
            both = timeit(lambda: conv(x).backward(g))
            row.append((fwd, both-fwd))
            del x, conv, y, g
        print(f"{prec} conv {c}->{oc} {h}x{h} k{k} s{s}: nchw fwd {row[0][0]:.3f} bwd {row[0][1]:.3f} | nhwc fwd {row[1][0]:.3f} bwd {row[1][1]:.3f} ms", flush=True)
# elementwise/bn costs: BN fwd+bwd on 256x64x56x56 in each layout and dtype
for dt in (torch.float32, torch.bfloat16):
    for cl in (False, True):
        fmt = torch.channels_last if cl else torch.contiguous_format
        x = torch.randn(256,64,56,56,device=dev,dtype=dt).to(memory_format=fmt).requires_grad_()
        bn = nn.BatchNorm2d(64).to(dev)
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=dt == torch.bfloat16):
            y = bn(x)
        g = torch.randn_like(y)
        def f():
            with torch.autocast('cuda', dtype=torch.bfloat16, enabled=dt == torch.bfloat16):
                return bn(x)
        fwd = timeit(f); both = timeit(lambda: f().backward(g))
        print(f"bn 256x64x56x56 {dt} channels_last={cl}: fwd {fwd:.3f} bwd {both-fwd:.3f} ms out {y.dtype}", flush=True)
