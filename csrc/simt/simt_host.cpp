// The SIMT emulator's runtime (simt.h, host build): a grid's blocks run one after another on the
// calling thread, a block's threads as fibers scheduled cooperatively (they switch only at
// __syncthreads, warp operations and exit), plus the checks: barrier divergence and deadlock,
// warp operations whose mask names exited or absent lanes, and faults on the guard pages of
// emulated device memory, all reported as simt::Error from the launch.
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "simt/simt.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif
#if defined(__SANITIZE_ADDRESS__)  // ASan must be told of every stack switch
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define SIMT_ASAN 1
#endif

namespace simt {
inline namespace host {
namespace detail {

// Plain globals, not thread_local (whose every access in a shared library is a call): launches
// are serialized by g_launch_mu, and the fault handler checks the launching thread.
Thread *g_cur = nullptr;

namespace {

#if defined(__x86_64__)
// Callee-saved registers onto the current stack, its pointer to *save, then the other stack's.
extern "C" void edgenano_simt_switch(void **save, void *load);
asm(R"(
.text
.globl edgenano_simt_switch
.hidden edgenano_simt_switch
.type edgenano_simt_switch,@function
edgenano_simt_switch:
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
.size edgenano_simt_switch,.-edgenano_simt_switch
)");
#endif

enum class St { Ready, Barrier, WaitWarp, Done };

struct Fiber {
  Thread th{};
  St state = St::Ready;
  const char *bar_file = nullptr;
  int bar_line = 0;
  uint64_t wcount = 0;  // warp operations this thread has arrived at
  unsigned wmask = 0;
  const char *wwhat = "";
  uint64_t slot[2] = {};  // exchange values, by warp-operation parity
  char *stack_lo = nullptr;
#if defined(__x86_64__)
  void *sp = nullptr;
#else
  ucontext_t ctx;
#endif
};

constexpr size_t kStack = 128 << 10;
constexpr int kMaxThreads = 1024;

struct Launch {
  const char *name = "";
  LaunchBody body{};
  std::string error;
};

}  // namespace

struct WarpState {
  int arrived[2] = {0, 0};  // full-mask arrivals at the current operation, by parity
  int done = 0;             // lanes that have exited
};

struct Block {
  uint3 idx{}, dim{}, grid{};
  std::vector<WarpState> warps;
  uint32_t epoch = 1;
  int n = 0;
  std::unordered_map<const void *, SharedAlloc> shared;
  Fiber *fibers = nullptr;
  Launch *launch = nullptr;
};

namespace {

// The fiber stacks (reused by every block) and the scheduler's context, for the one launch that
// runs at a time.
struct Worker {
  std::vector<std::unique_ptr<Fiber>> fibers;
  std::vector<char *> stacks;
#if defined(__x86_64__)
  void *sched_sp = nullptr;
#else
  ucontext_t sched;
#endif
  Fiber *cur = nullptr;
  Block *blk = nullptr;
  char *altstack = nullptr;
  ~Worker() {
    for (char *s : stacks) munmap(s, kStack);
    if (altstack) munmap(altstack, 1 << 16);
  }
};
Worker g_w;
pthread_t g_launch_thread;

std::mutex g_launch_mu;  // launches run one at a time (signal handlers are process-wide)
Stats g_stats;
std::map<std::string, uint64_t> g_by_kernel;

size_t page_size() {
  static const size_t p = size_t(sysconf(_SC_PAGESIZE));
  return p;
}

// ---- device memory with guard pages ----
struct DevAlloc {
  char *base;
  size_t mapped, n;
};
std::mutex g_mem_mu;
std::map<uintptr_t, DevAlloc> g_allocs;  // by user pointer

const char *describe_fault(uintptr_t a, char *buf, size_t len) {
  std::lock_guard<std::mutex> g(g_mem_mu);
  for (const auto &[p, d] : g_allocs) {
    const auto lo = reinterpret_cast<uintptr_t>(d.base), hi = lo + d.mapped;
    if (a >= lo && a < hi) {
      const long long off = static_cast<long long>(a) - static_cast<long long>(p);
      std::snprintf(buf, len, " (byte %lld of a %zu-byte device buffer: out of bounds)", off, d.n);
      return buf;
    }
  }
  return "";
}

// ---- scheduling ----
// The one place contexts switch: from fiber `from` (nullptr: the scheduler) to fiber `to`
// (nullptr: the scheduler); `dying`: `from` is never resumed.
void *g_sched_lo = nullptr;  // the scheduler's stack, for ASan
size_t g_sched_size = 0;

void switch_ctx(Fiber *from, Fiber *to, bool dying = false) {
  ++g_stats.switches;
#if defined(SIMT_ASAN)
  void *fake = nullptr;
  __sanitizer_start_switch_fiber(dying ? nullptr : &fake, to ? to->stack_lo : g_sched_lo,
                                 to ? kStack : g_sched_size);
#endif
#if defined(__x86_64__)
  edgenano_simt_switch(from ? &from->sp : &g_w.sched_sp, to ? to->sp : g_w.sched_sp);
#else
  swapcontext(from ? &from->ctx : &g_w.sched, to ? &to->ctx : &g_w.sched);
#endif
#if defined(SIMT_ASAN)
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  (void)dying;
#endif
}

void to_sched(Fiber *f, bool dying = false) { switch_ctx(f, nullptr, dying); }

[[noreturn]] void fiber_main() {
#if defined(SIMT_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);  // a fresh fiber's first switch
#endif
  Fiber *f = g_w.cur;
  Launch *l = g_w.blk->launch;
  try {
    l->body.invoke(l->body.ctx);
  } catch (const std::exception &e) {
    if (l->error.empty()) l->error = e.what();
  } catch (...) {
    if (l->error.empty()) l->error = "unknown exception";
  }
  f->state = St::Done;
  ++g_w.blk->warps[size_t(f->th.tid >> 5)].done;
  to_sched(f, true);
  std::abort();  // a finished fiber is never resumed
}

void start_fiber(Fiber *f) {
#if defined(SIMT_ASAN)  // frames of the stack's previous fiber, abandoned without returning
  __asan_unpoison_memory_region(f->stack_lo, kStack);
#endif
#if defined(__x86_64__)
  auto top = reinterpret_cast<uintptr_t>(f->stack_lo + kStack) & ~uintptr_t(15);
  auto *sp = reinterpret_cast<void **>(top);
  *--sp = nullptr;                                // fiber_main's return address
  *--sp = reinterpret_cast<void *>(&fiber_main);  // popped by the switch's ret
  for (int i = 0; i < 6; ++i) *--sp = nullptr;    // rbp rbx r12-r15
  f->sp = sp;
#else
  getcontext(&f->ctx);
  f->ctx.uc_stack.ss_sp = f->stack_lo;
  f->ctx.uc_stack.ss_size = kStack;
  f->ctx.uc_link = nullptr;
  makecontext(&f->ctx, reinterpret_cast<void (*)()>(&fiber_main), 0);
#endif
}

void resume(Fiber *f) {
  g_w.cur = f;
  g_cur = &f->th;
  switch_ctx(nullptr, f);
  g_cur = nullptr;
  g_w.cur = nullptr;
}

// A lane that must wait in a warp operation hands the core straight to the next runnable lane of
// its warp (no trip through the scheduler); with none, back to the scheduler.
void wait_in_warp(Fiber *f) {
  f->state = St::WaitWarp;
  Block *b = g_w.blk;
  const int base = f->th.tid & ~31, lane = f->th.tid & 31;
  for (int k = 1; k < 32; ++k) {
    const int t = base + ((lane + k) & 31);
    if (t >= b->n) continue;
    Fiber *o = &b->fibers[t];
    if (o->state != St::Ready) continue;
    g_w.cur = o;
    g_cur = &o->th;
    switch_ctx(f, o);
    g_w.cur = f;  // resumed: by a lane's handover or by the scheduler
    g_cur = &f->th;
    return;
  }
  to_sched(f);
}

// Whether every lane of f's mask has arrived at f's warp operation (failing when one never can).
bool warp_ready(Fiber *f) {
  Block *b = g_w.blk;
  const int base = f->th.tid & ~31;
  bool ready = true;
  for (int l = 0; l < 32; ++l) {
    if (!((f->wmask >> l) & 1)) continue;
    Fiber *o = &b->fibers[base + l];
    if (o == f) continue;
    if (o->wcount < f->wcount) {
      if (o->state == St::Done)
        fail(std::string(f->wwhat) + ": lane " + std::to_string(l) + " of the mask has exited");
      ready = false;
    } else if (o->wcount == f->wcount && o->wmask != f->wmask) {
      fail(std::string(f->wwhat) + ": lanes of one warp operation disagree on the mask");
    }
  }
  return ready;
}

// The last lane to arrive releases the others.
void release_warp(Fiber *f) {
  Block *b = g_w.blk;
  const int base = f->th.tid & ~31;
  for (int l = 0; l < 32; ++l) {
    if (!((f->wmask >> l) & 1)) continue;
    Fiber *o = &b->fibers[base + l];
    if (o->state == St::WaitWarp && o->wcount == f->wcount) o->state = St::Ready;
  }
}

// A lane that exits while others of its warp wait for it in a warp operation.
const Fiber *stranded_by(const Fiber *done) {
  Block *b = g_w.blk;
  const int base = done->th.tid & ~31, lane = done->th.tid & 31;
  for (int l = 0; l < 32 && base + l < b->n; ++l) {
    const Fiber *o = &b->fibers[base + l];
    if (o->state == St::WaitWarp && ((o->wmask >> lane) & 1) && o->wcount > done->wcount) return o;
  }
  return nullptr;
}

std::string where(const Fiber &f) {
  switch (f.state) {
    case St::Done: return "exited";
    case St::Barrier:
      return std::string("__syncthreads at ") + f.bar_file + ":" + std::to_string(f.bar_line);
    case St::WaitWarp: return std::string("waiting in ") + f.wwhat;
    default: return "running";
  }
}

// Threads grouped by where they stand, for a divergence or deadlock report.
std::string standings(const Block &b) {
  std::string s;
  int i = 0;
  while (i < b.n) {
    const std::string w = where(b.fibers[i]);
    int j = i;
    while (j + 1 < b.n && where(b.fibers[j + 1]) == w) ++j;
    s += "\n  threads " + std::to_string(i) + ".." + std::to_string(j) + ": " + w;
    i = j + 1;
  }
  return s;
}

void run_block(Block &b) {
  Launch &l = *b.launch;
  b.warps.assign(size_t((b.n + 31) / 32), WarpState{});
  for (int t = 0; t < b.n; ++t) {
    Fiber *f = &b.fibers[t];
    const char *lo = f->stack_lo;
    *f = Fiber{};
    f->stack_lo = const_cast<char *>(lo);
    f->th.tid = t;
    f->th.idx = {unsigned(t) % b.dim.x, unsigned(t) / b.dim.x % b.dim.y,
                 unsigned(t) / (b.dim.x * b.dim.y)};
    f->th.blk = &b;
    start_fiber(f);
  }
  for (;;) {
    bool progressed = false;
    int done = 0, at_bar = 0;
    for (int t = 0; t < b.n; ++t) {
      Fiber *f = &b.fibers[t];
      if (f->state == St::Ready) {
        resume(f);  // runs until a fiber (f, or one of its warp it handed over to) yields
        progressed = true;
        if (!l.error.empty()) return;
      }
      done += f->state == St::Done;
      at_bar += f->state == St::Barrier;
    }
    if (done == b.n) return;
    if (at_bar > 0 && at_bar + done == b.n) {
      bool same = done == 0;
      for (int t = 1; t < b.n && same; ++t)
        same = b.fibers[t].bar_line == b.fibers[0].bar_line &&
               std::strcmp(b.fibers[t].bar_file, b.fibers[0].bar_file) == 0;
      if (!same) {
        l.error =
            "divergent __syncthreads: not every thread of the block reached the same "
            "barrier" +
            standings(b);
        return;
      }
      ++b.epoch;
      for (int t = 0; t < b.n; ++t) b.fibers[t].state = St::Ready;
      continue;
    }
    if (!progressed) {
      for (int t = 0; t < b.n; ++t)
        if (b.fibers[t].state == St::Done)
          if (const Fiber *o = stranded_by(&b.fibers[t])) {
            l.error = "thread " + std::to_string(o->th.tid) + ": " + o->wwhat + ": lane " +
                      std::to_string(t & 31) + " of the mask has exited";
            return;
          }
      l.error = "deadlock: no thread of the block can proceed" + standings(b);
      return;
    }
  }
}

// ---- faults: a SIGSEGV/SIGBUS in a kernel ends its launch with an error ----
struct sigaction g_old_segv, g_old_bus;

void on_fault(int sig, siginfo_t *si, void *) {
  Fiber *f = g_w.cur;
  if (!f || !g_w.blk || !pthread_equal(pthread_self(), g_launch_thread)) {
    // not ours: the previous handler takes the re-executed fault
    sigaction(SIGSEGV, &g_old_segv, nullptr);
    sigaction(SIGBUS, &g_old_bus, nullptr);
    return;
  }
  char buf[160];
  const auto a = reinterpret_cast<uintptr_t>(si->si_addr);
  const bool in_stack = a >= reinterpret_cast<uintptr_t>(f->stack_lo) - page_size() &&
                        a < reinterpret_cast<uintptr_t>(f->stack_lo) + page_size();
  char msg[320];
  std::snprintf(msg, sizeof msg, "%s at address %p by thread %d%s",
                in_stack ? "fiber stack overflow" : "invalid global memory access", si->si_addr,
                f->th.tid, in_stack ? "" : describe_fault(a, buf, sizeof buf));
  Launch *l = g_w.blk->launch;
  if (l->error.empty()) l->error = msg;
  (void)sig;
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGSEGV);
  sigaddset(&s, SIGBUS);
  pthread_sigmask(SIG_UNBLOCK, &s, nullptr);
  f->state = St::Done;
  to_sched(f, true);  // never resumed: the launch ends with l->error
}

struct FaultGuard {
  stack_t old_alt{};
  FaultGuard() {
    if (!g_w.altstack)
      g_w.altstack = static_cast<char *>(
          mmap(nullptr, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    stack_t ss{};
    ss.ss_sp = g_w.altstack;
    ss.ss_size = 1 << 16;
    sigaltstack(&ss, &old_alt);
    struct sigaction sa{};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_old_segv);
    sigaction(SIGBUS, &sa, &g_old_bus);
  }
  ~FaultGuard() {
    sigaction(SIGSEGV, &g_old_segv, nullptr);
    sigaction(SIGBUS, &g_old_bus, nullptr);
    sigaltstack(&old_alt, nullptr);
  }
};

void ensure_fibers(int n) {
  while (int(g_w.fibers.size()) < n) {
    const size_t pg = page_size();
    auto *m = static_cast<char *>(mmap(nullptr, kStack + pg, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (m == MAP_FAILED) throw std::bad_alloc();
    mprotect(m, pg, PROT_NONE);  // overflow faults instead of corrupting the next stack
    g_w.stacks.push_back(m);
    auto f = std::make_unique<Fiber>();
    f->stack_lo = m + pg;
    g_w.fibers.push_back(std::move(f));
  }
}

}  // namespace

void run_grid(dim3 grid, dim3 block, const char *name, LaunchBody body) {
  const long long n = 1LL * block.x * block.y * block.z;
  if (n < 1 || n > kMaxThreads)
    throw Error(std::string("launch of ") + name + ": block of " + std::to_string(n) +
                " threads (1..1024)");
  std::lock_guard<std::mutex> lock(g_launch_mu);
  ensure_fibers(int(n));
  // The block's fibers contiguous: copy the stack-owning objects into one array per launch.
  std::vector<Fiber> fibers(static_cast<size_t>(n));
  for (long long t = 0; t < n; ++t) fibers[size_t(t)].stack_lo = g_w.fibers[size_t(t)]->stack_lo;
  Launch l;
  l.name = name;
  l.body = body;
  ++g_stats.launches;
  ++g_by_kernel[name];
  g_launch_thread = pthread_self();
#if defined(SIMT_ASAN)
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    pthread_attr_getstack(&attr, &g_sched_lo, &g_sched_size);
    pthread_attr_destroy(&attr);
  }
#endif
  {
    FaultGuard guard;
    for (unsigned z = 0; z < grid.z && l.error.empty(); ++z)
      for (unsigned y = 0; y < grid.y && l.error.empty(); ++y)
        for (unsigned x = 0; x < grid.x && l.error.empty(); ++x) {
          Block b;
          b.idx = {x, y, z}, b.dim = {block.x, block.y, block.z}, b.grid = {grid.x, grid.y, grid.z};
          b.n = int(n), b.fibers = fibers.data(), b.launch = &l;
          g_w.blk = &b;
          ++g_stats.blocks;
          run_block(b);
          g_w.blk = nullptr;
          if (!l.error.empty())
            l.error = "kernel " + std::string(name) + ", block (" + std::to_string(x) + "," +
                      std::to_string(y) + "," + std::to_string(z) + "): " + l.error;
        }
  }
  if (!l.error.empty()) throw Error(l.error);
}

void sync_threads(const char *file, int line) {
  Fiber *f = g_w.cur;
  f->state = St::Barrier;
  f->bar_file = file, f->bar_line = line;
  to_sched(f);
}

void warp_sync(unsigned mask, const char *what) {
  Fiber *f = g_w.cur;
  const int lane = f->th.tid & 31, base = f->th.tid & ~31;
  if (!((mask >> lane) & 1))
    fail(std::string(what) + ": calling lane " + std::to_string(lane) + " is not in the mask");
  for (int l = 0; l < 32; ++l)
    if (((mask >> l) & 1) && base + l >= g_w.blk->n)
      fail(std::string(what) + ": the mask names lane " + std::to_string(l) +
           ", which this block does not have");
  ++f->wcount;
  f->wmask = mask, f->wwhat = what;
  WarpState &w = g_w.blk->warps[size_t(f->th.tid >> 5)];
  if (mask == 0xffffffffu && w.done == 0) {  // the common case: count arrivals
    int &a = w.arrived[f->wcount & 1];
    if (++a < 32) {
      wait_in_warp(f);  // made Ready by the last lane to arrive
      return;
    }
    a = 0;
    release_warp(f);
    return;
  }
  if (warp_ready(f)) {
    release_warp(f);
    return;
  }
  wait_in_warp(f);
}

uint64_t warp_exchange(unsigned mask, uint64_t mine, int src, const char *what) {
  Fiber *f = g_w.cur;
  const int lane = f->th.tid & 31;
  f->slot[(f->wcount + 1) & 1] = mine;
  warp_sync(mask, what);
  if (src < 0 || src > 31 || !((mask >> src) & 1))
    fail(std::string(what) + ": lane " + std::to_string(lane) + " reads lane " +
         std::to_string(src) + ", which is not in the mask");
  return g_w.blk->fibers[(f->th.tid & ~31) + src].slot[f->wcount & 1];
}

unsigned warp_ballot(unsigned mask, bool pred, const char *what) {
  Fiber *f = g_w.cur;
  f->slot[(f->wcount + 1) & 1] = pred;
  warp_sync(mask, what);
  unsigned out = 0;
  const int base = f->th.tid & ~31;
  for (int l = 0; l < 32; ++l)
    if (((mask >> l) & 1) && g_w.blk->fibers[base + l].slot[f->wcount & 1]) out |= 1u << l;
  return out;
}

SharedAlloc &block_shared(const void *key, size_t bytes, size_t elems, const char *name) {
  SharedAlloc &a = g_w.blk->shared[key];
  if (a.shadow.empty()) {
    a.bytes.assign(bytes, 0xcd);
    a.shadow.resize(elems);
    a.name = name;
    a.epoch = &g_w.blk->epoch;
  }
  return a;
}

uint3 block_idx() { return g_w.blk->idx; }
uint3 block_dim() { return g_w.blk->dim; }
uint3 grid_dim() { return g_w.blk->grid; }
uint32_t epoch() { return g_w.blk->epoch; }
int lane_id() { return g_w.cur->th.tid & 31; }

void fail(const std::string &msg) {
  throw Error(g_cur ? "thread " + std::to_string(g_cur->tid) + ": " + msg : msg);
}

}  // namespace detail

void *dev_alloc(size_t n) {
  using namespace detail;
  if (!n) return nullptr;
  const size_t pg = page_size(), body = (n + 3) / 4 * 4;
  const size_t mapped = (body + pg - 1) / pg * pg + 2 * pg;
  auto *base = static_cast<char *>(mmap(nullptr, mapped, PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  if (base == MAP_FAILED) throw std::bad_alloc();
  mprotect(base, pg, PROT_NONE);
  mprotect(base + mapped - pg, pg, PROT_NONE);
  char *p = base + mapped - pg - body;
  std::lock_guard<std::mutex> g(g_mem_mu);
  g_allocs[reinterpret_cast<uintptr_t>(p)] = {base, mapped, n};
  return p;
}

void dev_free(void *p) {
  using namespace detail;
  if (!p) return;
  DevAlloc d;
  {
    std::lock_guard<std::mutex> g(g_mem_mu);
    auto it = g_allocs.find(reinterpret_cast<uintptr_t>(p));
    if (it == g_allocs.end()) return;
    d = it->second;
    g_allocs.erase(it);
  }
  munmap(d.base, d.mapped);
}

bool is_device_ptr(const void *p) {
  using namespace detail;
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> g(g_mem_mu);
  auto it = g_allocs.upper_bound(a);
  if (it == g_allocs.begin()) return false;
  --it;
  return a >= it->first && a < it->first + it->second.n;
}

Stats stats() { return detail::g_stats; }

std::vector<std::pair<std::string, uint64_t>> launches_by_kernel() {
  std::lock_guard<std::mutex> lock(detail::g_launch_mu);
  return {detail::g_by_kernel.begin(), detail::g_by_kernel.end()};
}

}  // namespace host
}  // namespace simt
