// Runs a kernel launch on the host (emu.h): the blocks one after another,
// the threads of a block as fibers on the calling OS thread. A fiber runs
// until it finishes or waits at __syncthreads or a shuffle; when none can
// run, the scheduler releases the waiters whose partners have all arrived,
// or reports the launch as failed if none can be released (a barrier or
// shuffle some named thread never reaches). Fibers switch stacks with a
// few instructions of x86-64 assembly: a thread costs two switches.

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fiber.h"

extern "C" void emu_switch(void** save_sp, void* next_sp);
extern "C" void emu_fiber_start();

// emu_switch saves the callee-saved registers on the current stack, stores
// the stack pointer in *save_sp, and resumes the stack next_sp saved.
// emu_fiber_start is where a new fiber's first switch returns to: it calls
// the entry function (in r12) with the fiber (in rbx).
asm(R"(
    .pushsection .text
    .globl emu_switch
    .hidden emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch

    .globl emu_fiber_start
    .hidden emu_fiber_start
    .type emu_fiber_start, @function
emu_fiber_start:
    movq %rbx, %rdi
    callq *%r12
    ud2
    .size emu_fiber_start, .-emu_fiber_start
    .popsection
)");

namespace emu {

thread_local thread_state* current_thread;

namespace {

enum class waiting { no, block, warp, done, failed };

struct fiber {
    void* sp;
    thread_state state;
    waiting wait;
    unsigned mask;      // at a shuffle: the lanes it names
    unsigned source;    // at a shuffle: the lane it reads
    unsigned shuffle;   // at a shuffle: its kind, width and value size (emu::shuffle_of)
    uint64_t value;     // at a shuffle: the value it publishes
    uint64_t received;  // after a shuffle: the value it read
};

struct block_run {
    const kernel_entry* kernel;
    void** params;
    std::vector<fiber> fibers;
    fiber* running;
    void* scheduler_sp;
    std::string error;
};

thread_local block_run* current_run;

constexpr size_t stack_bytes = 64 << 10;

// fiber_stacks are the stacks of one OS thread's fibers, each with an
// inaccessible page below it so an overflow faults instead of corrupting
// its neighbour.
struct fiber_stacks {
    char* base = nullptr;
    size_t count = 0;
    size_t stride = 0;

    bool reserve(size_t n) {
        if (n <= count) return true;
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t stride_bytes = stack_bytes + page;
        void* p = mmap(nullptr, n * stride_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return false;
        for (size_t i = 0; i < n; i++) mprotect((char*)p + i * stride_bytes, page, PROT_NONE);
        if (base) munmap(base, count * stride);
        base = (char*)p;
        count = n;
        stride = stride_bytes;
        return true;
    }

    ~fiber_stacks() {
        if (base) munmap(base, count * stride);
    }

    // top is the 16-byte aligned top of stack i.
    char* top(size_t i) const { return base + (i + 1) * stride; }
};

thread_local fiber_stacks stacks;

[[noreturn]] void back_to_scheduler(fiber* f) {
    emu_switch(&f->sp, current_run->scheduler_sp);
    __builtin_unreachable();
}

void yield(fiber* f) { emu_switch(&f->sp, current_run->scheduler_sp); }

[[noreturn]] void fail(fiber* f, std::string message) {
    current_run->error = std::move(message);
    f->wait = waiting::failed;
    back_to_scheduler(f);
}

void fiber_main(fiber* f) {
    block_run* r = current_run;
    r->kernel->invoke(r->kernel->fn, r->params);
    f->wait = waiting::done;
    back_to_scheduler(f);
}

void start(fiber* f, char* top) {
    void** sp = (void**)(top - 72);
    sp[0] = sp[1] = sp[2] = nullptr;  // r15, r14, r13
    sp[3] = (void*)&fiber_main;       // r12: the entry
    sp[4] = f;                        // rbx: its argument
    sp[5] = nullptr;                  // rbp
    sp[6] = (void*)&emu_fiber_start;  // where the first switch returns
    f->sp = sp;
}

std::string describe(const thread_state& t) {
    char buf[96];
    snprintf(buf, sizeof buf, "thread (%u,%u,%u)", t.thread_idx.x, t.thread_idx.y, t.thread_idx.z);
    return buf;
}

// release_shuffles lets through every group of lanes of one warp that
// wait at the same shuffle (mask, kind, width, size) once every lane of
// the mask that has not exited (or does not exist) waits there. A lane
// that reads one that is not in its group gets no defined value in CUDA:
// that is an error (-1, with r.error set). It returns how many lanes it
// released.
int release_shuffles(block_run& r) {
    int released = 0;
    size_t n = r.fibers.size();
    for (size_t warp = 0; warp * 32 < n; warp++) {
        size_t lanes = std::min<size_t>(32, n - warp * 32);
        fiber* w = &r.fibers[warp * 32];
        for (size_t l = 0; l < lanes; l++) {
            if (w[l].wait != waiting::warp) continue;
            unsigned mask = w[l].mask, shuffle = w[l].shuffle, group = 0;
            bool complete = true;
            for (size_t m = 0; m < lanes && complete; m++) {
                if (!(mask >> m & 1) || w[m].wait == waiting::done) continue;
                complete = w[m].wait == waiting::warp && w[m].mask == mask && w[m].shuffle == shuffle;
                group |= 1u << m;
            }
            if (!complete) continue;
            for (size_t m = 0; m < lanes; m++) {
                if (!(group >> m & 1)) continue;
                fiber& f = w[m];
                if (!(group >> f.source & 1)) {
                    r.error = describe(f.state) + ": shuffle reads lane " + std::to_string(f.source) +
                              (mask >> f.source & 1 ? ", which has exited or is beyond the block" : ", not named in its mask");
                    return -1;
                }
                f.received = w[f.source].value;
            }
            for (size_t m = 0; m < lanes; m++) {
                if (group >> m & 1) w[m].wait = waiting::no;
            }
            released += __builtin_popcount(group);
        }
    }
    return released;
}

// reverse_order is ITERBIN_EMULATOR_ORDER=reverse: blocks, and threads
// between two barriers, run last to first instead of first to last. A
// kernel free of races in shared and global memory gives the same bits
// either way.
// It is read at every launch, so a test can change it between runs.
bool reverse_order() {
    const char* order = getenv("ITERBIN_EMULATOR_ORDER");
    return order && strcmp(order, "reverse") == 0;
}

// run_block runs the fibers of one block to completion, last to first
// between barriers if reverse.
bool run_block(block_run& r, bool reverse) {
    size_t n = r.fibers.size();
    for (;;) {
        bool live = false;
        for (size_t i = 0; i < n; i++) {
            fiber& f = r.fibers[reverse ? n - 1 - i : i];
            if (f.wait != waiting::no) continue;
            r.running = &f;
            current_thread = &f.state;
            emu_switch(&r.scheduler_sp, f.sp);
            if (f.wait == waiting::failed) return false;
        }
        size_t at_barrier = 0, done = 0;
        for (fiber& f : r.fibers) {
            if (f.wait == waiting::block) at_barrier++;
            if (f.wait == waiting::done) done++;
            if (f.wait != waiting::done) live = true;
        }
        if (!live) return true;
        int released = release_shuffles(r);
        if (released < 0) return false;
        if (released > 0) continue;
        if (at_barrier > 0 && done > 0 && at_barrier + done == r.fibers.size()) {
            r.error = std::to_string(at_barrier) + " threads wait at __syncthreads that " + std::to_string(done) +
                      " threads of the block exited before reaching (a barrier in code the whole block must take)";
            return false;
        }
        if (at_barrier + done == r.fibers.size()) {
            for (fiber& f : r.fibers) {
                if (f.wait == waiting::block) f.wait = waiting::no;
            }
            continue;
        }
        r.error = "deadlock: " + std::to_string(at_barrier) + " threads wait at __syncthreads while " +
                  std::to_string(r.fibers.size() - at_barrier - done) +
                  " wait at shuffles that cannot complete (lanes of a mask at different barriers or shuffles)";
        return false;
    }
}

}  // namespace

void sync_block() {
    fiber* f = current_run->running;
    f->wait = waiting::block;
    yield(f);
}

uint64_t exchange(unsigned mask, uint64_t value, unsigned source, unsigned shuffle) {
    fiber* f = current_run->running;
    unsigned l = lane();
    if (!(mask >> l & 1)) fail(f, describe(f->state) + ": shuffles with a mask that does not name its own lane");
    f->mask = mask;
    f->value = value;
    f->source = source;
    f->shuffle = shuffle;
    f->wait = waiting::warp;
    yield(f);
    return f->received;
}

std::string run_grid(const kernel_entry& kernel, void** params, dim3 grid, dim3 block) {
    size_t n = (size_t)block.x * block.y * block.z;
    if (!stacks.reserve(n)) return "cannot map stacks for " + std::to_string(n) + " threads";
    block_run r{&kernel, params, std::vector<fiber>(n), nullptr, nullptr, ""};
    block_run* outer_run = current_run;
    thread_state* outer_thread = current_thread;
    current_run = &r;
    std::string error;
    bool reverse = reverse_order();
    for (unsigned iz = 0; iz < grid.z && error.empty(); iz++) {
        for (unsigned iy = 0; iy < grid.y && error.empty(); iy++) {
            for (unsigned ix = 0; ix < grid.x && error.empty(); ix++) {
                unsigned bx = reverse ? grid.x - 1 - ix : ix, by = reverse ? grid.y - 1 - iy : iy, bz = reverse ? grid.z - 1 - iz : iz;
                for (size_t i = 0; i < n; i++) {
                    fiber& f = r.fibers[i];
                    unsigned x = (unsigned)(i % block.x), y = (unsigned)(i / block.x % block.y), z = (unsigned)(i / block.x / block.y);
                    f.state = thread_state{uint3{x, y, z}, uint3{bx, by, bz}, block, grid};
                    f.wait = waiting::no;
                    start(&f, stacks.top(i));
                }
                if (!run_block(r, reverse)) {
                    char where[64];
                    snprintf(where, sizeof where, "block (%u,%u,%u), ", bx, by, bz);
                    error = where + r.error;
                }
            }
        }
    }
    current_run = outer_run;
    current_thread = outer_thread;
    return error;
}

}  // namespace emu
